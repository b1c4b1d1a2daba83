"""`inertia-gpu bench`: kernel throughput against the device's ceilings and against peers.

One run measures, on one device:

* ceilings, once: copy bandwidth (a large tensor copy; bytes read + written
  per second) and the float32 arithmetic rate of a large matmul (2 n^3 flop);
* the ensemble kernels (suite `ensemble`) at several sizes, d = 1 heavy ball
  (lr 0.01, momentum 0.95, additive noise 0.5, lambda 2), recording every
  step: the fast backend of the device (numba on the CPU, triton on CUDA),
  the torch reference backend, and the peers a user would write instead: the
  plain per-step torch loop (torch.randn noise, in-place momentum and
  parameter updates, one float64 mean of the inertia per step; the loop of
  benchmarks/peers/plain_torch_loop.py) and the same loop under torch.compile
  when it works here. Figures: median time after warm-up, trajectory-steps/s,
  arithmetic rate from an explicit op count (ENSEMBLE_OPS) and each peer's
  ratio; plus the start-up a user pays (a whole `simulate` process on a tiny
  run, and `import torch` alone), measured in fresh processes;
* the fused optimizer step (suite `optimizer`): InertiaSGD against
  torch.optim.SGD foreach / fused / for-loop, with the achieved GB/s of the
  algorithmic minimum traffic (read p, g, b; write p, b) as a fraction of the
  copy ceiling.

Timing: median of repeats after warm-up; torch.cuda.Event pairs on CUDA,
time.perf_counter on the CPU. Output: a rich table, JSON (--json) holding
device, date, sizes, ceilings, figures and peer ratios, and a roofline plot
(--plot, PNG).

Optional pieces are imported lazily: without InertiaSGD the optimizer suite
says so and is skipped.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

# Explicit op count per trajectory-step of the benchmarked ensemble (d = 1 heavy ball,
# additive noise, every step recorded), as the kernels compute it. Transcendentals
# (log, sqrt, sin, cos) count as one op each. Box-Muller is per normal (one per step).
ENSEMBLE_OPS = {
    "dynamics": 7,          # lam*theta, s*xi, +, mu*b, +, lr*b, theta -
    "observe": 9,           # K = lr/2 b^2 (2), L (2, lam*theta shared), I (1), shadow (3), 0.5 (1)
    "first_passage": 3,     # f * I0 for three fractions
    "group_sums": 6,        # 5 float64 adds + inertia^2
    "box_muller": 6,        # 2 scale, (-2 log u1), sqrt, 2 pi u2, sin|cos, r * ... per normal, halved over the pair
}
ENSEMBLE_FLOP_PER_TRAJ_STEP = sum(ENSEMBLE_OPS.values())
PHILOX_INT_OPS_PER_TRAJ_STEP = 10 * 12 / 4  # 10 rounds x (2 mul, 4 xor, 2 key add, 2 shift, 2 mask) per 4 steps
OPTIMIZER_BYTES_PER_ELEMENT = 5 * 4  # read p, g, b; write p, b (float32): the algorithmic minimum
OPTIMIZER_FLOP_PER_ELEMENT = 4  # b = mu b + g (2), p -= lr b (2)


# --- timing primitives -----------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str, repeat: int = 5, warmup: int = 1,
              min_time: float = 0.0, budget_s: float | None = None) -> dict:
    """Median seconds of fn() after `warmup` calls; CUDA events on the GPU, perf_counter on the CPU.

    budget_s: stop repeating (after at least one timed call) once this much time is spent.
    """
    t_start = time.perf_counter()
    for _ in range(warmup):
        fn()
        if budget_s is not None and time.perf_counter() - t_start > budget_s / 2:
            break
    _sync(device)
    times = []
    spent = 0.0
    while len(times) < repeat or spent < min_time:
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        times.append(t)
        spent += t
        if len(times) >= 10 * max(repeat, 1):
            break
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- ceilings ------------------------------------------------------------------------------------

def ceilings(device: str, quick: bool) -> dict:
    """Copy bandwidth (bytes read + written) and float32 matmul rate of this device (best of 5 repeats)."""
    n_bytes = (256 if quick else 1024) * 2 ** 20 if device == "cpu" else 2048 * 2 ** 20
    src = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), device, repeat=5, warmup=2)
    bandwidth = 2 * n_bytes / t["min_s"]  # a ceiling: the best repeat
    # context only: an in-place scale (read + write of one buffer) can beat a copy on some CPUs
    ti = time_call(lambda: src.mul_(1.0), device, repeat=5, warmup=1)
    inplace = 2 * n_bytes / ti["min_s"]
    src = dst = None  # free the buffers before the matmul (the lambdas above are done with them)
    n = (1024 if quick else 2048) if device == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    tm = time_call(lambda: a @ b, device, repeat=5, warmup=2)
    return {
        "copy_bandwidth_Bps": bandwidth,
        "copy_bytes": n_bytes,
        "copy_method": "dst.copy_(src) float32, bytes read + written",
        "inplace_scale_bandwidth_Bps": inplace,
        "fp32_flops": 2 * n ** 3 / tm["min_s"],
        "fp32_method": f"float32 matmul {n}x{n}x{n} (2 n^3 flop), TF32 off",
    }


# --- ensemble suite -------------------------------------------------------------------------

# the benchmarked ensemble: d = 1 heavy ball on L = lam/2 theta^2, additive gradient noise
ENSEMBLE_SETTINGS = {"lr": 0.01, "momentum": 0.95, "noise": 0.5, "lam": 2.0}


def _ensemble_config(n: int, steps: int, device: str, backend: str):
    from .config import SimulationConfig
    e = ENSEMBLE_SETTINGS
    return SimulationConfig(trajectories=n, steps=steps, noise=e["noise"], lr=e["lr"], momentum=e["momentum"],
                            spectrum=[e["lam"]], device=device, backend=backend, replicates=1).validate()


def backend_runner(name: str, n: int, steps: int, device: str) -> Callable[[], object] | str:
    """A callable running one launch of backend `name` over [0, n) x [0, steps), or why not."""
    from . import backends
    cfg = _ensemble_config(n, steps, device, name)
    reason = backends.unavailable_reason(name, cfg)
    if reason is not None:
        return reason
    backend = backends.backend_class(name)()
    return lambda: backend.run(cfg, 0, n, 0, steps, None)


def eager_step_fn(n: int, device: str, lr=0.01, mu=0.95, s=0.5, lam=2.0):
    """One step of the loop a user writes instead: torch.randn noise, in-place momentum and parameter
    updates, the mean inertia E[lr/2 b^2 + L] in float64 (benchmarks/peers/plain_torch_loop.py).

    step(theta, b) -> (theta, b, mean inertia); theta and b are updated in place.
    """
    def step(theta, b):
        g = lam * theta + s * torch.randn_like(theta)
        b.mul_(mu).add_(g)
        theta.sub_(lr * b)
        inertia = (0.5 * lr) * b * b + (0.5 * lam) * theta * theta
        return theta, b, inertia.mean(dtype=torch.float64)

    return step


def loop_runner(n: int, steps: int, device: str, compiled: bool) -> Callable[[], object] | str:
    e = ENSEMBLE_SETTINGS
    step = eager_step_fn(n, device, lr=e["lr"], mu=e["momentum"], s=e["noise"], lam=e["lam"])
    if compiled:
        try:
            step = torch.compile(step, dynamic=False)
            theta = torch.randn(n, device=device)
            step(theta, torch.zeros_like(theta))  # compile now (reported separately)
        except Exception as exc:  # noqa: BLE001 - any failure means "not here"
            return f"torch.compile unavailable here: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"

    def run():
        torch.manual_seed(0)
        theta = torch.randn(n, device=device)
        b = torch.zeros_like(theta)
        means = [step(theta, b)[2] for _ in range(steps)]
        return torch.stack(means)

    return run


def process_seconds(args: list[str], env: dict | None = None) -> float:
    """Wall time of a whole process (interpreter start, imports, work, exit), from here."""
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - t0


def startup(repeat: int = 3) -> dict:
    """What a user pays before any work: `import torch` alone, and a whole `simulate` of 64 x 1 (best of repeat)."""
    sim = [sys.executable, "-m", "inertia_gpu.cli", "simulate", "--trajectories", "64", "--steps", "1", "--quiet"]
    torch_only = [sys.executable, "-c", "import torch"]
    times = {"import_torch_s": [], "simulate_64x1_s": []}
    for _ in range(repeat):  # alternating, so that load on a shared machine hits both alike
        times["import_torch_s"].append(process_seconds(torch_only))
        times["simulate_64x1_s"].append(process_seconds(sim))
    out = {k: min(v) for k, v in times.items()}
    out["what"] = "whole processes, best of %d: python -c 'import torch'; python -m inertia_gpu.cli simulate " \
                  "--trajectories 64 --steps 1 --quiet (imports, numba cache load, statistics)" % repeat
    return out


def ensemble_suite(device: str, quick: bool, log=print) -> dict:
    steps = 50 if quick else 100
    sizes = [8_192, 65_536] if quick else [10_000, 100_000, 1_000_000]
    if device == "cuda":
        sizes = [100_000, 1_000_000] if quick else [100_000, 1_000_000, 10_000_000]
    fast = "numba" if device == "cpu" else "triton"
    out = {"steps": steps, "sizes": sizes, "problem": "quadratic d=1 lambda=2, heavy ball lr=0.01 mu=0.95, additive "
                                                      "noise 0.5, record every step",
           "flop_per_traj_step": ENSEMBLE_FLOP_PER_TRAJ_STEP, "op_count": ENSEMBLE_OPS,
           "philox_int_ops_per_traj_step": PHILOX_INT_OPS_PER_TRAJ_STEP, "kernels": {}, "notes": []}
    # one-off costs, reported separately from the timings
    t0 = time.perf_counter()
    r = backend_runner(fast, 256, 8, device)
    if callable(r):
        r()
        out["fast_backend_first_call_s"] = time.perf_counter() - t0
    if device == "cpu":
        out["startup"] = startup()
    candidates = [(fast, "backend"), ("torch", "backend"), ("plain torch loop", "eager"),
                  ("plain torch loop, torch.compile", "compiled")]
    for n in sizes:
        for name, kind in candidates:
            if kind == "backend" and name == "torch" and device == "cpu" and n > (sizes[0] if quick else 100_000):
                continue  # the int64 Philox reference is slow on the CPU; its rate hardly depends on n
            t_setup = time.perf_counter()
            if kind == "backend":
                fn = backend_runner(name, n, steps, device)
            else:
                fn = loop_runner(n, steps, device, compiled=(kind == "compiled"))
            setup_s = time.perf_counter() - t_setup
            entry = out["kernels"].setdefault(name, {"kind": kind, "sizes": {}})
            if isinstance(fn, str):
                entry["unavailable"] = fn
                continue
            slow = name == "torch" or kind in ("compiled", "eager")
            # the compiled loop was warmed (compiled) in setup; eager torch has no warm-up to speak of
            t = time_call(fn, device, repeat=1 if (quick and slow) else 3, warmup=0 if slow and quick else 1,
                          budget_s=8.0 if quick else 60.0)
            rate = n * steps / t["median_s"]
            entry["sizes"][str(n)] = {**t, "traj_steps_per_s": rate, "flop_per_s": rate * ENSEMBLE_FLOP_PER_TRAJ_STEP,
                                      "setup_s": setup_s}
            log(f"  ensemble {name:28s} n={n:>9,d}  {rate / 1e6:9.2f} M traj-steps/s")
    # ratios: the fast backend against every peer, size by size
    ref = out["kernels"].get(fast, {}).get("sizes", {})
    for name, entry in out["kernels"].items():
        for n, fig in entry["sizes"].items():
            if n in ref:
                fig["fast_over_this"] = ref[n]["traj_steps_per_s"] / fig["traj_steps_per_s"]
    return out


# --- optimizer suite ------------------------------------------------------------------------

def optimizer_suite(device: str, quick: bool, bandwidth: float, log=print) -> dict:
    try:
        from .optim import InertiaSGD
    except Exception as exc:  # noqa: BLE001
        msg = f"optimizer suite: InertiaSGD not available ({type(exc).__name__}: {exc})"
        log(msg)
        return {"unavailable": msg}
    # sizes beyond the last-level cache: the copy ceiling is a DRAM figure
    sizes = [1 << 22, 1 << 24] if quick else [1 << 22, 1 << 24, 1 << 25]
    if device == "cuda":
        sizes = [1 << 22, 1 << 24] if quick else [1 << 22, 1 << 24, 1 << 26]
    tensors = 8
    out = {"sizes": sizes, "tensors_per_model": tensors, "bytes_per_element": OPTIMIZER_BYTES_PER_ELEMENT,
           "flop_per_element": OPTIMIZER_FLOP_PER_ELEMENT, "kernels": {}}
    lr, mu = 0.01, 0.9

    def make(n):
        per = n // tensors
        params = [torch.zeros(per, device=device, requires_grad=True) for _ in range(tensors)]
        for p in params:
            p.grad = torch.randn(per, device=device) * 1e-3
        return params

    def peers(params):
        yield "InertiaSGD", lambda: InertiaSGD(params, lr=lr, momentum=mu)
        yield "SGD foreach", lambda: torch.optim.SGD(params, lr=lr, momentum=mu, foreach=True)
        yield "SGD fused", lambda: torch.optim.SGD(params, lr=lr, momentum=mu, fused=True)
        yield "SGD for-loop", lambda: torch.optim.SGD(params, lr=lr, momentum=mu, foreach=False)

    for n in sizes:
        params = make(n)
        for name, factory in peers(params):
            entry = out["kernels"].setdefault(name, {"sizes": {}})
            try:
                opt = factory()
                opt.step()
                if name == "InertiaSGD":
                    def fn(o=opt):
                        o.step(loss=0.0)
                else:
                    fn = opt.step
                t = time_call(fn, device, repeat=10, warmup=2, budget_s=3.0 if quick else 15.0)
            except Exception as exc:  # noqa: BLE001
                entry["unavailable"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
            gbs = n * OPTIMIZER_BYTES_PER_ELEMENT / t["median_s"]
            entry["sizes"][str(n)] = {**t, "bytes_per_s": gbs, "fraction_of_copy_bandwidth": gbs / bandwidth,
                                      "flop_per_s": n * OPTIMIZER_FLOP_PER_ELEMENT / t["median_s"]}
            log(f"  optimizer {name:14s} n={n:>10,d}  {gbs / 1e9:7.2f} GB/s ({100 * gbs / bandwidth:5.1f}% of copy)")
    ours = out["kernels"].get("InertiaSGD", {}).get("sizes", {})
    for name, entry in out["kernels"].items():
        for n, fig in entry["sizes"].items():
            if n in ours:
                fig["time_over_InertiaSGD"] = fig["median_s"] / ours[n]["median_s"]
    return out


# --- report ---------------------------------------------------------------------------------

def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    c = result["ceilings"]
    console.print(f"[bold]{result['device_name']}[/bold]  {result['date']}   copy {c['copy_bandwidth_Bps'] / 1e9:.1f} GB/s"
                  f" (read+write)   fp32 {c['fp32_flops'] / 1e9:.1f} GFLOP/s ({c['fp32_method']})")
    ens = result.get("ensemble")
    if ens:
        t = Table(title=f"ensembles: {ens['problem']}, {ens['steps']} steps")
        for col in ("kernel", "trajectories", "median s", "M traj-steps/s", "GFLOP/s", "% fp32 peak", "fast backend x"):
            t.add_column(col, justify="right" if col != "kernel" else "left")
        for name, entry in ens["kernels"].items():
            if "unavailable" in entry and not entry["sizes"]:
                t.add_row(name, "-", "-", "-", "-", "-", entry["unavailable"][:60])
            for n, f in entry["sizes"].items():
                t.add_row(name, f"{int(n):,d}", f"{f['median_s']:.4f}", f"{f['traj_steps_per_s'] / 1e6:.2f}",
                          f"{f['flop_per_s'] / 1e9:.2f}", f"{100 * f['flop_per_s'] / c['fp32_flops']:.2f}",
                          f"{f.get('fast_over_this', float('nan')):.2f}")
        console.print(t)
    opt = result.get("optimizer")
    if opt and "kernels" in opt:
        t = Table(title="optimizer step (memory-bound; bytes = read p,g,b + write p,b)")
        for col in ("optimizer", "elements", "median ms", "GB/s", "% of copy", "time / InertiaSGD"):
            t.add_column(col, justify="right" if col != "optimizer" else "left")
        for name, entry in opt["kernels"].items():
            if "unavailable" in entry and not entry["sizes"]:
                t.add_row(name, "-", "-", "-", "-", entry["unavailable"][:60])
            for n, f in entry["sizes"].items():
                t.add_row(name, f"{int(n):,d}", f"{1e3 * f['median_s']:.3f}", f"{f['bytes_per_s'] / 1e9:.2f}",
                          f"{100 * f['fraction_of_copy_bandwidth']:.1f}", f"{f.get('time_over_InertiaSGD', float('nan')):.2f}")
        console.print(t)
    elif opt:
        console.print(opt.get("unavailable", ""))


def plot_roofline(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = result["ceilings"]
    bw, peak = c["copy_bandwidth_Bps"], c["fp32_flops"]
    fig, ax = plt.subplots(figsize=(10, 5))
    ai = [10 ** (k / 10) for k in range(-20, 41)]
    ax.plot(ai, [min(peak, bw * x) / 1e9 for x in ai], "k-", label="roofline (copy bw, fp32 matmul)")
    ens = result.get("ensemble") or {}
    if ens.get("kernels"):
        steps = ens["steps"]
        # bytes per trajectory-step: state read + written once per launch, six float64 sums per group per record
        bytes_per = (4 * 4 + 4 + 12) / steps + 6 * 8 / 64
        x = ens["flop_per_traj_step"] / bytes_per
        for name, entry in ens["kernels"].items():
            if entry["sizes"]:
                n, f = max(entry["sizes"].items(), key=lambda kv: int(kv[0]))
                ax.plot([x], [f["flop_per_s"] / 1e9], "o", label=f"ensemble: {name} (n={int(n):,d})")
    opt = result.get("optimizer") or {}
    for name, entry in opt.get("kernels", {}).items():
        if entry["sizes"]:
            n, f = max(entry["sizes"].items(), key=lambda kv: int(kv[0]))
            ax.plot([OPTIMIZER_FLOP_PER_ELEMENT / OPTIMIZER_BYTES_PER_ELEMENT], [f["flop_per_s"] / 1e9], "s",
                    label=f"optimizer: {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop / byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"roofline: {result['device_name']} (ensembles at their algorithmic-minimum traffic)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- CLI -----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="all", help="ensemble | optimizer | all")
    parser.add_argument("--json", default=None, help="write device, sizes, ceilings, figures and ratios here")
    parser.add_argument("--plot", default=None, help="write a roofline plot (PNG) here")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when visible, else cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller sizes (under 2 minutes on a CPU)")


def run(args) -> int:
    from .cli import UsageError
    suite = args.suite
    if suite not in ("ensemble", "optimizer", "all"):
        raise UsageError(f"--suite: allowed ensemble, optimizer, all; got {suite!r}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device: allowed cpu, cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device: cuda asked for but no CUDA device is visible here; use --device cpu")
    result = benchmark(device, suite, args.quick)
    print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.plot:
        plot_roofline(result, args.plot)
    return 0


def benchmark(device: str, suite: str = "all", quick: bool = False, log=print) -> dict:
    t0 = time.perf_counter()
    result = {
        "device": device,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "timing": "median after warm-up; " + ("torch.cuda.Event" if device == "cuda" else "time.perf_counter"),
    }
    try:
        import numba
        result["numba"] = numba.__version__
        result["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    log("measuring ceilings ...")
    result["ceilings"] = ceilings(device, quick)
    if suite in ("ensemble", "all"):
        log("ensemble suite ...")
        result["ensemble"] = ensemble_suite(device, quick, log)
    if suite in ("optimizer", "all"):
        log("optimizer suite ...")
        result["optimizer"] = optimizer_suite(device, quick, result["ceilings"]["copy_bandwidth_Bps"], log)
    result["wall_s"] = time.perf_counter() - t0
    return _clean(result)


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
