"""`inertia-gpu`: simulate, demo, bench, sweep.

A user mistake never ends in a traceback: it prints one line naming the
option and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .config import ConfigError
from .options import add_simulation_arguments, config_from_args, join_negative_values

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


def build_parser(command: str | None = None) -> Parser:
    """The parser; a subcommand module's own options are loaded only for `command` (None: every subcommand).

    bench, demo and sweep import torch or the theory; `simulate` must not pay for that.
    """
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
        if command is not None and name != command:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError:
            p.set_defaults(unavailable=module)
        if name == "bench":
            from .static_profile.cli import add_arguments as add_static_arguments
            add_static_arguments(p)
    return parser


def check_simulate_outputs(args) -> None:
    """Everything the run will write or need, checked before any work starts."""
    from .output import PLOT_FORMATS, check_path
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("--checkpoint-every: needs --checkpoint PATH")
    if args.json is not None:
        check_path("--json", args.json)
    if args.plot is not None:
        check_path("--plot", args.plot, PLOT_FORMATS)
    if args.checkpoint is not None:
        check_path("--checkpoint", args.checkpoint)
    if args.distributed and "WORLD_SIZE" not in os.environ:
        raise UsageError("--distributed: needs torchrun (WORLD_SIZE is not set); "
                         "run with torchrun --nproc-per-node N ... or leave it out")


def run_simulate(args) -> int:
    from .engine import simulate
    from .report import plot_result, print_summary
    config = config_from_args(args)
    check_simulate_outputs(args)
    shard = None
    if args.distributed:
        from . import distributed
        shard = distributed.init(config.device)
    previous_handler = None
    if args.checkpoint:
        import signal

        def _terminate(signum, frame):  # the last checkpoint stands; a rerun resumes from it
            raise SystemExit(f"inertia-gpu: terminated; rerun the same command to resume from {args.checkpoint}")
        previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = simulate(config, progress=not args.quiet and (shard is None or shard.is_main), shard=shard,
                          checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    finally:
        if previous_handler is not None:  # main() called in-process (tests, notebooks) leaves SIGTERM as it was
            signal.signal(signal.SIGTERM, previous_handler)
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
    argv = join_negative_values(sys.argv[1:] if argv is None else list(argv))
    # the top-level parser takes no option but -h: the first other word names the subcommand
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
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
