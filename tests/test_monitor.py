"""log_to / InertiaMonitor: what reaches a writer, when, and that it reads back only at the interval."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from inertia_gpu import monitor
from inertia_gpu.optim import InertiaSGD


class FakeWriter:
    """SummaryWriter's add_scalar, recorded."""

    def __init__(self):
        self.calls: list[tuple[str, float, int]] = []

    def add_scalar(self, tag, scalar_value, global_step=None):
        assert isinstance(scalar_value, float) and isinstance(global_step, int)
        self.calls.append((tag, scalar_value, global_step))

    def at(self, step: int) -> dict[str, float]:
        return {tag: v for tag, v, s in self.calls if s == step}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    return model, x, torch.sin(x[:, :2])


def _train(opt, model, x, y, steps, each=None):
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        if each:
            each()


def test_writer_gets_every_nth_step_and_the_ledger_closes_the_inertia_balance():
    model, x, y = _model(3)
    opt = InertiaSGD([{"params": model[0].parameters(), "temperature": 1e-3, "noise": 0.0},
                      {"params": model[2].parameters(), "lr": 0.02, "momentum": 0.5}],
                     lr=0.05, momentum=0.8, dampening=0.1, noise=0.05, seed=5, backend="foreach")
    writer = FakeWriter()
    opt.log_to(writer, every=4, prefix="opt")
    seen = []  # per call: (inertia, ledger terms, T_eff, loss, kinetic, kinetic per group), read here directly
    _train(opt, model, x, y, 13, each=lambda: seen.append(
        (opt.inertia.item(), {k: opt.ledger[k].item() for k in monitor.LEDGER_TERMS},
         opt.effective_temperature.tolist(), opt.loss.item(), opt.kinetic.item(), opt.group_kinetic.tolist())))
    assert sorted({s for _, _, s in writer.calls}) == [4, 8, 12]
    for step in (4, 8, 12):
        got = writer.at(step)
        inertia, _, t_eff, loss, kinetic, _ = seen[step - 1]
        assert got["opt/inertia"] == inertia and got["opt/loss"] == loss and got["opt/kinetic"] == kinetic
        assert [got["opt/effective_temperature/group0"], got["opt/effective_temperature/group1"]] == t_eff
        assert got["opt/temperature/group0"] == 1e-3 and "opt/temperature/group1" not in got
        # totals: the terms of every completed step, i.e. of the transitions from state 0 to state step - 1
        want = {k: sum(row[1][k] for row in seen[1:step]) for k in monitor.LEDGER_TERMS}
        for k in monitor.LEDGER_TERMS:
            assert got[f"opt/ledger/{k}"] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
        balance = -got["opt/ledger/dissipated"] + got["opt/ledger/injected"] + got["opt/ledger/residual"]
        assert inertia - seen[0][0] == pytest.approx(balance, rel=1e-9, abs=1e-12)
        assert got["opt/ledger/dissipated"] > 0 and got["opt/ledger/injected"] != 0
        # per group: D_g = (1 - mu_g^2) K_g of each completed step's starting state; the groups add up
        for g, mu in enumerate((0.8, 0.5)):
            want_d = sum((1 - mu * mu) * row[5][g] for row in seen[:step - 1])
            assert got[f"opt/ledger/dissipated/group{g}"] == pytest.approx(want_d, rel=1e-12)
        for k in ("dissipated", "injected"):
            assert got[f"opt/ledger/{k}/group0"] + got[f"opt/ledger/{k}/group1"] == pytest.approx(
                got[f"opt/ledger/{k}"], rel=1e-12, abs=1e-15)


