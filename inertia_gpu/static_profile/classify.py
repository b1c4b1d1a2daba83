"""Which pipe an instruction occupies, and which part of the work it belongs to.

Pipes come from the opcode (hardware.py has their rates). The part of the work (rng, normal,
dynamics, statistics, control) comes from the `-gi` inline chain: the innermost location that
decides wins. Triton's Philox (triton/language/random.py) and lines calling `philox` are rng; the
rest of kernels/philox.py is the normal transform; in the kernel files, the name of the function
that holds the line decides through the keyword table below (word parts of the name). Lines in
functions that serve several parts (loss, reductions, shifts) defer to their caller; when no caller
decides, a weaker table names the part such a helper mostly serves (reductions: statistics).
Branches, convergence barriers and whatever no rule claims are control.
"""
from __future__ import annotations

import ast
import functools
import os
import threading

from .sass import Instruction

CATEGORIES = ("rng", "normal", "dynamics", "statistics", "control")

PIPES = {
    "fp32": {"FADD", "FMUL", "FFMA", "FADD32I", "FMUL32I", "FFMA32I", "FSWZADD", "HADD2", "HMUL2", "HFMA2",
             "HADD2_32I", "HMUL2_32I", "HFMA2_32I"},
    "alu": {"IADD3", "IADD", "IADD32I", "LOP3", "LOP", "LOP32I", "SHF", "SHL", "SHR", "ISETP", "FSETP", "HSETP2",
            "SEL", "FSEL", "LEA", "PRMT", "MOV", "MOV32I", "IMNMX", "VIMNMX", "FMNMX", "IABS", "P2R", "R2P",
            "PLOP3", "PSETP", "ISCADD", "BMSK", "SGXT", "FLO", "POPC", "BREV", "VIADD", "I2FP", "F2FP", "CS2R",
            "FCHK", "LEPC", "VABSDIFF", "VIADDMNMX", "IADD3.X", "HMNMX2"},
    "imad": {"IMAD", "IMUL", "IMADSP", "IDP", "IMAD32I", "IMUL32I", "IDP4A", "IMNMX3"},
    "fp64": {"DADD", "DMUL", "DFMA", "DSETP", "DMNMX", "DADD32I"},
    "mufu": {"MUFU"},
    "conversion": {"F2F", "F2I", "I2F", "FRND", "I2I", "F2IP"},
    "shfl": {"SHFL"},
    "shared": {"LDS", "STS", "LDSM", "ATOMS", "STSM"},
    "lsu": {"LDG", "STG", "LDL", "STL", "LD", "ST", "ATOMG", "ATOM", "RED", "LDGSTS"},
}
_PIPE_OF = {op: pipe for pipe, ops in PIPES.items() for op in ops}
CONTROL_OPCODES = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BSSY", "BSYNC", "BREAK", "WARPSYNC", "NOP",
                   "YIELD", "BPT", "KILL"}

# word parts of kernel function names -> part of the work (first match along the chain wins)
KEYWORDS = {
    "statistics": {"record", "observe", "observables", "store", "sums", "stats", "statistics", "passage",
                   "partials", "tally", "moments", "accumulate", "reduce", "fold"},
    "dynamics": {"advance", "grad", "gradient", "ou", "kick", "drift", "force", "integrate", "dynamics", "noise",
                 "update", "momentum", "heavy", "leapfrog", "euler", "baoab"},
}


# when the chain ends undecided (triton 3.6 drops the inline chain of some lines, tl.sum's among them):
# the part a shared helper (or triton's own reduction) mostly serves, by the word parts of its name
WEAK_KEYWORDS = {"statistics": {"sum", "tree", "group", "reduction", "reduce", "combine", "loss"},
                 "dynamics": {"shift", "expm1"}}


def pipe(ins: Instruction) -> str | None:
    """The pipe (rate-limited unit) of one instruction; None for the issue-only ones (branches, uniform
    datapath, constants, special registers)."""
    if ins.base == "IMAD" and ".MOV" in ins.opcode:
        return "imad"  # a move through the FMA-heavy pipe is still an IMAD
    return _PIPE_OF.get(ins.base)


def shared_wavefronts(ins: Instruction) -> int:
    """Wavefronts of a shared-memory access without bank conflicts: 128 bytes per wavefront."""
    bits = access_bits(ins)
    return max(1, bits * WARP_LANES // 1024)


WARP_LANES = 32


def access_bits(ins: Instruction) -> int:
    """Width of one lane's memory access: .64 / .128 suffixes, .U8/.S16 narrower, else 32."""
    parts = set(ins.opcode.split(".")[1:])
    for bits in (128, 64):
        if str(bits) in parts:
            return bits
    if parts & {"U8", "S8"}:
        return 8
    if parts & {"U16", "S16"}:
        return 16
    return 32


def category(ins: Instruction) -> str:
    """rng | normal | dynamics | statistics | control."""
    if ins.base in CONTROL_OPCODES:
        return "control"
    for keywords in (KEYWORDS, WEAK_KEYWORDS):
        for loc in ins.chain:
            found = _category_of_location(loc.file, loc.line, keywords)
            if found:
                return found
    return "control"


def _category_of_location(path: str, line: int, keywords: dict) -> str | None:
    return _category_cached(path, line, keywords is WEAK_KEYWORDS)


@functools.lru_cache(maxsize=8192)
def _category_cached(path: str, line: int, weak: bool) -> str | None:
    keywords = WEAK_KEYWORDS if weak else KEYWORDS
    name = os.path.basename(path)
    if path.replace(os.sep, "/").endswith("triton/language/random.py"):
        return "rng"
    if "/triton/language/" in path.replace(os.sep, "/") and not weak:
        return None  # triton's own helpers (tl.sum, math): the caller decides (not "/triton/": a checkout may be
        # named so)
    if name == "philox.py":
        return "rng" if "philox(" in _source_line(path, line) else "normal"
    func = _function_at(path, line)
    words = func.strip("_").lower().split("_") if func else []
    for part, keys in keywords.items():
        if any(_matches(word, key) for word in words for key in keys):
            return part
    return None


def _matches(word: str, key: str) -> bool:
    """'observe64' matches 'observe'; keys of three letters or fewer ('ou') match whole words only."""
    return word == key or (len(key) > 3 and word.startswith(key))


# CPython 3.11's AST constructor is not safe in two threads at once ("SystemError: AST constructor
# recursion depth mismatch"); profiles run side by side in threads parse kernel sources here
_AST_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _functions(path: str) -> tuple:
    try:
        with _AST_LOCK:
            tree = ast.parse(open(path).read())
    except (OSError, SyntaxError):
        return ()
    spans = [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree)
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return tuple(sorted(spans, key=lambda s: s[1] - s[0]))  # innermost (shortest) first


def _function_at(path: str, line: int) -> str | None:
    for first, last, name in _functions(path):
        if first <= line <= last:
            return name
    return None


@functools.lru_cache(maxsize=4096)
def _source_line(path: str, line: int) -> str:
    try:
        with open(path) as fh:
            return fh.read().splitlines()[line - 1]
    except (OSError, IndexError):
        return ""
