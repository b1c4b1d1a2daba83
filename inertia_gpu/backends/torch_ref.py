"""The reference backend: the dynamics of `inertia_gpu.reference`, one step at a time in PyTorch.

Any device, float32 or float64. One Philox evaluation serves four steps
(the four lanes of the counter n // 4), as the fast kernels do. At each
recorded step (`recorded_in_window`) the observables are formed in float64,
first passage compares I_n <= f I_0 in float64 (I_0 is stored in float64),
and a trajectory whose inertia is not <= diverge_above (NaN included) is
diverged: its state (ledger included) becomes NaN and it is left out of every sum.

The ledger (config.ledger): each step goes through `ledger.step`, whose state is
`Model.step`'s bit for bit, and adds its dissipated D and injected Q to the
trajectory's float64 totals (ChunkState.ledger); at a recorded step the residual
is W = (I_n - I_0) + D - Q, the kernels' definition (docs/CONVENTIONS.md).
"""
from __future__ import annotations

import math

import torch

from .. import ledger, rng
from ..config import SimulationConfig
from ..reference import Model, sweep_overrides
from .base import FRACTIONS, GROUP, N_COLUMNS, ChunkState, EnsembleBackend, n_groups, recorded_in_window


def group_sums(inertia, kinetic, loss, shadow, kept: torch.Tensor | None = None,
               terms: tuple | None = None) -> torch.Tensor:
    """Per-group float64 sums [n_groups, N_COLUMNS] over the kept trajectories (default: finite inertia).

    terms: per-trajectory (D, Q, W) of the ledger columns; None writes 0.0 there (ledger off)."""
    count = inertia.shape[0]
    kept = torch.isfinite(inertia) if kept is None else kept
    zero = torch.zeros((), dtype=torch.float64, device=inertia.device)
    cols = [kept.to(torch.float64)]
    for q in (inertia, kinetic, loss, shadow):
        cols.append(torch.where(kept, q.to(torch.float64), zero))
    cols.append(cols[1] * cols[1])
    for q in terms if terms is not None else (zero.expand(count),) * 3:
        cols.append(torch.where(kept, q.to(torch.float64), zero))
    table = torch.stack(cols, dim=-1)
    pad = n_groups(count) * GROUP - count
    if pad:
        table = torch.cat([table, table.new_zeros(pad, N_COLUMNS)])
    return table.reshape(-1, GROUP, N_COLUMNS).sum(dim=1)


def ledger_terms(config: SimulationConfig, inertia, inertia0, totals) -> tuple | None:
    """(D, Q, W) per trajectory at a recorded step from the cumulative (D, Q) [n, 2]; None when the ledger is off."""
    if not config.ledger:
        return None
    d, q = totals[:, 0], totals[:, 1]
    return d, q, (inertia - inertia0) + d - q


def update_first_passage(first_passage, inertia, inertia0, n: int) -> None:
    """First n with I_n <= f I_0, both float64 (a NaN inertia never passes)."""
    for j, f in enumerate(FRACTIONS):
        hit = (first_passage[:, j] < 0) & (inertia <= f * inertia0)
        first_passage[:, j] = torch.where(hit, torch.full_like(first_passage[:, j], n), first_passage[:, j])


def kept_trajectories(inertia: torch.Tensor, config: SimulationConfig) -> torch.Tensor:
    """Not diverged: finite float64 inertia <= diverge_above (NaN fails the test)."""
    bound = float(getattr(config, "diverge_above", math.inf))
    return torch.isfinite(inertia) & (inertia <= bound)


def _record(config, model, theta, mom, totals, lam, kept_out: list):
    """Observe a recorded state; returns (observables, theta, mom, totals) with diverged rows set to NaN."""
    obs = model.observe(theta, mom, lam)
    kept = kept_trajectories(obs[0], config)
    if not bool(kept.all()):
        nan = torch.full((), math.nan, dtype=theta.dtype, device=theta.device)
        theta = torch.where(kept[:, None], theta, nan)
        mom = torch.where(kept[:, None], mom, nan)
        totals = torch.where(kept[:, None], totals, torch.full((), math.nan, dtype=totals.dtype, device=totals.device))
    kept_out.append(kept)
    return obs, theta, mom, totals


class TorchEnsemble(EnsembleBackend):
    name = "torch"

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None):
        device = torch.device(config.device)
        traj = torch.arange(start, start + count, device=device, dtype=torch.int64)
        # per-trajectory options of a sweep, else none
        model = Model(config, sweep_overrides(config, traj), window=(step_begin, step_end))
        lam = model.eigenvalues(traj)
        recorded = set(recorded_in_window(config, step_begin, step_end))
        partials, kept = [], []
        if state is None:
            theta, mom = model.initial_state(traj)
            inertia0 = model.observe(theta, mom, lam)[0]  # float64
            first_passage = torch.full((count, len(FRACTIONS)), -1, dtype=torch.int32, device=device)
            totals = torch.zeros(count, 2, dtype=torch.float64, device=device)
            if 0 in recorded:
                obs, theta, mom, totals = _record(config, model, theta, mom, totals, lam, kept)
                partials.append(group_sums(*obs, kept[-1], ledger_terms(config, obs[0], inertia0, totals)))
        else:
            theta, mom, first_passage = state.theta, state.momentum, state.first_passage.clone()
            inertia0 = state.inertia0.to(torch.float64)
            totals = state.ledger.to(device=device, dtype=torch.float64).clone()
        coords = torch.arange(config.dim, device=device, dtype=torch.int64)
        z4 = None
        if not config.noisy:  # the noise term vanishes: skip the draws, not the arithmetic
            z4 = torch.zeros(count, config.dim, 4, dtype=model.dtype, device=device)
        for n in range(step_begin, step_end):
            if config.noisy and (z4 is None or n % 4 == 0):
                (c0, c1, c2, c3), _ = rng.ensemble_counter(traj[:, None], torch.tensor(n, device=device), coords[None, :])
                z4 = rng.normals4(c0, c1, c2, c3, config.seed, model.dtype)
            if config.ledger:
                theta, mom, d, q, _ = ledger.step(model, theta, mom, lam, n, z4[..., n % 4], residual=False)
                totals[:, 0] += d
                totals[:, 1] += q
            else:
                theta, mom = model.step(theta, mom, lam, n, z4[..., n % 4])
            if n + 1 in recorded:
                obs, theta, mom, totals = _record(config, model, theta, mom, totals, lam, kept)
                update_first_passage(first_passage, obs[0], inertia0, n + 1)
                partials.append(group_sums(*obs, kept[-1], ledger_terms(config, obs[0], inertia0, totals)))
        out = torch.stack(partials) if partials else torch.zeros(0, n_groups(count), N_COLUMNS, dtype=torch.float64)
        return ChunkState(theta, mom, inertia0, first_passage, totals), out
