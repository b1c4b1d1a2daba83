"""The static profile as terminal tables (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _e(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def ensemble_table(entries: list[dict]) -> Table:
    t = Table(title="ensemble kernel: SASS per trajectory-step (static prediction)")
    t.add_column("variant", no_wrap=True)
    for col in ("regs", "spill B", "warps/SM", "SASS/step", "/coord", "rng", "normal", "dyn", "stats", "ctrl",
                "binding", "issue lim /s", "pipe lim /s", "B/coord-step", "HBM lim coord/s", "compile s"):
        t.add_column(col, justify="right")
    for e in entries:
        if "error" in e:
            t.add_row(e["name"], "[red]error[/red]", *[""] * 14, f"{e.get('compile_s', 0):.0f}")
            continue
        b = e["breakdown"]
        t.add_row(e["name"], str(e["registers"]), str(e["spill_bytes"]), str(e["warps_per_sm"]),
                  f"{e['sass_per_trajectory_step']:.1f}", f"{e['sass_per_coordinate_step']:.1f}",
                  *(f"{b[k]:.1f}" for k in b), e["binding_pipe"],
                  _e(e["issue_limited_trajectory_steps_per_s"]), _e(e["pipe_limited_trajectory_steps_per_s"]),
                  f"{e.get('bytes_per_coordinate_step', 0):.2f}", _e(e.get("hbm_limited_coordinate_steps_per_s")),
                  f"{e['compile_s']:.0f}")
    return t


def optimizer_table(entries: list[dict]) -> Table:
    t = Table(title="SGD kernel: per parameter (static prediction)")
    t.add_column("variant", no_wrap=True)
    for col in ("regs", "spill B", "warps/SM", "SASS/param", "bytes/param", "widest bits", "binding",
                "issue lim /s", "HBM lim /s", "compile s"):
        t.add_column(col, justify="right")
    for e in entries:
        if "error" in e:
            t.add_row(e["name"], "[red]error[/red]", *[""] * 8, f"{e.get('compile_s', 0):.0f}")
            continue
        t.add_row(e["name"], str(e["registers"]), str(e["spill_bytes"]), str(e["warps_per_sm"]),
                  f"{e['sass_per_param']:.2f}", f"{e['bytes_per_param']:.1f}", str(e["widest_access_bits"]),
                  e["binding_pipe"], _e(e["issue_limited_params_per_s"]), _e(e["hbm_limited_params_per_s"]),
                  f"{e['compile_s']:.0f}")
    return t


def print_profile(result: dict, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 190))
    g = result["gpu"]
    console.print(f"[bold]static profile[/bold] {result['arch']} = {g['name']} ({g['sms']} SMs, "
                  f"{g['clock_hz'] / 1e9:.2f} GHz, {g['hbm_bytes_per_s'] / 1e12:.2f} TB/s), triton {result['triton']}")
    if result["ensemble"]:
        console.print(ensemble_table(result["ensemble"]))
    if result["optimizer"]:
        console.print(optimizer_table(result["optimizer"]))
    for e in result["ensemble"] + result["optimizer"]:
        for warning in e.get("warnings", []):
            console.print(f"[yellow]{e['name']}: {warning}[/yellow]")
        if "error" in e:
            console.print(f"[red]{e['name']}: {e['error']}[/red]")
        elif "budget" in e:
            found = e["budget"]["violations"]
            console.print(f"budget {e['name']}: " + ("[green]met[/green]" if not found else
                                                     "[red]" + "; ".join(found) + "[/red]"))
    for line in result["caveats"]:
        console.print(f"  * {line}", style="dim")
