"""From a compiled variant (cubin + launch record) to the figures the profile reports."""
from __future__ import annotations

import importlib
from collections import defaultdict

from . import classify, counting, sass, toolchain
from .hardware import WARP, Gpu, warps_per_sm

# steps one main-loop iteration advances, for kernels that do not say so themselves
# (kernels/ensemble.py walks the window "in quads of four steps": one Philox call per quad)
STEPS_PER_ITERATION = {"ensemble_kernel": 4}


def steps_per_iteration(kernel_name: str) -> int:
    """The kernel module's STEPS_PER_ITERATION when it defines one, else the table above."""
    module = importlib.import_module("inertia_gpu.kernels.ensemble")
    return int(getattr(module, "STEPS_PER_ITERATION", STEPS_PER_ITERATION.get(kernel_name, 1)))


def resources(g: Gpu, cubin: bytes, launch: dict) -> dict:
    usage = toolchain.resource_usage(cubin)
    spills = toolchain.ptxas_spills(launch.get("ptxas_log", ""))
    return {"registers": usage["registers"],
            "spill_bytes": spills if spills is not None else usage["local"],
            "stack_bytes": usage["stack"],
            "warps_per_sm": warps_per_sm(g, usage["registers"], launch["num_warps"], launch["shared"])}


def limits(g: Gpu, per_unit: float, per_unit_pipe: dict) -> dict:
    """Issue and pipe limits in units per second from instructions (per thread) per unit of work."""
    issue = g.warp_issue_per_s() * WARP / per_unit if per_unit else float("inf")
    pipes = {p: g.warp_issue_per_s() * g.rates[p] * WARP / n for p, n in per_unit_pipe.items() if n and p in g.rates}
    pipe_limited = min(pipes.values()) if pipes else float("inf")
    binding = min([("issue", issue)] + list(pipes.items()), key=lambda kv: kv[1])[0]
    return {"issue": issue, "pipes": pipes, "pipe_limited": pipe_limited, "binding": binding}


# global-memory accesses (local memory, LDL/STL, lives in DRAM too: spills are traffic)
MEMORY_OPCODES = {"LDG", "STG", "LD", "ST", "LDL", "STL", "ATOMG", "ATOM", "RED"}


def streamed_bytes(instrs, t) -> float:
    """Bytes one thread streams to and from memory per main-loop iteration for the state itself: every
    load and store of the loop at its width, per lane (each lane its own coordinates), except the
    recording (the record branches' stores and the recorded-step table reads that guard them, a few
    bytes per trajectory or group per recorded step) and libdevice's read-only .CONSTANT tables. Zero
    when the state lives in registers; the wide layout's row buffer (shifted problems) counts in full,
    as if every re-read between barriers reached HBM rather than L1/L2 (an upper bound)."""
    recording = {k for a, b in t.record_regions for k in range(a, b)} | set(t.record_table_loads)
    return sum(w * classify.access_bits(instrs[i]) / 8 for i, w in t.weights.items()
               if instrs[i].base in MEMORY_OPCODES and ".CONSTANT" not in instrs[i].opcode and i not in recording)


def ensemble_figures(g: Gpu, cubin: bytes, launch: dict, record_every: int, dim: int) -> dict:
    instrs = sass.parse(toolchain.disassemble(cubin))
    t = counting.tally(instrs, record_every)
    steps = steps_per_iteration(launch["name"]) if t.loop else 1
    threads = launch["num_warps"] * WARP
    units_per_thread = launch["block"] * steps / threads  # trajectory-steps per thread per iteration
    per_unit = t.total / units_per_thread
    lim = limits(g, per_unit, {p: n / units_per_thread for p, n in t.by_pipe.items()})
    bytes_per_coordinate_step = streamed_bytes(instrs, t) / (units_per_thread * dim)
    return {
        **resources(g, cubin, launch),
        "steps_per_iteration": steps,
        "sass_per_trajectory_step": round(per_unit, 2),
        "sass_per_coordinate_step": round(per_unit / dim, 2),
        "breakdown": {c: round(t.by_category.get(c, 0.0) / units_per_thread, 2) for c in classify.CATEGORIES},
        "pipes_per_trajectory_step": {p: round(n / units_per_thread, 2) for p, n in sorted(t.by_pipe.items())},
        "binding_pipe": lim["binding"],
        "issue_limited_trajectory_steps_per_s": _sig(lim["issue"]),
        "pipe_limited_trajectory_steps_per_s": _sig(lim["pipe_limited"]),
        "pipe_limits_trajectory_steps_per_s": {p: _sig(v) for p, v in sorted(lim["pipes"].items())},
        # the state's memory traffic in the main loop (streamed_bytes), and the rate HBM allows at that traffic
        "bytes_per_coordinate_step": round(bytes_per_coordinate_step, 3),
        "hbm_limited_coordinate_steps_per_s": (_sig(g.hbm_bytes_per_s / bytes_per_coordinate_step)
                                               if bytes_per_coordinate_step else None),
        "main_loop": _loop_text(t), "cold_instructions_left_out": t.cold, "nested_loops": t.nested_loops,
        # the branches that run only at recorded steps (counting.record_regions), weighted 1/record_every
        "record_branches": len(t.record_regions),
        "record_sass_per_recorded_step": round(t.record_instructions / units_per_thread, 2),
        "record_weighting": "record branch" if t.record_regions else ("statistics category (estimate)"
                                                                       if t.fallback else "none"),
        **({"warnings": [t.fallback]} if t.fallback else {}),
    }


