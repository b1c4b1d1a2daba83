"""The kernel variants the static profile compiles: what runs actually use.

Ensemble variants are SimulationConfig fields (the launcher turns them into constexprs);
optimizer variants are (dtype, momentum, noise) of one InertiaSGD step.
"""
from __future__ import annotations

HEADLINE = {"problem": "quadratic", "spectrum": [1.0], "integrator": "heavy-ball", "noise": 0.1,
            "noise_model": "additive", "record_every": 1, "dtype": "float32"}
CONTINUOUS = {"dt": 0.1, "damping": 1.0}


def _e(name: str, passes: str = "fast", **changes) -> dict:
    fields = {**HEADLINE, **changes}
    if "dim" in changes and fields["problem"] == "quadratic":
        fields.pop("spectrum")
        fields["condition"] = 100.0
    if fields["integrator"] != "heavy-ball":
        fields = {**CONTINUOUS, **fields}
    # passes: "fast" profiles what whole blocks of a run without divergence execute (the launcher's first
    # pass); "safe" the second pass, which the partial last block and any block that saw divergence run
    return {"kind": "ensemble", "name": name, "config": fields, "passes": passes}


ENSEMBLE = [
    _e("d1-heavy-ball-noise-rec1"),
    _e("d1-heavy-ball-noise-rec10", record_every=10),
    # the same two without the inertia ledger (--no-ledger compiles its accumulation out): what the ledger costs
    _e("d1-heavy-ball-noise-rec1-no-ledger", ledger=False),
    _e("d1-heavy-ball-noise-rec10-no-ledger", record_every=10, ledger=False),
    # the divergence-handling pass (the partial last block, and blocks in which a trajectory diverged)
    _e("d1-heavy-ball-noise-rec1-safe-pass", passes="safe"),
    _e("d1-heavy-ball-noise-free", noise=0.0),
    _e("d1-heavy-ball-noise-float64", dtype="float64"),
    _e("d8-heavy-ball-noise", dim=8),
    _e("d64-heavy-ball-noise", dim=64),
    _e("d1024-heavy-ball-noise", dim=1024),
    _e("d1-euler-noise", integrator="euler"),
    _e("d1-leapfrog-noise", integrator="leapfrog"),
    _e("d1-baoab-noise", integrator="baoab"),
    _e("d1-heavy-ball-temperature", noise_model="temperature", noise=0.0, temperature=0.1),
    _e("d1-heavy-ball-loss-scaled", noise_model="loss-scaled"),
    _e("d5-double-well-noise", problem="double-well", dim=5, spectrum=None),
    _e("d6-rosenbrock-noise", problem="rosenbrock", dim=6, spectrum=None),
    # the wide layout with the state's shifts through memory (bytes per coordinate-step against HBM)
    _e("d1024-rosenbrock-noise", problem="rosenbrock", dim=1024, spectrum=None),
]

OPTIMIZER = [{"kind": "optimizer", "name": f"sgd-{dtype}{'-momentum' if m else ''}{'-noise' if n else ''}",
              "config": {"dtype": dtype, "momentum": m, "noise": n}}
             for dtype in ("float32", "bfloat16", "float64") for m in (True, False) for n in (True, False)]

# the few variants CI compiles (tests/test_static_profile.py)
# (every variant with a budget: a minute or two of compiling on two cores)
KEY = ("d1-heavy-ball-noise-rec1", "d1-heavy-ball-noise-rec10", "d8-heavy-ball-noise", "d1024-heavy-ball-noise",
       "d5-double-well-noise", "d6-rosenbrock-noise", "d1-heavy-ball-noise-float64",
       "sgd-float32-momentum-noise", "sgd-bfloat16-momentum-noise")


def by_name(names) -> list[dict]:
    table = {v["name"]: v for v in ENSEMBLE + OPTIMIZER}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise KeyError(f"unknown variants {unknown}; known: {', '.join(table)}")
    return [table[n] for n in names]
