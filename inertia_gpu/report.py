"""What a person reads or looks at after a run: a terminal summary and a figure."""
from __future__ import annotations

import numpy as np

from .stats import first_passage_summary


def print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = result.config
    s = result.stats
    import sys
    console = Console(width=None if sys.stdout.isatty() else 140)  # a pipe or a log file: no truncated numbers
    rate = result.trajectory_steps_per_s
    speed = "resumed, nothing left to compute" if rate is None else f"{rate:.3g} traj-steps/s"
    t = Table(title=f"{cfg.problem} / {cfg.integrator}: {cfg.trajectories:,} trajectories x {cfg.steps:,} steps "
                    f"on {result.backend} ({result.device_name}), {speed}")
    from rich.markup import escape
    for col in ("step", "E[I]", "sem", "theory", "z", "E[K]", "E[L]", "E[shadow]", "diverged"):
        t.add_column(escape(col), justify="right")
    idx = np.unique(np.linspace(0, len(result.steps) - 1, min(8, len(result.steps))).astype(int))
    for i in idx:
        th = result.theory.get("inertia") if result.theory else None
        z = (s["inertia_mean"][i] - th[i]) / s["inertia_sem"][i] if th is not None else None
        t.add_row(str(result.steps[i]), f"{s['inertia_mean'][i]:.6g}", f"{s['inertia_sem'][i]:.2g}",
                  f"{th[i]:.6g}" if th is not None else "-", f"{z:+.2f}" if z is not None else "-",
                  f"{s['kinetic_mean'][i]:.6g}", f"{s['loss_mean'][i]:.6g}", f"{s['shadow_inertia_mean'][i]:.6g}",
                  str(int(result.diverged[i])))
    console.print(t)
    fit = result.decay_fit()
    unit = "per unit time" if cfg.continuous else "per step"
    what = "exponent" if fit["model"] == "power" else f"rate ({unit})"
    predicted = ""
    if result.theory and fit["model"] == "exponential":
        from . import theory
        try:
            rates = theory.decay_rate(cfg)
            predicted = f"   exact theory {rates['per_time'] if cfg.continuous else rates['per_step']:.4g}"
        except (ValueError, NotImplementedError, ArithmeticError):
            pass
    if fit.get("rate") is None:
        console.print(escape(f"decay {what}: none ({fit.get('reason', 'no usable steps')})"))
    else:
        console.print(escape(f"decay {what}: {_g(fit['rate'])}  95% CI [{_g(fit['ci95'][0])}, {_g(fit['ci95'][1])}]"
                             f"{predicted}"))
    for entry in first_passage_summary(result.first_passage_hist):
        q = entry["quantiles"]
        if q:
            console.print(f"first step with I <= {entry['fraction']:.3f} I0: median {q['0.5']}, "
                          f"10-90% [{q['0.1']}, {q['0.9']}], reached by {entry['reached']:,}/{entry['total']:,}")
    if result.stationary:
        console.print(f"stationary E[I] (theory): {result.stationary['inertia']:.6g}")
    _print_ledger(console, result)
    if int(result.diverged.max()) > 0:
        console.print(f"[yellow]{int(result.diverged.max()):,} trajectories diverged (excluded from means, "
                      f"counted per step in 'diverged')[/yellow]")


def _print_ledger(console, result) -> None:
    """The ledger's totals at the final step (with theory where it exists), and T_eff beside T."""
    cfg, s = result.config, result.stats
    if not cfg.ledger:
        return
    from rich.markup import escape
    th = result.theory_ledger
    parts = []
    for name, letter in (("injected", "Q"), ("dissipated", "D"), ("residual", "W")):
        exact = f" (theory {th[name][-1]:.5g})" if th else ""
        parts.append(f"{name} {letter} = {_g(s[f'{name}_mean'][-1])} +- {_g(s[f'{name}_sem'][-1])}{exact}")
    console.print(escape(f"ledger over steps 0..{result.steps[-1]}: " + ", ".join(parts)))
    if cfg.noise_model == "temperature":
        t_eff, sem = 2.0 * s["kinetic_mean"][-1] / cfg.dim, 2.0 * s["kinetic_sem"][-1] / cfg.dim
        exact = f" (theory {th['effective_temperature'][-1]:.5g})" if th else ""
        console.print(escape(f"effective temperature 2 E[K]/d at step {result.steps[-1]}: {_g(t_eff)} +- {_g(sem)}"
                             f"{exact}; target T = {cfg.temperature:g}"))


