"""On a CUDA GPU: the Triton and CuPy ensembles against the reference, and the Triton kernel's invariances.

Marked `gpu`: skipped without a CUDA device (tests/conftest.py). The conformance
matrix is inertia_gpu.testing's (the same cases benchmarks/gpu_check.py runs).
"""
import dataclasses

import numpy as np
import pytest
import torch

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


def test_triton_block_size_changes_only_the_summation_order_on_cuda():
    """Block size (trajectories per thread) reorders each group's float64 sum of 64 terms, nothing else:
    |difference| <= 2 * 64 * 2^-53 * sum|x_i| per group (each order within 63 roundings of the exact sum,
    the inertia column sum K + sum L one more); sum|x_i| is the sum for the non-negative columns and at
    most twice the inertia sum for the shadow inertia (tests/test_triton_ensemble.py)."""
    from inertia_gpu.backends.triton_ensemble import TritonEnsemble
    cfg = _config()
    _backend("triton")
    outs = [TritonEnsemble(block=b).run(cfg, 0, cfg.trajectories, 0, cfg.steps, None)[1].cpu()
            for b in (128, 256, 512, 1024)]
    scale = outs[0].abs().clone()
    scale[..., 4] = 2.0 * outs[0][..., 1].abs()
    bound = 2 * 64 * 2.0 ** -53 * scale
    for other in outs[1:]:
        assert torch.equal(other[..., 0], outs[0][..., 0])
        assert bool(((other - outs[0]).abs() <= bound).all())
