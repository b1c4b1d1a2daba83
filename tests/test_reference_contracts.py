"""Contracts 3-5 of the backends, on the reference backend (TorchEnsemble) against float64 and exact theory.

3. recording follows `recorded_in_window`, any sorted set of steps (not n % record_every);
4. observables and first passage are formed in float64: a float32 run decaying far below
   float32's smallest normal (1e-38) agrees with the float64 run and with exact theory;
5. a trajectory whose float64 inertia is not <= diverge_above is diverged: its state becomes
   NaN and it leaves every sum.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from inertia_gpu import rng, theory
from inertia_gpu.backends import torch_ref
from inertia_gpu.backends.torch_ref import TorchEnsemble
from inertia_gpu.config import SimulationConfig
from inertia_gpu.reference import Model
from inertia_gpu.spec import FRACTIONS


def _run(cfg, count, windows):
    state, rows = None, []
    for begin, end in windows:
        state, sums = TorchEnsemble().run(cfg, 0, count, begin, end, state)
        rows.append(sums)
    return state, torch.cat(rows)


def test_deep_decay_float32_agrees_with_float64_and_theory():
    """Noise-free heavy ball on lambda = 1 with mu = 0: I_n reaches 1e-55, far below
    float32's normal range (1e-38) for the inertia, while theta itself stays a normal float32 (> 1e-35)."""
    base = SimulationConfig(spectrum=[1.0, 0.9], lr=0.8, momentum=0.0, steps=50, trajectories=256, dtype="float64",
                            record_every=5, seed=4).validate()
    s64, p64 = _run(base, 256, [(0, 50)])
    s32, p32 = _run(dataclasses.replace(base, dtype="float32"), 256, [(0, 20), (20, 50)])
    assert s32.inertia0.dtype == torch.float64 and s32.theta.dtype == torch.float32
    mean32, mean64 = p32[..., 1].sum(1) / p32[..., 0].sum(1), p64[..., 1].sum(1) / p64[..., 0].sum(1)
    assert float(mean64[-1]) < 1e-50  # far below where float32 products would be subnormal or zero
    assert torch.equal(p32[..., 0], p64[..., 0])  # nothing flushed, nothing diverged
    torch.testing.assert_close(mean32, mean64, rtol=2e-5, atol=0)
    # exact theory on the same initial draws: noise-free and separable, so the ensemble mean is
    # sum_i c_n(lambda_i) mean(theta_0i^2), c_n the exact curve of the one-eigenvalue problem
    z, _ = rng.init_normals(torch.arange(256), 2, base.seed, torch.float64)
    exact = sum(np.asarray(theory.expected(dataclasses.replace(base, spectrum=[lam], dim=None))["inertia"])
                * float(z[:, i].pow(2).mean()) for i, lam in enumerate(base.spectrum))
    np.testing.assert_allclose(mean32.numpy(), exact, rtol=2e-5)
    np.testing.assert_allclose(mean64.numpy(), exact, rtol=1e-9)
    # first passage in float64 agrees between the dtypes (the thresholds lie at 1e-0.3 .. 1e-1: no rounding ties)
    assert (s32.first_passage != s64.first_passage).float().mean() <= 0.01


def test_first_passage_compares_in_float64():
    """I_0 kept in float64; first passage = first recorded n with I_n <= f I_0 in float64, against an
    independent numpy recurrence (float32 state, float64 observables)."""
    cfg = SimulationConfig(spectrum=[1.0], lr=0.1, momentum=0.5, steps=40, trajectories=64, dtype="float32",
                           init_velocity_std=0.3, seed=3).validate()
    state, _ = _run(cfg, 64, [(0, 40)])
    f32 = np.float32
    z_theta, z_v = (z.numpy()[:, 0] for z in rng.init_normals(torch.arange(64), 1, cfg.seed, torch.float32))
    x = f32(cfg.init_theta_std) * z_theta
    b = -(f32(cfg.init_velocity_std) * z_v) / f32(cfg.lr)

    def inertia(x, b):
        x64, b64 = x.astype(np.float64), b.astype(np.float64)
        return 0.5 * cfg.lr * (b64 * b64) + 0.5 * (x64 * x64)

    i0 = inertia(x, b)
    assert state.inertia0.dtype == torch.float64
    np.testing.assert_array_equal(state.inertia0.numpy(), i0)
    want = np.full((64, len(FRACTIONS)), -1)
    for n in range(1, 41):
        b = f32(cfg.momentum) * b + x  # grad = lambda theta with lambda = 1
        x = x - f32(cfg.lr) * b
        now = inertia(x, b)
        for j, f in enumerate(FRACTIONS):
            want[:, j] = np.where((want[:, j] < 0) & (now <= f * i0), n, want[:, j])
    np.testing.assert_array_equal(state.first_passage.numpy(), want)


