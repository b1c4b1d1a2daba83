"""Statistics of an ensemble run: batch means, first passage, decay fits.

Every reported mean carries a standard error computed from the run itself:
trajectories are split into replicates (consecutive blocks), and the
standard error of the mean is that of the replicate means (batch means),
weighted by replicate size. All sums are float64.
"""
from __future__ import annotations

import math

import numpy as np

from .spec import COLUMNS, FRACTIONS, LEDGER, QUANTITIES


def combine(table: np.ndarray) -> dict[str, np.ndarray]:
    """Means and batch-means standard errors from replicate sums [n_records, R, Q].

    Returns {name + "_mean", name + "_sem"} for inertia, kinetic, loss and
    shadow_inertia, and for the ledger terms (dissipated, injected, residual)
    when the table carries their columns (spec.COLUMNS), plus "finite"
    (trajectories counted per step).
    """
    counts = table[..., 0]  # [n_records, R]
    total = counts.sum(axis=1)
    out: dict[str, np.ndarray] = {"finite": total}
    n_rep = (counts > 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        names = QUANTITIES[1:5] + (LEDGER if table.shape[-1] >= len(COLUMNS) else ())
        for name in names:
            sums = table[..., COLUMNS.index(name)]
            mean = sums.sum(axis=1) / total
            rep_mean = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), 0.0)
            # weighted batch means: var(mean) = sum w_r^2 (m_r - m)^2 * R/(R-1), w_r = n_r / N
            w = counts / total[:, None]
            dev2 = np.where(counts > 0, (rep_mean - mean[:, None]) ** 2, 0.0)
            var = (w * w * dev2).sum(axis=1) * n_rep / np.maximum(n_rep - 1, 1)
            out[f"{name}_mean"] = mean
            out[f"{name}_sem"] = np.where(n_rep > 1, np.sqrt(var), np.nan)
        # plain per-trajectory spread (for reference beside the batch-means error)
        mean_i = table[..., 1].sum(axis=1) / total
        second = table[..., 5].sum(axis=1) / total
        out["inertia_std"] = np.sqrt(np.maximum(second - mean_i ** 2, 0.0))
    return out


def first_passage_summary(hist: np.ndarray) -> list[dict]:
    """Per fraction f: share of trajectories that reached f I_0, and quantiles of the first-passage step.

    hist[j, 0] counts trajectories that never reached it; hist[j, 1 + n] those that first did at step n.
    """
    out = []
    for j, f in enumerate(FRACTIONS):
        h = hist[j]
        total = int(h.sum())
        reached = int(h[1:].sum())
        entry = {"fraction": f, "reached": reached, "total": total, "quantiles": {}}
        if reached:
            cdf = np.cumsum(h[1:]) / reached
            for q in (0.1, 0.25, 0.5, 0.75, 0.9):
                entry["quantiles"][str(q)] = int(np.searchsorted(cdf, q))
            steps = np.arange(h.size - 1)
            entry["mean_step"] = float((steps * h[1:]).sum() / reached)
            nonzero = np.flatnonzero(h[1:])  # the histogram over the ensemble, empty steps left out
            entry["histogram"] = {"steps": nonzero.tolist(), "counts": h[1:][nonzero].tolist()}
        out.append(entry)
    return out


