"""Bad input and faults: every option honoured or refused before the work, nothing lost after a run.

Each test reproduces one report of a careless or hostile user: a bad output path, an option with no
effect, a runaway trajectory, an extreme value, a foreign or re-signed checkpoint, a final step that
was not recorded. Runs are small (torch backend, a few hundred trajectories).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os

import pytest
import torch

from inertia_gpu import cli, engine

S = ["simulate", "--quiet", "--trajectories", "256", "--steps", "20", "--backend", "torch"]


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def strict_load(path):
    def bad(token):
        raise AssertionError(f"not strict JSON: {token}")
    with open(path) as fh:
        return json.load(fh, parse_constant=bad)


def one_line(code, err, option):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in err, err


@pytest.fixture
def no_work(monkeypatch):
    """A check that must come before the work: the simulation must not even start."""
    def refuse(*a, **k):
        raise AssertionError("the run started before its options were checked")
    monkeypatch.setattr(engine, "simulate", refuse)
    import inertia_gpu.sweep as sweep
    monkeypatch.setattr(sweep, "run_sweep", refuse)


# --- 1. output paths are checked before any work; writes are atomic ----------------------------

@pytest.mark.parametrize("option,value", [
    ("--json", "/nonexistent/dir/x.json"), ("--json", "/tmp"), ("--json", ""), ("--plot", "out.txt"),
    ("--plot", ""), ("--plot", "/nonexistent/x.png"), ("--json", "/proc/x.json"), ("--checkpoint", "/proc/x.ckpt"),
    ("--checkpoint", ""), ("--checkpoint", "/tmp"),
])
def test_bad_output_path_is_refused_before_the_run(option, value, capsys, no_work):
    one_line(*run(S + [option, value], capsys), option)


def test_sweep_and_demo_outputs_are_checked_first(capsys, no_work, monkeypatch):
    one_line(*run(["sweep", "--sweep", "momentum=0.5,0.9", "--quiet", "--json", "/nonexistent/s.json"], capsys),
             "--json")
    one_line(*run(["sweep", "--sweep", "momentum=0.5,0.9", "--quiet", "--plot", "s.doc"], capsys), "--plot")
    import inertia_gpu.demo as demo
    monkeypatch.setattr(demo, "simulate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    one_line(*run(["demo", "--out", "/nonexistent/d.png"], capsys), "--out")
    one_line(*run(["demo", "--out", "d.txt"], capsys), "--out")


def test_failed_write_is_one_line_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    real = os.fsync

    def full(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}") and os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out.json"
    one_line(*run(S + ["--json", str(out)], capsys), "--json")
    assert os.listdir(tmp_path) == []


def test_plot_is_written_atomically_in_its_format(tmp_path, capsys):
    for ext in ("png", "svg", "pdf"):
        assert cli.main(S + ["--plot", str(tmp_path / f"f.{ext}")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["f.pdf", "f.png", "f.svg"]
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


# --- 2. options with no effect are refused; --temperature alone selects its model ---------------

UNUSED = [
    (["--dt", "0.1"], "--dt"), (["--damping", "0.5"], "--damping"),
    (["--integrator", "leapfrog", "--lr", "0.1"], "--lr"), (["--integrator", "euler", "--momentum", "0.5"], "--momentum"),
    (["--integrator", "baoab", "--lr", "0.01"], "--lr"),
    (["--momentum-schedule", "nesterov:3", "--momentum", "0.5"], "--momentum"),
    (["--integrator", "baoab", "--momentum-schedule", "nesterov:3", "--damping", "0.5"], "--damping"),
    (["--noise-model", "temperature", "--temperature", "0.1", "--noise", "0.3"], "--noise"),
    (["--noise-model", "additive", "--temperature", "0.3"], "--temperature"),
    (["--noise-model", "loss-scaled", "--temperature", "0.3", "--noise", "0.1"], "--temperature"),
    (["--condition", "10"], "--condition"),
    (["--noise-model", "loss-scaled"], "--noise-model"),
    (["--distributed"], "--distributed"),
]


@pytest.mark.parametrize("args,option", UNUSED)
def test_option_without_effect_is_refused(args, option, capsys, no_work, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one_line(*run(S + args, capsys), option)


def test_temperature_alone_selects_the_temperature_model(tmp_path):
    out = tmp_path / "t.json"
    argv = S + ["--integrator", "baoab", "--damping", "0.5", "--temperature", "0.3", "--steps", "200",
                "--dtype", "float64", "--json", str(out)]
    assert cli.main(argv) == 0
    d = strict_load(out)
    assert d["config"]["noise_model"] == "temperature"
    assert d["inertia_mean"][-1] > 0.1  # a thermostat at T = 0.3 (E[I] -> d T), not a decay to zero


# --- 3. divergence: a threshold before overflow, the same count in float32 and float64 ----------

def test_diverge_above_is_a_multiple_of_the_runs_energy_scale():
    from inertia_gpu.config import SimulationConfig
    base = SimulationConfig(spectrum=[1.0, 3.0], init_theta_std=2.0, lr=0.1, momentum=0.5)
    run_ = base.validate()
    assert run_.diverge_above == pytest.approx(1e6 * 0.5 * 4.0 * 4.0)  # factor * E[I_0] = 1/2 sum(lambda) s^2
    f32, f64 = (SimulationConfig(**{**base.to_dict(), "dtype": d}).validate() for d in ("float32", "float64"))
    assert f32.diverge_above == f64.diverge_above
    noisy = SimulationConfig(spectrum=[1.0], lr=0.1, noise=0.5, steps=100).validate()
    assert noisy.diverge_above == pytest.approx(1e6 * (0.5 + 100 * 0.5 * 0.25 * 0.1))
    assert SimulationConfig(spectrum=[1.0], diverge_factor=10.0).validate().diverge_above == pytest.approx(5.0)
    hot = SimulationConfig(integrator="baoab", damping=1.0, noise_model="temperature", temperature=2.0,
                           init_theta_std=0.0, dim=3).validate()
    assert hot.diverge_above >= 1e6 * 3 * 2.0


def test_runaway_trajectories_diverge_alike_in_float32_and_float64(tmp_path):
    """Issue example at a small size: unstable modes run away; neither dtype lets them into a mean."""
    counts, means = [], []
    for dtype in ("float32", "float64"):
        out = tmp_path / f"{dtype}.json"
        assert cli.main(["simulate", "--quiet", "--spectrum-dist", "uniform:0,10", "--lr", "0.5", "--momentum", "0.9",
                         "--trajectories", "2000", "--steps", "500", "--seed", "1", "--dtype", dtype,
                         "--backend", "torch", "--json", str(out)]) == 0
        d = strict_load(out)
        counts.append(d["diverged"])
        means.append(d["inertia_mean"])
        assert max(d["diverged"]) > 0
        for m, n_div in zip(d["inertia_mean"], d["diverged"]):
            if n_div < 2000:
                assert m is not None and m <= d["config"]["diverge_above"]
    assert counts[0] == counts[1]


# --- 4. extreme but valid values run and report, or are refused up front ----------------------

@pytest.mark.parametrize("args", [["--lr", "1e300"], ["--noise", "1e300"], ["--init-theta-std", "1e300"],
                                  ["--lr", "1e300", "--momentum", "1"]])
def test_extreme_values_run_and_report(args, tmp_path):
    out = tmp_path / "x.json"
    ckpt = tmp_path / "x.ckpt"
    argv = S + ["--dtype", "float64", "--json", str(out), "--checkpoint", str(ckpt)] + args
    assert cli.main(argv) == 0
    d = strict_load(out)
    assert d["theory"] is None or isinstance(d["theory"], dict)
    assert cli.main(argv) == 0  # the rerun of a finished checkpoint reports again
    assert cli.main([a for a in argv if a != "--quiet"]) == 0  # and so does the terminal summary


@pytest.mark.parametrize("args,option", [(["--lr", "1e-320", "--dtype", "float64"], "--lr"),
                                         (["--lr", "1e-200"], "--lr"), (["--noise", "1e39"], "--noise"),
                                         (["--init-theta-std", "1e-40"], "--init-theta-std")])
def test_values_outside_the_working_dtype_are_refused(args, option, capsys, no_work):
    one_line(*run(S + args, capsys), option)


# --- 6. replicates: the JSON says what ran, an impossible request is refused -------------------

def test_replicates_reported_as_run(tmp_path, capsys, no_work):
    one_line(*run(S + ["--trajectories", "1000", "--replicates", "7"], capsys), "--replicates")


def test_default_replicates_are_the_ones_used(tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(S + ["--trajectories", "1024", "--json", str(out)]) == 0
    assert strict_load(out)["config"]["replicates"] == 16


# --- 7. strict JSON ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--trajectories", "1"], ["--replicates", "1", "--trajectories", "64"], ["--spectrum", "0,1"],
    ["--momentum", "1", "--noise", "0.5"], ["--lr", "5", "--momentum", "0.9", "--steps", "60"],
    ["--lr", "5", "--momentum", "0.9", "--steps", "60", "--noise", "0.1"],
])
def test_json_is_strict(args, tmp_path):
    out = tmp_path / "s.json"
    assert cli.main(S + ["--json", str(out)] + args) == 0
    d = strict_load(out)
    if d.get("theory") and d["theory"]["inertia_max_abs_z"] is None:
        assert d["theory"]["inertia_max_abs_z_reason"]
    if d["decay_fit"].get("rate") is None:
        assert d["decay_fit"].get("reason")


# --- 8, 9, 13. checkpoints: unwritable, shared, re-signed ----------------------------------------

def test_checkpoint_write_failure_is_one_line_and_keeps_the_previous(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "c.ckpt"
    assert cli.main(S + ["--checkpoint", str(ckpt), "--checkpoint-every", "5"]) == 0
    before = ckpt.read_bytes()
    import inertia_gpu.output as output
    real = output.os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(output.os, "replace", full)
    one_line(*run(S + ["--seed", "3", "--checkpoint", str(tmp_path / "d.ckpt"), "--checkpoint-every", "5"], capsys),
             "--checkpoint")
    monkeypatch.setattr(output.os, "replace", real)
    assert ckpt.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.ckpt"]


def test_checkpoint_in_use_is_refused(tmp_path, capsys):
    from inertia_gpu.checkpoint import Checkpoint
    ckpt = tmp_path / "c.ckpt"
    other = cli.config_from_args(cli.build_parser().parse_args(S + ["--seed", "5"]))
    holder = Checkpoint(str(ckpt), other, "torch")  # another run, other options, using the path
    try:
        one_line(*run(S + ["--checkpoint", str(ckpt)], capsys), "--checkpoint")
    finally:
        holder.close()
    assert cli.main(S + ["--checkpoint", str(ckpt)]) == 0


def _resign(path, change):
    from inertia_gpu.checkpoint import MAGIC, read_verified
    payload = read_verified(str(path))
    change(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


@pytest.mark.parametrize("change", [
    lambda p: p.update(state=[t[:10] for t in p["state"]]),
    lambda p: p.update(step=10_000),
    lambda p: p.update(table=p["table"] * 2),
    lambda p: p.update(hist=p["hist"] + 3),
    lambda p: p.update(chunk_index=7),
    lambda p: p.update(state=p["state"][:2]),
], ids=["cut-state", "step-beyond", "doubled-table", "inflated-hist", "chunk-beyond", "short-state"])
def test_resigned_checkpoint_with_wrong_structure_is_refused(change, tmp_path, capsys):
    ckpt = tmp_path / "c.ckpt"
    argv = S + ["--steps", "40", "--checkpoint", str(ckpt), "--checkpoint-every", "10"]
    import inertia_gpu.checkpoint as ck
    real = ck.Checkpoint.save
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
    ck.Checkpoint.save = interrupted
    try:
        assert cli.main(argv) == 130
    finally:
        ck.Checkpoint.save = real
    capsys.readouterr()
    _resign(ckpt, change)
    one_line(*run(argv, capsys), "--checkpoint")


# --- 10. the final step is always recorded; log:N -----------------------------------------------

@pytest.mark.parametrize("every,steps,expected", [("50", 20, [0, 20]), ("3", 20, [0, 3, 6, 9, 12, 15, 18, 20]),
                                                  ("log:2", 100, [0, 1, 3, 10, 32, 100])])
def test_final_step_is_recorded_and_theory_follows(every, steps, expected, tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(["simulate", "--quiet", "--trajectories", "4096", "--steps", str(steps), "--record-every", every,
                     "--spectrum", "0.5,2", "--lr", "0.05", "--momentum", "0.8", "--dtype", "float64",
                     "--backend", "torch", "--json", str(out)]) == 0
    d = strict_load(out)
    assert d["steps"] == expected
    assert len(d["theory"]["inertia_mean"]) == len(expected)
    z = [(m - t) / s for m, t, s in zip(d["inertia_mean"], d["theory"]["inertia_mean"], d["inertia_sem"])]
    assert max(abs(x) for x in z) < 5  # theory taken at the same steps, the final one included
    assert d["first_passage"][0]["total"] == 4096


# --- 11, 15. spectra and small things ---------------------------------------------------------

@pytest.mark.parametrize("args,option", [
    (["--spectrum-dist", "uniform:0,inf"], "--spectrum-dist"), (["--spectrum-dist", "lognormal:0,inf"], "--spectrum-dist"),
    (["--spectrum-dist", "lognormal:1000,1"], "--spectrum-dist"), (["--spectrum-dist", "loguniform:1e-60,1"], "--spectrum-dist"),
    (["--spectrum", "1,,2"], "--spectrum"), (["--spectrum", "1,2,"], "--spectrum"),
    (["--spectrum", "-1,2"], "--spectrum"), (["--lr", "-1e-3"], "--lr"),
])
def test_bad_spectra_and_lists_are_refused(args, option, capsys, no_work):
    code, err = run(S + args, capsys)
    one_line(code, err, option)
    assert "expected one argument" not in err


def test_spectrum_dist_message_matches_the_help(capsys, no_work):
    code, err = run(S + ["--spectrum-dist", "gamma:1,2"], capsys)
    one_line(code, err, "lognormal:M,S")


def test_rerun_of_a_finished_checkpoint_reports_no_throughput(tmp_path):
    ckpt, out = tmp_path / "c.ckpt", tmp_path / "o.json"
    assert cli.main(S + ["--checkpoint", str(ckpt)]) == 0
    assert cli.main(S + ["--checkpoint", str(ckpt), "--json", str(out)]) == 0
    d = strict_load(out)
    assert d["trajectory_steps_per_s"] is None and d["trajectory_steps_per_s_reason"]
    assert math.isfinite(d["elapsed_s"])
