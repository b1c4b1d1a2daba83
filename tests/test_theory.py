"""inertia_gpu.theory against independent computations.

Every check here compares the exact second-moment theory with something
it does not share code with: a Monte Carlo of the CONVENTIONS.md dynamics
written out below in plain numpy (numpy's own generator, not
inertia_gpu.rng), scipy's Lyapunov solver, the closed-form invariants of
the integrators, scipy's ODE solver, a trapezoid rule.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import solve_discrete_lyapunov

from inertia_gpu import theory
from inertia_gpu.config import SimulationConfig

SPECTRUM = [0.3, 1.0, 2.5]


def make(**kw) -> SimulationConfig:
    base = dict(spectrum=SPECTRUM, init_theta_std=1.0, init_velocity_std=0.5)
    base.update(kw)
    return SimulationConfig(**base).validate()


# --- an independent Monte Carlo of docs/CONVENTIONS.md --------------------------------

def monte_carlo(cfg: SimulationConfig, lam: np.ndarray, n_traj: int, seed: int, record: list[int]) -> dict:
    """Per-trajectory (inertia, kinetic, loss, shadow) at the steps in `record`, numpy float64.

    lam: [d] shared or [n_traj, d] per trajectory.
    """
    rng = np.random.default_rng(seed)
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 1:
        lam = np.broadcast_to(lam, (n_traj, lam.size))
    d = lam.shape[1]
    x = cfg.init_theta_std * rng.standard_normal((n_traj, d))
    v = cfg.init_velocity_std * rng.standard_normal((n_traj, d))
    heavy = cfg.integrator == "heavy-ball"
    if heavy:
        v = -v / cfg.lr  # b
    R = cfg.nesterov_r
    h = cfg.dt

    def loss(x):
        return 0.5 * (lam * x * x).sum(axis=1)

    def observe(x, v):
        L = loss(x)
        if heavy:
            K = 0.5 * cfg.lr * (v * v).sum(axis=1)
            S = K + L + 0.5 * cfg.lr * (v * lam * x).sum(axis=1)
        else:
            K = 0.5 * (v * v).sum(axis=1)
            S = K + L - h * h / 8 * ((lam * x) ** 2).sum(axis=1)
        return np.stack([K + L, K, L, S])

    def sigma(x, gamma):  # continuous noise amplitude
        if cfg.noise_model == "additive":
            return cfg.noise
        if cfg.noise_model == "temperature":
            return math.sqrt(2 * gamma * cfg.temperature)
        return cfg.noise * np.sqrt(loss(x))[:, None]

    def ou(x, v, gamma):
        var = (1 - math.exp(-2 * gamma * h)) / (2 * gamma) if gamma > 0 else h
        return math.exp(-gamma * h) * v + sigma(x, gamma) * math.sqrt(var) * rng.standard_normal((n_traj, d))

    out = {}
    if 0 in record:
        out[0] = observe(x, v)
    for n in range(max(record)):
        if heavy:
            mu = cfg.momentum if R is None else n / (n + R)
            if cfg.noise_model == "additive":
                s = cfg.noise
            elif cfg.noise_model == "temperature":
                s = math.sqrt(2 * (1 - mu) * cfg.temperature / cfg.lr)
            else:
                s = cfg.noise * np.sqrt(loss(x))[:, None]
            v = mu * v + lam * x + s * rng.standard_normal((n_traj, d))
            x = x - cfg.lr * v
        else:
            gamma = cfg.damping if R is None else R / ((n + R) * h)
            if cfg.integrator == "euler":
                kick = sigma(x, gamma) * math.sqrt(h) * rng.standard_normal((n_traj, d))
                x, v = x + h * v, v - h * lam * x - h * gamma * v + kick
            elif cfg.integrator == "leapfrog":
                v = v - h / 2 * lam * x
                x = x + h * v
                v = v - h / 2 * lam * x
                v = ou(x, v, gamma)
            else:  # baoab
                v = v - h / 2 * lam * x
                x = x + h / 2 * v
                v = ou(x, v, gamma)
                x = x + h / 2 * v
                v = v - h / 2 * lam * x
        if n + 1 in record:
            out[n + 1] = observe(x, v)
    return out


MC_CASES = [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="additive", noise=0.8),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="additive", noise=0.5),
    dict(integrator="heavy-ball", lr=0.05, momentum=0.8, noise_model="temperature", temperature=0.3),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:3", noise_model="temperature", temperature=0.3),
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=1.5),
    dict(integrator="heavy-ball", lr=0.05, momentum_schedule="nesterov:2", noise_model="loss-scaled", noise=1.5),
    dict(integrator="leapfrog", dt=0.2, damping=0.5, noise_model="temperature", temperature=0.4),
    dict(integrator="leapfrog", dt=0.2, damping=0.0, noise_model="additive", noise=0.3),
    dict(integrator="leapfrog", dt=0.3, damping=0.3, noise_model="loss-scaled", noise=1.5, init_velocity_std=2.0),
    dict(integrator="euler", dt=0.1, damping=0.4, noise_model="additive", noise=0.5),
    dict(integrator="euler", dt=0.1, momentum_schedule="nesterov:3", noise_model="temperature", temperature=0.3),
    # large steps and velocities, so that where L is evaluated (before the drift) shows at step 1
    dict(integrator="euler", dt=0.3, damping=1.5, noise_model="loss-scaled", noise=2.0, init_velocity_std=2.0),
    dict(integrator="baoab", dt=0.25, damping=1.0, noise_model="temperature", temperature=0.5),
    dict(integrator="baoab", dt=0.25, momentum_schedule="nesterov:3", noise_model="additive", noise=0.4),
    dict(integrator="baoab", dt=0.4, damping=0.6, noise_model="loss-scaled", noise=1.5, init_velocity_std=2.0),
]
RECORD = [1, 7, 25, 60]


def _assert_z(cfg, lam_mc, theory_result, n_traj, seed, record=RECORD):
    sim = monte_carlo(cfg, lam_mc, n_traj, seed, record)
    for n in record:
        row = theory_result["steps"].tolist().index(n)
        for i, key in enumerate(theory.KEYS):
            samples = sim[n][i]
            sem = samples.std(ddof=1) / math.sqrt(n_traj)
            z = abs(samples.mean() - theory_result[key][row]) / sem
            assert z < 4, (f"{key} at step {n}: MC {samples.mean():.6g} +- {sem:.3g}, "
                           f"theory {theory_result[key][row]:.6g}")


@pytest.mark.parametrize("case", MC_CASES, ids=lambda c: f"{c['integrator']}-{c.get('momentum_schedule', 'constant')}"
                                                        f"-{c['noise_model']}")
def test_expected_matches_independent_monte_carlo(case):
    cfg = make(steps=max(RECORD), **case)
    _assert_z(cfg, np.array(SPECTRUM), theory.expected(cfg), n_traj=20_000, seed=12345)


@pytest.mark.parametrize("case", [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise=1.0),
    dict(integrator="baoab", dt=0.25, damping=0.5, noise=1.0),
    # strong enough that spreading one row's loss-scaled noise over all rows would be 5-8 sem off
    dict(integrator="euler", dt=0.2, damping=1.0, noise=1.5),
], ids=lambda c: c["integrator"])
def test_expected_with_drawn_spectra_matches_monte_carlo(case):
    """Per-trajectory eigenvalues: theory averages over the rows it is given; loss-scaled noise
    couples the modes of one row (one trajectory) only."""
    n_traj, d = 20_000, 2
    spectra = np.random.default_rng(7).uniform(0.02, 3.0, (n_traj, d))
    cfg = make(spectrum=None, spectrum_distribution="uniform:0.02,3", dim=d, noise_model="loss-scaled",
               steps=max(RECORD), **case)
    _assert_z(cfg, spectra, theory.expected(cfg, spectra=spectra), n_traj, seed=99)


def test_record_every_and_shapes():
    cfg = make(steps=50, record_every=10, noise=0.3)
    full = theory.expected(make(steps=50, noise=0.3))
    sub = theory.expected(cfg)
    assert sub["steps"].tolist() == [0, 10, 20, 30, 40, 50]
    for key in theory.KEYS:
        assert sub[key].shape == (6,)
        np.testing.assert_allclose(sub[key], full[key][::10], rtol=1e-14)


def test_not_quadratic_raises():
    cfg = SimulationConfig(problem="double-well", dim=2).validate()
    with pytest.raises(ValueError, match="quadratic"):
        theory.expected(cfg)
    with pytest.raises(ValueError, match="quadratic"):
        theory.stationary(cfg)


# --- conservation ----------------------------------------------------------------------

def test_frictionless_heavy_ball_conserves_shadow_inertia():
    cfg = make(lr=0.01, momentum=1.0, noise=0.0, steps=10_000, spectrum=[3.0, 0.7, 1.9])
    e = theory.expected(cfg)
    shadow, inertia = e["shadow_inertia"], e["inertia"]
    assert np.max(np.abs(shadow / shadow[0] - 1)) < 1e-12
    assert (inertia.max() - inertia.min()) / inertia.mean() > 0.05  # I itself oscillates


def test_frictionless_leapfrog_conserves_shadow_inertia():
    cfg = make(integrator="leapfrog", dt=0.3, damping=0.0, noise=0.0, steps=10_000)
    e = theory.expected(cfg)
    assert np.max(np.abs(e["shadow_inertia"] / e["shadow_inertia"][0] - 1)) < 1e-12
    assert (e["inertia"].max() - e["inertia"].min()) / e["inertia"].mean() > 0.01


def test_frictionless_euler_energy_grows_by_one_plus_h2_lambda():
    """Explicit Euler on a quadratic: per mode E[v^2 + lambda x^2] grows exactly by (1 + h^2 lambda) per step."""
    lam, h, n = 1.7, 0.05, 400
    cfg = make(integrator="euler", dt=h, damping=0.0, noise=0.0, steps=n, spectrum=[lam])
    e = theory.expected(cfg)
    np.testing.assert_allclose(e["inertia"][-1] / e["inertia"][0], (1 + h * h * lam) ** n, rtol=1e-12)


# --- stationary laws -------------------------------------------------------------------

STATIONARY_CASES = [
    dict(integrator="heavy-ball", lr=0.05, momentum=0.9, noise_model="additive", noise=0.8),
    dict(integrator="heavy-ball", lr=0.2, momentum=0.5, noise_model="temperature", temperature=0.3),
    dict(integrator="leapfrog", dt=0.3, damping=0.5, noise_model="temperature", temperature=0.4),
    dict(integrator="euler", dt=0.1, damping=0.7, noise_model="additive", noise=0.5),
    dict(integrator="baoab", dt=0.4, damping=1.5, noise_model="additive", noise=0.6),
]


@pytest.mark.parametrize("case", STATIONARY_CASES, ids=lambda c: f"{c['integrator']}-{c['noise_model']}")
def test_stationary_equals_long_recursion(case):
    cfg = make(steps=6000, record_every=6000, **case)
    st = theory.stationary(cfg)
    e = theory.expected(cfg)
    for key in theory.KEYS:
        assert e[key][-1] == pytest.approx(st[key], rel=1e-10)


def test_stationary_heavy_ball_matches_scipy_lyapunov():
    """Independent: the heavy-ball matrix of THEORY.md section 3 and scipy's solver, mode by mode."""
    lr, mu, s = 0.05, 0.85, 0.7
    cfg = make(lr=lr, momentum=mu, noise=s)
    st = theory.stationary(cfg)
    loss = kinetic = cross = 0.0
    for lam in SPECTRUM:
        M = np.array([[1 - lr * lam, -lr * mu], [lam, mu]])
        e = np.array([-lr, 1.0])
        S = solve_discrete_lyapunov(M, s * s * np.outer(e, e))
        loss += 0.5 * lam * S[0, 0]
        kinetic += 0.5 * lr * S[1, 1]
        cross += 0.5 * lr * lam * S[0, 1]
    assert st["loss"] == pytest.approx(loss, rel=1e-10)
    assert st["kinetic"] == pytest.approx(kinetic, rel=1e-10)
    assert st["shadow_inertia"] == pytest.approx(loss + kinetic + cross, rel=1e-10)


