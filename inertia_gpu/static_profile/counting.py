"""What one iteration of a kernel's main loop executes, from its SASS.

The method: the main loop is the back-branch with the largest span (conditional back-branches
first: an unconditional jump back is usually out-of-line code rejoining). Inside it every
instruction issues once per iteration, predicated or not, except
  - provably cold paths, left out: libdevice's Payne-Hanek reduction in sinf/cosf, entered only when
    |x| >= 105615 (a compare with that immediate guards a forward branch over it), and the call of
    the double version's slow-path subroutine (|x| >= 2^31); subroutines placed after the kernel are
    not part of it (sass.parse);
  - recording code, weighted by 1 / record_every (see record_regions);
  - nested loops other than cold ones, counted once and reported (their trip count is not static).
A kernel without a loop is counted whole (minus cold paths).

Recording code. The ensemble kernel records when the recorded-step table says so (`row =
tl.load(rec_ptr + k); if row >= 0: record`), never by n % record_every, so the code that runs only at
recorded steps is the body of a forward branch taken when that row is negative. record_regions finds it
in the SASS by data flow, not by source lines: a forward conditional BRA inside the loop whose guard
predicate was last set by a signed compare of a register against 0 (`ISETP.GE r, RZ`, `ISETP.GT r, -0x1`,
or their negations, not combined with another predicate), that register last written by a global load
(LDG, not a read-only .CONSTANT table: the table row), the branch taken when the row is negative, and the
skipped instructions holding statistics work (classify.category). Everything it skips runs once per
recorded step: weight 1 / record_every per trajectory-step (a window of S steps records S / record_every
of them); the load, the compare and the branch run every step (weight 1), and so does any statistics
work the compiler hoisted out of the branch. When record_every > 1 and no such branch is found although
the loop holds statistics work, the counter falls back to weighting the instructions classified as
statistics by 1 / record_every and says so (Tally.fallback, a warning, the profile's `warnings`): the
figure is then an estimate, not the exact count.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

from .classify import category, pipe, shared_wavefronts
from .sass import Instruction

PAYNE_HANEK_THRESHOLD = "105615"  # libdevice sinf/cosf: |x| >= 105615 takes the slow reduction
PAYNE_HANEK_THRESHOLD_F64 = "2.14748364800000000000e+09"  # sin/cos in double: |x| >= 2^31
SLOW_PATH_CALL = "trig_reduction_slowpath"  # the double version's slow path is a subroutine


@dataclass
class Tally:
    """Weighted instruction counts of one loop iteration (per thread, i.e. per warp-instruction)."""

    loop: tuple[int, int] | None  # (first, last) address of the main loop; None: whole kernel
    total: float = 0.0
    by_category: Counter = field(default_factory=Counter)
    by_pipe: Counter = field(default_factory=Counter)  # shared counts wavefronts
    by_opcode: Counter = field(default_factory=Counter)
    cold: int = 0  # instructions left out
    counted: list = field(default_factory=list)  # indices of the instructions counted
    weights: dict = field(default_factory=dict)  # index -> executions per iteration (1, or 1/record_every)
    nested_loops: int = 0
    record_regions: list = field(default_factory=list)  # [(first, end)) index ranges run only when recording
    record_instructions: int = 0  # instructions inside them (weighted 1 / record_every each)
    record_table_loads: list = field(default_factory=list)  # indices of the table reads that guard them
    fallback: str | None = None  # why recording was weighted by category instead (an estimate), if it was


def main_loop(instrs: list[Instruction], cold: set[int] = frozenset()) -> tuple[int, int] | None:
    """(first index, last index) of the main loop (ignoring loops inside cold paths), or None."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    best = None
    for conditional in (True, False):
        for i, ins in enumerate(instrs):
            if ins.base != "BRA" or ins.target is None or ins.target >= ins.addr or i in cold:
                continue
            if bool(ins.predicate) != conditional:
                continue
            first = index[ins.target]
            if best is None or i - first > best[1] - best[0]:
                best = (first, i)
        if best is not None:
            return best
    return None


SLOW_PATH_MAX = 160  # instructions: the Payne-Hanek block is ~50-100; guard regions around whole steps are larger


