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


# --- the whole step in one pass: update, inertia sums, noise ------------------------------------------
#
# torch.optim.SGD(foreach=True)'s float arithmetic, element by element, so that without noise the result
# is bitwise torch's: every `x.add_(y, alpha=a)` of the foreach sequence is one fused multiply-add
# fma(y, a, x) in the working dtype (ATen's vectorised add), a multiplication by a scalar one rounding,
# and every scalar is first rounded to the working dtype (ATen's opmath for float32 and float64).
# Every tensor of the step is cut into BLOCK-element blocks, and all the blocks of all the tensors go
# over the threads in one prange (fused_steps: one launch per step, small tensors shared out); a
# block's float64 partials are combined in tensor and block order afterwards, so the sums do not
# depend on the thread count. Inside a block, SUB elements at a time (L1-resident): the noise (its
# chunk's lines prefetched first, so the loads overlap the arithmetic), then the sums, then the
# update, each a loop the compiler vectorises. Only the sums' loop may be reassociated; the update's
# order is IEEE's.

from llvmlite import ir  # noqa: E402
from numba import prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from .cpu_ensemble import cast_like, fma  # noqa: E402
from .normals_cpu import fill_normals  # noqa: E402

SUB = 512  # elements per inner pass (a multiple of 4: the noise's groups of four)
N_PARTIALS = 4  # sum b^2, sum b d, sum q^2, sum b q
LINE = 64  # bytes per cache line


