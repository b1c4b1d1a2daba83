"""The CuPy backend: the CUDA C kernels of kernels/cuda/ through cupy.RawModule.

Tensors cross between PyTorch and CuPy through DLPack without copies
(`cupy.from_dlpack` on torch CUDA tensors), and kernels are launched on
PyTorch's current stream, so this backend mixes freely with torch code.

`CupyEnsemble` (name "cupy") runs kernels/cuda/ensemble.cu: one thread per
trajectory, state in registers for the whole window, one Philox call per
coordinate per four steps, per-group float64 partial sums by a fixed
reduction tree, the inertia ledger's columns included (docs/CONVENTIONS.md;
the kernel keeps each trajectory's cumulative (D, Q) in float64 beside its
state). Each configuration (dtype, dim, problem, integrator, schedule, noise
model, ledger on or off) is its own compiled module (-D switches, see
`ensemble_defines`); CuPy caches the binaries on disk.

The optimizer's CUDA C step (kernels/cuda/sgd.cu) lives in inertia_gpu/optim/cuda_step.py and
uses this module's CuPy plumbing (`_module`, `_OnTorchStream`).

CuPy is imported lazily: importing this module never fails; without CuPy or
without a GPU, `CupyEnsemble.unavailable_reason` says so in one line.
"""
from __future__ import annotations

import functools
import math
import os
from importlib import resources

import numpy as np
import torch

from .. import spec
from ..config import SimulationConfig
from ..problems import drawn_spectrum
from ..coefficients import N_STEP, Obs, coefficients
from .base import FRACTIONS, GROUP, N_COLUMNS, BackendUnavailable, ChunkState, EnsembleBackend, n_groups, \
    record_rows, recorded_in_window

KERNEL_PACKAGE = "inertia_gpu.kernels.cuda"
ENSEMBLE_SOURCE = "ensemble.cu"
HEADERS = ("philox.cuh",)
ENSEMBLE_KERNEL = "inertia_ensemble"

BLOCK = 128  # threads per block of the ensemble kernel (a multiple of GROUP)
REG_MAX = 32  # largest dim whose state stays in registers; above it the state lives in a work buffer
COMPILE_OPTIONS = ("--std=c++17",)



# --- sources -------------------------------------------------------------------

def kernel_dir() -> str | None:
    """The folder of the CUDA sources on disk (the include path), or None inside a zip."""
    path = resources.files(KERNEL_PACKAGE)
    path_str = str(path)
    return path_str if os.path.isdir(path_str) else None


def read_source(name: str) -> str:
    return resources.files(KERNEL_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def _source_and_include(name: str) -> tuple[str, tuple[str, ...]]:
    """(code, include options): the include path when the sources are files, else headers inlined."""
    code = read_source(name)
    folder = kernel_dir()
    if folder is not None:
        return code, (f"-I{folder}",)
    for header in HEADERS:
        code = code.replace(f'#include "{header}"', read_source(header))
    return code, ()


def ensemble_defines(config: SimulationConfig) -> list[str]:
    """The -D switches that select the ensemble kernel for `config` (also used by the tests)."""
    sw = spec.switches(config)
    return [
        f"-DIG_DOUBLE={1 if config.dtype == 'float64' else 0}",
        f"-DIG_DIM={int(config.dim)}",
        f"-DIG_PROBLEM={int(sw.problem)}",
        f"-DIG_INTEGRATOR={int(sw.integrator)}",
        f"-DIG_SCHEDULE={int(sw.schedule)}",
        f"-DIG_NOISE_MODEL={int(sw.noise_model)}",
        f"-DIG_NOISY={int(sw.noisy)}",
        f"-DIG_LEDGER={int(bool(getattr(config, 'ledger', True)))}",
        f"-DIG_REG_MAX={REG_MAX}",
        f"-DIG_BLOCK={BLOCK}",
    ]


# --- CuPy, lazily ----------------------------------------------------------------

def _import_cupy():
    import cupy  # noqa: PLC0415  (lazy on purpose: the package works without CuPy)
    return cupy


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def cupy_unavailable_reason() -> str | None:
    """None when CuPy and a CUDA GPU are usable here; else one line saying why not."""
    try:
        cupy = _import_cupy()
    except Exception as exc:  # ImportError, or a CuPy wheel that does not match the CUDA runtime
        return f"CuPy is not importable ({_first_line(exc)}); install it with pip install 'inertia-gpu[cuda13]' " \
               f"(or [cuda12])"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch (the cupy backend works on torch CUDA tensors)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy cannot reach a CUDA GPU ({_first_line(exc)})"
    if count == 0:
        return "CuPy sees no CUDA GPU"
    return None


@functools.lru_cache(maxsize=None)
def _module(name: str, defines: tuple[str, ...], device_index: int):
    cupy = _import_cupy()
    code, include = _source_and_include(name)
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=code, options=COMPILE_OPTIONS + include + defines)
        module.compile()
    return module


