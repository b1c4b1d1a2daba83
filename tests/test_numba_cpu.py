"""The numba CPU backend against the torch reference, and its invariances.

Tiny sizes: every integrator x noise model x schedule x problem against
TorchEnsemble (fresh random seeds, poisoned state and output buffers), the
ledger columns and state included, chunk/window invariance through the engine
(bitwise), thread-count invariance, and Philox in numba bit for bit against
inertia_gpu.rng.
"""
import dataclasses
import itertools
import random

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from inertia_gpu import engine, rng, spec  # noqa: E402
from inertia_gpu.backends import numba_cpu, resolve  # noqa: E402
from inertia_gpu.backends.numba_cpu import NumbaEnsemble  # noqa: E402
from inertia_gpu.backends.torch_ref import TorchEnsemble  # noqa: E402
from inertia_gpu.config import SimulationConfig  # noqa: E402
from inertia_gpu.kernels import cpu_ensemble  # noqa: E402
from inertia_gpu.reference import Model  # noqa: E402

SEED_RNG = random.Random()  # fresh seeds every run; printed on failure through the config
LEDGER = slice(spec.N_QUANTITIES, spec.N_COLUMNS)  # the ledger columns of a partial-sum row


@pytest.fixture(autouse=True)
def poisoned_partials(monkeypatch):
    """Every output buffer the backend hands the kernel starts as NaN: an element it fails to write shows."""
    monkeypatch.setattr(numba_cpu, "new_partials", lambda records, groups: np.full((records, groups, spec.N_COLUMNS),
                                                                                   np.nan))


def _seed() -> int:
    return SEED_RNG.randrange(1 << 64)


# --- Philox ------------------------------------------------------------------------------

def test_philox_known_answer():
    out = cpu_ensemble.philox_batch(*(np.zeros(1, dtype=np.int64) for _ in range(4)), 0, 0)
    assert [int(x) for x in out[0]] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_philox_matches_reference_bit_for_bit():
    g = np.random.default_rng()
    n = 4096
    c = [g.integers(0, 1 << 32, n, dtype=np.int64) for _ in range(4)]
    c[1][:8] = [0, 1, 0xFFFFFFFF, 0x80000000, 7, 0, 0, 0xFFFFFFFE]
    for _ in range(3):
        k0, k1 = (int(x) for x in g.integers(0, 1 << 32, 2))
        got = cpu_ensemble.philox_batch(c[0], c[1], c[2], c[3], k0, k1).astype(np.int64)
        ref = rng.philox4x32(*(torch.from_numpy(x) for x in c), k0, k1)
        for lane in range(4):
            np.testing.assert_array_equal(got[:, lane], ref[lane].numpy())


# --- every variant against the reference --------------------------------------------------

INTEGRATORS = ("heavy-ball", "euler", "leapfrog", "baoab")
NOISES = ("additive", "temperature", "loss-scaled")
SCHEDULES = ("constant", "nesterov:3")
PROBLEMS = ("quadratic-1", "quadratic-3", "drawn", "double-well", "rosenbrock")


def _config(integrator, noise_model, schedule, problem, dtype="float32", **kw) -> SimulationConfig:
    c = dict(integrator=integrator, noise_model=noise_model, momentum_schedule=schedule, dtype=dtype,
             trajectories=200, steps=13, seed=_seed(), init_velocity_std=0.5, noise=0.3, temperature=0.2,
             damping=0.5, lr=0.05, dt=0.1, replicates=2)
    if problem == "quadratic-1":
        c.update(spectrum=[0.7])
    elif problem == "quadratic-3":
        c.update(condition=20.0, dim=3)
    elif problem == "drawn":
        c.update(spectrum_distribution="lognormal:0,0.5", dim=2)
    elif problem == "double-well":
        c.update(problem="double-well", dim=2)
    else:
        c.update(problem="rosenbrock", dim=3, lr=0.001, dt=0.01, init_theta_std=0.3, init_velocity_std=0.01)
    c.update(kw)
    return SimulationConfig(**c).validate()