def test_stationary_integrator_invariants_at_temperature():
    """Known exact facts at finite step size (no small-h limit needed).

    Leapfrog (BABO): velocity Verlet preserves exp(-shadow/T) and the O-step keeps v ~ N(0, T),
    so E[K] = dT/2 and E[shadow] = dT exactly. BAOAB samples the configuration of a harmonic
    potential exactly: E[L] = dT/2.
    """
    d, T = len(SPECTRUM), 0.37
    lf = theory.stationary(make(integrator="leapfrog", dt=0.5, damping=0.8, noise_model="temperature", temperature=T))
    assert lf["kinetic"] == pytest.approx(d * T / 2, rel=1e-12)
    assert lf["shadow_inertia"] == pytest.approx(d * T, rel=1e-12)
    ba = theory.stationary(make(integrator="baoab", dt=0.5, damping=0.8, noise_model="temperature", temperature=T))
    assert ba["loss"] == pytest.approx(d * T / 2, rel=1e-12)


def test_heavy_ball_temperature_approaches_gibbs_with_order_h_bias():
    """mu = 1 - gamma h, h = sqrt(lr): E[I_inf] -> dT as lr -> 0, bias O(h) (ratio sqrt(10) per decade of lr)."""
    d, T, gamma = len(SPECTRUM), 0.2, 0.5
    bias = []
    for lr in [1e-3, 1e-4, 1e-5, 1e-6]:
        st = theory.stationary(make(lr=lr, momentum=1 - gamma * math.sqrt(lr), noise_model="temperature",
                                    temperature=T))
        bias.append(st["inertia"] / (d * T) - 1)
    assert abs(bias[-1]) < 2e-4
    ratios = np.array(bias[:-1]) / np.array(bias[1:])
    np.testing.assert_allclose(ratios, math.sqrt(10), rtol=0.15)


