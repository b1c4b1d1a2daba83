"""pytest-benchmark suites for the CPU ensemble paths.

    pytest benchmarks/ --benchmark-only

Not part of the default `pytest` run (testpaths = tests). Each case advances
one launch of N trajectories x STEPS steps (d = 1 heavy ball, lr 0.01,
momentum 0.95, additive noise 0.5, lambda 2, every step recorded: the
ensemble of benchmarks/cpu_ratio.py) and reports trajectory-steps/s in
extra_info. The numba kernel is compiled (or loaded from its cache) before
timing. Whole-process figures (start-up included) are cpu_ratio.py's.
"""
import pytest
import torch

from inertia_gpu.bench import ENSEMBLE_SETTINGS, eager_step_fn
from inertia_gpu.config import SimulationConfig

STEPS = 100


def _config(n: int, backend: str, **kw) -> SimulationConfig:
    e = ENSEMBLE_SETTINGS
    base = {"noise": e["noise"]}
    if kw.get("integrator", "heavy-ball") == "heavy-ball":
        base.update(lr=e["lr"], momentum=e["momentum"])
    if "dim" not in kw:
        base["spectrum"] = [e["lam"]]
    return SimulationConfig(trajectories=n, steps=STEPS, backend=backend, **{**base, **kw}).validate()


def _record_rate(benchmark, key: str, work: int) -> None:
    """work / median seconds into extra_info (nothing to record under --benchmark-disable)."""
    if benchmark.stats is not None:
        benchmark.extra_info[key] = work / benchmark.stats.stats.median


def _run_backend(benchmark, backend, cfg, n, rounds):
    benchmark.extra_info["trajectory_steps"] = n * STEPS
    result = benchmark.pedantic(lambda: backend.run(cfg, 0, n, 0, STEPS, None), rounds=rounds, warmup_rounds=1)
    _record_rate(benchmark, "traj_steps_per_s", n * STEPS)
    return result


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_numba_ensemble(benchmark, n):
    pytest.importorskip("numba")
    from inertia_gpu.backends.numba_cpu import NumbaEnsemble
    backend = NumbaEnsemble()
    backend.run(_config(64, "numba"), 0, 64, 0, 4, None)  # compile / load the cache outside the timing
    state, partials = _run_backend(benchmark, backend, _config(n, "numba"), n, rounds=5)
    assert partials.shape[0] == STEPS + 1 and torch.isfinite(state.theta).all()


@pytest.mark.parametrize("integrator", ["euler", "leapfrog", "baoab"])
def test_numba_ensemble_continuous(benchmark, integrator):
    pytest.importorskip("numba")
    from inertia_gpu.backends.numba_cpu import NumbaEnsemble
    backend = NumbaEnsemble()
    cfg = _config(100_000, "numba", integrator=integrator, damping=0.5, dt=0.05)
    backend.run(_config(64, "numba", integrator=integrator, damping=0.5), 0, 64, 0, 4, None)
    _run_backend(benchmark, backend, cfg, 100_000, rounds=5)


def test_numba_ensemble_dim16(benchmark):
    pytest.importorskip("numba")
    from inertia_gpu.backends.numba_cpu import NumbaEnsemble
    backend = NumbaEnsemble()
    n = 20_000
    cfg = _config(n, "numba", dim=16, condition=100.0)
    backend.run(_config(64, "numba", dim=16, condition=100.0), 0, 64, 0, 4, None)
    benchmark.extra_info["trajectory_steps"] = n * STEPS
    benchmark.pedantic(lambda: backend.run(cfg, 0, n, 0, STEPS, None), rounds=3, warmup_rounds=1)
    _record_rate(benchmark, "coordinate_steps_per_s", 16 * n * STEPS)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_torch_reference_ensemble(benchmark, n):
    from inertia_gpu.backends.torch_ref import TorchEnsemble
    _run_backend(benchmark, TorchEnsemble(), _config(n, "torch"), n, rounds=1 if n > 10_000 else 2)


@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_plain_torch_loop(benchmark, n):
    """The per-step torch loop a user writes instead (benchmarks/peers/plain_torch_loop.py), for context."""
    e = ENSEMBLE_SETTINGS
    step = eager_step_fn(n, "cpu", lr=e["lr"], mu=e["momentum"], s=e["noise"], lam=e["lam"])

    def run():
        theta, b = torch.randn(n), torch.zeros(n)
        return [step(theta, b)[2] for _ in range(STEPS)]

    benchmark.extra_info["trajectory_steps"] = n * STEPS
    benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    _record_rate(benchmark, "traj_steps_per_s", n * STEPS)
