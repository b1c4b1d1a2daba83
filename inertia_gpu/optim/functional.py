"""inertia_sgd: InertiaSGD's step as a function, one signature for every implementation.

As torch.optim.sgd.sgd dispatches to its single-tensor, foreach and fused implementations,
`inertia_sgd` dispatches on `impl` to

    "foreach"  torch._foreach_* ops, any device                       foreach_step.py
    "triton"   the fused kernel kernels/sgd.py (CUDA, or the Triton    triton_step.py
               interpreter on the CPU)
    "cuda"     the CUDA C kernel kernels/cuda/sgd.cu through CuPy,      cuda_step.py
               a second implementation to cross-check Triton

which all take the same arguments. "No momentum buffer yet" is None in `momentum_buffers`, as in
torch.optim.SGD; the step replaces it in place by the new buffer (b = g, torch's first step).
Everything is checked before anything is written, so an error leaves params, buffers and the step
counter as they were.
"""
from __future__ import annotations

import torch

from .foreach_step import foreach_inertia_sgd, inertia_sums

IMPLS = ("foreach", "triton", "cuda")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float64)


def _implementation(impl: str):
    if impl == "foreach":
        return foreach_inertia_sgd
    if impl == "triton":
        from .triton_step import triton_inertia_sgd
        return triton_inertia_sgd
    from .cuda_step import cuda_inertia_sgd
    return cuda_inertia_sgd


def unavailable_reason(impl: str, device: torch.device) -> str | None:
    """None when `impl` can run on `device` here; else one line why not."""
    if impl == "foreach":
        return None
    if impl == "triton":
        from .triton_step import triton_unavailable_reason
        return triton_unavailable_reason(device)
    from .cuda_step import cupy_unavailable_reason
    reason = cupy_unavailable_reason() if device.type == "cuda" else "the parameters are not on a CUDA device"
    return None if reason is None else f"backend='cupy': {reason}"


def _check_pair(k: int, p, g, b, device) -> None:
    if not isinstance(p, torch.Tensor) or not isinstance(g, torch.Tensor):
        raise TypeError(f"InertiaSGD: parameter {k} or its gradient is not a tensor")
    if g.is_sparse:
        raise ValueError(f"InertiaSGD: sparse gradient for parameter {k} (not supported)")
    if p.is_complex() or g.is_complex():
        raise ValueError(f"InertiaSGD: complex gradient for parameter {k} (not supported)")
    if p.dtype not in FLOAT_DTYPES:
        raise ValueError(f"InertiaSGD: parameter {k} has dtype {p.dtype} (floating point needed: "
                         f"{', '.join(str(d) for d in FLOAT_DTYPES)})")
    if g.dtype != p.dtype or g.shape != p.shape or g.device != p.device:
        raise ValueError(f"InertiaSGD: the gradient of parameter {k} ({g.dtype}, {tuple(g.shape)}, {g.device}) "
                         f"does not match the parameter ({p.dtype}, {tuple(p.shape)}, {p.device})")
    if p.device != device:
        raise ValueError(f"InertiaSGD: parameter {k} is on {p.device}, the others of its group on {device} "
                         f"(one device per parameter group)")
    if b is not None and (not isinstance(b, torch.Tensor) or b.dtype != p.dtype or b.shape != p.shape
                          or b.device != p.device):
        raise ValueError(f"InertiaSGD: the momentum buffer of parameter {k} does not match the parameter "
                         f"(dtype {p.dtype}, shape {tuple(p.shape)}, device {p.device})")


def check_tensors(params, grads, momentum_buffers, *, momentum: float, impl: str, step=None,
                  grad_scale=None, found_inf=None, parameter_index=None) -> None:
    """Raise (ValueError/TypeError/RuntimeError, one line) unless `impl` can step these tensors."""
    if impl not in IMPLS:
        raise ValueError(f"Invalid impl: {impl!r} (allowed: {', '.join(IMPLS)})")
    index = list(range(len(params))) if parameter_index is None else parameter_index
    if len(grads) != len(params) or len(index) != len(params):
        raise ValueError("InertiaSGD: params, grads and parameter_index must have one entry per parameter")
    if momentum != 0 and len(momentum_buffers) != len(params):
        raise ValueError("InertiaSGD: momentum_buffers needs one entry (a tensor or None) per parameter")
    if not params:
        return
    device = params[0].device
    for k, (p, g) in enumerate(zip(params, grads)):
        _check_pair(index[k], p, g, momentum_buffers[k] if momentum != 0 else None, device)
    if step is not None and (not isinstance(step, torch.Tensor) or step.dtype != torch.int64 or step.dim() != 0):
        raise ValueError("InertiaSGD: step must be a 0-dim int64 tensor (the count of applied steps)")
    reason = unavailable_reason(impl, device)
    if reason:
        raise RuntimeError(reason)
    if impl == "foreach":
        return
    if impl == "cuda" and (grad_scale is not None or found_inf is not None):
        raise RuntimeError("backend='cupy': AMP grad scaling and skip_nonfinite need backend 'triton' or 'foreach'")
    allowed = CUDA_DTYPES if impl == "cuda" else FLOAT_DTYPES
    buffers = [b for b in momentum_buffers if b is not None] if momentum != 0 else []
    for k, p in enumerate(params):
        if p.dtype not in allowed:
            raise ValueError(f"InertiaSGD: parameters of dtype {p.dtype} are not supported by impl {impl!r} "
                             f"(allowed: {', '.join(str(d) for d in allowed)})")
    if not all(t.is_contiguous() for t in (*params, *buffers)):
        raise ValueError(f"InertiaSGD: impl {impl!r} needs contiguous parameters and momentum buffers")


