"""The conformance matrix (inertia_gpu.testing) on every backend available here.

numba and the CUDA host build run the full product problem x integrator x schedule x
noise model x dtype (256 cases, odd dimension 3, 67 trajectories, a resumed run with
an irregular record step); Triton under its interpreter runs the pairwise covering
design (every pair of factor values in some case). On a GPU the same matrix runs on
Triton and CuPy (tests/test_gpu.py, benchmarks/gpu_check.py).
"""
from __future__ import annotations

import dataclasses
import itertools
import os

import pytest

from inertia_gpu import testing
from inertia_gpu.backends.base import EnsembleBackend
from inertia_gpu.backends.torch_ref import TorchEnsemble


def _check(name: str, cases: list, workers: int = 1):
    backend = testing.backend_here(name)
    if isinstance(backend, str):
        pytest.skip(backend)
    from inertia_gpu.engine import RECORDS_ANY_STEPS
    if not (getattr(backend, "records_any_steps", False) or name in RECORDS_ANY_STEPS):
        pytest.fail(f"{name} does not record from the per-window step table (contract 3): "
                    f"its rows at steps off the 0, K, 2K grid would differ")
    results = testing.run_matrix(backend, cases, workers=workers)
    assert len(results) == len(cases)
    failures = [f"{r['case']}: {r['message']}" for r in results if r["status"] != "ok"]
    assert not failures, f"{len(failures)} of {len(cases)} cases fail:\n" + "\n".join(failures)


def test_numba_full_matrix():
    _check("numba", testing.full_matrix())


def test_cuda_host_build_full_matrix():
    """kernels/cuda/ensemble.cu, float32 and float64, every case (one host executable per switch set)."""
    _check("cuda-host", testing.full_matrix(), workers=max(2, os.cpu_count() or 1))


def test_triton_covering_matrix():
    _check("triton", testing.covering_matrix())


def test_covering_design_covers_every_pair():
    cases = testing.covering_matrix()
    assert len(cases) < len(testing.full_matrix()) // 8
    rows = [(c.problem, c.integrator, c.schedule, c.noise, c.dtype) for c in cases]
    for i, j in itertools.combinations(range(len(testing.FACTORS)), 2):
        for a, b in itertools.product(testing.FACTORS[i], testing.FACTORS[j]):
            assert any(r[i] == a and r[j] == b for r in rows), (i, a, j, b)


class _Forgetful(EnsembleBackend):
    """The reference, except that one state element is left unwritten (NaN, as a poisoned buffer)."""

    name = "forgetful"

    def run(self, config, start, count, step_begin, step_end, state):
        new, sums = TorchEnsemble().run(config, start, count, step_begin, step_end, state)
        theta = new.theta.clone()
        theta[count // 2, 1] = float("nan")
        return dataclasses.replace(new, theta=theta), sums


class _Drifting(EnsembleBackend):
    """The reference with every kinetic sum off by one part in 1e-6 (a float32-sized drift in float64)."""

    name = "drifting"

    def run(self, config, start, count, step_begin, step_end, state):
        new, sums = TorchEnsemble().run(config, start, count, step_begin, step_end, state)
        sums = sums.clone()
        sums[..., 2] *= 1 + 1e-6
        return new, sums


def test_compare_reports_unwritten_elements_and_drift():
    case = testing.Case("quadratic", "leapfrog", "constant", "temperature", "float64")
    assert testing.compare(TorchEnsemble(), case)["status"] == "ok"
    forgot = testing.compare(_Forgetful(), case)
    assert forgot["status"] == "fail" and "theta" in forgot["message"]
    drift = testing.compare(_Drifting(), case)
    assert drift["status"] == "fail" and "sums" in drift["message"]


class _LedgerDrift(EnsembleBackend):
    """The reference with the injected sums off by 1e-10 of the energy scale per trajectory."""

    name = "ledger-drift"

    def run(self, config, start, count, step_begin, step_end, state):
        from inertia_gpu.resolution import energy_scale
        new, sums = TorchEnsemble().run(config, start, count, step_begin, step_end, state)
        sums = sums.clone()
        sums[..., 7] += 1e-10 * energy_scale(config) * sums[..., 0]
        return new, sums


class _QuantitiesOnly(EnsembleBackend):
    """The reference as a backend that forgets the ledger columns: six columns."""

    name = "quantities-only"

    def run(self, config, start, count, step_begin, step_end, state):
        new, sums = TorchEnsemble().run(config, start, count, step_begin, step_end, state)
        return new, sums[..., :6]


def test_compare_checks_the_ledger_columns():
    case = testing.Case("quadratic", "heavy-ball", "nesterov:3", "additive", "float64")
    ok = testing.compare(TorchEnsemble(), case)
    assert ok["status"] == "ok" and ok["errors"]["ledger"] == 0.0
    drift = testing.compare(_LedgerDrift(), case)
    assert drift["status"] == "fail" and "ledger sums" in drift["message"]


def test_compare_fails_a_backend_without_the_ledger_columns():
    case = testing.Case("double-well", "baoab", "constant", "temperature", "float64")
    out = testing.compare(_QuantitiesOnly(), case)
    assert out["status"] == "fail" and "partial sums shape" in out["message"]
