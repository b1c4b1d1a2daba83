"""Theory is code: exact expectations of the discrete chains on quadratic losses.

For a quadratic L = 1/2 sum_i lambda_i theta_i^2 every integrator of
docs/CONVENTIONS.md is, per mode, a linear map of the state z = (x, b)
(heavy ball) or z = (x, v) (continuous integrators) plus an independent
Gaussian kick. The per-mode second-moment matrix Sigma = E[z z^T] then
evolves exactly, with no discretisation error of its own:

    linear sub-step  z <- A z        Sigma <- A Sigma A^T
    noise sub-step   v <- v + s xi   Sigma <- Sigma + E[s^2] e e^T

`expected` runs exactly the sub-steps of CONVENTIONS.md on Sigma,
vectorised over modes (numpy float64), so E[inertia] etc. are known at
every step for every schedule and noise model. Loss-scaled noise
(s = c sqrt(L(theta)) times an independent normal) is still exact:
E[s^2 xi^2] = c^2 E[L], and E[L] = sum_modes 1/2 lambda Sigma_xx of the
same trajectory's spectrum at that sub-step, which couples the modes.

Also here: the stationary law of the chains (discrete Lyapunov equation),
their exact asymptotic decay rate, the continuous-time moment ODE of
THEORY.md section 1 and the Gibbs quadrature of separable potentials.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .config import SimulationConfig

KEYS = ("inertia", "kinetic", "loss", "shadow_inertia")


# --- the per-mode chain ---------------------------------------------------------------

def _resolve(config: SimulationConfig, spectra) -> tuple[SimulationConfig, np.ndarray]:
    """The config (resolved) and the eigenvalues as a float64 [M, d] array."""
    if config.problem != "quadratic":
        raise ValueError(f"exact theory needs --problem quadratic, not {config.problem!r} "
                         "(separable potentials: see stationary_loss_quadrature)")
    if spectra is None:
        if config.spectrum is None:
            if config.spectrum_distribution is not None:
                raise ValueError("drawn spectra (--spectrum-dist): pass the drawn eigenvalues as spectra=[M, d]")
            config = dataclasses.replace(config).validate()
        lam = np.asarray(config.spectrum, dtype=np.float64)[None, :]
    else:
        lam = np.asarray(spectra, dtype=np.float64)
        if lam.ndim == 1:
            lam = lam[None, :]
        if lam.ndim != 2 or lam.size == 0:
            raise ValueError(f"spectra: expected an array [M, d], got shape {np.shape(spectra)}")
        if config.dim is not None and lam.shape[1] != config.dim:
            raise ValueError(f"spectra: {lam.shape[1]} eigenvalues per row, but --dim is {config.dim}")
    if np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("spectra: eigenvalues must be finite and >= 0")
    return config, lam


@dataclass
class _Moments:
    """Per-mode second moments xx = E x^2, xv = E x v, vv = E v^2, arrays [M, d] (v is b for heavy ball)."""
    xx: np.ndarray
    xv: np.ndarray
    vv: np.ndarray

    def kick(self, c):
        """v <- v + c x:  vv += c (2 xv + c xx),  xv += c xx."""
        cxx = c * self.xx
        u = self.xv + self.xv
        u += cxx
        u *= c
        self.vv += u
        self.xv += cxx

    def drift(self, c):
        """x <- x + c v:  xx += c (2 xv + c vv),  xv += c vv."""
        cvv = c * self.vv
        u = self.xv + self.xv
        u += cvv
        u *= c
        self.xx += u
        self.xv += cvv

    def scale_v(self, a):
        """v <- a v."""
        self.xv *= a
        self.vv *= a * a


def _initial(config: SimulationConfig, lam: np.ndarray) -> _Moments:
    var_v = config.init_velocity_std ** 2
    if not config.continuous:
        var_v = var_v / config.lr ** 2  # b_0 = -v_0 / lr
    shape = lam.shape
    return _Moments(np.full(shape, config.init_theta_std ** 2), np.zeros(shape), np.full(shape, var_v))


def _momentum(config: SimulationConfig, n: int) -> float:
    r = config.nesterov_r
    return config.momentum if r is None else n / (n + r)


def _damping(config: SimulationConfig, n: int) -> float:
    r = config.nesterov_r
    return config.damping if r is None else r / ((n + r) * config.dt)


def _ou_variance_factor(gamma: float, h: float) -> float:
    """(1 - e^{-2 gamma h}) / (2 gamma), h at gamma = 0: the O-step's c2^2 / sigma^2."""
    return -math.expm1(-2.0 * gamma * h) / (2.0 * gamma) if gamma > 0 else h


