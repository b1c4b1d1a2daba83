"""Backends of the ensemble engine, chosen by name; one file each.

    torch   the reference (any device)                       backends/torch_ref.py
    triton  the register-resident Triton kernel family       backends/triton_ensemble.py
    cupy    the same kernels in CUDA C through CuPy           backends/cupy_backend.py
    numba   the fast CPU path (time-blocked, multi-core)      backends/numba_cpu.py
"""
from __future__ import annotations

import importlib

from ..config import ConfigError, SimulationConfig
from .base import BackendUnavailable, EnsembleBackend

_REGISTRY = {
    "torch": ("inertia_gpu.backends.torch_ref", "TorchEnsemble"),
    "triton": ("inertia_gpu.backends.triton_ensemble", "TritonEnsemble"),
    "cupy": ("inertia_gpu.backends.cupy_backend", "CupyEnsemble"),
    "numba": ("inertia_gpu.backends.numba_cpu", "NumbaEnsemble"),
}


def backend_class(name: str) -> type[EnsembleBackend]:
    module, cls = _REGISTRY[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise BackendUnavailable(f"--backend {name}: not available here ({exc})") from None


def unavailable_reason(name: str, config: SimulationConfig) -> str | None:
    try:
        cls = backend_class(name)
    except BackendUnavailable as exc:
        return str(exc)
    return cls.unavailable_reason(config)


def resolve(config: SimulationConfig) -> EnsembleBackend:
    """The backend object for config.backend; `auto` = triton on CUDA, else the fastest CPU path.

    cupy is never chosen by auto (it is an opt-in second implementation).
    """
    if config.backend == "auto":
        order = ("triton", "torch") if config.device == "cuda" else ("numba", "torch")
        for name in order:
            if unavailable_reason(name, config) is None:
                return backend_class(name)()
        raise BackendUnavailable("--backend auto: no backend can run this configuration")
    reason = unavailable_reason(config.backend, config)
    if reason is not None:
        raise BackendUnavailable(reason if reason.startswith("--backend") else f"--backend {config.backend}: {reason}")
    return backend_class(config.backend)()


__all__ = ["BackendUnavailable", "ConfigError", "EnsembleBackend", "backend_class", "resolve", "unavailable_reason"]
