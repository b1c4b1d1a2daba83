"""The SGD kernel's building blocks that tests/test_optim.py does not reach (Triton interpreter).

- its Philox (one wide multiply per product) is bit-identical to tl.philox;
- the GPU's normal transform for 16-bit parameters (_box_muller_fast) is the CONVENTIONS transform:
  the interpreter cannot run the special-function-unit approximations it calls, so the test runs its
  algebra with exact log2 / sin / cos in their place against the float64 reference;
- the launch plan puts whole blocks first (the unmasked launch) and each tensor's partial block after.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from inertia_gpu.kernels import sgd
from inertia_gpu.optim import triton_step

N = 512


@triton.jit
def _philox_both(seed, c_ptr, out_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    c0 = tl.load(c_ptr + i)
    c1 = tl.load(c_ptr + N + i)
    c2 = tl.load(c_ptr + 2 * N + i)
    c3 = tl.load(c_ptr + 3 * N + i)
    a0, a1, a2, a3 = sgd._philox(seed, c0, c1, c2, c3)
    b0, b1, b2, b3 = tl.philox(seed, c0, c1, c2, c3)
    tl.store(out_ptr + i, a0)
    tl.store(out_ptr + N + i, a1)
    tl.store(out_ptr + 2 * N + i, a2)
    tl.store(out_ptr + 3 * N + i, a3)
    tl.store(out_ptr + 4 * N + i, b0)
    tl.store(out_ptr + 5 * N + i, b1)
    tl.store(out_ptr + 6 * N + i, b2)
    tl.store(out_ptr + 7 * N + i, b3)


@pytest.mark.parametrize("seed", [0, 12345, 2**40 + 17, 2**63 - 25])
def test_philox_is_bit_identical_to_triton_philox(seed):
    rng = np.random.default_rng(seed % 1000)
    counters = torch.from_numpy(rng.integers(0, 2**32, size=4 * N, dtype=np.uint64).astype(np.uint32).view(np.int32))
    counters[:4] = torch.tensor([0, -1, 1, 2**31 - 1], dtype=torch.int32)  # the extremes of each word
    out = torch.full((8 * N,), -7, dtype=torch.int32)  # poisoned: an unwritten word fails
    _philox_both[(1,)](seed, counters.view(torch.uint32) if hasattr(torch, "uint32") else counters, out, N=N)
    ours, triton_words = out[:4 * N], out[4 * N:]
    assert torch.equal(ours, triton_words)
    assert (ours != -7).float().mean() > 0.99  # and not the poison passed through


@triton.jit
def _fast_normals(x_ptr, out_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    xa = tl.load(x_ptr + i)
    xb = tl.load(x_ptr + N + i)
    za, zb = sgd._box_muller_fast(xa, xb)
    tl.store(out_ptr + i, za)
    tl.store(out_ptr + N + i, zb)


def test_fast_normal_transform_is_the_conventions_transform(monkeypatch):
    """With exact log2 / sin / cos in place of lg2.approx / sin.approx / cos.approx, the rewritten
    transform (24 - log2 k, angle shifted by pi) equals the reference's float64 normals to float32
    rounding: what is left on the GPU is the approximations' own error (documented in kernels/sgd.py)."""
    exact = types.SimpleNamespace(fast_log2f=lambda x: tl.log2(x), fast_sinf=lambda x: tl.sin(x),
                                  fast_cosf=lambda x: tl.cos(x))
    monkeypatch.setattr(sgd, "fast_math", exact)
    rng = np.random.default_rng(7)
    words = rng.integers(0, 2**32, size=2 * N, dtype=np.uint64)
    words[:4] = [0, 2**32 - 1, 255, 2**32 - 256]  # u1 = 2^-24 and u1 = 1 (r = 0), u2 at 0 and near 1
    words[N:N + 4] = [0, 2**32 - 1, 2**31, 256]
    x = torch.from_numpy(words.astype(np.uint32).view(np.int32))
    out = torch.full((2 * N,), float("nan"))
    _fast_normals[(1,)](x.view(torch.uint32) if hasattr(torch, "uint32") else x, out, N=N)
    xa, xb = words[:N], words[N:]
    u1 = ((xa >> 8) + 1).astype(np.float64) * 2.0**-24
    u2 = (xb >> 8).astype(np.float64) * 2.0**-24
    r = np.sqrt(-2.0 * np.log(u1))
    want = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
    err = np.abs(out.double().numpy() - want)
    assert np.isfinite(out.numpy()).all()
    # float32 rounding of r and of the angle (|angle| <= pi): a few 1e-7 times max(r, 1)
    assert (err <= 2e-6 * np.maximum(np.concatenate([r, r]), 1.0)).all(), err.max()


def test_launch_plan_puts_whole_blocks_first():
    block = 64
    rows = tuple((1000 + 4 * k, 5000 + 4 * k, 9000 + 4 * k, n, k, 0, 4)
                 for k, n in enumerate([2 * block + 3, block, 5, 0, 3 * block]))
    plan = triton_step._build_plan(rows, block, torch.device("cpu"))
    programs = list(zip(plan.block_row.tolist(), plan.block_index.tolist()))
    assert programs == [(0, 0), (0, 1), (1, 0), (4, 0), (4, 1), (4, 2), (0, 2), (2, 0)]
    assert plan.n_whole == 6 and plan.n_blocks == 8 and tuple(plan.partials.shape) == (8, 3)
