"""Tiny Triton kernels whose instruction mix is known, for tests/test_static_profile.py.

Their line numbers are pinned by the SASS fixtures in tests/data/static_profile/: after an edit,
regenerate them with `python tests/static_profile_kernels.py` (no GPU needed).
"""
import triton
import triton.language as tl


@triton.jit
def _advance(x, a, b):
    return x * a + b  # one FFMA per element: dynamics


@triton.jit
def _record(acc, x):
    return acc + x * x  # one FFMA per element: statistics


@triton.jit
def loop_kernel(x_ptr, out_ptr, n, a, b, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    acc = tl.zeros_like(x)
    for _ in range(n):
        x = _advance(x, a, b)
        acc = _record(acc, x)
    tl.store(out_ptr + offs, acc)


@triton.jit
def sin_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.sin(tl.load(x_ptr + offs)))


def launch_loop():
    import torch
    x = torch.zeros(128)
    loop_kernel[(1,)](x, torch.empty_like(x), 10, 1.5, 0.5, BLOCK=128, num_warps=4)


def launch_sin():
    import torch
    x = torch.zeros(128)
    sin_kernel[(1,)](x, torch.empty_like(x), BLOCK=128, num_warps=4)


def _regenerate() -> None:
    """Write the fixtures: sm_90 SASS of both kernels, with this directory's path as <tests>."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from inertia_gpu.static_profile import profile, toolchain
    here = Path(__file__).resolve().parent
    for function in ("launch_loop", "launch_sin"):
        spec = {"kind": "callable", "name": function, "path": str(Path(__file__).resolve()), "function": function}
        with tempfile.TemporaryDirectory() as tmp:
            launch = profile.run_worker(spec, "sm_90", Path(tmp), 120)
            assert "error" not in launch, launch
            text = toolchain.disassemble((Path(tmp) / "kernel.cubin").read_bytes())
        text = text.replace(str(here), "<tests>").replace(os.path.dirname(os.path.dirname(__import__("triton").__file__)),
                                                           "<site-packages>")
        (here / "data" / "static_profile" / f"{function[len('launch_'):]}_kernel.sass").write_text(text)
        print(function, json.dumps({k: launch[k] for k in ("name", "num_warps")}))


if __name__ == "__main__":
    _regenerate()
