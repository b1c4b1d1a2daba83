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

from .. import rng, spec
from ..config import SimulationConfig
from ..reference import Model
from .base import FRACTIONS, N_QUANTITIES, ChunkState, EnsembleBackend, n_groups, recorded_in_window

NP_DTYPES = {"float32": np.float32, "float64": np.float64}
TASKS_PER_THREAD = 4  # parallel tasks per worker thread: balance without per-group scratch allocation


def _kernels():
    from ..kernels import cpu_ensemble
    return cpu_ensemble


def _scalar(x, dtype: torch.dtype) -> float:
    """A reference scalar (Python float or 0-dim tensor) as the working dtype rounds it."""
    return float(torch.as_tensor(x, dtype=dtype))


def step_coefficients(model: Model, step_begin: int, step_end: int) -> np.ndarray:
    """[step_end - step_begin, 3] per-step scalars in the working dtype (see kernels/cpu_ensemble.py).

    Each entry is computed by the same torch expression as in `inertia_gpu.reference`,
    so it is bit-identical to the scalar the reference multiplies by.
    """
    cfg = model.config
    dt = model.dtype
    loss_scaled = cfg.noise_model == "loss-scaled"

    def row(n: int) -> tuple[float, float, float]:
        if cfg.integrator == "heavy-ball":
            mu = model.momentum(n)
            s = cfg.noise if loss_scaled else model.noise_std(None, (1.0 - mu) / cfg.lr)
            return _scalar(mu, dt), _scalar(s, dt), 0.0
        h = cfg.dt
        gamma = model.damping(n)
        if cfg.integrator == "euler":
            hg = h * gamma
            if loss_scaled:
                return _scalar(hg, dt), _scalar(cfg.noise, dt), _scalar(math.sqrt(h), dt)
            sigma = model.noise_std(None, gamma)
            return _scalar(hg, dt), _scalar(sigma * math.sqrt(h), dt), 0.0
        # O-step of leapfrog / baoab, as Model.ou_step
        gamma = torch.as_tensor(gamma, dtype=dt)
        c1 = torch.exp(-gamma * h)
        var_factor = torch.where(gamma > 0, -torch.expm1(-2.0 * gamma * h) / (2.0 * torch.clamp(gamma, min=1e-300)),
                                 torch.as_tensor(h, dtype=dt))
        sq = torch.sqrt(var_factor)
        if loss_scaled:
            return _scalar(c1, dt), _scalar(sq, dt), _scalar(cfg.noise, dt)
        sigma = model.noise_std(None, gamma)
        return _scalar(c1, dt), _scalar(sq, dt), _scalar(sigma * sq, dt)

    count = step_end - step_begin
    npdt = NP_DTYPES[cfg.dtype]
    if cfg.nesterov_r is None:
        return np.tile(np.asarray(row(step_begin), dtype=npdt), (count, 1))
    return np.asarray([row(n) for n in range(step_begin, step_end)], dtype=npdt).reshape(count, 3)


def kernel_constants(config: SimulationConfig) -> np.ndarray:
    """The working-dtype scalars of the dynamics (kernels/cpu_ensemble.py, K_*)."""
    k = _kernels()
    c = np.zeros(k.N_CONSTS, dtype=np.float64)
    c[k.K_LR] = config.lr
    c[k.K_HALF_H] = 0.5 * config.dt
    c[k.K_H] = config.dt
    c[k.K_INIT_THETA] = config.init_theta_std
    c[k.K_INIT_V] = config.init_velocity_std
    c[k.K_ONE] = 1.0
    return c.astype(NP_DTYPES[config.dtype])  # round to nearest, as torch casts a Python scalar


def observable_constants(config: SimulationConfig) -> np.ndarray:
    """The float64 scalars of the recorded observables (kernels/cpu_ensemble.py, O_*)."""
    k = _kernels()
    o = np.zeros(k.N_OBS, dtype=np.float64)
    o[k.O_HALF_LR] = 0.5 * config.lr
    o[k.O_H2_8] = config.dt ** 2 / 8.0
    o[k.O_FRAC:k.O_FRAC + len(FRACTIONS)] = FRACTIONS
    # "not <= limit" marks a divergence; inf inertia counts as diverged too (it cannot enter a mean)
    o[k.O_DIVERGE] = min(float(getattr(config, "diverge_above", math.inf)), np.finfo(np.float64).max)
    return o


