"""The kernels' own copies of the switch codes and layout constants agree with inertia_gpu/spec.py.

Kernel sources import nothing of the library, so each keeps named copies of the
numbers it tests. This file reads those copies from the source text (without
importing the kernels: no numba, triton or CUDA needed) and checks each against
spec.py. A copy may be spelled NAME, IG_NAME, <ENUM>_NAME or IG_<ENUM>_NAME;
switch tables in docstrings/comments ("integrator  0 heavy-ball, 1 euler, ...")
are checked too, so documentation cannot drift from the numbers.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from inertia_gpu import spec

ROOT = Path(__file__).resolve().parents[1]
TRITON = ROOT / "kernels" / "ensemble.py"
NUMBA = ROOT / "kernels" / "cpu_ensemble.py"
CUDA = ROOT / "kernels" / "cuda" / "ensemble.cu"
PHILOX_CUH = ROOT / "kernels" / "cuda" / "philox.cuh"

ENUMS = {"PROBLEM": spec.Problem, "INTEGRATOR": spec.Integrator, "SCHEDULE": spec.Schedule,
         "NOISE_MODEL": spec.NoiseModel, "SPECTRUM": spec.SpectrumDist}
ENUM_ALIASES = {"PROBLEM": ("PROBLEM",), "INTEGRATOR": ("INTEGRATOR",), "SCHEDULE": ("SCHEDULE",),
                "NOISE_MODEL": ("NOISE_MODEL", "NOISE"), "SPECTRUM": ("SPECTRUM", "DRAWN_SPECTRUM", "SPECTRUM_DIST")}
LAYOUT = {"GROUP": spec.GROUP, "N_QUANTITIES": spec.N_QUANTITIES, "TAG_STEP": spec.TAG_STEP,
          "TAG_INIT": spec.TAG_INIT, "TAG_SPECTRUM": spec.TAG_SPECTRUM, "TAG_OPTIMIZER": spec.TAG_OPTIMIZER,
          **{f"FRACTION_{i}": f for i, f in enumerate(spec.FRACTIONS)},
          "N_COLUMNS": spec.N_COLUMNS, **{f"COL_{name.upper()}": spec.COLUMNS.index(name) for name in spec.LEDGER}}
LAYOUT_ALIASES = {"N_QUANTITIES": ("NQ",), "N_COLUMNS": ("NC",),
                  **{f"COL_{name.upper()}": (f"COLUMN_{name.upper()}", f"Q_{name.upper()}") for name in spec.LEDGER}}


# --- reading the copies ----------------------------------------------------------------------

def _python_constants(path: Path) -> dict[str, float]:
    """Module-level `NAME = 3`, `NAME: tl.constexpr = tl.constexpr(3)` (any call of one literal)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords:
            value = value.args[0]
        try:
            number = ast.literal_eval(value)
        except ValueError:
            continue
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            out[target.id] = number
    return out


def _c_constants(*paths: Path) -> dict[str, float]:
    """`#define NAME 3` / `3u` / `0.5` whose value is a plain number."""
    out = {}
    for path in paths:
        for m in re.finditer(r"^\s*#define\s+(\w+)\s+([-+0-9.eE]+)[uUlLfF]*\s*(?://.*)?$", path.read_text(), re.M):
            text = m.group(2)
            out[m.group(1)] = float(text) if any(c in text for c in ".eE") else int(text)
    return out


def _candidates(member_name: str, enum_key: str) -> list[str]:
    names = [member_name]
    names += [f"{alias}_{member_name}" for alias in ENUM_ALIASES[enum_key]]
    return names + [f"IG_{n}" for n in names]


def _layout_candidates(key: str) -> list[str]:
    names = [key, *LAYOUT_ALIASES.get(key, ())]
    return names + [f"IG_{n}" for n in names]


def _find(constants: dict, names: list[str]):
    hits = {n: constants[n] for n in names if n in constants}
    if len({v for v in hits.values()}) > 1:
        raise AssertionError(f"contradicting copies {hits}")
    return next(iter(hits.items()), (None, None))