class _Chain:
    """One config's per-step sub-step sequence acting on _Moments."""

    def __init__(self, config: SimulationConfig, lam: np.ndarray):
        self.config = config
        self.lam = lam
        self.half_lam = 0.5 * lam
        h = config.dt
        self.kick_half = -0.5 * h * lam  # v -= h/2 grad L
        self.kick_full = -h * lam
        self.h2_lam = h * h * lam
        self.lam_sq = lam * lam
        self.dissipated = self.injected = None  # cumulative E[D], E[Q] per row, once `ledger` turns them on

    def mean_loss(self, m: _Moments) -> np.ndarray:
        """E[L] per trajectory (row), shape [M, 1]."""
        return (self.half_lam * m.xx).sum(axis=1, keepdims=True)

    def noise_var(self, m: _Moments, friction: float, factor: float):
        """E[s^2] of the injected noise (times factor): heavy ball s^2, continuous sigma^2 * factor."""
        cfg = self.config
        if cfg.noise_model == "additive":
            return cfg.noise ** 2 * factor
        if cfg.noise_model == "temperature":
            return 2.0 * friction * cfg.temperature * factor
        return cfg.noise ** 2 * factor * self.mean_loss(m)  # loss-scaled: c^2 E[L] at this sub-step

    def account(self, m: _Moments, decay: float, q) -> None:
        """The ledger of a friction v -> decay v then a noise kick of variance q per mode (the ledger on):
        E[D] = (1 - decay^2) E[K], E[Q] = E[K of the kick] (independent of v), per row."""
        if self.dissipated is None:
            return
        half = 0.5 if self.config.continuous else 0.5 * self.config.lr  # K = 1/2 v^2 | lr/2 b^2
        self.dissipated += (1.0 - decay * decay) * half * m.vv.sum(axis=1)
        self.injected += half * self.lam.shape[1] * np.broadcast_to(q, (self.lam.shape[0], 1))[:, 0]

    def ou(self, m: _Moments, gamma: float):
        h = self.config.dt
        q = self.noise_var(m, gamma, _ou_variance_factor(gamma, h))  # before the v scaling: L uses theta only
        c = math.exp(-gamma * h)
        self.account(m, c, q)
        m.scale_v(c)
        m.vv += q

    def step(self, m: _Moments, n: int):
        cfg = self.config
        if cfg.integrator == "heavy-ball":
            mu = _momentum(cfg, n)
            q = self.noise_var(m, (1.0 - mu) / cfg.lr, 1.0)  # L before the step
            self.account(m, mu, q)
            m.scale_v(mu)          # b <- mu b
            m.kick(self.lam)       # b <- b + grad L
            m.vv += q              #      + s xi
            m.drift(-cfg.lr)       # theta <- theta - lr b
            return
        h = cfg.dt
        gamma = _damping(cfg, n)
        if cfg.integrator == "euler":
            q = self.noise_var(m, gamma, h)  # sigma^2 h with L(theta) before the step
            self.account(m, 1.0 - h * gamma, q)
            # x' = x + h v;  v' = (1 - h gamma) v - h lambda x = (1 - h gamma + h^2 lambda) v - h lambda x'
            m.drift(h)
            m.scale_v(self.h2_lam + (1.0 - h * gamma))
            m.kick(self.kick_full)
            m.vv += q
        elif cfg.integrator == "leapfrog":  # B A B O
            m.kick(self.kick_half)
            m.drift(h)
            m.kick(self.kick_half)
            self.ou(m, gamma)
        else:  # baoab: B A O A B
            m.kick(self.kick_half)
            m.drift(0.5 * h)
            self.ou(m, gamma)
            m.drift(0.5 * h)
            m.kick(self.kick_half)

    def observe(self, m: _Moments) -> tuple[float, float, float, float]:
        return _observe(self.config, self.lam, m.xx, m.xv, m.vv, self.lam_sq)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not np.dot: BLAS threads on a busy machine turn a 100 us reduction into milliseconds
    return np.einsum("i,i->", a, b)