def test_stationary_loss_scaled_zero_when_stable_and_raises_when_not():
    stable = make(lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=1.0, steps=4000, record_every=4000)
    st = theory.stationary(stable)
    assert st == {key: 0.0 for key in theory.KEYS}
    assert theory.expected(stable)["inertia"][-1] < 1e-20
    with pytest.raises(ValueError, match="mean-square unstable"):
        theory.stationary(make(lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=20.0))

    def raises(noise):
        try:
            theory.stationary(make(lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=noise))
        except ValueError:
            return True
        return False

    lo, hi = 1.0, 20.0  # the threshold the criterion claims ...
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if raises(mid) else (mid, hi)
    for factor, grows in [(0.97, False), (1.03, True)]:  # ... and what the recursion does on either side
        cfg = make(lr=0.05, momentum=0.9, noise_model="loss-scaled", noise=factor * lo, steps=20_000,
                   record_every=10_000)
        inertia = theory.expected(cfg)["inertia"]
        assert (inertia[2] > inertia[1]) == grows


def test_stationary_needs_damping_and_constant_schedule():
    with pytest.raises(ValueError, match="momentum < 1"):
        theory.stationary(make(momentum=1.0, noise=0.1))
    with pytest.raises(ValueError, match="damping"):
        theory.stationary(make(integrator="leapfrog", damping=0.0, noise=0.1))
    with pytest.raises(ValueError, match="constant schedule"):
        theory.stationary(make(momentum_schedule="nesterov:3", noise=0.1))


