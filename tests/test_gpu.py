"""On a CUDA GPU: the Triton and CuPy ensembles and InertiaSGD's Triton step against the reference.

Marked `gpu`: skipped without a CUDA device (tests/conftest.py). The same
comparisons, at larger sizes, are stage 2 of benchmarks/gpu_check.py; these
tests share its cases and helpers.
"""
import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

_SPEC = importlib.util.spec_from_file_location("_gpu_check", Path(__file__).resolve().parents[1] / "benchmarks"
                                               / "gpu_check.py")
gc = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gc)

CASES = {name: (opts, tol) for name, opts, tol in gc.ensemble_cases(False)}


def _ck():
    return types.SimpleNamespace(torch=torch, device="cuda", cuda=True, dry=False)


def _config(opts, backend, dtype="float32", **over):
    return gc.make_config(_ck(), opts, backend=backend, dtype=dtype, **{"trajectories": 4096, "steps": 32,
                                                                        "replicates": 64, **over})


def _need(backend, cfg):
    from inertia_gpu import backends
    reason = backends.unavailable_reason(backend, cfg)
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("backend", ["triton", "cupy"])
@pytest.mark.parametrize("case", list(CASES))
def test_ensemble_float32_matches_reference_on_cuda(backend, case):
    from inertia_gpu.engine import simulate
    opts, tol = CASES[case]
    cfg = _config(opts, backend)
    _need(backend, cfg)
    res = simulate(cfg, with_theory=False)
    ref = simulate(_config(opts, "torch"), with_theory=False)
    err = gc.curve_error(res, ref)
    assert err["finite_counts_equal"]
    assert err["inertia_max_rel"] <= tol, err


@pytest.mark.parametrize("backend", ["triton", "cupy"])
@pytest.mark.parametrize("case", gc.FLOAT64_CASES)
def test_ensemble_float64_matches_reference_on_cuda(backend, case):
    from inertia_gpu.engine import simulate
    opts, _ = CASES[case]
    cfg = _config(opts, backend, "float64")
    _need(backend, cfg)
    err = gc.curve_error(simulate(cfg, with_theory=False), simulate(_config(opts, "torch", "float64"),
                                                                      with_theory=False))
    assert err["inertia_max_rel"] <= gc.FLOAT64_TOL, err


@pytest.mark.parametrize("backend", ["triton", "cupy"])
def test_chunking_is_bitwise_invariant_on_cuda(backend):
    from inertia_gpu.engine import simulate
    opts, _ = CASES["heavy_ball_d1_noise"]
    cfg = _config(opts, backend)
    _need(backend, cfg)
    whole = simulate(cfg, with_theory=False)
    split = simulate(cfg, with_theory=False, chunk=1024, window=7)
    assert np.array_equal(whole.replicate_sums, split.replicate_sums)
    assert np.array_equal(whole.first_passage_hist, split.first_passage_hist)


def test_triton_block_size_is_bitwise_invariant_on_cuda():
    from inertia_gpu.backends.triton_ensemble import TritonEnsemble
    opts, _ = CASES["heavy_ball_d8_drawn_spectrum"]
    cfg = _config(opts, "triton")
    _need("triton", cfg)
    outs = [TritonEnsemble(block=b).run(cfg, 0, cfg.trajectories, 0, cfg.steps, None)[1] for b in (64, 128, 256)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("options", [dict(lr=0.05, momentum=0.9, weight_decay=1e-4),
                                     dict(lr=0.05, momentum=0.9, nesterov=True),
                                     dict(lr=0.1, momentum=0.0, weight_decay=1e-3),
                                     dict(lr=0.05, momentum=0.8, dampening=0.1)])
def test_inertia_sgd_triton_matches_sgd_and_foreach_on_cuda(options):
    from inertia_gpu.optim import InertiaSGD
    reason = gc._triton_sgd_reason(_ck())
    if reason:
        pytest.skip(reason)
    ck = _ck()
    ref, _ = gc._train(ck, lambda ps: torch.optim.SGD(ps, **options), 50)
    tri, k_tri = gc._train(ck, lambda ps: InertiaSGD(ps, backend="triton", **options), 50)
    fe, k_fe = gc._train(ck, lambda ps: InertiaSGD(ps, backend="foreach", **options), 50)
    assert gc._max_rel(tri, ref) <= 1e-5
    assert gc._max_rel(tri, fe) <= 1e-5
    if float(k_fe.abs().max()) > 0:
        assert float((k_tri - k_fe).abs().max() / k_fe.abs().max()) <= 1e-5


@pytest.mark.parametrize("noise", [0.0, 1e-2])
def test_cupy_sgd_step_matches_foreach_on_cuda(noise):
    from inertia_gpu.backends.cupy_backend import cupy_unavailable_reason
    reason = cupy_unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = gc._cupy_sgd_check(_ck(), noise)
    assert out["ok"], out
