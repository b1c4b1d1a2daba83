"""InertiaSGD: torch.optim.SGD that also reports the computational inertia of its own dynamics.

A drop-in for torch.optim.SGD (same options, same numerics with noise=0 -- bitwise on the foreach
path --, interchangeable state_dict with `momentum_buffer`), plus optional gradient noise from the
project's Philox stream and, at every step, device tensors

    kinetic        = sum over groups of lr/2 |b_k|^2
    inertia        = kinetic + L(theta_k)
    shadow_inertia = inertia + sum over groups of lr/2 <b_k, d_k>

Convention (THEORY.md §2): all three describe the state k at which the closure evaluated the loss,
i.e. b_k is the momentum buffer *before* this update and d_k the noise-free update direction of
this step (±grad L(theta_k) + weight_decay theta_k, the gradient unscaled by AMP). For momentum = 1,
no noise and a quadratic loss, shadow_inertia is conserved to rounding (with weight decay only if
the loss passed in includes its weight_decay/2 |theta|^2). Before the first step b_0 = 0, so
kinetic is 0; with momentum = 0 there is no buffer and kinetic is 0 throughout. No value is read
back to the host: `opt.inertia.item()` is the user's choice (and sync).

Noise: xi = rng.optimizer_normals(numel, t, i, seed) for parameter i of the flattened list over all
groups, t = group["step"] (an int64 device tensor: the number of steps applied to that group; an
AMP-skipped step does not count). Added to the update direction after maximize and weight decay.

The class only gathers each group's tensors and checks every group before any is stepped; the
step itself is the function `inertia_sgd` (functional.py), as torch.optim.SGD's is `sgd`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.optim import Optimizer

from .functional import check_tensors, inertia_sgd, nonfinite_flag, unavailable_reason
from .validation import BACKENDS, check_group, check_lr_value, check_state_dict, step_count

IMPL_OF_BACKEND = {"foreach": "foreach", "triton": "triton", "cupy": "cuda"}


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


def _on(lr, device):
    """lr as a float64 device tensor if it is a tensor; a python float stays one (no host-to-device copy)."""
    return lr.to(device=device, dtype=torch.float64) if isinstance(lr, torch.Tensor) else lr


class _GroupStep(NamedTuple):
    """One group's checked inputs for inertia_sgd."""

    group: dict
    params: list
    grads: list
    buffers: list
    index: list
    impl: str


