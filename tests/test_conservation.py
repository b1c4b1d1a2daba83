"""What the dynamics conserve and what they do not (THEORY.md §2, §4), on the reference backend in float64."""
import numpy as np
import pytest

from inertia_gpu import SimulationConfig, simulate


def run(**kw):
    base = dict(trajectories=64, backend="torch", dtype="float64", seed=11, replicates=4)
    base.update(kw)
    return simulate(SimulationConfig(**base), with_theory=False)


def test_frictionless_heavy_ball_conserves_shadow_inertia_not_plain_inertia():
    r = run(problem="quadratic", spectrum=[0.5, 1.0, 3.0], lr=0.01, momentum=1.0, steps=10_000,
            init_theta_std=1.0, init_velocity_std=0.3)
    shadow = r.shadow_inertia_mean
    inertia = r.inertia_mean
    assert np.max(np.abs(shadow - shadow[0])) / shadow[0] < 1e-10
    # the plain inertia oscillates by O(sqrt(lr) lambda) relative amplitude
    assert np.ptp(inertia) / inertia[0] > 1e-2


@pytest.mark.parametrize("lam,h", [(1.0, 0.05), (4.0, 0.02)])
def test_explicit_euler_energy_grows_by_exactly_1_plus_h2_lambda(lam, h):
    """On a quadratic, explicit Euler multiplies every trajectory's energy by (1 + h^2 lambda) per step."""
    steps = 2000
    r = run(problem="quadratic", spectrum=[lam], integrator="euler", dt=h, steps=steps, record_every=100,
            init_velocity_std=0.7)
    expected = r.inertia_mean[0] * (1.0 + h * h * lam) ** r.steps
    np.testing.assert_allclose(r.inertia_mean, expected, rtol=1e-11)


def test_leapfrog_double_well_energy_error_bounded_without_drift_euler_drifts():
    h, steps = 0.05, 100_000
    r = run(problem="double-well", dim=1, integrator="leapfrog", dt=h, steps=steps, record_every=500,
            init_theta_std=1.0, init_velocity_std=0.5)
    err = (r.inertia_mean - r.inertia_mean[0]) / r.inertia_mean[0]
    # bounded at O(h^2) ...
    assert np.max(np.abs(err)) < 0.25 * h * h * 10
    # ... and no drift: the error's mean over the last fifth equals that over the first fifth within its spread
    k = len(err) // 5
    first, last = err[1:k + 1], err[-k:]
    assert abs(last.mean() - first.mean()) < 4 * np.hypot(first.std(), last.std()) / np.sqrt(k) + 1e-6

    e = run(problem="double-well", dim=1, integrator="euler", dt=h, steps=100, record_every=10,
            init_theta_std=1.0, init_velocity_std=0.5)
    growth = e.inertia_mean / e.inertia_mean[0]
    assert np.all(np.diff(growth) > 0)  # monotone drift
    assert growth[-1] > 1.1  # after 100 steps already 10x beyond leapfrog's error over 10^5 steps
