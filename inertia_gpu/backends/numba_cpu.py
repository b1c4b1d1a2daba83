"""The fast CPU path: the SIMD, multi-core numba kernel (kernels/cpu_ensemble.py).

Each parallel task owns whole GROUPs of 64 trajectories and advances a group
at a time through the full step window, its 64 trajectories in SIMD lanes,
drawing one Philox call per coordinate per four steps (all four lanes used).
The per-step scalars (mu_n, gamma_n, OU coefficients, noise scales) are
computed here with the reference's own torch expressions in the working
dtype, so the kernel only does per-trajectory arithmetic in the reference's
operation order: states agree with `TorchEnsemble` to rounding (the normal
transform's log/sin/cos may differ by an ulp), observables and first passage
are formed in float64, and the group sums are formed in a fixed order,
independent of the thread count.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import rng
from ..coefficients import Const, Obs, coefficients
from ..config import SimulationConfig
from ..reference import Model
from ..spec import switches
from .base import FRACTIONS, N_COLUMNS, ChunkState, EnsembleBackend, n_groups, record_rows

NP_DTYPES = {"float32": np.float32, "float64": np.float64}
TASKS_PER_THREAD = 4  # parallel tasks per worker thread: balance without per-group scratch allocation


def _kernels():
    from ..kernels import cpu_ensemble
    return cpu_ensemble


def kernel_inputs(config: SimulationConfig, step_begin: int, step_end: int):
    """(coef, consts, obs): the per-step table, the working-dtype constants and the float64 constants of
    the observables, all from `inertia_gpu.coefficients` (the values the reference multiplies by)."""
    k = _kernels()
    c = coefficients(config, step_begin, step_end)
    coef = np.ascontiguousarray(c.table.numpy())  # columns DECAY, XI, SPREAD
    const = c.constants.numpy()
    consts = np.zeros(k.N_CONSTS, dtype=const.dtype)
    for kernel_index, index in ((k.K_LR, Const.LR), (k.K_HALF_H, Const.HALF_H), (k.K_H, Const.H),
                                (k.K_INIT_THETA, Const.INIT_THETA_STD), (k.K_INIT_V, Const.INIT_VELOCITY_STD)):
        consts[kernel_index] = const[index]
    consts[k.K_ONE] = 1.0
    obs = np.zeros(k.N_OBS, dtype=np.float64)
    observe = c.observe.numpy()
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
    rows = record_rows(config, step_begin, step_end).numpy()
    return np.ascontiguousarray(rows[1:], dtype=np.int32), int(rows[0]), int((rows >= 0).sum())


def switch_codes(config: SimulationConfig) -> tuple[int, int, int]:
    """(integrator, problem, noise model) as inertia_gpu.spec numbers them."""
    sw = switches(config)
    return int(sw.integrator), int(sw.problem), int(sw.noise_model)


def _as_numpy(t: torch.Tensor, dtype, copy: bool = False) -> np.ndarray:
    a = t.detach().to("cpu").numpy()
    return np.array(a, dtype=dtype, order="C", copy=True) if copy else np.ascontiguousarray(a, dtype=dtype)


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


def warm_up(dtype: str = "float32", ledger: bool = True) -> None:
    """Load (or, on a cold cache, compile once) the kernel for `dtype`, with or without the ledger:
    paid once per process and specialisation."""
    if (dtype, ledger) in _WARM:
        return
    f = NP_DTYPES[dtype]
    cfg = SimulationConfig(trajectories=1, steps=1, dtype=dtype).validate()
    state = (np.zeros((1, 1), f), np.zeros((1, 1), f), np.zeros(1), np.zeros((1, 3), np.int32),
             np.zeros((1, 2)) if ledger else None)
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

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None):
        ledger = bool(config.ledger)
        warm_up(config.dtype, ledger)
        npdt = NP_DTYPES[config.dtype]
        dim = config.dim
        if config.problem == "quadratic":
            model = Model(config)
            traj = torch.arange(start, start + count, dtype=torch.int64) if config.distribution is not None else None
            lam = _as_numpy(model.eigenvalues(traj), npdt).reshape(-1, dim)
        else:
            lam = np.zeros((1, dim), dtype=npdt)
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
            arrays = (_as_numpy(state.theta, npdt, copy=True), _as_numpy(state.momentum, npdt, copy=True),
                      _as_numpy(state.inertia0, np.float64, copy=True),
                      _as_numpy(state.first_passage, np.int32, copy=True),
                      np.zeros((count, 2)) if carried is None else _as_numpy(carried, np.float64, copy=True))
        if start + count > rng.MAX_TRAJECTORIES or step_end > rng.MAX_STEPS:
            raise ValueError("trajectory or step index outside the Philox counter's range")
        out = new_partials(window_rows(config, step_begin, step_end)[2], n_groups(count))
        # without the ledger the kernel neither reads nor writes the (D, Q) state: it passes through
        kernel_arrays = arrays if ledger else arrays[:4] + (None,)
        _launch(config, kernel_arrays, lam, start, step_begin, step_end, 1 if state is None else 0, out)
        partials = torch.from_numpy(out)  # [records, groups, N_COLUMNS], as the engine takes them
        return ChunkState(*(torch.from_numpy(a) for a in arrays)), partials
