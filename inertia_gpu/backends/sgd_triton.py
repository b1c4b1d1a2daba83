"""Launcher for the fused SGD kernel (kernels/sgd.py): pointer tables in, inertia sums out.

`sgd_step` applies one heavy-ball step to the parameters of one optimizer
group, one launch per dtype present, and returns the float64 sums
(sum |b_k|^2, sum <b_k, d_k>) of the state before the update. The pointer
table of a launch is cached and rebuilt only when a tensor moves, so a
CUDA-graph capture replays with the table of its warm-up step. On the CPU
the kernel runs under the Triton interpreter (TRITON_INTERPRET=1 set before
triton is imported), which is how the tests compare it with the foreach path.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

DEFAULT_BLOCK_CUDA = 4096
DEFAULT_BLOCK_INTERPRETER = 1024
NUM_WARPS = 8


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
    table = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
             torch.float64: tl.float64}
    if dtype not in table:
        raise ValueError(f"InertiaSGD: parameters of dtype {dtype} are not supported by the triton backend "
                         f"(allowed: {sorted(str(d) for d in table)})")
    return table[dtype]


@dataclass
class LaunchPlan:
    """Device-side pointer table of one (group, dtype) launch, reused while no tensor moves."""

    key: tuple
    table: torch.Tensor  # int64 [rows, TABLE_COLUMNS]
    block_row: torch.Tensor  # int32 [n_blocks]
    partials: torch.Tensor  # float32 [n_blocks, 2]
    n_blocks: int


def _host_to_device(rows: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    host = torch.tensor(rows, dtype=dtype)
    if device.type == "cuda":  # pinned + non_blocking: no host wait on the stream
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _plan(params, grads, buffers, parameter_index, local_index, block, device, cache, cache_key) -> LaunchPlan:
    """The launch's pointer table; rebuilt only when a tensor moves (e.g. grads freed by zero_grad)."""
    from ..kernels.sgd import TABLE_COLUMNS
    pointers = tuple((p.data_ptr(), g.data_ptr(), b.data_ptr()) for p, g, b in zip(params, grads, buffers))
    layout = tuple((p.numel(), i, j) for p, i, j in zip(params, parameter_index, local_index)) + (block,)
    plan = cache.get(cache_key)
    if plan is not None and plan.key == (pointers, layout):
        return plan
    rows, blocks, first = [], [], 0
    for (pp, gp, bp), (numel, i, j) in zip(pointers, layout):
        rows.append([pp, gp, bp, numel, i, first, j] + [0] * (TABLE_COLUMNS - 7))
        blocks.append((numel + block - 1) // block)
        first += blocks[-1]
    if plan is not None and plan.key[1] == layout:  # same tensors' shapes: keep block map and partials
        block_row, partials = plan.block_row, plan.partials
    else:
        counts = torch.tensor(blocks, dtype=torch.int64)
        block_row = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), counts).to(device)
        partials = torch.empty(first, 2, dtype=torch.float32, device=device)
    plan = LaunchPlan(key=(pointers, layout), table=_host_to_device(rows, torch.int64, device),
                      block_row=block_row, partials=partials, n_blocks=first)
    cache[cache_key] = plan
    return plan


def sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor] | None,
             parameter_index: list[int], local_index: list[int], ready: torch.Tensor | None, *,
             lr: float | torch.Tensor, momentum: float, dampening: float, nesterov: bool, weight_decay: float,
             maximize: bool, noise: float, temperature: float | None, seed: int, step: torch.Tensor,
             grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None,
             block: int | None = None, cache: dict | None = None, cache_tag=0) -> torch.Tensor:
    """One fused step over contiguous same-device tensors; returns float64 [2] inertia sums.

    `buffers` (None when momentum == 0) are the momentum buffers, written in
    place; `ready[local_index[r]] == 0` marks a buffer whose first step
    (b = g) is still to come. `parameter_index` is the index in the
    optimizer's flattened parameter list (the Philox counter's c2).
    """
    import triton.language as tl

    from ..kernels.sgd import sgd_step_kernel

    device = params[0].device
    reason = triton_unavailable_reason(device)
    if reason:
        raise RuntimeError(reason)
    if block is None:
        block = DEFAULT_BLOCK_CUDA if device.type == "cuda" else DEFAULT_BLOCK_INTERPRETER
    if block % 4 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 4, got {block}")
    cache = {} if cache is None else cache
    has_momentum = momentum != 0
    if buffers is None:
        buffers = params  # never read: MOMENTUM is off
    for t in (*params, *grads, *buffers):
        if not t.is_contiguous() or t.device != device:
            raise ValueError("triton backend needs contiguous tensors on one device")

    lr_from_ptr = isinstance(lr, torch.Tensor)
    totals = None
    by_dtype: dict[torch.dtype, list[int]] = {}
    for r, p in enumerate(params):
        by_dtype.setdefault(p.dtype, []).append(r)
    for dtype, rows in by_dtype.items():
        tl_dtype = _tl_dtype(dtype)
        acc = tl.float64 if dtype == torch.float64 else tl.float32
        pick = lambda xs: [xs[r] for r in rows]  # noqa: E731
        plan = _plan(pick(params), pick(grads), pick(buffers), pick(parameter_index), pick(local_index),
                     block, device, cache, (cache_tag, dtype))
        if plan.n_blocks == 0:  # only empty tensors of this dtype
            continue
        dummy = plan.partials
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            sgd_step_kernel[(plan.n_blocks,)](
                plan.table, plan.block_row, plan.partials, ready if ready is not None else plan.block_row,
                lr if lr_from_ptr else dummy, 0.0 if lr_from_ptr else float(lr), step,
                grad_scale if grad_scale is not None else dummy, found_inf if found_inf is not None else dummy,
                float(momentum), float(dampening), float(weight_decay),
                float(temperature if temperature is not None else noise), int(seed),
                DTYPE=tl_dtype, ACC=acc, BLOCK=block,
                MOMENTUM=has_momentum, DAMPENING=dampening != 0, NESTEROV=bool(nesterov),
                WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=bool(maximize),
                NOISE=(temperature if temperature is not None else noise) != 0,
                TEMPERATURE=temperature is not None,
                LR_FROM_PTR=lr_from_ptr, HAS_GRAD_SCALE=grad_scale is not None,
                HAS_FOUND_INF=found_inf is not None,
                num_warps=NUM_WARPS if device.type == "cuda" else 1,
            )
        sums = plan.partials.to(torch.float64).sum(dim=0)
        totals = sums if totals is None else totals + sums
    return totals if totals is not None else torch.zeros(2, dtype=torch.float64, device=device)

