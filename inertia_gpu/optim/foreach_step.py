"""The multi-tensor (torch._foreach_*) step of InertiaSGD: any device, torch.optim.SGD's numerics.

With noise 0 and no grad_scale the parameter and buffer updates are torch.optim.SGD(foreach=True)'s
own sequence of foreach ops, so the two agree bitwise. The inertia sums are exact float64 dot
products over cache-sized slices (converting whole tensors to float64 first costs more than the
step itself).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import rng


def optimizer_noise(sizes: list[int], step: torch.Tensor, parameters: list[int], seed: int,
                    dtype: torch.dtype) -> list[torch.Tensor]:
    """rng.optimizer_normals for several tensors in one Philox evaluation, step as a device tensor (no sync)."""
    device = step.device
    groups = [torch.arange((n + 3) // 4, device=device, dtype=torch.int64) for n in sizes]
    c0 = torch.cat(groups)
    c2 = torch.cat([torch.full_like(g, i) for g, i in zip(groups, parameters)])
    k0, k1 = rng.seed_key(seed)
    x0, x1, x2, x3 = rng.philox4x32(c0 & rng.MASK32, step.to(torch.int64), c2,
                                    rng.TAG_OPTIMIZER + (c0 >> 32) * 16, k0, k1)
    z0, z1 = rng.box_muller(x0, x1, dtype)
    z2, z3 = rng.box_muller(x2, x3, dtype)
    z = torch.stack((z0, z1, z2, z3), dim=-1).reshape(-1)
    return [chunk[:n] for chunk, n in zip(torch.split(z, [4 * g.numel() for g in groups]), sizes)]


_NUMBA_DTYPES = (torch.float32, torch.float64)
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_cpu_kernel = None


def _numba_sums():
    """kernels/sgd_cpu.py, or False when numba is not installed (the optional [cpu] extra)."""
    global _cpu_kernel
    if _cpu_kernel is None:
        try:
            from ..kernels import sgd_cpu
            _cpu_kernel = sgd_cpu
        except ImportError:
            _cpu_kernel = False
    return _cpu_kernel


def _cpu_inertia_sums(buffers, grads, params, *, maximize, weight_decay, grad_scale):
    """The numba kernel's sums over float32/float64 contiguous tensors; the (buffer, grad, param) triples it skips."""
    kernel = _numba_sums()
    out = np.zeros(2)
    rest = []
    scale = 1.0 if grad_scale is None else float(grad_scale)  # the CPU path reads found_inf on the host anyway
    for b, g, p in zip(buffers, grads, params):
        if b is None:
            continue
        if kernel and b.dtype in _NUMBA_DTYPES and b.is_contiguous() and g.is_contiguous() and p.is_contiguous():
            flat = [t.detach().reshape(-1).numpy() for t in (b, g, p)]
            kernel.add_inertia_sums(*flat, -1.0 if maximize else 1.0, scale, float(weight_decay), out)
        else:
            rest.append((b, g, p))
    return torch.from_numpy(out), rest


def inertia_sums(buffers, grads, params, *, maximize: bool, weight_decay: float,
                 grad_scale: torch.Tensor | None, chunk: int | None = None) -> torch.Tensor:
    """float64 (sum |b|^2, sum <b, d>), d = ±g / grad_scale + weight_decay theta; None buffers count 0.

    On the CPU the numba kernel (kernels/sgd_cpu.py) reads each tensor once; elsewhere, and for what
    it does not take, exact float64 dot products over slices of at most `chunk` elements (on the CPU
    a slice small enough to stay in cache, on a GPU large slices: few launches).
    """
    device = params[0].device
    if chunk is None:
        chunk = 1 << 24 if device.type == "cuda" else 1 << 16
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    triples = list(zip(buffers, grads, params))
    if device.type == "cpu" and _numba_sums():
        sums, triples = _cpu_inertia_sums(buffers, grads, params, maximize=maximize, weight_decay=weight_decay,
                                          grad_scale=grad_scale)
    scale = None if grad_scale is None else grad_scale.to(device=device, dtype=torch.float64)
    for b, g, p in triples:
        if b is None:
            continue
        b, g, p = b.reshape(-1), g.reshape(-1), p.detach().reshape(-1)
        for start in range(0, b.numel(), chunk):
            bb = b[start:start + chunk].to(torch.float64)
            d = g[start:start + chunk].to(torch.float64, copy=True)  # modified in place below
            if maximize:
                d = d.neg_()
            if scale is not None:
                d = d.div_(scale)
            if weight_decay != 0:
                d = d.add_(p[start:start + chunk].to(torch.float64), alpha=weight_decay)
            sums[0] += torch.dot(bb, bb)
            sums[1] += torch.dot(bb, d)
    return sums


