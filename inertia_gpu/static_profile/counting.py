"""What one iteration of a kernel's main loop executes, from its SASS.

The method: the main loop is the back-branch with the largest span (conditional back-branches
first: an unconditional jump back is usually out-of-line code rejoining). Inside it every
instruction issues once per iteration, predicated or not, except
  - provably cold paths, left out: libdevice's Payne-Hanek reduction in sinf/cosf, entered only when
    |x| >= 105615 (a compare with that immediate guards a forward branch over it), and the call of
    the double version's slow-path subroutine (|x| >= 2^31); subroutines placed after the kernel are
    not part of it (sass.parse);
  - recording code (statistics), weighted by 1 / record_every;
  - nested loops other than cold ones, counted once and reported (their trip count is not static).
A kernel without a loop is counted whole (minus cold paths).
"""
from __future__ import annotations

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
    nested_loops: int = 0


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


def tally(instrs: list[Instruction], record_every: int = 1) -> Tally:
    """Weighted counts of one main-loop iteration."""
    cold = cold_indices(instrs)
    loop = main_loop(instrs, cold)
    first, last = loop if loop else (0, len(instrs) - 1)
    out = Tally(loop=(instrs[first].addr, instrs[last].addr) if loop else None)
    for i in range(first, last + 1):
        ins = instrs[i]
        if i in cold:
            out.cold += 1
            continue
        out.counted.append(i)
        part = category(ins)
        weight = 1.0 / record_every if part == "statistics" else 1.0
        if ins.base == "BRA" and ins.target is not None and instrs[first].addr <= ins.target < ins.addr and i != last:
            out.nested_loops += 1
        out.total += weight
        out.by_category[part] += weight
        out.by_opcode[ins.base] += weight
        p = pipe(ins)
        if p:
            out.by_pipe[p] += weight * (shared_wavefronts(ins) if p == "shared" else 1)
    return out
