"""`inertia-gpu sweep`: a grid over one option in one scheduling pass.

    inertia-gpu sweep --sweep momentum=0.5:0.99:60 --spectrum 1,1.5 --lr 0.0111 --steps 1500 \\
        --trajectories 1024 --json sweep.json --plot sweep.png

The J configurations are batched into the same launches: configuration j
owns the contiguous block of whole replicates [j R, (j + 1) R) (trajectories
[j B, (j + 1) B), B = R x replicate size), and the torch reference reads the
swept option per trajectory (`reference.sweep_overrides`). One engine run
then yields a replicate-sum table whose column blocks are the J ensembles;
each is combined, fitted (`stats.fit_decay`) and set beside exact theory
(`theory.decay_rate`, `theory.stationary`, `theory.expected`).

Sweepable: momentum, lr (heavy ball), damping (continuous integrators), noise
(additive / loss-scaled), temperature. Runs on the torch backend only (the
fast kernels take scalar options); every configuration gets its own
trajectory indices, hence its own noise.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .backends.base import GROUP
from .config import ConfigError, SimulationConfig
from .reference import SWEEPABLE

TAIL = 0.2  # share of the recorded steps averaged for the stationary level


def add_arguments(p) -> None:
    from .options import add_simulation_arguments
    add_simulation_arguments(p)
    p.add_argument("--sweep", required=True, metavar="NAME=START:STOP:COUNT",
                   help=f"option and grid: NAME one of {', '.join(SWEEPABLE)}; START:STOP:COUNT (linear, "
                        "inclusive) or V1,V2,... ; --trajectories is per configuration")
    p.add_argument("--json", default=None, help="write the table (and per-configuration curves) here")
    p.add_argument("--plot", default=None, help="write decay rate and stationary level against the option here")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")


def parse_sweep(text: str) -> tuple[str, list[float]]:
    name, sep, grid = str(text).partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise ConfigError(f"--sweep: expected NAME=START:STOP:COUNT or NAME=V1,V2,... with NAME one of "
                          f"{', '.join(SWEEPABLE)}; got {text!r}")
    try:
        if ":" in grid:
            a, b, c = grid.split(":")
            count = int(c)
            if count < 1:
                raise ValueError
            values = list(np.linspace(float(a), float(b), count))
        else:
            values = [float(x) for x in grid.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--sweep: could not read the grid {grid!r} (START:STOP:COUNT with COUNT >= 1, "
                          "or comma-separated numbers)") from None
    if not values:
        raise ConfigError("--sweep: the grid is empty")
    return name, [float(v) for v in values]


def _check_applies(base: SimulationConfig, name: str) -> None:
    if name in ("momentum", "lr") and base.continuous:
        raise ConfigError(f"--sweep: {name} is a heavy-ball option; with --integrator {base.integrator} sweep damping")
    if name == "damping" and not base.continuous:
        raise ConfigError("--sweep: damping is an option of the continuous integrators; for heavy ball sweep momentum")
    if name == "momentum" and base.nesterov_r is not None:
        raise ConfigError("--sweep: momentum is set by the schedule nesterov:R; use --momentum-schedule constant")
    if name == "damping" and base.nesterov_r is not None:
        raise ConfigError("--sweep: damping is set by the schedule nesterov:R; use --momentum-schedule constant")
    if name == "noise" and base.noise_model == "temperature":
        raise ConfigError("--sweep: noise is unused with --noise-model temperature; sweep temperature")
    if name == "temperature" and base.noise_model != "temperature":
        raise ConfigError("--sweep: temperature needs --noise-model temperature")
    if base.backend not in ("auto", "torch"):
        raise ConfigError(f"--backend: a sweep batches configurations through per-trajectory options of the torch "
                          f"reference; use --backend torch (or auto), not {base.backend}")


def batched_config(base: SimulationConfig, name: str, values: list[float]) -> tuple[SimulationConfig, int]:
    """The one engine configuration running every value; returns it and B, trajectories per value."""
    # no more replicates than whole groups of the requested trajectories (at least 2, for a standard
    # error): a small per-value ensemble is not inflated to `replicates` groups
    reps = min(base.replicates, max(2, base.trajectories // GROUP))
    replicate_size = max(GROUP, math.ceil(math.ceil(base.trajectories / reps) / GROUP) * GROUP)
    block = replicate_size * reps
    # the scalar option is overridden per trajectory; set it to the largest value so that scalar
    # decisions (e.g. `config.noisy`: draw noise at all) hold for every block
    combined = dataclasses.replace(base, **{name: max(values)}, trajectories=block * len(values),
                                   replicates=reps * len(values),
                                   backend="torch", extra={"sweep": {"name": name, "values": values, "block": block}})
    return combined.validate(), block


def run_sweep(base: SimulationConfig, name: str, values: list[float], progress: bool = False,
              chunk: int | None = None) -> dict:
    """Run the grid in one engine pass; returns the table (a dict ready for JSON)."""
    from .engine import simulate
    base.validate()
    _check_applies(base, name)
    configs = [dataclasses.replace(base, **{name: v}) for v in values]
    for c in configs:
        c.validate()  # each value is checked like a simulate option: one line naming it
    combined, block = batched_config(base, name, values)
    result = simulate(combined, progress=progress, chunk=chunk, with_theory=False)
    reps = combined.replicates // len(values)
    rows, curves = [], []
    for j, (v, cfg) in enumerate(zip(values, configs)):
        cfg = dataclasses.replace(cfg, trajectories=block)
        rows.append(_analyse(cfg, result.steps, result.replicate_sums[:, j * reps:(j + 1) * reps], j * block))
        curves.append(rows[-1].pop("_curve"))
    return {"sweep": {"name": name, "values": values}, "config": base.to_dict(), "trajectories_per_value": block,
            "backend": result.backend, "device": result.device_name, "elapsed_s": result.elapsed_s,
            "steps": result.steps.tolist(), "rows": rows, "inertia_mean": curves,
            "rate_unit": "per unit time (dt)" if base.continuous else "per step"}


def _analyse(cfg: SimulationConfig, steps: np.ndarray, table: np.ndarray, first_traj: int) -> dict:
    from . import theory
    from .engine import exact_theory
    from .output import finite_list
    from .stats import combine
    st = combine(table)
    mean, sem = st["inertia_mean"], st["inertia_sem"]
    spectra = _spectra(cfg, first_traj)
    th_rate = th_stat = None
    th_curve = None
    if cfg.problem == "quadratic":
        try:
            th_rate = theory.decay_rate(cfg, spectra=spectra)
        except (ValueError, NotImplementedError, ArithmeticError):
            pass
        if cfg.noisy:
            try:
                th_stat = theory.stationary(cfg, spectra=spectra)["inertia"]
            except (ValueError, NotImplementedError, ArithmeticError):
                pass
        try:
            th_curve = exact_theory(cfg, spectra)["inertia"]
        except (ValueError, NotImplementedError, ArithmeticError):
            pass
    tail = max(2, int(len(steps) * TAIL))
    level = float(np.mean(mean[-tail:]))
    level_sem = float(np.mean(sem[-tail:]))
    if cfg.noisy:
        floor = th_stat if th_stat is not None else level
    else:
        floor = 0.0
    model = "power" if cfg.nesterov_r is not None else "exponential"
    fit = asymptotic_fit(steps, mean, sem, floor, model, cfg.dt if cfg.continuous else 1.0, table=table)
    # the exact curve through the same estimator (same steps, weights and window): what the fit should
    # give with no sampling error; it differs from the asymptotic rate where the window is not yet
    # asymptotic (the two slowest exponentials are close near critical damping)
    th_window = None
    if th_curve is not None:
        th_fit = asymptotic_fit(steps, th_curve, sem, floor, model, cfg.dt if cfg.continuous else 1.0,
                                first_step=fit["from_step"])
        th_window = th_fit["rate"]
    row = {"rate": fit["rate"], "ci95": fit["ci95"], "fit_points": fit["points"], "fit_from_step": fit["from_step"],
           "fit_interval": fit.get("interval"), "theory_rate_window": th_window,
           "theory_rate": None if th_rate is None else (th_rate["per_time"] if cfg.continuous else th_rate["per_step"]),
           "stationary_inertia": level if cfg.noisy else None, "stationary_inertia_sem": level_sem if cfg.noisy else None,
           "theory_stationary_inertia": th_stat,
           "diverged_final": int(table[-1, :, 0].size and (cfg.trajectories - table[-1, :, 0].sum()))}
    if th_curve is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (mean - th_curve) / sem
        row["theory_max_abs_z"] = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else None
    row.update(_ledger_row(cfg, st, tail))
    row["_curve"] = finite_list(mean)
    return row


def _ledger_row(cfg: SimulationConfig, st: dict, tail: int) -> dict:
    """The ledger of one configuration: cumulative D, Q, W at the final step, and (at a temperature) the
    stationary T_eff = 2 E[K] / d over the same tail as the stationary inertia; {} with the ledger off."""
    from .spec import LEDGER
    if not cfg.ledger:
        return {}
    out = {}
    for name in LEDGER:
        mean, sem = float(st[f"{name}_mean"][-1]), float(st[f"{name}_sem"][-1])
        out[f"ledger.{name}_final"] = mean if np.isfinite(mean) else None
        out[f"ledger.{name}_final_sem"] = sem if np.isfinite(sem) else None
    if cfg.noise_model == "temperature":
        out["ledger.effective_temperature"] = float(2.0 * np.mean(st["kinetic_mean"][-tail:]) / cfg.dim)
        out["ledger.effective_temperature_sem"] = float(2.0 * np.mean(st["kinetic_sem"][-tail:]) / cfg.dim)
    return out


def asymptotic_fit(steps, mean, sem, floor: float, model: str, time_per_step: float, z_min: float = 5.0,
                   table: np.ndarray | None = None, first_step: int | None = None) -> dict:
    """stats.fit_decay over the later half of the usable decay (the asymptotic regime).

    The exact rate is asymptotic: E[I_n] - E[I_inf] is a sum of exponentials (the products of the
    step map's eigenvalues), and near critical damping the two slowest are close, so the early
    steps bend the fitted slope by more than its interval. The usable steps are those where the
    excess stands z_min standard errors above zero (fit_decay's own rule); the fit keeps the later
    half of them.
    """
    from .stats import fit_decay
    steps, mean, sem = (np.asarray(a, dtype=float) for a in (steps, mean, sem))
    excess = mean - floor
    ok = (steps > 0) & np.isfinite(excess) & (excess > z_min * np.nan_to_num(sem, nan=0.0))
    idx = np.flatnonzero(ok)
    first = steps[idx[idx.size // 2]] if idx.size >= 8 else 0.0
    if first_step is not None:
        first = first_step
    keep = steps >= first
    fit = fit_decay(steps[keep], mean[keep], sem[keep], floor, model, time_per_step, z_min,
                    replicate_sums=None if table is None else table[keep])
    fit["from_step"] = int(first)
    return fit


def _spectra(cfg: SimulationConfig, first_traj: int):
    """The drawn eigenvalues of this configuration's trajectories (None for a shared spectrum)."""
    from .engine import drawn_spectra
    return drawn_spectra(cfg, first_traj)


def theory_curves(base: SimulationConfig, name: str, lo: float, hi: float, points: int = 400) -> dict:
    """Exact decay rate and stationary inertia on a fine grid of the swept option (for the plot)."""
    from . import theory
    xs = np.linspace(lo, hi, points)
    rate, level = np.full(points, np.nan), np.full(points, np.nan)
    for i, x in enumerate(xs):
        try:
            cfg = dataclasses.replace(base, **{name: float(x)}).validate()
            r = theory.decay_rate(cfg)
            rate[i] = r["per_time"] if cfg.continuous else r["per_step"]
            if cfg.noisy:
                level[i] = theory.stationary(cfg)["inertia"]
        except (ValueError, NotImplementedError, ConfigError):
            pass
    return {"x": xs, "rate": rate, "stationary": level}


def plot_sweep(table: dict, base: SimulationConfig, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    name, values = table["sweep"]["name"], np.asarray(table["sweep"]["values"])
    rows = table["rows"]
    noisy = any(r["stationary_inertia"] is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if noisy else 1, figsize=(11 if noisy else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    rate = np.array([np.nan if r["rate"] is None else r["rate"] for r in rows], dtype=float)
    lo = np.array([r["ci95"][0] for r in rows], dtype=float)
    hi = np.array([r["ci95"][1] for r in rows], dtype=float)
    ax.errorbar(values, rate, yerr=[rate - lo, hi - rate], fmt="o", ms=3, capsize=2, label="fitted (95% CI)")
    if base.problem == "quadratic" and base.distribution is None:
        th = theory_curves(base, name, float(values.min()), float(values.max()))
        ax.plot(th["x"], th["rate"], "k-", lw=1, label="exact theory")
    else:
        tr = [r["theory_rate"] for r in rows]
        if any(t is not None for t in tr):
            ax.plot(values, [np.nan if t is None else t for t in tr], "k-", lw=1, label="exact theory")
    ax.set_xlabel(name)
    ax.set_ylabel(f"decay rate of E[I] - E[I_inf] ({table['rate_unit']})")
    ax.legend()
    if noisy:
        ax = axes[0, 1]
        lev = np.array([np.nan if r["stationary_inertia"] is None else r["stationary_inertia"] for r in rows])
        err = np.array([np.nan if r["stationary_inertia_sem"] is None else r["stationary_inertia_sem"] for r in rows])
        ax.errorbar(values, lev, yerr=2 * err, fmt="o", ms=3, capsize=2, label="measured (tail mean, 2 s.e.)")
        if base.problem == "quadratic" and base.distribution is None:
            ax.plot(th["x"], th["stationary"], "k-", lw=1, label="exact theory")
        ax.set_xlabel(name)
        ax.set_ylabel("stationary E[I]")
        ax.legend()
    fig.suptitle(f"sweep over {name}: {base.problem}, {base.integrator}\n"
                 f"{table['trajectories_per_value']} trajectories per value, one pass", fontsize=10)
    fig.tight_layout()
    from .output import save_figure
    try:
        save_figure(fig, path, "--plot", dpi=120)
    finally:
        plt.close(fig)


def print_table(table: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    name = table["sweep"]["name"]
    t = Table(title=f"sweep over {name} ({table['trajectories_per_value']} trajectories each, "
                    f"{table['elapsed_s']:.1f} s)")
    for col in (name, f"rate ({table['rate_unit']})", "95% CI", "theory", "stationary E[I]", "theory", "diverged"):
        t.add_column(col, justify="right")

    def f(x, fmt="{:.4g}"):
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)
    for v, r in zip(table["sweep"]["values"], table["rows"]):
        t.add_row(f(v), f(r["rate"]), f"[{f(r['ci95'][0])}, {f(r['ci95'][1])}]", f(r["theory_rate"]),
                  f(r["stationary_inertia"]), f(r["theory_stationary_inertia"]), str(r["diverged_final"]))
    Console().print(t)


def run(args) -> int:
    from .options import config_from_args
    from .output import PLOT_FORMATS, check_path, write_json
    name, values = parse_sweep(args.sweep)
    if hasattr(args, name):
        raise ConfigError(f"--{name.replace('_', '-')}: set by --sweep {args.sweep}; give one or the other")
    base = config_from_args(args, also_given=(name,))
    if args.json is not None:
        check_path("--json", args.json)
    if args.plot is not None:
        check_path("--plot", args.plot, PLOT_FORMATS)
    table = run_sweep(base, name, values, progress=not args.quiet)
    if args.json:
        write_json(args.json, table)
    if args.plot:
        plot_sweep(table, base, args.plot)
    if not args.quiet:
        print_table(table)
    return 0
