"""Ensemble throughput: the Triton kernel beside a per-step loop of PyTorch ops, eager and compiled.

Trajectory-steps per second for d in {1, 8, 64}, with and without noise,
heavy ball on a quadratic, statistics recorded every step, in one run on
whatever device is present. On a CUDA device: the Triton kernel
(inertia_gpu.backends.triton_ensemble), the eager loop and the same loop
under torch.compile. On CPU only the two PyTorch loops run (Triton would
run under its interpreter, which measures nothing useful).

The peers do the same work per step as the kernel: gradient, Gaussian
noise (torch.randn: the fastest generator a PyTorch user has, not our
Philox stream), momentum and parameter update, then the recorded
quantities (K, L, I, shadow) and per-64-trajectory float64 group sums of
[count, I, K, L, shadow, I^2].

The achieved arithmetic rate is ops/trajectory-step (counted explicitly in
`ops_per_trajectory_step`, instructions per lane) times trajectory-steps/s,
against the device's FP32-lane instruction ceiling (SMs x 128 lanes x
boost clock on NVIDIA; cores x SIMD lanes x FMA units x clock, nominal, on
CPU). Everything is a function returning a dict, so `inertia-gpu bench` and
a one-call GPU script can call `run_all` and write the JSON themselves;
`main()` prints a table and writes benchmarks/results/ensemble_<device>.json.

    python benchmarks/bench_ensemble.py [--device cuda|cpu] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch

GROUP = 64
DIMS = (1, 8, 64)

# sizes per device: trajectories for d = 1 (larger d: fewer trajectories, same number of coordinates),
# steps of the Triton launch, steps of the per-step loops
SIZES = {
    "cuda": dict(coords=1 << 24, min_traj=1 << 18, triton_steps=128, loop_steps=32),
    "cpu": dict(coords=1 << 16, min_traj=1 << 10, triton_steps=0, loop_steps=8),
}
QUICK = {
    "cuda": dict(coords=1 << 22, min_traj=1 << 16, triton_steps=64, loop_steps=16),
    "cpu": dict(coords=1 << 12, min_traj=1 << 8, triton_steps=0, loop_steps=4),
}


# --- what one trajectory-step costs ------------------------------------------------------------------


def ops_per_trajectory_step(dim: int, noisy: bool, record: bool = True) -> dict:
    """Instructions (per SIMT lane) of one heavy-ball trajectory-step of the kernel, counted by hand.

    Philox4x32-10: 10 rounds x (2 mul.hi + 2 mul.lo + 4 xor) = 80 integer ops per call, one
    call per coordinate per four steps -> 20 per coordinate-step. Box-Muller per pair of normals:
    2 shifts + 1 add + 2 int->float + 2 scalings (7), log ~4, sqrt ~2, 2 pi u ~1, sin + cos ~20
    (libdevice, fast path), 2 products: ~36 per pair -> 18 per coordinate-step. Update: gradient
    (1 mul), noise (1 fma), momentum (1 fma), parameter (1 fma) = 4 per coordinate. Recording: per
    coordinate b.b, lam theta theta (2), b.g and the next gradient ~5; per trajectory ~30 (finite
    test, 5 float64 conversions, 6 float64 tree adds, 3 first-passage compares and selects, sums).
    """
    philox = 20.0 * dim if noisy else 0.0
    box_muller = 18.0 * dim if noisy else 0.0
    update = 4.0 * dim
    recording = (5.0 * dim + 30.0) if record else 0.0
    total = philox + box_muller + update + recording
    return {"philox": philox, "box_muller": box_muller, "update": update, "recording": recording, "total": total}


# --- the device and its ceiling ------------------------------------------------------------------------


def _nvidia_max_sm_clock_ghz() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits", "-i",
                              str(torch.cuda.current_device())], capture_output=True, text=True, timeout=20)
        return float(out.stdout.strip().splitlines()[0]) / 1000.0
    except Exception:
        return None


def device_info(device: str) -> dict:
    """Name and FP32-lane instruction ceiling (instructions/s) of `device`."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        clock = getattr(props, "clock_rate", None)
        clock_ghz = clock / 1e6 if clock else _nvidia_max_sm_clock_ghz()
        source = "clock from torch" if clock else "clock from nvidia-smi"
        if clock_ghz is None:
            clock_ghz = 1.98 if any(x in props.name for x in ("H100", "H200")) else 1.5
            source = "clock assumed"
        lanes = 128  # FP32 lanes per SM from Volta to Hopper
        sms = props.multi_processor_count
        return {"device": "cuda", "name": props.name, "sms": sms, "fp32_lanes_per_sm": lanes,
                "clock_ghz": clock_ghz, "memory_gib": props.total_memory / 2 ** 30,
                "ceiling_ops_per_s": sms * lanes * clock_ghz * 1e9,
                "ceiling_note": f"SMs x {lanes} FP32 lanes x max SM clock ({source}); one instruction per lane per clock",
                "torch": torch.__version__, "triton": _triton_version()}
    cores = os.cpu_count() or 1
    lanes, fma_units, clock_ghz = 8, 2, 2.5  # AVX2 float32, two FMA ports, nominal clock
    return {"device": "cpu", "name": f"{platform.processor() or platform.machine()} ({cores} cores)",
            "cores": cores, "threads": torch.get_num_threads(), "clock_ghz": clock_ghz,
            "ceiling_ops_per_s": cores * lanes * fma_units * clock_ghz * 1e9,
            "ceiling_note": "nominal: cores x 8 fp32 lanes (AVX2) x 2 FMA units x 2.5 GHz",
            "torch": torch.__version__, "triton": _triton_version()}


