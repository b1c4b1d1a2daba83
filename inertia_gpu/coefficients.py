"""Every scalar the dynamics multiplies by, formed once on the host for every backend.

The rule (docs/CONVENTIONS.md, "Coefficients"): each scalar is formed from the
configuration in float64 (Python floats and `math`, one step at a time, so the
value never depends on a vectorised code path or on where a window starts) and
rounded ONCE to the working dtype. The reference (`inertia_gpu.reference`) and
every kernel multiply by these values and by nothing they derive themselves, so
the rounding of every per-step scalar is identical across backends by
construction; kernels only do per-trajectory arithmetic.

API
---
    coef = coefficients(config, step_begin, step_end)   # a Coefficients
    coef.constants          # torch [N_CONST] in the working dtype; index with Const.*
    coef.table              # torch [step_end - step_begin, N_STEP]; row n - step_begin, columns Step.*
    coef.rows               # the same table with ONE row when the schedule is constant (every step reads row 0)
    coef.step(n, Step.X)    # the scalar of step n
    coef.observe            # float64 [N_OBS]: the constants of the recorded observables (Obs.*)

    constant_vector(config)                     # = coefficients(config).constants
    step_table(config, step_begin, step_end)    # = coefficients(config, step_begin, step_end).table

Results are CPU tensors; a launcher moves them (`.to(device)`) or takes `.numpy()`.
`coefficient_arrays(config, step_begin, step_end)` gives the same values as numpy
arrays (same float64 formulas, same single rounding) for launchers that never load
torch; `coefficients` is built from it, so the two cannot drift apart.
`overrides` ({option: values}, per-trajectory values of a swept option,
`reference.sweep_overrides`) adds a trailing trajectory axis to `constants`,
`rows`/`table` and `observe`; only the reference consumes that form.

Per-step columns (Step), by integrator:

    integrator   DECAY              XI              SPREAD
    heavy-ball   mu_n               s_n             1
    euler        h gamma_n          sigma_n sqrt(h) sqrt(h)
    leapfrog     c1_n = e^{-gamma_n h}  sigma_n sqrt(vf_n)  sqrt(vf_n),  vf = (1 - e^{-2 gamma h}) / (2 gamma)
    baoab        as leapfrog (the O step)

XI is the whole multiplier of the standard normal xi for the additive and
temperature noise models (s_n = noise | sqrt(2 (1 - mu_n) T / lr);
sigma_n = noise | sqrt(2 gamma_n T)). For the loss-scaled model the scale
depends on the trajectory's loss L, so XI holds `noise` and the kernel forms
(XI * sqrt(max(L, 0))) * SPREAD, in that order.

Schedules: constant, or nesterov:r with mu_n = n / (n + r) and, for the
continuous integrators, gamma_n = (1 - mu_n) / h.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .spec import Integrator, NoiseModel, Schedule, SpectrumDist, numpy_dtype, switches, torch_dtype


class Const(IntEnum):
    """Indices of the step-independent scalars (working dtype)."""

    LR = 0  # heavy ball: lr
    HALF_LR = 1  # 0.5 lr
    H = 2  # continuous: h = dt
    HALF_H = 3  # 0.5 h
    SQRT_H = 4  # sqrt(h)
    SHADOW = 5  # h^2 / 8
    NOISE = 6  # noise (the loss-scaled factor)
    TEMPERATURE = 7
    NESTEROV_R = 8  # r of nesterov:r, 0 for a constant schedule
    INIT_THETA_STD = 9
    INIT_VELOCITY_STD = 10
    SPECTRUM_A = 11  # drawn spectra: a | log a | m (see spectrum_parameters)
    SPECTRUM_B = 12  # b - a | log b - log a | s


class Step(IntEnum):
    """Columns of the per-step table (working dtype); see the module docstring."""

    DECAY = 0
    XI = 1
    SPREAD = 2


class Obs(IntEnum):
    """Constants of the recorded observables, float64 (observables are formed in float64)."""

    HALF_LR = 0  # kinetic of heavy ball = lr/2 |b|^2
    SHADOW = 1  # h^2 / 8 of the continuous shadow inertia


N_CONST, N_STEP, N_OBS = len(Const), len(Step), len(Obs)


# --- the scalar formulas (float64; Python floats, or float64 tensors for per-trajectory values) ---------

def _is_t(x) -> bool:
    # a value can be a tensor only once torch is loaded: finding out must not load it
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _exp(x):
    return x.exp() if _is_t(x) else math.exp(x)


def _expm1(x):
    return x.expm1() if _is_t(x) else math.expm1(x)


def _sqrt(x):
    return x.sqrt() if _is_t(x) else math.sqrt(x)


def nesterov_momentum(n: int, r: float) -> float:
    """mu_n = n / (n + r) in float64."""
    return n / (n + r)


def ou_variance_factor(gamma, h: float):
    """vf = (1 - e^{-2 gamma h}) / (2 gamma), tending to h as gamma -> 0 (the exact O step's variance / sigma^2)."""
    if _is_t(gamma):
        import torch
        safe = torch.clamp(gamma, min=1e-300)
        return torch.where(gamma > 0, -torch.expm1(-2.0 * gamma * h) / (2.0 * safe), torch.full_like(gamma, h))
    return -math.expm1(-2.0 * gamma * h) / (2.0 * gamma) if gamma > 0 else h


def spectrum_parameters(distribution: str, params: tuple[float, float]) -> tuple[float, float]:
    """(A, B) of a drawn spectrum, float64: lambda = A + B u (uniform), exp(A + B u) (loguniform), exp(A + B z)."""
    a, b = params
    dist = SpectrumDist.from_option(distribution)
    if dist == SpectrumDist.UNIFORM:
        return a, b - a
    if dist == SpectrumDist.LOGUNIFORM:
        return math.log(a), math.log(b) - math.log(a)
    return a, b


def _step_row(sw, p: dict, n: int) -> tuple:
    """(DECAY, XI, SPREAD) of step n in float64; p holds the option values (floats or float64 tensors)."""
    nesterov = sw.schedule == Schedule.NESTEROV
    temperature = sw.noise_model == NoiseModel.TEMPERATURE
    loss_scaled = sw.noise_model == NoiseModel.LOSS_SCALED
    if sw.integrator == Integrator.HEAVY_BALL:
        mu = nesterov_momentum(n, p["nesterov_r"]) if nesterov else p["momentum"]
        xi = _sqrt(2.0 * ((1.0 - mu) / p["lr"]) * p["temperature"]) if temperature else p["noise"]
        return mu, xi, 1.0
    h = p["dt"]
    gamma = (1.0 - nesterov_momentum(n, p["nesterov_r"])) / h if nesterov else p["damping"]
    sigma = _sqrt(2.0 * gamma * p["temperature"]) if temperature else p["noise"]
    if sw.integrator == Integrator.EULER:
        spread = math.sqrt(h)
        return h * gamma, sigma if loss_scaled else sigma * spread, spread
    spread = _sqrt(ou_variance_factor(gamma, h))
    return _exp(-gamma * h), sigma if loss_scaled else sigma * spread, spread


def _constant_row(config, p: dict) -> tuple:
    h, lr = config.dt, p["lr"]
    a = b = 0.0
    if config.distribution is not None:
        a, b = spectrum_parameters(*config.distribution)
    values = {Const.LR: lr, Const.HALF_LR: 0.5 * lr, Const.H: h, Const.HALF_H: 0.5 * h, Const.SQRT_H: math.sqrt(h),
              Const.SHADOW: h * h / 8.0, Const.NOISE: p["noise"], Const.TEMPERATURE: p["temperature"],
              Const.NESTEROV_R: p["nesterov_r"], Const.INIT_THETA_STD: config.init_theta_std,
              Const.INIT_VELOCITY_STD: config.init_velocity_std, Const.SPECTRUM_A: a, Const.SPECTRUM_B: b}
    return tuple(values[c] for c in Const)


# --- the table ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CoefficientArrays:
    """The scalars of one configuration over [step_begin, step_end) as numpy arrays (no sweep overrides)."""

    dtype: np.dtype
    step_begin: int
    step_end: int
    constants: np.ndarray  # [N_CONST] working dtype
    rows: np.ndarray  # [1 or step_end - step_begin, N_STEP] working dtype
    observe: np.ndarray  # float64 [N_OBS]

    @property
    def constant_schedule(self) -> bool:
        return self.rows.shape[0] == 1

    @property
    def table(self) -> np.ndarray:
        """[step_end - step_begin, N_STEP]: one row per step (a read-only view for constant schedules)."""
        if self.constant_schedule:
            return np.broadcast_to(self.rows, (self.step_end - self.step_begin, N_STEP))
        return self.rows


def _checked_window(config, step_begin: int, step_end: int | None) -> int:
    step_end = config.steps if step_end is None else step_end
    if not 0 <= step_begin <= step_end:
        raise ValueError(f"bad window [{step_begin}, {step_end})")
    return step_end


def coefficient_arrays(config, step_begin: int = 0, step_end: int | None = None, *,
                       dtype: str | None = None) -> CoefficientArrays:
    """`coefficients` as numpy arrays: the same float64 values rounded once to `dtype` (default config.dtype)."""
    step_end = _checked_window(config, step_begin, step_end)
    sw = switches(config)
    p = _option_values(config, None)
    if sw.schedule == Schedule.CONSTANT:
        rows = [_step_row(sw, p, step_begin)]
    else:
        rows = [_step_row(sw, p, n) for n in range(step_begin, max(step_end, step_begin + 1))]
    working = numpy_dtype(config.dtype if dtype is None else dtype)
    f64 = np.float64
    with np.errstate(over="ignore"):  # float64 -> working dtype: round to nearest, once (beyond range: inf)
        constants = np.array(_constant_row(config, p), dtype=f64).astype(working)
        table = np.array(rows, dtype=f64).astype(working)
    observe = np.array((0.5 * p["lr"], config.dt * config.dt / 8.0), dtype=f64)
    return CoefficientArrays(np.dtype(working), step_begin, step_end, constants, table, observe)


@dataclass(frozen=True)
class Coefficients:
    """The scalars of one configuration over the window [step_begin, step_end), in the working dtype."""

    dtype: torch.dtype
    step_begin: int
    step_end: int
    constants: torch.Tensor  # [N_CONST] (, n_traj with overrides)
    rows: torch.Tensor  # [1 or step_end - step_begin, N_STEP] (, n_traj)
    observe: torch.Tensor  # float64 [N_OBS] (, n_traj)

    @property
    def constant_schedule(self) -> bool:
        return self.rows.shape[0] == 1

    @property
    def table(self) -> torch.Tensor:
        """[step_end - step_begin, N_STEP] (, n_traj): one row per step, also for constant schedules."""
        count = self.step_end - self.step_begin
        if self.constant_schedule:
            return self.rows.expand(count, *self.rows.shape[1:])
        return self.rows

    def const(self, index: Const) -> torch.Tensor:
        return self.constants[index]

    def step(self, n: int, column: Step) -> torch.Tensor:
        """The scalar `column` of step n -> n + 1 (step_begin <= n < step_end)."""
        if not self.step_begin <= n < self.step_end:
            raise IndexError(f"step {n} outside the window [{self.step_begin}, {self.step_end})")
        return self.rows[0 if self.constant_schedule else n - self.step_begin, column]


def _option_values(config, overrides: dict | None) -> dict:
    r = config.nesterov_r
    p = {"lr": config.lr, "momentum": config.momentum, "dt": config.dt, "damping": config.damping,
         "noise": config.noise, "temperature": config.temperature, "nesterov_r": 0.0 if r is None else r}
    if overrides:
        import torch
    for name, values in (overrides or {}).items():
        p[name] = torch.as_tensor(values, dtype=torch.float64).reshape(-1).cpu()
    return p


def _stack(values, batch: int | None) -> torch.Tensor:
    """float64 tensor of a tuple of floats / [batch] tensors, batch axis last."""
    import torch
    if batch is None:
        return torch.tensor(values, dtype=torch.float64)
    return torch.stack([torch.as_tensor(v, dtype=torch.float64).expand(batch) for v in values])


def coefficients(config, step_begin: int = 0, step_end: int | None = None, *, dtype: torch.dtype | None = None,
                 overrides: dict | None = None) -> Coefficients:
    """The constants and per-step scalars of `config` over [step_begin, step_end) (default: the whole run).

    dtype: the working dtype (default config.dtype). overrides: {option: per-trajectory values}
    of a sweep (options lr, momentum, damping, noise, temperature).
    """
    import torch
    step_end = _checked_window(config, step_begin, step_end)
    dtype = torch_dtype(config.dtype) if dtype is None else dtype
    if not overrides and dtype in (torch.float32, torch.float64):
        a = coefficient_arrays(config, step_begin, step_end, dtype=str(dtype).rsplit(".", 1)[-1])
        return Coefficients(dtype, step_begin, step_end, torch.from_numpy(a.constants), torch.from_numpy(a.rows),
                            torch.from_numpy(a.observe))
    sw = switches(config)
    p = _option_values(config, overrides)
    batch = next((v.numel() for v in p.values() if _is_t(v)), None)
    constants = _stack(_constant_row(config, p), batch)
    if sw.schedule == Schedule.CONSTANT:
        rows = _stack(_step_row(sw, p, step_begin), batch)[None]
    else:
        rows = torch.stack([_stack(_step_row(sw, p, n), batch) for n in range(step_begin, max(step_end, step_begin + 1))])
    observe = _stack((0.5 * p["lr"], config.dt * config.dt / 8.0), batch)
    # float64 -> working dtype: round to nearest, once
    return Coefficients(dtype, step_begin, step_end, constants.to(dtype), rows.to(dtype), observe)


def constant_vector(config, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[N_CONST] constants of `config` in the working dtype (index with Const)."""
    return coefficients(config, 0, 0, dtype=dtype).constants


def step_table(config, step_begin: int, step_end: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[step_end - step_begin, N_STEP] per-step scalars (columns Step), one row per step, contiguous."""
    return coefficients(config, step_begin, step_end, dtype=dtype).table.contiguous()


__all__ = ["CoefficientArrays", "Coefficients", "Const", "N_CONST", "N_OBS", "N_STEP", "Obs", "Step", "coefficient_arrays",
           "coefficients", "constant_vector", "nesterov_momentum", "ou_variance_factor", "spectrum_parameters", "step_table"]
