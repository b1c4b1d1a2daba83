"""InertiaSGD: torch.optim.SGD that also reports the computational inertia of its own dynamics.

A drop-in for torch.optim.SGD (same options, same numerics with noise=0,
interchangeable state_dict with `momentum_buffer`), plus optional gradient
noise from the project's Philox stream and, at every step, device tensors

    kinetic        = sum over groups of lr/2 |b_k|^2
    inertia        = kinetic + L(theta_k)
    shadow_inertia = inertia + sum over groups of lr/2 <b_k, d_k>

Convention (THEORY.md §2): all three describe the state k at which the
closure evaluated the loss, i.e. b_k is the momentum buffer *before* this
update and d_k the noise-free update direction of this step
(±grad L(theta_k) + weight_decay theta_k, the gradient unscaled by AMP).
For momentum = 1, no noise and a quadratic loss, shadow_inertia is
conserved to rounding (with weight decay only if the loss passed in
includes its weight_decay/2 |theta|^2). Before the first step b_0 = 0, so kinetic is 0; with momentum = 0
there is no buffer and kinetic is 0 throughout. No value is read back to
the host: `opt.inertia.item()` is the user's choice (and sync).

Noise: xi = rng.optimizer_normals(numel, t, i, seed) for parameter i of the
flattened list over all groups, t = group["step"] (an int64 device tensor:
the number of steps applied to that group; an AMP-skipped step does not
count). Added to the update direction after maximize and weight decay.

Backends: "triton" (kernels/sgd.py: all parameters of a group in one launch
per dtype, AMP grad_scale/found_inf read on the device, CUDA-graph
capturable with a tensor lr), "foreach" (torch._foreach_* ops, any device;
reads found_inf on the host), "auto" (triton on CUDA, foreach elsewhere).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.optim import Optimizer

from . import rng

BACKENDS = ("auto", "foreach", "triton", "cupy")


class InertiaHistory:
    """Per-step device scalars (loss, kinetic, inertia, shadow_inertia); no host sync until read."""

    FIELDS = ("loss", "kinetic", "inertia", "shadow_inertia")

    def __init__(self) -> None:
        self._rows: list[tuple[torch.Tensor, ...]] = []

    def append(self, *values: torch.Tensor) -> None:
        self._rows.append(values)

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()

    def as_numpy(self) -> dict[str, np.ndarray]:
        """{field: float64 array over recorded steps}: one device-to-host copy."""
        if not self._rows:
            return {f: np.zeros(0) for f in self.FIELDS}
        table = torch.stack([torch.stack([v.to(self._rows[0][0].device) for v in row]) for row in self._rows])
        table = table.cpu().numpy()
        return {f: table[:, i] for i, f in enumerate(self.FIELDS)}


def _is_tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


def _lr_on(lr, device: torch.device):
    return lr.to(device=device, dtype=torch.float64) if _is_tensor(lr) else lr


def _check_group(group: dict) -> None:
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    if _is_tensor(lr):
        if lr.numel() != 1:
            raise ValueError("lr as a tensor must have one element")
    elif not lr >= 0.0:
        raise ValueError(f"Invalid lr: {lr} (must be >= 0)")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1])")
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening: {dampening} (must be in [0, 1])")
    if not group["weight_decay"] >= 0.0:
        raise ValueError(f"Invalid weight_decay: {group['weight_decay']} (must be >= 0)")
    if group["nesterov"] and (momentum <= 0 or dampening != 0):
        raise ValueError("Invalid nesterov: needs momentum > 0 and dampening = 0")
    if not group["noise"] >= 0.0:
        raise ValueError(f"Invalid noise: {group['noise']} (must be >= 0)")
    temperature = group["temperature"]
    if temperature is not None:
        if not temperature >= 0.0:
            raise ValueError(f"Invalid temperature: {temperature} (must be >= 0)")
        if group["noise"] != 0:
            raise ValueError("Invalid noise/temperature: give one of them, not both")
    if not (isinstance(group["seed"], int) and 0 <= group["seed"] < 1 << 64):
        raise ValueError(f"Invalid seed: {group['seed']} (must be an int in [0, 2**64))")
    if group["backend"] not in BACKENDS:
        raise ValueError(f"Invalid backend: {group['backend']!r} (allowed: {', '.join(BACKENDS)})")


def _noise_std(group: dict, lr) -> float | torch.Tensor:
    """Gradient-noise std s: `noise`, or sqrt(2 (1 - momentum) T / lr) for a temperature T."""
    if group["temperature"] is None:
        return group["noise"]
    scale = 2.0 * (1.0 - group["momentum"]) * group["temperature"]
    if _is_tensor(lr):
        return torch.sqrt(scale / lr)
    return math.sqrt(scale / lr) if lr > 0 else 0.0


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


def inertia_sums(buffers, grads, params, *, maximize: bool, weight_decay: float,
                 grad_scale: torch.Tensor | None, chunk: int | None = None) -> torch.Tensor:
    """float64 (sum |b|^2, sum <b, d>), d = ±g / grad_scale + weight_decay theta; None buffers count 0.

    Exact float64 dot products over slices of at most `chunk` elements: on the CPU a slice
    small enough to stay in cache (converting whole tensors to float64 first costs ten times
    the step itself), on a GPU large slices (few launches).
    """
    device = params[0].device
    if chunk is None:
        chunk = 1 << 24 if device.type == "cuda" else 1 << 16
    scale = None if grad_scale is None else grad_scale.to(device=device, dtype=torch.float64)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for b, g, p in zip(buffers, grads, params):
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


def foreach_step(params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor | None],
                 parameter_index: list[int], group: dict, step: torch.Tensor,
                 grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> torch.Tensor:
    """torch.optim.SGD's multi-tensor step plus noise; fills `buffers` (None -> new); float64 [2] sums."""
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    device = params[0].device
    if momentum != 0:
        sums = inertia_sums(buffers, grads, params, maximize=group["maximize"],
                            weight_decay=group["weight_decay"], grad_scale=grad_scale)
    else:
        sums = torch.zeros(2, dtype=torch.float64, device=device)
    if grad_scale is not None:
        grads = torch._foreach_div(grads, grad_scale.to(device))
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    if group["weight_decay"] != 0:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    if found_inf is not None and bool(found_inf.item()):  # host read: this path is for the CPU
        return sums
    std = _noise_std(group, lr)
    if _is_tensor(std) or std != 0:
        xis = [None] * len(params)
        for compute in (torch.float32, torch.float64):  # noise drawn in the working dtype, as the kernel does
            rows = [k for k, p in enumerate(params) if (p.dtype == torch.float64) == (compute == torch.float64)]
            if rows:
                draws = optimizer_noise([params[k].numel() for k in rows], step,
                                        [parameter_index[k] for k in rows], group["seed"], compute)
                for k, xi in zip(rows, draws):
                    xis[k] = xi.reshape(params[k].shape).to(params[k].dtype)
        grads = torch._foreach_add(grads, torch._foreach_mul(xis, std) if _is_tensor(std) else xis,
                                   alpha=1.0 if _is_tensor(std) else std)
    if momentum != 0:
        if all(b is not None for b in buffers):
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads, alpha=1 - dampening)
        else:
            for k, (b, g) in enumerate(zip(buffers, grads)):
                if b is None:
                    buffers[k] = g.detach().clone()
                else:
                    b.mul_(momentum).add_(g, alpha=1 - dampening)
        if group["nesterov"]:
            grads = torch._foreach_add(grads, buffers, alpha=momentum)
        else:
            grads = buffers
    if _is_tensor(lr):
        torch._foreach_add_(params, torch._foreach_mul(grads, lr.to(device)), alpha=-1)
    else:
        torch._foreach_add_(params, grads, alpha=-lr)
    return sums