def test_reads_back_once_per_interval(monkeypatch):
    reads = []
    real = monitor.read_back
    monkeypatch.setattr(monitor, "read_back", lambda t: reads.append(t.numel()) or real(t))
    model, x, y = _model(4)
    opt = InertiaSGD(model.parameters(), lr=0.05, momentum=0.9, backend="foreach")
    hook = opt.log_to(FakeWriter(), every=5)
    _train(opt, model, x, y, 12)
    assert len(reads) == 2  # steps 5 and 10; nothing read in between
    hook.write()
    assert len(reads) == 3
    hook.remove()
    _train(opt, model, x, y, 10)
    assert len(reads) == 3


def test_without_a_loss_only_what_the_optimizer_knows_is_logged():
    p = torch.nn.Parameter(torch.randn(8))
    opt = InertiaSGD([p], lr=0.1, momentum=0.9, backend="foreach")
    writer = FakeWriter()
    monitor.log_to(opt, writer, every=1)
    for _ in range(3):
        p.grad = torch.randn(8)
        opt.step()
    tags = {t for t, _, _ in writer.calls}
    assert "inertia/loss" not in tags and "inertia/inertia" not in tags
    assert {"inertia/kinetic", "inertia/ledger/dissipated", "inertia/effective_temperature/group0"} <= tags


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_a_skipped_amp_step_adds_nothing_to_the_totals():
    p = torch.nn.Parameter(torch.randn(9))
    opt = InertiaSGD([p], lr=0.1, momentum=0.9, noise=0.1, backend="foreach")
    hook = opt.log_to(FakeWriter(), every=1000)
    for _ in range(4):
        p.grad = torch.randn(9)
        opt.step(loss=1.0)
    before = hook.monitor.totals.clone()
    p.grad = torch.full((9,), float("inf"))
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)
    opt.step(loss=2.0)
    assert torch.equal(hook.monitor.totals, before) and hook.monitor.steps == 5


def test_a_real_summary_writer_receives_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    model, x, y = _model(6)
    opt = InertiaSGD(model.parameters(), lr=0.05, momentum=0.9, temperature=1e-3, backend="foreach")
    writer, fake = SummaryWriter(str(tmp_path)), FakeWriter()
    opt.log_to(writer, every=2)
    opt.log_to(fake, every=2)
    _train(opt, model, x, y, 6)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {tag for tag, _, _ in fake.calls}
    for tag in events.Tags()["scalars"]:
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        want = [(s, v) for t, v, s in fake.calls if t == tag]
        assert [s for s, _ in got] == [s for s, _ in want] == [2, 4, 6]
        for (_, a), (_, b) in zip(got, want):  # event files store float32
            assert a == pytest.approx(b, rel=1e-6, abs=1e-30), tag


def test_refuses_what_cannot_log():
    p = torch.nn.Parameter(torch.randn(3))
    opt = InertiaSGD([p], lr=0.1)
    with pytest.raises(TypeError, match="add_scalar"):
        opt.log_to(object())
    for every in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every"):
            opt.log_to(FakeWriter(), every=every)
    with pytest.raises(TypeError, match="InertiaSGD"):
        monitor.InertiaMonitor(torch.optim.SGD([p], lr=0.1))


def test_importing_the_library_imports_neither_lightning_nor_tensorboard():
    code = ("import sys, inertia_gpu, inertia_gpu.monitor; from inertia_gpu import InertiaSGD; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'tensorboard', 'tensorboardX') or m == 'torch.utils.tensorboard']; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.gpu
def test_steps_between_intervals_never_synchronize():
    """CUDA's sync debug mode raises on any host wait: once the launch tables exist (the first steps build
    them), only the logging steps may read back."""
    model = torch.nn.Linear(16, 4).cuda()
    x, y = torch.randn(64, 16, device="cuda"), torch.randn(64, 4, device="cuda")
    opt = InertiaSGD(model.parameters(), lr=0.05, momentum=0.9, temperature=1e-4)
    writer = FakeWriter()
    opt.log_to(writer, every=5)
    for k in range(1, 16):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if k > 5 and k % 5:
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(loss=loss.detach())
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert sorted({s for _, _, s in writer.calls}) == [5, 10, 15]
