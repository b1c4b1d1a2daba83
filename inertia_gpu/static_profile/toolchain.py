"""The NVIDIA tools inside the installed triton wheel: nvdisasm and cuobjdump, no CUDA toolkit needed."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path


class ToolchainMissing(RuntimeError):
    pass


def tool(name: str) -> str:
    """Path of `name` in triton/backends/nvidia/bin (the wheel's own copy, not one from PATH)."""
    try:
        import triton
    except ImportError as exc:
        raise ToolchainMissing("the static profile needs the triton package (pip install 'inertia-gpu[triton]')") \
            from exc
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not os.access(path, os.X_OK):
        raise ToolchainMissing(f"{path} is missing: this triton wheel ships no {name}")
    return str(path)


def _with_cubin(cubin: bytes, args: list[str], name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([tool(name), *args, str(path)], capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"{name} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def disassemble(cubin: bytes) -> str:
    """SASS with control flow labels (-c) and inline source locations (-gi)."""
    return _with_cubin(cubin, ["-c", "-gi"], "nvdisasm")


def resource_usage(cubin: bytes) -> dict:
    """{'registers', 'stack', 'local', 'shared'} of the (first) kernel, from cuobjdump -res-usage."""
    text = _with_cubin(cubin, ["-res-usage"], "cuobjdump")
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", text)
    if not m:
        raise RuntimeError(f"cuobjdump -res-usage: no resource line in {text[:300]!r}")
    reg, stack, shared, local = (int(x) for x in m.groups())
    return {"registers": reg, "stack": stack, "shared": shared, "local": local}


def ptxas_spills(log: str) -> int | None:
    """Bytes of spill stores per thread from ptxas -v output (None when the log has no such line)."""
    found = [int(x) for x in re.findall(r"(\d+) bytes spill stores", log)]
    return max(found) if found else None


def ptxas_release(capability: int) -> str:
    """The ptxas triton compiles with for this architecture: 'ptxas-blackwell, Build cuda_13.4...'."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas, get_ptxas_version
        name = os.path.basename(get_ptxas(capability).path)
        return f"{name}, {get_ptxas_version(capability).strip().splitlines()[-1]}"
    except Exception as exc:  # private API of triton: report, never fail on it
        return f"unknown ({type(exc).__name__})"
