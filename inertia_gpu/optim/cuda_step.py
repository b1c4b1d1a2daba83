"""The CUDA C implementation of inertia_sgd: kernels/cuda/sgd.cu through CuPy, on torch tensors (DLPack).

A second implementation beside Triton, to cross-check it: one launch per tensor, and the step
count and a tensor lr are read on the host once per call (a sync the Triton path avoids).
CuPy and its compiled-module cache come from backends/cupy_backend.py (shared with the ensemble).
"""
from __future__ import annotations

import numpy as np
import torch

from ..backends.base import BackendUnavailable
from ..backends.cupy_backend import _module, _OnTorchStream, cupy_unavailable_reason
from .foreach_step import noise_std

SGD_SOURCE = "sgd.cu"
SGD_KERNELS = {torch.float32: "inertia_sgd_f32", torch.float64: "inertia_sgd_f64"}
SGD_BLOCK = 256  # must equal IG_SGD_BLOCK in sgd.cu
SGD_SUMS = 3  # IG_SGD_SUMS in sgd.cu: per-block float64 sums
SGD_MAX_BLOCKS = 2048  # grid of the SGD step: a function of numel only, so its sums are device-independent


def _check(param, grad, momentum_buffer, momentum, step, parameter, seed) -> None:
    reason = cupy_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cupy_sgd_step: {reason}")
    if param.dtype not in SGD_KERNELS:
        raise TypeError(f"cupy_sgd_step: dtype {param.dtype} not supported (float32, float64)")
    if momentum != 0 and momentum_buffer is None:
        raise ValueError("cupy_sgd_step: momentum != 0 needs a momentum_buffer (torch.empty_like(param), first=True)")
    for t in [param, grad] + ([momentum_buffer] if momentum != 0 else []):
        if not t.is_cuda or t.dtype != param.dtype or t.numel() != param.numel() or not t.is_contiguous():
            raise ValueError("cupy_sgd_step: param, grad and buffer must be contiguous CUDA tensors of one dtype and size")
    if not (0 <= step < 1 << 32 and 0 <= parameter < 1 << 32 and 0 <= seed < 1 << 64):
        raise ValueError("cupy_sgd_step: step and parameter must lie in [0, 2**32), seed in [0, 2**64)")


def cupy_sgd_step(param: torch.Tensor, grad: torch.Tensor, momentum_buffer: torch.Tensor | None = None, *,
                  lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                  nesterov: bool = False, maximize: bool = False, noise: float = 0.0, seed: int = 0,
                  step: int = 0, parameter: int = 0, first: bool = False) -> torch.Tensor:
    """One torch.optim.SGD step (plus Philox gradient noise) in place on a CUDA tensor, through CuPy.

    param, grad (and momentum_buffer when momentum != 0): contiguous CUDA tensors of one
    dtype (float32 or float64) and shape. `first` marks a buffer not yet written (torch's
    first step: b = g). Noise is noise * xi, xi from the optimizer stream (step, parameter,
    element). Returns float64 [3] on the device, without a host sync:
    (sum b_old^2, sum <b_old, d>, sum <q, 2 momentum b_old + q>) of the state before the step,
    d = the noise-free direction (±grad + weight_decay * param), q the noise put into the buffer
    ((1 - dampening) noise xi; noise xi when `first`); kinetic = lr/2 * the first entry, the
    ledger's injected energy lr/2 * the third (all 0 without momentum).
    """
    _check(param, grad, momentum_buffer, momentum, step, parameter, seed)
    device = param.device
    numel = param.numel()
    nquads = (numel + 3) // 4
    blocks = max(1, min(SGD_MAX_BLOCKS, (nquads + SGD_BLOCK - 1) // SGD_BLOCK))
    partial = torch.zeros(blocks, SGD_SUMS, dtype=torch.float64, device=device)
    if numel == 0:
        return partial.sum(0)
    kernel = _module(SGD_SOURCE, (f"-DIG_SGD_BLOCK={SGD_BLOCK}",), device.index).get_function(SGD_KERNELS[param.dtype])
    has_buf = momentum != 0
    buf = momentum_buffer if has_buf else param  # not touched without momentum
    with _OnTorchStream(device) as ctx:
        args = (
            ctx.view(param.view(-1)), ctx.view(grad.reshape(-1)), ctx.view(buf.view(-1)), ctx.view(partial),
            np.int64(numel), np.float64(float(lr)), np.float64(momentum), np.float64(dampening),
            np.float64(weight_decay), np.float64(noise), np.int32(bool(nesterov)), np.int32(bool(maximize)),
            np.int32(bool(first)), np.int32(has_buf), np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32),
            np.uint32(int(step)), np.uint32(int(parameter)),
        )
        kernel((blocks,), (SGD_BLOCK,), args)
    return partial.sum(0)


def cuda_inertia_sgd(params, grads, momentum_buffers, *, step, parameter_index, lr, momentum, dampening,
                     weight_decay, nesterov, maximize, noise, temperature, seed, grad_scale, found_inf,
                     block=None) -> torch.Tensor:
    """One step through the CUDA C kernel (see functional.inertia_sgd); no AMP (refused by its checks)."""
    del block, grad_scale, found_inf  # refused before this point (functional.check_tensors)
    lr = float(lr)
    t = int(step)
    std = float(noise_std(noise, temperature, momentum, lr))
    sums = torch.zeros(SGD_SUMS, dtype=torch.float64, device=params[0].device)
    for k, (p, g, i) in enumerate(zip(params, grads, parameter_index)):
        first = momentum != 0 and momentum_buffers[k] is None
        if first:
            momentum_buffers[k] = torch.empty_like(p, memory_format=torch.contiguous_format)
        sums += cupy_sgd_step(p, g.contiguous(), momentum_buffers[k], lr=lr, momentum=momentum,
                              dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                              maximize=maximize, noise=std, seed=seed, step=t, parameter=i, first=first)
    return sums
