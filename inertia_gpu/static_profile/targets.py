"""How each variant is compiled: through the launchers' own code path, under the stand-in driver.

This is the whole seam between the static profile and the kernels:
  - ensemble: `backends.triton_ensemble.TritonEnsemble(block=, num_warps=).run(config, start, count,
    step_begin, step_end, state)` (the EnsembleBackend contract) and `default_block(config, count)`,
    asked with the config's device set to "cuda" so it picks what a GPU run picks;
  - optimizer: `optim.triton_step.sgd_launch_spec(dtype, momentum, noise, numel)` -> {fn, args,
    constexprs, grid, num_warps, enable_fp_fusion}: what a CUDA launch would pass, launched here as
    fn[grid](**args, **constexprs, ...) (before that function existed: the launcher itself).
A kernel change shows up in the profile without touching this package.
"""
from __future__ import annotations

import dataclasses

from .standin import compiling_for

COMPILE_TRAJECTORIES = 1 << 14  # only the grid depends on it
COMPILE_STEPS = 64  # window [0, 64): the first window of a run (the initial state drawn in-kernel)


def ensemble_config(fields: dict):
    from ..config import SimulationConfig
    return SimulationConfig(**{"trajectories": COMPILE_TRAJECTORIES, "steps": COMPILE_STEPS, **fields}).validate()


def compile_ensemble(fields: dict, arch: int, passes: str = "fast"):
    """Launches recorded while the Triton backend runs one window of the variant's configuration
    (passes="safe": every program on the divergence-handling pass)."""
    from ..backends import triton_ensemble as launcher
    cfg = ensemble_config(fields)
    block, num_warps = launcher.default_block(dataclasses.replace(cfg, device="cuda"), cfg.trajectories)
    with compiling_for(arch) as driver:
        launcher.TritonEnsemble(block=block, num_warps=num_warps, fast=passes == "fast").run(
            cfg, 0, cfg.trajectories, 0, cfg.steps, None)
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
    from ..optim import triton_step
    dt = getattr(torch, dtype)
    with compiling_for(arch) as driver:
        if hasattr(triton_step, "sgd_launch_spec"):
            spec = triton_step.sgd_launch_spec(dt, momentum, noise, numel)
            spec["fn"][spec["grid"]](**spec["args"], **spec["constexprs"], num_warps=spec["num_warps"],
                                     enable_fp_fusion=spec["enable_fp_fusion"])
        else:
            _launch_through_step(triton_step, dt, momentum, noise, numel)
    return driver.launches, {}


def _launch_through_step(module, dt, momentum: bool, noise: bool, numel: int):
    """Before the optimizer exposed sgd_launch_spec: its launcher with CPU tensors, given the block and
    warps it picks for CUDA tensors (it picks num_warps=1 for CPU ones)."""
    import torch
    from ..kernels import sgd as kernel_module
    real, warps = kernel_module.sgd_step_kernel, module.NUM_WARPS

    class _Warps:
        def __getitem__(self, grid):
            launch = real[grid]
            return lambda *a, **k: launch(*a, **{**k, "num_warps": warps})

    p, g = torch.zeros(numel, dtype=dt), torch.zeros(numel, dtype=dt)
    kernel_module.sgd_step_kernel = _Warps()
    try:
        module.triton_inertia_sgd([p], [g], [torch.zeros_like(p) if momentum else None],
                                  step=torch.zeros((), dtype=torch.int64), parameter_index=[0], lr=0.01,
                                  momentum=0.9 if momentum else 0.0, dampening=0.0, weight_decay=0.0,
                                  nesterov=False, maximize=False, noise=0.01 if noise else 0.0, temperature=None,
                                  seed=0, grad_scale=None, found_inf=None, block=module.DEFAULT_BLOCK_CUDA)
    finally:
        kernel_module.sgd_step_kernel = real
