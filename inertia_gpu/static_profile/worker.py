"""Compile one variant in a process of its own (so a slow compile can be stopped) and save the result.

    python -m inertia_gpu.static_profile.worker ARCH SPEC_JSON OUT_DIR

writes OUT_DIR/kernel.cubin and OUT_DIR/launch.json (kernel name, warps, shared memory,
constexprs, grid, the launcher's block and warps, ptxas's log, compile seconds).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path


def compile_variant(spec: dict, arch: int):
    from . import targets
    if spec["kind"] == "callable":  # any launching function: {"path": file.py, "function": name}
        return targets.compile_callable(spec["path"], spec["function"], arch)
    if spec["kind"] == "ensemble":
        return targets.compile_ensemble(spec["config"], arch, spec.get("passes", "fast"))
    c = spec["config"]
    return targets.compile_optimizer(c["dtype"], c["momentum"], c["noise"], arch)


def main(argv: list[str]) -> int:
    arch, spec, out = int(argv[0]), json.loads(argv[1]), Path(argv[2])
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):  # triton prints ptxas -v here
        launches, extra = compile_variant(spec, arch)
    seconds = time.perf_counter() - t0
    if not launches:
        raise RuntimeError("the launcher made no launch")
    # the ensemble launcher's first pass (SAFE = False) is what a run without divergence executes for all
    # whole blocks; the second (SAFE) pass runs only for flagged programs (the partial last block)
    first_pass = [launch for launch in launches if launch.constexprs.get("SAFE") is False]
    main_launch = max(first_pass or launches, key=lambda launch: len(launch.cubin))
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel.cubin").write_bytes(main_launch.cubin)
    record = {"name": main_launch.name, "num_warps": main_launch.num_warps, "shared": main_launch.shared,
              "constexprs": main_launch.constexprs, "grid": list(main_launch.grid), "launches": len(launches),
              "ptxas_log": log.getvalue()[-4000:], "compile_s": round(seconds, 2), **extra}
    (out / "launch.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
