"""The optimizer: `InertiaSGD` in torch.optim's shape and its step as a function, `inertia_sgd`.

    optimizer.py     the class (gathers and checks each group, reports kinetic / inertia / shadow)
    functional.py    inertia_sgd(params, grads, momentum_buffers, ..., impl=...): checks, dispatch
    foreach_step.py  impl "foreach": torch._foreach_* ops, any device
    triton_step.py   impl "triton": the fused kernel kernels/sgd.py
    cuda_step.py     impl "cuda": the CUDA C kernel kernels/cuda/sgd.cu through CuPy
    validation.py    hyperparameter and state_dict checks
"""
from .functional import IMPLS, inertia_sgd
from .optimizer import BACKENDS, InertiaHistory, InertiaSGD

__all__ = ["BACKENDS", "IMPLS", "InertiaHistory", "InertiaSGD", "inertia_sgd"]
