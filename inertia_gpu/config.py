"""A simulation's options, resolved and validated once.

`SimulationConfig` is what the CLI, the API, the engine, every backend and
`theory` share. `validate()` turns every user mistake into a ConfigError
that names the option and what is allowed; the CLI prints that one line
and exits with status 2.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .problems import PROBLEMS, SPECTRUM_DISTRIBUTIONS, log_spaced_spectrum
from .rng import MAX_STEPS, MAX_TRAJECTORIES

INTEGRATORS = ("heavy-ball", "leapfrog", "euler", "baoab")
CONTINUOUS = ("leapfrog", "euler", "baoab")
NOISE_MODELS = ("additive", "temperature", "loss-scaled")
BACKENDS = ("auto", "torch", "triton", "cupy", "numba")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


class ConfigError(ValueError):
    """A user mistake in the options: one line naming the option and what is allowed."""


@dataclass
class SimulationConfig:
    problem: str = "quadratic"
    spectrum: list[float] | None = None  # explicit eigenvalues of the quadratic
    dim: int | None = None  # dimension (quadratic with --condition, double-well, rosenbrock)
    condition: float | None = None  # log-spaced eigenvalues from 1/condition to 1
    spectrum_distribution: str | None = None  # "uniform:a,b" | "loguniform:a,b" | "lognormal:m,s"
    integrator: str = "heavy-ball"
    lr: float = 0.01
    momentum: float = 0.9
    momentum_schedule: str = "constant"  # "constant" | "nesterov:R"
    dt: float = 0.1
    damping: float = 0.0
    noise: float = 0.0
    noise_model: str = "additive"
    temperature: float = 0.0
    trajectories: int = 10_000
    steps: int = 100
    record_every: int = 1
    seed: int = 0
    init_theta_std: float = 1.0
    init_velocity_std: float = 0.0
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    replicates: int = 128  # batch-means blocks of trajectories (t-tails stay close to normal)
    extra: dict = field(default_factory=dict)

    # --- derived -------------------------------------------------------------
    @property
    def continuous(self) -> bool:
        return self.integrator in CONTINUOUS

    @property
    def nesterov_r(self) -> float | None:
        if self.momentum_schedule.startswith("nesterov:"):
            return float(self.momentum_schedule.split(":", 1)[1])
        return None

    @property
    def distribution(self) -> tuple[str, tuple[float, float]] | None:
        if not self.spectrum_distribution:
            return None
        name, _, rest = self.spectrum_distribution.partition(":")
        a, b = (float(x) for x in rest.split(","))
        return name, (a, b)

    @property
    def noisy(self) -> bool:
        if self.noise_model == "temperature":
            return self.temperature > 0
        return self.noise > 0

    @property
    def recorded_steps(self) -> list[int]:
        return list(range(0, self.steps + 1, self.record_every))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    # --- validation ------------------------------------------------------------
    def validate(self) -> "SimulationConfig":
        """Check every option; resolve dim and spectrum. Returns self."""
        _choice("problem", self.problem, PROBLEMS)
        _choice("integrator", self.integrator, INTEGRATORS)
        _choice("noise-model", self.noise_model, NOISE_MODELS)
        _choice("backend", self.backend, BACKENDS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("device", self.device, DEVICES)
        _positive_int("trajectories", self.trajectories, MAX_TRAJECTORIES)
        _positive_int("steps", self.steps, MAX_STEPS - 4)
        _positive_int("record-every", self.record_every, None)
        _positive_int("replicates", self.replicates, None)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 1 << 64:
            raise ConfigError(f"--seed: must be an integer in [0, 2**64), got {self.seed!r}")
        if self.integrator == "heavy-ball":
            _positive("lr", self.lr)
            _in_unit("momentum", self.momentum)
        else:
            _positive("dt", self.dt)
            _nonneg("damping", self.damping)
        _nonneg("noise", self.noise)
        _nonneg("temperature", self.temperature)
        _nonneg("init-theta-std", self.init_theta_std)
        _nonneg("init-velocity-std", self.init_velocity_std)
        if self.momentum_schedule != "constant":
            r = None
            if self.momentum_schedule.startswith("nesterov:"):
                try:
                    r = float(self.momentum_schedule.split(":", 1)[1])
                except ValueError:
                    r = None
            if r is None or not math.isfinite(r) or r <= 0:
                raise ConfigError(
                    f"--momentum-schedule: allowed 'constant' or 'nesterov:R' with R > 0, got {self.momentum_schedule!r}")
        if self.noise_model == "temperature" and self.integrator == "euler" and self.temperature > 0 \
                and self.momentum_schedule == "constant" and self.damping == 0:
            raise ConfigError("--temperature: needs --damping > 0 (sigma^2 = 2 gamma T)")
        self._resolve_problem()
        return self

    def _resolve_problem(self) -> None:
        if self.problem == "quadratic":
            if self.condition is not None and self.spectrum is not None and self.dim is not None \
                    and self.spectrum == log_spaced_spectrum(self.dim, self.condition):
                self.spectrum = None  # resolved by an earlier validate(): resolve again from the condition
            given = sum(x is not None for x in (self.spectrum, self.condition, self.spectrum_distribution))
            if given > 1:
                raise ConfigError("--spectrum, --condition and --spectrum-dist: give at most one")
            if self.spectrum is not None:
                spectrum = [float(x) for x in self.spectrum]
                if not spectrum:
                    raise ConfigError("--spectrum: needs at least one eigenvalue")
                for lam in spectrum:
                    if not math.isfinite(lam) or lam < 0:
                        raise ConfigError(f"--spectrum: eigenvalues must be finite and >= 0, got {lam}")
                if self.dim is not None and self.dim != len(spectrum):
                    raise ConfigError(f"--dim: {self.dim} disagrees with the {len(spectrum)} eigenvalues of --spectrum")
                self.spectrum, self.dim = spectrum, len(spectrum)
            elif self.spectrum_distribution is not None:
                self._check_distribution()
                self.dim = 1 if self.dim is None else self.dim
                _positive_int("dim", self.dim, 1 << 16)
            else:
                self.dim = 1 if self.dim is None else self.dim
                _positive_int("dim", self.dim, 1 << 16)
                condition = 1.0 if self.condition is None else self.condition
                if not (isinstance(condition, (int, float)) and math.isfinite(condition) and condition >= 1):
                    raise ConfigError(f"--condition: must be >= 1, got {condition}")
                self.condition = float(condition)
                self.spectrum = log_spaced_spectrum(self.dim, self.condition)
        else:
            if self.spectrum is not None or self.condition is not None or self.spectrum_distribution is not None:
                raise ConfigError(f"--spectrum/--condition/--spectrum-dist: only for --problem quadratic, not {self.problem}")
            self.dim = (2 if self.problem == "rosenbrock" else 1) if self.dim is None else self.dim
            _positive_int("dim", self.dim, 1 << 16)
            if self.problem == "rosenbrock" and self.dim < 2:
                raise ConfigError(f"--dim: rosenbrock needs dim >= 2, got {self.dim}")

    def _check_distribution(self) -> None:
        name, _, rest = str(self.spectrum_distribution).partition(":")
        if name not in SPECTRUM_DISTRIBUTIONS:
            raise ConfigError(f"--spectrum-dist: allowed {', '.join(d + ':A,B' for d in SPECTRUM_DISTRIBUTIONS)}, "
                              f"got {self.spectrum_distribution!r}")
        try:
            a, b = (float(x) for x in rest.split(","))
        except ValueError:
            raise ConfigError(f"--spectrum-dist: expected {name}:A,B with two numbers, got {self.spectrum_distribution!r}") from None
        if name == "uniform" and not 0 <= a < b:
            raise ConfigError(f"--spectrum-dist: uniform:A,B needs 0 <= A < B, got {a}, {b}")
        if name == "loguniform" and not 0 < a < b:
            raise ConfigError(f"--spectrum-dist: loguniform:A,B needs 0 < A < B, got {a}, {b}")
        if name == "lognormal" and not (math.isfinite(a) and b >= 0):
            raise ConfigError(f"--spectrum-dist: lognormal:M,S needs S >= 0, got {a}, {b}")


def _choice(option: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"--{option}: allowed {', '.join(allowed)}; got {value!r}")


def _positive_int(option: str, value, limit) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"--{option}: must be a positive integer, got {value!r}")
    if limit is not None and value >= limit:
        raise ConfigError(f"--{option}: must be below {limit}, got {value}")


def _positive(option: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--{option}: must be a finite number > 0, got {value!r}")


def _nonneg(option: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"--{option}: must be a finite number >= 0, got {value!r}")


def _in_unit(option: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"--{option}: must lie in [0, 1], got {value!r}")
