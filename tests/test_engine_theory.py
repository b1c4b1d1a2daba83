"""The simulated ensemble against exact theory (THEORY.md §3-4), with the run's own standard errors.

Every mean is compared at every recorded step: |E_sim - E_theory| < 4 sem,
the sem being the batch-means error of the run itself, the seed fixed.
"""
import numpy as np
import pytest

from inertia_gpu import SimulationConfig, simulate, theory

Z = 4.0
N = 10_000

CASES = {
    "heavy-ball constant, no noise": dict(lr=0.02, momentum=0.9),
    "heavy-ball constant, additive": dict(lr=0.02, momentum=0.9, noise=0.7),
    "heavy-ball nesterov:3, no noise": dict(lr=0.02, momentum_schedule="nesterov:3"),
    "heavy-ball nesterov:3, additive": dict(lr=0.02, momentum_schedule="nesterov:3", noise=0.5),
    "heavy-ball temperature": dict(lr=0.02, momentum=0.8, noise_model="temperature", temperature=0.3),
    "heavy-ball loss-scaled": dict(lr=0.02, momentum=0.9, noise_model="loss-scaled", noise=1.0),
    "leapfrog frictionless": dict(integrator="leapfrog", dt=0.1, init_velocity_std=0.5),
    "leapfrog damped, additive": dict(integrator="leapfrog", dt=0.1, damping=0.5, noise=0.6),
    "leapfrog nesterov:3, additive": dict(integrator="leapfrog", dt=0.1, momentum_schedule="nesterov:3", noise=0.3),
    "baoab damped, no noise": dict(integrator="baoab", dt=0.1, damping=1.0),
    "baoab temperature": dict(integrator="baoab", dt=0.1, damping=1.0, noise_model="temperature", temperature=0.4),
    "baoab nesterov:3, temperature": dict(integrator="baoab", dt=0.1, momentum_schedule="nesterov:3",
                                          noise_model="temperature", temperature=0.2),
    "euler damped, additive": dict(integrator="euler", dt=0.05, damping=1.0, noise=0.5),
}


def z_max(result, quantity="inertia"):
    th = result.theory[quantity]
    z = (result.stats[f"{quantity}_mean"] - th) / result.stats[f"{quantity}_sem"]
    return float(np.nanmax(np.abs(z)))


@pytest.mark.parametrize("case", list(CASES))
def test_mean_inertia_matches_exact_recursion_at_every_step(case):
    cfg = SimulationConfig(spectrum=[0.5, 1.0, 4.0], trajectories=N, steps=120, record_every=3, seed=101,
                           backend="torch", init_theta_std=1.0, **CASES[case])
    r = simulate(cfg)
    assert r.theory, "exact theory must exist for a quadratic"
    for q in ("inertia", "kinetic", "loss", "shadow_inertia"):
        assert z_max(r, q) < Z, (case, q, z_max(r, q))
    assert int(r.diverged.max()) == 0


def test_drawn_spectra_match_theory_of_the_drawn_eigenvalues():
    cfg = SimulationConfig(spectrum_distribution="loguniform:0.1,4", dim=2, trajectories=N, steps=90, record_every=3,
                           lr=0.02, momentum=0.9, noise=0.5, seed=7, backend="torch")
    r = simulate(cfg)
    assert z_max(r) < Z


def test_float64_and_float32_agree_with_theory():
    for dtype in ("float32", "float64"):
        cfg = SimulationConfig(spectrum=[1.0, 2.0], trajectories=N, steps=60, lr=0.05, momentum=0.7, noise=1.0,
                               dtype=dtype, seed=3, backend="torch")
        assert z_max(simulate(cfg)) < Z


@pytest.mark.parametrize("kw", [
    dict(lr=0.02, momentum=0.9, noise_model="temperature", temperature=0.5),
    dict(integrator="baoab", dt=0.2, damping=1.0, noise_model="temperature", temperature=0.5),
    dict(integrator="leapfrog", dt=0.1, damping=2.0, noise=1.0),
])
def test_noisy_damped_runs_settle_at_the_exact_stationary_level(kw):
    cfg = SimulationConfig(spectrum=[0.5, 1.0, 4.0], trajectories=N, steps=400, record_every=400, seed=5,
                           backend="torch", **kw)
    r = simulate(cfg)
    stat = theory.stationary(cfg)
    # after 400 steps the transient is below 1e-6 of the level, far inside the error bar
    assert abs(theory.expected(cfg)["inertia"][-1] - stat["inertia"]) < 1e-3 * r.inertia_sem[-1]
    for q in ("inertia", "kinetic", "loss"):
        z = (r.stats[f"{q}_mean"][-1] - stat[q]) / r.stats[f"{q}_sem"][-1]
        assert abs(z) < Z, (q, z)


def test_double_well_settles_at_the_gibbs_quadrature():
    T = 0.25
    cfg = SimulationConfig(problem="double-well", dim=1, integrator="baoab", dt=0.05, damping=1.0,
                           noise_model="temperature", temperature=T, trajectories=N, steps=1500, record_every=100,
                           seed=17, backend="torch")
    r = simulate(cfg)
    expected_loss = theory.stationary_loss_quadrature("double-well", T, 1)
    # BAOAB samples positions with O(h^2) bias only; compare the last three records (well decorrelated)
    for i in (-1, -2, -3):
        z = (r.loss_mean[i] - expected_loss) / r.loss_sem[i]
        assert abs(z) < Z, z
    # equipartition: E[K] = T/2 per coordinate (BAOAB's velocity marginal is exact for the OU part)
    z = (r.kinetic_mean[-1] - T / 2) / r.kinetic_sem[-1]
    assert abs(z) < Z, z


def test_theory_is_not_trivially_matched():
    """The z-test has power: a 3% wrong learning rate in the theory is detected."""
    cfg = SimulationConfig(spectrum=[0.5, 1.0, 4.0], trajectories=N, steps=120, lr=0.02, momentum=0.9, noise=0.7,
                           seed=101, backend="torch")
    r = simulate(cfg)
    wrong = SimulationConfig(**{**cfg.to_dict(), "lr": 0.0206}).validate()
    z = (r.inertia_mean - theory.expected(wrong)["inertia"]) / r.inertia_sem
    assert np.nanmax(np.abs(z)) > Z
