"""The inertia ledger through the engine: the JSON keys, their theory, the identity, and invariance.

tests/test_ledger.py checks the split itself (inertia_gpu.ledger) per trajectory; here the
ensemble side: the reference backend's ledger columns summed by the engine into batch means
(ledger.*_mean/_sem), set beside theory.ledger within Z of the run's own standard error, the
balance I_k - I_0 = -D + Q + W in the reported means, bitwise invariance under chunking,
windows, resume and rank count, --no-ledger, and a checkpoint of the old format.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from inertia_gpu import cli, distributed, ledger, theory
from inertia_gpu.config import SimulationConfig
from inertia_gpu.engine import simulate

Z = 5.0
SPECTRUM = [0.3, 1.0, 2.5]
TERMS = ("dissipated", "injected", "residual")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: intra-op threads only add hand-off cost on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(**kw):
    opts = dict(spectrum=SPECTRUM, init_theta_std=1.0, init_velocity_std=0.5, dtype="float64", backend="torch",
                trajectories=128, replicates=2, steps=13, record_every=4, seed=2026)
    opts.update(kw)
    return simulate(SimulationConfig(**opts))


def arrays(out: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    return np.array(out[f"ledger.{name}_mean"], dtype=float), np.array(out[f"ledger.{name}_sem"], dtype=float)


THEORY_CASES = [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="additive", noise=0.8),
    dict(integrator="heavy-ball", lr=0.05, momentum=0.8, noise_model="temperature", temperature=0.3),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="additive", noise=0.5),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="temperature",
         temperature=0.3),
    dict(integrator="baoab", dt=0.25, damping=1.0, noise_model="additive", noise=0.4),
    dict(integrator="baoab", dt=0.25, damping=1.0, noise_model="temperature", temperature=0.5),
    dict(integrator="leapfrog", dt=0.2, damping=0.5, noise_model="additive", noise=0.3),
    dict(integrator="leapfrog", dt=0.2, damping=0.5, noise_model="temperature", temperature=0.4),
]


@pytest.mark.parametrize("case", THEORY_CASES, ids=lambda c: f"{c['integrator']}-{c.get('momentum_schedule', 'constant')}"
                                                            f"-{c['noise_model']}")
def test_json_ledger_matches_theory(case):
    """ledger.*_mean within Z ledger.*_sem of theory.ledger at every recorded step after 0 (where all are 0)."""
    result = run(trajectories=2048, replicates=32, steps=40, record_every=10, seed=11, **case)
    out = result.to_dict()
    exact = theory.ledger(result.config)
    assert out["theory"]["ledger"] == {f"{k}_mean": exact[k].tolist() for k in result.theory_ledger}
    for name in TERMS:
        mean, sem = arrays(out, name)
        assert mean[0] == 0 and sem[0] == 0 and exact[name][0] == 0
        z = np.abs(mean[1:] - exact[name][1:]) / sem[1:]
        assert np.all(z < Z), f"{name}: {mean} +- {sem}, theory {exact[name]}, z {z}"
    if case["noise_model"] == "temperature":
        mean, sem = arrays(out, "effective_temperature")
        z = np.abs(mean[1:] - exact["effective_temperature"][1:]) / sem[1:]
        assert np.all(z < Z) and out["ledger.temperature"] == case["temperature"]
    else:
        assert "ledger.effective_temperature_mean" not in out


@pytest.mark.parametrize("noise", ["additive", "temperature", "loss-scaled"])
@pytest.mark.parametrize("schedule", ["constant", "nesterov:3"])
@pytest.mark.parametrize("integrator", ["heavy-ball", "euler", "leapfrog", "baoab"])
def test_balance_in_the_json_means(integrator, schedule, noise):
    """E[I_k] - E[I_0] = -E[D] + E[Q] + E[W] to 1e-9, and W is the inertia the integrator's kicks and
    drifts exchange: its mean equals that of the residual measured substep by substep (ledger.simulate)."""
    opts = dict(integrator=integrator, momentum_schedule=schedule, noise_model=noise, lr=0.05, momentum=0.8,
                dt=0.2, damping=0.5, noise=0.4, temperature=0.3)
    result = run(**opts)
    out = result.to_dict()
    inertia = np.array(out["inertia_mean"])
    d, q, w = (arrays(out, name)[0] for name in TERMS)
    scale = np.abs(inertia).max() + d.max() + np.abs(q).max() + np.abs(w).max()
    assert np.abs((inertia - inertia[0]) - (-d + q + w)).max() <= 1e-9 * scale
    measured = ledger.simulate(result.config)
    for name, mean in zip(TERMS, (d, q, w)):
        np.testing.assert_allclose(mean, getattr(measured, name).mean(axis=1), rtol=0, atol=1e-9 * scale)
    assert np.all(np.diff(d) >= 0)


def test_frictionless_noise_free_heavy_ball_is_all_residual():
    out = run(integrator="heavy-ball", momentum=1.0, lr=0.05, steps=40).to_dict()
    assert all(x == 0.0 for name in ("dissipated", "injected") for tail in ("mean", "sem")
               for x in out[f"ledger.{name}_{tail}"])
    assert max(abs(x) for x in out["ledger.residual_mean"]) > 0


def test_stationary_effective_temperature():
    """Started near equilibrium and run past the transient: the mean T_eff of the final step against
    the exact stationary 2 E[K_inf] / d, within Z of the run's standard error."""
    result = run(integrator="heavy-ball", lr=0.05, momentum=0.7, noise_model="temperature", temperature=0.4,
                 init_theta_std=0.5, init_velocity_std=0.5, trajectories=4096, replicates=64, steps=100,
                 record_every=50, seed=3)
    out = result.to_dict()
    exact = theory.stationary_effective_temperature(result.config)
    mean, sem = arrays(out, "effective_temperature")
    assert abs(theory.ledger(result.config)["effective_temperature"][-1] - exact) < 0.05 * sem[-1]
    assert abs(exact - 0.4) > 3 * sem[-1]  # heavy ball's kinetic bias is resolved: T_eff is not T
    assert abs(mean[-1] - exact) < Z * sem[-1], f"T_eff {mean[-1]:.5g} +- {sem[-1]:.2g}, exact {exact:.5g}"