def _compare(cfg: SimulationConfig, start=64, count=200, begin=0, end=None):
    end = cfg.steps if end is None else end
    a, pa = NumbaEnsemble().run(cfg, start, count, begin, end, None)
    b, pb = TorchEnsemble().run(cfg, start, count, begin, end, None)
    f32 = cfg.dtype == "float32"
    rtol = 3e-5 if f32 else 1e-11
    assert a.inertia0.dtype == torch.float64  # I_0 in float64 (first passage compares in float64)
    for name in ("theta", "momentum", "inertia0"):
        x, y = getattr(a, name), getattr(b, name)
        if name == "inertia0":
            x = x.to(y.dtype)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        scale = float(y[torch.isfinite(y)].abs().max()) if torch.isfinite(y).any() else 1.0
        torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * scale, equal_nan=True, msg=lambda m: f"{name} {cfg}: {m}")
    # first passage: identical except where I sits within rounding of the threshold
    mismatch = (a.first_passage != b.first_passage).any(dim=1).float().mean().item()
    assert mismatch <= 0.02, (mismatch, cfg)
    assert pa.shape == pb.shape == pa.shape[:2] + (spec.N_COLUMNS,) and pa.dtype == torch.float64
    torch.testing.assert_close(pa[..., 0], pb[..., 0], rtol=0, atol=0)  # finite counts
    q = slice(0, spec.N_QUANTITIES)
    scale = pb[..., q].abs().amax(dim=(0, 1), keepdim=True).clamp(min=1e-30)
    torch.testing.assert_close(pa[..., q] / scale, pb[..., q] / scale, rtol=0, atol=rtol * 4, equal_nan=True,
                               msg=lambda m: f"{cfg}: {m}")
    _compare_ledger(cfg, a, pa, b, pb)


def _compare_ledger(cfg, a, pa, b, pb):
    """Ledger columns and state against the reference's, relative to the energy scale (the inertia).

    float64: the per-step terms are formed from the same working-dtype values in float64, so they
    agree to float64 rounding of the energy; float32: the states (hence the terms) agree to float32
    rounding."""
    tol = 3e-5 if cfg.dtype == "float32" else 1e-12
    energy = float(pb[..., 1].abs().max())  # the largest group sum of the inertia
    torch.testing.assert_close(pa[..., LEDGER] / energy, pb[..., LEDGER] / energy, rtol=0, atol=tol, equal_nan=False,
                               msg=lambda m: f"ledger columns {cfg}: {m}")
    assert a.ledger.dtype == torch.float64 and a.ledger.shape == b.ledger.shape == (a.theta.shape[0], 2)
    per_trajectory = float(b.inertia0[torch.isfinite(b.inertia0)].abs().max())
    torch.testing.assert_close(a.ledger / per_trajectory, b.ledger / per_trajectory, rtol=0, atol=tol,
                               equal_nan=True, msg=lambda m: f"ledger state {cfg}: {m}")


