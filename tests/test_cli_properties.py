"""Property: any combination of options, conflicting and extreme ones included, ends in exactly one of

- exit 0 with strict JSON whose config shows every option given in effect, or
- exit 2 with one line naming an option,

never a traceback. Small runs on the torch backend; derandomized, so CI sees the same cases.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inertia_gpu import cli
from inertia_gpu.recording import recorded_steps

GOOD = st.sampled_from(["0.5", "1", "0.01", "0.1", "0.9", "2"])
BAD = st.sampled_from(["0", "-1", "1e-320", "1e-200", "1e300", "nan", "inf", "x", ""])
NUMBERS = st.one_of(GOOD, GOOD, GOOD, BAD)  # three in four valid, so that many cases run
CHOICES = {
    "--problem": st.sampled_from(["quadratic", "double-well", "rosenbrock", "banana"]),
    "--integrator": st.sampled_from(["heavy-ball", "leapfrog", "euler", "baoab", "rk4"]),
    "--noise-model": st.sampled_from(["additive", "temperature", "loss-scaled", "pink"]),
    "--momentum-schedule": st.sampled_from(["constant", "nesterov:3", "nesterov:0", "cosine"]),
    "--spectrum": st.sampled_from(["0.5,1,4", "1,,2", "-1,2", "0,1", "1e300", "1"]),
    "--spectrum-dist": st.sampled_from(["uniform:0.5,2", "uniform:0,inf", "lognormal:0,0.5", "lognormal:1000,1",
                                        "gamma:1,2", "loguniform:0.1,1"]),
    "--dim": st.sampled_from(["1", "2", "0", "3"]),
    "--condition": st.sampled_from(["10", "0.5", "inf"]),
    "--record-every": st.sampled_from(["1", "3", "50", "log:2", "log:0", "0"]),
    "--replicates": st.sampled_from(["1", "2", "7", "0"]),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--trajectories": st.sampled_from(["1", "64", "130", "0"]),
    "--steps": st.sampled_from(["1", "7", "12", "0"]),
    "--diverge-factor": st.sampled_from(["10", "1", "1e6"]),
}
FLOATS = ("--lr", "--momentum", "--dt", "--damping", "--noise", "--temperature", "--init-theta-std",
          "--init-velocity-std")


@st.composite
def argv(draw):
    """(options, --json target or None)."""
    out = []
    for name in draw(st.lists(st.sampled_from(sorted(CHOICES) + list(FLOATS)), max_size=4, unique=True)):
        out += [name, draw(CHOICES[name] if name in CHOICES else NUMBERS)]
    target = draw(st.sampled_from([None, "OUT", "OUT", "OUT", "", "/nonexistent/x.json", "DIR"]))
    if draw(st.booleans()):
        out.append("--quiet")  # else the terminal summary is printed too
    return out, target


def _given_in_effect(args: list[str], config: dict) -> None:
    """Every option given shows, as given, in the recorded config (nothing silently dropped)."""
    args = [a for a in args if a != "--quiet"]
    pairs = dict(zip(args[::2], args[1::2]))
    for name, value in pairs.items():
        key = name.lstrip("-").replace("-", "_")
        if key == "spectrum_dist":
            key = "spectrum_distribution"
        if key in ("json", "record_every"):
            continue
        got = config[key]
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            assert got == pytest.approx(float(value), rel=1e-12), (name, value, got)
        elif isinstance(got, list):
            assert got == pytest.approx([float(x) for x in value.split(",")]), (name, value, got)
        else:
            assert str(got) == value, (name, value, got)


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(drawn=argv())
def test_any_options_exit_0_with_strict_json_or_2_with_one_line(drawn, tmp_path_factory, capsys):
    opts, target = drawn
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "out.json"
    extra = [] if target is None else ["--json", {"OUT": str(out), "DIR": str(tmp)}.get(target, target)]
    defaults = [] if "--trajectories" in opts else ["--trajectories", "64"]
    defaults += [] if "--steps" in opts else ["--steps", "6"]
    code = cli.main(["simulate", "--backend", "torch"] + defaults + opts + extra)
    err = capsys.readouterr().err.strip()
    event(f"exit {code}")
    assert "Traceback" not in err
    if code == 2:
        assert len(err.splitlines()) == 1 and "--" in err, err
        return
    assert code == 0, err
    if target == "OUT":
        def refuse(token):
            raise AssertionError(f"not strict JSON: {token}")
        d = json.loads(out.read_text(), parse_constant=refuse)
        _given_in_effect(opts, d["config"])
        cfg = d["config"]
        assert d["steps"] == recorded_steps(cfg["steps"], cfg["record_every"])
        for mean, diverged in zip(d["inertia_mean"], d["diverged"]):
            assert (mean is None) == (diverged == cfg["trajectories"])  # null only when no trajectory is left
