"""The inertia ledger: the exact split of each step's change of inertia, and its exact expectations.

inertia_gpu.ledger splits I_{k+1} - I_k per trajectory into dissipated D, injected Q
and residual W from the reference's own substeps; inertia_gpu.theory.ledger gives
E[D], E[Q], E[W] on quadratics from the second-moment recursion, which shares no
code with the reference. Here: the identity per trajectory (float64, every
integrator x schedule x noise model), the exact zeros of the frictionless
noise-free chains, the ledger's state against the reference backend bit for bit,
the Monte Carlo means against theory with the run's own batch-means standard error,
and the stationary effective temperature.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inertia_gpu import ledger, rng, theory
from inertia_gpu.backends.torch_ref import TorchEnsemble
from inertia_gpu.coefficients import Step
from inertia_gpu.reference import Model
from inertia_gpu.config import SimulationConfig

SPECTRUM = [0.3, 1.0, 2.5]
INTEGRATORS = ("heavy-ball", "euler", "leapfrog", "baoab")
SCHEDULES = ("constant", "nesterov:3")
NOISES = ("additive", "temperature", "loss-scaled")
BLOCK = 64  # trajectories per batch-means block (spec.GROUP)
Z = 5.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are a few thousand elements: intra-op threads only add hand-off cost
    (on a busy machine, a hundredfold), so run single-threaded and restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(**kw) -> SimulationConfig:
    base = dict(spectrum=SPECTRUM, init_theta_std=1.0, init_velocity_std=0.5, dtype="float64", replicates=1)
    base.update(kw)
    return SimulationConfig(**base).validate()


def small(integrator, schedule, noise_model, problem="quadratic", **kw) -> SimulationConfig:
    """A short run with irregular recorded steps, noise and friction on."""
    opts = dict(integrator=integrator, momentum_schedule=schedule, noise_model=noise_model, lr=0.05, momentum=0.8,
                dt=0.2, damping=0.5, noise=0.4, temperature=0.3, trajectories=67, steps=13, record_every=4,
                seed=2026)
    if problem != "quadratic":
        opts.update(problem=problem, spectrum=None, dim=3)
    opts.update(kw)
    return make(**opts)


def assert_identity(run: ledger.LedgerRun, rel: float = 1e-9):
    """I_k - I_0 = -D + Q + W per trajectory, relative to the size of the terms."""
    change = run.inertia - run.inertia[0]
    split = -run.dissipated + run.injected + run.residual
    scale = np.abs(run.inertia[0]) + run.dissipated + np.abs(run.injected) + np.abs(run.residual)
    assert np.all(np.isfinite(split))
    err = np.abs(change - split) / scale
    assert err.max() <= rel, f"identity off by {err.max():.3g} (relative)"


# --- the split, per trajectory ---------------------------------------------------------

@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_identity_per_trajectory(integrator, schedule, noise):
    run = ledger.simulate(small(integrator, schedule, noise))
    assert_identity(run)
    assert np.all(run.dissipated >= 0)
    assert np.all(np.diff(run.dissipated, axis=0) >= 0)  # D_k >= 0 every step, so the sum never falls
    assert np.all(run.injected[0] == 0) and np.all(run.dissipated[0] == 0) and np.all(run.residual[0] == 0)


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_identity_in_float32_to_its_rounding(integrator):
    """Float32 states, terms formed in float64: heavy ball and Euler close to float64 rounding (W is
    measured from the float64 post-noise state); the O step's float32 rounding of v shows in the
    measured change, a few float32 ulps per step."""
    cfg = small(integrator, "nesterov:3", "temperature", dtype="float32")
    run = ledger.simulate(cfg)
    assert run.theta.dtype == torch.float32
    assert_identity(run, rel=1e-12 if integrator in ("heavy-ball", "euler") else cfg.steps * 2.0 ** -21)


@pytest.mark.parametrize("problem", ["double-well", "rosenbrock"])
@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_identity_on_non_quadratics(integrator, problem):
    kw = dict(lr=0.001, dt=0.01, init_theta_std=0.3, init_velocity_std=0.01) if problem == "rosenbrock" else {}
    assert_identity(ledger.simulate(small(integrator, "constant", "loss-scaled", problem, **kw)))


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_ledger_walks_the_reference_dynamics(integrator):
    """The ledger's state is the reference backend's, bit for bit (same draws, same arithmetic),
    so its I_k are the recorded inertia of an ordinary run."""
    cfg = small(integrator, "nesterov:3", "loss-scaled")
    run = ledger.simulate(cfg, start=5, count=40)
    state, _ = TorchEnsemble().run(cfg, 5, 40, 0, cfg.steps, None)
    assert torch.equal(run.theta, state.theta) and torch.equal(run.momentum, state.momentum)


@pytest.mark.parametrize("integrator, options", [
    ("heavy-ball", dict(momentum=1.0)),
    ("leapfrog", dict(damping=0.0)),
    ("baoab", dict(damping=0.0)),
    ("euler", dict(damping=0.0)),
])
def test_frictionless_noise_free_has_no_dissipation_or_injection(integrator, options):
    """mu = 1 (e^0 = 1, 1 - 0 h = 1) and no noise: D = Q = 0 exactly; all the change is W."""
    cfg = small(integrator, "constant", "additive", noise=0.0, steps=40, **options)
    run = ledger.simulate(cfg)
    assert np.all(run.dissipated == 0) and np.all(run.injected == 0)
    assert_identity(run)
    assert np.abs(run.residual[-1]).max() > 0  # the discretisation still exchanges energy


def _steps(cfg, count=50):
    """(theta_k, mom_k, xi_k, theta_k+1, mom_k+1, W_k) per step of the ledger, float64, on `count` trajectories."""
    model = Model(cfg)
    traj = torch.arange(count)
    lam = model.eigenvalues(traj)
    theta, mom = model.initial_state(traj)
    for n in range(cfg.steps):
        xi = rng.step_normals(traj, n, cfg.dim, cfg.seed, torch.float64)
        new_theta, new_mom, _, _, w = ledger.step(model, theta, mom, lam, n, xi)
        yield n, model, lam, theta, mom, xi, new_theta, new_mom, w
        theta, mom = new_theta, new_mom


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_heavy_ball_residual_closed_form(schedule):
    """Quadratic, any mu and noise: W_k = lr^2/2 b_{k+1}^T H b_{k+1} - lr/2 |grad L(theta_k)|^2
    (kick then drift, written out), i.e. the symplectic-Euler energy error of section 8."""
    cfg = small("heavy-ball", schedule, "additive", steps=20)
    for _, model, lam, theta, _, _, _, new_mom, w in _steps(cfg):
        exact = 0.5 * cfg.lr ** 2 * (lam * new_mom ** 2).sum(-1) - 0.5 * cfg.lr * ((lam * theta) ** 2).sum(-1)
        torch.testing.assert_close(w, exact, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("noise_model", NOISES)
def test_leapfrog_residual_is_the_shadow_term(noise_model):
    """Quadratic, any friction and noise: B A B conserves I - (h^2/8)|grad L|^2 and the O step does not
    move theta, so W_k = (h^2/8)(|grad L(theta_{k+1})|^2 - |grad L(theta_k)|^2): it telescopes."""
    cfg = small("leapfrog", "nesterov:3", noise_model, steps=20)
    for _, model, lam, theta, _, _, new_theta, _, w in _steps(cfg):
        exact = cfg.dt ** 2 / 8 * (((lam * new_theta) ** 2).sum(-1) - ((lam * theta) ** 2).sum(-1))
        torch.testing.assert_close(w, exact, rtol=1e-9, atol=1e-13)


def test_euler_residual_closed_form():
    """Quadratic: with u = (1 - h gamma) v + kick the velocity after friction and noise,
    W_k = h (v - u).grad L + h^2/2 (|grad L|^2 + v^T H v); frictionless and noise-free that is
    h^2 lambda times each mode's energy (the (1 + h^2 lambda) growth of explicit Euler)."""
    cfg = small("euler", "nesterov:3", "temperature", steps=20)
    h = cfg.dt
    for n, model, lam, theta, v, xi, _, _, w in _steps(cfg):
        u = (1 - model.scalar(n, Step.DECAY)) * v + model.scalar(n, Step.XI) * xi
        g = lam * theta
        exact = h * ((v - u) * g).sum(-1) + h * h / 2 * ((g * g).sum(-1) + (lam * v * v).sum(-1))
        torch.testing.assert_close(w, exact, rtol=1e-9, atol=1e-13)