def inertia_sgd(params: list[torch.Tensor], grads: list[torch.Tensor],
                momentum_buffers: list[torch.Tensor | None], *, step: torch.Tensor,
                parameter_index: list[int] | None = None, lr: float | torch.Tensor, momentum: float = 0.0,
                dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                maximize: bool = False, noise: float = 0.0, temperature: float | None = None, seed: int = 0,
                grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None,
                impl: str = "foreach", block: int | None = None) -> torch.Tensor:
    """One InertiaSGD step in place; returns float64 [3] on the device:

        (sum |b_k|^2, sum <b_k, d_k>, sum <q_k, 2 momentum b_k + q_k>)

    of the state before the update: b_k the momentum buffer (0 where None), d_k = ±grad / grad_scale
    + weight_decay * param the noise-free direction, q_k the noise the step puts into the buffer
    ((1 - dampening) s xi, or s xi where the buffer is new; 0 for a skipped step). Noise (std `noise`,
    or sqrt(2 (1 - momentum) T / lr) for a `temperature` T) is rng.optimizer_normals(numel, step,
    parameter_index[k], seed). `step` (0-dim int64 tensor on the device) counts applied steps and is
    incremented here unless `found_inf` (AMP) is nonzero, in which case nothing else changes either.
    `momentum_buffers` is ignored when momentum == 0 (torch passes an empty list then).
    """
    check_tensors(params, grads, momentum_buffers, momentum=momentum, impl=impl, step=step,
                  grad_scale=grad_scale, found_inf=found_inf, parameter_index=parameter_index)
    if not params:
        return torch.zeros(3, dtype=torch.float64, device=step.device)
    index = list(range(len(params))) if parameter_index is None else list(parameter_index)
    if momentum == 0:
        momentum_buffers = [None] * len(params)
    elif found_inf is not None and any(b is None for b in momentum_buffers) and bool(found_inf.item()):
        # a skipped step that would create buffers creates none (torch's fused SGD allocates them and then
        # skips); the one host read happens only while some buffer does not exist yet
        sums = inertia_sums(momentum_buffers, grads, params, maximize=maximize, weight_decay=weight_decay,
                            grad_scale=grad_scale)
        return torch.cat([sums, torch.zeros(1, dtype=torch.float64, device=sums.device)])
    sums = _implementation(impl)(
        params, grads, momentum_buffers, step=step, parameter_index=index, lr=lr, momentum=momentum,
        dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, noise=noise,
        temperature=temperature, seed=seed, grad_scale=grad_scale, found_inf=found_inf, block=block)
    if found_inf is None:
        step.add_(1)
    else:
        step.add_((found_inf.to(step.device) == 0).to(step.dtype).reshape(()))
    return sums


def nonfinite_flag(grads: list[torch.Tensor], found_inf: torch.Tensor | None) -> torch.Tensor | None:
    """0-dim float32 flag on the device of grads[0]: 1 when any gradient holds an Inf/NaN or found_inf is set.

    One fused multi-tensor check per device (torch's AMP kernel, with an unscale factor of 1), so the
    guard costs a read of the gradients and no host sync. found_inf unchanged when there are no grads.
    """
    if not grads:
        return found_inf
    device = grads[0].device
    flag = torch.zeros(1, dtype=torch.float32, device=device)
    by_device: dict = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    for dev, gs in by_device.items():
        f = torch.zeros(1, dtype=torch.float32, device=dev)
        torch._amp_foreach_non_finite_check_and_unscale_(gs, f, torch.ones(1, dtype=torch.float32, device=dev))
        flag = torch.maximum(flag, f.to(device))
    if found_inf is not None:
        flag = torch.maximum(flag, found_inf.to(device=device, dtype=torch.float32).reshape(1))
    return flag.reshape(())