@intrinsic
def prefetch(typingctx, arr, index, write):
    """Ask for the cache line of arr[index] (llvm.prefetch: prefetcht0, or prefetchw where `write`, a
    literal bool); no effect on values."""
    if not isinstance(write, types.BooleanLiteral):
        return None

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [args[1]], wraparound=False)
        bytes_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", [bytes_ptr],
                                              ir.FunctionType(ir.VoidType(), [bytes_ptr, i32, i32, i32]))
        builder.call(fn, [builder.bitcast(ptr, bytes_ptr), i32(int(write.literal_value)), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.none(arr, index, write), codegen


@numba.njit(inline="always")
def _prefetch_range(p, g, b, lo, hi):
    """The lines of p, g, b over [lo, hi) on their way to L1 (p and b for writing)."""
    step = LINE // p.itemsize
    for i in range(lo, hi, step):
        prefetch(p, i, True)
        prefetch(g, i, False)
        prefetch(b, i, True)


@numba.njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy", nogil=True)
def _sub_sums(b, g, p, z, sign, scale, weight_decay, qscale, with_state, noisy, acc):
    """acc += (sum b^2, sum b d, sum q^2, sum b q) in float64, d = sign g / scale + weight_decay p,
    q = qscale xi; the state terms only where with_state (an existing buffer). With both, one loop
    (b read and widened once)."""
    n = g.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    plain = scale == 1.0 and weight_decay == 0.0
    if with_state and noisy and plain:
        for i in range(n):
            x = np.float64(b[i])
            q = np.float64(z[i]) * qscale
            s0 += x * x
            s1 += x * np.float64(g[i])
            s2 += q * q
            s3 += x * q
        s1 = sign * s1
    else:
        if with_state:
            if plain:
                for i in range(n):
                    x = np.float64(b[i])
                    s0 += x * x
                    s1 += x * np.float64(g[i])
                s1 = sign * s1
            else:
                for i in range(n):
                    x = np.float64(b[i])
                    d = sign * np.float64(g[i]) / scale + weight_decay * np.float64(p[i])
                    s0 += x * x
                    s1 += x * d
        if noisy:
            if with_state:
                for i in range(n):
                    q = np.float64(z[i]) * qscale
                    s2 += q * q
                    s3 += np.float64(b[i]) * q
            else:
                for i in range(n):
                    q = np.float64(z[i]) * qscale
                    s2 += q * q
    acc[0] += s0
    acc[1] += s1
    acc[2] += s2
    acc[3] += s3


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sub_update(p, g, b, z, lr, momentum, dampening, weight_decay, nesterov, maximize, std, noisy, new_buffer):
    """torch.optim.SGD(foreach=True)'s update of p and b (plus noise: d += std xi), IEEE order."""
    one = cast_like(1.0, p[0])
    wd = cast_like(weight_decay, one)
    s = cast_like(std, one)
    mu = cast_like(momentum, one)
    c = cast_like(1.0 - dampening, one)
    step = cast_like(-lr, one)
    heavy = momentum != 0.0
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if weight_decay != 0.0:
            d = fma(p[i], wd, d)
        if noisy:
            d = fma(z[i], s, d)
        u = d
        if heavy:
            if new_buffer:
                bi = d
            else:
                bi = fma(d, c, b[i] * mu)
            b[i] = bi
            u = fma(bi, mu, d) if nesterov else bi
        p[i] = fma(u, step, p[i])


@numba.njit(inline="always", error_model="numpy")
def _block(p, g, b, lo_block, hi_block, lr, momentum, dampening, weight_decay, nesterov, maximize, std, new_buffer,
           step, parameter, tag, k0, k1, acc):
    """fused_step's work on elements [lo_block, hi_block) of one tensor, SUB at a time; acc (float64
    [N_PARTIALS]) += its partial sums."""
    noisy = std != 0.0
    heavy = momentum != 0.0
    with_state = heavy and not new_buffer
    qscale = std if new_buffer else (1.0 - dampening) * std
    sign = -1.0 if maximize else 1.0
    c1 = np.uint64(step)
    c2 = np.uint64(parameter)
    c3 = np.uint64(tag)
    wa = np.empty(SUB // 2, dtype=np.uint32)
    wb = np.empty(SUB // 2, dtype=np.uint32)
    ca = np.empty(SUB // 2, dtype=p.dtype)
    cb = np.empty(SUB // 2, dtype=p.dtype)
    z = np.zeros(SUB, dtype=p.dtype)
    for lo in range(lo_block, hi_block, SUB):
        hi = min(hi_block, lo + SUB)
        if noisy:  # the chunk's loads overlap the noise's arithmetic
            _prefetch_range(p, g, b, lo, hi)
            fill_normals(z, wa, wb, ca, cb, lo // 4, (hi - lo + 3) // 4, c1, c2, c3, k0, k1)
        if heavy:
            _sub_sums(b[lo:hi], g[lo:hi], p[lo:hi], z, sign, 1.0, weight_decay, qscale, with_state,
                      noisy and heavy, acc)
        _sub_update(p[lo:hi], g[lo:hi], b[lo:hi], z, lr, momentum, dampening, weight_decay, nesterov,
                    maximize, std, noisy, new_buffer)


def fused_step(p, g, b, lr, momentum, dampening, weight_decay, nesterov, maximize, std, new_buffer,
               step, parameter, tag, k0, k1, out):
    """One InertiaSGD step of one tensor (flat contiguous arrays of one dtype, float32 or float64) in place.

    b: the momentum buffer (written; with new_buffer its old contents are ignored: b = d, torch's
    first step; unused when momentum == 0). std: the noise std (0: none), drawing
    rng.optimizer_normals(numel, step, parameter) (tag: rng.TAG_OPTIMIZER; k0, k1 the seed's key words).
    out (float64 [3]) += (sum b^2, sum <b, d>, sum <q, 2 momentum b + q>) of the state before the
    update, q = c std xi the noise the buffer receives (c = 1 - dampening, 1 for a new buffer).
    fused_steps with one tensor.
    """
    arrays = (p, g, b)
    if any(a.dtype != p.dtype or a.ndim != 1 or not a.flags.c_contiguous or a.size != p.size for a in arrays):
        raise ValueError("fused_step takes flat contiguous arrays of one dtype and size")
    if p.size == 0:
        return
    at = [np.array([a.ctypes.data], dtype=np.int64) for a in arrays]
    fused_steps(p[:0], *at, np.array([p.size], dtype=np.int64), np.array([parameter], dtype=np.int64),
                np.array([new_buffer], dtype=np.bool_), lr, momentum, dampening, weight_decay, nesterov, maximize,
                std, step, tag, k0, k1, out)


@numba.njit(inline="always")
def _add_partials(partials, momentum, out):
    """out += the blocks' partials, in block order (the same sums for any thread count)."""
    for blk in range(partials.shape[0]):
        out[0] += partials[blk, 0]
        out[1] += partials[blk, 1]
        out[2] += partials[blk, 2] + 2.0 * momentum * partials[blk, 3]


@intrinsic
def _pointer(typingctx, address, like):
    """An integer address as a pointer to the dtype of the array `like` (numba.carray views the data)."""
    if not isinstance(like, types.Array):
        return None
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))
    return pointer(address, like), codegen


@numba.njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def fused_steps(like, p_at, g_at, b_at, sizes, parameters, new_buffers, lr, momentum, dampening, weight_decay,
                nesterov, maximize, std, step, tag, k0, k1, out):
    """fused_step over several tensors in one call: their blocks shared out over the threads together
    (a small tensor costs no thread launch of its own, and the threads share the small ones).

    Tensor k: the flat contiguous data of sizes[k] > 0 elements of like's dtype at the addresses
    p_at[k], g_at[k], b_at[k] (int64; the caller keeps the tensors alive), parameter index
    parameters[k], new_buffers[k] as fused_step's new_buffer. out gets the same sums, added in the
    same order, as fused_step tensor after tensor.
    """
    count = sizes.shape[0]
    first = np.zeros(count + 1, dtype=np.int64)  # tensor k's blocks: first[k] .. first[k + 1] - 1
    for k in range(count):
        first[k + 1] = first[k] + (sizes[k] + BLOCK - 1) // BLOCK
    n_blocks = first[count]
    owner = np.empty(n_blocks, dtype=np.int64)
    for k in range(count):
        owner[first[k]:first[k + 1]] = k
    partials = np.zeros((n_blocks, N_PARTIALS))
    kk0 = np.uint64(k0)
    kk1 = np.uint64(k1)
    for blk in prange(n_blocks):
        k = owner[blk]
        n = sizes[k]
        p = numba.carray(_pointer(p_at[k], like), n)
        g = numba.carray(_pointer(g_at[k], like), n)
        b = numba.carray(_pointer(b_at[k], like), n)
        lo = (blk - first[k]) * BLOCK
        _block(p, g, b, lo, min(n, lo + BLOCK), lr, momentum, dampening, weight_decay, nesterov, maximize, std,
               new_buffers[k], step, parameters[k], tag, kk0, kk1, partials[blk])
    _add_partials(partials, momentum, out)