class InertiaSGD(Optimizer):
    """SGD with momentum, optional gradient noise, and the inertia of its dynamics at every step.

    Args (as torch.optim.SGD): params, lr, momentum, dampening, weight_decay,
    nesterov, maximize. Extra:
      noise:       gradient-noise std s added to every coordinate (0 = none)
      temperature: alternatively T, s = sqrt(2 (1 - momentum) T / lr)
      seed:        Philox key; the noise is a pure function of (seed, step,
                   parameter index over all groups, element)
      backend:     "auto" | "foreach" | "triton" | "cupy" (CUDA C through CuPy, a cross-check)
      block:       elements per Triton program (None: the launcher's default)
      record_history: append (loss, kinetic, inertia, shadow) to `history` each step
      skip_nonfinite: opt-in guard: a step whose gradients hold an Inf or NaN is
                   skipped on the device (parameters and buffers untouched) and
                   counted in `skipped_steps` (a device tensor, no host sync)
      foreach, fused, differentiable: as in torch.optim.SGD (fused -> "triton",
                   foreach -> "foreach"; differentiable=True is refused)

    After each step: `kinetic`, `inertia`, `shadow_inertia`, `loss` (0-dim
    float64 device tensors; inertia and shadow are NaN when no loss was
    given), `group_kinetic` and `group_shadow_correction` ([n_groups]).
    The loss comes from the closure or from `step(loss=...)`.
    """

    _step_supports_amp_scaling = True  # GradScaler hands grad_scale / found_inf over instead of syncing

    def __init__(self, params, lr: float | torch.Tensor = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 noise: float = 0.0, temperature: float | None = None, seed: int = 0,
                 backend: str = "auto", block: int | None = None, record_history: bool = True,
                 skip_nonfinite: bool = False, foreach: bool | None = None, fused: bool | None = None, differentiable: bool = False):
        # torch.optim.SGD's implementation switches, accepted so SGD call sites need no edit
        if differentiable:
            raise ValueError("Invalid differentiable: InertiaSGD steps are not differentiable")
        if fused and backend == "auto":
            backend = "triton"
        elif foreach and backend == "auto":
            backend = "foreach"
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, noise=noise, temperature=temperature,
                        seed=seed, backend=backend)
        self.block = block
        self.record_history = record_history
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps: torch.Tensor | None = None
        self.history = InertiaHistory()
        self._plans: dict = {}
        self._ready: dict[int, torch.Tensor] = {}
        self._pending: set[int] = set()  # groups whose ready flags may hold a 0
        super().__init__(params, defaults)
        self.kinetic = self.inertia = self.shadow_inertia = self.loss = None
        self.group_kinetic = self.group_shadow_correction = None

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group(group)
        if _is_tensor(group["lr"]) and bool((group["lr"] < 0).any()):  # one read, at construction only
            raise ValueError(f"Invalid lr: {group['lr']} (must be >= 0)")
        if "step" not in group:
            group["step"] = torch.zeros((), dtype=torch.int64, device=group["params"][0].device)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a state_dict from torch.optim.SGD lacks these
            for key in ("noise", "temperature", "seed", "backend"):
                group.setdefault(key, self.defaults[key])
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("step", torch.zeros((), dtype=torch.int64))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._plans.clear()
        self._ready.clear()
        self._pending.clear()

    def _backend(self, group: dict, device: torch.device) -> str:
        name = group["backend"]
        if name == "auto":
            if device.type != "cuda":
                return "foreach"
            from .backends.sgd_triton import triton_unavailable_reason
            return "foreach" if triton_unavailable_reason(device) else "triton"
        if name == "triton":
            from .backends.sgd_triton import triton_unavailable_reason
            reason = triton_unavailable_reason(device)
            if reason:
                raise RuntimeError(reason)
        if name == "cupy":
            from .backends.cupy_backend import cupy_unavailable_reason
            reason = cupy_unavailable_reason() if device.type == "cuda" else "the parameters are not on a CUDA device"
            if reason:
                raise RuntimeError(f"backend='cupy': {reason}")
        return name

    def _ready_flags(self, gi: int, group: dict, device: torch.device) -> torch.Tensor:
        """int32 per parameter of the group: 0 while its buffer still awaits torch's first step b = g."""
        flags = self._ready.get(gi)
        if flags is None or flags.device != device or flags.numel() != len(group["params"]):
            flags = torch.tensor([int("momentum_buffer" in self.state[p]) for p in group["params"]],
                                 dtype=torch.int32).to(device)
            self._ready[gi] = flags
        return flags

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, loss=None):
        if closure is not None:
            if loss is not None:
                raise ValueError("step: give a closure or loss=, not both")
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        self._check_inputs()  # all of them before any update: an error leaves the model as it was
        if self.skip_nonfinite:
            found_inf = self._nonfinite_guard(found_inf)
        group_sums, lrs = [], []
        offset = 0
        device = None
        for gi, group in enumerate(self.param_groups):
            sums = self._step_group(gi, group, offset, grad_scale, found_inf)
            offset += len(group["params"])
            if sums is not None:
                device = device or sums.device
                group_sums.append(sums.to(device))
                lrs.append(group["lr"])
            else:
                group_sums.append(None)
                lrs.append(0.0)
        if device is not None:
            self._report(group_sums, lrs, loss, device)
        return loss

    def _nonfinite_guard(self, found_inf: torch.Tensor | None) -> torch.Tensor | None:
        """found_inf = 1 when any gradient holds an Inf/NaN (or AMP already said so), on the device.

        One fused multi-tensor check per device (torch's AMP kernel, with an unscale factor of 1),
        so the guard costs a read of the gradients and no host sync.
        """
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return found_inf
        device = grads[0].device
        flag = torch.zeros(1, dtype=torch.float32, device=device)
        by_device: dict = {}
        for g in grads:
            by_device.setdefault(g.device, []).append(g)
        for dev, gs in by_device.items():
            f = torch.zeros(1, dtype=torch.float32, device=dev)
            one = torch.ones(1, dtype=torch.float32, device=dev)
            torch._amp_foreach_non_finite_check_and_unscale_(gs, f, one)
            flag = torch.maximum(flag, f.to(device))
        if found_inf is not None:
            flag = torch.maximum(flag, found_inf.to(device=device, dtype=torch.float32).reshape(1))
        flag = flag.reshape(())
        self.skipped_steps = flag.to(torch.int64) if self.skipped_steps is None else self.skipped_steps + flag.to(torch.int64)
        return flag

    def _check_inputs(self) -> None:
        index = 0
        for group in self.param_groups:
            _check_group(group)  # schedulers and users edit groups between steps
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise ValueError(f"InertiaSGD: sparse gradient for parameter {index} (not supported)")
                    if p.grad.is_complex() or p.is_complex():
                        raise ValueError(f"InertiaSGD: complex gradient for parameter {index} (not supported)")
                index += 1

    def _step_group(self, gi, group, offset, grad_scale, found_inf) -> torch.Tensor | None:
        params, grads, parameter_index, local_index = [], [], [], []
        for j, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            parameter_index.append(offset + j)
            local_index.append(j)
        if not params:
            return None
        device = params[0].device
        if group["step"].device != device:
            group["step"] = group["step"].to(device)
        step = group["step"]
        momentum = group["momentum"]
        applied = None if found_inf is None else (found_inf.to(device) == 0)
        backend = self._backend(group, device)
        if backend == "triton" and group["backend"] == "auto" and not all(p.is_contiguous() for p in params):
            backend = "foreach"  # the pointer table needs dense tensors
        if backend == "foreach":
            buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
            sums = foreach_step(params, grads, buffers, parameter_index, group, step, grad_scale, found_inf)
            if momentum != 0:
                for p, b in zip(params, buffers):
                    if b is not None:
                        self.state[p]["momentum_buffer"] = b
        elif backend == "cupy":
            sums = self._cupy_group(group, params, grads, parameter_index, step, grad_scale, found_inf)
        else:
            sums = self._triton_group(gi, group, params, grads, parameter_index, local_index,
                                      step, grad_scale, found_inf, applied)
        step.add_(1 if applied is None else applied.to(step.dtype))
        return sums

    def _cupy_group(self, group, params, grads, parameter_index, step, grad_scale, found_inf) -> torch.Tensor:
        """The CUDA C step (kernels/cuda/sgd.cu) through CuPy on the torch tensors (DLPack, no copies).

        A second implementation beside Triton, to cross-check it: one launch per tensor, and the
        step count and a tensor lr are read on the host once per group (a sync the Triton path avoids).
        """
        from .backends.cupy_backend import cupy_sgd_step
        if grad_scale is not None or found_inf is not None:
            raise RuntimeError("backend='cupy': AMP grad scaling and skip_nonfinite need backend 'triton' or 'foreach'")
        if not all(p.is_contiguous() for p in params):
            raise ValueError("Invalid parameters for backend='cupy': every parameter must be contiguous")
        lr = float(group["lr"])
        momentum = group["momentum"]
        t = int(step)
        sums = torch.zeros(2, dtype=torch.float64, device=params[0].device)
        for p, g, k in zip(params, grads, parameter_index):
            b, first = None, False
            if momentum != 0:
                b = self.state[p].get("momentum_buffer")
                if b is None:
                    b = torch.empty_like(p, memory_format=torch.contiguous_format)
                    self.state[p]["momentum_buffer"] = b
                    first = True
            sums += cupy_sgd_step(p, g.contiguous(), b, lr=lr, momentum=momentum, dampening=group["dampening"],
                                  weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                                  maximize=group["maximize"], noise=float(_noise_std(group, lr)),
                                  seed=group["seed"], step=t, parameter=k, first=first)
        return sums

    def _triton_group(self, gi, group, params, grads, parameter_index, local_index, step,
                      grad_scale, found_inf, applied) -> torch.Tensor:
        from .backends.sgd_triton import sgd_step
        device = params[0].device
        buffers = ready = None
        fresh = []
        if group["momentum"] != 0:
            ready = self._ready_flags(gi, group, device)
            for p, j in zip(params, local_index):
                if "momentum_buffer" not in self.state[p]:
                    # zeros, not empty: a skipped first step leaves b_0 = 0 and ready = 0
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    fresh.append(j)
            if fresh:
                ready.index_fill_(0, torch.tensor(fresh, device=device), 0)
            buffers = [self.state[p]["momentum_buffer"] for p in params]
        grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
        lr = group["lr"]
        if _is_tensor(lr) and lr.device != device:
            lr = lr.to(device)
        sums = sgd_step(params, grads, buffers, parameter_index, local_index, ready,
                        lr=lr, momentum=group["momentum"], dampening=group["dampening"],
                        nesterov=group["nesterov"], weight_decay=group["weight_decay"],
                        maximize=group["maximize"], noise=group["noise"], temperature=group["temperature"],
                        seed=group["seed"], step=step,
                        grad_scale=None if grad_scale is None else grad_scale.to(device),
                        found_inf=None if found_inf is None else found_inf.to(device),
                        block=self.block, cache=self._plans, cache_tag=gi)
        if ready is not None and (fresh or found_inf is not None or gi in self._pending):
            idx = self._local_index_tensor(gi, local_index, device)
            if applied is None:
                ready.index_fill_(0, idx, 1)
            else:
                ready.index_copy_(0, idx, torch.maximum(ready.index_select(0, idx), applied.to(ready.dtype)))
            # flags may still be 0 after an AMP step or for buffers of parameters that sat this step out
            if found_inf is None and len(params) == len(group["params"]):
                self._pending.discard(gi)
            else:
                self._pending.add(gi)
        return sums

    def _local_index_tensor(self, gi, local_index, device) -> torch.Tensor:
        key = ("local", gi)
        cached = self._plans.get(key)
        if cached is None or cached[0] != local_index or cached[1].device != device:
            cached = (list(local_index), torch.tensor(local_index, dtype=torch.int64).to(device))
            self._plans[key] = cached
        return cached[1]

    def _report(self, group_sums, lrs, loss, device) -> None:
        zero = torch.zeros(2, dtype=torch.float64, device=device)
        # python-float lr stays a kernel scalar (no host-to-device copy: capturable)
        half_lr_sums = torch.stack([zero if s is None else s * (0.5 * _lr_on(lr, device))
                                    for s, lr in zip(group_sums, lrs)])
        self.group_kinetic = half_lr_sums[:, 0]
        self.group_shadow_correction = half_lr_sums[:, 1]
        self.kinetic = self.group_kinetic.sum()
        if loss is None:
            self.loss = torch.full((), float("nan"), dtype=torch.float64, device=device)
        elif _is_tensor(loss):
            self.loss = loss.detach().to(device=device, dtype=torch.float64).reshape(())
        else:
            self.loss = torch.tensor(float(loss), dtype=torch.float64).to(device)
        self.inertia = self.kinetic + self.loss
        self.shadow_inertia = self.inertia + self.group_shadow_correction.sum()
        if self.record_history:
            self.history.append(self.loss, self.kinetic, self.inertia, self.shadow_inertia)