@pytest.mark.parametrize("integrator,noise_model,schedule", list(itertools.product(INTEGRATORS, NOISES, SCHEDULES)))
def test_variants_match_reference_float32(integrator, noise_model, schedule):
    for problem in PROBLEMS:
        _compare(_config(integrator, noise_model, schedule, problem))


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_variants_match_reference_float64(integrator):
    for noise_model, schedule, problem in [("additive", "constant", "quadratic-3"), ("temperature", "nesterov:3", "drawn"),
                                           ("loss-scaled", "constant", "double-well"),
                                           ("additive", "nesterov:3", "rosenbrock")]:
        _compare(_config(integrator, noise_model, schedule, problem, dtype="float64"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_recorded_heavy_ball_step_d1_matches_reference(dtype):
    """d = 1 heavy ball steps inside the record's pass at a recorded step (`_record_1` with step):
    double well and per-trajectory drawn curvatures (the quadratic with one shared curvature is in the
    variants above), recorded steps mixed with plain ones (record_every 3, a window from mid Philox
    block), against the reference."""
    for problem in ("double-well", "drawn"):
        cfg = _config("heavy-ball", "additive", "nesterov:3", problem, dtype=dtype, dim=1, record_every=3, steps=17)
        _compare(cfg)
        b, _ = TorchEnsemble().run(cfg, 64, 200, 0, 5, None)
        a, pa = NumbaEnsemble().run(cfg, 64, 200, 5, 17, dataclasses.replace(b))
        r, pr = TorchEnsemble().run(cfg, 64, 200, 5, 17, b)
        rtol = 3e-5 if dtype == "float32" else 1e-11
        torch.testing.assert_close(a.theta, r.theta, rtol=rtol, atol=rtol)
        assert torch.equal(pa[..., 0], pr[..., 0])
        q = slice(1, spec.N_QUANTITIES)
        scale = pr[..., q].abs().amax(dim=(0, 1), keepdim=True)
        torch.testing.assert_close(pa[..., q] / scale, pr[..., q] / scale, rtol=0, atol=rtol * 4)
        _compare_ledger(cfg, a, pa, r, pr)


def test_window_starting_mid_block_and_record_every():
    """A window starting at n % 4 != 0 from a given state, and sparse recording."""
    cfg = _config("heavy-ball", "additive", "constant", "quadratic-3", record_every=3, steps=20)
    sa, _ = NumbaEnsemble().run(cfg, 0, 130, 0, 7, None)
    sb, _ = TorchEnsemble().run(cfg, 0, 130, 0, 7, None)
    a, pa = NumbaEnsemble().run(cfg, 0, 130, 7, 18, dataclasses.replace(sb))
    b, pb = TorchEnsemble().run(cfg, 0, 130, 7, 18, sb)
    torch.testing.assert_close(a.theta, b.theta, rtol=3e-5, atol=3e-5)
    assert pa.shape == pb.shape == (4, 3, spec.N_COLUMNS)  # steps 9, 12, 15, 18
    torch.testing.assert_close(pa[..., :spec.N_QUANTITIES], pb[..., :spec.N_QUANTITIES], rtol=1e-5, atol=1e-9)
    _compare_ledger(cfg, a, pa, b, pb)  # the (D, Q) carried in from the first window
    assert torch.equal(sa.theta, NumbaEnsemble().run(cfg, 0, 130, 0, 7, None)[0].theta)


def test_statistics_match_reference_quadratic():
    cfg = _config("heavy-ball", "additive", "constant", "quadratic-3", trajectories=4096, steps=40, replicates=8,
                  backend="numba")
    ra = engine.simulate(cfg, with_theory=False)
    rb = engine.simulate(dataclasses.replace(cfg, backend="torch"), with_theory=False)
    assert ra.backend == "numba" and rb.backend == "torch"
    for q in ("inertia_mean", "kinetic_mean", "loss_mean", "shadow_inertia_mean"):
        np.testing.assert_allclose(ra.stats[q], rb.stats[q], rtol=1e-5, err_msg=q)


# --- invariances (bitwise) ----------------------------------------------------------------

def _result_arrays(r):
    return r.replicate_sums, r.first_passage_hist


@pytest.mark.parametrize("integrator,noise_model", [("heavy-ball", "additive"), ("baoab", "loss-scaled")])
def test_chunk_and_window_invariance_bitwise(integrator, noise_model):
    cfg = _config(integrator, noise_model, "nesterov:3", "quadratic-3", trajectories=1000, steps=26, replicates=5,
                  record_every=2, backend="numba")
    ref = _result_arrays(engine.simulate(cfg, with_theory=False))
    for chunk, window in [(200, 7), (400, 26), (1000, 5), (None, 1)]:
        got = _result_arrays(engine.simulate(cfg, chunk=chunk, window=window, with_theory=False))
        for x, y in zip(got, ref):
            np.testing.assert_array_equal(x, y, err_msg=f"chunk={chunk} window={window}")


def test_thread_count_invariance_bitwise():
    import numba
    cfg = _config("leapfrog", "temperature", "constant", "quadratic-1", trajectories=3000, steps=12)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a, pa = NumbaEnsemble().run(cfg, 0, 3000, 0, 12, None)
    finally:
        numba.set_num_threads(n)
    b, pb = NumbaEnsemble().run(cfg, 0, 3000, 0, 12, None)
    assert torch.equal(pa, pb) and torch.equal(a.theta, b.theta)


def test_auto_picks_numba_on_cpu_and_refuses_cuda():
    cfg = SimulationConfig().validate()
    assert resolve(cfg).name == "numba"
    assert NumbaEnsemble.unavailable_reason(dataclasses.replace(cfg, device="cuda")) is not None


def test_thread_count_invariance_across_processes(tmp_path):
    """NUMBA_NUM_THREADS=1 and 2 in fresh processes: statistics and first passage bitwise equal."""
    import os
    import subprocess
    import sys
    code = """
import sys, numpy as np
from inertia_gpu import engine
from inertia_gpu.config import SimulationConfig
cfg = SimulationConfig(trajectories=3001, steps=23, record_every=2, noise=0.4, lr=0.05, momentum=0.8, spectrum=[1.3],
                       replicates=7, seed=int(sys.argv[2]), backend="numba").validate()
r = engine.simulate(cfg, with_theory=False)
np.savez(sys.argv[1], sums=r.replicate_sums, hist=r.first_passage_hist)
"""
    seed = str(_seed())
    out = {}
    for threads in (1, 2):
        path = tmp_path / f"t{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", code, str(path), seed], check=True, env=env)
        out[threads] = np.load(path)
    for key in ("sums", "hist"):
        np.testing.assert_array_equal(out[1][key], out[2][key], err_msg=key)