def cold_indices(instrs: list[Instruction]) -> set[int]:
    """Indices of libdevice's Payne-Hanek slow paths (sinf/cosf for |x| >= 105615, sin/cos for |x| >= 2^31).

    A forward conditional branch jumps over one when either its predicate is the compare against
    105615 itself (taken when |x| is small), or, when the compiler saved that predicate in a register
    bit and restores it in one of several ways, the region it jumps over is small (SLOW_PATH_MAX) and
    holds the reduction's loop over the 2/pi table (a back-branch around an LDG.E.CONSTANT) or the
    call of the double version's slow-path subroutine, in a kernel that compares against a threshold."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    guarded = any(_is_threshold(ins) for ins in instrs)
    cold: set[int] = set()
    for i, ins in enumerate(instrs):
        if not guarded or ins.base != "BRA" or not ins.predicate or ins.target is None or ins.target <= ins.addr:
            continue
        end = index[ins.target]
        setter = _threshold_compare(instrs, i, ins.predicate.lstrip("@!"))
        if setter is not None:
            large_when_true = any(m in setter.opcode for m in (".GE", ".GT"))
            if ins.predicate.startswith("@!") == large_when_true:  # taken when |x| is small
                cold.update(range(i + 1, end))
        elif end - i <= SLOW_PATH_MAX and (_has_table_loop(instrs, i + 1, end, index)
                                          or any(SLOW_PATH_CALL in x.operands for x in instrs[i + 1:end])):
            cold.update(range(i + 1, end))
    return cold


def _has_table_loop(instrs: list[Instruction], first: int, end: int, index: dict) -> bool:
    for j in range(first, end):
        ins = instrs[j]
        if ins.base == "BRA" and ins.target is not None and ins.target < ins.addr:
            k = index[ins.target]
            if k >= first and any(x.base == "LDG" and ".CONSTANT" in x.opcode for x in instrs[k:j]):
                return True
    return False


def _threshold_compare(instrs: list[Instruction], i: int, reg: str) -> Instruction | None:
    """The FSETP against 105615 that predicate `reg` holds at instruction i, if it holds one."""
    j, setter = _last_setter(instrs, i, reg)
    if setter is None:
        return None
    if setter.base in ("FSETP", "DSETP"):
        return setter if _is_threshold(setter) else None
    ops = [o.strip() for o in setter.operands.split(",")]
    if setter.opcode.startswith("ISETP.NE") and len(ops) > 3 and ops[3] == "RZ":
        saved = _predicate_saved_in(instrs, j, ops[2])
        if saved:
            _, compare = _last_setter(instrs, saved[0], saved[1])
            if compare is not None and _is_threshold(compare):
                return compare
    return None


def _is_threshold(ins: Instruction) -> bool:
    """A compare of |x| against the slow-path threshold of sinf/cosf (105615) or sin/cos (2^31)."""
    return ((ins.base == "FSETP" and PAYNE_HANEK_THRESHOLD in ins.operands)
            or (ins.base == "DSETP" and PAYNE_HANEK_THRESHOLD_F64 in ins.operands))


def _predicate_saved_in(instrs, j: int, register: str):
    """(index, 'Pn') of the P2R that wrote one predicate bit into `register` before j."""
    for k in range(j - 1, max(-1, j - 2000), -1):
        ops = [o.strip() for o in instrs[k].operands.split(",")]
        if ops and ops[0] == register:
            if instrs[k].base != "P2R" or len(ops) < 4:
                return None
            mask = int(ops[3], 16)
            if mask & (mask - 1):
                return None
            return k, f"P{mask.bit_length() - 1}"
    return None


def _last_setter(instrs: list[Instruction], i: int, reg: str):
    for j in range(i - 1, max(-1, i - 2000), -1):
        ops = instrs[j].operands.split(",")
        if instrs[j].base.endswith("SETP") and ops and ops[0].strip() == reg:
            return j, instrs[j]
    return None, None


_SIGN_TESTS = {("GE", "RZ"): True, ("GT", "-0x1"): True, ("LT", "RZ"): False, ("LE", "-0x1"): False}
_REVERSED = {"GE": "LE", "GT": "LT", "LT": "GT", "LE": "GE"}
_NOT_WRITES = {"STG", "ST", "STS", "STL", "RED", "BRA", "BSSY", "BSYNC", "EXIT", "CALL", "RET"}


def _sign_test(setter: Instruction) -> tuple[str, bool] | None:
    """(register, true when the register is >= 0) of a plain signed compare against 0, else None."""
    parts = setter.opcode.split(".")
    ops = [o.strip() for o in setter.operands.split(",")]
    if parts[0] != "ISETP" or "U32" in parts or "EX" in parts or len(ops) != 5 or ops[1] != "PT" or ops[4] != "PT":
        return None
    op, a, b = parts[1], ops[2], ops[3]
    if a in ("RZ", "-0x1"):  # constant first: swap the operands and the comparison
        op, a, b = _REVERSED.get(op), b, a
    sense = _SIGN_TESTS.get((op, b))
    return None if sense is None or not a.startswith("R") else (a.split(".")[0], sense)


def _last_writer(instrs: list[Instruction], i: int, register: str, first: int):
    """(index, instruction) of the last write of `register` in [first, i), else (None, None)."""
    for j in range(i - 1, first - 1, -1):
        ins = instrs[j]
        ops = ins.operands.split(",")
        if ins.base not in _NOT_WRITES and ops and ops[0].strip() == register:
            return j, ins
    return None, None


def record_regions(instrs: list[Instruction], first: int, last: int, cold: set[int] = frozenset()) -> list:
    """[(first, end)) index ranges in instrs[first..last] that run only at recorded steps (module docstring)."""
    return [(a, b) for a, b, _ in record_branches(instrs, first, last, cold)]


def record_branches(instrs: list[Instruction], first: int, last: int, cold: set[int] = frozenset()) -> list:
    """[(first, end, index of the table load)] of the record branches in instrs[first..last]."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    regions = []
    for i in range(first, last + 1):
        ins = instrs[i]
        if ins.base != "BRA" or not ins.predicate or ins.target is None or ins.target <= ins.addr or i in cold:
            continue
        end = index[ins.target]
        if end > last + 1 or any(a <= i < b for a, b, _ in regions):
            continue
        j, setter = _last_setter(instrs, i, ins.predicate.lstrip("@!"))
        if setter is None or j < first:
            continue
        test = _sign_test(setter)
        if test is None:
            continue
        register, true_when_recorded = test
        load, source = _last_writer(instrs, j, register, first)
        if source is None or source.base != "LDG" or ".CONSTANT" in source.opcode:
            continue
        taken_when_recorded = true_when_recorded != ins.predicate.startswith("@!")
        if taken_when_recorded:
            continue
        if any(category(instrs[k]) == "statistics" for k in range(i + 1, end) if k not in cold):
            regions.append((i + 1, end, load))
    return regions


