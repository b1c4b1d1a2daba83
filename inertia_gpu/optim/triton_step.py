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

DEFAULT_BLOCK_CUDA = 4096
DEFAULT_BLOCK_INTERPRETER = 1024
NUM_WARPS = 8
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
    partials: torch.Tensor  # float64 [n_blocks, 2]
    n_blocks: int


def _host_to_device(rows: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    host = torch.tensor(rows, dtype=dtype)
    if device.type == "cuda":  # pinned + non_blocking: no host wait on the stream
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _plan(rows: tuple, block: int, device: torch.device) -> LaunchPlan:
    """The launch table for `rows` = ((param, grad, buffer pointers, numel, index, first step), ...)."""
    key = (device, block, rows)
    plan = _PLANS.get(key)
    if plan is not None:
        _PLANS.move_to_end(key)
        return plan
    table, blocks, first_block = [], [], 0
    for p_ptr, g_ptr, b_ptr, numel, index, first in rows:
        table.append([p_ptr, g_ptr, b_ptr, numel, index, first_block, first] + [0] * (TABLE_COLUMNS - 7))
        blocks.append((numel + block - 1) // block)
        first_block += blocks[-1]
    counts = torch.tensor(blocks, dtype=torch.int64)
    block_row = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), counts)
    plan = LaunchPlan(table=_host_to_device(table, torch.int64, device),
                      block_row=block_row.to(device),
                      partials=torch.empty(first_block, 2, dtype=torch.float64, device=device),
                      n_blocks=first_block)
    _PLANS[key] = plan
    while len(_PLANS) > MAX_PLANS:
        _PLANS.popitem(last=False)
    return plan


def _split(x: float) -> tuple[float, float]:
    """x = hi + lo with hi, lo float32 values (x to ~48 bits): float64 scalars for a kernel that takes fp32."""
    hi = float(torch.tensor(x, dtype=torch.float32))
    return hi, float(torch.tensor(x - hi, dtype=torch.float32))


def kernel_switches(dtype: torch.dtype, *, momentum: float, dampening: float, nesterov: bool,
                    weight_decay: float, maximize: bool, noise: float, temperature: float | None,
                    lr_from_ptr: bool, grad_scale: bool, found_inf: bool, block: int) -> dict:
    """The kernel's constexpr switches for one launch."""
    import triton.language as tl
    return dict(DTYPE=_tl_dtype(dtype), ACC=tl.float64 if dtype == torch.float64 else tl.float32, BLOCK=block,
                MOMENTUM=momentum != 0, DAMPENING=dampening != 0, NESTEROV=bool(nesterov),
                WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=bool(maximize),
                NOISE=(temperature if temperature is not None else noise) != 0,
                TEMPERATURE=temperature is not None, LR_FROM_PTR=lr_from_ptr,
                HAS_GRAD_SCALE=grad_scale, HAS_FOUND_INF=found_inf)


def triton_inertia_sgd(params, grads, momentum_buffers, *, step, parameter_index, lr, momentum, dampening,
                       weight_decay, nesterov, maximize, noise, temperature, seed, grad_scale, found_inf,
                       block=None) -> torch.Tensor:
    """One fused step (see functional.inertia_sgd); None buffers are created here and written b = g."""
    from ..kernels.sgd import sgd_step_kernel

    device = params[0].device
    block = block or (DEFAULT_BLOCK_CUDA if device.type == "cuda" else DEFAULT_BLOCK_INTERPRETER)
    if block % 4 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 4, got {block}")
    first = [momentum != 0 and b is None for b in momentum_buffers]
    for k, p in enumerate(params):
        if first[k]:  # every element is written (b = g): no need to clear it
            momentum_buffers[k] = torch.empty_like(p, memory_format=torch.contiguous_format)
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    buffers = momentum_buffers if momentum != 0 else params  # never read without momentum
    lr_from_ptr = isinstance(lr, torch.Tensor)
    lr_t = lr.to(device) if lr_from_ptr else None
    wd_hi, wd_lo = _split(weight_decay)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for dtype in dict.fromkeys(p.dtype for p in params):
        rows = tuple((p.data_ptr(), g.data_ptr(), b.data_ptr(), p.numel(), i, int(f))
                     for p, g, b, i, f in zip(params, grads, buffers, parameter_index, first) if p.dtype == dtype)
        plan = _plan(rows, block, device)
        if plan.n_blocks == 0:  # only empty tensors of this dtype
            continue
        dummy = plan.partials
        switches = kernel_switches(dtype, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                   weight_decay=weight_decay, maximize=maximize, noise=noise,
                                   temperature=temperature, lr_from_ptr=lr_from_ptr,
                                   grad_scale=grad_scale is not None, found_inf=found_inf is not None, block=block)
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            sgd_step_kernel[(plan.n_blocks,)](
                plan.table, plan.block_row, plan.partials,
                lr_t if lr_from_ptr else dummy, 0.0 if lr_from_ptr else float(lr), step,
                grad_scale.to(device) if grad_scale is not None else dummy,
                found_inf.to(device) if found_inf is not None else dummy,
                float(momentum), float(dampening), float(weight_decay), wd_hi, wd_lo,
                float(temperature if temperature is not None else noise), int(seed),
                **switches, num_warps=NUM_WARPS if device.type == "cuda" else 1,
                # contraction on: torch's own CUDA foreach kernels (nvcc --fmad=true) contract a + alpha * b
                # too, so the GPU agrees with torch.optim.SGD to rounding either way, never bitwise
                enable_fp_fusion=True,
            )
        totals += plan.partials.sum(dim=0)
    return totals
