"""Checkpoint/resume: killed runs resume to the same bits; corrupt or foreign checkpoints are refused."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from inertia_gpu import cli
from inertia_gpu.checkpoint import read_verified
from inertia_gpu.config import ConfigError
from inertia_gpu.engine import simulate

ARGS = ["--problem", "quadratic", "--spectrum", "0.5,2", "--lr", "0.05", "--momentum", "0.9", "--noise", "0.4",
        "--trajectories", "640", "--steps", "6000", "--record-every", "4", "--replicates", "5", "--seed", "11", "--dtype", "float64",
        "--backend", "torch", "--quiet"]
VOLATILE = ("elapsed_s", "trajectory_steps_per_s", "trajectory_steps_per_s_reason")
REFERENCE_ELAPSED: list[float] = []


def _stats(path):
    with open(path) as fh:
        d = json.load(fh)
    return {k: v for k, v in d.items() if k not in VOLATILE}


def _cmd(json_path, ckpt, every=100):
    return [sys.executable, "-m", "inertia_gpu.cli", "simulate", *ARGS, "--json", str(json_path),
            "--checkpoint", str(ckpt), "--checkpoint-every", str(every)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in-process and without checkpoints."""
    args = cli.build_parser().parse_args(["simulate", *ARGS])
    result = simulate(cli.config_from_args(args))
    path = tmp_path_factory.mktemp("ref") / "ref.json"
    result.write_json(str(path))
    REFERENCE_ELAPSED.append(result.elapsed_s)
    return _stats(path)


def test_sigkill_at_random_points_resumes_bitwise(tmp_path, reference):
    rng = random.Random(20240607)  # fixed seed: the kill times are reproducible
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.json"
    kills, progressed = 0, 0
    steps_seen = []
    for attempt in range(4):
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = subprocess.Popen(_cmd(out, ckpt), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until this process has saved (import is over), then kill at a random moment of the run
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and \
                (not ckpt.exists() or ckpt.stat().st_mtime_ns == before):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5) * REFERENCE_ELAPSED[0])  # a random point of the run
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert ckpt.exists()
        payload = read_verified(str(ckpt))  # never a half-written file
        step = payload["chunk_index"] * 10_000 + payload["step"]
        progressed += bool(steps_seen) and step > steps_seen[-1]
        steps_seen.append(step)
    assert kills >= 2, "the run finished before it could be killed twice; make it longer"
    assert progressed >= 1, "no kill fell after new progress was saved"
    if out.exists():
        out.unlink()
    final = subprocess.run(_cmd(out, ckpt), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert _stats(out) == reference
    assert steps_seen == sorted(steps_seen)


def test_sigterm_then_resume_bitwise(tmp_path, reference):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.json"
    proc = subprocess.Popen(_cmd(out, ckpt, every=200), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:  # terminated mid-run: one line, no traceback
        assert "rerun the same command to resume" in err and "Traceback" not in err
        assert not out.exists()
    final = subprocess.run(_cmd(out, ckpt, every=200), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert _stats(out) == reference


def test_resume_in_process_across_chunks(tmp_path):
    """Interrupted (a KeyboardInterrupt after a save) at many windows of several chunks, then resumed."""
    import inertia_gpu.checkpoint as ck
    args = cli.build_parser().parse_args(["simulate", *ARGS, "--steps", "600", "--record-every", "1"])
    config = cli.config_from_args(args)
    ref = tmp_path / "ref.json"
    simulate(config).write_json(str(ref))  # one chunk, one window, no checkpoint
    path = str(tmp_path / "c.ckpt")
    saves = {"n": 0, "limit": 0}
    real_save = ck.Checkpoint.save

    def flaky_save(self, *a, **k):
        real_save(self, *a, **k)
        saves["n"] += 1
        if saves["n"] >= saves["limit"]:
            raise KeyboardInterrupt

    ck.Checkpoint.save = flaky_save
    try:
        result = None
        for _ in range(100):
            saves.update(n=0, limit=5)
            try:
                result = simulate(config, checkpoint=path, checkpoint_every=97, chunk=192)
                break
            except KeyboardInterrupt:
                continue
    finally:
        ck.Checkpoint.save = real_save
    assert result is not None
    assert _ > 3  # it was really interrupted several times
    out = tmp_path / "r.json"
    result.write_json(str(out))
    assert _stats(out) == _stats(ref)


def _cli(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    small = ["simulate", *ARGS[:-1], "--quiet", "--steps", "20", "--trajectories", "128", "--replicates", "2"]
    ckpt = tmp_path / "c.ckpt"
    assert cli.main([*small, "--checkpoint", str(ckpt), "--checkpoint-every", "5"]) == 0
    good = ckpt.read_bytes()
    capsys.readouterr()
    # truncated
    ckpt.write_bytes(good[: len(good) // 2])
    code, err = _cli([*small, "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "corrupt or truncated" in err
    # one flipped byte in the payload
    bad = bytearray(good)
    bad[-100] ^= 0xFF
    ckpt.write_bytes(bytes(bad))
    code, err = _cli([*small, "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "checksum" in err
    # not a checkpoint at all
    ckpt.write_text("hello")
    code, err = _cli([*small, "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    # written for another configuration
    ckpt.write_bytes(good)
    code, err = _cli([*small, "--seed", "12", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "different configuration" in err
    # the intact file with the same options resumes (nothing left to do) and exits 0
    assert cli.main([*small, "--checkpoint", str(ckpt)]) == 0
    # --checkpoint-every alone, or non-positive, is a usage error
    code, err = _cli([*small, "--checkpoint-every", "5"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    code, err = _cli([*small, "--checkpoint", str(tmp_path / "x"), "--checkpoint-every", "0"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "--checkpoint-every" in err


def test_atomic_write_leaves_no_temporary(tmp_path):
    from inertia_gpu.checkpoint import write_atomic
    p = tmp_path / "f"
    write_atomic(str(p), b"abc")
    write_atomic(str(p), b"defg")
    assert p.read_bytes() == b"defg" and os.listdir(tmp_path) == ["f"]
    with pytest.raises(ConfigError):
        read_verified(str(p))
