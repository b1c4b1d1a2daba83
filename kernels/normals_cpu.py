"""The optimizer's normals on the CPU (numba), in SIMD lanes: the docs/CONVENTIONS.md stream, fast.

`fill_normals` writes the normals of consecutive element groups (one Philox4x32-10 call per group of
four elements) in element order, from a SUB-sized scratch that stays in L1. Three loops the compiler
vectorises: Philox (four groups per AVX2 register), the Box-Muller transform (eight float32 pairs per
register, or four float64 ones), the interleave of the four lanes into element order.

Philox: `cpu_ensemble.philox4x32` (uint64 lanes, the high halves of the intermediate words left unmasked
until the four outputs: one mask per product, folded into vpmuludq).

Transform (float32): the CONVENTIONS Box-Muller with the reference's roundings of u1, u2 and of the
angle 2 pi u2, log/sin/cos as polynomials with fused multiply-adds and integer range reduction (no
compare-and-blend ladders): within a few ulp of the reference. An iteration is one long dependency
chain (log, square root, sin/cos) that out-of-order execution overlaps with only a couple of others, so
the chains are kept short: the polynomials in Estrin's scheme, -2 folded into the log's coefficients,
the quadrant rounded in the mantissa. float64 uses `cpu_ensemble.box_muller_uniform` as it is.
"""
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from .cpu_ensemble import MASK, _bitcast, box_muller_uniform, cast_like, philox4x32, uniform24

SH32 = np.uint64(32)


@intrinsic
def fma(typingctx, x, y, z):
    """x * y + z with one rounding (llvm.fma: the FMA instruction), in the dtype of the three."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return x(x, y, z), codegen


_f32_bits = _bitcast(types.float32, types.int32)
_bits_f32 = _bitcast(types.int32, types.float32)

# fdlibm's logf (e_logf.c): log(1 + f) = 2 atanh s = s (2 + R(s^2)), s = f / (2 + f), R(z) = LG1 z + .. + LG4 z^4
LG1 = 0.66666662693
LG2 = 0.40000972152
LG3 = 0.28498786688
LG4 = 0.24279078841
MINUS_2LN2 = -1.3862943611198906
# log k for an integer k = 2^e m, m in [sqrt(1/2), sqrt(2)): adding 1 - sqrt(1/2) in the bits carries into
# the exponent; u1 = k 2^-24, so e counts from 127 + 24
LOG_SHIFT = 0x3F800000 - 0x3F3504F3
LOG_BIAS = 127 + 24
# fdlibm's sin/cos kernels on [-pi/4, pi/4] (k_sin.c, k_cos.c; past S4, C4 the terms are below float32's
# half ulp); pi/2 in three parts, the first two short enough that q * part is exact for the quadrants
# q <= 4 of [0, 2 pi]
from .cpu_ensemble import C1, C2, C3, C4, S1, S2, S3, S4  # noqa: E402
from .cpu_ensemble import PIO2_1_32 as PIO2_1, PIO2_2_32 as PIO2_2, PIO2_3_32 as PIO2_3  # noqa: E402
TWO_OVER_PI = 0.6366197723675814
TWO_PI = 6.283185307179586
TWO_M24 = 5.9604644775390625e-08
# 1.5 2^23: x + ROUND in (2^23, 2^24) for |x| < 2^22, where a float32's ulp is 1, so the sum is x rounded to
# an integer, which the low mantissa bits hold
ROUND = 12582912.0
ROUND_BITS = 0x4B400000


@numba.njit(inline="always", error_model="numpy")
def _minus_2log_f32(k):
    """-2 log(k 2^-24) for an integer-valued float32 k in [1, 2^24], within an ulp or two.

    Short dependency chains (see the module docstring): the terms of R in Estrin's scheme, -2 folded
    into the coefficients (exact)."""
    f32 = np.float32
    ix = np.int32(_f32_bits(k) + np.int32(LOG_SHIFT))
    e = f32(np.int32((ix >> np.int32(23)) - np.int32(LOG_BIAS)))
    m = _bits_f32(np.int32((ix & np.int32(0x007FFFFF)) + np.int32(0x3F3504F3)))
    s = (m - f32(1.0)) / (m + f32(1.0))
    z = s * s
    lo = fma(z, f32(-2.0 * LG2), f32(-2.0 * LG1))
    hi = fma(z, f32(-2.0 * LG4), f32(-2.0 * LG3))
    t = fma(z, fma(z * z, hi, lo), f32(-4.0))  # -2 (2 + R(z))
    return fma(s, t, e * f32(MINUS_2LN2))


@numba.njit(inline="always", error_model="numpy")
def _flip(x, sign):
    """x with its sign bit flipped where bit 31 of `sign` is set."""
    return _bits_f32(np.int32(_f32_bits(x) ^ (sign & np.int32(-2147483648))))


@numba.njit(inline="always", error_model="numpy")
def box_muller_words_f32(xa, xb):
    """The CONVENTIONS normals (r cos, r sin) of two uint32 words (held in any unsigned integer), float32.

    u2 and the angle 2 pi u2 rounded as the reference rounds them; the quadrant q by rounding in the
    mantissa (no float -> int conversions), sin and cos of the reduced angle in Estrin's scheme."""
    f32 = np.float32
    r = np.sqrt(_minus_2log_f32(f32(np.int32(xa >> np.uint32(8)) + np.int32(1))))
    a = f32(TWO_PI) * (f32(np.int32(xb >> np.uint32(8))) * f32(TWO_M24))
    qr = fma(a, f32(TWO_OVER_PI), f32(ROUND))
    qi = np.int32(_f32_bits(qr) - np.int32(ROUND_BITS))  # the quadrant, 0..4
    q = f32(ROUND) - qr
    x = fma(q, f32(PIO2_3), fma(q, f32(PIO2_2), fma(q, f32(PIO2_1), a)))
    z = x * x
    z2 = z * z
    sn = fma(x * z, fma(z2, fma(z, f32(S4), f32(S3)), fma(z, f32(S2), f32(S1))), x)
    cs = fma(z2, fma(z2, fma(z, f32(C4), f32(C3)), fma(z, f32(C2), f32(C1))), fma(f32(-0.5), z, f32(1.0)))
    odd = (qi & np.int32(1)) != 0
    s0 = cs if odd else sn
    c0 = sn if odd else cs
    # sin is negative in quadrants 2, 3; cos in 1, 2: bit 1 of q, of q + 1, moved to the sign bit
    s1 = _flip(s0, np.int32(qi << np.int32(30)))
    c1 = _flip(c0, np.int32(np.int32(qi + np.int32(1)) << np.int32(30)))
    return r * c1, r * s1


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
