"""InertiaSGD's inertia sums on the CPU (numba): one read of b and g (and p with weight decay), no float64 copies.

For one tensor, in float64 from the working-dtype values (float32 or float64):

    sums[0] = sum b^2,   sums[1] = sum b d,   d = sign g / scale + weight_decay p

(b^2 of a float32 value is exact in float64; d is formed as the foreach path forms it.) The tensor is
cut into blocks of BLOCK elements whose partials are added in block order. Inside a block the
compiler may reassociate the sums (fastmath "reassoc": vectorised, several accumulators), fixed by
the compiled code, so the result is reproducible on a machine; "contract" fuses b * b + s into one
FMA, which changes nothing (the product of two float32 values is exact in float64) but time.
"""
import numba
import numpy as np

BLOCK = 1 << 14


@numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
def _block_sums(b, g, p, lo, hi, sign, scale, weight_decay):
    # slices indexed from 0: the compiler sees non-negative indices (no wraparound select) and vectorises
    bb, gg, pp = b[lo:hi], g[lo:hi], p[lo:hi]
    s0 = 0.0
    s1 = 0.0
    if scale == 1.0 and weight_decay == 0.0:
        for i in range(bb.shape[0]):
            x = np.float64(bb[i])
            s0 += x * x
            s1 += x * np.float64(gg[i])
        return s0, sign * s1  # the sign of every term at once: the same rounding
    for i in range(bb.shape[0]):
        x = np.float64(bb[i])
        d = sign * np.float64(gg[i]) / scale + weight_decay * np.float64(pp[i])
        s0 += x * x
        s1 += x * d
    return s0, s1


@numba.njit(cache=True, nogil=True)
def add_inertia_sums(b, g, p, sign, scale, weight_decay, out):
    """out[0] += sum b^2, out[1] += sum b d over flat numpy arrays of one dtype (float32 or float64).

    scale: the AMP grad scale (1.0 without AMP). One thread: a second pool beside torch's OpenMP
    threads makes both wait on a busy machine, and the sums read half the bytes the update moves.
    """
    n = b.shape[0]
    for lo in range(0, n, BLOCK):
        s0, s1 = _block_sums(b, g, p, lo, min(n, lo + BLOCK), sign, scale, weight_decay)
        out[0] += s0
        out[1] += s1