# --- decay rates -----------------------------------------------------------------------

def _log_slope(values, n1, n2):
    return (math.log(values[n1]) - math.log(values[n2])) / (n2 - n1)


@pytest.mark.parametrize("case", [
    dict(integrator="heavy-ball", lr=0.1, momentum=0.3, spectrum=[0.2, 1.0]),  # real eigenvalues
    dict(integrator="leapfrog", dt=0.1, damping=3.0, spectrum=[0.5, 1.0]),  # overdamped
    dict(integrator="euler", dt=0.1, damping=2.0, spectrum=[0.5, 1.0]),
    dict(integrator="baoab", dt=0.2, damping=2.5, spectrum=[0.4, 2.0]),
])
def test_decay_rate_matches_slope_of_recursion(case):
    """Noise-free, so E[I_inf] = 0 and E[I] itself can be followed down to 1e-100 without cancellation."""
    probe = make(noise=0.0, **case)
    rate = theory.decay_rate(probe)["per_step"]
    n2 = int(230 / rate)
    n1 = n2 - int(2 * math.pi / rate) - 50  # several e-folds apart: oscillating terms average out below 1e-6
    inertia = theory.expected(make(noise=0.0, steps=n2, **case))["inertia"]
    assert inertia[n2] > 0
    assert _log_slope(inertia, n1, n2) == pytest.approx(rate, rel=1e-4)