def _cuda_device(tensor_or_none=None) -> torch.device:
    if tensor_or_none is not None and tensor_or_none.is_cuda:
        return tensor_or_none.device
    return torch.device("cuda", torch.cuda.current_device())


class _OnTorchStream:
    """Context: CuPy's device and current stream = PyTorch's current stream on `device`."""

    def __init__(self, device: torch.device):
        self.cupy = _import_cupy()
        self.device = device
        self._dev = self.cupy.cuda.Device(device.index)
        stream = torch.cuda.current_stream(device)
        self._stream = self.cupy.cuda.ExternalStream(stream.cuda_stream, device.index)

    def __enter__(self):
        self._dev.__enter__()
        self._stream.__enter__()
        return self

    def __exit__(self, *exc):
        self._stream.__exit__(*exc)
        self._dev.__exit__(*exc)
        return False

    def view(self, tensor: torch.Tensor):
        """A CuPy array on the same memory (DLPack, zero copy; detached: DLPack refuses autograd leaves)."""
        return self.cupy.from_dlpack(tensor.detach())


# --- the ensemble backend ----------------------------------------------------------

def ledger_state(config: SimulationConfig, state: ChunkState, device) -> torch.Tensor:
    """The resumed state's cumulative (D, Q), float64 [n, 2] contiguous on `device` (with the ledger off the
    kernel passes it through unread)."""
    count = state.theta.shape[0]
    if tuple(state.ledger.shape) != (count, 2):
        raise ValueError(f"ChunkState.ledger has shape {tuple(state.ledger.shape)}, expected ({count}, 2)")
    return state.ledger.to(device=device, dtype=torch.float64).contiguous()