def _observe(config: SimulationConfig, lam: np.ndarray, xx, xv, vv, lam_sq=None) -> tuple[float, float, float, float]:
    """Mean over rows of E[(inertia, kinetic, loss, shadow_inertia)] from per-mode moments shaped like lam."""
    rows = lam.shape[0]
    lam_sq = lam * lam if lam_sq is None else lam_sq
    lam, lam_sq, xx, xv, vv = (np.ravel(a) for a in (lam, lam_sq, xx, xv, vv))
    loss = 0.5 * float(_dot(lam, xx)) / rows
    if config.continuous:
        kinetic = 0.5 * float(vv.sum()) / rows
        correction = -(config.dt ** 2 / 8.0) * float(_dot(lam_sq, xx)) / rows
    else:
        kinetic = 0.5 * config.lr * float(vv.sum()) / rows
        correction = 0.5 * config.lr * float(_dot(lam, xv)) / rows
    inertia = kinetic + loss
    return inertia, kinetic, loss, inertia + correction


def expected(config: SimulationConfig, spectra=None) -> dict:
    """Exact E[inertia], E[kinetic], E[loss], E[shadow_inertia] at `config.recorded_steps`.

    spectra: optional [M, d] eigenvalues, one row per trajectory (drawn spectra);
    the result is the mean over the rows. Default: config.spectrum.
    Returns numpy float64 arrays keyed by KEYS, plus "steps".
    """
    config, lam = _resolve(config, spectra)
    if config.nesterov_r is None and config.noise_model != "loss-scaled" and len(config.recorded_steps) <= config.steps:
        out = _expected_time_invariant(config, lam)  # per step no faster than the sub-steps; wins by skipping
    else:
        out = _expected_substeps(config, lam)
    result = {key: out[:, i].copy() for i, key in enumerate(KEYS)}
    result["steps"] = np.asarray(config.recorded_steps)
    return result


LEDGER_KEYS = ("dissipated", "injected", "residual")


def ledger(config: SimulationConfig, spectra=None) -> dict:
    """Exact cumulative E[D], E[Q], E[W] since step 0 at `config.recorded_steps` (docs/THEORY.md §8),
    with E[inertia], E[kinetic] and the effective temperature 2 E[K] / d.

    Per step, E[D] = (1 - a^2) E[K] with E[K] the kinetic level just before the friction
    substep (a = mu_n, e^{-gamma_n h} or 1 - h gamma_n) and E[Q] = the kinetic energy of the
    noise kick, d/2 lr s_n^2 (heavy ball) or d/2 (variance of the velocity kick); for
    loss-scaled noise that variance is c^2 E[L] at the noise substep. Both are linear in
    the second moments, so the recursion of `expected` carries them exactly. E[W] is
    what is left: E[I_k] - E[I_0] + E[D] - E[Q].

    spectra: as for `expected` (the mean over rows). Returns numpy float64 arrays keyed by
    LEDGER_KEYS, "inertia", "kinetic", "effective_temperature" and "steps".
    """
    config, lam = _resolve(config, spectra)
    rows, d = lam.shape
    if config.nesterov_r is None and config.noise_model != "loss-scaled" and len(config.recorded_steps) <= config.steps:
        out = _ledger_time_invariant(config, lam)
    else:
        out = _ledger_substeps(config, lam)
    inertia, kinetic, dissipated, injected = out.T.copy()
    return {"steps": np.asarray(config.recorded_steps), "dissipated": dissipated, "injected": injected,
            "residual": inertia - inertia[0] + dissipated - injected, "inertia": inertia, "kinetic": kinetic,
            "effective_temperature": 2.0 * kinetic / d}


def _ledger_substeps(config: SimulationConfig, lam: np.ndarray) -> np.ndarray:
    """[records, (inertia, kinetic, E[sum D], E[sum Q])], every sub-step, any schedule and noise model."""
    chain = _Chain(config, lam)
    rows = lam.shape[0]
    chain.dissipated, chain.injected = np.zeros(rows), np.zeros(rows)
    m = _initial(config, lam)
    recorded = config.recorded_steps
    out = np.empty((len(recorded), 4))

    def record(k):
        inertia, kinetic = chain.observe(m)[:2]
        out[k] = inertia, kinetic, chain.dissipated.mean(), chain.injected.mean()

    record(0)  # recorded steps start at 0
    k = 1
    for n in range(config.steps):
        chain.step(m, n)
        if k < len(recorded) and n + 1 == recorded[k]:
            record(k)
            k += 1
    return out