def test_leapfrog_at_temperature_is_gibbs_for_the_shadow_inertia():
    """Derived here (section 8): B A B preserves exp(-I~/T) with I~ = I - (h^2/8)|grad L|^2, and so does the
    O step, so the stationary leapfrog chain on a quadratic has E[K] = dT/2 exactly (T_eff = T) and
    E[L] = sum T / (2 (1 - h^2 lambda / 4)); its stationary E[D] = E[Q] per step and E[W] = 0."""
    for dt, damping in [(0.3, 1.5), (0.5, 0.2), (1.0, 3.0)]:
        cfg = make(integrator="leapfrog", dt=dt, damping=damping, noise_model="temperature", temperature=0.4)
        assert theory.stationary_effective_temperature(cfg) == pytest.approx(0.4, rel=1e-13)
        lam = np.array(SPECTRUM)
        loss = (0.4 / (2 * (1 - dt * dt * lam / 4))).sum()
        assert theory.stationary(cfg)["loss"] == pytest.approx(loss, rel=1e-13)
    cfg = make(integrator="baoab", dt=0.5, damping=1.0, noise_model="temperature", temperature=0.4)
    assert abs(theory.stationary_effective_temperature(cfg) - 0.4) > 1e-3  # BAOAB's velocities are not


def test_batch_means_rejects_one_block():
    with pytest.raises(ValueError):
        ledger.batch_means(np.zeros(10), 64)


