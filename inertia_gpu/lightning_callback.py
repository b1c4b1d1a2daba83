"""A PyTorch Lightning callback that logs what InertiaSGD reports (pip install 'inertia-gpu[lightning]').

    from inertia_gpu.lightning_callback import InertiaCallback
    trainer = lightning.Trainer(callbacks=[InertiaCallback()], log_every_n_steps=50)

with a LightningModule whose configure_optimizers returns an InertiaSGD. Every
`every_n_steps` optimizer steps (default: the trainer's log_every_n_steps) the callback reads
each InertiaSGD's scalars back in one copy (inertia_gpu/monitor.py: loss, kinetic, inertia, the
cumulative ledger, T_eff and the target T per group) and hands them to every logger of the
trainer (TensorBoard, CSV, W&B, ...), as LearningRateMonitor does; between those steps nothing is
read back. Lightning's automatic optimization passes its closure to `step`, so the optimizer sees
the loss; where a precision plugin steps without it (AMP), the batch's loss from training_step
is logged instead. Several InertiaSGD optimizers log under {prefix}/opt{i}.
"""
from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback

from .monitor import InertiaMonitor


class InertiaCallback(Callback):
    def __init__(self, every_n_steps: int | None = None, prefix: str = "inertia"):
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
                                          or every_n_steps < 1):
            raise ValueError(f"InertiaCallback: every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.prefix = prefix
        self.monitors: list[InertiaMonitor] = []
        self._logged: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        ours = [opt for opt in trainer.optimizers if hasattr(opt, "ledger") and hasattr(opt, "log_to")]
        if not ours:
            raise TypeError("InertiaCallback: configure_optimizers returned no InertiaSGD")
        prefixes = [self.prefix] if len(ours) == 1 else [f"{self.prefix}/opt{i}" for i in range(len(ours))]
        self.monitors = [InertiaMonitor(opt, p) for opt, p in zip(ours, prefixes)]
        self._logged = [0] * len(self.monitors)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps
        for k, monitor in enumerate(self.monitors):
            if monitor.steps == self._logged[k] or monitor.steps % every:  # no new step, or off the interval
                continue
            self._logged[k] = monitor.steps
            metrics = monitor.scalars()
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if f"{monitor.prefix}/loss" not in metrics and loss is not None:
                metrics[f"{monitor.prefix}/loss"] = float(loss)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        for monitor in self.monitors:
            monitor.remove()


__all__ = ["InertiaCallback"]
