"""Statistics: batch means, first passage, decay fits, divergence bookkeeping, chunking invariance."""
import math

import numpy as np
import pytest
import torch

from inertia_gpu import SimulationConfig, rng, simulate, theory
from inertia_gpu.backends.base import FRACTIONS, GROUP
from inertia_gpu.stats import SERIES_DOF, combine, first_passage_summary, fit_decay, t_quantile


def test_batch_means_equal_direct_computation_on_fresh_data():
    g = np.random.default_rng(0)
    R, n_per = 37, 50
    x = g.normal(3.0, 2.0, size=(R, n_per))
    table = np.zeros((1, R, 6))
    table[0, :, 0] = n_per
    table[0, :, 1] = x.sum(axis=1)
    table[0, :, 5] = (x * x).sum(axis=1)
    s = combine(table)
    assert s["inertia_mean"][0] == pytest.approx(x.mean(), rel=1e-14)
    expected_sem = x.mean(axis=1).std(ddof=1) / math.sqrt(R)
    assert s["inertia_sem"][0] == pytest.approx(expected_sem, rel=1e-12)
    assert s["inertia_std"][0] == pytest.approx(x.std(), rel=1e-10)


def test_batch_means_sem_is_calibrated():
    """Over many independent ensembles, (mean - truth)/sem behaves like a t variable: about 95% within 2."""
    g = np.random.default_rng(1)
    hits = 0
    trials = 2000
    for _ in range(trials):
        x = g.exponential(1.0, size=(64, 20))
        table = np.zeros((1, 64, 6))
        table[0, :, 0] = 20
        table[0, :, 1] = x.sum(axis=1)
        s = combine(table)
        hits += abs(s["inertia_mean"][0] - 1.0) < 2 * s["inertia_sem"][0]
    p = 0.9545
    assert abs(hits / trials - p) < 4 * math.sqrt(p * (1 - p) / trials) + 0.01


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_fit_decay_recovers_a_known_rate_within_its_interval(rate):
    g = np.random.default_rng(2)
    steps = np.arange(0, 200)
    truth = 2.0 * np.exp(-rate * steps) + 0.3
    sem = 1e-3 * truth
    mean = truth + sem * g.normal(size=steps.size)
    fit = fit_decay(steps, mean, sem, floor=0.3)
    lo, hi = fit["ci95"]
    assert lo <= rate <= hi and hi - lo < 0.1 * rate


def test_t_quantile_agrees_with_scipy_on_fresh_arguments():
    """The fit's t quantile (exact series, asymptotic beyond SERIES_DOF) against scipy's incomplete-beta inverse."""
    from scipy.special import stdtrit
    g = np.random.default_rng(7)
    dofs = np.concatenate([np.arange(1, 9), g.integers(9, SERIES_DOF + 1, 12), [SERIES_DOF, SERIES_DOF + 1],
                           g.integers(SERIES_DOF + 2, 10 ** 6, 6)])
    for dof in dofs.tolist():
        for p in (0.5, 0.975, *g.uniform(0.5, 0.995, 2)):
            want = float(stdtrit(dof, p))
            assert t_quantile(p, dof) == pytest.approx(want, rel=1e-12, abs=1e-15), (dof, p)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_fit_power_law_recovers_exponent():
    g = np.random.default_rng(3)
    steps = np.arange(0, 500)
    truth = 5.0 * np.maximum(steps, 1.0) ** -2.5
    sem = 1e-3 * truth
    fit = fit_decay(steps, truth + sem * g.normal(size=steps.size), sem, floor=0.0, model="power")
    assert fit["ci95"][0] <= 2.5 <= fit["ci95"][1]


def test_measured_decay_rate_matches_exact_theory():
    cfg = SimulationConfig(spectrum=[0.7], lr=0.05, momentum=0.5, trajectories=4096, steps=80, backend="torch",
                           dtype="float64", seed=4)
    r = simulate(cfg)
    fit = r.decay_fit()
    predicted = theory.decay_rate(cfg)["per_step"]
    assert fit["ci95"][0] <= predicted <= fit["ci95"][1], (fit, predicted)


