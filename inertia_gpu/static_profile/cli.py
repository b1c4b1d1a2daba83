"""`inertia-gpu bench --static`: the options and the command."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    """The --static options of the bench subcommand (--json is bench's own)."""
    parser.add_argument("--static", action="store_true",
                        help="predict the GPU kernels' throughput from their SASS (no GPU, no CUDA toolkit needed)")
    parser.add_argument("--arch", default="sm_90", help="with --static: sm_80 (A100) | sm_90 (H200) | sm_100 (B200)")
    parser.add_argument("--sass-dir", default=None, help="with --static: keep each variant's cubin and SASS here")
    parser.add_argument("--variants", default=None,
                        help="with --static: comma-separated variant names (default: all)")
    parser.add_argument("--compile-timeout", type=float, default=120.0,
                        help="with --static: seconds one variant may take to compile (default 120)")


def run(args) -> int:
    from ..config import ConfigError as UsageError  # one line, exit 2 (also under python -m inertia_gpu.cli)
    from .hardware import GPUS
    from .variants import ENSEMBLE, OPTIMIZER, by_name
    if args.arch not in GPUS:
        raise UsageError(f"--arch: allowed {', '.join(GPUS)}; got {args.arch!r}")
    try:
        variants = by_name([v.strip() for v in args.variants.split(",")]) if args.variants else ENSEMBLE + OPTIMIZER
    except KeyError as exc:
        raise UsageError(f"--variants: {exc.args[0]}") from None
    from .profile import run_profile
    from .table import print_profile
    from .toolchain import ToolchainMissing
    try:
        result = run_profile(args.arch, variants, args.compile_timeout, args.sass_dir)
    except ToolchainMissing as exc:
        raise UsageError(f"--static: {exc}") from None
    print_profile(result)
    path = getattr(args, "json", None)  # bench's own --json
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
    return 0
