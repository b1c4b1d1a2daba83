"""The optimizer's normals on the CPU (numba), in SIMD lanes: the docs/CONVENTIONS.md stream, fast.

`fill_normals` writes the normals of consecutive element groups (one Philox4x32-10 call per group of
four elements) in element order, from a SUB-sized scratch that stays in L1. Three loops the compiler
vectorises: Philox (four groups per AVX2 register), the Box-Muller transform (eight float32 pairs per
register, or four float64 ones), the interleave of the four lanes into element order.

Philox: `cpu_ensemble.philox4x32` (uint64 lanes, the high halves of the intermediate words left unmasked
until the four outputs: one mask per product, folded into vpmuludq).

Transform: `cpu_ensemble.box_muller_words_f32` in float32 (the ensemble kernel's too: short dependency
chains, within a few ulp of the reference), `cpu_ensemble.box_muller_uniform` in float64.
"""
import numba
import numpy as np
from numba import types
from numba.extending import overload

from .cpu_ensemble import MASK, box_muller_uniform, box_muller_words_f32, cast_like, philox4x32, uniform24

SH32 = np.uint64(32)


def is_single(x):  # pragma: no cover - replaced by the overload inside numba
    raise NotImplementedError


@overload(is_single)
def _is_single(x):
    """True for a float32 array (a constant after compilation: the other branch is removed)."""
    single = x.dtype == types.float32
    return lambda x: single


@numba.njit(error_model="numpy", nogil=True)
def fill_normals(z, wa, wb, ca, cb, group0, count, c1, c2, tag, k0, k1):
    """z[:4 count] = the normals of element groups group0 .. group0 + count - 1, in element order:
    counter (group & 0xffffffff, c1, c2, tag + (group >> 32) 16), lanes x0..x3 -> elements 4 group + lane.

    Scratch (2 count or more each): wa, wb uint32 (the words of the pairs (x0, x1) and (x2, x3)), ca, cb of
    z's dtype.
    """
    for j in range(count):
        grp = np.uint64(group0 + j)
        x0, x1, x2, x3 = philox4x32(grp & MASK, c1, c2, tag + (grp >> SH32) * np.uint64(16), k0, k1)
        wa[j] = np.uint32(x0)
        wb[j] = np.uint32(x1)
        wa[count + j] = np.uint32(x2)
        wb[count + j] = np.uint32(x3)
    if is_single(z):
        for i in range(2 * count):
            ca[i], cb[i] = box_muller_words_f32(wa[i], wb[i])
    else:
        one = cast_like(1.0, z[0])
        for i in range(2 * count):
            ca[i], cb[i] = box_muller_uniform(uniform24(np.uint64(wa[i]), 1, one), uniform24(np.uint64(wb[i]), 0, one))
    for j in range(count):
        z[4 * j] = ca[j]
        z[4 * j + 1] = cb[j]
        z[4 * j + 2] = ca[count + j]
        z[4 * j + 3] = cb[count + j]


@numba.njit(cache=True, error_model="numpy")
def normals(z, group0, step, parameter, tag, k0, k1):
    """z[:] = the normals of elements 4 group0 .. 4 group0 + len(z) - 1 of one stream (for tests); len(z) % 4 == 0."""
    count = z.shape[0] // 4
    wa = np.empty(2 * count, np.uint32)
    wb = np.empty(2 * count, np.uint32)
    ca = np.empty(2 * count, z.dtype)
    cb = np.empty(2 * count, z.dtype)
    fill_normals(z, wa, wb, ca, cb, group0, count, np.uint64(step), np.uint64(parameter), np.uint64(tag),
                 np.uint64(k0), np.uint64(k1))


@numba.njit(cache=True, error_model="numpy")
def philox_words(c0, c1, c2, c3, k0, k1):
    """philox4x32_lanes on arrays of counters (int64 holding uint32); returns [n, 4] uint32 (for tests)."""
    n = c0.shape[0]
    out = np.empty((n, 4), dtype=np.uint32)
    for i in range(n):
        x0, x1, x2, x3 = philox4x32(np.uint64(c0[i]), np.uint64(c1[i]), np.uint64(c2[i]), np.uint64(c3[i]),
                                          np.uint64(k0), np.uint64(k1))
        out[i, 0] = np.uint32(x0)
        out[i, 1] = np.uint32(x1)
        out[i, 2] = np.uint32(x2)
        out[i, 3] = np.uint32(x3)
    return out