def independent_first_passage(cfg, n):
    """Noise-free heavy ball in float64 numpy from the same initial draws; first step with I <= f I0."""
    lam = np.array(cfg.spectrum)
    zt, zv = rng.init_normals(torch.arange(n), cfg.dim, cfg.seed, torch.float64)
    x = cfg.init_theta_std * zt.numpy()
    b = -cfg.init_velocity_std * zv.numpy() / cfg.lr
    I0 = 0.5 * cfg.lr * (b * b).sum(1) + 0.5 * (lam * x * x).sum(1)
    first = np.full((n, 3), -1)
    for k in range(1, cfg.steps + 1):
        b = cfg.momentum * b + lam * x
        x = x - cfg.lr * b
        inertia = 0.5 * cfg.lr * (b * b).sum(1) + 0.5 * (lam * x * x).sum(1)
        for j, f in enumerate(FRACTIONS):
            hit = (first[:, j] < 0) & (inertia <= f * I0)
            first[hit, j] = k
    return first


def test_first_passage_histogram_equals_independent_computation():
    n = 3 * GROUP + 17
    cfg = SimulationConfig(spectrum=[0.3, 2.0], lr=0.05, momentum=0.8, trajectories=n, steps=60, seed=9,
                           backend="torch", dtype="float64", init_velocity_std=0.5).validate()
    r = simulate(cfg)
    first = independent_first_passage(cfg, n)
    for j in range(len(FRACTIONS)):
        expected = np.bincount(first[:, j] + 1, minlength=cfg.steps + 2)
        np.testing.assert_array_equal(r.first_passage_hist[j], expected)
    summary = first_passage_summary(r.first_passage_hist)
    assert summary[0]["reached"] == int((first[:, 0] >= 0).sum())
    reached = first[first[:, 0] >= 0, 0]
    assert summary[0]["quantiles"]["0.5"] == int(np.quantile(reached, 0.5, method="inverted_cdf"))
    steps, counts = np.unique(reached, return_counts=True)
    assert summary[0]["histogram"] == {"steps": steps.tolist(), "counts": counts.tolist()}


def test_diverged_trajectories_are_counted_and_excluded():
    """A drawn spectrum straddling the stability edge lr*lambda < 2(1+mu): the unstable part blows up."""
    cfg = SimulationConfig(spectrum_distribution="uniform:0.5,3", dim=1, lr=1.0, momentum=0.0, trajectories=2048,
                           steps=400, record_every=50, seed=2, backend="torch")
    r = simulate(cfg)
    lam = cfg.distribution
    from inertia_gpu.reference import Model
    eig = Model(cfg).eigenvalues(torch.arange(cfg.trajectories))[:, 0].double().numpy()
    growth = np.abs(1 - cfg.lr * eig)  # per-step amplitude factor of theta
    surely = int((growth > 1.6).sum())  # I grows by > 1.6^800 = 1e163: overflows float32 by step 400
    possibly = int((growth > 1).sum())
    assert lam is not None and 0 < surely <= possibly < cfg.trajectories
    assert r.diverged[0] == 0
    assert surely <= r.diverged[-1] <= possibly
    assert np.all(np.diff(r.diverged) >= 0)
    assert np.isfinite(r.inertia_mean).all()


@pytest.mark.parametrize("chunk,window", [(64, 7), (192, 50), (None, 3)])
def test_statistics_identical_whatever_the_chunking(chunk, window):
    cfg = SimulationConfig(spectrum=[0.5, 2.0], lr=0.02, momentum=0.9, noise=0.5, trajectories=1000, steps=50,
                           record_every=2, seed=5, backend="torch", replicates=5)
    base = simulate(cfg, with_theory=False)
    other = simulate(cfg, chunk=chunk, window=window, with_theory=False)
    np.testing.assert_array_equal(base.replicate_sums, other.replicate_sums)
    np.testing.assert_array_equal(base.first_passage_hist, other.first_passage_hist)