def _friction_substep(config: SimulationConfig, lam: np.ndarray) -> tuple[np.ndarray, float]:
    """(P, a) of a constant schedule: the friction v <- a v acts on P z, z the state at the step's start."""
    one, zero = np.ones_like(lam), np.zeros_like(lam)

    def mat(a, b, c, d):
        return np.stack([np.stack([a * one, b * one], -1), np.stack([c * one, d * one], -1)], -2)

    if config.integrator == "heavy-ball":
        return mat(1.0, 0.0, 0.0, 1.0), config.momentum
    h = config.dt
    if config.integrator == "euler":
        return mat(1.0, 0.0, 0.0, 1.0), 1.0 - h * config.damping
    kick, c = mat(1.0, 0.0, -0.5 * h * lam, 1.0), math.exp(-config.damping * h)
    if config.integrator == "leapfrog":  # B A B, then O
        return kick @ mat(1.0, h, 0.0, 1.0) @ kick, c
    return mat(1.0, 0.5 * h, 0.0, 1.0) @ kick, c  # baoab: B A, then O


def _ledger_time_invariant(config: SimulationConfig, lam: np.ndarray) -> np.ndarray:
    """Constant schedule, state-independent noise: as `_expected_time_invariant`, with E[sum D] carried
    as a fourth moment per mode (it grows by (1 - a^2) K at the friction substep, linear in s) and
    E[sum Q] = n times the constant kinetic energy of one noise kick."""
    M, w, _, kappa = _step_matrices(config, lam)
    P, a = _friction_substep(config, lam)
    half = 0.5 if config.continuous else 0.5 * config.lr
    T1 = _sym_operator(M).reshape(-1, 3, 3)
    T4 = np.zeros((T1.shape[0], 4, 4))
    T4[:, :3, :3] = T1
    T4[:, 3, :3] = (1.0 - a * a) * half * _sym_operator(P).reshape(-1, 3, 3)[:, 2, :]  # D += (1 - a^2) K(P z)
    T4[:, 3, 3] = 1.0
    c4 = np.zeros((T1.shape[0], 4))
    c4[:, :3] = kappa * np.stack([w[..., 0] ** 2, w[..., 0] * w[..., 1], w[..., 1] ** 2], -1).reshape(-1, 3)
    injected_per_step = half * kappa * lam.shape[1]  # per row: d coordinates, each a kick of variance kappa
    recorded = config.recorded_steps
    gaps = {gap: _affine_power(T4, c4, gap) for gap in set(np.diff(recorded).tolist())}
    m = _initial(config, lam)
    s = np.stack([m.xx.ravel(), m.xv.ravel(), m.vv.ravel(), np.zeros(m.xx.size)], -1)  # [N, 4]
    rows = lam.shape[0]
    out = np.empty((len(recorded), 4))

    def record(k):
        inertia, kinetic = _observe(config, lam, s[:, 0], s[:, 1], s[:, 2])[:2]
        out[k] = inertia, kinetic, s[:, 3].sum() / rows, injected_per_step * recorded[k]

    record(0)
    for k in range(1, len(recorded)):
        T, c = gaps[recorded[k] - recorded[k - 1]]
        s = (T @ s[..., None])[..., 0] + c
        record(k)
    return out


def stationary_effective_temperature(config: SimulationConfig, spectra=None) -> float:
    """Exact stationary T_eff = 2 E[K_inf] / d of the chain (constant schedule, damped; see `stationary`).

    Beside the target T it shows the integrator's kinetic bias: equal to T for the continuous
    dynamics and (exactly, on a quadratic) for leapfrog at temperature T, O(h) off for heavy ball and
    Euler, O(h^2) for BAOAB (docs/THEORY.md §6, §8)."""
    config, lam = _resolve(config, spectra)
    return 2.0 * stationary(config, lam)["kinetic"] / lam.shape[1]


def _expected_substeps(config: SimulationConfig, lam: np.ndarray) -> np.ndarray:
    """Any schedule and noise model: every sub-step of CONVENTIONS.md, one step at a time."""
    chain = _Chain(config, lam)
    m = _initial(config, lam)
    out = np.empty((len(config.recorded_steps), 4))
    out[0] = chain.observe(m)
    recorded = config.recorded_steps
    k = 1
    for n in range(config.steps):
        chain.step(m, n)
        if k < len(recorded) and n + 1 == recorded[k]:
            out[k] = chain.observe(m)
            k += 1
    return out