# --- invariance -------------------------------------------------------------------------------

BASE = dict(integrator="baoab", dt=0.25, damping=1.0, noise_model="temperature", temperature=0.5, dtype="float32",
            trajectories=300, replicates=5, steps=23, record_every=3, diverge_above=8.0)


def _ledger_table(result) -> np.ndarray:
    return result.replicate_sums[..., 6:]


def test_ledger_columns_do_not_depend_on_chunks_windows_or_resume(tmp_path):
    """Bitwise: one launch, launches of one replicate with windows of 5 steps, and a run interrupted at
    every checkpoint and resumed (a low divergence bound, so the NaN ledger of diverged trajectories
    crosses windows too)."""
    import inertia_gpu.checkpoint as ck
    whole = run(**BASE)
    assert whole.stats["finite"][-1] < BASE["trajectories"]  # some trajectories diverged
    assert np.isfinite(_ledger_table(whole)).all() and _ledger_table(whole)[-1].any()
    split = simulate(whole.config, chunk=64, window=5)
    assert np.array_equal(_ledger_table(split), _ledger_table(whole))
    path, saves = str(tmp_path / "c.ckpt"), {"n": 0}
    real_save = ck.Checkpoint.save

    def interrupting_save(self, *a, **k):
        real_save(self, *a, **k)
        saves["n"] += 1
        raise KeyboardInterrupt

    ck.Checkpoint.save = interrupting_save
    try:
        for _ in range(200):
            try:
                resumed = simulate(whole.config, checkpoint=path, checkpoint_every=4, chunk=128)
                break
            except KeyboardInterrupt:
                continue
    finally:
        ck.Checkpoint.save = real_save
    assert saves["n"] > 5
    assert np.array_equal(_ledger_table(resumed), _ledger_table(whole))
    assert resumed.to_dict()["ledger.residual_mean"] == whole.to_dict()["ledger.residual_mean"]


