"""A simulation's options: checked when set, resolved once into the run the engine receives.

`SimulationConfig` is what a user writes (the CLI builds one from the
options given). Setting a field checks that option alone (type, range);
the user's fields are never rewritten. `validate()` (alias `resolve()`)
checks the options together and returns a `RunConfig`: the same fields
with the resolution filled in (the spectrum of --condition, the dimension,
the replicates a run really uses, plain Python numbers for numpy scalars)
and the derived values every backend and the theory read (`continuous`,
`nesterov_r`, `distribution`, `noisy`, `recorded_steps`, `diverge_above`).
Every mistake is a ConfigError naming the option; the CLI prints that one
line and exits with status 2. A RunConfig stays resolved: setting one of its
fields, or `dataclasses.replace`, checks and resolves the run again. Options
that a configuration does not use (--dt for heavy ball, ...) are accepted
here, where every field always has a value; the CLI, which knows which
options were typed, refuses them (resolution.unused_options).

Recorded steps: `record_every` is K (steps 0, K, 2K, ... and always the final
step) or "log:N" (about N steps per decade: step 0, the rounded values of
10^(j/N) for j = 0, 1, ..., and always the final step). `recorded_steps` is
that sorted list; the engine, every backend, first passage, the theory and
the fits use exactly these steps.

Divergence: at a recorded step a trajectory whose float64 inertia is not
<= `diverge_above` (NaN included) is diverged: its state is set to NaN and it
is left out of every sum from then on. Unless the user sets `diverge_above`
itself (a float > 0; inf: only non-finite inertia diverges), the resolved
run has `diverge_above = diverge_factor * energy_scale`, where the energy scale is the expected initial inertia
E[I_0] (from the initial-state distribution and the spectrum) plus the
energy the noise can inject over the whole run ignoring all dissipation
(additive noise: steps * 1/2 s^2 d lr (heavy ball) or 1/2 sigma^2 d h
(continuous); temperature: steps * (1 - mu) T d or gamma T d h, and at least
d T), never below the smallest normal float64. It is one number for a run,
the same in float32 and float64, so both dtypes count the same trajectories
as diverged. The default factor 1e6 leaves a stable run's trajectories far
below it (a Gaussian start exceeds 40 E[I_0] once in 10^10 draws) while a
runaway, growing geometrically, crosses it within a few recorded steps; with
energy scales below ~1e32 it lies below the float32 range.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from .problems import PROBLEMS, SPECTRUM_DISTRIBUTIONS
from .rng import MAX_STEPS, MAX_TRAJECTORIES

INTEGRATORS = ("heavy-ball", "leapfrog", "euler", "baoab")
CONTINUOUS = ("leapfrog", "euler", "baoab")
NOISE_MODELS = ("additive", "temperature", "loss-scaled")
BACKENDS = ("auto", "torch", "triton", "cupy", "numba")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
MAX_DIM = 1 << 16
DISTRIBUTION_HELP = {"uniform": "uniform:A,B", "loguniform": "loguniform:A,B", "lognormal": "lognormal:M,S"}
# the largest finite value and the smallest normal value of each working dtype
DTYPE_RANGE = {"float32": (3.4028234663852886e38, 1.1754943508222875e-38),
               "float64": (1.7976931348623157e308, 2.2250738585072014e-308)}


class ConfigError(ValueError):
    """A user mistake in the options: one line naming the option and what is allowed."""


# --- checks of one option ---------------------------------------------------------------

def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_bool(value) -> bool:
    # numpy.bool_ (named "bool" since numpy 2) without importing numpy
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"))


def _number(option: str, value, low: float, low_open: bool, high: float = math.inf) -> None:
    ok = _is_real(value) and math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        rng = f"> {low:g}" if low_open else f">= {low:g}"
        if high != math.inf:
            rng = f"in [{low:g}, {high:g}]"
        raise ConfigError(f"--{option}: must be a finite number {rng}, got {value!r}")


def _integer(option: str, value, limit: int | None, low: int = 1) -> None:
    if _is_bool(value) or not isinstance(value, numbers.Integral) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(f"--{option}: must be {what}, got {value!r}")
    if limit is not None and value >= limit:
        raise ConfigError(f"--{option}: must be below {limit}, got {value}")


def _choice(option: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"--{option}: allowed {', '.join(allowed)}; got {value!r}")


def parse_record_every(value) -> tuple[str, int]:
    """("every", K) or ("log", N) from K or "log:N"; ConfigError otherwise."""
    if isinstance(value, str):
        head, _, tail = value.partition(":")
        if head == "log" and tail.isdigit() and 0 < int(tail) <= 1000:
            return "log", int(tail)
        if value.isdigit() and int(value) > 0:
            return "every", int(value)
        raise ConfigError(f"--record-every: expected K (a positive integer) or log:N (1 <= N <= 1000), got {value!r}")
    _integer("record-every", value, None)
    return "every", int(value)


def parse_schedule(value) -> float | None:
    """R of "nesterov:R", None for "constant"; ConfigError otherwise."""
    if value == "constant":
        return None
    r = None
    if isinstance(value, str) and value.startswith("nesterov:"):
        try:
            r = float(value.split(":", 1)[1])
        except ValueError:
            r = None
    if r is None or not math.isfinite(r) or r <= 0:
        raise ConfigError(f"--momentum-schedule: allowed 'constant' or 'nesterov:R' with R > 0, got {value!r}")
    return r


def parse_distribution(value) -> tuple[str, tuple[float, float]]:
    """(name, (a, b)) of "uniform:A,B" | "loguniform:A,B" | "lognormal:M,S"; ConfigError otherwise."""
    name, _, rest = str(value).partition(":")
    if not isinstance(value, str) or name not in SPECTRUM_DISTRIBUTIONS:
        raise ConfigError(f"--spectrum-dist: allowed {' | '.join(DISTRIBUTION_HELP.values())}, got {value!r}")
    try:
        a, b = (float(x) for x in rest.split(","))
    except ValueError:
        raise ConfigError(f"--spectrum-dist: expected {DISTRIBUTION_HELP[name]} with two numbers, got {value!r}") \
            from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"--spectrum-dist: {DISTRIBUTION_HELP[name]} needs finite numbers, got {a}, {b}")
    if name == "uniform" and not 0 <= a < b:
        raise ConfigError(f"--spectrum-dist: uniform:A,B needs 0 <= A < B, got {a}, {b}")
    if name == "loguniform" and not 0 < a < b:
        raise ConfigError(f"--spectrum-dist: loguniform:A,B needs 0 < A < B, got {a}, {b}")
    if name == "lognormal" and not b >= 0:
        raise ConfigError(f"--spectrum-dist: lognormal:M,S needs S >= 0, got {a}, {b}")
    return name, (a, b)


def _check_spectrum(value) -> None:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ConfigError(f"--spectrum: expected a list of eigenvalues, got {value!r}")
    if len(value) == 0:
        raise ConfigError("--spectrum: needs at least one eigenvalue")
    for lam in value:
        if not _is_real(lam) or not math.isfinite(lam) or lam < 0:
            raise ConfigError(f"--spectrum: eigenvalues must be finite numbers >= 0, got {lam!r}")
    if len(value) >= MAX_DIM:
        raise ConfigError(f"--spectrum: at most {MAX_DIM - 1} eigenvalues, got {len(value)}")


def _check_bound(value) -> None:
    if not _is_real(value) or math.isnan(value) or value <= 0:
        raise ConfigError(f"--diverge-above: must be a number > 0 (inf: no bound), got {value!r}")


def _check_extra(value) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"extra: must be a dict, got {type(value).__name__}")


def _check_flag(option: str, value) -> None:
    if not _is_bool(value):
        raise ConfigError(f"--{option}: must be true or false, got {value!r}")


def _optional(check):
    return lambda v: None if v is None else check(v)


FIELD_CHECKS = {
    "problem": lambda v: _choice("problem", v, PROBLEMS),
    "spectrum": _check_spectrum,
    "dim": _optional(lambda v: _integer("dim", v, MAX_DIM)),
    "condition": _optional(lambda v: _number("condition", v, 1.0, False)),
    "spectrum_distribution": _optional(parse_distribution),
    "integrator": lambda v: _choice("integrator", v, INTEGRATORS),
    "lr": lambda v: _number("lr", v, 0.0, True),
    "momentum": lambda v: _number("momentum", v, 0.0, False, 1.0),
    "momentum_schedule": parse_schedule,
    "dt": lambda v: _number("dt", v, 0.0, True),
    "damping": lambda v: _number("damping", v, 0.0, False),
    "noise": lambda v: _number("noise", v, 0.0, False),
    "noise_model": lambda v: _choice("noise-model", v, NOISE_MODELS),
    "temperature": lambda v: _number("temperature", v, 0.0, False),
    "trajectories": lambda v: _integer("trajectories", v, MAX_TRAJECTORIES),
    "steps": lambda v: _integer("steps", v, MAX_STEPS - 4),
    "record_every": parse_record_every,
    "seed": lambda v: _integer("seed", v, 1 << 64, low=0),
    "init_theta_std": lambda v: _number("init-theta-std", v, 0.0, False),
    "init_velocity_std": lambda v: _number("init-velocity-std", v, 0.0, False),
    "backend": lambda v: _choice("backend", v, BACKENDS),
    "device": lambda v: _choice("device", v, DEVICES),
    "dtype": lambda v: _choice("dtype", v, DTYPES),
    "replicates": lambda v: _integer("replicates", v, None),
    "diverge_factor": lambda v: _number("diverge-factor", v, 1.0, True),
    "diverge_above": _optional(lambda v: _check_bound(v)),
    "ledger": lambda v: _check_flag("ledger", v),
    "extra": lambda v: _check_extra(v),
}


# --- the user's options -------------------------------------------------------------------

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
    record_every: int | str = 1  # K, or "log:N" (about N recorded steps per decade); the final step always
    seed: int = 0
    init_theta_std: float = 1.0
    init_velocity_std: float = 0.0
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    replicates: int = 128  # batch-means blocks of trajectories (t-tails stay close to normal)
    diverge_factor: float = 1e6  # diverge_above = diverge_factor * the run's energy scale (module docstring)
    diverge_above: float | None = None  # the bound itself (inf: only non-finite inertia diverges); None: as above
    ledger: bool = True  # the inertia ledger (dissipated, injected, residual) beside the statistics
    extra: dict = field(default_factory=dict)

    def __setattr__(self, name, value):
        check = FIELD_CHECKS.get(name)
        if check is not None:
            check(value)
        object.__setattr__(self, name, value)

    # --- derived (also readable before resolution: the theory accepts either) -------------
    @property
    def continuous(self) -> bool:
        return self.integrator in CONTINUOUS

    @property
    def nesterov_r(self) -> float | None:
        return parse_schedule(self.momentum_schedule)

    @property
    def distribution(self) -> tuple[str, tuple[float, float]] | None:
        return None if not self.spectrum_distribution else parse_distribution(self.spectrum_distribution)

    @property
    def noisy(self) -> bool:
        if self.noise_model == "temperature":
            return self.temperature > 0
        return self.noise > 0

    @property
    def recorded_steps(self) -> list[int]:
        from .recording import recorded_steps
        return recorded_steps(self.steps, self.record_every)

    @property
    def recorded_count(self) -> int:
        from .recording import recorded_count
        return recorded_count(self.steps, self.record_every)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(SimulationConfig)}
        d.pop("extra")
        return d

    def validate(self) -> "RunConfig":
        """Check the options together; the resolved run (a new object: this one is not changed)."""
        return RunConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SimulationConfig)})

    resolve = validate


# --- the resolved run -----------------------------------------------------------------------

@dataclass
class RunConfig(SimulationConfig):
    """A resolved run: what the engine, the backends and the theory receive.

    `derived` records (field, resolved value, user's value) for each field the resolution
    filled in, so that `dataclasses.replace(run, spectrum=[...])` and `run.steps = n`
    re-resolve from the user's options: a field still equal to its resolved value counts as
    not given. Setting a field re-checks and re-resolves the whole run.
    """

    derived: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self):
        from .resolution import resolve
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(SimulationConfig)}
        for name, resolved, user in self.derived:
            if _same(given[name], resolved):
                given[name] = user
        values, derived = resolve(given)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "derived", tuple(derived))
        object.__setattr__(self, "_resolved", True)

    def __setattr__(self, name, value):
        if not self.__dict__.get("_resolved"):
            object.__setattr__(self, name, value)
            return
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise AttributeError(f"RunConfig has no option {name!r}")
        again = dataclasses.replace(self, **{name: value})
        self.__dict__.update(again.__dict__)

    def validate(self) -> "RunConfig":
        return self

    resolve = validate


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and a == b
    except Exception:  # noqa: BLE001 - array-like comparisons: not the same object
        return False
