"""How each variant is compiled: through the launchers' own code path, under the stand-in driver.

This is the whole seam between the static profile and the kernels:
  - ensemble: `backends.triton_ensemble.TritonEnsemble(block=, num_warps=).run(config, start, count,
    step_begin, step_end, state)` (the EnsembleBackend contract) and `default_block(config, count)`,
    asked with the config's device set to "cuda" so it picks what a GPU run picks;
  - optimizer: `sgd_launch(...)`, below, picks the optimizer's no-launch entry point when it exists
    (kernel, args, constexprs and grid of a CUDA launch) and otherwise calls the launcher itself.
A kernel change shows up in the profile without touching this package.
"""
from __future__ import annotations

import dataclasses
import importlib

from .standin import compiling_for

COMPILE_TRAJECTORIES = 1 << 14  # only the grid depends on it
COMPILE_STEPS = 64  # window [0, 64): the first window of a run (the initial state drawn in-kernel)


def ensemble_config(fields: dict):
    from ..config import SimulationConfig
    return SimulationConfig(**{"trajectories": COMPILE_TRAJECTORIES, "steps": COMPILE_STEPS, **fields}).validate()


def compile_ensemble(fields: dict, arch: int):
    """Launches recorded while the Triton backend runs one window of the variant's configuration."""
    from ..backends import triton_ensemble as launcher
    cfg = ensemble_config(fields)
    block, num_warps = launcher.default_block(dataclasses.replace(cfg, device="cuda"), cfg.trajectories)
    with compiling_for(arch) as driver:
        launcher.TritonEnsemble(block=block, num_warps=num_warps).run(cfg, 0, cfg.trajectories, 0, cfg.steps, None)
    return driver.launches, {"block": block, "num_warps": num_warps}


def compile_callable(path: str, function: str, arch: int):
    """Launches recorded while `function()` of the Python file `path` runs (tests' tiny kernels)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("static_profile_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with compiling_for(arch) as driver:
        getattr(module, function)()
    return driver.launches, {}


def compile_optimizer(dtype: str, momentum: bool, noise: bool, arch: int, numel: int = 1 << 20):
    """Launches recorded for one InertiaSGD step over a parameter of `numel` elements."""
    import torch
    dt = getattr(torch, dtype)
    p, g = torch.zeros(numel, dtype=dt), torch.zeros(numel, dtype=dt)
    b = torch.zeros(numel, dtype=dt) if momentum else None
    with compiling_for(arch) as driver:
        sgd_launch(p, g, b, momentum=0.9 if momentum else 0.0, noise=0.01 if noise else 0.0)
    return driver.launches, {}


def sgd_launch(p, g, b, *, momentum: float, noise: float):
    """One SGD launch as a CUDA run would make it (see the module docstring for the seam)."""
    for module_name in ("inertia_gpu.optim.triton_step", "inertia_gpu.backends.sgd_triton"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        plan = getattr(module, "cuda_launch", None)
        if plan is not None:
            kernel, args, constexprs, grid = plan([p], [g], [b] if b is not None else None, momentum=momentum,
                                                  noise=noise)
            kernel[grid](*args, **constexprs)
            return
        if hasattr(module, "sgd_step"):
            return _legacy_sgd_step(module, p, g, b, momentum, noise)
    raise RuntimeError("no Triton SGD launcher found")


def _legacy_sgd_step(module, p, g, b, momentum, noise):
    """The launcher of today's main (backends/sgd_triton.sgd_step), with its CUDA block and warps."""
    import torch
    check = module.triton_unavailable_reason
    module.triton_unavailable_reason = lambda device: None  # CPU tensors stand for CUDA ones here
    try:
        return _with_warps(module, p, g, b, momentum, noise, torch)
    finally:
        module.triton_unavailable_reason = check


def _with_warps(module, p, g, b, momentum, noise, torch):
    from ..kernels import sgd as kernel_module
    real = kernel_module.sgd_step_kernel
    warps = module.NUM_WARPS

    class _Warps:  # sets num_warps as a CUDA launch would
        def __getitem__(self, grid):
            launch = real[grid]
            return lambda *a, **k: launch(*a, **{**k, "num_warps": warps})

    kernel_module.sgd_step_kernel = _Warps()
    try:
        return module.sgd_step([p], [g], [b] if b is not None else None, [0], [0], None, lr=0.01,
                               momentum=momentum, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
                               noise=noise, temperature=None, seed=0, step=torch.zeros((), dtype=torch.int64),
                               block=module.DEFAULT_BLOCK_CUDA)
    finally:
        kernel_module.sgd_step_kernel = real
