"""Run the static profile: compile each variant in a worker process (with a time limit), read its SASS,
and gather the figures into one JSON-ready dict."""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import budgets, figures, toolchain
from .hardware import capability, gpu

CAVEATS = [
    "Static prediction from the SASS, not a measurement: ceilings, not expected speeds.",
    "Issue limit = SMs x 4 schedulers x clock x 32 / instructions per unit: one instruction per scheduler "
    "per clock, no dual issue, every instruction counted once whatever its predicate.",
    "Latency is not modelled: with few warps per SM (registers) dependent chains, barriers (BAR.SYNC) and "
    "memory latency can keep a kernel well below both limits.",
    "Pipe limits use per-scheduler rates (hardware.py); shared memory counts bytes/128 wavefronts per "
    "access (no bank conflicts, no broadcast).",
    "Memory: the optimizer's bytes per parameter are its per-element loads and stores; an ensemble variant's "
    "bytes_per_coordinate_step is the state's traffic in the main loop (every load and store per lane at its "
    "width, recording aside; cache hits count as HBM traffic: an upper bound), 0 when the state lives in "
    "registers; hbm_limited_coordinate_steps_per_s = HBM bandwidth / those bytes.",
    "Recording code is weighted by 1/record_every: the body of the branch on the recorded-step table's row "
    "(`if row >= 0`, found in the SASS by data flow; record_weighting says so, or names the estimate used "
    "when it is not found); libdevice's Payne-Hanek paths (sinf/cosf for "
    "|x| >= 105615, sin/cos for |x| >= 2^31) are left out; nested loops other than that are counted once.",
]


def run_worker(spec: dict, arch: str, out: Path, timeout_s: float) -> dict:
    """Compile one variant in a subprocess; the launch record, or {'error': ...}."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out / "triton-cache")  # a fresh cache: ptxas runs and prints its log
    cmd = [sys.executable, "-m", "inertia_gpu.static_profile.worker", str(capability(arch)), json.dumps(spec),
           str(out)]
    t0 = time.perf_counter()
    # a session of its own: on timeout the worker and its ptxas are stopped together
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except BaseException as exc:  # the time limit, or an interrupt: leave no compiler running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        return {"error": f"did not compile within {timeout_s:.0f} s", "compile_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        return {"error": (lines[-1] if lines else f"worker exit {proc.returncode}")[:400],
                "compile_s": round(time.perf_counter() - t0, 1)}
    return json.loads((out / "launch.json").read_text())


def profile_variant(spec: dict, arch: str, timeout_s: float, sass_dir: Path | None) -> dict:
    """Compile one variant (worker process) and analyze it; a failure is an entry with its error."""
    from .targets import ensemble_config
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        launch = run_worker(spec, arch, out, timeout_s)
        if "error" in launch:
            return {"name": spec["name"], "config": _config(spec, ensemble_config), **launch}
        cubin = (out / "kernel.cubin").read_bytes()
    if sass_dir is not None:
        _keep(sass_dir, spec["name"], cubin, launch)
    return analyze(spec, arch, cubin, launch)


def analyze(spec: dict, arch: str, cubin: bytes, launch: dict) -> dict:
    """The profile entry of one compiled variant."""
    from .targets import ensemble_config
    g = gpu(arch)
    entry = {"name": spec["name"], "config": _config(spec, ensemble_config)}
    if spec["kind"] == "ensemble":
        entry["passes"] = spec.get("passes", "fast")  # which launch of the two-pass launcher was counted
    try:
        if spec["kind"] == "ensemble":
            cfg = entry["config"]
            fig = figures.ensemble_figures(g, cubin, launch, cfg["record_every"], cfg["dim"])
            entry.update(block=launch["block"], num_warps=launch["num_warps"], **fig)
        else:
            size = {"float32": 4, "bfloat16": 2, "float64": 8}[spec["config"]["dtype"]]
            entry.update(figures.optimizer_figures(g, cubin, launch, size))
    except Exception as exc:  # a kernel this reader cannot read is an entry, not a crash
        entry["error"] = f"analysis failed: {type(exc).__name__}: {exc}"[:400]
    entry["compile_s"] = launch["compile_s"]
    return entry


def _config(spec: dict, ensemble_config) -> dict:
    if spec["kind"] != "ensemble":
        return dict(spec["config"])
    cfg = ensemble_config(spec["config"])
    return {"problem": cfg.problem, "integrator": cfg.integrator, "schedule": cfg.momentum_schedule,
            "noise_model": cfg.noise_model, "noisy": bool(cfg.noisy), "dim": cfg.dim,
            "record_every": cfg.record_every, "dtype": cfg.dtype, "ledger": bool(cfg.ledger)}


def _keep(sass_dir: Path, name: str, cubin: bytes, launch: dict) -> None:
    sass_dir.mkdir(parents=True, exist_ok=True)
    (sass_dir / f"{name}.cubin").write_bytes(cubin)
    (sass_dir / f"{name}.sass").write_text(toolchain.disassemble(cubin))
    (sass_dir / f"{name}.launch.json").write_text(json.dumps(launch, indent=1))


def run_profile(arch: str, variants: list[dict], timeout_s: float = 120.0, sass_dir: str | None = None,
                log=print) -> dict:
    import triton
    g = gpu(arch)
    for name in ("nvdisasm", "cuobjdump"):
        toolchain.tool(name)  # fail early, in one line, when the wheel lacks them
    result = {"arch": arch, "gpu": {"name": g.name, "sms": g.sms, "clock_hz": g.clock_hz,
                                    "hbm_bytes_per_s": g.hbm_bytes_per_s, "rates_per_scheduler": g.rates,
                                    "sources": g.sources},
              "triton": triton.__version__, "ptxas": toolchain.ptxas_release(capability(arch)),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "caveats": CAVEATS, "ensemble": [], "optimizer": []}
    for spec in variants:
        log(f"compiling {spec['name']} for {arch} ...")
        entry = profile_variant(spec, arch, timeout_s, Path(sass_dir) if sass_dir else None)
        budget = budgets.BUDGETS.get(arch, {}).get(spec["name"])
        if budget is not None:
            entry["budget"] = {"limits": budget, "violations": budgets.violations(entry, budget)}
        result[spec["kind"]].append(entry)
    return result

