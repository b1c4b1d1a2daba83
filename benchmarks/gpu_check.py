#!/usr/bin/env python
"""The one-call GPU check: every GPU backend against the reference first, then throughput.

    python benchmarks/gpu_check.py [--out DIR] [--dry-run] [--budget-s 270]

Stages, each recorded in DIR/gpu_check.json (rewritten after every entry, so a
run killed by a timeout still leaves what it measured), then a verdict table
in DIR/summary.md, also printed:

1. environment  device, SM count, memory, torch/triton/cupy/CUDA versions
2. correctness  Triton and CuPy ensembles against the float64/float32 torch
                reference on the same device (and the reference on the CPU),
                chunking/block invariance (bitwise), InertiaSGD (triton,
                foreach) against torch.optim.SGD, the CuPy SGD step against
                the foreach path
3. throughput   ensemble trajectory-steps/s (d = 1, 8, 64, with/without noise)
                beside the eager and torch.compile per-step loops; the
                optimizer step over a GPT-2-small-like parameter list (>= 1e8)
                against torch.optim.SGD foreach/fused and the unfused
                equivalent, in GB/s against the measured copy bandwidth
4. bench        `inertia-gpu bench --suite all` (inertia_gpu.bench), within the budget
5. verdict      each target with its measured value, pass/fail

--dry-run runs the same code at tiny sizes on whatever is here (on a CPU,
Triton under TRITON_INTERPRET=1, CuPy recorded as skipped with the reason):
CI uses it to prove the script runs end to end. Its output goes to a
temporary folder unless --out is given, never into benchmarks/results/.

Every failure is caught per entry: the JSON holds its traceback and the
script carries on. Exit status: 0 when the check ran (whatever it measured),
2 on a usage error (no CUDA device without --dry-run).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = 1
OPTIMIZER_BYTES_PER_PARAM = 20  # read p, g, b; write p, b (float32)

TARGETS = {
    "triton_d1_traj_steps_per_s": 1e11,
    "triton_over_eager": 20.0,
    "triton_over_compile": 5.0,
    "cupy_over_triton": 0.9,
    "optimizer_fraction_of_copy": 0.85,
    "optimizer_over_fused": 1.0,
    "optimizer_over_unfused": 1.5,
}


# --- import plumbing -----------------------------------------------------------------------------

def ensure_package() -> None:
    """Make `inertia_gpu` and `inertia_gpu.kernels` importable from a bare checkout (PYTHONPATH=. or none).

    pyproject maps inertia_gpu.kernels to the top-level kernels/ folder; an editable or
    regular install does that mapping, a bare checkout does not, so alias it here.
    """
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import inertia_gpu  # noqa: F401
    try:
        importlib.import_module("inertia_gpu.kernels")
        return
    except ImportError:
        pass
    folder = os.path.join(REPO, "kernels")
    spec = importlib.util.spec_from_file_location("inertia_gpu.kernels", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["inertia_gpu.kernels"] = module
    spec.loader.exec_module(module)
    sys.modules["inertia_gpu"].kernels = module


def _load_benchmark_module(name: str):
    """benchmarks/<name>.py as a module (written by other engineers: optional), or None."""
    path = os.path.join(REPO, "benchmarks", f"{name}.py")
    if not os.path.exists(path):
        return None
    try:
        spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    except Exception:  # noqa: BLE001 - optional helper; fall back to our own measurement
        return None


def _optional(module: str, attr: str):
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception:  # noqa: BLE001
        return None


# --- small helpers ---------------------------------------------------------------------------------

class Skip(Exception):
    """An entry that cannot run here; the message is the reason."""


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _clean(x.item())
    return x


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:300]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def need(self, seconds: float, what: str) -> None:
        if self.remaining() < seconds:
            raise Skip(f"time budget: {self.remaining():.0f} s left of {self.seconds:.0f} s, {what} needs ~{seconds:.0f} s")


# --- the check -------------------------------------------------------------------------------------

class Check:
    def __init__(self, out_dir: str, dry_run: bool, budget_s: float, torch_mod, device: str):
        self.out_dir = out_dir
        self.dry = dry_run
        self.budget = Budget(budget_s)
        self.torch = torch_mod
        self.device = device
        self.cuda = device == "cuda"
        self.path = os.path.join(out_dir, "gpu_check.json")
        self.doc = {
            "schema": SCHEMA,
            "script": "benchmarks/gpu_check.py",
            "dry_run": dry_run,
            "device": device,
            "device_name": None,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "timing": "torch.cuda.Event, median after warm-up" if self.cuda else "time.perf_counter, median after warm-up",
            "stages": {},
            "targets": TARGETS,
        }

    # persistence
    def save(self) -> None:
        self.doc["elapsed_s"] = self.budget.elapsed()
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(_clean(self.doc), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    # stages and entries
    def stage(self, name: str, fn) -> dict:
        rec = {"status": "running", "entries": []}
        self.doc["stages"][name] = rec
        self.save()
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            fn(rec)
            statuses = {e["status"] for e in rec["entries"]}
            rec["status"] = "fail" if statuses & {"fail", "error"} else "ok"
        except Skip as exc:
            rec["status"], rec["reason"] = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - recorded, the script carries on
            rec["status"], rec["error"], rec["traceback"] = "error", _first_line(exc), traceback.format_exc()
            print(f"   stage {name} raised {_first_line(exc)}", flush=True)
        rec["elapsed_s"] = time.perf_counter() - t0
        self.save()
        return rec

    def entry(self, rec: dict, name: str, fn, **meta) -> dict:
        """Run fn() -> dict of fields; 'ok' in it decides ok/fail. Skip -> skipped, other exceptions -> error."""
        e = {"name": name, **meta}
        t0 = time.perf_counter()
        try:
            out = fn() or {}
            e.update(out)
            e["status"] = "ok" if out.get("ok", True) else "fail"
        except Skip as exc:
            e["status"], e["reason"] = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001
            e["status"], e["error"], e["traceback"] = "error", _first_line(exc), traceback.format_exc()
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - a sticky CUDA error: record it on this entry
            e["status"], e["error"] = "error", f"after the entry: {_first_line(exc)}"
        e["elapsed_s"] = time.perf_counter() - t0
        rec["entries"].append(e)
        self.save()
        detail = e.get("reason") or e.get("error") or e.get("summary", "")
        print(f"   {e['status']:7s} {name:48s} {detail}", flush=True)
        return e

    # timing
    def timed(self, fn, warmup: int = 1, reps: int = 3) -> dict:
        torch = self.torch
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(reps):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


# --- stage 1: environment ----------------------------------------------------------------------------

def stage_environment(ck: Check, rec: dict) -> None:
    torch = ck.torch
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "cpu_count": os.cpu_count(),
    }
    for mod in ("triton", "cupy", "numba", "numpy"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except Exception as exc:  # noqa: BLE001
            env[mod] = None
            env[f"{mod}_unavailable"] = _first_line(exc)
    import inertia_gpu
    env["inertia_gpu"] = inertia_gpu.__version__
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        env["git_commit"] = None
    if ck.cuda:
        props = torch.cuda.get_device_properties(0)
        env.update({
            "device_name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_total_bytes": props.total_memory,
            "memory_free_bytes": torch.cuda.mem_get_info()[0],
            "device_count": torch.cuda.device_count(),
        })
        try:
            import cupy
            env["cupy_cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            env["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception:  # noqa: BLE001
            pass
    else:
        env["device_name"] = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    ck.doc["device_name"] = env["device_name"]
    rec["result"] = env
    print(f"   device {env['device_name']}; torch {env['torch']} (CUDA {env['torch_cuda']}), "
          f"triton {env.get('triton')}, cupy {env.get('cupy')}", flush=True)


# --- stage 2: correctness ----------------------------------------------------------------------------

def ensemble_cases(dry: bool) -> list[tuple[str, dict, float]]:
    """(name, SimulationConfig options, relative tolerance of the float32 inertia curve)."""
    return [
        ("heavy_ball_d1_noise", dict(problem="quadratic", spectrum=[1.0], integrator="heavy-ball", lr=0.1,
                                     momentum=0.9, noise=0.5), 1e-5),
        ("heavy_ball_d8_drawn_spectrum", dict(problem="quadratic", dim=8, spectrum_distribution="loguniform:0.01,1",
                                              lr=0.5, momentum=0.9, noise=0.1), 1e-5),
        ("leapfrog_double_well", dict(problem="double-well", dim=1, integrator="leapfrog", dt=0.05, damping=0.1,
                                      noise=0.2, init_velocity_std=0.5), 1e-4),  # not a quadratic: looser
        ("baoab_temperature", dict(problem="quadratic", dim=4, condition=10.0, integrator="baoab", dt=0.1,
                                   damping=1.0, noise_model="temperature", temperature=0.5), 1e-5),
        ("heavy_ball_nesterov_schedule", dict(problem="quadratic", dim=8, condition=100.0, lr=0.5, momentum=0.9,
                                              momentum_schedule="nesterov:3"), 1e-5),
    ]


FLOAT64_CASES = ("heavy_ball_d1_noise", "baoab_temperature")
FLOAT64_TOL = 1e-12


def make_config(ck: Check, opts: dict, **over):
    from inertia_gpu.config import SimulationConfig
    n, steps, reps = (256, 8, 4) if ck.dry else (16384, 64, 128)
    kw = dict(trajectories=n, steps=steps, replicates=reps, seed=20240601, device=ck.device, record_every=1)
    kw.update(opts)
    kw.update(over)
    return SimulationConfig(**kw).validate()


def curve_error(res, ref) -> dict:
    """Worst relative difference per step of the mean curves (inertia decides; the others are reported)."""
    import numpy as np
    out = {}
    for q in ("inertia", "kinetic", "loss", "shadow_inertia"):
        a = np.asarray(res.stats[f"{q}_mean"], dtype=float)
        b = np.asarray(ref.stats[f"{q}_mean"], dtype=float)
        if q == "inertia":
            rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
        else:  # may pass through 0: relative to the curve's scale
            rel = np.abs(a - b) / max(float(np.max(np.abs(b))), 1e-300)
        out[f"{q}_max_rel"] = float(np.nanmax(rel)) if rel.size else 0.0
        out[f"{q}_finite"] = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
    out["finite_counts_equal"] = bool(np.array_equal(res.stats["finite"], ref.stats["finite"]))
    return out


def theory_max_abs_z(res) -> float | None:
    """max over recorded steps of |E[I] - theory| / standard error, where exact theory exists."""
    import numpy as np
    try:
        if "inertia" not in res.theory:
            return None
        sem = np.asarray(res.stats["inertia_sem"], dtype=float)
        diff = np.asarray(res.stats["inertia_mean"], dtype=float) - np.asarray(res.theory["inertia"], dtype=float)
        z = np.abs(diff[sem > 0] / sem[sem > 0])
        return float(np.nanmax(z)) if z.size else None
    except Exception:  # noqa: BLE001 - information only
        return None


def _unavailable(ck: Check, name: str, cfg) -> None:
    from inertia_gpu import backends
    reason = backends.unavailable_reason(name, cfg)
    if reason is not None:
        raise Skip(reason)


def stage_correctness(ck: Check, rec: dict) -> None:
    import numpy as np
    from inertia_gpu.engine import simulate

    refs: dict = {}

    def reference(case, opts, dtype):
        key = (case, dtype)
        if key not in refs:
            refs[key] = simulate(make_config(ck, opts, dtype=dtype, backend="torch"), with_theory=False)
        return refs[key]

    rec["sizes"] = {"trajectories": make_config(ck, ensemble_cases(ck.dry)[0][1]).trajectories,
                    "steps": make_config(ck, ensemble_cases(ck.dry)[0][1]).steps}
    for backend in ("triton", "cupy"):
        for case, opts, tol in ensemble_cases(ck.dry):
            for dtype in ("float32", "float64"):
                if dtype == "float64" and case not in FLOAT64_CASES:
                    continue
                tol_here = FLOAT64_TOL if dtype == "float64" else tol

                def run(backend=backend, case=case, opts=opts, dtype=dtype, tol_here=tol_here):
                    cfg = make_config(ck, opts, dtype=dtype, backend=backend)
                    _unavailable(ck, backend, cfg)
                    ck.budget.need(5, "an ensemble comparison")
                    ref = reference(case, opts, dtype)
                    res = simulate(cfg, with_theory=True)
                    err = curve_error(res, ref)
                    ok = err["inertia_max_rel"] <= tol_here and err["finite_counts_equal"] and err["inertia_finite"]
                    out = {"ok": ok, "tolerance": tol_here, **err, "backend": backend, "dtype": dtype,
                           "reference": f"torch {dtype} on {ck.device}", "elapsed_backend_s": res.elapsed_s,
                           "summary": f"inertia max rel {err['inertia_max_rel']:.2e} (tol {tol_here:.0e})"}
                    z = theory_max_abs_z(res)
                    if z is not None:
                        out["theory_inertia_max_abs_z"] = z  # information: issue 3 asks for <= 4
                    return out

                ck.entry(rec, f"ensemble/{backend}/{case}/{dtype}", run, kind="ensemble", backend=backend)

        def chunking(backend=backend):
            case, opts, _ = ensemble_cases(ck.dry)[0]
            cfg = make_config(ck, opts, backend=backend)
            _unavailable(ck, backend, cfg)
            ck.budget.need(5, "a chunking comparison")
            whole = simulate(cfg, with_theory=False)
            chunk = max(64, cfg.trajectories // 4)
            window = max(1, cfg.steps // 3)
            split = simulate(cfg, with_theory=False, chunk=chunk, window=window)
            same = bool(np.array_equal(whole.replicate_sums, split.replicate_sums)
                        and np.array_equal(whole.first_passage_hist, split.first_passage_hist))
            return {"ok": same, "bitwise_equal": same, "chunk": chunk, "window": window, "case": case,
                    "summary": f"chunk {chunk}, window {window}: {'bitwise equal' if same else 'DIFFERENT'}"}

        ck.entry(rec, f"chunking/{backend}", chunking, kind="invariance", backend=backend)

    def block_sizes():
        from inertia_gpu.backends.triton_ensemble import TritonEnsemble
        case, opts, _ = ensemble_cases(ck.dry)[0]
        cfg = make_config(ck, opts, backend="triton")
        _unavailable(ck, "triton", cfg)
        n = cfg.trajectories
        outs = {}
        for block in (64, 128, 256):
            _, partials = TritonEnsemble(block=block).run(cfg, 0, n, 0, cfg.steps, None)
            outs[block] = partials.cpu()
        same = all(ck.torch.equal(outs[64], outs[b]) for b in outs)
        return {"ok": same, "blocks": list(outs), "bitwise_equal": same, "case": case,
                "summary": f"blocks {list(outs)}: {'bitwise equal' if same else 'DIFFERENT'}"}

    ck.entry(rec, "block_size/triton", block_sizes, kind="invariance", backend="triton")

    def cpu_sanity(case_index):
        case, opts, _ = ensemble_cases(ck.dry)[case_index]
        if not ck.cuda:
            raise Skip("no CUDA device: the reference already runs on the CPU here")
        cfg_gpu = make_config(ck, opts, dtype="float64", backend="torch", trajectories=4096)
        cfg_cpu = make_config(ck, opts, dtype="float64", backend="torch", trajectories=4096, device="cpu")
        err = curve_error(simulate(cfg_gpu, with_theory=False), simulate(cfg_cpu, with_theory=False))
        tol = 1e-10
        return {"ok": err["inertia_max_rel"] <= tol and err["finite_counts_equal"], "tolerance": tol, **err,
                "summary": f"float64 CUDA vs CPU reference: max rel {err['inertia_max_rel']:.2e}"}

    for i in (0, 1):
        ck.entry(rec, f"reference_cuda_vs_cpu/{ensemble_cases(ck.dry)[i][0]}", lambda i=i: cpu_sanity(i),
                 kind="reference", backend="torch")

    optimizer_correctness(ck, rec)


def _mlp_setup(ck: Check):
    torch = ck.torch
    g = torch.Generator().manual_seed(7)
    x = torch.randn(256, 16, generator=g).to(ck.device)
    y = torch.sin(x[:, :1] * 2) + 0.1 * torch.randn(256, 1, generator=g).to(ck.device)
    torch.manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 1)).to(ck.device)
    return model, x, y


def _train(ck: Check, factory, steps: int):
    import copy
    torch = ck.torch
    model0, x, y = _mlp_setup(ck)
    model = copy.deepcopy(model0)
    opt = factory(list(model.parameters()))
    kinetic = []

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
        k = getattr(opt, "kinetic", None)
        if k is not None:
            kinetic.append(k.detach().clone())
    params = [p.detach().clone() for p in model.parameters()]
    return params, (torch.stack(kinetic).cpu() if kinetic else None)


def _max_rel(a_list, b_list) -> float:
    worst = 0.0
    for a, b in zip(a_list, b_list):
        scale = float(b.abs().max().clamp_min(1e-30))
        worst = max(worst, float((a.double() - b.double()).abs().max()) / scale)
    return worst


def _triton_sgd_reason(ck: Check) -> str | None:
    try:
        from inertia_gpu.optim.triton_step import triton_unavailable_reason
    except Exception as exc:  # noqa: BLE001
        return f"inertia_gpu.optim.triton_step not importable: {_first_line(exc)}"
    return triton_unavailable_reason(ck.torch.device(ck.device))


def optimizer_correctness(ck: Check, rec: dict) -> None:
    torch = ck.torch
    from inertia_gpu.optim import InertiaSGD
    steps = 4 if ck.dry else 50
    tol = 1e-5
    combos = {
        "momentum_wd": dict(lr=0.05, momentum=0.9, weight_decay=1e-4),
        "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
        "dampening_no_momentum": dict(lr=0.1, momentum=0.0, weight_decay=1e-3),
        "dampening": dict(lr=0.05, momentum=0.8, dampening=0.1),
    }
    for combo, kw in combos.items():
        def run(kw=kw):
            reason = _triton_sgd_reason(ck)
            if reason:
                raise Skip(reason)
            ck.budget.need(5, "an optimizer comparison")
            ref, _ = _train(ck, lambda ps: torch.optim.SGD(ps, **kw), steps)
            tri, k_tri = _train(ck, lambda ps: InertiaSGD(ps, backend="triton", **kw), steps)
            fe, k_fe = _train(ck, lambda ps: InertiaSGD(ps, backend="foreach", **kw), steps)
            e_tri, e_fe, e_tf = _max_rel(tri, ref), _max_rel(fe, ref), _max_rel(tri, fe)
            e_kin = 0.0
            if k_tri is not None and float(k_fe.abs().max()) > 0:
                e_kin = float((k_tri - k_fe).abs().max() / k_fe.abs().max())
            ok = max(e_tri, e_fe, e_tf, e_kin) <= tol
            return {"ok": ok, "tolerance": tol, "steps": steps, "options": kw, "triton_vs_sgd_max_rel": e_tri,
                    "foreach_vs_sgd_max_rel": e_fe, "triton_vs_foreach_max_rel": e_tf,
                    "kinetic_triton_vs_foreach_max_rel": e_kin,
                    "summary": f"triton/SGD {e_tri:.1e}, foreach/SGD {e_fe:.1e}, kinetic {e_kin:.1e} (tol {tol:.0e})"}

        ck.entry(rec, f"optimizer/InertiaSGD_triton/{combo}", run, kind="optimizer", backend="triton")

    def noisy():
        reason = _triton_sgd_reason(ck)
        if reason:
            raise Skip(reason)
        kw = dict(lr=0.05, momentum=0.9, noise=1e-2, seed=3)
        tri, _ = _train(ck, lambda ps: InertiaSGD(ps, backend="triton", **kw), steps)
        fe, _ = _train(ck, lambda ps: InertiaSGD(ps, backend="foreach", **kw), steps)
        e = _max_rel(tri, fe)
        tol_noise = 1e-4
        return {"ok": e <= tol_noise, "tolerance": tol_noise, "triton_vs_foreach_max_rel": e, "options": kw,
                "summary": f"same Philox noise: triton/foreach {e:.1e} (tol {tol_noise:.0e})"}

    ck.entry(rec, "optimizer/InertiaSGD_triton/noise_vs_foreach", noisy, kind="optimizer", backend="triton")

    for noise in (0.0, 1e-2):
        ck.entry(rec, f"optimizer/cupy_sgd_step/noise={noise:g}", lambda noise=noise: _cupy_sgd_check(ck, noise),
                 kind="optimizer", backend="cupy")


def _cupy_sgd_check(ck: Check, noise: float) -> dict:
    torch = ck.torch
    from inertia_gpu.optim.cuda_step import cupy_sgd_step, cupy_unavailable_reason
    from inertia_gpu.optim import InertiaSGD
    reason = cupy_unavailable_reason()
    if reason is not None:
        raise Skip(f"cupy: {reason}")
    n = 1 << 20
    lr, mu, wd, seed = 0.05, 0.9, 1e-4, 5
    g = torch.Generator(device=ck.device).manual_seed(1)
    p0 = torch.randn(n, device=ck.device, generator=g)
    grads = [torch.randn(n, device=ck.device, generator=g) for _ in range(6)]
    p_c, buf = p0.clone(), torch.zeros_like(p0)
    p_f = torch.nn.Parameter(p0.clone())
    opt = InertiaSGD([p_f], lr=lr, momentum=mu, weight_decay=wd, noise=noise, seed=seed, backend="foreach")
    p_s = torch.nn.Parameter(p0.clone())
    sgd = torch.optim.SGD([p_s], lr=lr, momentum=mu, weight_decay=wd)
    kin_err = 0.0
    for t, grad in enumerate(grads):
        sums = cupy_sgd_step(p_c, grad, buf, lr=lr, momentum=mu, weight_decay=wd, noise=noise, seed=seed,
                             step=t, parameter=0, first=(t == 0))
        p_f.grad = grad.clone()
        opt.step(loss=0.0)
        p_s.grad = grad.clone()
        sgd.step()
        kc, kf = 0.5 * lr * sums[0], opt.kinetic
        if float(kf) > 0:
            kin_err = max(kin_err, float((kc - kf).abs() / kf))
    e_p = _max_rel([p_c], [p_f.detach()])
    e_b = _max_rel([buf], [opt.state[p_f]["momentum_buffer"]])
    e_s = _max_rel([p_c], [p_s.detach()]) if noise == 0 else None
    tol = 1e-5
    worst = max(e_p, e_b, kin_err, e_s or 0.0)
    return {"ok": worst <= tol, "tolerance": tol, "elements": n, "steps": len(grads), "params_vs_foreach_max_rel": e_p,
            "buffer_vs_foreach_max_rel": e_b, "kinetic_vs_foreach_max_rel": kin_err, "params_vs_sgd_max_rel": e_s,
            "summary": f"params {e_p:.1e}, buffer {e_b:.1e}, kinetic {kin_err:.1e} vs foreach (tol {tol:.0e})"}


# --- stage 3: throughput ---------------------------------------------------------------------------

def ensemble_sizes(dry: bool) -> list[tuple[int, int, int]]:
    """(dim, trajectories, steps) of the throughput runs; d = 1 at >= 1e7 trajectories on a GPU."""
    if dry:
        return [(1, 256, 4), (8, 128, 4), (64, 64, 2)]
    return [(1, 1 << 24, 128), (8, 1 << 22, 64), (64, 1 << 20, 16)]


def throughput_config(ck: Check, dim: int, n: int, steps: int, noisy: bool, backend: str):
    from inertia_gpu.config import SimulationConfig
    return SimulationConfig(problem="quadratic", dim=dim, condition=10.0 if dim > 1 else None, lr=0.1,
                            momentum=0.9, noise=0.5 if noisy else 0.0, trajectories=n, steps=steps, record_every=1,
                            replicates=1, device=ck.device, backend=backend, seed=1).validate()


def peer_step_fn(ck: Check, n: int, dim: int, noisy: bool, lr=0.1, mu=0.9, s=0.5):
    """The per-step loop of PyTorch ops a user would write: torch.randn noise, per-step sums of K, L, I, I^2."""
    torch = ck.torch
    from inertia_gpu.problems import log_spaced_spectrum
    lam = torch.tensor(log_spaced_spectrum(dim, 10.0) if dim > 1 else [1.0], device=ck.device)

    def step(theta, b):
        g = lam * theta
        if noisy:
            g = g + s * torch.randn_like(theta)
        b = mu * b + g
        theta = theta - lr * b
        kin = (0.5 * lr) * (b * b).sum(-1)
        loss = 0.5 * (lam * theta * theta).sum(-1)
        ine = kin + loss
        return theta, b, torch.stack([kin.sum(), loss.sum(), ine.sum(), (ine * ine).sum()])

    return step


def loop_runner(ck: Check, step, n: int, dim: int, steps: int):
    torch = ck.torch
    shape = (n,) if dim is None else (n, dim)
    theta0 = torch.randn(shape, device=ck.device)

    def run():
        theta, b = theta0, torch.zeros_like(theta0)
        sums = []
        for _ in range(steps):
            theta, b, st = step(theta, b)
            sums.append(st)
        return torch.stack(sums)

    return run


def stage_throughput(ck: Check, rec: dict) -> None:
    torch = ck.torch
    from inertia_gpu import backends
    bench_mod_eager = _optional("inertia_gpu.bench", "eager_step_fn")
    rates: dict = {}
    rec["ensemble"] = rates
    for dim, n, steps in ensemble_sizes(ck.dry):
        for noisy in (True, False):
            tag = f"d{dim}_{'noise' if noisy else 'nonoise'}"
            # "triton-fast-sum": the same kernel with tl.sum instead of the fixed-order trees and no
            # per-step window guards, to price the bitwise block-size invariance (d = 1 with noise only)
            variants = ("triton", "cupy", "triton-fast-sum") if (dim == 1 and noisy) else ("triton", "cupy")
            for backend in variants:
                def run(backend=backend, dim=dim, n=n, steps=steps, noisy=noisy, tag=tag):
                    name = "triton" if backend.startswith("triton") else backend
                    cfg = throughput_config(ck, dim, n, steps, noisy, name)
                    reason = backends.unavailable_reason(name, cfg)
                    if reason is not None:
                        raise Skip(reason)
                    ck.budget.need(15, "an ensemble throughput run")
                    if backend == "triton-fast-sum":
                        be = backends.backend_class(name)(tree=False, guard="auto")
                    else:
                        be = backends.backend_class(name)()
                    t_first = time.perf_counter()
                    be.run(cfg, 0, n, 0, steps, None)  # compile (reported separately)
                    ck.sync()
                    first_s = time.perf_counter() - t_first
                    t = ck.timed(lambda: be.run(cfg, 0, n, 0, steps, None), warmup=1, reps=3)
                    rate = n * steps / t["median_s"]
                    rates.setdefault(tag, {})[backend] = rate
                    return {"device": ck.doc["device_name"], "trajectories": n, "steps": steps, "dim": dim,
                            "noise": cfg.noise, "record_every": 1, "traj_steps_per_s": rate,
                            "coordinate_steps_per_s": rate * dim, "first_call_s": first_s, **t,
                            "what": "one backend.run launch: heavy ball, quadratic, statistics every step",
                            "summary": f"{rate:.3e} traj-steps/s"}

                ck.entry(rec, f"ensemble/{backend}/{tag}", run, kind="ensemble", backend=backend, dim=dim,
                         noisy=noisy, trajectories=n)

            if dim == 1 and noisy:
                def run_engine(dim=dim, n=n, steps=steps, noisy=noisy):
                    """What a user of `simulate` sees: launches, windows, replicate sums, statistics."""
                    from inertia_gpu.engine import simulate
                    cfg = throughput_config(ck, dim, n, steps, noisy, "triton")
                    reason = backends.unavailable_reason("triton", cfg)
                    if reason is not None:
                        raise Skip(reason)
                    ck.budget.need(20, "the engine throughput run")
                    simulate(cfg, with_theory=False)  # warm-up (compiled already by the kernel entry)
                    result = simulate(cfg, with_theory=False)
                    rate = result.trajectory_steps_per_s
                    return {"device": ck.doc["device_name"], "trajectories": n, "steps": steps, "dim": dim,
                            "traj_steps_per_s": rate, "elapsed_s": result.elapsed_s,
                            "what": "engine.simulate end to end (backend triton), statistics every step",
                            "summary": f"{rate:.3e} traj-steps/s through the engine"}

                ck.entry(rec, f"ensemble/engine-triton/{tag}", run_engine, kind="ensemble", backend="triton",
                         dim=dim, noisy=noisy, trajectories=n)

            peer_steps = 4 if ck.dry else 8
            compile_steps = 4 if ck.dry else 16
            for peer in ("eager", "compile"):
                if peer == "compile" and not (dim == 1 and noisy):
                    continue  # the target's peer only: each compile costs tens of seconds

                def run_peer(peer=peer, dim=dim, n=n, noisy=noisy, tag=tag):
                    ck.budget.need(20 if peer == "eager" else 60, f"the {peer} peer")
                    source = "benchmarks/gpu_check.peer_step_fn"
                    shape_dim = dim
                    if dim == 1 and noisy and bench_mod_eager is not None:
                        try:  # the bench command's own peer (per-group sums of the six quantities)
                            step = bench_mod_eager(n, ck.device, lr=0.1, mu=0.9, s=0.5, lam=1.0)
                            source, shape_dim = "inertia_gpu.bench.eager_step_fn", None
                        except Exception:  # noqa: BLE001
                            step = peer_step_fn(ck, n, dim, noisy)
                    else:
                        step = peer_step_fn(ck, n, dim, noisy)
                    k = peer_steps
                    info = {}
                    if peer == "compile":
                        k = compile_steps
                        backend_name = os.environ.get("GPU_CHECK_COMPILE_BACKEND",
                                                      "aot_eager" if (ck.dry and not ck.cuda) else "inductor")
                        step = torch.compile(step, dynamic=False, backend=backend_name)
                        info["compile_backend"] = backend_name
                        t0 = time.perf_counter()
                        loop_runner(ck, step, n, shape_dim, 2)()
                        ck.sync()
                        info["compile_s"] = time.perf_counter() - t0
                    t = ck.timed(loop_runner(ck, step, n, shape_dim, k), warmup=1, reps=3)
                    rate = n * k / t["median_s"]
                    rates.setdefault(tag, {})[peer] = rate
                    out = {"device": ck.doc["device_name"], "trajectories": n, "steps_timed": k, "dim": dim,
                           "traj_steps_per_s": rate, "source": source, **info, **t,
                           "what": f"{peer} per-step loop of torch ops, timed on {k} steps, rate per step",
                           "summary": f"{rate:.3e} traj-steps/s"}
                    tri = rates.get(tag, {}).get("triton")
                    if tri:
                        out["triton_over_this"] = tri / rate
                        out["summary"] += f"; triton is {tri / rate:.1f}x"
                    return out

                ck.entry(rec, f"ensemble/{peer}_loop/{tag}", run_peer, kind="ensemble_peer", backend=peer, dim=dim,
                         noisy=noisy, trajectories=n)
            torch.cuda.empty_cache() if ck.cuda else None

    optimizer_throughput(ck, rec)


def copy_bandwidth(ck: Check) -> dict:
    torch = ck.torch
    ceilings = _optional("inertia_gpu.bench", "ceilings")
    if ceilings is not None and not ck.dry:
        try:
            c = ceilings(ck.device, False)
            c["source"] = "inertia_gpu.bench.ceilings"
            return c
        except Exception:  # noqa: BLE001 - fall back to our own copy
            pass
    n_bytes = (1 << 20) if ck.dry else (1 << 30)
    src = torch.ones(n_bytes // 4, dtype=torch.float32, device=ck.device)
    dst = torch.empty_like(src)
    t = ck.timed(lambda: dst.copy_(src), warmup=2, reps=10)
    return {"copy_bandwidth_Bps": 2 * n_bytes / t["median_s"], "copy_bytes": n_bytes,
            "copy_method": "dst.copy_(src) float32, bytes read + written", "source": "benchmarks/gpu_check", **t}


def gpt2_shapes(ck: Check) -> tuple[list, str]:
    mod = _load_benchmark_module("bench_optimizer")
    target, layers = (5e3, 1) if ck.dry else (124_439_808, 12)  # GPT-2 small exactly: width 768
    if mod is not None and hasattr(mod, "gpt2_like_shapes"):
        try:
            return list(mod.gpt2_like_shapes(target, layers=layers)), "benchmarks/bench_optimizer.gpt2_like_shapes"
        except Exception:  # noqa: BLE001
            pass
    d, vocab, pos = (16, 128, 32) if ck.dry else (768, 50257, 1024)
    shapes = [(vocab, d), (pos, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)], "benchmarks/gpu_check.gpt2_shapes"


def optimizer_steps(ck: Check, params: list, noise: float = 1e-3) -> dict:
    """name -> one optimizer step on `params` (grads set): ours and the peers, each with its own state."""
    torch = ck.torch
    from inertia_gpu.optim import InertiaSGD
    lr, mu = 1e-3, 0.9
    steps = {}
    loss = torch.zeros((), device=ck.device)
    backend = "triton" if _triton_sgd_reason(ck) is None else "foreach"
    ours = InertiaSGD(params, lr=lr, momentum=mu, noise=noise, seed=1, backend=backend, record_history=False)
    steps["InertiaSGD"] = lambda: ours.step(loss=loss)
    quiet = InertiaSGD(params, lr=lr, momentum=mu, seed=1, backend=backend, record_history=False)
    steps["InertiaSGD_no_noise"] = lambda: quiet.step(loss=loss)
    steps["SGD_foreach"] = torch.optim.SGD(params, lr=lr, momentum=mu, foreach=True).step
    try:
        fused = torch.optim.SGD(params, lr=lr, momentum=mu, fused=True)
        steps["SGD_fused"] = fused.step
    except (RuntimeError, ValueError, TypeError) as exc:
        steps["SGD_fused"] = f"fused SGD unavailable: {_first_line(exc)}"
    unfused_opt = torch.optim.SGD(params, lr=lr, momentum=mu, foreach=True)

    def unfused():  # SGD + randn_like noise + a separate norm for the kinetic energy
        grads = [p.grad for p in params]
        noisy = torch._foreach_add(grads, [torch.randn_like(g) for g in grads], alpha=noise)
        for p, g in zip(params, noisy):
            p.grad = g
        unfused_opt.step()
        for p, g in zip(params, grads):
            p.grad = g
        bufs = [unfused_opt.state[p]["momentum_buffer"] for p in params]
        return (0.5 * lr) * torch.stack(torch._foreach_norm(bufs)).square().sum()

    steps["unfused"] = unfused
    steps["_backend"] = backend
    return steps


def optimizer_throughput(ck: Check, rec: dict) -> None:
    torch = ck.torch
    figures: dict = {}
    rec["optimizer"] = figures

    def bandwidth():
        ck.budget.need(5, "the copy bandwidth")
        c = copy_bandwidth(ck)
        figures["ceilings"] = c
        return {**c, "device": ck.doc["device_name"],
                "summary": f"copy {c['copy_bandwidth_Bps'] / 1e9:.0f} GB/s (read + written)"}

    ck.entry(rec, "ceiling/copy_bandwidth", bandwidth, kind="ceiling")

    state: dict = {}

    def setup():
        ck.budget.need(20, "the optimizer throughput runs")
        shapes, source = gpt2_shapes(ck)
        n = sum(math.prod(s) for s in shapes)
        g = torch.Generator(device=ck.device).manual_seed(0)
        params = []
        for s in shapes:
            p = (0.02 * torch.randn(s, device=ck.device, generator=g)).requires_grad_()
            p.grad = 1e-3 * torch.randn(s, device=ck.device, generator=g)
            params.append(p)
        state.update(params=params, n=n)
        return {"parameters": n, "tensors": len(shapes), "shapes_source": source,
                "summary": f"{n:,d} parameters in {len(shapes)} tensors"}

    ck.entry(rec, "optimizer/setup_gpt2_like", setup, kind="setup")
    if "params" not in state:
        return
    steps = optimizer_steps(ck, state["params"])
    figures["inertia_backend"] = steps.pop("_backend")
    n = state["n"]
    reps = 2 if ck.dry else 10
    warmup = 1 if ck.dry else 3
    for name, fn in steps.items():
        def run(name=name, fn=fn):
            if isinstance(fn, str):
                raise Skip(fn)
            ck.budget.need(10, "an optimizer step timing")
            t = ck.timed(fn, warmup=warmup, reps=reps)
            bps = n * OPTIMIZER_BYTES_PER_PARAM / t["median_s"]
            figures[name] = {"median_s": t["median_s"], "bytes_per_s": bps}
            out = {"device": ck.doc["device_name"], "parameters": n, "bytes_per_param": OPTIMIZER_BYTES_PER_PARAM,
                   "bytes_per_s": bps, **t}
            ceiling = figures.get("ceilings", {}).get("copy_bandwidth_Bps")
            if ceiling:
                out["copy_bandwidth_Bps"] = ceiling
                out["fraction_of_copy"] = bps / ceiling
            ours = figures.get("InertiaSGD")
            if ours and name != "InertiaSGD":
                out["time_over_InertiaSGD"] = t["median_s"] / ours["median_s"]
            out["summary"] = f"{bps / 1e9:.0f} GB/s" + (f" ({100 * out['fraction_of_copy']:.0f}% of copy)"
                                                         if "fraction_of_copy" in out else "") + \
                (f", {out['time_over_InertiaSGD']:.2f}x InertiaSGD's time" if "time_over_InertiaSGD" in out else "")
            return out

        ck.entry(rec, f"optimizer/{name}", run, kind="optimizer", backend=name, parameters=n)

    def cupy_step():
        from inertia_gpu.optim.cuda_step import cupy_sgd_step, cupy_unavailable_reason
        reason = cupy_unavailable_reason()
        if reason is not None:
            raise Skip(f"cupy: {reason}")
        ck.budget.need(10, "the cupy optimizer step")
        p = torch.zeros(n, device=ck.device)
        g = torch.randn(n, device=ck.device) * 1e-3
        b = torch.zeros(n, device=ck.device)
        counter = [0]

        def fn():
            counter[0] += 1
            cupy_sgd_step(p, g, b, lr=1e-3, momentum=0.9, noise=1e-3, seed=1, step=counter[0], parameter=0)

        t = ck.timed(fn, warmup=3, reps=reps)
        bps = n * OPTIMIZER_BYTES_PER_PARAM / t["median_s"]
        ceiling = figures.get("ceilings", {}).get("copy_bandwidth_Bps")
        figures["cupy_sgd_step"] = {"median_s": t["median_s"], "bytes_per_s": bps}
        return {"device": ck.doc["device_name"], "parameters": n, "layout": "one flat tensor", "bytes_per_s": bps,
                "fraction_of_copy": bps / ceiling if ceiling else None, **t,
                "summary": f"{bps / 1e9:.0f} GB/s (one flat tensor)"}

    ck.entry(rec, "optimizer/cupy_sgd_step_flat", cupy_step, kind="optimizer", backend="cupy", parameters=n)
    state.clear()
    steps.clear()
    if ck.cuda:
        torch.cuda.empty_cache()


# --- stage 4: inertia-gpu bench ----------------------------------------------------------------------

PRELUDE = ("import sys; sys.path.insert(0, {bench_dir!r}); import gpu_check; gpu_check.ensure_package(); ")
CLI_CODE = PRELUDE + "from inertia_gpu.cli import main; sys.exit(main(sys.argv[1:]))"
SCRIPT_CODE = PRELUDE + ("import runpy; path = sys.argv[1]; sys.argv = sys.argv[1:]; "
                         "runpy.run_path(path, run_name='__main__')")


def _subprocess_entry(ck: Check, code: str, argv: list[str], label: str, limit: float, note: str,
                      json_path: str | None) -> dict:
    """Run `python -c code argv` in the repo with a timeout; rc, output tails and the JSON written."""
    if limit < 10:
        raise Skip(f"time budget: {ck.budget.remaining():.0f} s left, {label} needs more")
    cmd = [sys.executable, "-c", code.format(bench_dir=os.path.join(REPO, "benchmarks"))] + argv
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise Skip(f"time budget: {label} stopped after {limit:.0f} s") from None
    written = json_path if json_path and os.path.exists(json_path) else None
    out = {"command": f"{label} " + " ".join(argv), "note": note, "returncode": proc.returncode,
           "wall_s": time.perf_counter() - t0, "stdout_tail": proc.stdout[-4000:],
           "stderr_tail": proc.stderr[-2000:], "ok": proc.returncode == 0,
           "json": os.path.basename(written) if written else None}
    out["summary"] = f"rc {proc.returncode} in {out['wall_s']:.0f} s" + (f", {out['json']} written" if written else "")
    return out


def stage_bench(ck: Check, rec: dict) -> None:
    def bench():
        if importlib.util.find_spec("inertia_gpu.bench") is None:
            raise Skip("inertia_gpu.bench is not in this checkout")
        limit = ck.budget.remaining() - 10
        path = os.path.join(ck.out_dir, "bench.json")
        note = "the full suites"
        if ck.dry:  # the suites take minutes on a CPU: prove only that the command starts from this script
            argv, limit, note = ["bench", "--help"], min(limit, 30), "dry run: only checks that the command starts"
        else:
            argv = ["bench", "--suite", "all", "--json", path, "--plot", os.path.join(ck.out_dir, "roofline.png")]
            if limit < 150:
                argv.append("--quick")
                note = f"--quick: only {limit:.0f} s of the budget left"
        return _subprocess_entry(ck, CLI_CODE, argv, "inertia-gpu", limit, note, path)

    ck.entry(rec, "inertia-gpu bench --suite all", bench, kind="bench")

    def bench_ensemble():
        script = os.path.join(REPO, "benchmarks", "bench_ensemble.py")
        if not os.path.exists(script):
            raise Skip("benchmarks/bench_ensemble.py is not in this checkout")
        limit = ck.budget.remaining() - 5
        path = os.path.join(ck.out_dir, "bench_ensemble.json")
        if ck.dry:
            argv, limit, note = [script, "--help"], min(limit, 30), "dry run: only checks that the script starts"
        else:
            argv, note = [script, "--device", "cuda", "--quick", "--out", path], "--quick sizes"
        return _subprocess_entry(ck, SCRIPT_CODE, argv, "python", limit, note, path)

    ck.entry(rec, "benchmarks/bench_ensemble.py --quick", bench_ensemble, kind="bench")


# --- stage 5: verdict --------------------------------------------------------------------------------

def _entries(ck: Check, stage: str) -> list[dict]:
    return ck.doc["stages"].get(stage, {}).get("entries", [])


def _find(ck: Check, stage: str, name: str) -> dict | None:
    for e in _entries(ck, stage):
        if e["name"] == name:
            return e
    return None


def verdict_rows(ck: Check) -> list[dict]:
    rows = []

    def correctness_row(label, prefix):
        es = [e for e in _entries(ck, "correctness") if e["name"].startswith(prefix)]
        ran = [e for e in es if e["status"] != "skipped"]
        if not es:
            rows.append({"target": label, "measured": "not run", "threshold": "all pass", "pass": None})
            return
        if not ran:
            rows.append({"target": label, "measured": "skipped: " + es[0].get("reason", "?")[:80],
                         "threshold": "all pass", "pass": None})
            return
        good = sum(e["status"] == "ok" for e in ran)
        errs = [e.get("inertia_max_rel", e.get("triton_vs_sgd_max_rel", e.get("params_vs_foreach_max_rel")))
                for e in ran]
        errs = [x for x in errs if isinstance(x, (int, float))]
        worst = f", worst rel {max(errs):.1e}" if errs else ""
        rows.append({"target": label, "measured": f"{good}/{len(ran)} ok{worst}", "threshold": "all pass",
                     "pass": good == len(ran), "kind": "correctness"})

    correctness_row("Triton ensemble = reference (1e-5 f32, 1e-12 f64)", "ensemble/triton/")
    correctness_row("CuPy ensemble = reference (1e-5 f32, 1e-12 f64)", "ensemble/cupy/")
    correctness_row("Triton chunking invariance (bitwise)", "chunking/triton")
    if _find(ck, "correctness", "block_size/triton"):
        correctness_row("Triton block-size invariance (bitwise)", "block_size/triton")
    correctness_row("CuPy chunking invariance (bitwise)", "chunking/cupy")
    correctness_row("reference CUDA = CPU (float64)", "reference_cuda_vs_cpu/")
    correctness_row("InertiaSGD triton = foreach = torch.optim.SGD (1e-5)", "optimizer/InertiaSGD_triton/")
    correctness_row("CuPy SGD step = foreach (1e-5)", "optimizer/cupy_sgd_step/")

    def rate(name):
        e = _find(ck, "throughput", name)
        return e.get("traj_steps_per_s") if e and e["status"] == "ok" else None

    def perf_row(label, value, threshold, fmt, key):
        passed = None if value is None else value >= threshold
        rows.append({"target": label, "measured": "not measured" if value is None else fmt.format(value),
                     "threshold": f">= {fmt.format(threshold)}", "pass": None if ck.dry else passed,
                     "value": value, "threshold_value": threshold, "kind": "performance", "key": key})

    tri, eager, comp, cupy = (rate("ensemble/triton/d1_noise"), rate("ensemble/eager_loop/d1_noise"),
                              rate("ensemble/compile_loop/d1_noise"), rate("ensemble/cupy/d1_noise"))
    perf_row("Triton d=1 heavy ball + noise, stats every step (traj-steps/s)", tri,
             TARGETS["triton_d1_traj_steps_per_s"], "{:.3g}", "triton_d1_traj_steps_per_s")
    perf_row("Triton / eager per-step loop (same run)", tri / eager if tri and eager else None,
             TARGETS["triton_over_eager"], "{:.1f}x", "triton_over_eager")
    perf_row("Triton / torch.compile per-step loop (same run)", tri / comp if tri and comp else None,
             TARGETS["triton_over_compile"], "{:.1f}x", "triton_over_compile")
    perf_row("CuPy / Triton, d=1 heavy ball + noise", cupy / tri if cupy and tri else None,
             TARGETS["cupy_over_triton"], "{:.2f}", "cupy_over_triton")
    others = []
    for tag in ("d1_nonoise", "d8_noise", "d8_nonoise", "d64_noise", "d64_nonoise"):
        t, c = rate(f"ensemble/triton/{tag}"), rate(f"ensemble/cupy/{tag}")
        if t and c:
            others.append(c / t)
    if others:
        perf_row("CuPy / Triton, worst of the other d and noise settings", min(others),
                 TARGETS["cupy_over_triton"], "{:.2f}", "cupy_over_triton_worst_other")

    def opt(name, key):
        e = _find(ck, "throughput", f"optimizer/{name}")
        return e.get(key) if e and e["status"] == "ok" else None

    frac = opt("InertiaSGD", "fraction_of_copy")
    fused = opt("SGD_fused", "time_over_InertiaSGD")
    unfused = opt("unfused", "time_over_InertiaSGD")
    n = (_find(ck, "throughput", "optimizer/InertiaSGD") or {}).get("parameters")
    size = f" ({n:.3g} params)" if n else ""
    perf_row(f"InertiaSGD GB/s / copy bandwidth, 20 B/param{size}", frac, TARGETS["optimizer_fraction_of_copy"],
             "{:.2f}", "optimizer_fraction_of_copy")
    perf_row("InertiaSGD vs SGD(fused=True): fused time / ours", fused, TARGETS["optimizer_over_fused"],
             "{:.2f}x", "optimizer_over_fused")
    perf_row("InertiaSGD vs unfused (SGD + randn_like + norm)", unfused, TARGETS["optimizer_over_unfused"],
             "{:.2f}x", "optimizer_over_unfused")
    return rows


def stage_verdict(ck: Check, rec: dict) -> None:
    rows = verdict_rows(ck)
    rec["rows"] = rows
    ck.doc["verdict"] = rows
    rec["stage_status"] = {k: v.get("status") for k, v in ck.doc["stages"].items() if k != "verdict"}


def summary_markdown(ck: Check) -> str:
    d = ck.doc
    env = d["stages"].get("environment", {}).get("result", {})
    lines = [f"# GPU check: {d.get('device_name')}" + (" (DRY RUN: tiny sizes, not a measurement)" if ck.dry else ""),
             "",
             f"{d['started']} · torch {env.get('torch')} · triton {env.get('triton')} · cupy {env.get('cupy')} · "
             f"CUDA {env.get('torch_cuda')} · SMs {env.get('sm_count')} · {d.get('elapsed_s', 0):.0f} s",
             "",
             "| target | measured | threshold | result |",
             "|---|---|---|---|"]

    def mark(p):
        return "n/a" if p is None else ("PASS" if p else "FAIL")

    for r in d.get("verdict", []):
        lines.append(f"| {r['target']} | {r['measured']} | {r['threshold']} | {mark(r['pass'])} |")
    lines += ["", "stages: " + ", ".join(f"{k} {v.get('status')}" for k, v in d["stages"].items()), ""]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<device>-<date>/; a temp folder with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is here (CI)")
    p.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole check (seconds)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.dry_run:
            print("gpu_check: error: no CUDA device visible; on a CPU-only machine use --dry-run", file=sys.stderr)
            return 2
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
    ensure_package()
    device = "cuda" if cuda else "cpu"
    if args.out is None:
        if args.dry_run:
            args.out = tempfile.mkdtemp(prefix="gpu_check_dry_")
        else:
            date = _dt.date.today().isoformat()
            args.out = os.path.join(REPO, "benchmarks", "results", f"{slug(torch.cuda.get_device_name())}-{date}")
    os.makedirs(args.out, exist_ok=True)
    ck = Check(args.out, args.dry_run, args.budget_s, torch, device)
    print(f"gpu_check: {'dry run, ' if args.dry_run else ''}device {device}, results -> {args.out}", flush=True)

    ck.stage("environment", lambda rec: stage_environment(ck, rec))
    ck.stage("correctness", lambda rec: stage_correctness(ck, rec))
    ck.stage("throughput", lambda rec: stage_throughput(ck, rec))
    ck.stage("bench", lambda rec: stage_bench(ck, rec))
    ck.stage("verdict", lambda rec: stage_verdict(ck, rec))
    ck.doc["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    ck.save()
    try:
        text = summary_markdown(ck)
    except Exception:  # noqa: BLE001 - the JSON stands; say so in the table's place
        text = "# GPU check\n\nsummary failed:\n\n```\n" + traceback.format_exc() + "```\n"
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(text)
    print()
    print(text)
    print(f"gpu_check: wrote {ck.path} and summary.md in {ck.budget.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
