"""Philox4x32-10 helpers shared by the Triton kernels (docs/CONVENTIONS.md, "Random numbers").

`tl.philox(seed, c0, c1, c2, c3)` is the Random123 function with key
(seed & 0xffffffff, seed >> 32); these helpers turn its four uint32 outputs
into the project's fixed normal transform, computed in the working dtype
ACC (tl.float32 or tl.float64):

    u1 = ((x0 >> 8) + 1) * 2**-24        in (0, 1]
    u2 =  (x1 >> 8)      * 2**-24        in [0, 1)
    r  = sqrt(-2 log u1);  z0 = r cos(2 pi u2),  z1 = r sin(2 pi u2)
    z2, z3 likewise from (x2, x3)

In float32, normal_pair computes it as box_muller32 (one shared argument
reduction for sin and cos, polynomials for log, sin and cos, no call and
no branch): the same u1, u2 and angle bit for bit, the normals within a few
float32 ulps of the reference's (tests/test_triton_ensemble.py bounds it).

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
def _by_quadrant(s, c, q):
    """(sin, cos) of r + q pi/2 from s = sin r, c = cos r (the quadrant q in the low bits of an integer)."""
    odd = (q & 1) != 0
    sin_r = tl.where(odd, c, s)
    cos_r = tl.where(odd, s, c)
    # quadrant q: sin = (s, c, -s, -c)[q % 4], cos = (c, -s, -c, s)[q % 4]
    sin_v = tl.where((q & 2) != 0, -sin_r, sin_r)
    cos_v = tl.where(((q + 1) & 2) != 0, -cos_r, cos_r)
    return sin_v, cos_v


@triton.jit
def _f64(c: tl.constexpr):
    """The constant c as a float64 scalar. tl.fma converts a Python float argument on its own, and some tritons
    (3.6) round it to float32 before promoting it: up to 2^-24 off, where float64 needs 2^-53."""
    return tl.full([], c, tl.float64)


@triton.jit
def _sincos64(angle):
    """(sin, cos) of a float64 angle in [0, 2 pi): one argument reduction shared by both."""
    t = angle * TWO_OVER_PI_64 + ROUND_MAGIC_64
    q = t.to(tl.int64, bitcast=True)  # the quadrant in the low bits (t in [2^52, 2^53))
    j = t - ROUND_MAGIC_64
    r = tl.fma(j, _f64(-PIO2_64_HI), angle)  # exact: |r| < 1 and a multiple of 2^-52
    r = tl.fma(j, _f64(-PIO2_64_LO), r)
    z = r * r
    ps = tl.fma(_f64(SIN64_S6), z, _f64(SIN64_S5))
    ps = tl.fma(ps, z, _f64(SIN64_S4))
    ps = tl.fma(ps, z, _f64(SIN64_S3))
    ps = tl.fma(ps, z, _f64(SIN64_S2))
    ps = tl.fma(ps, z, _f64(SIN64_S1))
    s = tl.fma(ps * z, r, r)
    pc = tl.fma(_f64(COS64_C6), z, _f64(COS64_C5))
    pc = tl.fma(pc, z, _f64(COS64_C4))
    pc = tl.fma(pc, z, _f64(COS64_C3))
    pc = tl.fma(pc, z, _f64(COS64_C2))
    pc = tl.fma(pc, z, _f64(COS64_C1))
    # 1 - z/2 + z^2 pc, with fdlibm's split so that 1 - z/2 loses nothing
    hz = 0.5 * z
    w = 1.0 - hz
    c = w + (((1.0 - w) - hz) + z * (z * pc))
    return _by_quadrant(s, c, q)


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


# --- the float32 transform without libdevice's logf, sinf and cosf ------------------------------

# log u1 for u1 in [2^-24, 1] (an exact float): u1 = m 2^e with m in [2/3, 4/3) by integer operations on
# the bits, log(m) = f - f^2/2 + f^3 P(f), f = m - 1 (exact), P a weighted least-squares fit of degree 6
# on [-1/3, 1/3]: within 1 ulp of the correctly rounded log over all 2^24 values of u1, and relative
# (not absolute) accuracy near u1 = 1, where log u1 -> 0 and the small normals come from.
LOG32_P0: tl.constexpr = tl.constexpr(0.33333131670951843)
LOG32_P1: tl.constexpr = tl.constexpr(-0.25005441904067993)
LOG32_P2: tl.constexpr = tl.constexpr(0.20014329254627228)
LOG32_P3: tl.constexpr = tl.constexpr(-0.16443398594856262)
LOG32_P4: tl.constexpr = tl.constexpr(0.1395101249217987)
LOG32_P5: tl.constexpr = tl.constexpr(-0.15287844836711884)
LOG32_P6: tl.constexpr = tl.constexpr(0.14223569631576538)
LOG32_TWO_THIRDS_BITS: tl.constexpr = tl.constexpr(0x3F2AAAAB)  # float32(2/3): where the mantissa range starts
LOG32_EXPONENT_MASK: tl.constexpr = tl.constexpr(-8388608)  # 0xff800000 as int32: sign and exponent
LOG32_LN2_PER_EXPONENT_UNIT: tl.constexpr = tl.constexpr(8.262958317573066e-08)  # float32(ln 2) 2^-23, exact
# sin and cos on [-pi/4, pi/4]: sin r = r + r^3 S(r^2), cos r = 1 - r^2/2 + r^4 C(r^2), weighted least-squares
# fits of degree 2 in r^2, after a reduction by pi/2 in three parts (float32(pi/2) and two remainders)
SIN32_S0: tl.constexpr = tl.constexpr(-0.16666653752326965)
SIN32_S1: tl.constexpr = tl.constexpr(0.00833214819431305)
SIN32_S2: tl.constexpr = tl.constexpr(-0.00019513937877491117)
COS32_C0: tl.constexpr = tl.constexpr(0.04166664555668831)
COS32_C1: tl.constexpr = tl.constexpr(-0.0013887289678677917)
COS32_C2: tl.constexpr = tl.constexpr(2.4430579287582077e-05)
PIO2_32_1: tl.constexpr = tl.constexpr(1.5707963705062866)
PIO2_32_2: tl.constexpr = tl.constexpr(-4.371138828673793e-08)
PIO2_32_3: tl.constexpr = tl.constexpr(-1.7151245100058819e-15)
TWO_OVER_PI_32: tl.constexpr = tl.constexpr(0.6366197466850281)
ROUND_MAGIC_32: tl.constexpr = tl.constexpr(12582912.0)  # 1.5 * 2^23: x + it - it rounds x
# float32(2 pi) 2^-24 (exact): k times it rounds as float32(2 pi) times u2 = k 2^-24 does (no subnormals)
TWO_PI_32_PER_UNIT: tl.constexpr = tl.constexpr(3.7450703871400037e-07)


@triton.jit
def _log32(u):
    """log of a float32 u in [2^-24, 1]: one integer split, one polynomial, no call and no branch."""
    bits = u.to(tl.int32, bitcast=True)
    e = (bits - LOG32_TWO_THIRDS_BITS) & LOG32_EXPONENT_MASK  # the exponent, in units of 2^23
    m = (bits - e).to(tl.float32, bitcast=True)  # in [2/3, 4/3)
    f = m - 1.0
    p = tl.fma(LOG32_P6, f, LOG32_P5)
    p = tl.fma(p, f, LOG32_P4)
    p = tl.fma(p, f, LOG32_P3)
    p = tl.fma(p, f, LOG32_P2)
    p = tl.fma(p, f, LOG32_P1)
    p = tl.fma(p, f, LOG32_P0)
    p = tl.fma(p, f, -0.5)
    lm = tl.fma(p, f * f, f)
    return tl.fma(e.to(tl.float32), LOG32_LN2_PER_EXPONENT_UNIT, lm)


@triton.jit
def _sincos32(angle):
    """(sin, cos) of a float32 angle in [0, 2 pi): one argument reduction shared by both (libdevice reduces
    twice and tests twice for its Payne-Hanek path, which an angle below 2 pi never needs)."""
    t = tl.fma(angle, TWO_OVER_PI_32, ROUND_MAGIC_32)
    q = t.to(tl.int32, bitcast=True)  # the quadrant in the low bits
    j = t - ROUND_MAGIC_32
    r = tl.fma(j, -PIO2_32_1, angle)  # exact
    r = tl.fma(j, -PIO2_32_2, r)
    r = tl.fma(j, -PIO2_32_3, r)
    z = r * r
    ps = tl.fma(SIN32_S2, z, SIN32_S1)
    ps = tl.fma(ps, z, SIN32_S0)
    s = tl.fma(ps * z, r, r)
    pc = tl.fma(COS32_C2, z, COS32_C1)
    pc = tl.fma(pc, z, COS32_C0)
    c = tl.fma(pc * z, z, tl.fma(z, -0.5, 1.0))
    return _by_quadrant(s, c, q)


@triton.jit
def box_muller32(xa, xb):
    """box_muller(xa, xb, tl.float32) with _log32 and _sincos32 in place of libdevice's logf, sinf and cosf:
    the same u1, u2 and angle (bit for bit), the normals within a few float32 ulps (tests bound it)."""
    u1 = ((xa >> 8) + 1).to(tl.float32) * PHILOX_TWO_POW_M24
    r = tl.sqrt(-2.0 * _log32(u1))
    sin_v, cos_v = _sincos32((xb >> 8).to(tl.float32) * TWO_PI_32_PER_UNIT)
    return r * cos_v, r * sin_v


@triton.jit
def normal_pair(xa, xb, ACC: tl.constexpr):
    """box_muller(xa, xb, ACC), the CONVENTIONS transform, without out-of-line code. float64: sin and cos
    from _sincos64 (agreement with correctly rounded ones to about an ulp; tests check it); float32:
    box_muller32 (a third of libdevice's instructions)."""
    if ACC == tl.float64:
        u1 = ((xa >> 8) + 1).to(tl.float64) * PHILOX_TWO_POW_M24
        u2 = (xb >> 8).to(tl.float64) * PHILOX_TWO_POW_M24
        r = _sqrt64(-2.0 * tl.log(u1))
        sin_v, cos_v = _sincos64(PHILOX_TWO_PI * u2)
        return r * cos_v, r * sin_v
    else:
        return box_muller32(xa, xb)
