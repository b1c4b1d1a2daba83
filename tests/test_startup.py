"""Start-up: a CPU `simulate` on the numba backend loads nothing it does not use.

torch alone costs seconds of a whole run's wall time on a small machine; scipy,
matplotlib, triton and cupy are for fits, figures and GPUs. `import numba` itself
loads the top of the scipy package (a version check), so the scipy modules
allowed at exit are those `import numba` brings, and no others (in particular
not scipy.linalg, which numba's BLAS check would import when it loads the kernel).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inertia_gpu import engine
from inertia_gpu.cli import main

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]
RUN = ["simulate", "--trajectories", "640", "--steps", "12", "--lr", "0.01", "--momentum", "0.95", "--noise", "0.5",
       "--spectrum", "2", "--quiet"]
NEVER = ("torch", "matplotlib", "triton", "cupy")

PROBE = """
import json, sys
import numba
after_numba = sorted(m for m in sys.modules if m.split(".")[0] == "scipy")
from inertia_gpu.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules), "scipy_with_numba": after_numba}))
"""


def _probe(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", PROBE, *args], check=True, capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_cpu_run_imports_no_torch_scipy_fit_matplotlib_or_gpu_stack(tmp_path):
    out = tmp_path / "o.json"
    got = _probe(RUN + ["--json", str(out)])
    assert got["rc"] == 0
    record = json.loads(out.read_text())
    assert record["backend"] == "numba"
    assert record["decay_fit"]["interval"].startswith("jackknife")  # the fit ran, and its interval needs a t quantile
    loaded = {m.split(".")[0] for m in got["modules"]}
    assert not loaded & set(NEVER), sorted(loaded & set(NEVER))
    extra_scipy = sorted(m for m in got["modules"] if m.split(".")[0] == "scipy")
    assert set(extra_scipy) <= set(got["scipy_with_numba"]), sorted(set(extra_scipy) - set(got["scipy_with_numba"]))


def test_numba_blas_check_leaves_blas_usable_and_scipy_linalg_importable():
    """The kernel loads without scipy.linalg's __init__; numba's own BLAS-backed functions still compile after."""
    code = """
import sys
import numpy as np
import numba
from inertia_gpu.backends.numba_cpu import warm_up
warm_up("float32", True)
assert "scipy.linalg" not in sys.modules and "scipy.linalg.cython_blas" not in sys.modules
dot = numba.njit(lambda a, b: np.dot(a, b))
assert dot(np.arange(4.0).reshape(2, 2), np.ones(2)).tolist() == [1.0, 5.0]
import scipy.linalg
assert scipy.linalg.inv(np.diag([2.0, 4.0])).tolist() == [[0.5, 0.0], [0.0, 0.25]]
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=900)


def test_torch_backend_run_agrees_with_the_default_run(tmp_path):
    """The torch door still runs the whole CLI, and its statistics agree with the numba run's to rounding."""
    paths = {name: tmp_path / f"{name}.json" for name in ("auto", "torch")}
    assert main(RUN + ["--json", str(paths["auto"])]) == 0
    assert main(RUN + ["--backend", "torch", "--json", str(paths["torch"])]) == 0
    auto, ref = (json.loads(p.read_text()) for p in paths.values())
    assert (auto["backend"], ref["backend"]) == ("numba", "torch")
    assert auto["steps"] == ref["steps"]
    for key in ("inertia_mean", "kinetic_mean", "loss_mean", "ledger.dissipated_mean"):
        np.testing.assert_allclose(auto[key], ref[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("groups,per_replicate", [(1, 1), (7, 3), (16, 4), (13, 13), (29, 8), (257, 100), (300, 37)])
def test_replicate_sums_of_numpy_and_torch_partials_are_the_same_bits(groups, per_replicate):
    """The engine sums numpy partials (the numba backend's, in place in a buffer of its own) by the same
    pairwise tree as torch partials, and leaves the partials as they were."""
    g = np.random.default_rng(groups * 100 + per_replicate)
    partials = g.normal(size=(3, groups, engine.N_COLUMNS)) * 10.0 ** g.integers(-8, 8, size=(3, groups, 1))
    plan = engine.Plan(replicate_size=per_replicate * engine.GROUP, replicates=math.ceil(groups / per_replicate),
                       chunk=groups * engine.GROUP, window=1)
    before = partials.copy()
    from_numpy = engine._replicate_sums(partials, plan)
    assert np.array_equal(partials, before)
    from_torch = engine._replicate_sums(torch.from_numpy(partials.copy()), plan)
    assert from_numpy.dtype == np.float64 and from_numpy.shape == (3, plan.replicates, engine.N_COLUMNS)
    assert np.array_equal(from_numpy, from_torch)
    # and the tree adds every group exactly once
    np.testing.assert_allclose(from_numpy.sum(axis=1), partials.sum(axis=1), rtol=0,
                               atol=1e-12 * np.abs(partials).sum(axis=1).max())