def test_normal_transform_within_a_few_ulps_of_the_reference():
    """The SIMD log/sin/cos polynomials against torch's libm transform on the same Philox words."""
    g = np.random.default_rng()
    n = 200_000
    xa = g.integers(0, 1 << 32, n, dtype=np.int64)
    xb = g.integers(0, 1 << 32, n, dtype=np.int64)
    xa[:4] = [0, 0xFFFFFFFF, 255, 256]  # u1 at 2**-24 and 1; angles at 0, 2 pi, pi/2, 3 pi/2
    xb[:4] = [0, 0xFFFFFFFF, 0x40000000, 0xC0000000]
    for npdt, tdt in ((np.float32, torch.float32), (np.float64, torch.float64)):
        got = np.full((n, 2), np.nan, dtype=npdt)
        cpu_ensemble.normals_batch(xa, xb, got)
        z0, z1 = rng.box_muller(torch.from_numpy(xa), torch.from_numpy(xb), tdt)
        ref = np.stack([z0.numpy(), z1.numpy()], axis=1)
        # ulps of the result, near zero counted against the spacing at 1e-3 (cancellation in cos near pi/2)
        ulp = np.spacing(np.maximum(np.abs(ref), npdt(1e-3)).astype(npdt)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - ref.astype(np.float64)) / ulp
        assert err.max() <= 4, (npdt, err.max())


def test_deep_decay_float32_matches_float64_and_theory():
    """Inertia decays far below the float32 range: observables formed in float64 keep float32 right."""
    base = dict(trajectories=4096, steps=1000, record_every=100, replicates=16, seed=_seed(), backend="numba")
    r32 = engine.simulate(SimulationConfig(dtype="float32", **base).validate())
    r64 = engine.simulate(SimulationConfig(dtype="float64", **base).validate())
    m32, m64 = r32.stats["inertia_mean"], r64.stats["inertia_mean"]
    assert m64[-1] < 1e-40  # far below float32's smallest normal (1.2e-38)
    np.testing.assert_allclose(m32, m64, rtol=1e-3)
    for r in (r32, r64):
        z = (r.stats["inertia_mean"] - r.theory["inertia"]) / r.stats["inertia_sem"]
        assert np.all(np.abs(z) < 5), z
        assert (r.diverged == 0).all()