class InertiaSGD(Optimizer):
    """SGD with momentum, optional gradient noise, and the inertia of its dynamics at every step.

    Args (as torch.optim.SGD): params, lr, momentum, dampening, weight_decay,
    nesterov, maximize. Extra:
      noise:       gradient-noise std s added to every coordinate (0 = none)
      temperature: alternatively T, s = sqrt(2 (1 - momentum) T / lr)
      seed:        Philox key; the noise is a pure function of (seed, step,
                   parameter index over all groups, element)
      backend:     "auto" | "foreach" | "triton" | "cupy" (CUDA C through CuPy, a cross-check);
                   auto = triton on CUDA (foreach for non-contiguous groups), foreach elsewhere
      block:       elements per Triton program (None: the launcher's default)
      record_history: append (loss, kinetic, inertia, shadow) to `history` each step
      skip_nonfinite: opt-in guard: a step whose gradients hold an Inf or NaN is
                   skipped on the device (parameters and buffers untouched) and
                   counted in `skipped_steps` (a device tensor, no host sync)
      foreach, fused, differentiable: as in torch.optim.SGD (fused -> "triton",
                   foreach -> "foreach"; differentiable=True is refused)

    After each step: `kinetic`, `inertia`, `shadow_inertia`, `loss` (0-dim
    float64 device tensors; inertia and shadow are NaN when no loss was
    given), `group_kinetic`, `group_shadow_correction` and `effective_temperature`
    (2 K / d per group: compare with `temperature`) ([n_groups]), `stepped` (a 0-dim
    bool device tensor: False when AMP skipped the step) and `ledger` (dissipated, injected,
    residual of the last applied step, see _update_ledger; `group_ledger`: its D and Q per
    group). The loss comes from the closure
    or from `step(loss=...)`. `log_to(writer, every)` logs them to TensorBoard (inertia_gpu/monitor.py).
    """

    _step_supports_amp_scaling = True  # GradScaler hands grad_scale / found_inf over instead of syncing

    def __init__(self, params, lr: float | torch.Tensor = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 noise: float = 0.0, temperature: float | None = None, seed: int = 0,
                 backend: str = "auto", block: int | None = None, record_history: bool = True,
                 skip_nonfinite: bool = False, foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False):
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
        check_group(defaults)
        self.block = block
        self.record_history = record_history
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps: torch.Tensor | None = None
        self.history = InertiaHistory()
        super().__init__(params, defaults)
        self.kinetic = self.inertia = self.shadow_inertia = self.loss = None
        self.group_kinetic = self.group_shadow_correction = self.effective_temperature = None
        self.stepped: torch.Tensor | None = None  # 0-dim bool device tensor: was the last step applied (AMP)?
        self.ledger: dict[str, torch.Tensor] | None = None  # see _update_ledger
        self.group_ledger: dict[str, torch.Tensor] | None = None  # D and Q per group, [n_groups] each
        self.loss_given = False  # host flag: did the last step get a loss (closure or loss=)?
        self._pending: tuple | None = None  # (I_k, D_k, Q_k, D_k and Q_k per group) of the last applied step

    def add_param_group(self, param_group: dict) -> None:
        # checked before torch's add_param_group appends it: a refused group leaves no trace
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        check_group(merged)
        check_lr_value(merged["lr"])
        super().add_param_group(param_group)
        group = self.param_groups[-1]
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
        """torch's load_state_dict, after checking the structure (nothing changes when it is refused)."""
        check_state_dict(state_dict, self.param_groups, self.defaults)
        super().load_state_dict(state_dict)
        for gi, group in enumerate(self.param_groups):
            if "step" in group:
                group["step"] = step_count(group["step"], f"parameter group {gi}")
        for entry in self.state.values():  # None is "no buffer yet", like an absent entry
            if "momentum_buffer" in entry and entry["momentum_buffer"] is None:
                del entry["momentum_buffer"]

    def _impl(self, group: dict, params: list) -> str:
        name = group["backend"]
        if name != "auto":
            return IMPL_OF_BACKEND[name]
        device = params[0].device
        if device.type == "cuda" and unavailable_reason("triton", device) is None \
                and all(p.is_contiguous() for p in params):
            return "triton"  # the pointer table needs dense tensors; others take foreach
        return "foreach"

    def _prepare(self, group: dict, offset: int, grad_scale, found_inf) -> _GroupStep | None:
        """The group's tensors, checked; None when no parameter has a gradient. Writes nothing."""
        check_group(group)  # schedulers and users edit groups between steps
        params, grads, index = [], [], []
        for j, p in enumerate(group["params"]):
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                index.append(offset + j)
        if not params:
            return None
        impl = self._impl(group, params)
        # .get on the state: reading must not create entries (it is a defaultdict)
        buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params] if group["momentum"] != 0 else []
        guard = self.skip_nonfinite or found_inf is not None
        check_tensors(params, grads, buffers, momentum=group["momentum"], impl=impl, grad_scale=grad_scale,
                      found_inf=torch.zeros(()) if guard else None, parameter_index=index)
        return _GroupStep(group, params, grads, buffers, index, impl)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, loss=None):
        if closure is not None:
            if loss is not None:
                raise ValueError("step: give a closure or loss=, not both")
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        # every group is checked before any is stepped: an error leaves model, buffers and counters as they were
        plans, offset = [], 0
        for group in self.param_groups:
            plans.append(self._prepare(group, offset, grad_scale, found_inf))
            offset += len(group["params"])
        if self.skip_nonfinite:
            found_inf = nonfinite_flag([p.grad for plan in plans if plan for p in plan.params], found_inf)
            if found_inf is not None:
                skipped = found_inf.to(torch.int64)
                self.skipped_steps = skipped if self.skipped_steps is None else self.skipped_steps + skipped
        group_sums = [None if plan is None else self._apply(plan, grad_scale, found_inf) for plan in plans]
        sums = [s for s in group_sums if s is not None]
        self.loss_given = loss is not None
        if sums:
            device = sums[0].device
            self.stepped = torch.ones((), dtype=torch.bool, device=device) if found_inf is None \
                else found_inf.to(device).reshape(()) == 0
            sizes = [0 if plan is None else sum(p.numel() for p in plan.params) for plan in plans]
            self._report(group_sums, [g["lr"] for g in self.param_groups], sizes, loss, device)
            self._update_ledger(group_sums, device)
        return loss

    def _apply(self, plan: _GroupStep, grad_scale, found_inf) -> torch.Tensor:
        group = plan.group
        device = plan.params[0].device
        if group["step"].device != device:  # e.g. loaded from a state_dict saved elsewhere
            group["step"] = group["step"].to(device)
        sums = inertia_sgd(
            plan.params, plan.grads, plan.buffers, step=group["step"], parameter_index=plan.index,
            lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
            weight_decay=group["weight_decay"], nesterov=group["nesterov"], maximize=group["maximize"],
            noise=group["noise"], temperature=group["temperature"], seed=group["seed"],
            grad_scale=None if grad_scale is None else grad_scale.to(device),
            found_inf=None if found_inf is None else found_inf.to(device), impl=plan.impl, block=self.block)
        if group["momentum"] != 0:
            for p, b in zip(plan.params, plan.buffers):
                if b is not None:
                    self.state[p]["momentum_buffer"] = b
        return sums

    def log_to(self, writer, every: int = 100, prefix: str = "inertia"):
        """Log loss, kinetic, inertia, the cumulative ledger and T_eff per group to `writer` (a
        torch.utils.tensorboard SummaryWriter, or anything with add_scalar) every `every` steps, reading
        back only then. Returns a handle (remove(), write()); see inertia_gpu/monitor.py."""
        from ..monitor import log_to
        return log_to(self, writer, every=every, prefix=prefix)

    def _update_ledger(self, group_sums, device) -> None:
        """ledger = where the inertia of the last applied step went, completed now that I_{k+1} is known:

            dissipated D_k = (1 - momentum^2) K_k            (friction b -> momentum b)
            injected   Q_k = lr/2 (2 momentum <b_k, q_k> + |q_k|^2)   (noise b -> momentum b + q)
            residual   W_k = I_{k+1} - I_k + D_k - Q_k      (the gradient kick and the drift)

        summed over groups, 0-dim float64 device tensors (NaN until a step has been applied and the
        next loss is known); `group_ledger` holds D and Q per group ([n_groups]: the loss, and with it
        W, belongs to no group). A skipped AMP step leaves both and what they wait for as they were."""
        zero = torch.zeros((), dtype=torch.float64, device=device)
        per_group = []
        for group, sums in zip(self.param_groups, group_sums):
            if sums is not None and group["momentum"] != 0:
                mu, half_lr = group["momentum"], 0.5 * _on(group["lr"], device)
                per_group.append(((1.0 - mu * mu) * half_lr * sums[0].to(device), half_lr * sums[2].to(device)))
            else:
                per_group.append((zero, zero))
        group_d = torch.stack([d for d, _ in per_group])
        group_q = torch.stack([q for _, q in per_group])
        nan = torch.full((), float("nan"), dtype=torch.float64, device=device)
        nan_groups = torch.full_like(group_d, float("nan"))
        pending = self._pending
        if pending is None or pending[3].shape != group_d.shape:  # nothing applied yet, or a group was added
            pending = (nan, nan, nan, nan_groups, nan_groups) if pending is None else pending[:3] + (nan_groups,) * 2
        inertia_prev, dissipated_prev, injected_prev, group_d_prev, group_q_prev = pending
        done = dict(dissipated=dissipated_prev, injected=injected_prev,
                    residual=self.inertia - inertia_prev + dissipated_prev - injected_prev)
        old = self.ledger or dict(dissipated=nan, injected=nan, residual=nan)
        self.ledger = {k: torch.where(self.stepped, done[k], old[k]) for k in done}
        old_groups = self.group_ledger
        if old_groups is None or old_groups["dissipated"].shape != group_d.shape:
            old_groups = dict(dissipated=nan_groups, injected=nan_groups)
        self.group_ledger = {k: torch.where(self.stepped, new, old_groups[k])
                             for k, new in (("dissipated", group_d_prev), ("injected", group_q_prev))}
        fresh = (self.inertia, group_d.sum(), group_q.sum(), group_d, group_q)
        self._pending = tuple(torch.where(self.stepped, new, prev) for new, prev in zip(fresh, pending))

    def _report(self, group_sums, lrs, sizes, loss, device) -> None:
        zero = torch.zeros(3, dtype=torch.float64, device=device)

        def half_lr(lr):  # a python-float lr stays a kernel scalar (no host-to-device copy: capturable)
            return 0.5 * _on(lr, device)

        half_lr_sums = torch.stack([zero if s is None else s.to(device) * half_lr(lr)
                                    for s, lr in zip(group_sums, lrs)])
        self.group_kinetic = half_lr_sums[:, 0]
        self.group_shadow_correction = half_lr_sums[:, 1]
        # T_eff = 2 K / d per group (K = lr/2 |b|^2 of the state the loss was evaluated at, d its size)
        self.effective_temperature = torch.stack([k * (2.0 / max(n, 1))  # python scalars: no host-to-device copy
                                                  for k, n in zip(self.group_kinetic.unbind(), sizes)])
        self.kinetic = self.group_kinetic.sum()
        if loss is None:
            self.loss = torch.full((), float("nan"), dtype=torch.float64, device=device)
        elif isinstance(loss, torch.Tensor):
            self.loss = loss.detach().to(device=device, dtype=torch.float64).reshape(())
        else:
            self.loss = torch.tensor(float(loss), dtype=torch.float64).to(device)
        self.inertia = self.kinetic + self.loss
        self.shadow_inertia = self.inertia + self.group_shadow_correction.sum()
        if self.record_history:
            self.history.append(self.loss, self.kinetic, self.inertia, self.shadow_inertia)


__all__ = ["BACKENDS", "InertiaHistory", "InertiaSGD"]
