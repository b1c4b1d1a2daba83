"""The CPU path against the loop a user would write instead, as whole processes, in one run.

    python benchmarks/cpu_ratio.py [--sizes 1000000,10000000] [--steps 100] [--rounds 3] [--no-compile] [--out PATH]

The ensemble: d = 1 heavy ball on L = lambda/2 theta^2 (lambda 2), lr 0.01,
momentum 0.95, additive gradient noise 0.5, the mean inertia at every step.
For each size, round by round (alternating, so that load on a shared machine
hits every contender alike), three whole processes, each timed from spawn to
exit (interpreter start, imports, work, output):

  cli       python -m inertia_gpu.cli simulate ... --ledger --quiet --json out.json: what a user runs
            (the ledger is on by default; --ledger says so explicitly; auto backend: numba here;
            statistics, the ledger, theory and the decay fit in the JSON);
  cli-no-ledger  the same with --no-ledger: the like-for-like contender, since the plain loop
            computes only the mean inertia (no dissipated/injected energy per trajectory);
  plain     python benchmarks/peers/plain_torch_loop.py N STEPS: torch.randn noise,
            b.mul_(mu).add_(grad), th.sub_(lr * b), one float64 mean of the inertia per step;
  compiled  the same script with its step under torch.compile (compile time included:
            a user pays it on every run).

Reported separately: the in-process kernel rate over 10^6 x 100, noisy,
recording every step, warm, with and without the ledger, alternating within
the probe (the probes alternate with the rounds), two ways: through
NumbaEnsemble.run (fresh state and output arrays each call) and the kernel
launch alone on arrays allocated once,
start-up (import torch alone; a whole `simulate` of 64 x 1), and what the
first process pays for numba's cache (a cold compile into an empty cache
directory) against the second (loading it). Ratios are the peer's median
wall time over the CLI's. Writes benchmarks/results/cpu-<date>-<cores>core.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER = HERE / "peers" / "plain_torch_loop.py"
SETTINGS = {"lr": 0.01, "momentum": 0.95, "noise": 0.5, "lam": 2.0}  # as in the peer script
KERNEL_TRAJECTORIES = 1_000_000


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def cli_command(n: int, steps: int, json_path: str, ledger: bool = True) -> list[str]:
    s = SETTINGS
    return [sys.executable, "-m", "inertia_gpu.cli", "simulate", "--trajectories", str(n), "--steps", str(steps),
            "--lr", str(s["lr"]), "--momentum", str(s["momentum"]), "--noise", str(s["noise"]),
            "--spectrum", str(s["lam"]), "--ledger" if ledger else "--no-ledger", "--quiet", "--json", json_path]


def timed(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """(wall seconds from spawn to exit, stdout)."""
    t0 = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env or _env())
    return time.perf_counter() - t0, out.stdout


def kernel_probe(n: int, steps: int, repeat: int) -> dict:
    """In a fresh process: import and cache-load costs, then the warm kernel rate (best and median)."""
    code = f"""
import dataclasses, json, time
t0 = time.perf_counter()
from inertia_gpu.backends.numba_cpu import NumbaEnsemble
from inertia_gpu.backends import numba_cpu as nc
from inertia_gpu.config import SimulationConfig
import numba, numpy as np
t1 = time.perf_counter()
c = SimulationConfig(trajectories={n}, steps={steps}, noise={SETTINGS['noise']}, lr={SETTINGS['lr']},
                     momentum={SETTINGS['momentum']}, spectrum=[{SETTINGS['lam']}], replicates=1).validate()
cs = {{True: c, False: dataclasses.replace(c, ledger=False)}}
b = NumbaEnsemble()
b.run(c, 0, 64, 0, 4, None)
t2 = time.perf_counter()
b.run(cs[False], 0, 64, 0, 4, None)

def launch(cfg):  # the kernel alone: the same window (initial draw, {steps} steps) into arrays allocated once
    f = nc.NP_DTYPES[cfg.dtype]
    st = (np.empty(({n}, 1), f), np.empty(({n}, 1), f), np.empty({n}), np.empty(({n}, 3), np.int32),
          np.empty(({n}, 2)) if cfg.ledger else None)
    out = nc.new_partials(nc.window_rows(cfg, 0, {steps})[2], nc.n_groups({n}))
    lam = nc.eigenvalues(cfg, 0, {n})
    return lambda: nc._launch(cfg, st, lam, 0, 0, {steps}, 1, out)

go = {{ledger: launch(cfg) for ledger, cfg in cs.items()}}
for g in go.values():  # first touch of the arrays (page faults): allocation, not the kernel's work
    g()
