"""Watching InertiaSGD while it trains: TensorBoard (or any `add_scalar`) at a chosen interval.

    writer = torch.utils.tensorboard.SummaryWriter()
    opt = InertiaSGD(model.parameters(), lr=0.05, momentum=0.9, temperature=1e-4)
    opt.log_to(writer, every=50)           # or inertia_gpu.monitor.log_to(opt, writer, every=50)
    for x, y in loader:
        ...
        opt.step(loss=loss)                # every 50th step writes the scalars below

Every step the monitor adds the optimizer's ledger terms of the last completed step to running
totals *on the device* (a few scalar kernels, no host sync). Every `every`-th step it stacks what
it logs into one float64 tensor and reads that back (the only sync), then writes

    {prefix}/loss, /kinetic, /inertia             the state the last loss was evaluated at
    {prefix}/ledger/dissipated, /injected, /residual
                                                  cumulative since the monitor was attached:
                                                  where the energy went (I - I_first = -D + Q + W)
    {prefix}/ledger/dissipated/group{i}, /injected/group{i}
                                                  the same per parameter group (two groups or more;
                                                  W is not split: the loss belongs to no group)
    {prefix}/effective_temperature/group{i}       2 K_i / d_i of parameter group i
    {prefix}/temperature/group{i}                 its target T, for groups that set one

at global_step = the number of `step()` calls since the monitor was attached (AMP-skipped steps
count: the interval is in calls, the ledger in applied steps). loss and inertia are left out when the
optimizer is not given the loss (`step(closure)` or `step(loss=...)` gives it).

The PyTorch Lightning callback (inertia_gpu/lightning_callback.py, extra `[lightning]`) reuses
`InertiaMonitor` and writes through the trainer's loggers. Neither lightning nor tensorboard is
imported here: `writer` is anything with `add_scalar(tag, value, global_step)`.
"""
from __future__ import annotations

from typing import Protocol

import torch

LEDGER_TERMS = ("dissipated", "injected", "residual")


class ScalarWriter(Protocol):
    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None: ...


def read_back(values: torch.Tensor) -> list[float]:
    """The one device-to-host copy of a logging interval."""
    return values.cpu().tolist()


class InertiaMonitor:
    """Running ledger totals of one InertiaSGD on its device; `scalars()` reads everything back at once.

    Attaching registers a step post-hook; `remove()` detaches it. `steps` counts step() calls.
    """

    def __init__(self, optimizer, prefix: str = "inertia"):
        if not hasattr(optimizer, "ledger") or not hasattr(optimizer, "effective_temperature"):
            raise TypeError(f"InertiaMonitor: {type(optimizer).__name__} is not an InertiaSGD")
        self.optimizer = optimizer
        self.prefix = prefix
        self.steps = 0
        self.totals: torch.Tensor | None = None  # float64 [3] on the optimizer's device
        self._hooks = [optimizer.register_step_post_hook(self._after_step)]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        if optimizer.ledger is None:  # no group had a gradient yet
            return
        terms = torch.stack([optimizer.ledger[k] for k in LEDGER_TERMS])
        groups = getattr(optimizer, "group_ledger", None)
        if groups is not None and groups["dissipated"].numel() > 1:  # D and Q per group too
            terms = torch.cat([terms, groups["dissipated"], groups["injected"]])
        # the ledger changes only when a step was applied, and is NaN until one step is complete
        fresh = optimizer.stepped & torch.isfinite(terms)
        add = torch.where(fresh, terms, torch.zeros_like(terms))
        if self.totals is not None and self.totals.shape != add.shape:  # a group was added: its totals start now
            add[:3] += self.totals[:3].to(add.device)
            self.totals = None
        self.totals = add if self.totals is None else self.totals + add.to(self.totals.device)

    def _tags(self) -> tuple[list[str], list[torch.Tensor]]:
        opt = self.optimizer
        p = self.prefix
        tags, values = [], []
        if getattr(opt, "loss_given", True):
            tags += [f"{p}/loss", f"{p}/inertia"]
            values += [opt.loss, opt.inertia]
        tags.append(f"{p}/kinetic")
        values.append(opt.kinetic)
        totals = self.totals if self.totals is not None else torch.zeros(3, dtype=torch.float64,
                                                                          device=opt.kinetic.device)
        tags += [f"{p}/ledger/{k}" for k in LEDGER_TERMS]
        n_groups = (totals.numel() - 3) // 2
        tags += [f"{p}/ledger/{k}/group{i}" for k in ("dissipated", "injected") for i in range(n_groups)]
        values += list(totals.to(opt.kinetic.device).unbind())
        for i, t_eff in enumerate(opt.effective_temperature.unbind()):
            tags.append(f"{p}/effective_temperature/group{i}")
            values.append(t_eff)
        return tags, values

    def scalars(self) -> dict[str, float]:
        """{tag: value} of the latest step, read back in one copy ({} before the first step)."""
        opt = self.optimizer
        if opt.kinetic is None:
            return {}
        tags, values = self._tags()
        out = dict(zip(tags, read_back(torch.stack([v.to(torch.float64).reshape(()) for v in values]))))
        for i, group in enumerate(opt.param_groups):
            if group.get("temperature") is not None:
                out[f"{self.prefix}/temperature/group{i}"] = float(group["temperature"])
        return out


class WriterHook:
    """What `log_to` returns: the monitor plus the writer; `remove()` stops logging."""

    def __init__(self, monitor: InertiaMonitor, writer: ScalarWriter, every: int):
        self.monitor, self.writer, self.every = monitor, writer, every
        monitor._hooks.append(monitor.optimizer.register_step_post_hook(self._maybe_write))

    def _maybe_write(self, optimizer, args, kwargs) -> None:
        if self.monitor.steps % self.every == 0:
            self.write()

    def write(self) -> None:
        """Write the latest scalars now (also at the end of training, off the interval)."""
        for tag, value in self.monitor.scalars().items():
            self.writer.add_scalar(tag, value, self.monitor.steps)

    def remove(self) -> None:
        self.monitor.remove()


def log_to(optimizer, writer: ScalarWriter, every: int = 100, prefix: str = "inertia") -> WriterHook:
    """Log `optimizer`'s loss, kinetic, inertia, cumulative ledger and T_eff per group to `writer`
    every `every` steps (one device-to-host copy then, none in between). Returns a handle whose
    `remove()` detaches it and `write()` logs immediately."""
    if not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(f"log_to: {type(writer).__name__} has no add_scalar(tag, value, step)")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"log_to: every must be a positive integer, got {every!r}")
    return WriterHook(InertiaMonitor(optimizer, prefix), writer, every)


__all__ = ["InertiaMonitor", "LEDGER_TERMS", "WriterHook", "log_to", "read_back"]
