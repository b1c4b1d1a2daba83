"""benchmarks/gpu_check.py --dry-run: the one-call GPU check runs end to end here, at tiny sizes.

On a CPU-only machine Triton runs under its interpreter and CuPy is recorded as
skipped with its reason; the JSON must hold every stage, correct entries for the
backends that are available, and a reason for each that is not.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STAGES = ("environment", "correctness", "throughput", "bench", "verdict")
STATUSES = {"ok", "fail", "error", "skipped"}

pytest.importorskip("triton")


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_dry")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--budget-s", "120"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = _strict((out / "gpu_check.json").read_text())
    return doc, out, elapsed, proc.stdout


def test_runs_end_to_end_within_a_minute(dry_run):
    doc, out, elapsed, stdout = dry_run
    assert elapsed < 60, f"dry run took {elapsed:.0f} s"
    files = sorted(os.listdir(out))
    assert "gpu_check.json" in files and "summary.md" in files
    assert len(files) <= 6, files
    assert doc["dry_run"] is True and doc["finished"]
    assert "| target | measured | threshold | result |" in stdout  # the table is printed
    assert (out / "summary.md").read_text().startswith("# GPU check:")


def test_every_stage_present_with_a_status(dry_run):
    doc = dry_run[0]
    for name in STAGES:
        assert name in doc["stages"], name
        stage = doc["stages"][name]
        assert stage["status"] in STATUSES, (name, stage)
        assert "elapsed_s" in stage
    env = doc["stages"]["environment"]["result"]
    for key in ("device_name", "torch", "triton", "cupy", "torch_cuda"):
        assert key in env
    assert doc["device_name"] == env["device_name"]
    for name in ("environment", "correctness", "throughput"):
        assert doc["stages"][name]["status"] == "ok", doc["stages"][name]


def test_entries_ok_or_skipped_with_a_reason(dry_run):
    doc = dry_run[0]
    for name in ("correctness", "throughput", "bench"):
        for e in doc["stages"][name]["entries"]:
            assert e["status"] in STATUSES, e
            if e["status"] == "skipped":
                assert e.get("reason"), e
            if e["status"] == "error":
                assert e.get("traceback"), e
    correctness = doc["stages"]["correctness"]["entries"]
    by_backend = {}
    for e in correctness:
        by_backend.setdefault(e.get("backend"), []).append(e)
    # triton is installed (importorskip above): every triton comparison ran and passed
    triton = by_backend["triton"]
    assert len(triton) >= 5 + 2 + 1 + 4  # five cases, two float64, chunking + block size, optimizer combos
    for e in triton:
        assert e["status"] == "ok", e
    ens = [e for e in triton if e["name"].startswith("ensemble/")]
    assert {e["dtype"] for e in ens} == {"float32", "float64"}
    for e in ens:
        assert e["inertia_max_rel"] <= e["tolerance"]
    for e in by_backend["cupy"]:
        if e["status"] == "skipped":
            assert "cupy" in e["reason"].lower() or "cuda" in e["reason"].lower(), e
        else:
            assert e["status"] == "ok", e


def test_throughput_figures_name_device_and_size(dry_run):
    doc = dry_run[0]
    entries = {e["name"]: e for e in doc["stages"]["throughput"]["entries"]}
    for tag in ("d1_noise", "d1_nonoise", "d8_noise", "d8_nonoise", "d64_noise", "d64_nonoise"):
        tri = entries[f"ensemble/triton/{tag}"]
        assert tri["status"] == "ok", tri
        assert tri["traj_steps_per_s"] > 0 and tri["device"] and tri["trajectories"] > 0
        assert entries[f"ensemble/eager_loop/{tag}"]["status"] == "ok"
        assert f"ensemble/cupy/{tag}" in entries
    assert entries["ensemble/compile_loop/d1_noise"]["status"] == "ok"
    for name in ("InertiaSGD", "SGD_foreach", "unfused"):
        e = entries[f"optimizer/{name}"]
        assert e["status"] == "ok", e
        assert e["bytes_per_s"] > 0 and e["copy_bandwidth_Bps"] > 0 and e["parameters"] > 0


def test_verdict_rows(dry_run):
    doc = dry_run[0]
    rows = doc["verdict"]
    targets = " ".join(r["target"] for r in rows)
    for word in ("Triton ensemble", "CuPy ensemble", "InertiaSGD", "torch.compile", "eager", "copy bandwidth"):
        assert word in targets
    for r in rows:
        assert set(r) >= {"target", "measured", "threshold", "pass"}
        if r.get("kind") == "performance":
            assert r["pass"] is None  # a dry run measures nothing
        if r.get("kind") == "correctness":
            assert r["pass"] is True, r


def test_refuses_full_run_without_cuda(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "--dry-run" in proc.stderr
    assert not os.listdir(tmp_path)
