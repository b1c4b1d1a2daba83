"""`inertia-gpu demo`: the paper's synthetic experiment (arXiv:2505.19171) on a CPU in under a minute.

Five panels, theory overlaid on every one: frictionless conservation
(plain vs shadow inertia), damped decay under constant and Nesterov
momentum, noisy decay to the stationary level on a quadratic, the same
on the double well against its Gibbs quadrature, and the inertia ledger of
the noisy run (energy injected by the noise, dissipated by friction, and the
integrator's residual). A terminal table puts each measured decay rate,
stationary level and ledger total beside its prediction.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from . import theory
from .config import SimulationConfig
from .engine import simulate

SPECTRUM = [0.5, 1.0, 4.0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="inertia_demo.png", help="the figure (PNG)")
    p.add_argument("--json", default=None, help="also write the table as JSON")
    p.add_argument("--trajectories", type=int, default=20_000)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)


def experiments(n: int, backend: str, seed: int) -> dict[str, SimulationConfig]:
    # the ledger is drawn for the noisy quadratic alone; the other runs skip its accumulation
    common = dict(trajectories=n, backend=backend, seed=seed, init_theta_std=1.0, ledger=False)
    return {
        "frictionless": SimulationConfig(spectrum=SPECTRUM, lr=0.05, momentum=1.0, steps=2000, dtype="float64",
                                         **{**common, "trajectories": min(n, 2048)}),
        "damped, constant mu=0.9": SimulationConfig(spectrum=SPECTRUM, lr=0.01, momentum=0.9, steps=300, **common),
        "damped, nesterov:3": SimulationConfig(spectrum=SPECTRUM, lr=0.01, momentum_schedule="nesterov:3",
                                               steps=3000, record_every=10, **common),
        "noisy, T=0.05": SimulationConfig(spectrum=SPECTRUM, lr=0.01, momentum=0.9, noise_model="temperature",
                                          temperature=0.05, steps=600, record_every=2,
                                          **{**common, "ledger": True}),
        "double well, BAOAB T=0.2": SimulationConfig(problem="double-well", dim=2, integrator="baoab", dt=0.05,
                                                     damping=1.0, noise_model="temperature", temperature=0.2,
                                                     steps=1500, record_every=5, init_theta_std=1.0,
                                                     **{k: v for k, v in common.items() if k != "init_theta_std"}),
    }


def tail(result, quantity: str = "inertia", fraction: float = 0.25) -> tuple[float, float]:
    """Mean over the last `fraction` of the recorded steps, with its standard error (ensemble sems, averaged)."""
    k = max(1, int(len(result.steps) * fraction))
    mean = float(np.mean(result.stats[f"{quantity}_mean"][-k:]))
    sem = float(np.mean(result.stats[f"{quantity}_sem"][-k:]))  # steps are correlated: do not divide by sqrt(k)
    return mean, sem


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .output import PLOT_FORMATS, check_path, write_json
    check_path("--out", args.out, PLOT_FORMATS)
    if args.json is not None:
        check_path("--json", args.json)
    t0 = time.perf_counter()
    results = {name: simulate(cfg) for name, cfg in experiments(args.trajectories, args.backend, args.seed).items()}
    rows = table_rows(results)
    elapsed = time.perf_counter() - t0
    figure(results, args.out)

    t = Table(title=f"inertia-gpu demo: measured vs predicted ({elapsed:.1f} s, backend "
                    f"{next(iter(results.values())).backend})")
    for col in ("experiment", "quantity", "measured", "95% CI / +-2 sem", "predicted", "agrees"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["experiment"], r["quantity"], f"{r['measured']:.5g}", f"[{r['low']:.5g}, {r['high']:.5g}]",
                  f"{r['predicted']:.5g}", "yes" if r["agrees"] else "NO")
    Console().print(t)
    print(f"figure: {args.out}")
    if args.json:
        write_json(args.json, {"rows": rows, "elapsed_s": elapsed})
    return 0


def table_rows(results) -> list[dict]:
    rows = []

    def add(experiment, quantity, measured, low, high, predicted):
        rows.append(dict(experiment=experiment, quantity=quantity, measured=measured, low=low, high=high,
                         predicted=predicted, agrees=bool(low <= predicted <= high)))

    r = results["frictionless"]
    dev = np.abs(r.shadow_inertia_mean - r.shadow_inertia_mean[0]) / r.shadow_inertia_mean[0]
    add("frictionless", "max rel. change of shadow inertia", float(dev.max()), 0.0, 1e-10, 0.0)
    osc = float(np.ptp(r.inertia_mean) / r.inertia_mean[0])
    predicted_osc = float(np.ptp(r.theory["inertia"]) / r.theory["inertia"][0])
    err = 4 * 2 * float(r.inertia_sem.max()) / r.inertia_mean[0]  # the range of two means, each +-4 sem
    add("frictionless", "rel. oscillation of plain inertia", osc, osc - err, osc + err, predicted_osc)

    name = "damped, constant mu=0.9"
    fit = results[name].decay_fit()
    add(name, "decay rate per step", fit["rate"], *fit["ci95"], theory.decay_rate(results[name].config)["per_step"])

    name = "damped, nesterov:3"
    res = results[name]
    fit = res.decay_fit()
    # the exponent of the exact discrete theory fitted the same way (an envelope of an oscillating curve)
    from .stats import fit_decay
    th = fit_decay(res.steps, res.theory["inertia"], np.full(len(res.steps), 1e-3) * res.theory["inertia"],
                   0.0, "power")
    add(name, "power-law exponent (I ~ k^-p)", fit["rate"], *fit["ci95"], th["rate"])

    name = "noisy, T=0.05"
    res = results[name]
    m, s = tail(res)
    add(name, "stationary E[I]", m, m - 4 * s, m + 4 * s, res.stationary["inertia"])

    if res.theory_ledger:  # the ledger's totals at the last step, +-4 sem
        for term, what in (("injected", "energy injected by noise, Q"), ("dissipated", "energy dissipated, D")):
            m, s = float(res.stats[f"{term}_mean"][-1]), float(res.stats[f"{term}_sem"][-1])
            add(name, f"{what} (steps 0..{res.steps[-1]})", m, m - 4 * s, m + 4 * s,
                float(res.theory_ledger[term][-1]))

    name = "double well, BAOAB T=0.2"
    res = results[name]
    m, s = tail(res, "loss")
    cfg = res.config
    add(name, "stationary E[L] (Gibbs quadrature)", m, m - 4 * s, m + 4 * s,
        theory.stationary_loss_quadrature("double-well", cfg.temperature, cfg.dim))
    return rows


def figure(results, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 12.5))
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1.05])
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(2)] for i in range(2)])
    ax = axes[0, 0]
    r = results["frictionless"]
    zoom = r.steps <= 150
    shadow_dev = r.shadow_inertia_mean / r.shadow_inertia_mean[0] - 1
    ax.plot(r.steps[zoom], (r.inertia_mean / r.inertia_mean[0] - 1)[zoom], label="plain inertia E[I]")
    ax.plot(r.steps[zoom], shadow_dev[zoom], label="shadow inertia E[shadow]")
    ax.plot(r.steps[zoom], (r.theory["inertia"] / r.theory["inertia"][0] - 1)[zoom], "k--", lw=0.8,
            label="exact theory E[I]")
    ax.text(0.02, 0.04, f"shadow: max |change| = {np.abs(shadow_dev).max():.1e} over {r.steps[-1]} steps",
            transform=ax.transAxes, bbox=dict(facecolor="white", alpha=0.8, lw=0))
    ax.set_title("frictionless heavy ball (mu = 1, lr = 0.05): relative change")
    ax.set_xlabel("step")
    ax.set_ylim(None, 0.45)
    ax.legend(loc="upper right", ncols=2)

    ax = axes[0, 1]
    for name in ("damped, constant mu=0.9", "damped, nesterov:3"):
        r = results[name]
        ax.plot(r.steps, r.inertia_mean, label=f"{name}")
        ax.plot(r.steps, r.theory["inertia"], "k--", lw=0.8)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, None)
    ax.set_yscale("log")
    ax.set_title("damped decay of E[I] (dashed: exact theory)")
    ax.set_xlabel("step")
    ax.legend()

    ax = axes[1, 0]
    r = results["noisy, T=0.05"]
    ax.fill_between(r.steps, r.inertia_mean - 2 * r.inertia_sem, r.inertia_mean + 2 * r.inertia_sem, alpha=0.3)
    ax.plot(r.steps, r.inertia_mean, label="E[I] simulated (+-2 sem)")
    ax.plot(r.steps, r.theory["inertia"], "k--", lw=0.8, label="exact theory")
    ax.axhline(r.stationary["inertia"], color="gray", ls=":", label="stationary level (theory)")
    ax.axhline(len(SPECTRUM) * r.config.temperature, color="tab:red", ls=":", lw=0.8,
               label="continuous-time Gibbs dT")
    ax.set_yscale("log")
    ax.set_title("noisy heavy ball at temperature T = 0.05: decay to the stationary level")
    ax.set_xlabel("step")
    ax.legend()

    ax = axes[1, 1]
    r = results["double well, BAOAB T=0.2"]
    cfg = r.config
    ax.fill_between(r.steps, r.loss_mean - 2 * r.loss_sem, r.loss_mean + 2 * r.loss_sem, alpha=0.3)
    ax.plot(r.steps, r.loss_mean, label="E[L]")
    ax.plot(r.steps, r.kinetic_mean, label="E[K]")
    ax.axhline(theory.stationary_loss_quadrature("double-well", cfg.temperature, cfg.dim), color="k", ls="--",
               lw=0.8, label="Gibbs E[L] (quadrature)")
    ax.axhline(cfg.dim * cfg.temperature / 2, color="gray", ls=":", label="equipartition E[K] = dT/2")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, None)
    ax.set_title("double well, BAOAB (gamma = 1, T = 0.2)")
    ax.set_xlabel("step")
    ax.legend()

    from .report import ledger_panel
    ledger_panel(fig.add_subplot(grid[2, :]), results["noisy, T=0.05"],
                 "inertia ledger of the noisy heavy ball (T = 0.05): where the energy went, cumulative since step 0")
    fig.suptitle("Computational inertia I = K + L: conservation, damped decay, noisy equilibrium")
    fig.tight_layout()
    from .output import save_figure
    try:
        save_figure(fig, path, "--out", dpi=110)
    finally:
        plt.close(fig)
