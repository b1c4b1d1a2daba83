"""The inertia ledger: where each step's change of inertia goes, per trajectory, exactly.

Every step of every integrator is read as substeps (docs/THEORY.md §8): friction first,
then noise, then the conservative kick and drift. Friction and noise change only the
velocity, so each changes I = K + L by a change of K alone:

    dissipated   D = K(v) - K(a v)            = (1 - a^2) K(v)   (friction v -> a v)
    injected     Q = K(a v + s xi) - K(a v)                      (noise, s xi its kick)
    residual     W = the change of I over every other substep    (kick and drift)

so that I_{k+1} - I_k = -D_k + Q_k + W_k, to rounding. The friction factor a is
mu_n (heavy ball, v = -lr b), e^{-gamma_n h} (the O step of leapfrog and BAOAB) or
1 - h gamma_n (Euler); s xi is the scaled noise the reference adds. D >= 0 whenever
|a| <= 1 (every stable configuration).

`step` walks the reference's word letter by letter with the reference's own
arithmetic in the working dtype (the state it returns equals `Model.step`'s,
bitwise: tests/test_ledger.py checks it) and forms the three terms in float64 from
the working-dtype values: D and Q from the velocities around the friction and noise
substeps, W as the sum of the inertia changes over the other letters, each measured
by `Model.observe` on the state itself. The identity is therefore a check, not a
definition: it holds only if the split and the reference's step agree.

`simulate` runs an ensemble with the reference's random stream and returns the
cumulative ledger since step 0 at `config.recorded_steps`. It is the executable
definition that fast backends will be compared with; it is not fast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import rng
from .coefficients import Const, Obs, Step
from .reference import Model, sweep_overrides
from .spec import GROUP

TERMS = ("dissipated", "injected", "residual")


def _inertia(model: Model, theta, mom, lam) -> torch.Tensor:
    return model.observe(theta, mom, lam)[0]


def _loss64(model: Model, theta, lam) -> torch.Tensor:
    return model.problem.loss(theta.double(), None if lam is None else lam.double())


def _half_lr(model: Model) -> torch.Tensor:
    """lr / 2 in float64 (the heavy-ball kinetic is lr/2 |b|^2), [n] under a sweep."""
    half = model._observe[Obs.HALF_LR]
    return half.reshape(-1) if half.dim() else half


def _squares(x64: torch.Tensor) -> torch.Tensor:
    """|x|^2 per row, [n], as a product with a vector of ones: a matrix-vector product sums each row in
    the same order whatever the number of rows, and torch's reduction over a short last axis is ~50x slower."""
    return (x64 * x64) @ x64.new_ones(x64.shape[-1])


def _kinetic64(model: Model, mom64: torch.Tensor) -> torch.Tensor:
    """K of a float64 momentum: lr/2 |b|^2 (heavy ball) or 1/2 |v|^2 (continuous), [n]."""
    if model.config.continuous:
        return 0.5 * _squares(mom64)
    return _half_lr(model) * _squares(mom64)


def _split(model: Model, mom, decay, kick):
    """(D, Q, K after the noise) of friction mom -> decay mom, then noise + kick, in float64.

    decay: the friction factor a in the working dtype; kick: s xi in the working dtype.
    D = (1 - a^2) K(mom) is nonnegative for |a| <= 1 by construction (no cancellation).
    """
    a = decay.double()
    m64 = mom.double()
    before = _kinetic64(model, m64)
    a2 = (a * a).reshape(-1) if a.dim() else a * a
    dissipated = (1.0 - a2) * before
    damped = a * m64
    noised = damped + kick.double()
    after = _kinetic64(model, noised)
    injected = after - _kinetic64(model, damped)
    return dissipated, injected, after


def step(model: Model, theta, mom, lam, n: int, xi, residual: bool = True):
    """Advance state n -> n + 1 exactly as `Model.step`, and split the change of inertia.

    Returns (theta, mom, D, Q, W), the three terms float64 [n_traj]. residual=False skips
    the inertia measurements W needs (W is then zeros): the reference backend forms W as
    the residual I_n - I_0 + D - Q of the cumulative terms instead, as every backend does.
    """
    count = theta.shape[0]
    zero = torch.zeros(count, dtype=torch.float64, device=theta.device)
    dissipated, injected, w = zero.clone(), zero.clone(), zero.clone()
    drifts = model.word.count("A")
    measure = _inertia if residual else (lambda *_: zero)
    start = measure(model, theta, mom, lam)  # I at the start of the current conservative stretch
    for letter in model.word:
        if letter == "B":
            mom = mom - model.const(Const.HALF_H) * model.problem.grad(theta, lam)
        elif letter == "A":
            theta = theta + model.const(Const.H if drifts == 1 else Const.HALF_H) * mom
        elif letter == "O":
            w += measure(model, theta, mom, lam) - start
            decay = model.scalar(n, Step.DECAY)
            kick = model.xi_scale(theta, lam, n) * xi
            d, q, _ = _split(model, mom, decay, kick)
            dissipated += d
            injected += q
            mom = decay * mom + kick
            start = measure(model, theta, mom, lam)
        elif letter == "E":
            # friction v -> (1 - h gamma) v and noise on the old velocity; then the explicit kick and
            # drift, which use the state before the step (W is everything Euler's one map adds besides)
            g = model.problem.grad(theta, lam)
            h = model.const(Const.H)
            decay_h = model.scalar(n, Step.DECAY)
            noise = model.xi_scale(theta, lam, n) * xi
            d, q, after = _split(model, mom, 1.0 - decay_h.double(), noise)
            dissipated += d
            injected += q
            start = _loss64(model, theta, lam) + after if residual else zero
            theta, mom = theta + h * mom, mom - h * g - decay_h * mom + noise
        else:  # "M": b <- mu b + (grad + s xi), theta <- theta - lr b
            noise = model.xi_scale(theta, lam, n) * xi
            g = model.problem.grad(theta, lam) + noise
            decay = model.scalar(n, Step.DECAY)
            d, q, after = _split(model, mom, decay, noise)
            dissipated += d
            injected += q
            start = _loss64(model, theta, lam) + after if residual else zero
            mom = decay * mom + g
            theta = theta - model.const(Const.LR) * mom
    w += measure(model, theta, mom, lam) - start
    return theta, mom, dissipated, injected, w


