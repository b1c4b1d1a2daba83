#!/usr/bin/env python
"""The one-call GPU check: the conformance matrix on the GPU backends, then `inertia_gpu.bench`, then a verdict.

    python benchmarks/gpu_check.py [--out DIR] [--dry-run] [--budget-s 270] [--full-matrix]

Stages, each recorded in DIR/gpu_check.json (rewritten after every stage, so a
run killed by a timeout still leaves what it measured), then a verdict table in
DIR/summary.md, also printed:

1. environment  device, SM count, memory, torch / triton / cupy / CUDA versions
2. correctness  inertia_gpu.testing: Triton and CuPy ensembles against the torch
                reference, case by case (the pairwise covering design; --full-matrix
                for the whole product), outputs poisoned
3. bench        inertia_gpu.bench.benchmark (ceilings, ensemble and optimizer suites)
4. verdict      each target with its measured value: pass / FAIL / n/a

Nothing here has a fallback: a check that fails is reported as a failure with
its message; one that cannot run here is "skipped" with the reason. --dry-run
runs the same code on whatever is here at tiny sizes (on a CPU: Triton under
TRITON_INTERPRET=1, the CUDA kernel's host build, CuPy skipped, bench ceilings
only); CI uses it to prove the script runs end to end. Its output goes to a
temporary folder unless --out is given, never into benchmarks/results/.
Exit status: 0 when the check ran (whatever it measured), 1 when a correctness
check failed, 2 on a usage error (no CUDA device without --dry-run).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = 2
DRY_CASES = 3  # cases per backend in a dry run (the interpreter is slow)

# Performance targets (the product brief): a row passes when measured >= threshold.
TARGETS = {
    "triton_traj_steps_per_s": 1e11,  # d = 1 heavy ball + noise, statistics every step, largest size
    "triton_over_eager": 20.0,
    "triton_over_compile": 5.0,
    "optimizer_fraction_of_copy": 0.85,  # InertiaSGD bytes/s (20 B/param) over the copy bandwidth
    "optimizer_over_fused": 1.0,  # SGD(fused=True) time / InertiaSGD time
}
GPU_BACKENDS = ("triton", "cupy")


class Check:
    """The JSON document, the budget and the stage runner."""

    def __init__(self, out: str, dry: bool, budget_s: float, device: str):
        self.out, self.dry, self.device = out, dry, device
        self.t0, self.budget_s = time.perf_counter(), budget_s
        self.path = os.path.join(out, "gpu_check.json")
        self.doc = {"schema": SCHEMA, "dry_run": dry, "device": device, "budget_s": budget_s,
                    "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "stages": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.doc["elapsed_s"] = time.perf_counter() - self.t0
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(_clean(self.doc), fh, indent=1, allow_nan=False)
        os.replace(tmp, self.path)

    def stage(self, name: str, fn) -> dict:
        """Run one stage and save the document. An exception propagates: the script stops with its
        traceback (a crash is a failure), and the JSON keeps every stage finished before it."""
        rec = {"status": "ok", "entries": []}
        t = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        fn(rec)
        rec["elapsed_s"] = time.perf_counter() - t
        self.doc["stages"][name] = rec
        self.save()
        return rec


def _clean(x):
    """JSON without NaN/inf (strict parsers refuse them): non-finite floats become null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError as exc:
        return f"not importable: {exc}"


# --- stages ---------------------------------------------------------------------------------------

def stage_environment(ck: Check, rec: dict) -> None:
    import torch
    env = {"device": ck.device, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "triton": _version("triton"), "cupy": _version("cupy"), "numba": _version("numba"),
           "python": sys.version.split()[0], "interpreter": os.environ.get("TRITON_INTERPRET", "0") == "1"}
    if ck.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, sm_count=props.multi_processor_count,
                   memory_gib=props.total_memory / 2 ** 30, capability=f"{props.major}.{props.minor}")
    else:
        from inertia_gpu.bench import device_name
        env.update(device_name=device_name("cpu"), sm_count=None)
    rec["result"] = env
    ck.doc["device_name"] = env["device_name"]