class CupyEnsemble(EnsembleBackend):
    """EnsembleBackend over kernels/cuda/ensemble.cu; poison fills every output with NaN (int: -7) first,
    so an element the kernel fails to write shows up (tests, the conformance matrix)."""

    name = "cupy"
    records_any_steps = True  # recording follows the per-window row table (record_rows)

    def __init__(self, poison: bool | None = None):
        self.poison = poison if poison is not None else os.environ.get("INERTIA_GPU_POISON", "0") == "1"

    @classmethod
    def unavailable_reason(cls, config: SimulationConfig) -> str | None:
        return cupy_unavailable_reason()

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None) -> tuple[ChunkState, torch.Tensor]:
        reason = cupy_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(reason)
        if (state is None) != (step_begin == 0):
            raise ValueError("state must be None exactly when step_begin == 0")
        if not 0 <= start and start + count <= 1 << 32:
            raise ValueError("trajectory indices must lie in [0, 2**32)")
        dtype = spec.torch_dtype(config.dtype)
        dim = int(config.dim)
        device = _cuda_device(state.theta if state is not None else None)
        defines = tuple(ensemble_defines(config))
        module = _module(ENSEMBLE_SOURCE, defines, device.index)
        kernel = module.get_function(ENSEMBLE_KERNEL)

        groups = n_groups(count)
        n_warps = 2 * groups  # GROUP = 64 = two warps
        blocks = (groups * GROUP + BLOCK - 1) // BLOCK
        threads = blocks * BLOCK
        records = len(recorded_in_window(config, step_begin, step_end))

        f64 = dict(dtype=torch.float64, device=device)
        real = dict(dtype=dtype, device=device)
        empty = (lambda *shape, **kw: torch.full(shape, -7 if kw["dtype"] == torch.int32 else math.nan, **kw)) \
            if self.poison else torch.empty
        theta_out = empty(count, dim, **real)
        mom_out = empty(count, dim, **real)
        inertia0_out = empty(count, **f64)  # I_0 in float64 (first passage compares in float64)
        fp_out = empty(count, len(FRACTIONS), dtype=torch.int32, device=device)
        ledger_out = empty(count, 2, **f64)  # cumulative (D, Q) per trajectory
        partial = torch.zeros(max(1, records * n_warps * N_COLUMNS), **f64)
        work = torch.empty(3 * dim * threads if dim > REG_MAX else 1, **real)

        if config.problem == "quadratic":
            if config.distribution is not None:
                name, params = config.distribution
                traj = torch.arange(start, start + count, device=device, dtype=torch.int64)
                lam = drawn_spectrum(name, params, traj, dim, config.seed, dtype).contiguous()
                lam_stride = dim
            else:
                lam = torch.tensor(config.spectrum, **real)
                lam_stride = 0
        else:
            lam = torch.zeros(1, **real)
            lam_stride = 0

        if state is None:
            init = 1
            theta_in, mom_in, inertia0_in, fp_in = theta_out, mom_out, inertia0_out, fp_out  # not read
            ledger_in = ledger_out
        else:
            init = 0
            theta_in = state.theta.to(device=device, dtype=dtype).contiguous()
            mom_in = state.momentum.to(device=device, dtype=dtype).contiguous()
            inertia0_in = state.inertia0.to(device=device, dtype=torch.float64).contiguous()
            fp_in = state.first_passage.to(device=device, dtype=torch.int32).contiguous()
            ledger_in = ledger_state(config, state, device)

        seed = int(config.seed)
        coef = coefficients(config, step_begin, step_end)
        consts = coef.constants.to(device)
        table = coef.rows.contiguous().to(device)
        rows = record_rows(config, step_begin, step_end).to(device)
        with _OnTorchStream(device) as ctx:
            args = (
                ctx.view(lam), np.int64(lam_stride), np.int32(init),
                ctx.view(theta_in), ctx.view(mom_in), ctx.view(inertia0_in), ctx.view(fp_in), ctx.view(ledger_in),
                ctx.view(theta_out), ctx.view(mom_out), ctx.view(inertia0_out), ctx.view(fp_out),
                ctx.view(ledger_out), ctx.view(partial), np.int64(n_warps), ctx.view(work),
                ctx.view(consts), ctx.view(table), np.int64(0 if coef.constant_schedule else N_STEP), ctx.view(rows),
                np.float64(coef.observe[Obs.HALF_LR]), np.float64(coef.observe[Obs.SHADOW]),
                np.float64(getattr(config, "diverge_above", math.inf)),
                np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32), np.uint32(start), np.int64(count),
                np.int64(step_begin), np.int64(step_end),
            )
            kernel((blocks,), (BLOCK,), args)

        # the two warps of each group, added in a fixed order
        pairs = partial[: records * n_warps * N_COLUMNS].view(records, groups, 2, N_COLUMNS)
        sums = pairs[:, :, 0, :] + pairs[:, :, 1, :]
        return ChunkState(theta_out, mom_out, inertia0_out, fp_out, ledger_out), sums


__all__ = ["CupyEnsemble", "cupy_unavailable_reason", "ensemble_defines", "kernel_dir", "ledger_state",
           "read_source"]
