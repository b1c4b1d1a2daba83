"""The fast CPU path: the SIMD, multi-core numba kernel (kernels/cpu_ensemble.py).

Each parallel task owns whole GROUPs of 64 trajectories and advances a group
at a time through the full step window, its 64 trajectories in SIMD lanes,
drawing one Philox call per coordinate per four steps (all four lanes used).
The per-step scalars (mu_n, gamma_n, OU coefficients, noise scales) come
from `coefficients.coefficient_arrays`, the values the reference multiplies
by, so the kernel only does per-trajectory arithmetic in the reference's
operation order: states agree with `TorchEnsemble` to rounding (the normal
transform's log/sin/cos may differ by an ulp), observables and first passage
are formed in float64, and the group sums are formed in a fixed order,
independent of the thread count.

The engine calls `run_arrays` (numpy in and out): a run with a fixed spectrum
never loads torch. Only drawn spectra take the reference's torch draws.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import rng
from ..coefficients import Const, Obs, coefficient_arrays
from ..config import SimulationConfig
from ..spec import switches
from .base import FRACTIONS, N_COLUMNS, ChunkState, EnsembleBackend, host_array, n_groups, record_rows_array

NP_DTYPES = {"float32": np.float32, "float64": np.float64}
TASKS_PER_THREAD = 4  # parallel tasks per worker thread: balance without per-group scratch allocation


def _kernels():
    from ..kernels import cpu_ensemble
    return cpu_ensemble


def kernel_inputs(config: SimulationConfig, step_begin: int, step_end: int):
    """(coef, consts, obs): the per-step table, the working-dtype constants and the float64 constants of
    the observables, all from `inertia_gpu.coefficients` (the values the reference multiplies by)."""
    k = _kernels()
    c = coefficient_arrays(config, step_begin, step_end)
    coef = np.array(c.table, order="C")  # columns DECAY, XI, SPREAD; a writeable copy (the compiled signature)
    const = c.constants
    consts = np.zeros(k.N_CONSTS, dtype=const.dtype)
    for kernel_index, index in ((k.K_LR, Const.LR), (k.K_HALF_H, Const.HALF_H), (k.K_H, Const.H),
                                (k.K_INIT_THETA, Const.INIT_THETA_STD), (k.K_INIT_V, Const.INIT_VELOCITY_STD)):
        consts[kernel_index] = const[index]
    consts[k.K_ONE] = 1.0
    obs = np.zeros(k.N_OBS, dtype=np.float64)
    observe = c.observe
    obs[k.O_HALF_LR] = observe[Obs.HALF_LR]
    obs[k.O_H2_8] = observe[Obs.SHADOW]
    obs[k.O_FRAC:k.O_FRAC + len(FRACTIONS)] = FRACTIONS
    # "not <= limit" marks a divergence; inf inertia counts as diverged too (it cannot enter a mean)
    obs[k.O_DIVERGE] = min(float(getattr(config, "diverge_above", math.inf)), np.finfo(np.float64).max)
    return coef, consts, obs


def window_rows(config: SimulationConfig, step_begin: int, step_end: int) -> tuple[np.ndarray, int, int]:
    """(rec_row, init_row, n_records): the partial-sum row of each state of the window (-1: not recorded).

    rec_row[n - step_begin] is the row of the state after step n; init_row that of the state the
    window starts from (recorded only when the window starts at step 0).
    """
    rows = record_rows_array(config, step_begin, step_end)
    return np.ascontiguousarray(rows[1:], dtype=np.int32), int(rows[0]), int((rows >= 0).sum())


def switch_codes(config: SimulationConfig) -> tuple[int, int, int]:
    """(integrator, problem, noise model) as inertia_gpu.spec numbers them."""
    sw = switches(config)
    return int(sw.integrator), int(sw.problem), int(sw.noise_model)


def eigenvalues(config: SimulationConfig, start: int, count: int) -> np.ndarray:
    """[1 or count, dim] eigenvalues in the working dtype ([1, dim] zeros for the other problems).

    A fixed spectrum is rounded from float64 as torch.tensor rounds it; drawn spectra come
    from the reference itself (its torch Philox and transcendentals), so they match it bit for bit.
    """
    npdt, dim = NP_DTYPES[config.dtype], config.dim
    if config.problem != "quadratic":
        return np.zeros((1, dim), dtype=npdt)
    if config.distribution is None:
        return np.asarray(config.spectrum, dtype=npdt).reshape(-1, dim)
    import torch

    from ..reference import Model
    drawn = Model(config).eigenvalues(torch.arange(start, start + count, dtype=torch.int64))
    return host_array(drawn, npdt).reshape(-1, dim)


def _launch(config, state_arrays, lam, start, step_begin, step_end, init, out):
    """state_arrays: (theta, mom, inertia0, first_passage, ledger), ledger None for a run without it."""
    import numba
    k = _kernels()
    theta, mom, inertia0, first_passage, ledger = state_arrays
    coef, consts, obs = kernel_inputs(config, step_begin, step_end)
    rec_row, init_row, _ = window_rows(config, step_begin, step_end)
    key0, key1 = rng.seed_key(config.seed)
    tasks = TASKS_PER_THREAD * numba.get_num_threads()
    per_task = max(1, -(-n_groups(theta.shape[0]) // tasks))
    k.ensemble_window(theta, mom, inertia0, first_passage, ledger, lam, coef, consts, obs, rec_row, init_row, out,
                      start, step_begin, step_end, init, key0, key1, *switch_codes(config),
                      1 if config.noisy else 0, per_task)


def new_partials(records: int, groups: int) -> np.ndarray:
    """The kernel's output, [records, groups, N_COLUMNS] float64; the kernel writes every element."""
    return np.empty((records, groups, N_COLUMNS))


