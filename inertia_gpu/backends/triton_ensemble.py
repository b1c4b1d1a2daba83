"""The Triton backend: the register-resident ensemble kernel (kernels/ensemble.py) behind EnsembleBackend.

The launcher maps a SimulationConfig to the kernel's constexpr switches and
scalars, allocates the outputs, picks the block size and the grid, and
returns (ChunkState, partials) exactly as TorchEnsemble does. Runs on a CUDA
device, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1,
set before triton is imported: the CI path).
"""
from __future__ import annotations

import math
import os
import sys

import torch

from .. import spec
from ..coefficients import Obs, coefficients
from ..config import SimulationConfig
from .base import FRACTIONS, GROUP, N_COLUMNS, ChunkState, EnsembleBackend, n_groups, recorded_in_window

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# The kernel's contraction setting, passed explicitly (triton 3.10 changes the default): no fused
# multiply-add, so every product and sum rounds as the torch reference's do and the states agree with
# reference.py to the working dtype's rounding (kernels/ensemble.py, "Floating-point contraction").
ENABLE_FP_FUSION = False


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


MAX_TPT = 8  # trajectories per thread: a group's 64 / TPT lanes must hold its 8 exchanged partial sums


def default_tpt(config: SimulationConfig) -> int:
    """Trajectories per thread: several at d = 1 (the per-step scalar work and the group reduction are
    shared by them), fewer as the per-trajectory state grows, so the state stays in registers."""
    words = _next_pow2(config.dim) * (2 if config.dtype == "float64" else 1)
    return {1: 4, 2: 2, 4: 2}.get(words, 1)


def wide(config: SimulationConfig) -> bool:
    """The wide layout (one trajectory per program, coordinates over its threads) once a trajectory's
    state no longer fits one thread's registers: DIMP > 8 words of the working dtype."""
    return _next_pow2(config.dim) * (2 if config.dtype == "float64" else 1) > 8