def _expected_time_invariant(config: SimulationConfig, lam: np.ndarray) -> np.ndarray:
    """Constant schedule, state-independent noise: the step is one affine map s <- T s + c of
    s = (xx, xv, vv) per mode; the gap between two recorded steps is composed once (binary
    powering, one composition per distinct gap), so the loop runs over recorded steps only."""
    M, w, _, kappa = _step_matrices(config, lam)
    T1 = _sym_operator(M).reshape(-1, 3, 3)
    c1 = kappa * np.stack([w[..., 0] ** 2, w[..., 0] * w[..., 1], w[..., 1] ** 2], -1).reshape(-1, 3)
    recorded = config.recorded_steps
    gaps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for gap in set(np.diff(recorded).tolist()):
        T, c = _affine_power(T1, c1, gap)
        # A[j] [3, N]: column j of every mode's T
        gaps[gap] = np.ascontiguousarray(T.transpose(2, 1, 0)), np.ascontiguousarray(c.T)
    m = _initial(config, lam)
    s = np.stack([m.xx.ravel(), m.xv.ravel(), m.vv.ravel()])
    new, term = np.empty_like(s), np.empty_like(s)
    out = np.empty((len(config.recorded_steps), 4))
    lam_sq = lam * lam
    out[0] = _observe(config, lam, s[0], s[1], s[2], lam_sq)
    for k in range(1, len(out)):
        A, c = gaps[recorded[k] - recorded[k - 1]]
        np.multiply(A[0], s[0], out=new)
        np.multiply(A[1], s[1], out=term)
        new += term
        np.multiply(A[2], s[2], out=term)
        new += term
        new += c
        s, new = new, s
        out[k] = _observe(config, lam, s[0], s[1], s[2], lam_sq)
    return out