@dataclass
class LedgerRun:
    """Per-trajectory float64 arrays [len(steps), n_traj]; the terms are cumulative since step 0."""

    steps: np.ndarray
    inertia: np.ndarray
    kinetic: np.ndarray
    dissipated: np.ndarray
    injected: np.ndarray
    residual: np.ndarray
    theta: torch.Tensor  # the final state (working dtype)
    momentum: torch.Tensor

    @property
    def dim(self) -> int:
        return self.theta.shape[1]

    @property
    def effective_temperature(self) -> np.ndarray:
        """T_eff = 2 K / d per trajectory (its mean is 2 E[K] / d)."""
        return 2.0 * self.kinetic / self.dim


def simulate(config, start: int = 0, count: int | None = None) -> LedgerRun:
    """Trajectories [start, start + count) of `config` with the reference's draws, and their ledger.

    The state follows the reference (TorchEnsemble) bit for bit; divergence is not handled
    (a diverged trajectory carries NaN terms).
    """
    count = config.trajectories - start if count is None else count
    device = torch.device(config.device)
    traj = torch.arange(start, start + count, device=device, dtype=torch.int64)
    model = Model(config, sweep_overrides(config, traj))
    lam = model.eigenvalues(traj)
    theta, mom = model.initial_state(traj)
    recorded = config.recorded_steps
    rows = {n: k for k, n in enumerate(recorded)}
    out = np.full((5, len(recorded), count), np.nan)
    totals = torch.zeros(3, count, dtype=torch.float64, device=device)

    def record(k):
        inertia, kinetic = model.observe(theta, mom, lam)[:2]
        out[0, k], out[1, k] = inertia.cpu().numpy(), kinetic.cpu().numpy()
        out[2:, k] = totals.cpu().numpy()

    if 0 in rows:
        record(rows[0])
    coords = torch.arange(config.dim, device=device, dtype=torch.int64)
    z4 = None
    if not config.noisy:  # as the reference: the noise term vanishes, the arithmetic stays
        z4 = torch.zeros(count, config.dim, 4, dtype=model.dtype, device=device)
    for n in range(config.steps):
        if config.noisy and n % 4 == 0:
            (c0, c1, c2, c3), _ = rng.ensemble_counter(traj[:, None], torch.tensor(n, device=device), coords[None, :])
            z4 = rng.normals4(c0, c1, c2, c3, config.seed, model.dtype)
        theta, mom, d, q, w = step(model, theta, mom, lam, n, z4[..., n % 4])
        totals[0] += d
        totals[1] += q
        totals[2] += w
        if n + 1 in rows:
            record(rows[n + 1])
    return LedgerRun(np.asarray(recorded), *out, theta=theta, momentum=mom)


def batch_means(samples: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard error) over the last axis from the means of consecutive blocks of `block` trajectories."""
    n = samples.shape[-1] // block
    if n < 2:
        raise ValueError(f"batch_means: need at least two blocks of {block}, got {samples.shape[-1]} samples")
    means = samples[..., : n * block].reshape(*samples.shape[:-1], n, block).mean(axis=-1)
    return means.mean(axis=-1), means.std(axis=-1, ddof=1) / np.sqrt(n)


def summary(run: LedgerRun, block: int = GROUP) -> dict[str, np.ndarray]:
    """Means and batch-means standard errors at every recorded step, under the keys of the run's JSON
    ("ledger.dissipated_mean", "ledger.dissipated_sem", ... "ledger.effective_temperature_sem"),
    plus "ledger.steps". Blocks are `block` consecutive trajectories (the backends' groups)."""
    out = {"ledger.steps": run.steps}
    for name in TERMS + ("effective_temperature",):
        mean, sem = batch_means(getattr(run, name), block)
        out[f"ledger.{name}_mean"], out[f"ledger.{name}_sem"] = mean, sem
    return out


__all__ = ["LedgerRun", "TERMS", "batch_means", "simulate", "step", "summary"]
