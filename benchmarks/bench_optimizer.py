"""Optimizer step throughput: InertiaSGD against what a user would write instead.

Contenders, all on the same GPT-2-small-like list of tensors and the same
gradients (momentum 0.9):

    inertia_sgd     InertiaSGD with noise and the inertia reduction (one pass)
    inertia_sgd_no_noise   the same without noise
    sgd_foreach     torch.optim.SGD(foreach=True)             (no noise, no inertia)
    sgd_fused       torch.optim.SGD(fused=True)               (no noise, no inertia)
    unfused         g + s * randn_like(g), SGD(foreach) step, then a separate
                    foreach norm of the buffers: the same result, several passes
    copy            dst.copy_(src) over the same bytes: the machine's ceiling

Bytes counted per parameter: 20 (read p, g, b; write p, b; float32), so
GB/s = 20 * n_params / time. copy moves 8 bytes per element of a buffer
sized to the same 20 bytes per parameter. Each row's JSON entry also names the
bytes that implementation moves per step (torch's foreach SGD makes three passes:
b *= mu, b += g, p -= lr b: 32 bytes per float32 parameter) and the time those
bytes take at the copy's bandwidth (the memory ceiling).

    python benchmarks/bench_optimizer.py --params 1e8        # on a GPU host
    python benchmarks/bench_optimizer.py --device cpu --params 3.4e7    # writes results/cpu-optimizer-<date>-<n>core.json
    pytest benchmarks/bench_optimizer.py                     # CPU suite (pytest-benchmark)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch

BYTES_PER_PARAM = 20
# bytes each contender moves per float32 parameter and step (reads + writes, no cache reuse across passes)
BYTES_MOVED = {"inertia_sgd": 20, "inertia_sgd_no_noise": 20, "sgd_foreach": 32, "sgd_fused": 20,
               "unfused": 64}
CPU_ROWS = ("inertia_sgd", "inertia_sgd_no_noise", "sgd_foreach")


def gpt2_like_shapes(n_params: float, layers: int = 12) -> list[tuple[int, ...]]:
    """Tensor shapes of a GPT-2-small-like model (embeddings, attention, MLP, norms, biases) with ~n_params."""
    def shapes(d: int) -> list[tuple[int, ...]]:
        vocab, positions = max(8, 50257 * d // 768), max(8, 1024 * d // 768)
        out = [(vocab, d), (positions, d)]
        for _ in range(layers):
            out += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
        return out + [(d,), (d,)]

    def total(d: int) -> int:
        return sum(int(torch.Size(s).numel()) for s in shapes(d))

    lo, hi = 1, 8192
    while lo < hi:  # smallest width reaching n_params
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if total(mid) < n_params else (lo, mid)
    return shapes(lo)


def make_params(shapes, device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, device=device, generator=g).requires_grad_()
        p.grad = torch.randn(s, device=device, generator=g)
        params.append(p)
    return params


def _sgd(params, **kw):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw)


ROWS = ("inertia_sgd", "inertia_sgd_no_noise", "sgd_foreach", "sgd_fused", "unfused")


def make_step(label: str, params: list[torch.Tensor], noise: float = 1e-3):
    """A zero-argument callable doing one optimizer step of kind `label` on `params` (None if unavailable)."""
    from inertia_gpu import InertiaSGD

    loss = torch.zeros((), device=params[0].device)
    if label in ("inertia_sgd", "inertia_sgd_no_noise"):
        opt = InertiaSGD(params, lr=1e-3, momentum=0.9, noise=noise if label == "inertia_sgd" else 0.0, seed=1,
                         record_history=False)
        return lambda: opt.step(loss=loss)
    if label == "sgd_foreach":
        return _sgd(params, foreach=True).step
    if label == "sgd_fused":
        try:
            fused = _sgd(params, fused=True)
            fused.step()
            return fused.step
        except (RuntimeError, ValueError):  # fused SGD not built for this device
            return None
    unfused_opt = _sgd(params, foreach=True)

    def unfused():
        grads = [p.grad for p in params]
        noisy = torch._foreach_add(grads, [torch.randn_like(g) for g in grads], alpha=noise)
        for p, g in zip(params, noisy):
            p.grad = g
        unfused_opt.step()
        for p, g in zip(params, grads):
            p.grad = g
        bufs = [unfused_opt.state[p]["momentum_buffer"] for p in params]
        return 0.5e-3 * torch.stack(torch._foreach_norm(bufs)).square().sum()
    return unfused


def make_steps(params: list[torch.Tensor], noise: float = 1e-3, rows=ROWS) -> dict:
    """name -> zero-argument callable doing one optimizer step on `params`."""
    steps = {label: make_step(label, params, noise) for label in rows}
    return {k: v for k, v in steps.items() if v is not None}


def _once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_step(fn, device: torch.device, repeat: int = 20, warmup: int = 3) -> float:
    """Median seconds per call; CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    return statistics.median(_once(fn, device) for _ in range(repeat))


