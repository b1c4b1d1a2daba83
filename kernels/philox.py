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