def _noise_terms(params, step, parameter_index, seed) -> list[torch.Tensor]:
    """xi per parameter, drawn in the working dtype as the kernels do (float64 or float32), cast to the param's."""
    xis: list = [None] * len(params)
    for compute in (torch.float32, torch.float64):
        rows = [k for k, p in enumerate(params) if (p.dtype == torch.float64) == (compute == torch.float64)]
        if rows:
            draws = optimizer_noise([params[k].numel() for k in rows], step,
                                    [parameter_index[k] for k in rows], seed, compute)
            for k, xi in zip(rows, draws):
                xis[k] = xi.reshape(params[k].shape).to(params[k].dtype)
    return xis


def noise_std(noise: float, temperature: float | None, momentum: float, lr) -> float | torch.Tensor:
    """Gradient-noise std s: `noise`, or sqrt(2 (1 - momentum) T / lr) for a temperature T."""
    if temperature is None:
        return noise
    scale = 2.0 * (1.0 - momentum) * temperature
    if isinstance(lr, torch.Tensor):
        return torch.sqrt(scale / lr)
    return math.sqrt(scale / lr) if lr > 0 else 0.0


def foreach_inertia_sgd(params, grads, momentum_buffers, *, step, parameter_index, lr, momentum, dampening,
                        weight_decay, nesterov, maximize, noise, temperature, seed, grad_scale, found_inf,
                        block=None) -> torch.Tensor:
    """One step in place (see functional.inertia_sgd); `momentum_buffers` None entries become b = g."""
    del block  # a Triton tuning knob; the signature is shared by every implementation
    device = params[0].device
    std = noise_std(noise, temperature, momentum, lr)
    options = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                   maximize=maximize, grad_scale=grad_scale)
    if found_inf is not None and bool(found_inf.item()):  # host read: this path is for the CPU
        if momentum == 0:
            return torch.zeros(3, dtype=torch.float64, device=device)
        sums = inertia_sums(momentum_buffers, grads, params, maximize=maximize, weight_decay=weight_decay,
                            grad_scale=grad_scale)
        return torch.cat([sums, torch.zeros(1, dtype=torch.float64, device=device)])  # nothing injected
    if _fused_cpu_ready(params, grads, momentum_buffers, momentum, lr, std, grad_scale):
        return _fused_cpu_step(params, grads, momentum_buffers, step=step, parameter_index=parameter_index,
                               seed=seed, std=std, **options)
    noisy = isinstance(std, torch.Tensor) or std != 0
    noise_terms = (std, lambda: _noise_terms(params, step, parameter_index, seed)) if noisy else None
    return _step(params, grads, momentum_buffers, noise_terms=noise_terms, **options)


def _injected(buffers, xis, std, momentum, dampening) -> torch.Tensor:
    """float64 [1]: sum <q, 2 momentum b + q>, q = c std xi the noise the buffer receives (c = 1 - dampening,
    or 1 where the buffer is new: torch's first step b = g); lr/2 times it is the ledger's injected energy."""
    out = torch.zeros(1, dtype=torch.float64, device=xis[0].device)
    s = std.to(torch.float64) if isinstance(std, torch.Tensor) else std
    for b, xi in zip(buffers, xis):
        q = xi.reshape(-1).to(torch.float64) * (s if b is None else (1.0 - dampening) * s)
        out += torch.dot(q, q)
        if b is not None:
            out += 2.0 * momentum * torch.dot(b.reshape(-1).to(torch.float64), q)
    return out