def tally(instrs: list[Instruction], record_every: int = 1) -> Tally:
    """Weighted counts of one main-loop iteration."""
    cold = cold_indices(instrs)
    loop = main_loop(instrs, cold)
    first, last = loop if loop else (0, len(instrs) - 1)
    out = Tally(loop=(instrs[first].addr, instrs[last].addr) if loop else None)
    branches = record_branches(instrs, first, last, cold)
    out.record_regions = [(a, b) for a, b, _ in branches]
    out.record_table_loads = sorted({load for _, _, load in branches})
    recording = {k for a, b in out.record_regions for k in range(a, b) if k not in cold}
    out.record_instructions = len(recording)
    by_category = not recording and record_every > 1 and any(
        category(instrs[i]) == "statistics" for i in range(first, last + 1) if i not in cold)
    if by_category:
        out.fallback = ("no record branch found (a forward branch guarded by a sign test of a loaded table row): "
                        f"statistics instructions weighted 1/{record_every} instead, an estimate")
        warnings.warn(f"static profile: {out.fallback}", stacklevel=2)
    for i in range(first, last + 1):
        ins = instrs[i]
        if i in cold:
            out.cold += 1
            continue
        out.counted.append(i)
        part = category(ins)
        recorded_only = i in recording or (by_category and part == "statistics")
        weight = 1.0 / record_every if recorded_only else 1.0
        out.weights[i] = weight
        if ins.base == "BRA" and ins.target is not None and instrs[first].addr <= ins.target < ins.addr and i != last:
            out.nested_loops += 1
        out.total += weight
        out.by_category[part] += weight
        out.by_opcode[ins.base] += weight
        p = pipe(ins)
        if p:
            out.by_pipe[p] += weight * (shared_wavefronts(ins) if p == "shared" else 1)
    return out
