"""InertiaCallback in a real Lightning Trainer (the [lightning] extra; skipped without it)."""
from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from inertia_gpu.lightning_callback import InertiaCallback  # noqa: E402
from inertia_gpu.optim import InertiaSGD  # noqa: E402


class Captured(pl.loggers.Logger):
    """A logger that keeps what it is given."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def name(self):
        return "captured"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return InertiaSGD(self.parameters(), lr=0.05, momentum=0.9, temperature=1e-3, seed=3)


def test_callback_logs_through_the_trainers_loggers_at_its_interval(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True).sin()), batch_size=8)
    logger = Captured()
    trainer = pl.Trainer(max_steps=12, logger=logger, callbacks=[InertiaCallback(every_n_steps=4)],
                         accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=1)
    module = Regression()
    trainer.fit(module, data)
    ours = [(step, m) for step, m in logger.rows if any(k.startswith("inertia/") for k in m)]
    assert [step for step, _ in ours] == [4, 8, 12]
    for _, m in ours:
        assert {"inertia/loss", "inertia/kinetic", "inertia/inertia", "inertia/ledger/dissipated",
                "inertia/ledger/injected", "inertia/ledger/residual", "inertia/effective_temperature/group0",
                "inertia/temperature/group0"} <= set(m)
        assert all(isinstance(v, float) for v in m.values())
    # the ledger accounts for the change of inertia between two logged steps
    (_, a), (_, b) = ours[0], ours[-1]
    change = {k: b[f"inertia/ledger/{k}"] - a[f"inertia/ledger/{k}"] for k in ("dissipated", "injected", "residual")}
    assert b["inertia/inertia"] - a["inertia/inertia"] == pytest.approx(
        -change["dissipated"] + change["injected"] + change["residual"], rel=1e-6, abs=1e-9)
    assert change["dissipated"] > 0
    opt = trainer.optimizers[0]
    assert not opt._optimizer_step_post_hooks  # detached at the end of training


def test_callback_refuses_a_module_without_inertia_sgd(tmp_path):
    class Plain(Regression):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1)),
                                       batch_size=4)
    trainer = pl.Trainer(max_steps=1, logger=False, callbacks=[InertiaCallback()], accelerator="cpu", devices=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with pytest.raises(TypeError, match="InertiaSGD"):
        trainer.fit(Plain(), data)