def record_rows(config: SimulationConfig, step_begin: int, step_end: int) -> tuple[np.ndarray, int, int]:
    """(rec_row, init_row, n_records): the row of the window's partial sums each state goes to.

    rec_row[n - step_begin] receives the state after step n (-1: not recorded); init_row the
    initial state (-1: none): exactly the steps of `recorded_in_window`.
    """
    steps = recorded_in_window(config, step_begin, step_end)
    rec_row = np.full(step_end - step_begin, -1, dtype=np.int32)
    init_row = -1
    for row, n in enumerate(steps):
        if n == step_begin:
            init_row = row
        else:
            rec_row[n - 1 - step_begin] = row
    return rec_row, init_row, len(steps)


def switch_codes(config: SimulationConfig) -> tuple[int, int, int]:
    """(integrator, problem, noise model) as inertia_gpu.spec numbers them."""
    return (int(spec.Integrator.from_option(config.integrator)), int(spec.Problem.from_option(config.problem)),
            int(spec.NoiseModel.from_option(config.noise_model)))


def _as_numpy(t: torch.Tensor, dtype, copy: bool = False) -> np.ndarray:
    a = t.detach().to("cpu").numpy()
    return np.array(a, dtype=dtype, order="C", copy=True) if copy else np.ascontiguousarray(a, dtype=dtype)


def _launch(k, theta, mom, inertia0, first_passage, lam, coef, config, rec_row, init_row, out, start, step_begin,
            step_end, init, key0, key1, codes, noisy):
    import numba
    tasks = TASKS_PER_THREAD * numba.get_num_threads()
    per_task = max(1, -(-n_groups(theta.shape[0]) // tasks))
    k.ensemble_window(theta, mom, inertia0, first_passage, lam, coef, kernel_constants(config),
                      observable_constants(config), rec_row, init_row, out, start, step_begin, step_end, init,
                      key0, key1, *codes, noisy, per_task, k.GROUP)


_WARM = set()


def warm_up(dtype: str = "float32") -> None:
    """Load (or, on a cold cache, compile once) the kernel for `dtype`: done when the backend runs first.

    The engine builds the backend before it starts its clock; loading the cached machine
    code (a cold compile is cached on disk) is paid once per process and dtype.
    """
    if dtype in _WARM:
        return
    k = _kernels()
    f = NP_DTYPES[dtype]
    cfg = SimulationConfig(trajectories=1, steps=1, dtype=dtype)
    rec_row, init_row, n_rec = record_rows(cfg, 0, 1)
    _launch(k, np.zeros((1, 1), f), np.zeros((1, 1), f), np.zeros(1), np.zeros((1, 3), np.int32),
            np.ones((1, 1), f), np.zeros((1, 3), f), cfg, rec_row, init_row, np.zeros((1, n_rec, N_QUANTITIES)),
            0, 0, 1, 1, 1, 0, (0, 0, 0), 1)
    _WARM.add(dtype)


class NumbaEnsemble(EnsembleBackend):
    name = "numba"

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
        warm_up(config.dtype)
        model = Model(config)
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
            inertia0 = np.full(count, np.nan)
            first_passage = np.full((count, len(FRACTIONS)), -7, dtype=np.int32)
        else:
            # copies: the kernel works in place and the caller's state stays untouched
            theta = _as_numpy(state.theta, npdt, copy=True)
            mom = _as_numpy(state.momentum, npdt, copy=True)
            inertia0 = _as_numpy(state.inertia0, np.float64, copy=True)  # I_0 in float64 (exact from float32)
            first_passage = _as_numpy(state.first_passage, np.int32, copy=True)
        rec_row, init_row, n_rec = record_rows(config, step_begin, step_end)
        out = np.zeros((n_groups(count), n_rec, N_QUANTITIES), dtype=np.float64)
        coef = step_coefficients(model, step_begin, step_end)
        key0, key1 = rng.seed_key(config.seed)
        if start + count > rng.MAX_TRAJECTORIES or step_end > rng.MAX_STEPS:
            raise ValueError("trajectory or step index outside the Philox counter's range")
        _launch(k, theta, mom, inertia0, first_passage, lam, coef, config, rec_row, init_row, out, start,
                step_begin, step_end, 1 if state is None else 0, key0, key1, switch_codes(config),
                1 if config.noisy else 0)
        partials = torch.from_numpy(out).permute(1, 0, 2).contiguous()
        new_state = ChunkState(torch.from_numpy(theta), torch.from_numpy(mom), torch.from_numpy(inertia0),
                               torch.from_numpy(first_passage))
        return new_state, partials