class LocalShard(distributed.Shard):
    """One rank of a world, run in this process: merge keeps its own rows."""

    def merge(self, table, hist, own):
        self.own, self.table = own, table.copy()
        return table, hist


def test_ledger_columns_do_not_depend_on_rank_count():
    whole = run(**BASE)
    table = np.zeros_like(whole.replicate_sums)
    for rank in range(3):
        shard = LocalShard(rank, 3)
        simulate(whole.config, with_theory=False, shard=shard, chunk=64)
        a, b = shard.own
        table[:, a:b] = shard.table[:, a:b]
    assert np.array_equal(table, whole.replicate_sums)


# --- switches and files -----------------------------------------------------------------------

CLI = ["simulate", "--spectrum", "0.5,2", "--lr", "0.05", "--temperature", "0.3", "--trajectories", "128",
       "--replicates", "2", "--steps", "8", "--backend", "torch", "--quiet"]


def test_no_ledger_gives_no_keys_and_the_same_statistics(tmp_path):
    on, off = tmp_path / "on.json", tmp_path / "off.json"
    assert cli.main([*CLI, "--json", str(on)]) == 0
    assert cli.main([*CLI, "--no-ledger", "--json", str(off)]) == 0
    with_ledger, without = json.loads(on.read_text()), json.loads(off.read_text())
    assert {k for k in with_ledger if k.startswith("ledger")} >= {f"ledger.{n}_{t}" for n in TERMS + (
        "effective_temperature",) for t in ("mean", "sem")}
    assert not [k for k in without if "ledger" in k] and "ledger" not in without["theory"]
    assert without["config"]["ledger"] is False and with_ledger["config"]["ledger"] is True
    for key in ("inertia_mean", "inertia_sem", "kinetic_mean", "loss_mean", "shadow_inertia_mean"):
        assert with_ledger[key] == without[key]  # the ledger is a by-product: the dynamics are the same


def test_ledger_flag_is_checked():
    from inertia_gpu.config import ConfigError
    with pytest.raises(ConfigError, match="--ledger"):
        SimulationConfig(ledger="yes")
    assert SimulationConfig(ledger=np.bool_(False)).validate().ledger is False


def test_old_checkpoint_format_fails_in_one_line(tmp_path, capsys):
    """A file of checkpoint format 1 (six columns, no ledger state) is refused: exit 2, one line."""
    payload = b"anything"
    old = tmp_path / "old.ckpt"
    old.write_bytes(b"INERTIA-GPU-CHECKPOINT 1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    code = cli.main([*CLI, "--checkpoint", str(old)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "format 1" in err and "delete it" in err


def test_a_backend_without_ledger_columns_is_refused(monkeypatch):
    """Six columns from a backend is a backend bug: refused, never read as a run without a ledger."""
    from inertia_gpu.backends.torch_ref import TorchEnsemble

    class QuantitiesOnly(TorchEnsemble):
        def run(self, *args):
            state, sums = super().run(*args)
            return state, sums[..., :6]

    from inertia_gpu import engine
    monkeypatch.setattr(engine.backends, "resolve", lambda config: QuantitiesOnly())
    with pytest.raises(RuntimeError, match="6 columns, expected 9"):
        run(noise=0.3)


def test_all_diverged_gives_null_ledger_with_a_reason():
    out = run(noise=0.3, diverge_above=1e-3).to_dict()  # every I_0 lies above the bound
    assert all(x is None for x in out["ledger.dissipated_mean"]) and out["ledger_null_reason"]
