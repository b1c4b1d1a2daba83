"""`inertia-gpu`: simulate, demo, bench, sweep.

A user mistake never ends in a traceback: it prints one line naming the
option and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .config import BACKENDS, DEVICES, DTYPES, INTEGRATORS, NOISE_MODELS, ConfigError, SimulationConfig
from .problems import PROBLEMS

EXIT_USAGE = 2

# subcommands living in modules of their own: name -> (module, help)
SUBCOMMANDS = {
    "demo": ("inertia_gpu.demo", "the paper's synthetic experiment on the CPU in under a minute, as one figure"),
    "bench": ("inertia_gpu.bench", "kernel throughput against the device's ceilings and against peers"),
    "sweep": ("inertia_gpu.sweep", "a grid over momentum/damping, lr or noise in one scheduling pass"),
}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of usage + message."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UsageError(message)


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_simulation_arguments(p: argparse.ArgumentParser) -> None:
    """The options of one simulation; shared by simulate and sweep."""
    d = SimulationConfig()
    p.add_argument("--problem", default=d.problem, help=f"one of {', '.join(PROBLEMS)}")
    p.add_argument("--spectrum", type=_float_list, default=None, help="eigenvalues of the quadratic, e.g. 0.5,1,4")
    p.add_argument("--dim", type=int, default=None, help="dimension (quadratic with --condition, double-well, rosenbrock)")
    p.add_argument("--condition", type=float, default=None, help="quadratic with log-spaced eigenvalues 1/condition..1")
    p.add_argument("--spectrum-dist", dest="spectrum_distribution", default=None,
                   help="per-trajectory eigenvalues: uniform:A,B | loguniform:A,B | lognormal:M,S")
    p.add_argument("--integrator", default=d.integrator, help=f"one of {', '.join(INTEGRATORS)}")
    p.add_argument("--lr", type=float, default=d.lr, help="heavy-ball learning rate")
    p.add_argument("--momentum", type=float, default=d.momentum, help="heavy-ball momentum in [0, 1]")
    p.add_argument("--momentum-schedule", default=d.momentum_schedule, help="constant | nesterov:R (mu_k = k/(k+R))")
    p.add_argument("--dt", type=float, default=d.dt, help="step h of the continuous-time integrators")
    p.add_argument("--damping", type=float, default=d.damping, help="damping gamma of the continuous-time integrators")
    p.add_argument("--noise", type=float, default=d.noise, help="gradient-noise std (heavy ball) or sigma (continuous)")
    p.add_argument("--noise-model", default=d.noise_model, help=f"one of {', '.join(NOISE_MODELS)}")
    p.add_argument("--temperature", type=float, default=d.temperature, help="T of the temperature noise model")
    p.add_argument("--trajectories", type=int, default=d.trajectories)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--record-every", type=int, default=d.record_every)
    p.add_argument("--replicates", type=int, default=d.replicates, help="batch-means blocks for standard errors")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init-theta-std", type=float, default=d.init_theta_std)
    p.add_argument("--init-velocity-std", type=float, default=d.init_velocity_std)
    p.add_argument("--backend", default=d.backend, help=f"one of {', '.join(BACKENDS)}")
    p.add_argument("--device", default=d.device, help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--dtype", default=d.dtype, help=f"one of {', '.join(DTYPES)}")


CONFIG_FIELDS = ("problem", "spectrum", "dim", "condition", "spectrum_distribution", "integrator", "lr", "momentum",
                 "momentum_schedule", "dt", "damping", "noise", "noise_model", "temperature", "trajectories", "steps",
                 "record_every", "replicates", "seed", "init_theta_std", "init_velocity_std", "backend", "device", "dtype")


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    return SimulationConfig(**{k: getattr(args, k) for k in CONFIG_FIELDS}).validate()


def build_parser() -> Parser:
    parser = Parser(prog="inertia-gpu", description="Computational inertia of learning dynamics, on GPUs.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sim = sub.add_parser("simulate", help="integrate an ensemble of toy trajectories and report inertia statistics")
    add_simulation_arguments(sim)
    sim.add_argument("--json", default=None, help="write the statistics (and theory) to this JSON file")
    sim.add_argument("--plot", default=None, help="write a figure of E[I] against theory to this PNG")
    sim.add_argument("--quiet", action="store_true", help="no progress bar or table")
    sim.add_argument("--distributed", action="store_true",
                     help="under torchrun: shard replicates across ranks (NCCL on cuda, gloo on cpu); rank 0 writes")
    sim.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save progress to PATH and resume from it when it exists (same options)")
    sim.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="steps between checkpoints (default: one per step window)")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError:
            p.set_defaults(unavailable=module)
        if name == "bench":
            from .static_profile.cli import add_arguments as add_static_arguments
            add_static_arguments(p)
    return parser


def run_simulate(args) -> int:
    from .engine import simulate
    from .report import print_summary, plot_result
    config = config_from_args(args)
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("--checkpoint-every: needs --checkpoint PATH")
    shard = None
    if args.distributed:
        from . import distributed
        shard = distributed.init(config.device)
    if args.checkpoint:
        import signal

        def _terminate(signum, frame):  # the last checkpoint stands; a rerun resumes from it
            raise SystemExit(f"inertia-gpu: terminated; rerun the same command to resume from {args.checkpoint}")
        signal.signal(signal.SIGTERM, _terminate)
    try:
        result = simulate(config, progress=not args.quiet and (shard is None or shard.is_main), shard=shard,
                          checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    finally:
        if shard is not None:
            distributed.finish()
    if shard is not None and not shard.is_main:
        return 0
    if args.json:
        result.write_json(args.json)
    if args.plot:
        plot_result(result, args.plot)
    if not args.quiet:
        print_summary(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .backends.base import BackendUnavailable
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if getattr(args, "unavailable", None):
            raise UsageError(f"{args.command}: not available in this installation ({args.unavailable} missing)")
        if args.command == "simulate":
            return run_simulate(args)
        if args.command == "bench" and getattr(args, "static", False):
            from .static_profile.cli import run as run_static
            return run_static(args)
        return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)
    except (UsageError, ConfigError, BackendUnavailable) as exc:
        print(f"inertia-gpu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("inertia-gpu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