def fit_decay(steps: np.ndarray, mean: np.ndarray, sem: np.ndarray, floor: float, model: str = "exponential",
              time_per_step: float = 1.0, z_min: float = 5.0, replicate_sums: np.ndarray | None = None) -> dict:
    """Fit E[I] - floor ~ A exp(-r t) (model "exponential") or A t^(-p) (model "power").

    Weighted least squares on log(E[I] - floor), weights from the standard
    error (delta method: se(log y) = sem / y), over the recorded steps where
    the excess stands z_min standard errors above zero. Returns the rate (per
    unit of time: steps * time_per_step) or exponent with a 95 % interval.

    The recorded steps of one ensemble are strongly correlated (the same
    trajectories), which a least-squares error treats as independent. Given
    the replicate sums [n_records, R, Q] of the run, the interval comes from a
    jackknife over replicates instead (each refit leaves one replicate out),
    the batch-means way to an honest error for correlated data; the wider of
    the two is reported.
    """
    steps = np.asarray(steps, dtype=float)
    excess = np.asarray(mean, dtype=float) - floor
    sem = np.asarray(sem, dtype=float)
    sem = np.where(np.isfinite(sem) & (sem > 0), sem, np.nan)
    ok = (steps > 0) & np.isfinite(excess) & (excess > z_min * np.nan_to_num(sem, nan=0.0))
    idx = np.flatnonzero(ok)
    if idx.size < 4:
        return {"model": model, "rate": math.nan, "ci95": [math.nan, math.nan], "points": int(idx.size)}
    # the first stretch before decay starts (transient) is dropped by starting at 5% of the window;
    # oscillating curves (underdamped) are fitted on their upper envelope through the weights alone
    idx = idx[idx.size // 20:]
    t = steps[idx] * time_per_step
    x = np.log(t) if model == "power" else t
    se = sem[idx] / excess[idx]
    se = np.where(np.isfinite(se), se, np.nanmax(se) if np.isfinite(se).any() else 1.0)
    w = 1.0 / np.maximum(se, 1e-12) ** 2
    rate, slope_se, chi2 = _weighted_slope(x, np.log(excess[idx]), w)
    out = {"model": model, "rate": rate, "ci95": [rate - 1.96 * slope_se, rate + 1.96 * slope_se],
           "points": int(idx.size), "reduced_chi2": chi2, "interval": "least squares"}
    if replicate_sums is not None and replicate_sums.shape[1] >= 4:
        jk = _jackknife_rates(replicate_sums[idx], x, w, floor)
        if jk is not None and np.isfinite(jk).all():
            r = jk.size
            jk_se = math.sqrt((r - 1) / r * float(((jk - jk.mean()) ** 2).sum()))
            half = max(t_quantile(0.975, r - 1) * jk_se, 1.96 * slope_se)
            out.update(ci95=[rate - half, rate + half], interval=f"jackknife over {r} replicates")
    return out


def _weighted_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(-slope, its standard error inflated by the reduced chi^2 where the model misfits, reduced chi^2)."""
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (X * w[:, None]))
    beta = cov @ (X.T @ (w * y))
    resid = y - X @ beta
    chi2 = float((w * resid ** 2).sum() / max(x.size - 2, 1))
    return -float(beta[1]), math.sqrt(cov[1, 1] * max(chi2, 1.0)), chi2


def _jackknife_rates(table: np.ndarray, x: np.ndarray, w: np.ndarray, floor: float) -> np.ndarray | None:
    """The fitted rate with each replicate left out in turn, on the same points and weights."""
    counts, sums = table[..., 0], table[..., 1]
    total_n, total_s = counts.sum(axis=1), sums.sum(axis=1)
    rates = []
    for r in range(table.shape[1]):
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = (total_s - sums[:, r]) / (total_n - counts[:, r]) - floor
        if not (np.isfinite(excess).all() and (excess > 0).all()):
            return None
        rates.append(_weighted_slope(x, np.log(excess), w)[0])
    return np.asarray(rates)


SERIES_DOF = 500  # t_quantile: the exact series up to here (dof terms each), the asymptotic expansion above


def t_quantile(p: float, dof: int) -> float:
    """Quantile p (0.5 <= p < 1) of Student's t with integer dof >= 1 (relative error ~1e-14 at p = 0.975).

    Newton on the exact finite series of P(|T| <= t) (Abramowitz & Stegun 26.7.3/26.7.4): the
    interval of every fit needs it, and scipy.special would cost the run a slow import for one number.
    """
    if not 0.5 <= p < 1.0 or int(dof) != dof or dof < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and an integer dof >= 1, got p={p}, dof={dof}")
    if dof > SERIES_DOF:
        return _t_quantile_asymptotic(p, dof)
    target = 2.0 * p - 1.0
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    t = 0.0  # P(|T| <= t) is increasing and concave in t >= 0: Newton from 0 climbs to the root monotonically
    for _ in range(500):
        density = math.exp(log_norm - (dof + 1) / 2 * math.log1p(t * t / dof))
        step = (target - _t_within(t, dof)) / (2.0 * density)
        t += step
        if abs(step) <= 4e-16 * t:
            break
    return t


def _t_quantile_asymptotic(p: float, dof: int) -> float:
    """The Cornish-Fisher expansion in 1/dof about the normal quantile (Abramowitz & Stegun 26.7.5), for
    dof > SERIES_DOF where the series grows long: relative error below 1e-13 up to p = 0.995 there."""
    from statistics import NormalDist
    z = NormalDist().inv_cdf(p)
    z2 = z * z
    g = (z * (z2 + 1) / 4, z * ((5 * z2 + 16) * z2 + 3) / 96, z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384,
         z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160)
    return z + sum(gk / dof ** (k + 1) for k, gk in enumerate(g))


def _t_within(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with integer dof: a finite series in theta = atan(t / sqrt(dof))."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2 == 0:  # sin(theta) (1 + 1/2 c^2 + 1.3/(2.4) c^4 + ... up to c^(dof-2))
        term = total = 1.0
        for k in range(2, dof, 2):
            term *= c2 * (k - 1) / k
            total += term
            if term * dof < 1e-17 * total:  # the rest is below rounding (terms fall geometrically)
                break
        return math.sin(theta) * total
    total = 0.0  # 2/pi (theta + sin(theta) (c + 2/3 c^3 + ... up to c^(dof-2)))
    if dof > 1:
        term = total = math.cos(theta)
        for k in range(3, dof - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
            if term * dof < 1e-17 * total:
                break
    return 2.0 / math.pi * (theta + math.sin(theta) * total)