def optimizer_figures(g: Gpu, cubin: bytes, launch: dict, element_bytes: int) -> dict:
    """Per parameter over one whole program: BLOCK elements; a main loop over TILE elements runs
    BLOCK / TILE times (when the kernel has both constexprs), the rest once."""
    instrs = sass.parse(toolchain.disassemble(cubin))
    weights = _program_weights(instrs, launch["constexprs"])
    threads = launch["num_warps"] * WARP
    params_per_thread = launch["constexprs"]["BLOCK"] / threads
    per_param = sum(weights.values()) / params_per_thread
    by_pipe = defaultdict(float)
    for i, w in weights.items():
        p = classify.pipe(instrs[i])
        if p:
            by_pipe[p] += w * (classify.shared_wavefronts(instrs[i]) if p == "shared" else 1)
    lim = limits(g, per_param, {p: n / params_per_thread for p, n in by_pipe.items()})
    bytes_per_param, widest = _element_traffic(instrs, weights, params_per_thread, element_bytes)
    return {
        **resources(g, cubin, launch),
        "block": launch["constexprs"]["BLOCK"], "num_warps": launch["num_warps"],
        "sass_per_param": round(per_param, 2),
        "bytes_per_param": round(bytes_per_param, 2),
        "widest_access_bits": widest,
        "binding_pipe": lim["binding"],
        "issue_limited_params_per_s": _sig(lim["issue"]),
        "pipe_limited_params_per_s": _sig(lim["pipe_limited"]),
        "hbm_limited_params_per_s": _sig(g.hbm_bytes_per_s / bytes_per_param) if bytes_per_param else None,
    }


def _program_weights(instrs, constexprs: dict) -> dict:
    """Instruction index -> executions per program (cold paths left out)."""
    cold = counting.cold_indices(instrs)
    loop = counting.main_loop(instrs, cold)
    trips = constexprs["BLOCK"] // constexprs["TILE"] if loop and constexprs.get("TILE") else 1
    inside = range(loop[0], loop[1] + 1) if loop else range(0)
    return {i: (trips if i in inside else 1) for i in range(len(instrs)) if i not in cold}


def _element_traffic(instrs, weights: dict, params_per_thread: float, element_bytes: int) -> tuple[float, int]:
    """(bytes per parameter, widest access in bits) of the per-element global loads and stores.

    A source line is per-element when its accesses move at least one element per parameter the thread
    owns; pointer-table and scalar loads (a few bytes per thread) and libdevice's read-only coefficient
    tables (LDG.CONSTANT, cached) are not traffic per parameter."""
    per_line: dict = defaultdict(lambda: [0, 0])  # line -> [bytes per thread, widest bits]
    for i, w in weights.items():
        ins = instrs[i]
        if ins.base in ("LDG", "STG") and ins.chain and ".CONSTANT" not in ins.opcode:  # not libdevice's tables
            bits = classify.access_bits(ins)
            entry = per_line[ins.chain[0]]
            entry[0] += w * bits // 8
            entry[1] = max(entry[1], bits)
    element_lines = [v for v in per_line.values() if v[0] >= params_per_thread * element_bytes]
    total = sum(v[0] for v in element_lines)
    return total / params_per_thread, max((v[1] for v in element_lines), default=0)


def _loop_text(t) -> str | None:
    return None if t.loop is None else f"0x{t.loop[0]:x}-0x{t.loop[1]:x}"


def _sig(x: float) -> float:
    return float(f"{x:.3g}")