def time_alternating(steps: dict, device: torch.device, repeat: int, warmup: int = 2,
                     cpu_seconds: dict | None = None) -> dict:
    """Median seconds per call of each step, timed in turn (round-robin), so a busy machine slows all alike.

    cpu_seconds, if given, receives each step's median process CPU time (all threads; on a machine
    others load, less sensitive to their scheduling than the wall clock)."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {label: [] for label in steps}
    cpu = {label: [] for label in steps}
    for _ in range(repeat):
        for label, fn in steps.items():
            start = time.process_time()
            times[label].append(_once(fn, device))
            cpu[label].append(time.process_time() - start)
    if cpu_seconds is not None:
        cpu_seconds.update({label: statistics.median(t) for label, t in cpu.items()})
    return {label: statistics.median(t) for label, t in times.items()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _set_threads(threads: int | None) -> int:
    """torch's and numba's thread counts (None: leave both at their defaults); returns torch's."""
    if threads is not None:
        torch.set_num_threads(threads)
        try:
            import numba
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="InertiaSGD step throughput against torch.optim.SGD")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--params", type=float, default=None, help="parameter count (default 1e8 GPU, 3.4e7 CPU)")
    parser.add_argument("--repeat", type=int, default=None, help="timed steps per row (default 20 GPU, 9 CPU)")
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated subset of {','.join(ROWS)} (default: all on a GPU, "
                             f"{','.join(CPU_ROWS)} on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: theirs)")
    parser.add_argument("--json", default=None,
                        help="write the results here (CPU default: benchmarks/results/cpu-optimizer-<date>-<n>core.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    threads = _set_threads(args.threads) if cpu else None
    n_target = args.params or (1e8 if not cpu else 3.4e7)
    repeat = args.repeat or (9 if cpu else 20)
    rows = [r for r in (args.rows or ",".join(CPU_ROWS if cpu else ROWS)).split(",") if r]
    shapes = gpt2_like_shapes(n_target)
    params = make_params(shapes, device)
    n = sum(p.numel() for p in params)
    sizes = sorted((p.numel() for p in params), reverse=True)
    name = torch.cuda.get_device_name(device) if not cpu else f"{_cpu_model()} ({threads} threads)"

    src = torch.empty(n * BYTES_PER_PARAM // 8, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    results = {"date": datetime.date.today().isoformat(), "device": name, "cores": os.cpu_count(),
               "threads": threads, "versions": {"torch": torch.__version__},
               "n_params": n, "n_tensors": len(params), "dtype": "float32",
               "tensor_sizes": {"largest": sizes[:4], "median": sizes[len(sizes) // 2], "smallest": sizes[-1]},
               "settings": {"lr": 1e-3, "momentum": 0.9, "noise": 1e-3, "seed": 1},
               "bytes_per_param": BYTES_PER_PARAM,
               "timing": f"median of {repeat} round-robin steps after 2 warm-up steps each (wall clock; "
                         "cpu_seconds: process CPU time, all threads)",
               "rows": {}}
    steps = {"copy": lambda: dst.copy_(src), **make_steps(params, rows=rows)}
    if cpu:
        try:
            import numba
            results["versions"]["numba"] = numba.__version__
        except ImportError:
            pass
    cpu_seconds: dict = {}
    seconds = time_alternating(steps, device, repeat, cpu_seconds=cpu_seconds)
    copy_gbs = 8 * src.numel() / seconds["copy"] / 1e9
    results["rows"]["copy"] = {"seconds": seconds["copy"], "GB/s": copy_gbs}
    for label in steps:
        if label != "copy":
            gbs = BYTES_PER_PARAM * n / seconds[label] / 1e9
            moved = BYTES_MOVED.get(label, BYTES_PER_PARAM) * n
            results["rows"][label] = {"seconds": seconds[label], "cpu_seconds": cpu_seconds[label], "GB/s": gbs,
                                      "of_copy": gbs / copy_gbs,
                                      "bytes_moved": moved, "ceiling_seconds": moved / (copy_gbs * 1e9)}
    if "sgd_foreach" in seconds:
        results["ratio_to_sgd_foreach"] = {label: seconds[label] / seconds["sgd_foreach"]
                                           for label in ("inertia_sgd", "inertia_sgd_no_noise") if label in seconds}
    if hasattr(os, "getloadavg"):
        results["loadavg_at_end"] = list(os.getloadavg())  # others' work on a shared machine slows every row
    _print(results)
    path = args.json
    if path is None and cpu:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            f"cpu-optimizer-{results['date']}-{os.cpu_count()}core.json")
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {path}")
    return results


def _print(results: dict) -> None:
    rows = results["rows"]
    print(f"{results['device']}: {results['n_params']:,} parameters in {results['n_tensors']} tensors, "
          f"{results['bytes_per_param']} bytes/param ({results['timing']})")
    print(f"{'':20s} {'ms':>9s} {'cpu ms':>9s} {'GB/s':>9s} {'of copy':>8s}")
    for label, row in rows.items():
        cpu_ms = f"{row['cpu_seconds'] * 1e3:9.3f}" if "cpu_seconds" in row else f"{'':9s}"
        print(f"{label:20s} {row['seconds'] * 1e3:9.3f} {cpu_ms} {row['GB/s']:9.1f} {row.get('of_copy', 1.0):8.1%}")
    if "sgd_foreach" in rows:
        for label in ("inertia_sgd", "inertia_sgd_no_noise"):
            if label in rows:
                print(f"{label} / sgd_foreach step time: {rows[label]['seconds'] / rows['sgd_foreach']['seconds']:.2f}x")
    if "unfused" in rows and "inertia_sgd" in rows:
        print(f"inertia_sgd speed-up over unfused: {rows['unfused']['seconds'] / rows['inertia_sgd']['seconds']:.2f}x")


# ---- pytest-benchmark suite (CPU, small: runs anywhere) --------------------------------------------

def _bench(benchmark, label: str) -> None:
    params = make_params(gpt2_like_shapes(5e4), torch.device("cpu"))
    fn = make_step(label, params)
    benchmark.extra_info["bytes_per_step"] = BYTES_PER_PARAM * sum(p.numel() for p in params)
    benchmark(fn)


def test_bench_inertia_sgd(benchmark):
    _bench(benchmark, "inertia_sgd")


def test_bench_inertia_sgd_no_noise(benchmark):
    _bench(benchmark, "inertia_sgd_no_noise")


def test_bench_sgd_foreach(benchmark):
    _bench(benchmark, "sgd_foreach")


def test_bench_sgd_fused(benchmark):
    _bench(benchmark, "sgd_fused")


def test_bench_unfused(benchmark):
    _bench(benchmark, "unfused")


if __name__ == "__main__":
    main()
