"""Which steps a run records: the one definition the engine, the backends and the theory share.

`record_every` K records steps 0, K, 2K, ... and always the final step;
"log:N" records step 0, about N steps per decade (the distinct rounded
values of 10^(j/N), j = 0, 1, ...) and always the final step.
"""
from __future__ import annotations


def _parse(record_every) -> tuple[str, int]:
    from .config import parse_record_every
    return parse_record_every(record_every)


def recorded_steps(steps: int, record_every) -> list[int]:
    """The sorted recorded steps of a run of `steps` steps: starts at 0, ends at `steps`."""
    kind, k = _parse(record_every)
    if kind == "every":
        out = list(range(0, steps + 1, k))
    else:
        out, j = [0], 0
        while True:
            n = int(round(10 ** (j / k)))
            if n >= steps:
                break
            if n > out[-1]:
                out.append(n)
            j += 1
    if out[-1] != steps:
        out.append(steps)
    return out


def recorded_count(steps: int, record_every) -> int:
    """len(recorded_steps(...)) without building the list (a huge request is refused before it is built)."""
    kind, k = _parse(record_every)
    if kind == "every":
        return steps // k + 1 + (steps % k != 0)
    return len(recorded_steps(steps, record_every))


def is_arithmetic(steps: int, record_every) -> bool:
    """True when the recorded steps are exactly 0, K, 2K, ... (what a kernel testing n % K records)."""
    kind, k = _parse(record_every)
    return kind == "every" and steps % k == 0


def max_records_in(steps: int, record_every, window: int) -> int:
    """An upper bound of the recorded steps in any window of `window` steps (planning of partial sums)."""
    kind, k = _parse(record_every)
    if kind == "every":
        return window // k + 2
    return min(recorded_count(steps, record_every), window + 1)


def window_for(steps: int, record_every, records: int) -> int:
    """Steps per launch so that a launch holds at most about `records` recorded steps."""
    kind, k = _parse(record_every)
    if kind == "every":
        return max(1, (records - 1) * k)
    rec = recorded_steps(steps, record_every)
    if records >= len(rec):
        return steps
    return max(1, rec[records - 1] if records > 1 else 1)



def recorded_between(steps: int, record_every, first: int, last: int) -> list[int]:
    """The recorded steps n with first <= n <= last (arithmetic for K: no list of the whole run)."""
    kind, k = _parse(record_every)
    if kind == "every":
        out = list(range(-(-first // k) * k, min(last, steps) + 1, k))
        if first <= steps <= last and steps % k:
            out.append(steps)
        return out
    return [n for n in recorded_steps(steps, record_every) if first <= n <= last]
