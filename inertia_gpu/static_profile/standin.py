"""A stand-in Triton driver that turns each kernel launch into a compile for a chosen GPU.

`compiling_for(arch)` makes the launchers' ordinary `kernel[grid](...)` calls compile
exactly what they would compile on a card of that architecture (Triton's own
code path: argument specialization, constexprs, options, its bundled ptxas),
then records the result instead of loading and launching it. No GPU, no CUDA
driver and no CUDA toolkit are touched; the launchers run with CPU tensors,
whose addresses only feed Triton's 16-byte alignment specialization (torch
aligns every CPU allocation to 64 bytes, as the CUDA caching allocator does to 512).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

MAX_SHARED = {80: 166912, 90: 232448, 100: 232448}  # bytes per block, cudaDevAttrMaxSharedMemoryPerBlockOptin


@dataclass
class Launch:
    """One launch the launcher asked for: what Triton compiled for it and how it would run."""

    name: str
    cubin: bytes
    num_warps: int
    shared: int
    constexprs: dict
    grid: tuple = ()
    metadata: dict = field(default_factory=dict)


class _Utils:
    def __init__(self, arch: int):
        self.arch = arch

    def get_device_properties(self, device):
        return {"max_shared_mem": MAX_SHARED.get(self.arch, 232448), "multiprocessor_count": 1,
                "max_num_regs": 65536, "warpSize": 32, "sm_clock_rate": 0, "mem_clock_rate": 0,
                "mem_bus_width": 0, "arch": f"sm{self.arch}"}

    def load_binary(self, name, kernel, shared, device):
        # (module, function, n_regs, n_spills, n_max_threads): placeholders; the cubin is read elsewhere
        return 1, 1, 0, 0, 1024


class StandInDriver:
    """Just enough of triton's DriverBase for JITFunction.run and CompiledKernel to compile and 'launch'."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget("cuda", arch, 32)
        self.utils = _Utils(arch)
        self.launches: list[Launch] = []

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def set_current_device(self, device):
        pass

    def get_active_torch_device(self):
        import torch
        return torch.device("cpu")

    def get_device_capability(self, device=0):
        return divmod(self.target.arch, 10)

    def launcher_cls(self, src, metadata):
        return _Recorder(self, src, metadata)


class _Recorder:
    """Stands where the compiled C launcher would: records the launch, runs nothing."""

    def __init__(self, driver: StandInDriver, src, metadata):
        self.driver, self.src, self.metadata = driver, src, metadata

    def __call__(self, grid_0, grid_1, grid_2, stream, function, packed_metadata, *rest):
        meta = self.metadata
        md = meta._asdict() if hasattr(meta, "_asdict") else dict(vars(meta))
        kernel = _find_compiled(self)
        names = getattr(getattr(self.src, "fn", None), "arg_names", [])
        constexprs = {_key(k, names): _plain(v) for k, v in getattr(self.src, "constants", {}).items()}
        self.driver.launches.append(Launch(
            name=md.get("name", "kernel"), cubin=kernel.asm["cubin"], num_warps=int(md["num_warps"]),
            shared=int(md.get("shared", 0)), constexprs=constexprs, grid=(grid_0, grid_1, grid_2),
            metadata={k: _plain(v) for k, v in md.items() if k in ("num_warps", "num_stages", "shared", "name")}))


def _find_compiled(recorder: _Recorder):
    """The CompiledKernel whose launcher this is (each keeps its own `_run`)."""
    import gc
    for obj in gc.get_referrers(recorder):
        if hasattr(obj, "asm") and "cubin" in getattr(obj, "asm", {}):
            return obj
    raise RuntimeError("stand-in driver: compiled kernel not found")


def _key(k, names):
    """Triton keys constexprs by argument path, e.g. (30,); name them."""
    if isinstance(k, tuple) and len(k) == 1 and isinstance(k[0], int) and k[0] < len(names):
        return names[k[0]]
    return str(k)


def _plain(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


@contextlib.contextmanager
def compiling_for(arch: int):
    """Within the block every Triton launch compiles for sm_<arch> and is recorded in driver.launches."""
    from triton.runtime import driver as runtime_driver
    stand_in = StandInDriver(arch)
    previous = runtime_driver._active
    runtime_driver.set_active(stand_in)
    try:
        yield stand_in
    finally:
        runtime_driver._active = previous
