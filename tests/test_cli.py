"""The command-line contract: the JSON a run writes, and one clear line (exit 2) for every user mistake."""
import json
import subprocess
import sys

import numpy as np
import pytest

from inertia_gpu import cli

SIM = ["simulate", "--quiet"]


def test_simulate_writes_the_contracted_json(tmp_path):
    out = tmp_path / "out.json"
    rc = cli.main(SIM + ["--problem", "quadratic", "--spectrum", "0.5,1,4", "--integrator", "heavy-ball",
                         "--lr", "0.01", "--momentum", "0.95", "--noise", "0.5", "--trajectories", "4000",
                         "--steps", "40", "--seed", "0", "--init-theta-std", "1.0", "--init-velocity-std", "0.0",
                         "--backend", "torch", "--record-every", "4", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["config"]["spectrum"] == [0.5, 1.0, 4.0]
    for key in ("lr", "momentum", "noise", "trajectories", "steps", "seed", "integrator", "backend", "dtype",
                "momentum_schedule", "noise_model", "record_every", "init_theta_std", "init_velocity_std"):
        assert key in d["config"]
    assert d["steps"] == list(range(0, 41, 4))
    n = len(d["steps"])
    for key in ("inertia_mean", "inertia_sem", "kinetic_mean", "loss_mean", "shadow_inertia_mean", "diverged"):
        assert len(d[key]) == n, key
    assert len(d["theory"]["inertia_mean"]) == n
    # the recorded step 0 is the initial state: E[I_0] = 1/2 sum(lambda) init_theta_std^2
    z0 = (d["inertia_mean"][0] - 2.75) / d["inertia_sem"][0]
    assert abs(z0) < 4
    assert d["theory"]["inertia_mean"][0] == pytest.approx(2.75, rel=1e-12)
    z = (np.array(d["inertia_mean"]) - np.array(d["theory"]["inertia_mean"])) / np.array(d["inertia_sem"])
    assert np.max(np.abs(z)) < 4


def test_plot_is_written(tmp_path):
    png = tmp_path / "run.png"
    assert cli.main(SIM + ["--trajectories", "256", "--steps", "10", "--backend", "torch", "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000


BAD = [
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--momentum", "1.5"], "--momentum"),
    (["--momentum", "-0.1"], "--momentum"),
    (["--problem", "banana"], "--problem"),
    (["--integrator", "rk4"], "--integrator"),
    (["--backend", "opencl"], "--backend"),
    (["--dtype", "float16"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--spectrum", "1,-2"], "--spectrum"),
    (["--spectrum", "1,x"], "--spectrum"),
    (["--trajectories", "0"], "--trajectories"),
    (["--trajectories", "-5"], "--trajectories"),
    (["--steps", "0"], "--steps"),
    (["--noise", "-1"], "--noise"),
    (["--temperature", "-1"], "--temperature"),
    (["--record-every", "0"], "--record-every"),
    (["--momentum-schedule", "nesterov:x"], "--momentum-schedule"),
    (["--momentum-schedule", "cosine"], "--momentum-schedule"),
    (["--noise-model", "pink"], "--noise-model"),
    (["--integrator", "leapfrog", "--dt", "0"], "--dt"),
    (["--integrator", "baoab", "--damping", "-1"], "--damping"),
    (["--problem", "rosenbrock", "--dim", "1"], "--dim"),
    (["--problem", "double-well", "--spectrum", "1,2"], "--spectrum"),
    (["--spectrum-dist", "gamma:1,2"], "--spectrum-dist"),
    (["--seed", "-1"], "--seed"),
    (["--lr", "nan"], "--lr"),
    (["--device", "cuda"], "--device"),  # no GPU in CI: refused up front, not a CUDA trace
]


@pytest.mark.parametrize("args,option", BAD)
def test_invalid_option_exits_2_with_one_line(args, option, capsys):
    if args == ["--device", "cuda"]:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    rc = cli.main(SIM + ["--trajectories", "64", "--steps", "2", "--backend", "torch"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert option in err[0] and "Traceback" not in err[0]


def test_console_script_exits_2_without_traceback():
    p = subprocess.run([sys.executable, "-m", "inertia_gpu.cli", "simulate", "--lr", "-1"], capture_output=True,
                       text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "--lr" in p.stderr


def test_unavailable_backend_is_one_line(capsys):
    """cupy without CuPy or without a GPU: one clear line, status 2."""
    import importlib.util

    import torch
    if importlib.util.find_spec("cupy") is not None and torch.cuda.is_available():
        pytest.skip("cupy and a GPU are present")
    rc = cli.main(SIM + ["--backend", "cupy", "--trajectories", "64", "--steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cupy" in err[0]