def wide_warps(config: SimulationConfig) -> int:
    """Warps of a wide program: about 8 coordinates per thread, 1 to 16 warps."""
    return max(1, min(16, _next_pow2(config.dim) // 256))


def default_block(config: SimulationConfig, count: int) -> tuple[int, int]:
    """(BLOCK, num_warps): BLOCK = TPT * 32 * num_warps trajectories per program.

    A function of the configuration alone (never of `count`): the block fixes TPT, TPT fixes the order
    of the group sums, and the sums must not depend on how the trajectories are chunked.
    """
    if wide(config):
        return 1, wide_warps(config)
    return default_tpt(config) * 32 * 4, 4


class TritonEnsemble(EnsembleBackend):
    """EnsembleBackend over kernels.ensemble.ensemble_kernel.

    block / num_warps override the defaults (BLOCK = TPT * 32 * num_warps: a different block at
    the same warps changes TPT, which may change the statistics' last bits, never more);
    poison fills every output with NaN (int: INT32_MIN) before the launch, so an element the
    kernel fails to write shows up; `tree` is accepted and ignored (the group sums always have
    a fixed order now); guard=True compiles one kernel that serves any window, guard="auto"
    compiles the branch-free variant for windows aligned to 4 at both ends (one more compile);
    fast=False runs every program on the divergence-handling path (the statistics are the same bits:
    tests compare the two).

    Two passes per window: the whole blocks on the kernel's fast path (SAFE = False: no divergence
    selects), then every program whose flag is set (the partial last block, and any whole block in which
    a trajectory diverged: its first-pass outputs are void) on the SAFE path. Nothing is read back
    between them: the second launch's programs read their flag and return when it is 0.
    """

    name = "triton"

    def __init__(self, block: int | None = None, num_warps: int | None = None, poison: bool | None = None,
                 tree: bool = True, guard: bool | str = True, fast: bool = True):
        if block is not None and block != 1 and (block < 64 or block % 64 or block & (block - 1)):
            raise ValueError(f"block must be 1 (the wide layout) or a power of two >= 64, got {block}")
        if num_warps is not None and (num_warps < 1 or num_warps & (num_warps - 1)):
            raise ValueError(f"num_warps must be a power of two, got {num_warps}")
        self.block = block
        self.num_warps = num_warps
        self.poison = poison if poison is not None else os.environ.get("INERTIA_GPU_POISON", "0") == "1"
        self.tree = tree
        if guard not in (True, "auto"):
            raise ValueError(f"guard must be True or 'auto', got {guard!r}")
        self.guard = guard
        self.fast = fast

    @classmethod
    def unavailable_reason(cls, config: SimulationConfig) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "--backend triton: triton is not installed (pip install 'inertia-gpu[triton]')"
        if config.device == "cuda":
            if not torch.cuda.is_available():
                return "--backend triton: --device cuda asked for but no CUDA device is visible"
            return None
        if _interpreting():
            return None
        return ("--backend triton: needs --device cuda (on CPU it runs only under the slow interpreter, "
                "TRITON_INTERPRET=1 set before triton is imported)")

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None):
        from ..kernels.ensemble import ensemble_kernel

        cfg = config
        if (state is None) != (step_begin == 0):
            raise ValueError("state must be None exactly when step_begin == 0")
        if not 0 <= step_begin < step_end:
            raise ValueError(f"empty or reversed window [{step_begin}, {step_end})")
        dtype = DTYPES[cfg.dtype]
        device = torch.device(cfg.device)
        dim = cfg.dim
        dimp = _next_pow2(dim)
        block, num_warps = default_block(cfg, count)
        if self.num_warps:
            num_warps = self.num_warps
            if not wide(cfg):
                block = default_tpt(cfg) * 32 * num_warps
        if self.block and not wide(cfg):
            if self.block == 1:
                raise ValueError(f"block 1 (the wide layout) is for dimensions whose state does not fit a "
                                 f"thread's registers; dim {cfg.dim} {cfg.dtype} uses the blocked layout")
            block = self.block
        if block == 1:  # the wide layout
            tpt = width = 1
        else:
            width = min(block, 32 * num_warps)
            tpt = block // width
            num_warps = max(1, width // 32)
        if tpt > MAX_TPT:
            raise ValueError(f"block {block} with {num_warps} warps is {tpt} trajectories per thread; at most "
                             f"{MAX_TPT} (the group sums exchange {MAX_TPT} partial sums per lane): use more warps "
                             f"or a smaller block")

        recorded = recorded_in_window(cfg, step_begin, step_end)
        table = [-1] * (step_end - step_begin + 1)
        for row, n in enumerate(recorded):
            table[n - step_begin] = row
        groups = n_groups(count)

        def out(shape, dt):
            if not self.poison:
                return torch.empty(shape, dtype=dt, device=device)
            fill = float("nan") if dt.is_floating_point else torch.iinfo(dt).min
            return torch.full(shape, fill, dtype=dt, device=device)

        programs = triton_cdiv(count, block)
        nf = len(FRACTIONS)
        if block == 1:  # per-trajectory rows, padded with zeros to whole groups; summed below
            partials = torch.zeros((len(recorded), groups * GROUP, N_COLUMNS), dtype=torch.float64, device=device)
            if self.poison:
                partials[:, :count] = float("nan")
            stride = groups * GROUP
        else:
            partials = out((len(recorded), groups, N_COLUMNS), torch.float64)
            stride = groups
        theta = out((programs, tpt, dim, width), dtype)
        mom = out((programs, tpt, dim, width), dtype)
        inertia0 = out((programs, tpt, width), torch.float64)
        first_passage = out((programs, tpt, nf, width), torch.int32)
        keep_ledger = ledger_on(cfg)
        ledger = out((programs, tpt, 2, width), torch.float64)

        coefs = coefficients(cfg, step_begin, step_end)  # the one coefficient table (inertia_gpu/coefficients.py)
        coef = coefs.constants.to(device)
        steps = coefs.rows.contiguous().to(device)  # one row (constant schedule) or one per step
        obs = observable_scalars(cfg, coefs.observe).to(device)
        rec = torch.tensor(table, dtype=torch.int32, device=device)
        drawn = cfg.distribution is not None
        if cfg.problem == "quadratic" and not drawn:
            lam = torch.tensor(cfg.spectrum, dtype=dtype, device=device)
        else:
            lam = coef
        if state is None:
            ins = (theta, mom, inertia0, first_passage, ledger)  # not read: the kernel draws the initial state
        else:
            carried = state.ledger if keep_ledger else None
            if keep_ledger and carried is None:  # a state that lost its ledger: the cumulative terms are unknown
                carried = torch.full((count, 2), math.nan, dtype=torch.float64)
            ins = (to_blocked(state.theta.to(device=device, dtype=dtype), tpt, width),
                   to_blocked(state.momentum.to(device=device, dtype=dtype), tpt, width),
                   to_blocked(state.inertia0.to(device=device, dtype=torch.float64)[:, None], tpt, width),
                   to_blocked(state.first_passage.to(device=device, dtype=torch.int32), tpt, width),
                   ledger if carried is None else to_blocked(carried.to(device=device, dtype=torch.float64), tpt,
                                                             width))

        # whole blocks take the fast path first (not the wide layout: one trajectory per program gains nothing)
        whole = count // block if (self.fast and block > 1) else 0
        flags = torch.ones(programs, dtype=torch.int32, device=device)
        flags[:whole] = 0
        for safe, grid in ((False, (whole,)), (True, (programs,))):
            if grid[0] == 0:
                continue
            ensemble_kernel[grid](
                *ins, theta, mom, inertia0, first_passage, ledger, lam, coef, steps, obs, rec, partials, flags,
                start, count, stride, step_begin, step_end, cfg.seed,
                **kernel_switches(cfg, state is None),
                DIM=dim, DIMP=dimp, TPT=tpt, WIDTH=width,
                GUARD=self.guard is True or step_begin % 4 != 0 or step_end % 4 != 0,
                LEDGER=keep_ledger, SAFE=safe,
                PIN=not _interpreting(),  # kernels/ensemble.py _pin: inline PTX, which the interpreter cannot run
                num_warps=num_warps,
                enable_fp_fusion=ENABLE_FP_FUSION,
                **launch_limits(block, num_warps),
            )
        if block == 1:
            partials = pairwise_group_sums(partials, groups)
        else:
            complete_group_sums(partials, keep_ledger)
        if keep_ledger:
            carried = from_blocked(ledger, count)
        else:  # not kept: zeros, as at step 0
            carried = torch.zeros((count, 2), dtype=torch.float64, device=device)
        return ChunkState(from_blocked(theta, count), from_blocked(mom, count),
                          from_blocked(inertia0[:, :, None, :], count)[:, 0],
                          from_blocked(first_passage, count), carried), partials


def complete_group_sums(partials: torch.Tensor, ledger: bool) -> None:
    """The columns the blocked kernel leaves to the launcher, in place: the inertia as sum K + sum L and the
    residual as ((sum K + sum L) - sum I_0) + sum D - sum Q from the sum I_0 the kernel wrote into the
    residual's column (docs/CONVENTIONS.md: a backend may form it from the group's sums). Without the
    ledger the kernel wrote 0.0 into D, Q and the residual's column."""
    partials[..., 1] = partials[..., 2] + partials[..., 3]
    if ledger:
        partials[..., 8] = ((partials[..., 1] - partials[..., 8]) + partials[..., 6]) - partials[..., 7]


def ledger_on(cfg: SimulationConfig) -> bool:
    """Whether the kernel keeps the inertia ledger (a compile-time switch: off, it is the kernel without it)."""
    return bool(getattr(cfg, "ledger", True))


def launch_limits(block: int, num_warps: int) -> dict:
    """ptxas's register limit for the wide layout: one program (num_warps warps, one trajectory) may use
    the whole register file of an SM, which keeps its float64 tiles out of local memory (left to the
    compiler, it allots half that and spills). The blocked layout keeps the compiler's choice: capping
    it at 128 (16 warps per SM) spills with triton 3.6. The interpreter takes no such option."""
    if _interpreting() or block != 1:
        return {}
    return {"maxnreg": min(255, 65536 // (32 * num_warps))}


def kernel_switches(cfg: SimulationConfig, start_from_init: bool) -> dict:
    """The constexpr switch codes of a configuration (inertia_gpu/spec.py)."""
    drawn = cfg.distribution is not None
    return dict(
        PROBLEM=int(spec.Problem.from_option(cfg.problem)),
        INTEGRATOR=int(spec.Integrator.from_option(cfg.integrator)),
        SCHEDULE=int(spec.Schedule.CONSTANT if cfg.nesterov_r is None else spec.Schedule.NESTEROV),
        NOISE_MODEL=int(spec.NoiseModel.from_option(cfg.noise_model)),
        NOISY=bool(cfg.noisy),
        DRAWN_SPECTRUM=int(spec.SpectrumDist.from_option(cfg.distribution[0]) if drawn else spec.SpectrumDist.FIXED),
        START_FROM_INIT=start_from_init,
    )


def observable_scalars(cfg: SimulationConfig, observe: torch.Tensor) -> torch.Tensor:
    """The float64 scalars of the observables (kernels/ensemble.py OBS_*), from the table's `observe`
    exactly as reference.Model.observe takes them."""
    from ..kernels.ensemble import N_OBS, OBS_INDEX
    values = [0.0] * N_OBS
    if cfg.integrator == "heavy-ball":
        values[OBS_INDEX["OBS_KINETIC"]] = float(observe[Obs.HALF_LR])
        values[OBS_INDEX["OBS_SHADOW"]] = float(observe[Obs.HALF_LR])
    else:
        values[OBS_INDEX["OBS_KINETIC"]] = 0.5
        values[OBS_INDEX["OBS_SHADOW"]] = float(observe[Obs.SHADOW])
    # one compare in the kernel, I <= bound, also rejects +inf (and NaN)
    values[OBS_INDEX["OBS_DIVERGE"]] = min(float(getattr(cfg, "diverge_above", math.inf)), sys.float_info.max)
    values[OBS_INDEX["OBS_NAN"]] = math.nan
    values[OBS_INDEX["OBS_FRACTION_1"]] = FRACTIONS[1]
    values[OBS_INDEX["OBS_FRACTION_2"]] = FRACTIONS[2]
    return torch.tensor(values, dtype=torch.float64)


def pairwise_group_sums(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """[records, groups * GROUP, Q] per-trajectory rows -> [records, groups, Q] group sums.

    A fixed pairwise tree of elementwise adds: each group's sum has the same order whatever the
    number of groups (chunking, ranks), on any device.
    """
    t = rows.view(rows.shape[0], groups, GROUP, rows.shape[-1])
    while t.shape[2] > 1:
        h = t.shape[2] // 2
        t = t[:, :, :h] + t[:, :, h:]
    return t[:, :, 0].contiguous()


def to_blocked(x: torch.Tensor, tpt: int, width: int) -> torch.Tensor:
    """[count, k] -> [programs, TPT, k, WIDTH] (padded with zeros): the kernel's per-program blocks, in
    which trajectory p * BLOCK + t * TPT + i sits at [p, i, :, t]."""
    count, k = x.shape
    block = tpt * width
    programs = triton_cdiv(count, block)
    padded = x.new_zeros((programs * block, k))
    padded[:count] = x
    return padded.view(programs, width, tpt, k).permute(0, 2, 3, 1).contiguous()


def from_blocked(y: torch.Tensor, count: int) -> torch.Tensor:
    """The inverse of to_blocked: [programs, TPT, k, WIDTH] -> [count, k]."""
    programs, tpt, k, width = y.shape
    return y.permute(0, 3, 1, 2).reshape(programs * width * tpt, k)[:count].contiguous()


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