def _switch_tables(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """Lines documenting a switch: '<switch> 0 quadratic, 1 double-well, ...' -> (switch, [(0, 'quadratic'), ...])."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\W*(problem|integrator|schedule|noise_model|noise model|drawn_spectrum)\s+(\d.*)$",
                     line.strip(), re.I)
        if not m:
            continue
        pairs = [(int(k), w.lower()) for k, w in re.findall(r"(\d+)\s+([A-Za-z][A-Za-z-]*)", m.group(2))]
        if len(pairs) >= 2:
            out.append((m.group(1).lower().replace(" ", "_"), pairs))
    return out


# --- the checks ---------------------------------------------------------------------------------

SOURCES = {
    # source: (constants, enums that must have named copies, layout keys that must have copies)
    "triton": (TRITON, lambda: _python_constants(TRITON), ("PROBLEM", "INTEGRATOR", "SCHEDULE", "NOISE_MODEL"),
               ("GROUP", "N_QUANTITIES", "FRACTION_0", "FRACTION_1", "FRACTION_2", "TAG_STEP", "TAG_INIT",
                "TAG_SPECTRUM")),
    "numba": (NUMBA, lambda: _python_constants(NUMBA), (), ("GROUP", "N_QUANTITIES", "N_COLUMNS", "COL_DISSIPATED",
                                                            "COL_INJECTED", "COL_RESIDUAL")),
    "cuda": (CUDA, lambda: _c_constants(CUDA, PHILOX_CUH), ("PROBLEM", "INTEGRATOR", "SCHEDULE", "NOISE_MODEL"),
             ("GROUP", "N_QUANTITIES", "FRACTION_0", "FRACTION_1", "FRACTION_2", "TAG_STEP", "TAG_INIT",
              "TAG_SPECTRUM", "TAG_OPTIMIZER")),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_named_switch_codes_agree_with_spec(source):
    path, read, required, _ = SOURCES[source]
    constants = read()
    rel = path.relative_to(ROOT)
    problems = []
    for key, enum in ENUMS.items():
        for member in enum:
            name, value = _find(constants, _candidates(member.name, key))
            if name is None:
                if key in required:
                    problems.append(f"{rel}: no copy of spec.{enum.__name__}.{member.name} "
                                    f"(looked for {', '.join(_candidates(member.name, key))})")
            elif value != int(member):
                problems.append(f"{rel}: {name} = {value}, but spec.{enum.__name__}.{member.name} = {int(member)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_layout_constants_agree_with_spec(source):
    path, read, _, required = SOURCES[source]
    constants = read()
    rel = path.relative_to(ROOT)
    problems = []
    for key, expected in LAYOUT.items():
        name, value = _find(constants, _layout_candidates(key))
        if name is None:
            if key in required:
                problems.append(f"{rel}: no copy of spec.{key} (looked for {', '.join(_layout_candidates(key))})")
        elif value != expected:
            problems.append(f"{rel}: {name} = {value!r}, but spec says {expected!r}")
    assert not problems, "\n".join(problems)


SWITCH_ENUMS = {"problem": spec.Problem, "integrator": spec.Integrator, "schedule": spec.Schedule,
                "noise_model": spec.NoiseModel, "drawn_spectrum": spec.SpectrumDist}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_documented_switch_tables_agree_with_spec(source):
    path = SOURCES[source][0]
    problems = []
    for switch, pairs in _switch_tables(path.read_text()):
        enum = SWITCH_ENUMS[switch]
        for code, word in pairs:
            options = {m.option for m in enum if int(m) == code}
            # a documented word may abbreviate ("rosenbrock" for chained rosenbrock, "fixed eigenvalues")
            if not options or not any(word.startswith(o) or o.startswith(word) for o in options):
                problems.append(f"{path.relative_to(ROOT)}: documents {switch} {code} as {word!r}, "
                                f"spec.{enum.__name__} says {sorted(options) or 'no such code'}")
    assert not problems, "\n".join(problems)


def test_numba_switches_are_declared_somewhere():
    """The numba kernel tests integers: its names or its documented table must cover every switch it reads."""
    constants = _python_constants(NUMBA)
    tables = {switch for switch, _ in _switch_tables(NUMBA.read_text())}
    for key, switch in (("PROBLEM", "problem"), ("INTEGRATOR", "integrator"), ("NOISE_MODEL", "noise_model")):
        enum = ENUMS[key]
        named = all(_find(constants, _candidates(m.name, key))[0] for m in enum)
        assert named or switch in tables, \
            f"kernels/cpu_ensemble.py declares neither named copies nor a documented table of spec.{enum.__name__}"


def test_launchers_take_switch_values_from_spec():
    """No launcher in the library keeps its own table of switch codes: spec.py is the one place."""
    pattern = re.compile(r"""["'](heavy-ball|leapfrog|baoab|euler|loss-scaled|double-well)["']\s*:\s*\d""")
    offenders = []
    for path in (ROOT / "inertia_gpu").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "switch codes declared outside spec.py:\n" + "\n".join(offenders)


def test_columns_extend_the_quantities():
    """The ledger columns follow the quantities, which keep their meaning and order."""
    assert spec.QUANTITIES == ("count", "inertia", "kinetic", "loss", "shadow_inertia", "inertia_sq")
    assert spec.LEDGER == ("dissipated", "injected", "residual")
    assert spec.COLUMNS == spec.QUANTITIES + spec.LEDGER and spec.N_COLUMNS == 9 == len(set(spec.COLUMNS))


def test_options_round_trip():
    for enum in (spec.Problem, spec.Integrator, spec.NoiseModel, spec.SpectrumDist):
        for member in enum:
            assert enum.from_option(member.option) is member
    assert spec.Schedule.from_option("nesterov:3") is spec.Schedule.NESTEROV
    assert spec.Schedule.from_option("constant") is spec.Schedule.CONSTANT
    with pytest.raises(KeyError):
        spec.Integrator.from_option("verlet")


def test_switches_of_a_config():
    from inertia_gpu.config import SimulationConfig
    cfg = SimulationConfig(integrator="baoab", noise_model="temperature", temperature=0.5, damping=1.0,
                           momentum_schedule="nesterov:2", spectrum_distribution="loguniform:0.1,1").validate()
    sw = spec.switches(cfg)
    assert sw == (spec.Problem.QUADRATIC, spec.Integrator.BAOAB, spec.Schedule.NESTEROV,
                  spec.NoiseModel.TEMPERATURE, spec.SpectrumDist.LOGUNIFORM, True)


def test_parsers_see_the_copies():
    """Guard the parsers themselves: a known copy in each source is found."""
    assert _python_constants(TRITON).get("GROUP") == 64
    assert _c_constants(CUDA).get("IG_EULER") == int(spec.Integrator.EULER)
    assert _c_constants(PHILOX_CUH).get("IG_TAG_INIT") == spec.TAG_INIT
    assert _switch_tables("    integrator  0 heavy-ball, 1 euler")[0] == ("integrator", [(0, "heavy-ball"), (1, "euler")])