def stage_correctness(ck: Check, rec: dict, full: bool) -> None:
    """The conformance matrix on each GPU backend (and, without a GPU, on the CUDA kernel's host build)."""
    from inertia_gpu import testing
    cases = testing.full_matrix() if full else testing.covering_matrix()
    names = list(GPU_BACKENDS) + (["cuda-host"] if ck.device == "cpu" else [])
    if ck.dry:
        cases = cases[:DRY_CASES]
    for name in names:
        backend = testing.backend_here(name, ck.device)
        if isinstance(backend, str):
            rec["entries"].append({"name": f"ensemble/{name}", "backend": name, "status": "skipped",
                                   "reason": backend})
            continue
        for case in cases:
            entry = {"name": f"ensemble/{name}/{case.label}", "backend": name, "dtype": case.dtype}
            if ck.left() < 0:
                entry.update(status="skipped", reason="budget spent")
            else:
                entry.update(testing.compare(backend, case, ck.device))
            rec["entries"].append(entry)
            mark = entry["status"] if entry["status"] != "fail" else "FAIL " + entry["message"]
            print(f"  {entry['name']}: {mark}", flush=True)
    if any(e["status"] == "fail" for e in rec["entries"]):
        rec["status"] = "fail"


def stage_bench(ck: Check, rec: dict) -> None:
    """inertia_gpu.bench: the full suites on a GPU; in a dry run only the ceilings (a dry run measures nothing)."""
    from inertia_gpu import bench
    if ck.dry:
        rec["result"] = {"ceilings": bench.ceilings(ck.device, quick=True), "note": "dry run: suites not timed"}
        return
    if ck.left() < 60:
        rec.update(status="skipped", reason=f"budget: {ck.left():.0f} s left")
        return
    rec["result"] = bench.benchmark(ck.device, suite="all", quick=ck.left() < 180)


# --- verdict ----------------------------------------------------------------------------------------

def _largest(entry: dict | None, key: str):
    """The figure `key` at the largest size of a bench kernel entry, or None."""
    sizes = (entry or {}).get("sizes") or {}
    if not sizes:
        return None
    return sizes[max(sizes, key=int)].get(key)


def verdict_rows(ck: Check) -> list[dict]:
    rows = []
    entries = ck.doc["stages"].get("correctness", {}).get("entries", [])
    for name, label in (("triton", "Triton ensemble"), ("cupy", "CuPy ensemble"), ("cuda-host", "CUDA host build")):
        es = [e for e in entries if e["backend"] == name]
        if name == "cuda-host" and not es:
            continue
        ran = [e for e in es if e["status"] != "skipped"]
        target = f"{label} = reference (conformance matrix; 3e-5 f32, 1e-10 f64)"
        if not ran:
            why = es[0].get("reason", "not run") if es else "not run"
            rows.append({"target": target, "measured": f"skipped: {why[:90]}", "threshold": "all pass", "pass": None,
                         "kind": "correctness"})
            continue
        good = sum(e["status"] == "ok" for e in ran)
        worst = max((v for e in ran for k, v in e.get("errors", {}).items() if k != "first_passage_mismatch"
                     and isinstance(v, float)), default=0.0)
        rows.append({"target": target, "measured": f"{good}/{len(ran)} ok, worst rel {worst:.1e}",
                     "threshold": "all pass", "pass": good == len(ran), "kind": "correctness"})

    result = ck.doc["stages"].get("bench", {}).get("result") or {}
    kernels = (result.get("ensemble") or {}).get("kernels", {})
    fast = _largest(kernels.get("triton"), "traj_steps_per_s")
    eager = _largest(kernels.get("eager loop (torch.randn)"), "traj_steps_per_s")
    compiled = _largest(kernels.get("torch.compile loop"), "traj_steps_per_s")
    opt = (result.get("optimizer") or {}).get("kernels", {})
    measured = {
        "triton_traj_steps_per_s": fast,
        "triton_over_eager": fast / eager if fast and eager else None,
        "triton_over_compile": fast / compiled if fast and compiled else None,
        "optimizer_fraction_of_copy": _largest(opt.get("InertiaSGD"), "fraction_of_copy_bandwidth"),
        "optimizer_over_fused": _largest(opt.get("SGD fused"), "time_over_InertiaSGD"),
    }
    labels = {
        "triton_traj_steps_per_s": ("Triton ensemble, d=1 heavy ball + noise, stats every step (traj-steps/s)",
                                    "{:.3g}"),
        "triton_over_eager": ("Triton ensemble / eager per-step loop (same run)", "{:.1f}x"),
        "triton_over_compile": ("Triton ensemble / torch.compile per-step loop (same run)", "{:.1f}x"),
        "optimizer_fraction_of_copy": ("InertiaSGD GB/s / copy bandwidth (20 B/param)", "{:.2f}"),
        "optimizer_over_fused": ("InertiaSGD vs SGD(fused=True): fused time / ours", "{:.2f}x"),
    }
    for key, (label, fmt) in labels.items():
        value, threshold = measured[key], TARGETS[key]
        rows.append({"target": label, "measured": "not measured" if value is None else fmt.format(value),
                     "threshold": f">= {fmt.format(threshold)}",
                     "pass": None if (ck.dry or value is None) else value >= threshold,
                     "value": value, "threshold_value": threshold, "kind": "performance", "key": key})
    return rows