def test_divergence_sets_nan_and_leaves_the_sums():
    """A trajectory whose float64 inertia exceeds diverge_above at a recorded step gets a NaN state
    and leaves every later sum; the others follow the reference."""
    cfg = _config("heavy-ball", "additive", "constant", "quadratic-1", dtype="float64", trajectories=300,
                  steps=16, lr=0.9, momentum=0.95, spectrum=[2.0], noise=0.5)
    limit = 20.0
    cfg.diverge_above = limit
    got, partials = NumbaEnsemble().run(cfg, 0, 300, 0, 16, None)
    model = Model(cfg)
    lam = model.eigenvalues(None)
    theta0, mom0 = model.initial_state(torch.arange(300))
    alive = model.observe(theta0, mom0, lam)[0] <= limit
    counts = [int(alive.sum())]
    s = None
    for n in range(16):  # the reference, one step per window, observed after every step
        s, _ = TorchEnsemble().run(cfg, 0, 300, n, n + 1, s)
        alive &= model.observe(s.theta, s.momentum, lam)[0] <= limit
        counts.append(int(alive.sum()))
    assert 0 < counts[-1] < 300  # some diverge, some do not
    np.testing.assert_array_equal(partials[:, :, 0].sum(dim=1).numpy(), np.asarray(counts, dtype=float))
    assert torch.isnan(got.theta[~alive]).all() and torch.isnan(got.momentum[~alive]).all()
    torch.testing.assert_close(got.theta[alive], s.theta[alive], rtol=1e-11, atol=1e-11)
    # the ledger: NaN with the state, out of every column; the kept ones as the reference's
    assert torch.isnan(got.ledger[~alive]).all() and torch.isfinite(got.ledger[alive]).all()
    ref, ref_partials = TorchEnsemble().run(cfg, 0, 300, 0, 16, None)
    assert torch.isfinite(partials).all()
    _compare_ledger(cfg, got, partials, ref, ref_partials)


# --- the ledger ---------------------------------------------------------------------------

def test_ledger_off_is_the_same_run_without_the_ledger():
    """config.ledger False: the same states and quantities bit for bit, 0.0 in the ledger columns,
    the (D, Q) state passed through untouched."""
    for integrator, noise_model in (("heavy-ball", "loss-scaled"), ("baoab", "temperature")):
        cfg = _config(integrator, noise_model, "nesterov:3", "quadratic-3", dtype="float64", record_every=3)
        on, p_on = NumbaEnsemble().run(cfg, 64, 200, 0, 13, None)
        off_cfg = dataclasses.replace(cfg, ledger=False)
        off, p_off = NumbaEnsemble().run(off_cfg, 64, 200, 0, 13, None)
        assert torch.equal(on.theta, off.theta) and torch.equal(on.momentum, off.momentum)
        assert torch.equal(p_on[..., :spec.N_QUANTITIES], p_off[..., :spec.N_QUANTITIES])
        assert torch.equal(p_off[..., LEDGER], torch.zeros_like(p_off[..., LEDGER]))
        assert (p_on[..., spec.N_QUANTITIES] != 0).any()  # the ledger run did form D
        carried = torch.randn(200, 2, dtype=torch.float64)
        resumed, _ = NumbaEnsemble().run(off_cfg, 64, 200, 13, 20,
                                         dataclasses.replace(off, ledger=carried))
        assert torch.equal(resumed.ledger, carried)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ledger_resume_and_chunking_bitwise(dtype):
    """Windows and chunks cut anywhere (mid Philox block, off the record grid, a short last group):
    the (D, Q) state and every ledger column the same bits as one launch."""
    cfg = _config("euler", "loss-scaled", "nesterov:3", "drawn", dtype=dtype, steps=23, record_every=2)
    whole, p_whole = NumbaEnsemble().run(cfg, 0, 200, 0, 23, None)
    state, parts = None, []
    for begin, end in ((0, 5), (5, 6), (6, 17), (17, 23)):
        state, p = NumbaEnsemble().run(cfg, 0, 200, begin, end, state)
        parts.append(p)
    assert torch.equal(state.ledger, whole.ledger) and torch.equal(torch.cat(parts), p_whole)
    first, p_first = NumbaEnsemble().run(cfg, 0, 128, 0, 23, None)
    rest, p_rest = NumbaEnsemble().run(cfg, 128, 72, 0, 23, None)
    assert torch.equal(torch.cat([first.ledger, rest.ledger]), whole.ledger)
    assert torch.equal(torch.cat([p_first, p_rest], dim=1), p_whole)


def test_ledger_frictionless_noise_free_heavy_ball_is_exactly_zero():
    """mu = 1, no noise: no energy dissipated or injected, exactly (the residual is all the change)."""
    cfg = _config("heavy-ball", "additive", "constant", "quadratic-3", dtype="float64", momentum=1.0, noise=0.0)
    state, partials = NumbaEnsemble().run(cfg, 0, 200, 0, 13, None)
    assert torch.equal(state.ledger, torch.zeros_like(state.ledger))
    assert torch.equal(partials[..., 6:8], torch.zeros_like(partials[..., 6:8]))
    assert (partials[1:, :, 8] != 0).any()
