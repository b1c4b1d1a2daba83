"""Property tests (hypothesis, derandomized) and the resilience checks of the engine.

- backends that are importable agree with the torch reference on random valid configurations;
- statistics are invariant to chunking, step windows and rank count (bitwise);
- random invalid configurations are refused by the CLI with exit status 2 and one line;
- a run larger than the memory budget is split; one that cannot fit is refused with its estimate;
- trajectories that blow up are counted per step while the rest carry on.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inertia_gpu import backends, cli, engine, rng
from inertia_gpu.config import SimulationConfig
from inertia_gpu.distributed import Shard
from inertia_gpu.engine import plan, simulate
from inertia_gpu.reference import Model
from inertia_gpu.spec import N_QUANTITIES

SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def valid_configs(draw, max_trajectories=200, max_steps=16):
    problem = draw(st.sampled_from(["quadratic", "quadratic", "double-well", "rosenbrock"]))
    integrator = draw(st.sampled_from(["heavy-ball", "leapfrog", "euler", "baoab"]))
    noise_model = draw(st.sampled_from(["additive", "temperature", "loss-scaled"]))
    kw = dict(problem=problem, integrator=integrator, noise_model=noise_model, dtype="float64",
              trajectories=draw(st.integers(1, max_trajectories)), steps=draw(st.integers(1, max_steps)),
              record_every=draw(st.integers(1, 3)), replicates=draw(st.integers(1, 5)),
              seed=draw(st.integers(0, 2 ** 40)), init_theta_std=draw(st.floats(0.1, 1.5)),
              init_velocity_std=draw(st.sampled_from([0.0, 0.3])),
              momentum_schedule=draw(st.sampled_from(["constant", "constant", "nesterov:3"])))
    if problem == "quadratic":
        if draw(st.booleans()):
            kw["spectrum"] = draw(st.lists(st.floats(0.05, 3.0), min_size=1, max_size=3))
        else:
            kw["spectrum_distribution"] = draw(st.sampled_from(["uniform:0.1,2", "loguniform:0.05,3"]))
            kw["dim"] = draw(st.integers(1, 3))
    else:
        kw["dim"] = draw(st.integers(2, 3)) if problem == "rosenbrock" else draw(st.integers(1, 3))
    if integrator == "heavy-ball":
        kw.update(lr=draw(st.floats(0.002, 0.05)), momentum=draw(st.floats(0.0, 0.95, allow_subnormal=False)))
    else:
        kw.update(dt=draw(st.floats(0.01, 0.2)), damping=draw(st.floats(0.1, 2.0)))
    if noise_model == "temperature":
        kw["temperature"] = draw(st.floats(0.0, 0.5, allow_subnormal=False))
    else:
        kw["noise"] = draw(st.sampled_from([0.0, draw(st.floats(0.0, 0.8, allow_subnormal=False))]))
    return SimulationConfig(**kw).validate()


# --- backends agree -----------------------------------------------------------------

def _available_fast_backends():
    probe = SimulationConfig(trajectories=64, steps=2, dtype="float64").validate()
    names = []
    for name in ("numba",):  # triton has its own, smaller sweep below (the CPU interpreter is slow)
        if backends.unavailable_reason(name, probe) is None:
            names.append(name)
    return names


FAST = _available_fast_backends()


def _well_conditioned(result, bound: float = 1e6) -> bool:
    """Agreement to rounding is only defined while the dynamics stay bounded.

    In a blow-up, the shadow inertia I - h^2/8 |grad L|^2 is a difference of numbers near 1e33
    (hypothesis found one: Rosenbrock, BAOAB, dt = 0.125), and rounding differences of 1e-16
    between two correct implementations come back at 1e-5. Such runs are left to the variant
    tests, which compare states step by step, and to the divergence tests.
    """
    sums = result.replicate_sums
    counts = np.maximum(sums[..., 0], 1.0)
    return bool(np.all(np.isfinite(sums)) and np.all(np.abs(sums[..., 1:5]) <= bound * counts[..., None]))


def _assert_sums_close(got, ref, err_msg=""):
    """Replicate sums equal to rounding: every column to 1e-9 of itself, except the ledger's residual, which a
    backend may form from its group sums, ((sum I - sum I_0) + sum D) - sum Q (docs/CONVENTIONS.md): its
    rounding is relative to those terms, not to the (near-zero) residual, so its tolerance is 1e-9 of them."""
    residual = N_QUANTITIES + 2
    others = [c for c in range(got.replicate_sums.shape[-1]) if c != residual]
    np.testing.assert_allclose(got.replicate_sums[..., others], ref.replicate_sums[..., others], rtol=1e-9,
                               atol=1e-12, err_msg=err_msg)
    sums = ref.replicate_sums
    terms = (np.abs(sums[..., 1]) + np.abs(sums[:1, :, 1]) + np.abs(sums[..., N_QUANTITIES])
             + np.abs(sums[..., N_QUANTITIES + 1]))  # sum I, sum I_0 (step 0 is always recorded), sum D, sum Q
    diff = np.abs(got.replicate_sums[..., residual] - sums[..., residual])
    assert np.all(diff <= 1e-9 * terms + 1e-12), (err_msg, float(np.max(diff - 1e-9 * terms)))


@pytest.mark.skipif(not FAST, reason="no fast backend importable here (numba/triton)")
@settings(max_examples=30, **SETTINGS)
@given(config=valid_configs(max_trajectories=130, max_steps=9))
def test_backends_agree_with_reference(config):
    ref = simulate(dataclasses.replace(config, backend="torch"), with_theory=False)
    assume(_well_conditioned(ref))
    for name in FAST:
        cfg = dataclasses.replace(config, backend=name)
        if backends.unavailable_reason(name, cfg) is not None:
            continue
        got = simulate(cfg, with_theory=False)
        assert np.array_equal(got.stats["finite"], ref.stats["finite"]), name
        _assert_sums_close(got, ref, name)


@pytest.mark.skipif(backends.unavailable_reason("triton", SimulationConfig(trajectories=64, steps=2).validate())
                    is not None, reason="triton not runnable here (neither a GPU nor TRITON_INTERPRET=1)")
@settings(max_examples=30, **SETTINGS)
@given(config=valid_configs(max_trajectories=130, max_steps=9))
def test_triton_agrees_with_reference(config):
    """A few random configurations through the Triton kernel (the interpreter in CI is slow per program)."""
    ref = simulate(dataclasses.replace(config, backend="torch"), with_theory=False)
    assume(_well_conditioned(ref))
    got = simulate(dataclasses.replace(config, backend="triton"), with_theory=False)
    assert np.array_equal(got.stats["finite"], ref.stats["finite"])
    _assert_sums_close(got, ref)


# --- invariance to chunking, windows and ranks ---------------------------------------

class LocalShard(Shard):
    def merge(self, table, hist, own):
        self.own, self.table, self.hist = own, table.copy(), hist.copy()
        return table, hist


@settings(max_examples=40, **SETTINGS)
@given(config=valid_configs(), chunk=st.integers(1, 256), window=st.integers(1, 7), world=st.integers(1, 4))
def test_statistics_invariant_to_chunking_windows_and_ranks(config, chunk, window, world):
    config = dataclasses.replace(config, backend="torch")
    whole = simulate(config, with_theory=False)
    split = simulate(config, with_theory=False, chunk=chunk, window=window)
    assert np.array_equal(split.replicate_sums, whole.replicate_sums, equal_nan=True)
    assert np.array_equal(split.first_passage_hist, whole.first_passage_hist)
    table = np.zeros_like(whole.replicate_sums)
    hist = np.zeros_like(whole.first_passage_hist)
    for rank in range(world):
        shard = LocalShard(rank, world)
        simulate(config, with_theory=False, shard=shard, chunk=chunk)
        a, b = shard.own
        table[:, a:b] = shard.table[:, a:b]
        hist += shard.hist
    assert np.array_equal(table, whole.replicate_sums, equal_nan=True)
    assert np.array_equal(hist, whole.first_passage_hist)


# --- invalid configurations: exit 2, one line ----------------------------------------

INVALID = st.sampled_from([
    ["--lr", "0"], ["--lr", "-0.5"], ["--lr", "nan"], ["--momentum", "1.5"], ["--momentum", "-0.1"],
    ["--problem", "banana"], ["--integrator", "rk4"], ["--backend", "fortran"], ["--dtype", "float16"],
    ["--device", "tpu"], ["--spectrum", "1,-2"], ["--trajectories", "0"], ["--trajectories", "-5"],
    ["--steps", "0"], ["--noise", "-1"], ["--noise-model", "pink"], ["--temperature", "-1"],
    ["--momentum-schedule", "nesterov:-1"], ["--momentum-schedule", "cosine"], ["--record-every", "0"],
    ["--replicates", "0"], ["--seed", "-1"], ["--integrator", "leapfrog", "--dt", "0"], ["--integrator", "leapfrog", "--damping", "-1"],
    ["--problem", "rosenbrock", "--dim", "1"], ["--problem", "double-well", "--spectrum", "1"],
    ["--spectrum-dist", "uniform:2,1"], ["--spectrum-dist", "cauchy:0,1"], ["--condition", "0.5"],
    ["--dim", "0"], ["--steps", "abc"], ["--init-theta-std", "-1"], ["--spectrum", "1,x"],
])


@settings(max_examples=40, **SETTINGS)
@given(bad=INVALID, good=st.lists(st.sampled_from([["--steps", "3"], ["--trajectories", "10"],
                                                   ["--dtype", "float64"], ["--noise", "0.1"],
                                                   ["--seed", "4"]]), max_size=3))
def test_invalid_configurations_exit_2_with_one_line(bad, good, capsys):
    argv = ["simulate", "--quiet", *[x for g in good for x in g], *bad]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and err.startswith("inertia-gpu: error:"), err
    assert "Traceback" not in err


# --- memory: split automatically, or refuse early with the estimate -------------------

def test_run_larger_than_budget_is_split_and_unchanged(monkeypatch):
    config = SimulationConfig(spectrum=[0.5, 1, 2], lr=0.05, momentum=0.9, noise=0.3, trajectories=1000,
                              steps=30, replicates=10, dtype="float64", backend="torch").validate()
    whole = simulate(config, with_theory=False)
    monkeypatch.setitem(engine.STATE_BUDGET, "cpu", 300 * 1000)  # ~ one replicate of state per launch
    monkeypatch.setitem(engine.PARTIALS_BUDGET, "cpu", 4000)  # a few records per window
    p = plan(config)
    assert p.chunk < config.trajectories and p.window < config.steps
    split = simulate(config, with_theory=False)
    assert np.array_equal(split.replicate_sums, whole.replicate_sums)


def test_request_that_cannot_fit_is_refused_early_with_estimate(capsys):
    code = cli.main(["simulate", "--quiet", "--problem", "double-well", "--dim", "60000", "--trajectories", "1000000",
                     "--steps", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "GiB" in err and "--replicates" in err, err
    code = cli.main(["simulate", "--quiet", "--trajectories", "6400000", "--steps", "2000000000",
                     "--replicates", "100000"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "GiB" in err, err


# --- divergence: counted per step, the rest carry on ----------------------------------

def test_unstable_trajectories_are_counted_per_step_and_the_rest_stay_finite():
    """Heavy ball with lr above the stability limit for part of a drawn spectrum: lr lambda > 2 (1 + mu)
    for lambda > 3 here. float32 state (overflows within the run); observables in float64 from that state,
    so a trajectory counts as diverged once its float32 state has overflowed (inertia not finite).
    Counts and means are checked against an independent float32 recurrence in numpy."""
    config = SimulationConfig(spectrum_distribution="uniform:0.5,16", dim=1, lr=1.0, momentum=0.5, noise=0.0,
                              trajectories=1024, steps=300, record_every=4, replicates=8, dtype="float32",
                              backend="torch", seed=2, diverge_above=math.inf).validate()  # overflow only
    res = simulate(config)
    diverged = res.diverged
    assert diverged[0] == 0 and diverged[-1] > 0
    assert np.all(np.diff(diverged) >= 0)
    # independent recurrence on the same initial state and eigenvalues
    traj = torch.arange(config.trajectories)
    lam = Model(config).eigenvalues(traj).numpy()[:, 0]
    z_theta, _ = rng.init_normals(traj, 1, config.seed, torch.float32)
    f32 = np.float32
    x, b = (f32(config.init_theta_std) * z_theta.numpy()[:, 0]).astype(f32), np.zeros(config.trajectories, f32)
    unstable = lam > 3.0
    assert diverged[-1] <= unstable.sum()
    counts, means = [], []
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(config.steps + 1):
            if n % config.record_every == 0:
                x64, b64 = x.astype(np.float64), b.astype(np.float64)
                inertia = 0.5 * (b64 * b64) + 0.5 * ((lam.astype(np.float64) * x64) * x64)
                fin = np.isfinite(inertia)
                counts.append(int((~fin).sum()))
                means.append(inertia[fin].astype(np.float64).mean())
            b = f32(config.momentum) * b + lam * x
            x = x - b
    assert counts[-1] > 0.9 * unstable.sum()  # nearly every unstable trajectory overflowed by the end
    assert np.abs(np.array(diverged) - counts).max() <= 2  # float32 rounding may move an overflow by a step
    assert np.all(np.isfinite(res.inertia_mean)) and np.all(np.isfinite(res.inertia_sem[1:]))
    np.testing.assert_allclose(res.inertia_mean[:3], means[:3], rtol=1e-5)
    # the rest against exact theory: noise-free in d = 1, I_n = x0^2 c_n(lambda) with c_n the exact curve of
    # theory.expected for that eigenvalue (E x0^2 = 1); at the last step, over the trajectories still finite
    from inertia_gpu import theory
    x0, lam64 = z_theta.numpy()[:, 0].astype(np.float64), lam.astype(np.float64)
    rows = np.flatnonzero(fin)  # still finite at the last recorded step
    cfg64 = dataclasses.replace(config, dtype="float64", trajectories=1)
    c_last = np.array([theory.expected(cfg64, spectra=[[float(lam64[i])]])["inertia"][-1] for i in rows])
    exact = float((x0[rows] ** 2 * c_last).sum() / rows.size)
    assert res.inertia_mean[-1] == pytest.approx(exact, rel=1e-3)
