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

import torch

from ..config import SimulationConfig
from ..spec import switches
from .base import FRACTIONS, N_QUANTITIES, ChunkState, EnsembleBackend, n_groups, recorded_in_window

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_block(config: SimulationConfig, count: int) -> tuple[int, int]:
    """(BLOCK, num_warps): ~2048 tile elements per program on a GPU; larger tiles under the interpreter."""
    dimp = _next_pow2(config.dim)
    if config.device == "cuda":
        block = max(64, min(512, 2048 // dimp))
        return block, 4 if block * dimp <= 2048 else 8
    block = max(64, min(1024, _next_pow2(count), 16384 // dimp))
    return block, 4


def coefficients(config: SimulationConfig, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's coefficient vector: each scalar formed as reference.Model forms it, then rounded to dtype."""
    from ..kernels.ensemble import COEF_INDEX, N_COEF
    cfg = config
    c: dict[str, float | torch.Tensor] = {}

    def t(x):
        return torch.as_tensor(x, dtype=dtype)

    c["COEF_NOISE"] = cfg.noise
    c["COEF_R"] = cfg.nesterov_r or 0.0
    c["COEF_T"] = cfg.temperature
    c["COEF_INIT_THETA"] = cfg.init_theta_std
    c["COEF_INIT_V"] = cfg.init_velocity_std
    constant = cfg.nesterov_r is None
    if cfg.integrator == "heavy-ball":
        c["COEF_LR_H"] = cfg.lr
        c["COEF_HALF"] = 0.5 * cfg.lr
        c["COEF_MU"] = cfg.momentum
        if cfg.noise_model == "additive":
            c["COEF_S"] = cfg.noise
        elif cfg.noise_model == "temperature" and constant:
            friction = (1.0 - cfg.momentum) / cfg.lr
            c["COEF_S"] = torch.sqrt(t(2.0 * friction * cfg.temperature))
    else:
        h = cfg.dt
        c["COEF_LR_H"] = h
        c["COEF_HALF"] = 0.5 * h
        c["COEF_SHADOW"] = cfg.dt ** 2 / 8.0
        c["COEF_SQRT_H"] = math.sqrt(h)
        gamma = cfg.damping
        if cfg.integrator == "euler":
            c["COEF_MU"] = h * gamma
            if cfg.noise_model == "additive":
                c["COEF_S"] = cfg.noise * math.sqrt(h)
            elif cfg.noise_model == "temperature" and constant:
                c["COEF_S"] = torch.sqrt(t(2.0 * gamma * cfg.temperature)) * math.sqrt(h)
        elif constant:  # O-step of leapfrog / baoab, as reference.Model.ou_step
            g = t(gamma)
            c["COEF_MU"] = torch.exp(-g * h)
            var_factor = torch.where(g > 0, -torch.expm1(-2.0 * g * h) / (2.0 * torch.clamp(g, min=1e-300)), t(h))
            sq = torch.sqrt(var_factor)
            c["COEF_SQRT_VF"] = sq
            if cfg.noise_model == "additive":
                c["COEF_S"] = cfg.noise * sq
            elif cfg.noise_model == "temperature":
                c["COEF_S"] = torch.sqrt(t(2.0 * g * cfg.temperature)) * sq
    if cfg.distribution is not None:
        name, (a, b) = cfg.distribution
        if name == "uniform":
            c["COEF_SPEC_A"], c["COEF_SPEC_B"] = a, b - a
        elif name == "loguniform":
            c["COEF_SPEC_A"], c["COEF_SPEC_B"] = math.log(a), math.log(b) - math.log(a)
        else:
            c["COEF_SPEC_A"], c["COEF_SPEC_B"] = a, b
    values = [0.0] * N_COEF
    for key, value in c.items():
        values[COEF_INDEX[key]] = float(value)
    # float64 holds every float32 exactly; the cast below is the reference's rounding of a Python scalar
    return torch.tensor(values, dtype=torch.float64).to(dtype)


class TritonEnsemble(EnsembleBackend):
    """EnsembleBackend over kernels.ensemble.ensemble_kernel.

    block / num_warps override the defaults (tests use them to show the statistics do not
    depend on them); poison fills every output with NaN (int: INT32_MIN) before the launch,
    so an element the kernel fails to write shows up; tree=False uses tl.sum instead of the
    fixed reduction trees (faster on some GPUs, but the sums' rounding may then depend on BLOCK);
    guard=True compiles one kernel that serves any window, guard="auto" compiles the
    branch-free variant for windows aligned to 4 at both ends (one more compile per config).
    """

    name = "triton"

    def __init__(self, block: int | None = None, num_warps: int | None = None, poison: bool | None = None,
                 tree: bool = True, guard: bool | str = True):
        if block is not None and (block < 64 or block % 64 or block & (block - 1)):
            raise ValueError(f"block must be a power of two >= 64, got {block}")
        self.block = block
        self.num_warps = num_warps
        self.poison = poison if poison is not None else os.environ.get("INERTIA_GPU_POISON", "0") == "1"
        self.tree = tree
        if guard not in (True, "auto"):
            raise ValueError(f"guard must be True or 'auto', got {guard!r}")
        self.guard = guard

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
        block = self.block or block
        num_warps = self.num_warps or num_warps

        k = cfg.record_every
        recorded = recorded_in_window(cfg, step_begin, step_end)
        row0 = 0 if step_begin == 0 else -(-(step_begin + 1) // k)
        assert not recorded or recorded[0] // k == row0
        groups = n_groups(count)

        def out(shape, dt):
            if not self.poison:
                return torch.empty(shape, dtype=dt, device=device)
            fill = float("nan") if dt.is_floating_point else torch.iinfo(dt).min
            return torch.full(shape, fill, dtype=dt, device=device)

        partials = out((len(recorded), groups, N_QUANTITIES), torch.float64)
        theta = out((count, dim), dtype)
        mom = out((count, dim), dtype)
        inertia0 = out((count,), dtype)
        first_passage = out((count, len(FRACTIONS)), torch.int32)

        coef = coefficients(cfg, dtype).to(device)
        drawn = cfg.distribution is not None
        if cfg.problem == "quadratic" and not drawn:
            lam = torch.tensor(cfg.spectrum, dtype=dtype, device=device)
        else:
            lam = coef
        if state is None:
            ins = (theta, mom, inertia0, first_passage)  # not read: the kernel draws the initial state
        else:
            ins = (state.theta.to(device=device, dtype=dtype).contiguous(),
                   state.momentum.to(device=device, dtype=dtype).contiguous(),
                   state.inertia0.to(device=device, dtype=dtype).contiguous(),
                   state.first_passage.to(device=device, dtype=torch.int32).contiguous())

        grid = (triton_cdiv(count, block),)
        sw = switches(cfg)
        ensemble_kernel[grid](
            *ins, theta, mom, inertia0, first_passage, lam, coef, partials,
            start, count, groups, step_begin, step_end, row0, cfg.seed,
            PROBLEM=int(sw.problem),
            INTEGRATOR=int(sw.integrator),
            SCHEDULE=int(sw.schedule),
            NOISE_MODEL=int(sw.noise_model),
            NOISY=sw.noisy,
            DRAWN_SPECTRUM=int(sw.spectrum),
            START_FROM_INIT=state is None,
            DIM=dim, DIMP=dimp, LOG2_DIMP=dimp.bit_length() - 1,
            RECORD_EVERY=k, TREE=self.tree, BLOCK=block,
            GUARD=self.guard is True or step_begin % 4 != 0 or step_end % 4 != 0,
            num_warps=num_warps,
        )
        return ChunkState(theta, mom, inertia0, first_passage), partials


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
