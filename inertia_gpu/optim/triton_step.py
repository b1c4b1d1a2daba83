"""The Triton implementation of inertia_sgd: pointer tables in, one fused launch per dtype, float64 sums out.

A launch walks every parameter of one (call, dtype) through a pointer table (kernels/sgd.py), so a
model with hundreds of tensors costs one launch. The table of a launch is cached in this module
(not on the optimizer) under the full launch key (pointers, sizes, parameter indices, first-step
flags, block) and rebuilt only when a tensor moves, so a CUDA-graph capture replays with the table
of its warm-up step. The cache keeps the last MAX_PLANS launch tables: a captured graph must be
replayed while its table is among them (a training loop's steady state is one key per dtype).
On the CPU the kernel runs under the Triton interpreter (TRITON_INTERPRET=1 set before triton is
imported), which is how the tests compare it with the foreach implementation.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import torch

DEFAULT_BLOCK_INTERPRETER = 1024
NUM_WARPS = 8  # 256 threads; at <= 128 registers two programs share an SM (16 warps)
# tiles per program: the block reduction's cost spread over several tiles; ptxas overlaps the unrolled
# tiles, so 16-bit and float64 tiles (more registers each) stop at 2 to stay within 128 registers
TILES_PER_PROGRAM = {torch.float32: 4, torch.bfloat16: 4, torch.float16: 4}
ALIGN_BYTES = 16  # kernels/sgd.py ALIGN_BYTES: 128-bit accesses
MAX_PLANS = 64
# kernels/sgd.py's pointer table, one int64 row per tensor
TABLE_COLUMNS = 8
COL_PARAM, COL_GRAD, COL_BUFFER, COL_NUMEL, COL_INDEX, COL_FIRST_BLOCK, COL_FIRST_STEP = range(7)

_PLANS: OrderedDict = OrderedDict()


def triton_unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernel can run on `device` here; else one line why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "backend='triton' needs the triton package (pip install inertia-gpu[triton])"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
    if device.type not in ("cpu", "cuda"):
        return f"backend='triton' cannot run on {device.type} tensors"
    return None


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
            torch.float64: tl.float64}[dtype]


@dataclass
class LaunchPlan:
    """Device-side pointer table of one launch."""

    table: torch.Tensor  # int64 [rows, TABLE_COLUMNS]
    block_row: torch.Tensor  # int32 [n_blocks]: the table row program `pid` works on
    block_index: torch.Tensor  # int32 [n_blocks]: which BLOCK of that tensor
    partials: torch.Tensor  # float64 [n_blocks, 3]
    n_blocks: int
    n_whole: int  # programs [0, n_whole) cover whole blocks (the unmasked launch), the rest partial ones


def _host_to_device(rows: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    host = torch.tensor(rows, dtype=dtype)
    if device.type == "cuda":  # pinned + non_blocking: no host wait on the stream
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _plan(rows: tuple, block: int, device: torch.device) -> LaunchPlan:
    """The launch table for `rows` = ((param, grad, buffer addresses, numel, index, first step), ...)."""
    key = (device, block, rows)
    plan = _PLANS.get(key)
    if plan is not None:
        _PLANS.move_to_end(key)
        return plan
    plan = _PLANS[key] = _build_plan(rows, block, device)
    while len(_PLANS) > MAX_PLANS:
        _PLANS.popitem(last=False)
    return plan


def _build_plan(rows: tuple, block: int, device: torch.device) -> LaunchPlan:
    """Programs of whole blocks first (every tensor's, in table order), then each tensor's partial last block."""
    table, whole, partial, first_block = [], [], [], 0
    base, size = rows[0][0], rows[0][6]  # addresses become element offsets from the first parameter's
    for row, (p_ptr, g_ptr, b_ptr, numel, index, first, _) in enumerate(rows):
        offsets = [(address - base) // size for address in (p_ptr, g_ptr, b_ptr)]
        table.append(offsets + [numel, index, first_block, first] + [0] * (TABLE_COLUMNS - 7))
        whole += [(row, k) for k in range(numel // block)]
        if numel % block:
            partial.append((row, numel // block))
        first_block += (numel + block - 1) // block
    programs = torch.tensor(whole + partial, dtype=torch.int32).reshape(-1, 2)
    return LaunchPlan(table=_host_to_device(table, torch.int64, device),
                      block_row=programs[:, 0].contiguous().to(device),
                      block_index=programs[:, 1].contiguous().to(device),
                      partials=torch.empty(first_block, 3, dtype=torch.float64, device=device),
                      n_blocks=first_block, n_whole=len(whole))


def _split(x: float) -> tuple[float, float]:
    """x = hi + lo with hi, lo float32 values (x to ~48 bits): float64 scalars for a kernel that takes fp32."""
    hi = float(torch.tensor(x, dtype=torch.float32))
    return hi, float(torch.tensor(x - hi, dtype=torch.float32))


def vector_width(dtype: torch.dtype) -> int:
    """Elements per 128-bit access."""
    return ALIGN_BYTES // torch.empty((), dtype=dtype).element_size()


def elements_per_thread(dtype: torch.dtype) -> int:
    """Consecutive elements a thread owns per tile: one 128-bit access, and at least one Philox call's four."""
    return max(4, vector_width(dtype))


def tiling(dtype: torch.dtype, block: int | None, device_type: str) -> tuple[int, int]:
    """(BLOCK, TILE): elements per program and per unrolled tile (elements_per_thread each on a GPU)."""
    if device_type != "cuda":  # the interpreter: one tile per program, few programs
        block = block or DEFAULT_BLOCK_INTERPRETER
        return block, block
    tile = NUM_WARPS * 32 * elements_per_thread(dtype)
    block = block or TILES_PER_PROGRAM.get(dtype, 2) * tile
    return block, min(tile, block)


def kernel_switches(dtype: torch.dtype, *, momentum: float, dampening: float, nesterov: bool,
                    weight_decay: float, maximize: bool, noise: float, temperature: float | None,
                    lr_from_ptr: bool, grad_scale: bool, found_inf: bool, block: int, tile: int,
                    aligned: bool, device_type: str, masked: bool = True) -> dict:
    """The kernel's constexpr switches for one launch.

    FAST_NORMALS: 16-bit parameters on a GPU draw their normals through the special-function unit
    (kernels/sgd.py _box_muller_fast: within ~1e-6 of the reference transform, far below one 16-bit
    rounding); float32 and float64 keep the reference transform to a few ulp, and so does the
    interpreter, which cannot run those functions."""
    import triton.language as tl
    return dict(DTYPE=_tl_dtype(dtype), ACC=tl.float64 if dtype == torch.float64 else tl.float32, BLOCK=block,
                TILE=tile, VEC=vector_width(dtype), EPT=elements_per_thread(dtype), ALIGNED=aligned,
                MOMENTUM=momentum != 0, DAMPENING=dampening != 0, NESTEROV=bool(nesterov),
                WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=bool(maximize),
                NOISE=(temperature if temperature is not None else noise) != 0,
                TEMPERATURE=temperature is not None,
                FAST_NORMALS=device_type == "cuda" and torch.empty((), dtype=dtype).element_size() == 2,
                LR_FROM_PTR=lr_from_ptr,
                HAS_GRAD_SCALE=grad_scale, HAS_FOUND_INF=found_inf, MASKED=masked)


def _aligned(row: tuple, vec: int) -> bool:
    p_ptr, g_ptr, b_ptr, numel = row[:4]
    return p_ptr % ALIGN_BYTES == 0 and g_ptr % ALIGN_BYTES == 0 and b_ptr % ALIGN_BYTES == 0 and numel % vec == 0


def _launches(params, grads, buffers, parameter_index, first):
    """(dtype, aligned, rows, base) per launch: one per dtype, split by whether 128-bit access is safe.

    base: the launch's first parameter, the pointer argument the table's offsets count from.
    """
    out = []
    for dtype in dict.fromkeys(p.dtype for p in params):
        rows = [((p.data_ptr(), g.data_ptr(), b.data_ptr(), p.numel(), i, int(f), p.element_size()), p)
                for p, g, b, i, f in zip(params, grads, buffers, parameter_index, first) if p.dtype == dtype]
        vec = vector_width(dtype)
        for aligned in (True, False):
            part = [(r, p) for r, p in rows if _aligned(r, vec) == aligned]
            if part:
                out.append((dtype, aligned, tuple(r for r, _ in part), part[0][1]))
    return out


def kernel_args(plan: LaunchPlan, base: torch.Tensor, *, lr, step, grad_scale, found_inf, momentum, dampening, weight_decay,
                noise, temperature, seed) -> dict:
    """The kernel's run-time arguments by name (pointers of absent inputs: a dummy that is never read)."""
    dummy = plan.partials
    wd_hi, wd_lo = _split(weight_decay)
    lr_from_ptr = isinstance(lr, torch.Tensor)
    return dict(table_ptr=plan.table, block_row_ptr=plan.block_row, block_index_ptr=plan.block_index,
                partials_ptr=plan.partials, base_ptr=base,
                lr_ptr=lr if lr_from_ptr else dummy, lr_value=0.0 if lr_from_ptr else float(lr), step_ptr=step,
                grad_scale_ptr=dummy if grad_scale is None else grad_scale,
                found_inf_ptr=dummy if found_inf is None else found_inf,
                momentum=float(momentum), dampening=float(dampening), weight_decay=float(weight_decay),
                wd_hi=wd_hi, wd_lo=wd_lo, noise_value=float(temperature if temperature is not None else noise),
                seed=int(seed))


def triton_inertia_sgd(params, grads, momentum_buffers, *, step, parameter_index, lr, momentum, dampening,
                       weight_decay, nesterov, maximize, noise, temperature, seed, grad_scale, found_inf,
                       block=None) -> torch.Tensor:
    """One fused step (see functional.inertia_sgd); None buffers are created here and written b = g."""
    from ..kernels.sgd import sgd_step_kernel

    device = params[0].device
    if block is not None and (block < 8 or block & (block - 1)):
        raise ValueError(f"block must be a power of two >= 8, got {block}")
    first = [momentum != 0 and b is None for b in momentum_buffers]
    for k, p in enumerate(params):
        if first[k]:  # zero-filled: the kernel reads b_k = 0 like any buffer and writes b = g
            momentum_buffers[k] = torch.zeros_like(p, memory_format=torch.contiguous_format)
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    buffers = momentum_buffers if momentum != 0 else params  # never read without momentum
    if isinstance(lr, torch.Tensor):
        lr = lr.to(device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for dtype, aligned, rows, base in _launches(params, grads, buffers, parameter_index, first):
        program_block, tile = tiling(dtype, block, device.type)
        plan = _plan(rows, program_block, device)
        if plan.n_blocks == 0:  # only empty tensors of this dtype
            continue
        args = kernel_args(plan, base, lr=lr, step=step, grad_scale=None if grad_scale is None else grad_scale.to(device),
                           found_inf=None if found_inf is None else found_inf.to(device), momentum=momentum,
                           dampening=dampening, weight_decay=weight_decay, noise=noise, temperature=temperature,
                           seed=seed)
        switches = kernel_switches(dtype, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                   weight_decay=weight_decay, maximize=maximize, noise=noise,
                                   temperature=temperature, lr_from_ptr=isinstance(lr, torch.Tensor),
                                   grad_scale=grad_scale is not None, found_inf=found_inf is not None,
                                   block=program_block, tile=tile, aligned=aligned, device_type=device.type)
        # whole blocks unmasked, then the partial ones masked; an AMP skip flag masks every block
        split = 0 if found_inf is not None else plan.n_whole
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            for first_program, end, masked in ((0, split, False), (split, plan.n_blocks, True)):
                if end == first_program:
                    continue
                part = dict(args, block_row_ptr=plan.block_row[first_program:end],
                            block_index_ptr=plan.block_index[first_program:end],
                            partials_ptr=plan.partials[first_program:end])
                sgd_step_kernel[(end - first_program,)](
                    **part, **dict(switches, MASKED=masked), num_warps=NUM_WARPS if device.type == "cuda" else 1,
                    # contraction on: torch's own CUDA foreach kernels (nvcc --fmad=true) contract a + alpha * b
                    # too, so the GPU agrees with torch.optim.SGD to rounding either way, never bitwise
                    enable_fp_fusion=True,
                )
        totals += plan.partials.sum(dim=0)
    return totals


# --- the launch without launching: for the static SASS profile --------------------------------------------

_SIGNATURE_TYPES = {torch.float32: "*fp32", torch.float64: "*fp64", torch.int64: "*i64", torch.int32: "*i32",
                    torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def sgd_launch_spec(dtype: torch.dtype = torch.float32, momentum: bool = True, noise: bool = True,
                    numel: int = 1 << 24, *, aligned: bool = True, weight_decay: bool = False,
                    block: int | None = None) -> dict:
    """What triton_inertia_sgd would launch for one tensor of `numel` elements on a GPU, without launching.

    {"fn": the @triton.jit kernel, "args": run-time arguments by name (small CPU tensors standing in for
    device pointers), "signature": Triton type per argument ("constexpr" for the switches), "constexprs":
    switches by name, "grid": (programs,), "num_warps", "enable_fp_fusion", "bytes_per_param": HBM bytes
    moved per parameter, "elements_per_program"}. `aligned` picks the 128-bit variant (what every
    16-byte-aligned tensor whose numel is a multiple of 16 bytes gets) or the fallback; the launch of whole
    blocks (MASKED=False) when `numel` has one, else the masked one of a partial block. Feed it to
    `sgd_ast_source(spec)` and triton.compile(..., target=GPUTarget("cuda", 90, 32), options=...).
    """
    from ..kernels.sgd import sgd_step_kernel

    program_block, tile = tiling(dtype, block, "cuda")
    storage = torch.empty(64, dtype=dtype)  # stands in for the parameter: 64-byte aligned, or one element off
    base = storage if aligned else storage[1:]
    size = base.element_size()
    address = base.data_ptr()
    row = (address, address + (1 << 20), address + (2 << 20), numel, 0, 0, size)
    plan = _build_plan((row,), program_block, torch.device("cpu"))
    options = dict(momentum=0.9 if momentum else 0.0, dampening=0.0, weight_decay=1e-4 if weight_decay else 0.0,
                   noise=1e-3 if noise else 0.0, temperature=None)
    args = kernel_args(plan, base, lr=1e-3, step=torch.zeros((), dtype=torch.int64), grad_scale=None, found_inf=None,
                       seed=0x2545F4914F6CDD1D, **options)  # any seed: the kernel never specializes it
    constexprs = kernel_switches(dtype, nesterov=False, maximize=False, lr_from_ptr=False, grad_scale=False,
                                 found_inf=False, block=program_block, tile=tile, aligned=aligned, device_type="cuda",
                                 masked=plan.n_whole == 0, **options)
    signature = {name: _SIGNATURE_TYPES[v.dtype] if isinstance(v, torch.Tensor) else
                 ("fp32" if isinstance(v, float) else "i64") for name, v in args.items()}
    signature.update({name: "constexpr" for name in constexprs})
    return dict(fn=sgd_step_kernel, args=args, signature=signature, constexprs=constexprs, grid=(plan.n_whole or plan.n_blocks,),
                num_warps=NUM_WARPS, enable_fp_fusion=True, elements_per_program=program_block,
                bytes_per_param=size * (5 if momentum else 3))


def sgd_ast_source(spec: dict):
    """triton.compiler.ASTSource for a spec from sgd_launch_spec, with the pointer alignment a launch
    specializes on (Triton's JIT marks a pointer argument whose address is a multiple of 16)."""
    from triton.compiler import ASTSource
    fn = spec["fn"]
    aligned = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name, v in spec["args"].items()
               if isinstance(v, torch.Tensor) and v.data_ptr() % ALIGN_BYTES == 0}
    return ASTSource(fn=fn, signature={name: spec["signature"][name] for name in fn.arg_names},
                     constexprs={(fn.arg_names.index(k),): v for k, v in spec["constexprs"].items()}, attrs=aligned)