def _step(params, grads, buffers, *, lr, momentum, dampening, weight_decay, nesterov, maximize, grad_scale,
          noise_terms) -> torch.Tensor:
    """The inertia sums of the state, then torch.optim.SGD's foreach update (plus noise = std * xi).

    Returns float64 [3]: (sum b^2, sum <b, d>) and the injected-noise term sum <q, 2 momentum b + q>."""
    device = params[0].device
    injected = torch.zeros(1, dtype=torch.float64, device=device)
    if momentum != 0:
        sums = inertia_sums(buffers, grads, params, maximize=maximize, weight_decay=weight_decay,
                            grad_scale=grad_scale)
    else:
        sums = torch.zeros(2, dtype=torch.float64, device=device)
    if grad_scale is not None:
        grads = torch._foreach_div(grads, grad_scale.to(device))
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if noise_terms is not None:
        std, draw = noise_terms
        xis = draw()
        if momentum != 0:
            injected = _injected(buffers, xis, std, momentum, dampening)
        if isinstance(std, torch.Tensor):
            grads = torch._foreach_add(grads, torch._foreach_mul(xis, std.to(device)))
        else:
            grads = torch._foreach_add(grads, xis, alpha=std)
    if momentum != 0:
        _update_buffers(buffers, grads, momentum, dampening)
        grads = torch._foreach_add(grads, buffers, alpha=momentum) if nesterov else buffers
    if isinstance(lr, torch.Tensor):
        torch._foreach_add_(params, torch._foreach_mul(grads, lr.to(device)), alpha=-1)
    else:
        torch._foreach_add_(params, grads, alpha=-lr)
    return torch.cat([sums, injected])


def _update_buffers(buffers: list, grads: list, momentum: float, dampening: float) -> None:
    """torch.optim.SGD's buffer update: b = momentum b + (1 - dampening) g, or b = g.clone() where b is None."""
    if all(b is not None for b in buffers):
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads, alpha=1 - dampening)
        return
    for k, (b, g) in enumerate(zip(buffers, grads)):
        if b is None:
            buffers[k] = g.detach().clone()
        else:
            b.mul_(momentum).add_(g, alpha=1 - dampening)


def _fused_cpu_ready(params, grads, buffers, momentum, lr, std, grad_scale) -> bool:
    """Can kernels/sgd_cpu.fused_steps take this step? CPU, numba, float32/float64 contiguous tensors, each
    grad and buffer of its parameter's dtype, python-float lr and noise std, no AMP grad scale."""
    if params[0].device.type != "cpu" or grad_scale is not None or isinstance(lr, torch.Tensor) \
            or isinstance(std, torch.Tensor) or not _numba_sums():
        return False
    if any(g.dtype != p.dtype for p, g in zip(params, grads)) \
            or (momentum != 0 and any(b is not None and b.dtype != p.dtype for p, b in zip(params, buffers))):
        return False
    tensors = [*params, *grads, *(b for b in buffers if b is not None)] if momentum != 0 else [*params, *grads]
    return all(t.dtype in _NUMBA_DTYPES and t.is_contiguous() for t in tensors)


def _fused_cpu_step(params, grads, buffers, *, step, parameter_index, seed, std, lr, momentum, dampening,
                    weight_decay, nesterov, maximize, grad_scale) -> torch.Tensor:
    """The whole step in one numba pass over each tensor (kernels/sgd_cpu): torch's foreach arithmetic
    (bitwise without noise), the float64 sums, the noise of rng.optimizer_normals.

    The tensors go to the kernel by address in one call per dtype (fused_steps: one launch of the
    threads, whose blocks they share)."""
    del grad_scale  # None here
    kernel = _numba_sums()
    out = np.zeros(3)
    k0, k1 = rng.seed_key(seed)
    t = int(step.item()) & rng.MASK32
    heavy = momentum != 0
    scalars = (float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov), bool(maximize),
               float(std))
    batches: dict = {}
    for k, (p, g) in enumerate(zip(params, grads)):
        b = buffers[k] if heavy else None
        new_buffer = heavy and b is None
        if new_buffer:
            b = torch.empty_like(p, memory_format=torch.contiguous_format)
            buffers[k] = b
        if p.numel() == 0:
            continue
        batches.setdefault(p.dtype, []).append((p.data_ptr(), g.data_ptr(), (b if heavy else p).data_ptr(),
                                                p.numel(), int(parameter_index[k]) & rng.MASK32, new_buffer))
    for dtype, rows in batches.items():
        p_at, g_at, b_at, sizes, parameters, new_buffers = zip(*rows)
        kernel.fused_steps(np.empty(0, dtype=_NUMPY_DTYPES[dtype]), np.array(p_at, dtype=np.int64),
                           np.array(g_at, dtype=np.int64), np.array(b_at, dtype=np.int64),
                           np.array(sizes, dtype=np.int64), np.array(parameters, dtype=np.int64),
                           np.array(new_buffers, dtype=np.bool_), *scalars, t, rng.TAG_OPTIMIZER, k0, k1, out)
    return torch.from_numpy(out)
