"""The static profile as terminal tables (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _e(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def ensemble_table(entries: list[dict]) -> Table:
    t = Table(title="ensemble kernel: SASS per trajectory-step (static prediction)")
    for col in ("variant", "regs", "spill B", "warps/SM", "SASS/step", "rng", "normal", "dyn", "stats", "ctrl",
                "binding", "issue lim /s", "pipe lim /s", "compile s"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for e in entries:
        if "error" in e:
            t.add_row(e["name"], *[""] * 12, str(e.get("compile_s", "")), style="red")
            t.add_row("", f"[red]{e['error']}[/red]")
            continue
        b = e["breakdown"]
        t.add_row(e["name"], str(e["registers"]), str(e["spill_bytes"]), str(e["warps_per_sm"]),
                  f"{e['sass_per_trajectory_step']:.1f}", *(f"{b[k]:.1f}" for k in b), e["binding_pipe"],
                  _e(e["issue_limited_trajectory_steps_per_s"]), _e(e["pipe_limited_trajectory_steps_per_s"]),
                  f"{e['compile_s']:.0f}")
    return t


def optimizer_table(entries: list[dict]) -> Table:
    t = Table(title="SGD kernel: per parameter (static prediction)")
    for col in ("variant", "regs", "spill B", "warps/SM", "SASS/param", "bytes/param", "widest bits", "binding",
                "issue lim /s", "HBM lim /s", "compile s"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for e in entries:
        if "error" in e:
            t.add_row(e["name"], *[""] * 9, str(e.get("compile_s", "")), style="red")
            t.add_row("", f"[red]{e['error']}[/red]")
            continue
        t.add_row(e["name"], str(e["registers"]), str(e["spill_bytes"]), str(e["warps_per_sm"]),
                  f"{e['sass_per_param']:.2f}", f"{e['bytes_per_param']:.1f}", str(e["widest_access_bits"]),
                  e["binding_pipe"], _e(e["issue_limited_params_per_s"]), _e(e["hbm_limited_params_per_s"]),
                  f"{e['compile_s']:.0f}")
    return t


def print_profile(result: dict, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 150))
    g = result["gpu"]
    console.print(f"[bold]static profile[/bold] {result['arch']} = {g['name']} ({g['sms']} SMs, "
                  f"{g['clock_hz'] / 1e9:.2f} GHz, {g['hbm_bytes_per_s'] / 1e12:.2f} TB/s), triton {result['triton']}")
    if result["ensemble"]:
        console.print(ensemble_table(result["ensemble"]))
    if result["optimizer"]:
        console.print(optimizer_table(result["optimizer"]))
    for line in result["caveats"]:
        console.print(f"  * {line}", style="dim")