def _affine_power(T: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, c) composed k times: s <- T s + c applied k times is s <- T_k s + c_k. T [N,m,m], c [N,m]."""
    result_T = np.broadcast_to(np.eye(T.shape[-1]), T.shape).copy()
    result_c = np.zeros_like(c)
    while k:
        if k & 1:  # powers of one map commute, so the order of composition is immaterial
            result_T, result_c = T @ result_T, (T @ result_c[..., None])[..., 0] + c
        k >>= 1
        if k:
            T, c = T @ T, (T @ c[..., None])[..., 0] + c
    return result_T, result_c


# --- one step as a linear map: M, and the noise direction ----------------------------

def _step_matrices(config: SimulationConfig, lam: np.ndarray, n: int = 0):
    """Per mode, the step as z' = M z + w * (noise amplitude), and r: x at the noise sub-step is r . z.

    Returns M [..., 2, 2], w [..., 2], r [..., 2] and the noise scale kappa such that the
    injected variance is kappa (additive/temperature) or kappa * E[L at r] (loss-scaled).
    """
    lam = np.asarray(lam, dtype=np.float64)
    one, zero = np.ones_like(lam), np.zeros_like(lam)

    def mat(a, b, c, d):
        return np.stack([np.stack([a * one, b * one], -1), np.stack([c * one, d * one], -1)], -2)

    def kick(c):
        return mat(1.0, 0.0, c, 1.0)

    def drift(c):
        return mat(1.0, c, 0.0, 1.0)

    cfg = config
    if cfg.integrator == "heavy-ball":
        mu = _momentum(cfg, n)
        after = drift(-cfg.lr)
        M = after @ kick(lam) @ mat(1.0, 0.0, 0.0, mu)
        w = after @ np.stack([zero, one], -1)[..., None]
        r = np.stack([one, zero], -1)
        friction, factor = (1.0 - mu) / cfg.lr, 1.0
    else:
        h = cfg.dt
        gamma = _damping(cfg, n)
        e_v = np.stack([zero, one], -1)[..., None]
        O = mat(1.0, 0.0, 0.0, math.exp(-gamma * h))
        factor = _ou_variance_factor(gamma, h)
        friction = gamma
        if cfg.integrator == "euler":
            M = mat(1.0, h, -h * lam, 1.0 - h * gamma)
            w = e_v
            r = np.stack([one, zero], -1)
            factor = h
        elif cfg.integrator == "leapfrog":
            before = kick(-0.5 * h * lam) @ drift(h) @ kick(-0.5 * h * lam)
            M = O @ before
            w = e_v
            r = before[..., 0, :]
        else:
            before = drift(0.5 * h) @ kick(-0.5 * h * lam)
            after = kick(-0.5 * h * lam) @ drift(0.5 * h)
            M = after @ O @ before
            w = after @ e_v
            r = before[..., 0, :]
    if cfg.noise_model == "additive":
        kappa = cfg.noise ** 2 * factor
    elif cfg.noise_model == "temperature":
        kappa = 2.0 * friction * cfg.temperature * factor
    else:
        kappa = cfg.noise ** 2 * factor
    return M, w[..., 0], r, kappa


def _sym_operator(M: np.ndarray) -> np.ndarray:
    """The 3x3 map of Sigma -> M Sigma M^T on s = (xx, xv, vv), per mode."""
    a, b, c, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]
    return np.stack([
        np.stack([a * a, 2 * a * b, b * b], -1),
        np.stack([a * c, a * d + b * c, b * d], -1),
        np.stack([c * c, 2 * c * d, d * d], -1),
    ], -2)


def _observables(config: SimulationConfig, lam: np.ndarray, s: np.ndarray) -> dict:
    """Mean over rows of the recorded quantities from stationary moments s [M, d, 3]."""
    return dict(zip(KEYS, _observe(config, lam, s[..., 0], s[..., 1], s[..., 2])))


def _check_constant_damped(config: SimulationConfig, what: str) -> None:
    if config.nesterov_r is not None:
        raise ValueError(f"{what}: needs a constant schedule, not {config.momentum_schedule!r}")
    if config.continuous and config.damping <= 0:
        raise ValueError(f"{what}: needs --damping > 0 (frictionless chains have no stationary law)")
    if not config.continuous and config.momentum >= 1:
        raise ValueError(f"{what}: needs --momentum < 1 (frictionless chains have no stationary law)")


def stationary(config: SimulationConfig, spectra=None) -> dict:
    """E[inertia], E[kinetic], E[loss], E[shadow_inertia] of the stationary chain (constant schedule, damped).

    Additive and temperature noise: Sigma = M Sigma M^T + kappa w w^T solved exactly per mode
    (a 3x3 linear system on (xx, xv, vv)). A mode with lambda = 0 has no restoring force: its x
    wanders, but it adds nothing to the loss, so only its v (b) moment is solved.

    Loss-scaled noise: the stacked system is Sigma = T Sigma + kappa w w^T E[L](Sigma), a
    nonnegative rank-one perturbation of the stable block-diagonal T. Its only fixed point is
    Sigma = 0 (E[L] = 0 makes the noise vanish) and it is reached iff the chain is mean-square
    stable: rho(T) < 1 and kappa sum_modes 1/2 lambda r.(I - T)^{-1} w w^T r < 1 per trajectory
    (the spectral-radius criterion for cone-preserving maps). Returns zeros when stable; raises
    ValueError when it is not (moments grow without bound).
    """
    config, lam = _resolve(config, spectra)
    _check_constant_damped(config, "stationary")
    M, w, r, kappa = _step_matrices(config, lam)
    T = _sym_operator(M)
    rho = _spectral_radius(M, lam)
    if np.max(rho) >= 1:
        raise ValueError(f"stationary: the chain is unstable (spectral radius {np.max(rho):.6g} >= 1)")
    ww = np.stack([w[..., 0] ** 2, w[..., 0] * w[..., 1], w[..., 1] ** 2], -1)
    free = lam == 0
    eye = np.eye(3)
    A = eye - T
    # lambda = 0: x decouples and is irrelevant; solve only vv = d^2 vv + ww_vv, keep xx = xv = 0.
    A[free] = eye
    rhs = ww.copy()
    d2 = M[..., 1, 1] ** 2
    rhs[free] = 0.0
    rhs[..., 2] = np.where(free, ww[..., 2] / np.where(free, 1.0 - d2, 1.0), rhs[..., 2])
    u = np.linalg.solve(A, rhs[..., None])[..., 0]  # stationary moments per unit kappa
    if config.noise_model != "loss-scaled":
        return _observables(config, lam, kappa * u)
    rr = np.stack([r[..., 0] ** 2, 2 * r[..., 0] * r[..., 1], r[..., 1] ** 2], -1)
    gain = kappa * (0.5 * lam * (rr * u).sum(-1)).sum(axis=1)  # per trajectory
    if np.max(gain) >= 1:
        raise ValueError(f"stationary: loss-scaled noise makes the chain mean-square unstable "
                         f"(noise gain {np.max(gain):.6g} >= 1); the moments grow without bound")
    return _observables(config, lam, np.zeros(lam.shape + (3,)))


def _spectral_radius(M: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per-mode spectral radius of M; for lambda = 0 only the v (b) block matters (x does not enter I)."""
    ev = np.linalg.eigvals(M)
    rho = np.abs(ev).max(axis=-1)
    return np.where(lam == 0, np.abs(M[..., 1, 1]), rho)


