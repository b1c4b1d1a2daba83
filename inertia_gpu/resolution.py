"""Options checked together: the resolution behind `SimulationConfig.validate()`.

`resolve` turns the user's fields (a dict) into the fields of a `RunConfig`
and the list of values it filled in; `unused_options` names an option that
would have no effect in the chosen configuration (the CLI refuses those);
`energy_scale` is the run's energy unit behind `RunConfig.diverge_above`
(see config.py's docstring for the definition).
"""
from __future__ import annotations

import math
import numbers

from .config import DTYPE_RANGE, FIELD_CHECKS, ConfigError, parse_distribution, parse_record_every, parse_schedule
from .problems import log_spaced_spectrum
from .spec import GROUP

# options that are positive reals used in the working dtype: a value that leaves its normal range is refused
SCALARS = ("lr", "dt", "damping", "noise", "temperature", "init_theta_std", "init_velocity_std")


def resolve(given: dict) -> tuple[dict, list]:
    """(resolved fields, [(field, resolved value, user's value), ...]) of the user's fields `given`."""
    for name, check in FIELD_CHECKS.items():
        check(given[name])
    values = {name: _plain(value) for name, value in given.items()}
    kind, every = parse_record_every(values["record_every"])
    if kind == "every":
        values["record_every"] = every  # "3" as 3: the kernels that test n % K take an integer
    _check_combinations(values)
    _resolve_problem(values)
    _check_working_range(values)
    values["replicates"] = effective_replicates(values["trajectories"], values["replicates"])
    if values["diverge_above"] is None:
        values["diverge_above"] = float(values["diverge_factor"] * energy_scale(_Fields(values)))
    derived = [(name, values[name], given[name]) for name in values
               if name != "extra" and not _identical(values[name], given[name])]
    return values, derived


class _Fields:
    """Attribute access to a dict of fields (energy_scale reads a run's fields by name)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def _identical(a, b) -> bool:
    return type(a) is type(b) and a == b


def _plain(value):
    """numpy scalars (and lists of them) as Python numbers; other values unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):  # numpy.bool_ as a bool
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [float(x) for x in (value.tolist() if hasattr(value, "tolist") else value)]
    return value


def effective_replicates(trajectories: int, replicates: int) -> int:
    """The replicates a run really has: blocks of whole GROUPs of ceil(N / replicates) trajectories."""
    per_rep = math.ceil(trajectories / replicates)
    size = max(GROUP, math.ceil(per_rep / GROUP) * GROUP)
    return math.ceil(trajectories / size)


def _check_combinations(v: dict) -> None:
    if v["noise_model"] == "temperature" and v["integrator"] == "euler" and v["temperature"] > 0 \
            and v["momentum_schedule"] == "constant" and v["damping"] == 0:
        raise ConfigError("--temperature: needs --damping > 0 (sigma^2 = 2 gamma T)")


def _resolve_problem(v: dict) -> None:
    if v["problem"] != "quadratic":
        if v["spectrum"] is not None or v["condition"] is not None or v["spectrum_distribution"] is not None:
            raise ConfigError(f"--spectrum/--condition/--spectrum-dist: only for --problem quadratic, "
                              f"not {v['problem']}")
        v["dim"] = (2 if v["problem"] == "rosenbrock" else 1) if v["dim"] is None else v["dim"]
        if v["problem"] == "rosenbrock" and v["dim"] < 2:
            raise ConfigError(f"--dim: rosenbrock needs dim >= 2, got {v['dim']}")
        return
    if sum(v[k] is not None for k in ("spectrum", "condition", "spectrum_distribution")) > 1:
        raise ConfigError("--spectrum, --condition and --spectrum-dist: give at most one")
    if v["spectrum"] is not None:
        if v["dim"] is not None and v["dim"] != len(v["spectrum"]):
            raise ConfigError(f"--dim: {v['dim']} disagrees with the {len(v['spectrum'])} eigenvalues of --spectrum")
        v["dim"] = len(v["spectrum"])
    elif v["spectrum_distribution"] is not None:
        v["dim"] = 1 if v["dim"] is None else v["dim"]
    else:
        v["dim"] = 1 if v["dim"] is None else v["dim"]
        v["condition"] = 1.0 if v["condition"] is None else v["condition"]
        v["spectrum"] = log_spaced_spectrum(v["dim"], v["condition"])


