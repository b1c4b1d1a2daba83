"""On a CUDA GPU: the Triton and CuPy ensembles against the reference, and the Triton kernel's invariances.

Marked `gpu`: skipped without a CUDA device (tests/conftest.py). The conformance
matrix is inertia_gpu.testing's (the same cases benchmarks/gpu_check.py runs).
"""
import dataclasses

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _backend(name):
    from inertia_gpu import testing
    backend = testing.backend_here(name, "cuda")
    if isinstance(backend, str):
        pytest.skip(backend)
    return backend


@pytest.mark.parametrize("name", ["triton", "cupy"])
def test_conformance_matrix_on_cuda(name):
    from inertia_gpu import testing
    backend = _backend(name)
    cases = testing.covering_matrix()
    results = testing.run_matrix(backend, cases, "cuda")
    failures = [f"{r['case']}: {r['message']}" for r in results if r["status"] != "ok"]
    assert not failures, f"{len(failures)} of {len(cases)} cases fail:\n" + "\n".join(failures)


def _config(**over):
    from inertia_gpu.config import SimulationConfig
    opts = dict(problem="quadratic", spectrum=[1.0], integrator="heavy-ball", lr=0.1, momentum=0.9, noise=0.3,
                trajectories=1 << 14, steps=37, replicates=64, seed=11, backend="triton", device="cuda")
    opts.update(over)
    return SimulationConfig(**opts).validate()


@pytest.mark.parametrize("dim", [1, 8, 100])  # blocked layout (TPT 4, 1) and the wide layout
def test_triton_chunking_windows_and_ranks_are_bitwise_invariant_on_cuda(dim):
    from inertia_gpu.engine import simulate
    cfg = _config(dim=dim, spectrum=None, condition=10.0) if dim > 1 else _config()
    _backend("triton")
    whole = simulate(dataclasses.replace(cfg), with_theory=False)
    for chunk, window in [(1024, 7), (4096, 5)]:
        split = simulate(dataclasses.replace(cfg), with_theory=False, chunk=chunk, window=window)
        assert np.array_equal(whole.replicate_sums, split.replicate_sums)
        assert np.array_equal(whole.first_passage_hist, split.first_passage_hist)


def test_triton_block_size_changes_only_the_summation_order_on_cuda(monkeypatch):
    """Block size (trajectories per thread) reorders each group's float64 sums, nothing else: within
    tests/bounds.py summation_order_bound, on the device, 1 to 8 trajectories per thread."""
    from bounds import summation_order_bound
    from inertia_gpu.backends import triton_ensemble
    from inertia_gpu.engine import simulate
    cfg = _config()
    _backend("triton")
    runs = []
    for block in (128, 256, 512, 1024):  # 4 warps: 1, 2, 4 and 8 trajectories per thread
        monkeypatch.setattr(triton_ensemble, "default_block", lambda config, count, b=block: (b, 4))
        runs.append(simulate(dataclasses.replace(cfg), with_theory=False, chunk=4096, window=9))
    sums = runs[0].replicate_sums
    bound = summation_order_bound(dataclasses.replace(cfg, backend="torch", device="cpu"), sums)
    for other in runs[1:]:
        assert np.array_equal(other.replicate_sums[..., 0], sums[..., 0])  # counts are exact
        assert np.all(np.abs(other.replicate_sums - sums) <= bound)
        assert np.array_equal(other.first_passage_hist, runs[0].first_passage_hist)
