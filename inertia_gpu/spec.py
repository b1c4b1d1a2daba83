"""The one specification every backend implements: switch codes, layouts, working dtypes.

A kernel receives integers, not strings. The integers are defined here and
nowhere else in the library; kernel sources (kernels/) import nothing of the
library, so each keeps its own copy of the numbers it tests, and
tests/test_spec.py checks every copy against this module.

Nothing here imports torch: the configuration, the theory and the CLI can
use it without paying for the import.
"""
from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class _Named(IntEnum):
    """An IntEnum whose members also carry the option spelling users type (`double-well`)."""

    @property
    def option(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_option(cls, value: str) -> "_Named":
        for member in cls:
            if member.option == value:
                return member
        raise KeyError(value)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        return tuple(member.option for member in cls)


class Problem(_Named):
    QUADRATIC = 0
    DOUBLE_WELL = 1
    ROSENBROCK = 2


class Integrator(_Named):
    HEAVY_BALL = 0
    EULER = 1
    LEAPFROG = 2  # B A B O (velocity Verlet, then the exact Ornstein-Uhlenbeck step)
    BAOAB = 3


class Schedule(_Named):
    CONSTANT = 0
    NESTEROV = 1  # mu_n = n / (n + r); continuous integrators: gamma_n = (1 - mu_n) / h

    @classmethod
    def from_option(cls, value: str) -> "Schedule":
        """`constant` or `nesterov:R` (the option carries its parameter R)."""
        return super().from_option(value.split(":", 1)[0])


class NoiseModel(_Named):
    ADDITIVE = 0
    TEMPERATURE = 1
    LOSS_SCALED = 2


class SpectrumDist(_Named):
    """How a quadratic's eigenvalues are given: one fixed list, or drawn per trajectory."""

    FIXED = 0
    UNIFORM = 1
    LOGUNIFORM = 2
    LOGNORMAL = 3


class Switches(NamedTuple):
    """A configuration's switch values, as every launcher passes them to its kernel."""

    problem: Problem
    integrator: Integrator
    schedule: Schedule
    noise_model: NoiseModel
    spectrum: SpectrumDist
    noisy: bool  # False: the noise term vanishes, so kernels may skip the draws (not a noise model)


def switches(config) -> Switches:
    """The switch values of a validated SimulationConfig (duck-typed: spec imports nothing of the library)."""
    drawn = config.distribution
    return Switches(Problem.from_option(config.problem), Integrator.from_option(config.integrator),
                    Schedule.from_option(config.momentum_schedule), NoiseModel.from_option(config.noise_model),
                    SpectrumDist.FIXED if drawn is None else SpectrumDist.from_option(drawn[0]), bool(config.noisy))


# Working dtypes by name; `torch_dtype` / `numpy_dtype` map them without a table per backend.
DTYPE_NAMES = ("float32", "float64")


def torch_dtype(name: str):
    import torch
    return {"float32": torch.float32, "float64": torch.float64}[name]


def numpy_dtype(name: str):
    import numpy as np
    return {"float32": np.float32, "float64": np.float64}[name]


# Trajectories per partial sum: every backend writes one row of sums per GROUP consecutive
# trajectories and recorded step; groups are the units of replicates (batch means).
GROUP = 64
# The columns of a partial-sum row, in order.
QUANTITIES = ("count", "inertia", "kinetic", "loss", "shadow_inertia", "inertia_sq")
N_QUANTITIES = len(QUANTITIES)
# The inertia ledger (docs/THEORY.md §8): per kept trajectory, the cumulative energy friction removed
# (dissipated D), noise added (injected Q) and the rest (residual W = I_n - I_0 + D - Q) since step 0.
LEDGER = ("dissipated", "injected", "residual")
# One partial-sum row: the quantities, then the ledger sums, all float64.
COLUMNS = QUANTITIES + LEDGER
N_COLUMNS = len(COLUMNS)
# First passage: the first step n with I_n <= f * I_0, for each f.
FRACTIONS = (0.5, 0.36787944117144233, 0.1)

# Philox stream tags (c3 of the counter): which use a draw serves (docs/CONVENTIONS.md).
TAG_STEP = 0
TAG_INIT = 1
TAG_SPECTRUM = 2
TAG_OPTIMIZER = 3