# --- exact expectations -----------------------------------------------------------------

def test_theory_injected_closed_forms():
    """E[Q] per step: 1/2 lr s^2 d (heavy ball, additive), 1/2 (1 - c^2) T d (O step at temperature T)."""
    d = len(SPECTRUM)
    hb = theory.ledger(make(integrator="heavy-ball", lr=0.05, momentum=0.9, noise=0.8, steps=30, record_every=10))
    np.testing.assert_allclose(hb["injected"], 0.5 * 0.05 * 0.8 ** 2 * d * hb["steps"], rtol=1e-13)
    cfg = make(integrator="baoab", dt=0.25, damping=1.0, noise_model="temperature", temperature=0.5, steps=30,
               record_every=10)
    ob = theory.ledger(cfg)
    c2 = math.exp(-2 * cfg.damping * cfg.dt)
    np.testing.assert_allclose(ob["injected"], 0.5 * (1 - c2) * 0.5 * d * ob["steps"], rtol=1e-13)


def test_theory_ledger_balances_and_matches_expected():
    for integrator in INTEGRATORS:
        cfg = make(integrator=integrator, lr=0.05, momentum_schedule="nesterov:3", noise_model="loss-scaled",
                   noise=1.0, dt=0.2, steps=37, record_every=5)
        th, ex = theory.ledger(cfg), theory.expected(cfg)
        np.testing.assert_allclose(th["inertia"], ex["inertia"], rtol=1e-12)
        np.testing.assert_allclose(th["inertia"] - th["inertia"][0],
                                   -th["dissipated"] + th["injected"] + th["residual"], rtol=1e-12, atol=1e-14)
        assert np.all(np.diff(th["dissipated"]) >= 0)


def test_theory_frictionless_noise_free_is_all_residual():
    th = theory.ledger(make(integrator="heavy-ball", momentum=1.0, lr=0.05, steps=20))
    assert np.all(th["dissipated"] == 0) and np.all(th["injected"] == 0)


MC_CASES = [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="additive", noise=0.8),
    dict(integrator="heavy-ball", lr=0.05, momentum=0.8, noise_model="temperature", temperature=0.3),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="additive", noise=0.5),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="temperature",
         temperature=0.3),
    dict(integrator="baoab", dt=0.25, damping=1.0, noise_model="temperature", temperature=0.5),
    dict(integrator="baoab", dt=0.25, momentum_schedule="nesterov:3", noise_model="additive", noise=0.4),
    dict(integrator="leapfrog", dt=0.2, damping=0.5, noise_model="temperature", temperature=0.4),
    dict(integrator="leapfrog", dt=0.2, damping=0.5, noise_model="additive", noise=0.3),
    # beyond the acceptance list: loss-scaled noise (E[Q] couples to E[L]) and Euler. (Strong loss-scaled
    # noise makes the terms heavy-tailed, multiplicative growth, and batch means then understate the error.)
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=1.5),
    dict(integrator="euler", dt=0.1, momentum_schedule="nesterov:3", noise_model="temperature", temperature=0.3),
]


