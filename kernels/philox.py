"""Philox4x32-10 helpers shared by the Triton kernels (docs/CONVENTIONS.md, "Random numbers").

`tl.philox(seed, c0, c1, c2, c3)` is the Random123 function with key
(seed & 0xffffffff, seed >> 32); these helpers turn its four uint32 outputs
into the project's fixed normal transform, computed in the working dtype
ACC (tl.float32 or tl.float64):

    u1 = ((x0 >> 8) + 1) * 2**-24        in (0, 1]
    u2 =  (x1 >> 8)      * 2**-24        in [0, 1)
    r  = sqrt(-2 log u1);  z0 = r cos(2 pi u2),  z1 = r sin(2 pi u2)
    z2, z3 likewise from (x2, x3)

Several kernels use this file: add functions, never rewrite another's.
"""
import triton
import triton.language as tl

PHILOX_TWO_PI: tl.constexpr = tl.constexpr(6.283185307179586)  # float(2 * math.pi)
PHILOX_TWO_POW_M24: tl.constexpr = tl.constexpr(5.9604644775390625e-08)  # 2**-24, exact in any dtype


@triton.jit
def uniform24(x, ACC: tl.constexpr):
    """Top 24 bits of a uint32 as a uniform in [0, 1) (exact in float32 and float64)."""
    return (x >> 8).to(ACC) * PHILOX_TWO_POW_M24


@triton.jit
def box_muller(xa, xb, ACC: tl.constexpr):
    """Two standard normals from two uint32 words, exactly the CONVENTIONS transform."""
    u1 = ((xa >> 8) + 1).to(ACC) * PHILOX_TWO_POW_M24
    u2 = (xb >> 8).to(ACC) * PHILOX_TWO_POW_M24
    r = tl.sqrt(-2.0 * tl.log(u1))
    angle = PHILOX_TWO_PI * u2
    return r * tl.cos(angle), r * tl.sin(angle)


@triton.jit
def normals4_from_bits(x0, x1, x2, x3, ACC: tl.constexpr):
    """The four normals (lanes 0..3) of one Philox call's four uint32 outputs."""
    z0, z1 = box_muller(x0, x1, ACC)
    z2, z3 = box_muller(x2, x3, ACC)
    return z0, z1, z2, z3


@triton.jit
def philox_normals4(seed, c0, c1, c2, c3, ACC: tl.constexpr):
    """Four normals of counter (c0, c1, c2, c3) under `seed`; counters are uint32 tensors of one shape."""
    x0, x1, x2, x3 = tl.philox(seed, c0, c1, c2, c3)
    return normals4_from_bits(x0, x1, x2, x3, ACC)


# --- the float64 transform without libdevice's out-of-line argument reduction -------------------

# sin and cos on [-pi/4, pi/4]: fdlibm's __kernel_sin / __kernel_cos polynomials, after a reduction by
# pi/2 in two parts (float64(pi/2) and its float64 remainder). The angle 2 pi u2 lies in [0, 2 pi), so
# libdevice's Payne-Hanek path (a call: registers saved to the stack around it) is never needed.
SIN64_S1: tl.constexpr = tl.constexpr(-1.66666666666666324348e-01)
SIN64_S2: tl.constexpr = tl.constexpr(8.33333333332248946124e-03)
SIN64_S3: tl.constexpr = tl.constexpr(-1.98412698298579493134e-04)
SIN64_S4: tl.constexpr = tl.constexpr(2.75573137070700676789e-06)
SIN64_S5: tl.constexpr = tl.constexpr(-2.50507602534068634195e-08)
SIN64_S6: tl.constexpr = tl.constexpr(1.58969099521155010221e-10)
COS64_C1: tl.constexpr = tl.constexpr(4.16666666666666019037e-02)
COS64_C2: tl.constexpr = tl.constexpr(-1.38888888888741095749e-03)
COS64_C3: tl.constexpr = tl.constexpr(2.48015872894767294178e-05)
COS64_C4: tl.constexpr = tl.constexpr(-2.75573143513906633035e-07)
COS64_C5: tl.constexpr = tl.constexpr(2.08757232129817482790e-09)
COS64_C6: tl.constexpr = tl.constexpr(-1.13596475577881948265e-11)
PIO2_64_HI: tl.constexpr = tl.constexpr(1.5707963267948966)
PIO2_64_LO: tl.constexpr = tl.constexpr(6.123233995736766e-17)
TWO_OVER_PI_64: tl.constexpr = tl.constexpr(0.6366197723675814)
ROUND_MAGIC_64: tl.constexpr = tl.constexpr(6755399441055744.0)  # 1.5 * 2^52: x + it - it rounds x