def _triton_version() -> str | None:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _problem_scalars(dim: int, noisy: bool) -> dict:
    from inertia_gpu.problems import log_spaced_spectrum
    return dict(spectrum=log_spaced_spectrum(dim, 100.0), lr=0.01, momentum=0.9, noise=0.1 if noisy else 0.0)


def _result(kind: str, dim: int, noisy: bool, trajectories: int, steps: int, times: list[float],
            ceiling: float | None, **extra) -> dict:
    best = min(times)
    rate = trajectories * steps / best
    ops = ops_per_trajectory_step(dim, noisy)["total"]
    out = {"impl": kind, "dim": dim, "noisy": noisy, "trajectories": trajectories, "steps": steps,
           "seconds_best": best, "seconds_all": times, "trajectory_steps_per_s": rate,
           "ops_per_trajectory_step": ops, "achieved_ops_per_s": ops * rate}
    if ceiling:
        out["fraction_of_ceiling"] = ops * rate / ceiling
    out.update(extra)
    return out


# --- the Triton kernel ---------------------------------------------------------------------------------


def bench_triton(dim: int, noisy: bool, trajectories: int, steps: int, device: str = "cuda",
                 dtype: str = "float32", repeats: int = 3, block: int | None = None,
                 ceiling: float | None = None) -> dict:
    """One launch of the ensemble kernel from the initial state over `steps` steps, every step recorded."""
    from inertia_gpu.backends.triton_ensemble import TritonEnsemble
    from inertia_gpu.config import SimulationConfig
    cfg = SimulationConfig(trajectories=trajectories, steps=steps, dtype=dtype, device=device, backend="triton",
                           record_every=1, seed=1, **_problem_scalars(dim, noisy)).validate()
    backend = TritonEnsemble(block=block, guard="auto")
    t0 = time.perf_counter()
    state, partials = backend.run(cfg, 0, trajectories, 0, steps, None)  # compiles
    _sync(device)
    compile_s = time.perf_counter() - t0
    del state, partials
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        state, partials = backend.run(cfg, 0, trajectories, 0, steps, None)
        _sync(device)
        times.append(time.perf_counter() - t0)
        del state, partials
    return _result("triton", dim, noisy, trajectories, steps, times, ceiling, first_call_s=compile_s,
                   block=block, dtype=dtype)


# --- the per-step PyTorch loop -------------------------------------------------------------------------


def _torch_step(theta, b, lam, lr: float, mu: float, s: float, noisy: bool):
    """One heavy-ball step and its statistics, as array operations."""
    g = lam * theta
    if noisy:
        g = g + s * torch.randn_like(theta)
    b = mu * b + g
    theta = theta - lr * b
    g = lam * theta
    kinetic = (0.5 * lr) * (b * b).sum(dim=-1)
    loss = 0.5 * (lam * theta * theta).sum(dim=-1)
    inertia = kinetic + loss
    shadow = inertia + (0.5 * lr) * (b * g).sum(dim=-1)
    finite = torch.isfinite(inertia)
    cols = [finite.to(torch.float64)]
    for q in (inertia, kinetic, loss, shadow):
        cols.append(torch.where(finite, q.to(torch.float64), 0.0))
    cols.append(cols[1] * cols[1])
    sums = torch.stack(cols, dim=-1).reshape(-1, GROUP, 6).sum(dim=1)
    return theta, b, sums


