"""The static targets the kernels must meet (one table), and the check CI applies.

Keys are variant names (variants.py); a budget is a dict of limits on that variant's figures:
max_<field> / min_<field> bound a field of the profile entry; min_issue_over_hbm bounds the SGD
kernel's issue limit over its HBM limit. Every compiled variant must also not spill.
"""
from __future__ import annotations

BUDGETS = {
    "sm_90": {
        "d1-heavy-ball-noise-rec1": {"max_sass_per_trajectory_step": 100, "max_spill_bytes": 0,
                                     "min_warps_per_sm": 16, "min_pipe_limited_trajectory_steps_per_s": 3e11},
        "d1-heavy-ball-noise-rec10": {"max_sass_per_trajectory_step": 70, "max_spill_bytes": 0},
        "d8-heavy-ball-noise": {"max_sass_per_coordinate_step": 110, "max_spill_bytes": 0},
        "d1024-heavy-ball-noise": {"max_compile_s": 60},
        "sgd-float32-momentum-noise": {"min_widest_access_bits": 128, "min_warps_per_sm": 16, "max_registers": 128,
                                       "min_issue_over_hbm": 1.5, "max_spill_bytes": 0},
        "sgd-bfloat16-momentum-noise": {"min_widest_access_bits": 128, "min_warps_per_sm": 16, "max_registers": 128,
                                        "min_issue_over_hbm": 1.5, "max_spill_bytes": 0},
    },
}


def violations(entry: dict, budget: dict) -> list[str]:
    """What in one profile entry breaks its budget (empty: within budget)."""
    if "error" in entry:
        return [f"{entry['name']}: {entry['error']}"]
    out = []
    if entry.get("spill_bytes", 0) > 0:
        out.append(f"{entry['name']}: spills {entry['spill_bytes']} bytes per thread")
    for key, limit in budget.items():
        if key == "min_issue_over_hbm":
            ratio = entry["issue_limited_params_per_s"] / entry["hbm_limited_params_per_s"]
            if ratio < limit:
                out.append(f"{entry['name']}: issue limit / HBM limit = {ratio:.2f} < {limit}")
            continue
        bound, field = key.split("_", 1)
        value = entry[field]
        if (bound == "max" and value > limit) or (bound == "min" and value < limit):
            out.append(f"{entry['name']}: {field} = {value} ({bound} {limit})")
    return out