def decay_rate(config: SimulationConfig, spectra=None) -> dict:
    """Exact asymptotic decay rate of E[I_n] - E[I_inf] for a constant schedule.

    Second moments evolve under M (x) M, whose eigenvalues are products of those of M, so
    E[I_n] - E[I_inf] ~ rho^{2n} with rho the largest spectral radius of the per-mode step map
    M over all modes (and rows). Returns a dict:
        "per_step": -2 ln(rho)                     (per step n)
        "per_time": per_step / dt (continuous) or per_step / sqrt(lr) (heavy ball, time h = sqrt(lr),
                    THEORY.md section 2)
    Valid for additive and temperature noise (the noise does not change the rate). For
    loss-scaled noise the modes couple and the rate is that of the coupled map: found here as
    the Perron root z > rho^2 of 1 = kappa sum_modes 1/2 lambda r.(z - T)^{-1} ww (bisection).
    """
    config, lam = _resolve(config, spectra)
    if config.nesterov_r is not None:
        raise ValueError(f"decay_rate: needs a constant schedule, not {config.momentum_schedule!r} "
                         "(nesterov schedules decay as a power law)")
    M, w, r, kappa = _step_matrices(config, lam)
    rho = float(np.max(_spectral_radius(M, lam)))
    z = rho * rho
    if config.noise_model == "loss-scaled" and kappa > 0:
        z = max(z, _coupled_root(M, w, r, kappa, lam, z))
    per_step = -math.log(z) if z > 0 else math.inf
    unit = config.dt if config.continuous else math.sqrt(config.lr)
    return {"per_step": per_step, "per_time": per_step / unit}


def _coupled_root(M, w, r, kappa, lam, z0: float) -> float:
    """Largest real z > z0 with kappa sum 1/2 lambda r.(z - T)^{-1} ww = 1 (per row; max over rows)."""
    T = _sym_operator(M)
    ww = np.stack([w[..., 0] ** 2, w[..., 0] * w[..., 1], w[..., 1] ** 2], -1)[..., None]
    rr = np.stack([r[..., 0] ** 2, 2 * r[..., 0] * r[..., 1], r[..., 1] ** 2], -1)
    eye = np.eye(3)

    def gain(z):  # decreasing in z above the spectral radius of T (cone-preserving map)
        u = np.linalg.solve(z * eye - T, ww)[..., 0]
        return kappa * (0.5 * lam * (rr * u).sum(-1)).sum(axis=1)

    best = z0
    lo = z0 * (1 + 1e-12) + 1e-300
    g_lo = gain(lo)
    for row in np.nonzero(g_lo > 1)[0]:
        a, b = lo, max(2.0 * lo, 1.0)
        while gain(b)[row] > 1:
            b *= 2.0
        for _ in range(200):
            mid = 0.5 * (a + b)
            if gain(mid)[row] > 1:
                a = mid
            else:
                b = mid
            if b - a <= 1e-15 * b:
                break
        best = max(best, 0.5 * (a + b))
    return best


# --- continuous time (THEORY.md section 1) -------------------------------------------

