"""The one door between the ensemble engine and a backend.

A backend advances a contiguous chunk of trajectories over a window of
steps and returns per-group partial sums of the recorded quantities
(docs/CONVENTIONS.md). Adding a backend means one new file implementing
`EnsembleBackend.run` and a line in `backends/__init__.py`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..config import SimulationConfig

from ..spec import COLUMNS, FRACTIONS, GROUP, LEDGER, N_COLUMNS, N_QUANTITIES, QUANTITIES  # noqa: F401  (re-exported for the backends)


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (no GPU, package missing): one clear line."""


@dataclass
class ChunkState:
    """Per-trajectory state of a chunk between launches (on the backend's device)."""

    theta: torch.Tensor  # [n, dim]
    momentum: torch.Tensor  # [n, dim]: b for heavy ball, v for continuous integrators
    inertia0: torch.Tensor  # [n] float64 (first passage compares in float64)
    first_passage: torch.Tensor  # [n, len(FRACTIONS)] int32, -1 = not yet
    # [n, 2] float64: cumulative (D, Q) since step 0, zeros at step 0, NaN once diverged
    # (zeros throughout when config.ledger is off: the kernel passes them through)
    ledger: torch.Tensor


def recorded_in_window(config: SimulationConfig, step_begin: int, step_end: int) -> list[int]:
    """Recorded step indices a window [step_begin, step_end] reports: config.recorded_steps inside it.

    step_begin == 0 means the window starts from the initial state and
    records it; otherwise the state at step_begin was recorded by the
    previous window.
    """
    from ..recording import recorded_between
    first = 0 if step_begin == 0 else step_begin + 1
    return recorded_between(config.steps, config.record_every, first, step_end)


def record_rows(config: SimulationConfig, step_begin: int, step_end: int) -> torch.Tensor:
    """int32 [step_end - step_begin + 1]: entry i is the partial-sum row of state step_begin + i, -1 if not recorded.

    The table form of `recorded_in_window` that kernels read (contract: recording is driven by
    the recorded steps, never by n % record_every alone).
    """
    rows = torch.full((step_end - step_begin + 1,), -1, dtype=torch.int32)
    recorded = recorded_in_window(config, step_begin, step_end)
    if recorded:
        rows[torch.tensor(recorded, dtype=torch.int64) - step_begin] = torch.arange(len(recorded), dtype=torch.int32)
    return rows


def n_groups(count: int) -> int:
    return (count + GROUP - 1) // GROUP


class EnsembleBackend(ABC):
    name: str = "?"

    @classmethod
    def unavailable_reason(cls, config: SimulationConfig) -> str | None:
        """None when this backend can run `config` here; else one line saying why not."""
        return None

    @abstractmethod
    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None) -> tuple[ChunkState, torch.Tensor]:
        """Advance trajectories [start, start + count) from step_begin to step_end.

        `state` is None exactly when step_begin == 0 (the backend draws the
        initial state from the Philox stream). Returns the new state and the
        partial sums, float64 [len(recorded_in_window(...)), n_groups(count),
        N_COLUMNS] (spec.COLUMNS; with config.ledger False columns 6..8 hold
        0.0), groups being consecutive runs of GROUP trajectories from `start`
        (which the engine keeps a multiple of GROUP).
        """