@triton.jit
def _sincos64(angle):
    """(sin, cos) of a float64 angle in [0, 2 pi): one argument reduction shared by both."""
    t = angle * TWO_OVER_PI_64 + ROUND_MAGIC_64
    q = t.to(tl.int64, bitcast=True)  # the quadrant in the low bits (t in [2^52, 2^53))
    j = t - ROUND_MAGIC_64
    r = tl.fma(j, -PIO2_64_HI, angle)  # exact: |r| < 1 and a multiple of 2^-52
    r = tl.fma(j, -PIO2_64_LO, r)
    z = r * r
    ps = tl.fma(SIN64_S6, z, SIN64_S5)
    ps = tl.fma(ps, z, SIN64_S4)
    ps = tl.fma(ps, z, SIN64_S3)
    ps = tl.fma(ps, z, SIN64_S2)
    ps = tl.fma(ps, z, SIN64_S1)
    s = tl.fma(ps * z, r, r)
    pc = tl.fma(COS64_C6, z, COS64_C5)
    pc = tl.fma(pc, z, COS64_C4)
    pc = tl.fma(pc, z, COS64_C3)
    pc = tl.fma(pc, z, COS64_C2)
    pc = tl.fma(pc, z, COS64_C1)
    # 1 - z/2 + z^2 pc, with fdlibm's split so that 1 - z/2 loses nothing
    hz = 0.5 * z
    w = 1.0 - hz
    c = w + (((1.0 - w) - hz) + z * (z * pc))
    odd = (q & 1) != 0
    sin_r = tl.where(odd, c, s)
    cos_r = tl.where(odd, s, c)
    # quadrant q: sin = (s, c, -s, -c)[q % 4], cos = (c, -s, -c, s)[q % 4]
    sin_v = tl.where((q & 2) != 0, -sin_r, sin_r)
    cos_v = tl.where(((q + 1) & 2) != 0, -cos_r, cos_r)
    return sin_v, cos_v


@triton.jit
def _sqrt64(x):
    """sqrt of a float64 x in [2^-30, 64] (-2 log u1), within an ulp of correctly rounded: the float32
    rsqrt estimate (one MUFU op) refined by two Newton-Raphson steps and one correction of the root, where
    the float64 sqrt and rsqrt reach out-of-line paths (calls) for inputs that never occur here."""
    y = tl.math.rsqrt(x.to(tl.float32)).to(tl.float64)
    h = 0.5 * x
    y = tl.fma(y, tl.fma(-h * y, y, 0.5), y)
    y = tl.fma(y, tl.fma(-h * y, y, 0.5), y)
    s = x * y
    return tl.fma(tl.fma(-s, s, x), 0.5 * y, s)


@triton.jit
def normal_pair(xa, xb, ACC: tl.constexpr):
    """box_muller(xa, xb, ACC), the CONVENTIONS transform. float64: sin and cos from _sincos64 (agreement
    with correctly rounded ones to about an ulp; tests check it), so the kernel calls no out-of-line
    reduction; float32: box_muller itself."""
    if ACC == tl.float64:
        u1 = ((xa >> 8) + 1).to(tl.float64) * PHILOX_TWO_POW_M24
        u2 = (xb >> 8).to(tl.float64) * PHILOX_TWO_POW_M24
        r = _sqrt64(-2.0 * tl.log(u1))
        sin_v, cos_v = _sincos64(PHILOX_TWO_PI * u2)
        return r * cos_v, r * sin_v
    else:
        return box_muller(xa, xb, ACC)