def decay_rate_continuous(gamma: float, lam) -> float:
    """r = gamma - Re sqrt(gamma^2 - 4 lambda), the slowest (minimum) over a spectrum lam."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    disc = np.sqrt((gamma * gamma - 4.0 * lam).astype(complex))
    return float(np.min(gamma - disc.real))


def continuous_moments(lambdas, gamma, sigma: float, t, a0=1.0, b0=0.0, c0=0.0, t0: float = 0.0) -> dict:
    """Exact solution of the moment ODE of THEORY.md section 1 per mode, summed over modes.

        a' = 2b,  b' = c - lambda a - gamma b,  c' = -2 lambda b - 2 gamma c + sigma^2

    lambdas [d]; a0, b0, c0 (E x^2, E x v, E v^2 at time t0) scalars or [d]; t an array of times
    >= t0. gamma a number (matrix exponential, exact) or a callable gamma(t) (scipy solve_ivp,
    rtol 1e-11). Returns arrays over t: "inertia", "kinetic", "loss" (sums over modes) and the
    per-mode "a", "b", "c" [len(t), d].
    """
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    d = lam.size
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    y0 = np.stack([np.broadcast_to(np.asarray(x, dtype=np.float64), (d,)) for x in (a0, b0, c0)], -1)  # [d, 3]
    s2 = float(sigma) ** 2
    if callable(gamma):
        from scipy.integrate import solve_ivp

        def rhs(time, y):
            a, b, c = y.reshape(3, d)
            g = gamma(time)
            return np.concatenate([2 * b, c - lam * a - g * b, -2 * lam * b - 2 * g * c + s2])

        sol = solve_ivp(rhs, (t0, float(t.max())), y0.T.reshape(-1), t_eval=t, method="DOP853",
                        rtol=1e-11, atol=1e-14)
        if not sol.success:
            raise RuntimeError(f"continuous_moments: solve_ivp failed: {sol.message}")
        abc = sol.y.reshape(3, d, -1).transpose(2, 1, 0)  # [t, d, 3]
    else:
        from scipy.linalg import expm
        g = float(gamma)
        G = np.zeros((d, 4, 4))
        G[:, 0, 1] = 2.0
        G[:, 1, 0], G[:, 1, 1], G[:, 1, 2] = -lam, -g, 1.0
        G[:, 2, 1], G[:, 2, 2], G[:, 2, 3] = -2.0 * lam, -2.0 * g, s2  # affine term via the 4th coordinate
        E = expm((t - t0)[:, None, None, None] * G[None])  # [t, d, 4, 4]
        y = np.concatenate([y0, np.ones((d, 1))], -1)
        abc = (E @ y[None, :, :, None])[..., :3, 0]
    a, b, c = abc[..., 0], abc[..., 1], abc[..., 2]
    kinetic = 0.5 * c.sum(-1)
    loss = 0.5 * (lam * a).sum(-1)
    return {"inertia": kinetic + loss, "kinetic": kinetic, "loss": loss, "a": a, "b": b, "c": c}


def power_law_exponent_continuous(r: float) -> float:
    """Envelope exponent p of E[I](t) ~ t^{-p} for gamma(t) = r / t on a quadratic, noise-free.

    x'' + (r/t) x' + lambda x = 0 has x = t^{-nu} (c1 J_nu + c2 Y_nu)(sqrt(lambda) t), nu = (r-1)/2;
    Bessel functions decay as t^{-1/2}, so |x|, |v| ~ t^{-r/2} and I ~ t^{-r}: p = r.
    """
    return float(r)


# --- separable potentials: Gibbs quadrature (THEORY.md section 4) --------------------

def stationary_loss_quadrature(potential: str, temperature: float, dim: int, lam: float = 1.0) -> float:
    """dim * int L e^{-L/T} dx / int e^{-L/T} dx for a separable potential, by scipy quad.

    potential: "double-well" (L = (x^2 - 1)^2 / 4 per coordinate) or "quadratic" (L = lam x^2 / 2).
    This is the continuous-time Gibbs value; discrete chains carry an O(h) (heavy ball) or a
    tiny (BAOAB) configurational bias.
    """
    from scipy.integrate import quad

    if temperature <= 0:
        return 0.0
    if potential == "double-well":
        def L(x):
            return 0.25 * (x * x - 1.0) ** 2
        scale = 1.0 + math.sqrt(2.0 * math.sqrt(temperature))  # where e^{-L/T} is negligible beyond ~10 scale
        points = [-1.0, 0.0, 1.0]
    elif potential == "quadratic":
        if lam <= 0:
            raise ValueError("stationary_loss_quadrature: quadratic needs lam > 0")

        def L(x):
            return 0.5 * lam * x * x
        scale = math.sqrt(temperature / lam)
        points = [0.0]
    else:
        raise ValueError(f"stationary_loss_quadrature: unknown potential {potential!r}; "
                         "allowed: double-well, quadratic")
    lo, hi = -40.0 * scale, 40.0 * scale
    opts = dict(points=points, limit=400, epsabs=0.0, epsrel=1e-12)
    num = quad(lambda x: L(x) * math.exp(-L(x) / temperature), lo, hi, **opts)[0]
    den = quad(lambda x: math.exp(-L(x) / temperature), lo, hi, **opts)[0]
    return dim * num / den