def test_diverged_trajectories_become_nan_and_leave_the_sums():
    """lr lambda > 2 (1 + mu) for lambda > 3: those trajectories grow; with a finite diverge_above each is
    dropped at the first recorded step its float64 inertia exceeds the bound, and stays dropped."""
    cfg = SimulationConfig(spectrum_distribution="uniform:0.5,6", dim=1, lr=1.0, momentum=0.5, steps=40,
                           trajectories=256, record_every=2, dtype="float32", seed=5).validate()
    cfg.diverge_above = 50.0
    state, sums = _run(cfg, 256, [(0, 13), (13, 40)])
    traj = torch.arange(256)
    model = Model(dataclasses.replace(cfg, dtype="float64"))
    lam = model.eigenvalues(traj)
    theta, mom = model.initial_state(traj)
    alive = torch.ones(256, dtype=torch.bool)
    counts, means = [], []
    for n in range(41):
        if n:
            theta, mom = model.step(theta, mom, lam, n - 1, torch.zeros_like(theta))
        if n % 2 == 0:
            inertia = model.observe(theta, mom, lam)[0]
            alive &= inertia <= 50.0
            counts.append(int(alive.sum()))
            means.append(float(inertia[alive].mean()))
    assert counts[-1] < 256 and counts[0] == 256
    assert sums[..., 0].sum(1).tolist() == [float(c) for c in counts]  # float32 vs float64: same drop steps here
    np.testing.assert_allclose((sums[..., 1].sum(1) / sums[..., 0].sum(1)).numpy(), means, rtol=1e-5)
    dropped = ~alive
    assert torch.isnan(state.theta[dropped]).all() and torch.isnan(state.momentum[dropped]).all()
    assert torch.isfinite(state.theta[alive]).all()


def test_recording_follows_the_recorded_steps_not_a_modulus(monkeypatch):
    """Any sorted set of steps starting at 0 and holding the last: rows come out at exactly those steps."""
    cfg = SimulationConfig(spectrum=[1.0, 2.0], lr=0.1, momentum=0.8, noise=0.3, steps=30, trajectories=100,
                           record_every=1, seed=8, dtype="float64").validate()
    _, every = _run(cfg, 100, [(0, 30)])
    steps = [0, 1, 2, 3, 5, 8, 13, 21, 30]

    def irregular(config, begin, end):
        first = 0 if begin == 0 else begin + 1
        return [n for n in steps if first <= n <= end]

    monkeypatch.setattr(torch_ref, "recorded_in_window", irregular)
    _, some = _run(cfg, 100, [(0, 9), (9, 30)])
    assert some.shape[0] == len(steps)
    torch.testing.assert_close(some, every[steps], rtol=0, atol=0)


@pytest.mark.parametrize("integrator", ["leapfrog", "baoab", "euler", "heavy-ball"])
def test_infinite_bound_keeps_every_finite_trajectory(integrator):
    cfg = SimulationConfig(spectrum=[1.0], integrator=integrator, lr=0.1, dt=0.1, damping=0.5, noise=0.2,
                           steps=12, trajectories=70, seed=1, diverge_above=math.inf).validate()
    assert math.isinf(cfg.diverge_above)
    _, sums = _run(cfg, 70, [(0, 12)])
    assert sums[..., 0].sum(1).tolist() == [70.0] * 13