def stage_verdict(ck: Check, rec: dict) -> None:
    rows = verdict_rows(ck)
    rec["rows"] = rows
    ck.doc["verdict"] = rows
    if any(r["pass"] is False for r in rows):
        rec["status"] = "fail"


def summary_markdown(ck: Check) -> str:
    d = ck.doc
    env = d["stages"].get("environment", {}).get("result", {})
    head = f"# GPU check: {d.get('device_name')}" + (" (DRY RUN: tiny sizes, not a measurement)" if ck.dry else "")
    lines = [head, "",
             f"{d['started']} · torch {env.get('torch')} · triton {env.get('triton')} · cupy {env.get('cupy')} · "
             f"CUDA {env.get('torch_cuda')} · SMs {env.get('sm_count')} · {d.get('elapsed_s', 0):.0f} s", "",
             "| target | measured | threshold | result |", "|---|---|---|---|"]
    for r in d.get("verdict", []):
        mark = "n/a" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        lines.append(f"| {r['target']} | {r['measured']} | {r['threshold']} | {mark} |")
    lines += ["", "stages: " + ", ".join(f"{k} {v.get('status')}" for k, v in d["stages"].items()), ""]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<device>-<date>/; a temp folder with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is here (CI)")
    p.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole check (seconds)")
    p.add_argument("--full-matrix", action="store_true",
                   help="every case of the conformance matrix (default: the pairwise covering design)")
    return p.parse_args(argv)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.dry_run:
            print("gpu_check: error: no CUDA device visible; on a CPU-only machine use --dry-run", file=sys.stderr)
            return 2
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
    if REPO not in sys.path:  # a bare checkout: the package maps kernels/ itself (inertia_gpu/__init__.py)
        sys.path.insert(0, REPO)
    device = "cuda" if cuda else "cpu"
    if args.out is None:
        if args.dry_run:
            args.out = tempfile.mkdtemp(prefix="gpu_check_dry_")
        else:
            date = _dt.date.today().isoformat()
            args.out = os.path.join(REPO, "benchmarks", "results", f"{_slug(torch.cuda.get_device_name())}-{date}")
    os.makedirs(args.out, exist_ok=True)
    ck = Check(args.out, args.dry_run, args.budget_s, device)
    print(f"gpu_check: {'dry run, ' if args.dry_run else ''}device {device}, results -> {args.out}", flush=True)
    ck.stage("environment", lambda rec: stage_environment(ck, rec))
    ck.stage("correctness", lambda rec: stage_correctness(ck, rec, args.full_matrix))
    ck.stage("bench", lambda rec: stage_bench(ck, rec))
    ck.stage("verdict", lambda rec: stage_verdict(ck, rec))
    ck.doc["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    ck.save()
    text = summary_markdown(ck)
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(text)
    print()
    print(text)
    print(f"gpu_check: wrote {ck.path} and summary.md in {time.perf_counter() - ck.t0:.0f} s", flush=True)
    return 1 if ck.doc["stages"]["correctness"]["status"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