def plot_result(result, path: str) -> None:
    """E[I] with its error band against theory, the first-passage histograms of I <= f I_0, and (with the
    ledger on) where the energy went: the ledger panel below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.stats
    with_ledger = bool(result.config.ledger)
    fig = plt.figure(figsize=(12, 9 if with_ledger else 4.5))
    grid = fig.add_gridspec(2 if with_ledger else 1, 2, width_ratios=[3, 2])
    ax, hx = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    steps = result.steps
    ax.fill_between(steps, s["inertia_mean"] - 2 * s["inertia_sem"], s["inertia_mean"] + 2 * s["inertia_sem"],
                    alpha=0.3, label="E[I] +- 2 sem")
    ax.plot(steps, s["inertia_mean"], label="E[I] simulated")
    ax.plot(steps, s["shadow_inertia_mean"], lw=0.8, label="E[shadow inertia]")
    if result.theory:
        ax.plot(steps, result.theory["inertia"], "k--", lw=1, label="exact theory")
    if result.stationary:
        ax.axhline(result.stationary["inertia"], color="gray", ls=":", label="stationary (theory)")
    ax.set_xlabel("step")
    ax.set_ylabel("inertia")
    if np.all(s["inertia_mean"] > 0):
        ax.set_yscale("log")
    ax.set_title(f"{result.config.problem}, {result.config.integrator}, {result.config.trajectories:,} trajectories")
    ax.legend()

    drawn = False
    for entry in first_passage_summary(result.first_passage_hist):
        hist = entry.get("histogram")
        if hist and hist["steps"]:
            hx.step(hist["steps"], hist["counts"], where="mid",
                    label=f"I <= {entry['fraction']:.3g} I0 ({entry['reached']:,} of {entry['total']:,})")
            drawn = True
    hx.set_xscale("log")  # first-passage times spread over decades under noise and slow modes
    hx.set_xlabel("first recorded step")
    hx.set_ylabel("trajectories")
    hx.set_title("first passage")
    if drawn:
        hx.legend()
    else:
        hx.text(0.5, 0.5, "no trajectory reached f I0", ha="center", transform=hx.transAxes)
    if with_ledger:
        ledger_panel(fig.add_subplot(grid[1, :]), result)
    fig.tight_layout()
    from .output import save_figure
    try:
        save_figure(fig, path, "--plot", dpi=120)
    finally:
        plt.close(fig)


# colours of the ledger panel: energy in (warm), energy out (cool), the integrator's share (grey)
LEDGER_COLOURS = {"injected": "tab:orange", "dissipated": "tab:blue", "residual": "0.6"}


def ledger_panel(ax, result, title: str | None = None) -> None:
    """Where the energy went, cumulative since step 0, stacked about zero: injected Q up, dissipated D
    down, the residual W stacked on the side of its sign, and the net change E[I_k] - E[I_0] = Q - D + W
    as a line. Dashed: the exact expectations (theory.ledger) where they exist."""
    s, steps = result.stats, result.steps
    ax.set_title(title or "inertia ledger: where the energy went (cumulative since step 0)")
    ax.set_xlabel("step")
    ax.set_ylabel("energy")
    d, q, w = (np.nan_to_num(s[f"{name}_mean"]) for name in ("dissipated", "injected", "residual"))
    up, down = np.maximum(w, 0.0), np.minimum(w, 0.0)
    ax.fill_between(steps, 0, q, color=LEDGER_COLOURS["injected"], alpha=0.55, lw=0,
                    label="injected by noise, Q")
    ax.fill_between(steps, q, q + up, color=LEDGER_COLOURS["residual"], alpha=0.7, lw=0,
                    label="residual of the integrator, W")
    ax.fill_between(steps, 0, -d, color=LEDGER_COLOURS["dissipated"], alpha=0.55, lw=0,
                    label="dissipated by friction, -D")
    ax.fill_between(steps, -d, -d + down, color=LEDGER_COLOURS["residual"], alpha=0.7, lw=0)
    net = s["inertia_mean"] - s["inertia_mean"][0]
    ax.plot(steps, net, color="k", lw=1.8, label="net change E[I] - E[I_0] = Q - D + W")
    th = result.theory_ledger
    if th:
        ax.plot(steps, th["injected"], color="saddlebrown", ls="--", lw=1, label="dashed: exact E[Q], -E[D], E[W]")
        ax.plot(steps, -th["dissipated"], color="navy", ls="--", lw=1)
        ax.plot(steps, th["residual"], color="0.2", ls="--", lw=1)
    if result.theory:
        ax.plot(steps, result.theory["inertia"] - result.theory["inertia"][0], color="w", ls=":", lw=1.2)
    ax.axhline(0.0, color="k", lw=0.5)
    top = max(float(np.max(q + up)), float(np.max(net)), 0.0)
    bottom = min(float(np.min(-d + down)), float(np.min(net)), 0.0)
    if top - bottom > 0:
        pad = 0.08 * (top - bottom)
        ax.set_ylim(bottom - pad, top + 3.5 * pad)  # room for the legend above the stack
    ax.legend(loc="upper left", ncols=2, fontsize="small", framealpha=0.9)
    last = -1
    ax.text(0.995, 0.03, f"at step {steps[last]}: Q = {q[last]:.4g}, D = {d[last]:.4g}, W = {w[last]:+.4g}, "
            f"net = {net[last]:+.4g}", ha="right", va="bottom", transform=ax.transAxes, fontsize="small",
            bbox=dict(facecolor="white", alpha=0.85, lw=0))


def _g(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.4g}"
