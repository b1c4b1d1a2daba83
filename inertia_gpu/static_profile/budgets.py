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
        # every dimension without spills: double well, Rosenbrock, float64
        "d5-double-well-noise": {"max_spill_bytes": 0},
        "d6-rosenbrock-noise": {"max_spill_bytes": 0},
        "d1-heavy-ball-noise-float64": {"max_spill_bytes": 0},
        "d1024-heavy-ball-noise": {"max_compile_s": 60},
        "sgd-float32-momentum-noise": {"min_widest_access_bits": 128, "min_warps_per_sm": 16, "max_registers": 128,
                                       "min_issue_over_hbm": 1.5, "max_spill_bytes": 0},
        "sgd-bfloat16-momentum-noise": {"min_widest_access_bits": 128, "min_warps_per_sm": 16, "max_registers": 128,
                                        "min_issue_over_hbm": 1.5, "max_spill_bytes": 0},
    },
}


# targets still missed on sm_90 (variant, budget key) -> where they stand: CI expects these to fail (xfail,
# reason printed) and enforces every other target; remove an entry once the kernel meets it
PENDING: dict = {"sm_90": {}}


def check(entry: dict, key: str, limit) -> str | None:
    """The violation of one budget key by one profile entry, or None."""
    if "error" in entry:
        return f"{entry['name']}: {entry['error']}"
    if key == "min_issue_over_hbm":
        ratio = entry["issue_limited_params_per_s"] / entry["hbm_limited_params_per_s"]
        return None if ratio >= limit else f"{entry['name']}: issue limit / HBM limit = {ratio:.2f} < {limit}"
    bound, field = key.split("_", 1)
    value = entry[field]
    if (bound == "max" and value > limit) or (bound == "min" and value < limit):
        return f"{entry['name']}: {field} = {value} ({bound} {limit})"
    return None


def violations(entry: dict, budget: dict) -> list[str]:
    """What in one profile entry breaks its budget (empty: within budget); any spill breaks every budget."""
    if "error" in entry:
        return [f"{entry['name']}: {entry['error']}"]
    out = []
    if entry.get("spill_bytes", 0) > 0 and "max_spill_bytes" not in budget:
        out.append(f"{entry['name']}: spills {entry['spill_bytes']} bytes per thread")
    return out + [v for v in (check(entry, key, limit) for key, limit in budget.items()) if v]
