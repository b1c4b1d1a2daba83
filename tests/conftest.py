"""Test setup: without a GPU, Triton runs under its interpreter (must be set before `import triton`)."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = _has_cuda()
HAS_NVCC = shutil.which("nvcc") is not None


# The numba kernel specialisations the suite runs: (dtype, ledger). A cold cache compiles each in
# about two minutes, one core each.
NUMBA_KERNELS = (("float32", True), ("float64", True), ("float64", False))


def _runs_whole_suite(config) -> bool:
    tests = Path(__file__).parent.resolve()
    here = config.invocation_params.dir
    return all((here / a).resolve() == tests for a in config.args)


def pytest_configure(config):
    """A whole-suite run first loads, or on a cold cache compiles, the numba kernels in parallel
    processes (one per specialisation: a compile is one busy core), so that no test waits on a
    compile and no two test workers compile the same kernel. Once per run (not in xdist workers);
    a narrower run compiles what it needs on first use."""
    if hasattr(config, "workerinput") or not _runs_whole_suite(config):
        return
    if importlib.util.find_spec("numba") is None:
        return
    code = ("import sys; from inertia_gpu.backends.numba_cpu import warm_up; "
            "warm_up(sys.argv[1], sys.argv[2] == '1')")
    procs = [subprocess.Popen([sys.executable, "-c", code, dtype, str(int(ledger))])
             for dtype, ledger in NUMBA_KERNELS]
    for p in procs:
        p.wait()  # a failure shows again, with its message, in the tests that run the kernel


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
