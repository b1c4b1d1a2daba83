"""The one door between the ensemble engine and a backend.

A backend advances a contiguous chunk of trajectories over a window of
steps and returns per-group partial sums of the recorded quantities
(docs/CONVENTIONS.md). Adding a backend means one new file implementing
`EnsembleBackend.run` and a line in `backends/__init__.py`.

A CPU backend whose kernel works on numpy arrays may also offer `run_arrays`
(the same call, numpy in and out); the engine prefers it, so such a run never
loads torch. `run` stays the torch-tensor door every backend shares.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..config import SimulationConfig

from ..spec import COLUMNS, FRACTIONS, GROUP, LEDGER, N_COLUMNS, N_QUANTITIES, QUANTITIES  # noqa: F401  (re-exported for the backends)


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (no GPU, package missing): one clear line."""


@dataclass
class ChunkState:
    """Per-trajectory state of a chunk between launches (on the backend's device).

    torch tensors from `run`, numpy arrays from `run_arrays`; consumers accept either.
    """

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


def record_rows_array(config: SimulationConfig, step_begin: int, step_end: int) -> np.ndarray:
    """int32 [step_end - step_begin + 1]: entry i is the partial-sum row of state step_begin + i, -1 if not recorded.

    The table form of `recorded_in_window` that kernels read (contract: recording is driven by
    the recorded steps, never by n % record_every alone).
    """
    rows = np.full(step_end - step_begin + 1, -1, dtype=np.int32)
    recorded = recorded_in_window(config, step_begin, step_end)
    if recorded:
        rows[np.asarray(recorded, dtype=np.int64) - step_begin] = np.arange(len(recorded), dtype=np.int32)
    return rows


def record_rows(config: SimulationConfig, step_begin: int, step_end: int) -> torch.Tensor:
    """`record_rows_array` as a CPU torch tensor."""
    import torch
    return torch.from_numpy(record_rows_array(config, step_begin, step_end))


def host_array(x, dtype=None, copy: bool = False) -> np.ndarray:
    """A state entry or partial-sum table (numpy array or torch tensor, any device) as a C-contiguous host array."""
    if hasattr(x, "detach"):  # a torch tensor: no torch import needed to take it apart
        x = x.detach().to("cpu").numpy()
    return np.array(x, dtype=dtype, order="C", copy=True) if copy else np.ascontiguousarray(x, dtype=dtype)


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
