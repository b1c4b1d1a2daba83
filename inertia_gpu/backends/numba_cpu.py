"""The fast CPU path: a time-blocked, multi-core numba kernel (kernels/cpu_ensemble.py).

Each thread owns whole GROUPs of 64 trajectories and advances one trajectory
at a time through the full step window with its state in registers, drawing
one Philox call per coordinate per four steps (all four lanes used). The
per-step scalars (mu_n, gamma_n, OU coefficients, noise scales) are computed
here with the reference's own torch expressions in the working dtype, so the
kernel only does per-trajectory arithmetic in the reference's operation order:
states agree with `TorchEnsemble` to float32 rounding (log/sin/cos may differ
by an ulp) and the group sums are formed in a fixed order, independent of the
thread count.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import rng
from ..coefficients import Step, step_table
from ..config import SimulationConfig
from ..spec import switches
from ..reference import Model
from .base import FRACTIONS, N_QUANTITIES, ChunkState, EnsembleBackend, n_groups, recorded_in_window

NP_DTYPES = {"float32": np.float32, "float64": np.float64}


def _kernels():
    from ..kernels import cpu_ensemble
    return cpu_ensemble


def step_coefficients(model: Model, step_begin: int, step_end: int) -> np.ndarray:
    """[step_end - step_begin, 3] per-step scalars in the working dtype (see kernels/cpu_ensemble.py).

    Taken from `inertia_gpu.coefficients` (the table the reference multiplies by), with the
    O step's columns in this kernel's order [c1, sqrt(vf), XI].
    """
    table = step_table(model.config, step_begin, step_end).numpy()
    if model.config.integrator in ("leapfrog", "baoab"):
        table = table[:, [Step.DECAY, Step.SPREAD, Step.XI]]
    return np.ascontiguousarray(table)


def kernel_constants(config: SimulationConfig) -> np.ndarray:
    k = _kernels()
    c = np.zeros(k.N_CONSTS, dtype=np.float64)
    c[k.K_LR] = config.lr
    c[k.K_HALF_LR] = 0.5 * config.lr
    c[k.K_H] = config.dt
    c[k.K_HALF_H] = 0.5 * config.dt
    c[k.K_H2_8] = config.dt ** 2 / 8.0
    c[k.K_INIT_THETA] = config.init_theta_std
    c[k.K_INIT_V] = config.init_velocity_std
    c[k.K_FRAC:k.K_FRAC + 3] = FRACTIONS
    c[k.K_ONE] = 1.0
    return c.astype(NP_DTYPES[config.dtype])  # round to nearest, as torch casts a Python scalar


def _as_numpy(t: torch.Tensor, dtype, copy: bool = False) -> np.ndarray:
    a = t.detach().to("cpu").numpy()
    return np.array(a, dtype=dtype, order="C", copy=True) if copy else np.ascontiguousarray(a, dtype=dtype)


_WARM = False


def warm_up() -> None:
    """Load (or, on a cold cache, compile once) the float32 kernel: done when the backend is built.

    The engine builds the backend before it starts its clock, so the one-time
    cost of loading the cached machine code (about 0.3 s; a cold compile is
    7-10 s and is then cached on disk) never counts as simulation time.
    """
    global _WARM
    if _WARM:
        return
    k = _kernels()
    f = np.float32
    cfg = SimulationConfig(trajectories=1, steps=1)
    k.ensemble_window(np.zeros((1, 1), f), np.zeros((1, 1), f), np.zeros(1, f), np.zeros((1, 3), np.int32),
                      np.ones((1, 1), f), np.zeros((1, 3), f), kernel_constants(cfg), np.zeros((1, 2, N_QUANTITIES)),
                      0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1)
    _WARM = True


class NumbaEnsemble(EnsembleBackend):
    name = "numba"

    def __init__(self):
        warm_up()

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
        k = _kernels()
        model = Model(config)
        sw = switches(config)
        npdt = NP_DTYPES[config.dtype]
        dim = config.dim
        if config.problem == "quadratic":
            if config.distribution is not None:
                lam_t = model.eigenvalues(torch.arange(start, start + count, dtype=torch.int64))
            else:
                lam_t = model.eigenvalues(None)
            lam = _as_numpy(lam_t, npdt).reshape(-1, dim)
        else:
            lam = np.zeros((1, dim), dtype=npdt)
        if state is None:
            if step_begin != 0:
                raise ValueError("state is None only for a window starting at step 0")
            # poisoned: the kernel must write every entry (a missed one shows as NaN / -7)
            theta = np.full((count, dim), np.nan, dtype=npdt)
            mom = np.full((count, dim), np.nan, dtype=npdt)
            inertia0 = np.full(count, np.nan, dtype=npdt)
            first_passage = np.full((count, len(FRACTIONS)), -7, dtype=np.int32)
        else:
            # copies: the kernel works in place and the caller's state stays untouched
            theta = _as_numpy(state.theta, npdt, copy=True)
            mom = _as_numpy(state.momentum, npdt, copy=True)
            inertia0 = _as_numpy(state.inertia0, npdt, copy=True)
            first_passage = _as_numpy(state.first_passage, np.int32, copy=True)
        n_rec = len(recorded_in_window(config, step_begin, step_end))
        out = np.zeros((n_groups(count), n_rec, N_QUANTITIES), dtype=np.float64)
        coef = step_coefficients(model, step_begin, step_end)
        key0, key1 = rng.seed_key(config.seed)
        if start + count > rng.MAX_TRAJECTORIES or step_end > rng.MAX_STEPS:
            raise ValueError("trajectory or step index outside the Philox counter's range")
        k.ensemble_window(theta, mom, inertia0, first_passage, lam, coef, kernel_constants(config), out,
                          start, step_begin, step_end, config.record_every, 1 if state is None else 0,
                          key0, key1, int(sw.integrator), int(sw.problem), int(sw.noise_model), int(sw.noisy))
        partials = torch.from_numpy(out).permute(1, 0, 2).contiguous()
        new_state = ChunkState(torch.from_numpy(theta), torch.from_numpy(mom), torch.from_numpy(inertia0),
                               torch.from_numpy(first_passage))
        return new_state, partials