@pytest.mark.parametrize("case", MC_CASES, ids=lambda c: f"{c['integrator']}-{c.get('momentum_schedule', 'constant')}"
                                                        f"-{c['noise_model']}")
def test_monte_carlo_ledger_matches_theory(case):
    """Cumulative means of D, Q (and W) within Z batch-means standard errors at every recorded step."""
    cfg = make(trajectories=4096, steps=60, record_every=15, seed=11, **case)
    run, th = ledger.simulate(cfg), theory.ledger(cfg)
    assert_identity(run)
    for key in ledger.TERMS:
        mean, sem = ledger.batch_means(getattr(run, key), BLOCK)
        assert np.all(mean[0] == 0) and th[key][0] == 0
        z = np.abs(mean[1:] - th[key][1:]) / sem[1:]
        assert np.all(z < Z), f"{key}: MC {mean} +- {sem}, theory {th[key]}, z {z}"


@pytest.mark.parametrize("case", [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.7),
    dict(integrator="baoab", dt=0.3, damping=1.5),
    dict(integrator="leapfrog", dt=0.3, damping=1.5),
], ids=lambda c: c["integrator"])
def test_stationary_effective_temperature(case):
    """Started at T_eff near the target, run past the transient; the time-averaged T_eff of late
    steps (per trajectory, then batch means over blocks) agrees with 2 E[K_inf] / d."""
    cfg = make(trajectories=2048, steps=100, record_every=10, seed=3, noise_model="temperature",
               temperature=0.4, init_theta_std=0.5, init_velocity_std=0.5, **case)
    exact = theory.stationary_effective_temperature(cfg)
    late = cfg.recorded_steps.index(50)
    th = theory.ledger(cfg)["effective_temperature"][late:]
    run = ledger.simulate(cfg)
    mean, sem = ledger.batch_means(run.effective_temperature[late:].mean(axis=0), BLOCK)
    assert np.abs(th - exact).max() < 0.05 * sem  # the transient is gone well below the resolution
    assert abs(mean - exact) < Z * sem, f"T_eff {mean:.5g} +- {sem:.2g}, exact stationary {exact:.5g}"


@pytest.mark.parametrize("record_every", [7, "log:5"])
@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_theory_ledger_composed_route_equals_substeps(integrator, record_every):
    """Constant schedules compose one affine map per recorded gap (E[sum D] carried as a fourth moment);
    it must equal the every-sub-step recursion (checked against Monte Carlo above) to rounding,
    for drawn spectra (several rows), a flat mode, an off-grid final step and log-spaced records."""
    for noise_model in ("additive", "temperature"):
        cfg = make(integrator=integrator, lr=0.05, momentum=0.8, dt=0.2, damping=0.5, noise=0.4, temperature=0.3,
                   noise_model=noise_model, steps=97, record_every=record_every)
        lam = np.array([[0.3, 1.0, 2.5], [0.0, 0.7, 1.9]])
        fused, slow = theory._ledger_time_invariant(cfg, lam), theory._ledger_substeps(cfg, lam)
        np.testing.assert_allclose(fused, slow, rtol=1e-12, atol=1e-14 * np.abs(slow).max())
        assert theory.ledger(cfg, spectra=lam)["dissipated"][-1] == pytest.approx(slow[-1, 2], rel=1e-12)


def test_summary_keys_and_the_identity_in_the_means():
    """The means satisfy the identity too (to 1e-9 relative): E[I_k] - E[I_0] = -E[D] + E[Q] + E[W]."""
    cfg = small("baoab", "constant", "temperature", trajectories=256)
    run = ledger.simulate(cfg)
    out = ledger.summary(run)
    assert set(out) == {"ledger.steps"} | {f"ledger.{name}_{stat}" for name in ledger.TERMS + ("effective_temperature",)
                                            for stat in ("mean", "sem")}
    change = run.inertia.mean(axis=1) - run.inertia[0].mean()
    split = -out["ledger.dissipated_mean"] + out["ledger.injected_mean"] + out["ledger.residual_mean"]
    scale = np.abs(run.inertia).mean() + np.abs(split).max()
    assert np.abs(change - split).max() <= 1e-9 * scale
    assert np.all(out["ledger.dissipated_sem"][1:] > 0)