def test_decay_rate_with_noise_is_the_rate_of_the_gap_to_stationarity():
    cfg = make(lr=0.1, momentum=0.3, noise=0.4, spectrum=[0.2, 1.0], steps=400)
    rate = theory.decay_rate(cfg)["per_step"]
    gap = theory.expected(cfg)["inertia"] - theory.stationary(cfg)["inertia"]
    n2 = int(14 / rate)  # gap still 1e-6 of E[I_inf]: far above rounding
    assert _log_slope(gap, n2 // 2, n2) == pytest.approx(rate, rel=1e-4)


@pytest.mark.parametrize("case", [
    dict(integrator="heavy-ball", lr=0.1, momentum=0.9, spectrum=[0.2, 1.0]),
    dict(integrator="leapfrog", dt=0.05, damping=0.2, spectrum=[1.0, 4.0]),
])
def test_decay_rate_underdamped_envelope(case):
    """Complex eigenvalues: E[I] oscillates under the envelope rho^{2n}; E[I] e^{rate n} neither grows
    nor shrinks (a rate off by 1 % would change it by e^{2.3} over this window)."""
    probe = make(noise=0.0, **case)
    rate = theory.decay_rate(probe)["per_step"]
    n2 = int(230 / rate)
    window = n2 // 4  # many oscillation periods
    inertia = theory.expected(make(noise=0.0, steps=n2, **case))["inertia"]
    scaled = inertia * np.exp(rate * np.arange(n2 + 1))
    early, late = scaled[window:2 * window].max(), scaled[n2 - window:].max()
    assert late == pytest.approx(early, rel=1e-2)


def test_decay_rate_per_time_tends_to_continuous_rate():
    for damping in [0.5, 3.0]:  # under- and overdamped for the slowest mode
        cont = theory.decay_rate_continuous(damping, SPECTRUM)
        prev = None
        for h in [0.02, 0.01, 0.005]:
            disc = theory.decay_rate(make(integrator="leapfrog", dt=h, damping=damping))["per_time"]
            err = abs(disc - cont)
            assert err < 2e-3 * cont
            if prev is not None:
                assert err < prev or err < 1e-12
            prev = err


def test_decay_rate_loss_scaled_matches_coupled_recursion():
    cfg = make(lr=0.1, momentum=0.3, noise_model="loss-scaled", noise=2.0, spectrum=[0.2, 1.0], steps=3000)
    rate = theory.decay_rate(cfg)["per_step"]
    plain = theory.decay_rate(make(lr=0.1, momentum=0.3, noise=0.1, spectrum=[0.2, 1.0]))["per_step"]
    assert rate < plain  # noise proportional to L slows the decay
    n2 = int(230 / rate)
    cfg.steps = n2
    inertia = theory.expected(cfg)["inertia"]  # E[I_inf] = 0
    assert _log_slope(inertia, n2 // 2, n2) == pytest.approx(rate, rel=1e-4)


def test_decay_rate_continuous_peaks_at_critical_damping():
    for lam in [0.25, 1.0, 3.0]:
        critical = 2 * math.sqrt(lam)
        gammas = np.sort(np.append(np.linspace(0.01, 4 * critical, 4001), critical))
        rates = np.array([theory.decay_rate_continuous(g, lam) for g in gammas])
        assert gammas[np.argmax(rates)] == critical
        assert rates.max() == pytest.approx(critical, rel=1e-12)
        over = gammas > critical  # overdamped: gamma - sqrt(gamma^2 - 4 lambda) < gamma
        np.testing.assert_allclose(rates[over], gammas[over] - np.sqrt(gammas[over] ** 2 - 4 * lam), rtol=1e-12)
        under = gammas < 2 * math.sqrt(lam)
        np.testing.assert_allclose(rates[under], gammas[under], rtol=1e-12)
    assert theory.decay_rate_continuous(1.0, [0.1, 1.0, 5.0]) == pytest.approx(1 - math.sqrt(1 - 0.4))


# --- the continuous moment ODE ---------------------------------------------------------

def test_continuous_moments_constant_gamma_against_solve_ivp_and_gibbs():
    lam, gamma, sigma = np.array([0.5, 2.0]), 0.7, 0.6
    t = np.array([0.0, 0.5, 3.0, 10.0])
    got = theory.continuous_moments(lam, gamma, sigma, t, a0=1.0, b0=0.1, c0=0.3)

    def rhs(_, y):  # an independent write-up of THEORY.md section 1
        a, b, c = y.reshape(3, 2)
        return np.concatenate([2 * b, c - lam * a - gamma * b, -2 * lam * b - 2 * gamma * c + sigma ** 2])

    y0 = np.concatenate([[1.0, 1.0], [0.1, 0.1], [0.3, 0.3]])
    sol = solve_ivp(rhs, (0, 10), y0, t_eval=t, rtol=1e-12, atol=1e-14, method="DOP853")
    a, c = sol.y[:2], sol.y[4:]
    np.testing.assert_allclose(got["inertia"], 0.5 * (c.sum(0) + (lam[:, None] * a).sum(0)), rtol=1e-9)
    T = sigma ** 2 / (2 * gamma)
    late = theory.continuous_moments(lam, gamma, sigma, [200.0], a0=1.0, b0=0.1, c0=0.3)
    assert late["inertia"][0] == pytest.approx(2 * T, rel=1e-12)
    assert late["kinetic"][0] == pytest.approx(T, rel=1e-12)


@pytest.mark.parametrize("integrator, order", [("leapfrog", 1), ("baoab", 2), ("euler", 1)])
def test_continuous_moments_is_the_small_step_limit_of_the_chains(integrator, order):
    """The chains converge to the moment ODE as h -> 0 with their weak order: BABO and Euler
    first order for E[I] (the O-step comes after a full kick), BAOAB second order."""
    lam, gamma, sigma, t_end = [0.5, 2.0], 0.7, 0.5, 5.0
    exact = theory.continuous_moments(lam, gamma, sigma, [t_end], a0=1.0, b0=0.0, c0=0.25)["inertia"][0]
    errs = []
    for h in [0.005, 0.0025, 0.00125]:
        n = int(round(t_end / h))
        cfg = make(integrator=integrator, spectrum=lam, dt=h, damping=gamma, noise=sigma, steps=n,
                   record_every=n, init_velocity_std=0.5)
        errs.append(theory.expected(cfg)["inertia"][-1] - exact)
    assert abs(errs[-1]) < 0.005 * exact
    np.testing.assert_allclose(errs[1] / errs[2], 2.0 ** order, rtol=0.03)


def test_nesterov_damping_gives_power_law_envelope():
    """gamma = r/t: E[I] t^r stays bounded and level (no trend) over a decade of late times."""
    for r in [2.0, 3.0]:
        p = theory.power_law_exponent_continuous(r)
        assert p == r
        t = np.linspace(50.0, 800.0, 20001)
        e = theory.continuous_moments([1.0], lambda s: r / s, 0.0, t, a0=1.0, b0=0.0, c0=0.0, t0=1.0)
        scaled = e["inertia"] * t ** p
        early, late = scaled[(t > 50) & (t < 100)], scaled[(t > 400) & (t < 800)]
        assert late.max() == pytest.approx(early.max(), rel=0.05)
        # and a wrong exponent visibly trends
        wrong = e["inertia"] * t ** (p - 0.5)
        assert wrong[(t > 400)].max() / wrong[(t > 50) & (t < 100)].max() < 0.5


def test_nesterov_heavy_ball_power_law():
    """Discrete nesterov:r heavy ball (gamma_n ~ r/t with t = n h): E[I] n^r levels off."""
    r, lr = 3.0, 0.01
    cfg = make(lr=lr, momentum_schedule="nesterov:3", noise=0.0, spectrum=[1.0], steps=40_000,
               init_velocity_std=0.0)
    e = theory.expected(cfg)
    n = np.arange(len(e["inertia"]))
    scaled = e["inertia"][1:] * n[1:] ** r
    band1, band2 = scaled[5000:10000], scaled[20000:40000]
    assert band2.max() == pytest.approx(band1.max(), rel=0.05)


# --- quadrature ------------------------------------------------------------------------

def test_quadrature_quadratic_is_equipartition():
    for lam, T, d in [(1.0, 0.3, 3), (4.0, 2.0, 1), (0.2, 0.01, 5)]:
        assert theory.stationary_loss_quadrature("quadratic", T, d, lam=lam) == pytest.approx(d * T / 2, rel=1e-10)


def test_quadrature_double_well_low_temperature_limit():
    """Near the minima (curvature 2) the well is harmonic: E[L]/d -> T/2, with O(T) relative correction."""
    for T in [1e-3, 1e-4]:
        got = theory.stationary_loss_quadrature("double-well", T, 2)
        assert abs(got / (2 * T / 2) - 1) < 5 * T


def test_quadrature_double_well_against_trapezoid():
    for T in [0.1, 1.0, 5.0]:
        x = np.linspace(-12, 12, 400_001)
        L = 0.25 * (x * x - 1) ** 2
        w = np.exp(-L / T)
        ref = np.trapezoid(L * w, x) / np.trapezoid(w, x)
        assert theory.stationary_loss_quadrature("double-well", T, 3) == pytest.approx(3 * ref, rel=1e-9)


def test_quadrature_rejects_unknown_potential():
    with pytest.raises(ValueError, match="potential"):
        theory.stationary_loss_quadrature("rosenbrock", 1.0, 2)


# --- the two evaluation routes agree ----------------------------------------------------

@pytest.mark.parametrize("integrator", ["heavy-ball", "leapfrog", "euler", "baoab"])
@pytest.mark.parametrize("record_every", [1, 7])
def test_fused_time_invariant_route_equals_substeps(integrator, record_every):
    """Constant schedules run as one composed affine map per record interval; the sub-step route
    (used for nesterov and loss-scaled) must give the same numbers."""
    cfg = make(integrator=integrator, lr=0.05, momentum=0.9, dt=0.2, damping=0.4, noise=0.3, steps=700,
               record_every=record_every)
    lam = np.array([SPECTRUM])
    fused = theory._expected_time_invariant(cfg, lam)
    substeps = theory._expected_substeps(cfg, lam)
    np.testing.assert_allclose(fused, substeps, rtol=1e-11)
    np.testing.assert_array_equal(np.stack([theory.expected(cfg)[key] for key in theory.KEYS], -1),
                                  fused if record_every > 1 else substeps)


def test_flat_direction_lambda_zero():
    """lambda = 0: x wanders freely but adds nothing to L; b is an AR(1) with var s^2 / (1 - mu^2),
    so the mode contributes K = lr/2 * 2 (1 - mu) T / lr / (1 - mu^2) = T / (1 + mu) exactly."""
    lr, mu, T = 0.05, 0.8, 0.3
    with_flat = make(spectrum=[0.0, 1.0], lr=lr, momentum=mu, noise_model="temperature", temperature=T,
                     steps=3000, record_every=3000)
    without = make(spectrum=[1.0], lr=lr, momentum=mu, noise_model="temperature", temperature=T)
    a, b = theory.stationary(with_flat), theory.stationary(without)
    assert a["kinetic"] - b["kinetic"] == pytest.approx(T / (1 + mu), rel=1e-12)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    long_run = theory.expected(with_flat)
    for key in theory.KEYS:
        assert long_run[key][-1] == pytest.approx(a[key], rel=1e-10)
    rate = theory.decay_rate(make(spectrum=[0.0], lr=lr, momentum=mu))["per_step"]
    assert rate == pytest.approx(-2 * math.log(mu), rel=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "nesterov:3"])
@pytest.mark.parametrize("record_every", ["log:7", 7])
def test_expected_at_any_recorded_set_equals_the_every_step_curve(schedule, record_every):
    """Log-spaced and off-grid recorded sets (the final step is always recorded) read the exact
    curve at exactly those steps: compared with the every-step curve, an independent path."""
    import dataclasses
    base = SimulationConfig(spectrum=[0.3, 2.0], lr=0.05, momentum=0.8, noise=0.4, steps=250,
                            momentum_schedule=schedule, record_every=record_every).validate()
    every = theory.expected(dataclasses.replace(base, record_every=1))
    got = theory.expected(base)
    rows = np.asarray(base.recorded_steps)
    assert rows[0] == 0 and rows[-1] == 250 and len(rows) < 251
    np.testing.assert_array_equal(got["steps"], rows)
    for key in ("inertia", "kinetic", "loss", "shadow_inertia"):
        np.testing.assert_allclose(got[key], every[key][rows], rtol=1e-12, atol=0)