def bench_torch_loop(dim: int, noisy: bool, trajectories: int, steps: int, device: str, compiled: bool = False,
                     dtype: torch.dtype = torch.float32, repeats: int = 3, ceiling: float | None = None) -> dict:
    """A Python loop over steps of `_torch_step` (eager, or under torch.compile)."""
    kind = "torch.compile" if compiled else "eager"
    p = _problem_scalars(dim, noisy)
    lam = torch.tensor(p["spectrum"], dtype=dtype, device=device)[None, :]
    gen = torch.Generator(device=device).manual_seed(1)
    theta0 = torch.randn(trajectories, dim, dtype=dtype, device=device, generator=gen)
    step = _torch_step
    t0 = time.perf_counter()
    if compiled:
        try:
            torch._dynamo.reset()  # a fresh cache per (d, noise): no recompile limits carried across rows

            def fresh_step(*args):
                return _torch_step(*args)

            step = torch.compile(fresh_step, dynamic=False)
            step(theta0, torch.zeros_like(theta0), lam, p["lr"], p["momentum"], p["noise"], noisy)  # compiles
        except Exception as exc:  # no C++ compiler on a CPU host, an inductor gap, ...
            return {"impl": kind, "dim": dim, "noisy": noisy, "error": f"{type(exc).__name__}: {exc}"[:300]}
    _sync(device)
    compile_s = time.perf_counter() - t0
    partials = torch.empty(steps, trajectories // GROUP, 6, dtype=torch.float64, device=device)
    times = []
    for _ in range(repeats + 1):  # the first pass warms the allocator and caches
        theta, b = theta0.clone(), torch.zeros_like(theta0)
        _sync(device)
        t0 = time.perf_counter()
        for n in range(steps):
            theta, b, sums = step(theta, b, lam, p["lr"], p["momentum"], p["noise"], noisy)
            partials[n] = sums
        _sync(device)
        times.append(time.perf_counter() - t0)
    return _result(kind, dim, noisy, trajectories, steps, times[1:], ceiling, first_call_s=compile_s)


# --- everything ------------------------------------------------------------------------------------------


def run_all(device: str | None = None, dims=DIMS, quick: bool = False, peers=("eager", "torch.compile"),
            triton: bool | None = None, log=print) -> dict:
    """Every (d, noise) of the table on one device; returns {"device": ..., "sizes": ..., "results": [...]}."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    info = device_info(device)
    sizes = (QUICK if quick else SIZES)[device]
    if triton is None:
        triton = device == "cuda"
    ceiling = info["ceiling_ops_per_s"]
    results = []
    for dim in dims:
        n = max(sizes["min_traj"], sizes["coords"] // dim)
        n = (n // GROUP) * GROUP
        for noisy in (True, False):
            row = []
            if triton:
                row.append(bench_triton(dim, noisy, n, sizes["triton_steps"] or 16, device, ceiling=ceiling))
            for peer in peers:
                row.append(bench_torch_loop(dim, noisy, n, sizes["loop_steps"], device,
                                            compiled=peer == "torch.compile", ceiling=ceiling))
            tri = next((r for r in row if r.get("impl") == "triton"), None)
            for r in row:
                if tri is not None and "trajectory_steps_per_s" in r and r is not tri:
                    r["triton_speedup"] = tri["trajectory_steps_per_s"] / r["trajectory_steps_per_s"]
                log(_format_row(r))
            results.extend(row)
    return {"benchmark": "ensemble", "device": info, "sizes": sizes, "quick": quick, "dims": list(dims),
            "peers": list(peers), "triton": triton, "dtype": "float32", "problem": "quadratic heavy-ball, lr 0.01, "
            "momentum 0.9, noise 0.1 (or 0), spectrum log-spaced 1/100..1, statistics every step",
            "python": sys.version.split()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}


def _format_row(r: dict) -> str:
    head = f"{r['impl']:>14} d={r['dim']:<3} {'noise' if r['noisy'] else 'quiet':>5}"
    if "error" in r:
        return f"{head}  error: {r['error']}"
    speed = f"  triton x{r['triton_speedup']:.1f}" if "triton_speedup" in r else ""
    frac = f"  {100 * r['fraction_of_ceiling']:.1f}% of ceiling" if "fraction_of_ceiling" in r else ""
    return (f"{head}  N={r['trajectories']:<9} {r['trajectory_steps_per_s']:.3e} traj-steps/s  "
            f"{r['achieved_ops_per_s']:.3e} ops/s{frac}{speed}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--dims", default=",".join(map(str, DIMS)))
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ensemble_<device>.json)")
    args = ap.parse_args(argv)
    peers = ("eager",) if args.no_compile else ("eager", "torch.compile")
    report = run_all(args.device, dims=tuple(int(d) for d in args.dims.split(",")), quick=args.quick, peers=peers)
    info = report["device"]
    print(f"\n{info['name']}: ceiling {info['ceiling_ops_per_s']:.3e} ops/s ({info['ceiling_note']})")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"ensemble_{info['device']}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(report, fh, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
