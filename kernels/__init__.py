"""Kernel sources only: Triton `@triton.jit` functions and CUDA C for CuPy.

Installed as `inertia_gpu.kernels`. Nothing here imports the library: the
launchers in `inertia_gpu.backends` adapt tensors to these kernels.
"""
