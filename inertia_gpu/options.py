"""The simulation options on the command line, shared by `simulate` and `sweep`.

Options are parsed with no defaults of their own (argparse.SUPPRESS), so the
run knows which ones the user gave: an option given but unused in the chosen
configuration is refused (resolution.unused_options), and `--temperature T`
without `--noise-model` selects the temperature model.
"""
from __future__ import annotations

import argparse
import re

from .config import BACKENDS, DEVICES, DTYPES, INTEGRATORS, NOISE_MODELS, ConfigError, SimulationConfig
from .problems import PROBLEMS
from .resolution import unused_options

CONFIG_FIELDS = ("problem", "spectrum", "dim", "condition", "spectrum_distribution", "integrator", "lr", "momentum",
                 "momentum_schedule", "dt", "damping", "noise", "noise_model", "temperature", "trajectories", "steps",
                 "record_every", "replicates", "seed", "init_theta_std", "init_velocity_std", "backend", "device",
                 "dtype", "diverge_factor", "ledger")


def float_list(text: str) -> list[float]:
    """Comma-separated numbers; an empty entry ("1,,2", "1,2,") is a mistake, not a skipped value."""
    items = text.split(",")
    try:
        if any(not x.strip() for x in items):
            raise ValueError
        return [float(x) for x in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def record_every(text: str):
    """K (an integer) or log:N, as SimulationConfig.record_every takes it."""
    return int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else text.strip()


def add_simulation_arguments(p: argparse.ArgumentParser) -> None:
    """The options of one simulation; shared by simulate and sweep."""
    d = SimulationConfig()

    def opt(name, help_="", **kw):
        default = getattr(d, name.lstrip("-").replace("-", "_"), None) if "dest" not in kw else getattr(d, kw["dest"])
        more = "" if default is None else f" (default {default})"
        p.add_argument(name, default=argparse.SUPPRESS, help=(help_ + more).strip(), **kw)

    opt("--problem", f"one of {', '.join(PROBLEMS)}")
    opt("--spectrum", "eigenvalues of the quadratic, e.g. 0.5,1,4", type=float_list)
    opt("--dim", "dimension (quadratic with --condition, double-well, rosenbrock)", type=int)
    opt("--condition", "quadratic with log-spaced eigenvalues 1/condition..1 (needs --dim)", type=float)
    opt("--spectrum-dist", "per-trajectory eigenvalues: uniform:A,B | loguniform:A,B | lognormal:M,S",
        dest="spectrum_distribution")
    opt("--integrator", f"one of {', '.join(INTEGRATORS)}")
    opt("--lr", "heavy-ball learning rate", type=float)
    opt("--momentum", "heavy-ball momentum in [0, 1]", type=float)
    opt("--momentum-schedule", "constant | nesterov:R (mu_k = k/(k+R))")
    opt("--dt", "step h of the continuous-time integrators", type=float)
    opt("--damping", "damping gamma of the continuous-time integrators", type=float)
    opt("--noise", "gradient-noise std (heavy ball) or sigma (continuous)", type=float)
    opt("--noise-model", f"one of {', '.join(NOISE_MODELS)}; --temperature alone selects temperature")
    opt("--temperature", "T of the temperature noise model", type=float)
    opt("--trajectories", type=int)
    opt("--steps", type=int)
    opt("--record-every", "K (steps 0, K, 2K, ... and the last) or log:N (about N steps per decade)",
        type=record_every)
    opt("--replicates", "batch-means blocks for standard errors", type=int)
    opt("--seed", type=int)
    opt("--init-theta-std", type=float)
    opt("--init-velocity-std", type=float)
    opt("--backend", f"one of {', '.join(BACKENDS)}")
    opt("--device", f"one of {', '.join(DEVICES)}")
    opt("--dtype", f"one of {', '.join(DTYPES)}")
    opt("--diverge-factor", "a trajectory diverges when its inertia exceeds this multiple of the run's energy scale",
        type=float)
    p.add_argument("--ledger", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help=f"report the inertia ledger: energy dissipated by friction, injected by noise, and the "
                        f"residual (default {'on' if d.ledger else 'off'})")


def config_from_args(args: argparse.Namespace, also_given: tuple[str, ...] = ()):
    """The resolved run of the options given; ConfigError for a bad or unused one."""
    given = {k for k in CONFIG_FIELDS if hasattr(args, k)} | set(also_given)
    kw = {k: getattr(args, k) for k in CONFIG_FIELDS if hasattr(args, k)}
    if "temperature" in given and "noise_model" not in given:
        kw["noise_model"] = "temperature"
    run = SimulationConfig(**kw).validate()
    unused = unused_options(run, given)
    if unused:
        raise ConfigError(unused)
    return run


def join_negative_values(argv: list[str]) -> list[str]:
    """`--spectrum -1,2` as `--spectrum=-1,2`: argparse would read -1,2 as an option and say
    "expected one argument"; joined, the value reaches its own check and a clear message."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and "=" not in tok and i + 1 < len(argv) \
                and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out
