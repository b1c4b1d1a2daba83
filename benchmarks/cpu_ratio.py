"""The CPU target, measured side by side in one run: auto backend vs plain per-step PyTorch loops.

    python benchmarks/cpu_ratio.py [--trajectories 1000000] [--steps 100] [--rounds 3] [--out PATH]

Ensemble: `inertia-gpu simulate` defaults (quadratic d = 1, heavy ball lr 0.01,
momentum 0.9, record every step) with --noise 0.1, 10^6 trajectories x 100 steps.
Timed, interleaved round by round so that load on a shared machine hits all alike:

  auto      engine.simulate with --backend auto (numba here), the figure
            `inertia-gpu simulate` reports (elapsed_s of the engine);
  eager     a minimal hand-written per-step torch loop over the same ensemble:
            torch.randn noise, the same update and the same per-step group sums;
  torch     engine.simulate with --backend torch: the reference backend, a
            per-step torch loop drawing the same Philox stream as numba.

plus, once, the CLI itself in a subprocess (`inertia-gpu simulate ... --json`,
its trajectory_steps_per_s) and the numba compile time in a fresh cache
directory (reported separately; timed runs load the cached kernel and warm up
first). Writes benchmarks/results/cpu-<date>-<cores>core.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from inertia_gpu import engine
from inertia_gpu.bench import cpu_model, eager_step_fn
from inertia_gpu.config import SimulationConfig

HERE = Path(__file__).resolve().parent


def cold_compile_seconds() -> float:
    """First numba call in a fresh process with an empty cache directory (JIT compile of one dtype)."""
    code = ("import time; t=time.perf_counter();"
            "from inertia_gpu.config import SimulationConfig;"
            "from inertia_gpu.backends.numba_cpu import NumbaEnsemble;"
            "c=SimulationConfig(trajectories=64, steps=4, noise=0.1).validate();"
            "t1=time.perf_counter(); NumbaEnsemble().run(c,0,64,0,4,None);"
            "print(time.perf_counter()-t1)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def eager_loop(n: int, steps: int) -> float:
    step = eager_step_fn(n, "cpu")
    t0 = time.perf_counter()
    theta = torch.randn(n)
    b = torch.zeros(n)
    sums = []
    for _ in range(steps):
        theta, b, s = step(theta, b)
        sums.append(s)
    torch.stack(sums)
    return time.perf_counter() - t0


def cli_run(n: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        cmd = ["inertia-gpu", "simulate", "--noise", "0.1", "--trajectories", str(n), "--steps", str(steps),
               "--quiet", "--json", path]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        with open(path) as fh:
            rep = json.load(fh)
    return {"command": " ".join(cmd[:-2]), "backend": rep["backend"], "elapsed_s": rep["elapsed_s"],
            "trajectory_steps_per_s": rep["trajectory_steps_per_s"], "process_wall_s": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of auto and eager")
    ap.add_argument("--reference-rounds", type=int, default=1, help="rounds of the (slow) torch reference backend")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    n, steps = args.trajectories, args.steps
    cfg = SimulationConfig(trajectories=n, steps=steps, noise=0.1, backend="auto").validate()
    work = n * steps

    print("numba cold compile (fresh cache) ...", flush=True)
    compile_s = cold_compile_seconds()
    t0 = time.perf_counter()
    engine.simulate(dataclasses.replace(cfg, trajectories=4096, steps=8), with_theory=False)  # load cache, warm up
    warm_s = time.perf_counter() - t0
    eager_loop(min(n, 65536), 4)

    times = {"auto": [], "eager": [], "torch": []}
    backend_name = None
    for r in range(max(args.rounds, args.reference_rounds)):
        if r < args.rounds:
            res = engine.simulate(cfg, with_theory=False)
            backend_name = res.backend
            times["auto"].append(res.elapsed_s)
            times["eager"].append(eager_loop(n, steps))
            print(f"round {r}: auto({res.backend}) {res.elapsed_s:.2f} s, eager {times['eager'][-1]:.2f} s", flush=True)
        if r < args.reference_rounds:
            ref = engine.simulate(dataclasses.replace(cfg, backend="torch"), with_theory=False)
            times["torch"].append(ref.elapsed_s)
            print(f"round {r}: torch reference {ref.elapsed_s:.2f} s", flush=True)
    print("CLI run ...", flush=True)
    cli = cli_run(n, steps)

    def fig(ts):
        return {"times_s": ts, "median_s": statistics.median(ts), "min_s": min(ts),
                "traj_steps_per_s_median": work / statistics.median(ts), "traj_steps_per_s_best": work / min(ts)}

    figures = {
        "auto": {"backend": backend_name, **fig(times["auto"])},
        "eager_torch_randn_loop": fig(times["eager"]),
        "torch_reference_backend": fig(times["torch"]),
        "cli_simulate": cli,
    }
    a = figures["auto"]["median_s"]
    ratios = {
        "auto_over_torch_reference": figures["torch_reference_backend"]["median_s"] / a,
        "auto_over_eager_randn_loop": figures["eager_torch_randn_loop"]["median_s"] / a,
        "auto_over_eager_randn_loop_best": figures["eager_torch_randn_loop"]["min_s"] / figures["auto"]["min_s"],
        "cli_over_torch_reference": cli["trajectory_steps_per_s"] / figures["torch_reference_backend"]["traj_steps_per_s_median"],
    }
    cores = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    import numba
    result = {
        "device": {"cpu_model": cpu_model(), "cores": cores, "torch_threads": torch.get_num_threads(),
                   "numba_threads": numba.get_num_threads(), "loadavg_at_end": load},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "numba": numba.__version__, "python": sys.version.split()[0]},
        "config": cfg.to_dict(),
        "trajectory_steps": work,
        "timing": "engine elapsed_s (perf_counter around the backend launches), rounds interleaved; ratio = median "
                  "time of the peer / median time of auto",
        "numba_cold_compile_s": compile_s,
        "numba_cache_load_and_warmup_s": warm_s,
        "figures": figures,
        "ratios": ratios,
        "target": "auto >= 3x a plain per-step PyTorch loop (torch reference backend with its Philox)",
        "target_met": ratios["auto_over_torch_reference"] >= 3,
    }
    out = args.out or str(HERE / "results" / f"cpu-{dt.date.today().isoformat()}-{cores}core.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({"ratios": ratios, "compile_s": compile_s}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