_WARM = set()


@contextlib.contextmanager
def _blas_check_without_scipy_linalg():
    """While numba loads its first compiled function it checks that BLAS exists by importing
    scipy.linalg.cython_blas; that import runs scipy.linalg's package __init__ (0.3-0.9 s of
    scipy's array-API layer), for a kernel that calls no BLAS. The same extension module loads in
    ~20 ms under a bare parent package, and numba's check then finds it imported. Both entries
    leave sys.modules afterwards: numba and the process see scipy.linalg exactly as if it had never
    been imported, and a later import of it runs normally. Where the bare import fails nothing changes.
    """
    import importlib.util
    import sys
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:  # checked or imported already
        yield
        return
    try:
        spec = importlib.util.find_spec("scipy.linalg")
    except ImportError:
        spec = None
    if spec is None:
        yield
        return
    sys.modules["scipy.linalg"] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    try:
        importlib.import_module("scipy.linalg.cython_blas")
    except ImportError:
        sys.modules.pop("scipy.linalg.cython_blas", None)
    finally:
        del sys.modules["scipy.linalg"]
    try:
        yield
    finally:
        sys.modules.pop("scipy.linalg.cython_blas", None)


def warm_up(dtype: str = "float32", ledger: bool = True) -> None:
    """Load (or, on a cold cache, compile once) the kernel for `dtype`, with or without the ledger:
    paid once per process and specialisation."""
    if (dtype, ledger) in _WARM:
        return
    f = NP_DTYPES[dtype]
    cfg = SimulationConfig(trajectories=1, steps=1, dtype=dtype).validate()
    state = (np.zeros((1, 1), f), np.zeros((1, 1), f), np.zeros(1), np.zeros((1, 3), np.int32),
             np.zeros((1, 2)) if ledger else None)
    with _blas_check_without_scipy_linalg():
        _launch(cfg, state, np.ones((1, 1), f), 0, 0, 1, 1, new_partials(window_rows(cfg, 0, 1)[2], 1))
    _WARM.add((dtype, ledger))


class NumbaEnsemble(EnsembleBackend):
    name = "numba"
    records_any_steps = True  # the kernel records from a per-window table of rows (window_rows)

    @classmethod
    def unavailable_reason(cls, config: SimulationConfig) -> str | None:
        if config.device != "cpu":
            return f"--backend numba: runs on the CPU only, not --device {config.device}"
        try:
            import numba  # noqa: F401
        except ImportError:
            return "--backend numba: numba is not installed (pip install 'inertia-gpu[cpu]')"
        return None

    @staticmethod
    def threads() -> int:
        """The worker threads the kernel runs on (numba's pool)."""
        import numba
        return numba.get_num_threads()

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None):
        """`run_arrays` with torch tensors out (the shared backend door; the arrays are not copied)."""
        import torch
        state, partials = self.run_arrays(config, start, count, step_begin, step_end, state)
        return ChunkState(*(torch.from_numpy(a) for a in (state.theta, state.momentum, state.inertia0,
                                                           state.first_passage, state.ledger))), \
            torch.from_numpy(partials)

    def run_arrays(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
                   state: ChunkState | None) -> tuple[ChunkState, np.ndarray]:
        """`run` on numpy: `state` of numpy arrays or torch tensors in, numpy out."""
        ledger = bool(config.ledger)
        warm_up(config.dtype, ledger)
        npdt = NP_DTYPES[config.dtype]
        dim = config.dim
        lam = eigenvalues(config, start, count)
        if state is None:
            if step_begin != 0:
                raise ValueError("state is None only for a window starting at step 0")
            # poisoned: the kernel must write every entry (a missed one shows as NaN / -7)
            arrays = (np.full((count, dim), np.nan, dtype=npdt), np.full((count, dim), np.nan, dtype=npdt),
                      np.full(count, np.nan), np.full((count, len(FRACTIONS)), -7, dtype=np.int32),
                      np.full((count, 2), np.nan) if ledger else np.zeros((count, 2)))
        else:
            # copies: the kernel works in place and the caller's state stays untouched; I_0 in float64
            carried = getattr(state, "ledger", None)
            arrays = (host_array(state.theta, npdt, copy=True), host_array(state.momentum, npdt, copy=True),
                      host_array(state.inertia0, np.float64, copy=True),
                      host_array(state.first_passage, np.int32, copy=True),
                      np.zeros((count, 2)) if carried is None else host_array(carried, np.float64, copy=True))
        if start + count > rng.MAX_TRAJECTORIES or step_end > rng.MAX_STEPS:
            raise ValueError("trajectory or step index outside the Philox counter's range")
        out = new_partials(window_rows(config, step_begin, step_end)[2], n_groups(count))
        # without the ledger the kernel neither reads nor writes the (D, Q) state: it passes through
        kernel_arrays = arrays if ledger else arrays[:4] + (None,)
        _launch(config, kernel_arrays, lam, start, step_begin, step_end, 1 if state is None else 0, out)
        return ChunkState(*arrays), out  # partials [records, groups, N_COLUMNS], as the engine takes them