ts = {{True: [], False: []}}
tl = {{True: [], False: []}}
for _ in range({repeat}):
    for ledger in (True, False):
        t = time.perf_counter(); b.run(cs[ledger], 0, {n}, 0, {steps}, None); ts[ledger].append(time.perf_counter() - t)
        t = time.perf_counter(); go[ledger](); tl[ledger].append(time.perf_counter() - t)
print(json.dumps({{"import_s": t1 - t0, "first_call_s": t2 - t1, "times_s": ts[True], "times_no_ledger_s": ts[False],
                  "launch_times_s": tl[True], "launch_times_no_ledger_s": tl[False],
                  "threads": numba.get_num_threads()}}))
"""
    _, out = timed([sys.executable, "-c", code])
    return json.loads(out.strip().splitlines()[-1])


def cache_costs() -> dict:
    """First process into an empty numba cache directory (compiles), then a second one (loads the cache)."""
    code = ("import time; t=time.perf_counter();"
            "from inertia_gpu.backends.numba_cpu import NumbaEnsemble;"
            "from inertia_gpu.config import SimulationConfig;"
            "c=SimulationConfig(trajectories=64, steps=4, noise=0.5).validate();"
            "t1=time.perf_counter(); NumbaEnsemble().run(c,0,64,0,4,None);"
            "print(time.perf_counter()-t1)")
    with tempfile.TemporaryDirectory() as tmp:
        first, out1 = timed([sys.executable, "-c", code], _env(NUMBA_CACHE_DIR=tmp))
        second, out2 = timed([sys.executable, "-c", code], _env(NUMBA_CACHE_DIR=tmp))
    return {"first_process_first_call_s": float(out1.split()[-1]), "first_process_wall_s": first,
            "second_process_first_call_s": float(out2.split()[-1]), "second_process_wall_s": second,
            "what": "float32 kernel: a cold compile into an empty NUMBA_CACHE_DIR, then a process loading that cache"}


def startup(rounds: int) -> dict:
    sim = cli_command(64, 1, os.devnull)[:-2]
    times = {"import_torch_s": [], "simulate_64x1_s": []}
    for _ in range(rounds):
        times["import_torch_s"].append(timed([sys.executable, "-c", "import torch"])[0])
        times["simulate_64x1_s"].append(timed(sim)[0])
    return {k: {"times_s": v, "best_s": min(v), "median_s": statistics.median(v)} for k, v in times.items()}


def summary(ts: list[float]) -> dict:
    return {"times_s": ts, "median_s": statistics.median(ts), "best_s": min(ts)}


def whole_processes(n: int, steps: int, rounds: int, compiled: bool, kernel: list, log) -> dict:
    contenders = {"cli": None, "cli-no-ledger": None, "plain": [sys.executable, str(PEER), str(n), str(steps)]}
    if compiled:
        contenders["compiled"] = contenders["plain"] + ["--compile"]
    times = {k: [] for k in contenders}
    inner = {k: [] for k in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        for r in range(rounds):
            for name, cmd in contenders.items():
                wall, out = timed(cmd or cli_command(n, steps, path, ledger=name == "cli"))
                times[name].append(wall)
                if cmd is None:
                    with open(path) as fh:
                        rep = json.load(fh)
                    inner[name].append(rep["elapsed_s"])
                    backend = rep["backend"]
                else:
                    inner[name].append(json.loads(out.strip().splitlines()[-1])["kernel_s"])
            if n == KERNEL_TRAJECTORIES:  # the kernel probe alternates with the rounds of its size
                kernel.append(kernel_probe(KERNEL_TRAJECTORIES, steps, 5))
            log(f"  {n:>10,d} round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    result = {"trajectories": n, "steps": steps, "cli_backend": backend,
              "commands": {"cli": " ".join(cli_command(n, steps, "out.json")[1:]),
                           "cli-no-ledger": " ".join(cli_command(n, steps, "out.json", ledger=False)[1:]),
                           **{k: " ".join(v[1:]) for k, v in contenders.items() if v}},
              "process_wall": {k: summary(v) for k, v in times.items()},
              "in_process_s": {k: summary(v) for k, v in inner.items()}}
    cli = statistics.median(times["cli"])
    result["ratio_over_cli"] = {k: statistics.median(v) / cli for k, v in times.items() if k != "cli"}
    result["ratio_over_cli_best"] = {k: min(v) / min(times["cli"]) for k, v in times.items() if k != "cli"}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="trajectory counts, comma-separated")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per size")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile peer")
    ap.add_argument("--no-cache-check", action="store_true", help="skip the cold numba compile (minutes)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    log("numba cache: cold compile, then load ...")
    cache = None if args.no_cache_check else cache_costs()
    for ledger in (True, False):  # both specialisations of this checkout are in its cache before timing
        timed(cli_command(64, 1, os.devnull, ledger)[:-2])
    log("start-up ...")
    start = startup(args.rounds)
    kernel: list = []
    runs = []
    for n in sizes:
        log(f"whole processes, {n:,d} x {args.steps} ...")
        runs.append(whole_processes(n, args.steps, args.rounds, not args.no_compile, kernel, log))
    if not kernel:
        kernel.append(kernel_probe(KERNEL_TRAJECTORIES, args.steps, 5))
    work = KERNEL_TRAJECTORIES * args.steps
    # (best, median) over the probes of each series of calls
    rate = {key: (min(min(k[key]) for k in kernel), statistics.median(statistics.median(k[key]) for k in kernel))
            for key in ("times_s", "times_no_ledger_s", "launch_times_s", "launch_times_no_ledger_s")}
    import numba
    import torch
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                   "numba_threads": kernel[0]["threads"], "loadavg_at_end": load},
        "versions": {"torch": torch.__version__, "numba": numba.__version__, "python": sys.version.split()[0]},
        "ensemble": {"problem": "quadratic d=1, lambda 2", "integrator": "heavy ball", **SETTINGS,
                     "recorded": "mean inertia every step", "steps": args.steps},
        "timing": "whole processes from spawn to exit, contenders alternating round by round; ratio = median wall "
                  "time of the peer / median wall time of the CLI",
        "whole_process": runs,
        "kernel": {"trajectories": KERNEL_TRAJECTORIES, "steps": args.steps, "probes": kernel,
                   "traj_steps_per_s_best": work / rate["times_s"][0],
                   "traj_steps_per_s_median": work / rate["times_s"][1],
                   "no_ledger_traj_steps_per_s_best": work / rate["times_no_ledger_s"][0],
                   "no_ledger_traj_steps_per_s_median": work / rate["times_no_ledger_s"][1],
                   "launch_traj_steps_per_s_best": work / rate["launch_times_s"][0],
                   "launch_traj_steps_per_s_median": work / rate["launch_times_s"][1],
                   "launch_no_ledger_traj_steps_per_s_best": work / rate["launch_times_no_ledger_s"][0],
                   "launch_no_ledger_traj_steps_per_s_median": work / rate["launch_times_no_ledger_s"][1],
                   "what": "in a warm process, noisy d=1, every step recorded, the ledger on (the default) and off "
                           "(config.ledger False), alternating: times_s is NumbaEnsemble.run (the backend's door: "
                           "allocating the state, NaN-poisoned, and the output table, 157 MB of fresh memory at "
                           "10^6 x 100, then the launch); launch_times_s is the kernel launch alone "
                           "(numba_cpu._launch: the coefficient table, then the kernel) on the same window into "
                           "arrays allocated once"},
        "startup": start,
        "numba_cache": cache,
    }
    result["targets"] = {f"whole process {r['trajectories']:.0e} x {r['steps']}: plain / cli":
                         r["ratio_over_cli"]["plain"] for r in runs}
    result["targets"].update({f"whole process {r['trajectories']:.0e} x {r['steps']}: plain / cli --no-ledger":
                              r["ratio_over_cli"]["plain"] / r["ratio_over_cli"]["cli-no-ledger"] for r in runs})
    result["targets"]["kernel traj-steps/s (best)"] = result["kernel"]["traj_steps_per_s_best"]
    result["targets"]["kernel traj-steps/s without the ledger (best)"] = \
        result["kernel"]["no_ledger_traj_steps_per_s_best"]
    result["targets"]["kernel launch alone traj-steps/s (best)"] = result["kernel"]["launch_traj_steps_per_s_best"]
    result["targets"]["kernel launch alone traj-steps/s without the ledger (best)"] = \
        result["kernel"]["launch_no_ledger_traj_steps_per_s_best"]
    out = args.out or str(HERE / "results" / f"cpu-{dt.date.today().isoformat()}-{os.cpu_count()}core.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result["targets"], indent=1))
    print(f"wrote {out}")
    return 0


def _cpu_model() -> str:
    from inertia_gpu.bench import cpu_model  # the name bench JSONs use, so results files line up
    return cpu_model()


if __name__ == "__main__":
    sys.exit(main())