def _check_working_range(v: dict) -> None:
    """Every positive scalar must be a normal number of the working dtype (no overflow, no flush to 0)."""
    high, tiny = DTYPE_RANGE[v["dtype"]]
    hint = "; use --dtype float64" if v["dtype"] == "float32" else ""
    for name in SCALARS:
        x = v[name]
        if x != 0 and not tiny <= x <= high:
            raise ConfigError(f"--{name.replace('_', '-')}: {x:g} is outside the normal range of {v['dtype']} "
                              f"({tiny:.3g} to {high:.3g}){hint}")
    for lam in v["spectrum"] or ():
        if lam != 0 and not tiny <= lam <= high:
            raise ConfigError(f"--spectrum: eigenvalue {lam:g} is outside the normal range of {v['dtype']}{hint}")
    if v["spectrum_distribution"] is not None:
        name, (a, b) = parse_distribution(v["spectrum_distribution"])
        # lognormal: the draws reach exp(M +- 8 S) once in ~1e15; uniform/loguniform: the interval itself
        low_end, high_end = (math.log(a) if a > 0 else -math.inf, math.log(b)) if name != "lognormal" \
            else (a - 8 * b, a + 8 * b)
        if high_end > math.log(high) or (name != "uniform" and low_end < math.log(tiny)):
            raise ConfigError(f"--spectrum-dist: {v['spectrum_distribution']} draws eigenvalues outside the range "
                              f"of {v['dtype']} ({tiny:.3g} to {high:.3g}){hint}")


# --- options with no effect -------------------------------------------------------------------

def unused_options(run, given: set[str]) -> str | None:
    """One line naming an option in `given` that `run` would not use, and what it needs; else None."""
    hb = run.integrator == "heavy-ball"
    nesterov = parse_schedule(run.momentum_schedule) is not None
    rules = [
        ("dt", hb, "a step of the continuous integrators (leapfrog, euler, baoab); heavy ball steps with --lr"),
        ("damping", hb, "needs a continuous integrator (leapfrog, euler, baoab); heavy ball uses --momentum"),
        ("lr", not hb, f"a heavy-ball option; --integrator {run.integrator} steps with --dt"),
        ("momentum", not hb, f"a heavy-ball option; --integrator {run.integrator} uses --damping"),
        ("momentum", nesterov, "set by --momentum-schedule nesterov:R; needs --momentum-schedule constant"),
        ("damping", nesterov, "set by --momentum-schedule nesterov:R; needs --momentum-schedule constant"),
        ("noise", run.noise_model == "temperature",
         "not used by --noise-model temperature (it sets the noise from --temperature)"),
        ("temperature", run.noise_model != "temperature", "needs --noise-model temperature"),
        ("condition", "dim" not in given and "condition" in given,
         "needs --dim (log-spaced eigenvalues 1/condition..1 in dim dimensions)"),
        ("noise_model", "noise" not in given and "temperature" not in given,
         "needs --noise S (or --temperature T with --noise-model temperature)"),
    ]
    for name, unused, why in rules:
        if name in given and unused:
            return f"--{name.replace('_', '-')}: has no effect here: {why}"
    if "replicates" in given and run.replicates != run_requested(run, "replicates"):
        return (f"--replicates: {run.trajectories} trajectories in blocks of whole groups of {GROUP} make "
                f"{run.replicates} replicates, not {run_requested(run, 'replicates')}; use --replicates "
                f"{run.replicates} or leave it out")
    return None


def run_requested(run, name: str):
    """The user's value of a field the resolution changed (else the field itself)."""
    for field_name, _, user in run.derived:
        if field_name == name:
            return user
    return getattr(run, name)


# --- the energy scale of a run -------------------------------------------------------------

def energy_scale(run) -> float:
    """E[I_0] plus the energy the noise can inject over the run (no dissipation), floored at d T."""
    d = run.dim
    s2, v2 = run.init_theta_std * run.init_theta_std, run.init_velocity_std * run.init_velocity_std
    if run.problem == "quadratic":
        loss0 = 0.5 * s2 * _eigenvalue_sum(run)
    elif run.problem == "double-well":
        loss0 = d * (3 * s2 * s2 - 2 * s2 + 1) / 4
    else:
        loss0 = (d - 1) * (100 * (s2 + 3 * s2 * s2) + 1 + s2)
    hb = run.integrator == "heavy-ball"
    kinetic0 = 0.5 * d * v2 / (run.lr if hb else 1.0)
    per_step = 0.0
    temperature = run.temperature if run.noise_model == "temperature" else 0.0
    if run.noise_model == "temperature":
        nesterov = parse_schedule(run.momentum_schedule) is not None
        friction = 1.0 if nesterov else ((1.0 - run.momentum) if hb else min(run.damping * run.dt, 1.0))
        per_step = friction * temperature * d
    elif run.noise > 0:
        unit = run.lr if hb else run.dt  # K gains 1/2 lr s^2 (heavy ball) or 1/2 sigma^2 h per coordinate
        strength = run.noise * run.noise * (loss0 if run.noise_model == "loss-scaled" else 1.0)
        per_step = 0.5 * strength * d * unit
    scale = loss0 + kinetic0 + run.steps * per_step + d * temperature
    return max(scale, DTYPE_RANGE["float64"][1]) if not math.isnan(scale) else math.inf


def _eigenvalue_sum(run) -> float:
    if run.spectrum_distribution is None:
        return math.fsum(run.spectrum)
    name, (a, b) = parse_distribution(run.spectrum_distribution)
    try:
        if name == "uniform":
            mean = 0.5 * (a + b)
        elif name == "loguniform":
            mean = (b - a) / math.log(b / a)
        else:
            mean = math.exp(a + 0.5 * b * b)
    except OverflowError:
        return math.inf
    return run.dim * mean
