"""Fused heavy-ball SGD step with gradient noise and the inertia reduction.

One kernel family for `inertia_gpu.InertiaSGD`: every torch.optim.SGD option
(weight decay, dampening, nesterov, maximize, AMP grad_scale / found_inf) is
a `tl.constexpr` switch, so each combination compiles to straight-line code.
A launch walks all parameters of one (group, dtype) through a pointer table,
so a model with hundreds of tensors costs one launch, not hundreds:

    table[row] = (param, grad, buffer, numel, parameter_index, first_block, first_step, 0)   int64
    (first_block: the tensor's first program in the launch plan; the kernel reads block_index instead)

param, grad, buffer: element offsets of the tensors from base_ptr (a pointer argument of the
launch's dtype: the first parameter). Every tensor's address is a multiple of its element size,
so the offsets are exact.

first_step = 1 marks a momentum buffer that does not exist yet: the launcher creates it zero-filled,
this step writes b = g (torch's first step) and counts b_k = 0 in the sums.
    block_row[pid] = row of the tensor program `pid` works on        int32
    block_index[pid] = which BLOCK of that tensor (start = block_index * BLOCK)   int32

MASKED (a constexpr): a launch of whole blocks (every element of the program's BLOCK below numel,
and no AMP skip flag) needs no masks: no per-element compares, no zeroed registers for masked-off
lanes, no masking of the noise; the launcher sends each tensor's last, partial block (and every
block when found_inf may skip the step) to a second, MASKED launch.

Each program covers BLOCK elements of one tensor in tiles of TILE elements (VEC contiguous
elements per thread, VEC * element size = 16 bytes), reads p, g, b once, writes p, b once (20
bytes per float32 parameter with momentum), keeps its inertia terms per thread in registers across
the tiles and writes two per-block partial sums, both of the state *before* the update:

    partials[pid] = (sum b_k^2, sum <b_k, d_k>, sum <q_k, 2 momentum b_k + q_k>)
        d_k = noise-free update direction, q_k = the noise put into the buffer (for the ledger)

in float64: products of the working-dtype values formed exactly in float64, d_k itself formed in
float64 from the gradient (as the foreach implementation does), weight decay passed as a float32
pair wd_hi + wd_lo (~48 bits; Triton passes Python floats as fp32). The host adds the partials in
float64 (no float atomics: results are deterministic). Noise follows docs/CONVENTIONS.md (optimizer
stream): one Philox call per four consecutive elements, all four normals used.

ALIGNED (a constexpr): the launcher found base_ptr and every tensor of the launch 16-byte aligned
and every numel a multiple of VEC, and tells the compiler (tl.multiple_of on the offsets), which then
emits 128-bit loads and stores (LDG.E.128 / STG.E.128); other tensors go to a launch without hints.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice as fast_math  # the MUFU approximations (GPU only; see _box_muller_fast)

from .philox import PHILOX_TWO_PI, PHILOX_TWO_POW_M24, box_muller

TABLE_COLUMNS = 8  # for the launcher; the kernel's copy is a constexpr (compiled code may read no other globals)
ALIGN_BYTES = 16  # ALIGNED launches: every pointer a multiple of this, every numel of VEC (the launcher checks)
_COLUMNS = tl.constexpr(TABLE_COLUMNS)
TAG_OPTIMIZER = tl.constexpr(3)  # c3 of the optimizer stream (docs/CONVENTIONS.md)


@triton.jit
def _sincos(angle):
    """(sin, cos) of a float32 angle in [0, 2 pi]: Cody-Waite reduction to [-pi/4, pi/4] and the
    cephes sinf/cosf polynomials (~1 ulp, no branches, no slow path: a quarter of libdevice's cost)."""
    q = (angle * 0.6366197723675814 + 0.5).to(tl.int32)  # nearest multiple of pi/2 (angle >= 0)
    qf = q.to(tl.float32)
    x = angle - qf * 1.5703125  # pi/2 in three parts: q * part exact for q <= 4
    x = x - qf * 4.837512969970703125e-4
    x = x - qf * 7.54978995489188216e-8
    z = x * x
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * x + x
    c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0
    swap = (q & 1) != 0
    sin = tl.where(swap, c, s)
    cos = tl.where(swap, s, c)
    return tl.where((q & 2) != 0, -sin, sin), tl.where(((q + 1) & 2) != 0, -cos, cos)


@triton.jit
def _box_muller(xa, xb, ACC: tl.constexpr):
    """The CONVENTIONS transform (philox.box_muller); in float32 with _sincos for the angle."""
    if ACC == tl.float64:
        za, zb = box_muller(xa, xb, ACC)
    else:
        u1 = ((xa >> 8) + 1).to(tl.float32) * PHILOX_TWO_POW_M24
        u2 = (xb >> 8).to(tl.float32) * PHILOX_TWO_POW_M24
        r = tl.sqrt(-2.0 * tl.log(u1))
        sin, cos = _sincos(u2 * PHILOX_TWO_PI)
        za, zb = r * cos, r * sin
    return za, zb


PHILOX_ROUND_A = tl.constexpr(0xD2511F53)  # Random123's Philox4x32 constants (as triton.language.random)
PHILOX_ROUND_B = tl.constexpr(0xCD9E8D57)
PHILOX_KEY_A = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B = tl.constexpr(0xBB67AE85)


@triton.jit
def _philox(seed, c0, c1, c2, c3):
    """Philox4x32-10, the same function as tl.philox (bit-identical words), each round's two
    32 x 32 -> 64-bit products formed by one wide multiply each (IMAD.WIDE.U32: both halves at
    once) where tl.philox asks for the halves separately (umulhi and mul: two IMADs each).
    Four instructions a round instead of six."""
    seed = seed.to(tl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    for _ in tl.static_range(10):
        a = c0.to(tl.uint64) * PHILOX_ROUND_A
        b = c2.to(tl.uint64) * PHILOX_ROUND_B
        c0 = (c1 ^ k0) ^ (b >> 32).to(tl.uint32)
        c2 = (c3 ^ k1) ^ (a >> 32).to(tl.uint32)
        c1 = b.to(tl.uint32)
        c3 = a.to(tl.uint32)
        k0 = k0 + PHILOX_KEY_A
        k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


@triton.jit
def _box_muller_fast(xa, xb):
    """The CONVENTIONS transform through the GPU's special-function unit, for 16-bit parameters (FAST_NORMALS).

    Algebraically the same transform: -2 ln u1 = -2 ln 2 log2 u1, and with a = 2 pi u2 - pi in [-pi, pi)
    (the range where sin.approx and cos.approx hold their accuracy), cos(2 pi u2) = -cos a and
    sin(2 pi u2) = -sin a. Rounding apart, the only difference is the approximations: lg2.approx (absolute
    error <= 2^-22.6) and sin/cos.approx (absolute error <= 2^-20.9 on [-pi, pi]): the normals are within
    ~1e-6 of the reference's (a few 1e-4 for the rare r < 1e-3, where log2 u1 is below lg2.approx's
    absolute error), far below one bfloat16 (2^-9) or float16 (2^-12) rounding of the update
    they enter. 15 instructions per pair instead of ~53 (libdevice logf and the polynomial sin/cos).
    The interpreter cannot run these functions: the CPU path (FAST_NORMALS=False) is _box_muller;
    tests/test_sgd_kernel.py runs this one with exact log2/sin/cos in their place.
    """
    u1 = ((xa >> 8) + 1).to(tl.float32) * PHILOX_TWO_POW_M24
    # near u1 = 1 the approximation may come out above 0: clamp, or the square root is NaN
    r = tl.sqrt(tl.maximum(fast_math.fast_log2f(u1) * -1.3862943611198906, 0.0))  # -2 ln 2
    a = (xb >> 8).to(tl.float32) * (PHILOX_TWO_PI * PHILOX_TWO_POW_M24) - 3.141592653589793
    return -r * fast_math.fast_cosf(a), -r * fast_math.fast_sinf(a)


@triton.jit
def _normals4(seed, group, step, parameter, ACC: tl.constexpr, FAST_NORMALS: tl.constexpr):
    """The four normals (lanes 0..3) of each element group (CONVENTIONS optimizer layout)."""
    c0 = (group & 0xFFFFFFFF).to(tl.uint32)
    c3 = ((group >> 32) * 16 + TAG_OPTIMIZER).to(tl.uint32)
    c1 = tl.zeros_like(c0) + step.to(tl.uint32)
    c2 = tl.zeros_like(c0) + parameter.to(tl.uint32)
    x0, x1, x2, x3 = _philox(seed, c0, c1, c2, c3)
    if FAST_NORMALS:
        z0, z1 = _box_muller_fast(x0, x1)
        z2, z3 = _box_muller_fast(x2, x3)
    else:
        z0, z1 = _box_muller(x0, x1, ACC)
        z2, z3 = _box_muller(x2, x3, ACC)
    return z0, z1, z2, z3


@triton.jit
def _noise(seed, start, step, parameter, ACC: tl.constexpr, TILE: tl.constexpr, EPT: tl.constexpr,
           FAST_NORMALS: tl.constexpr):
    """The normals of elements [start, start + TILE) in element order, EPT consecutive ones per thread.

    tl.interleave puts its operands at the lowest bit of a new in-thread index, so the element index
    is built from its highest in-thread bit down and lands in the registers the loads use (no
    shared-memory shuffle). EPT = 4: one Philox call per thread; EPT = 8: two (groups 2i, 2i + 1).
    """
    if EPT == 4:
        z0, z1, z2, z3 = _normals4(seed, start // 4 + tl.arange(0, TILE // 4).to(tl.int64), step, parameter, ACC,
                                   FAST_NORMALS)
        # element 4i + 2m + n is lane 2m + n of group i: m first, then n
        out = tl.interleave(tl.interleave(z0, z2), tl.interleave(z1, z3))
    else:
        group = start // 4 + 2 * tl.arange(0, TILE // 8).to(tl.int64)
        a0, a1, a2, a3 = _normals4(seed, group, step, parameter, ACC, FAST_NORMALS)
        b0, b1, b2, b3 = _normals4(seed, group + 1, step, parameter, ACC, FAST_NORMALS)
        # element 8i + 4h + 2m + n is lane 2m + n of group 2i + h: h, then m, then n
        r00, r01 = tl.interleave(a0, b0), tl.interleave(a1, b1)
        r10, r11 = tl.interleave(a2, b2), tl.interleave(a3, b3)
        out = tl.interleave(tl.interleave(r00, r10), tl.interleave(r01, r11))
    return out


@triton.jit
def _sums(b, g_raw, p_raw, grad_scale, wd_hi, wd_lo,
          HAS_GRAD_SCALE: tl.constexpr, MAXIMIZE: tl.constexpr, WEIGHT_DECAY: tl.constexpr):
    """Per element (b^2, b d) in float64, d = ±g / grad_scale + weight_decay p formed in float64."""
    b64 = b.to(tl.float64)
    d = g_raw.to(tl.float64)
    if MAXIMIZE:
        d = -d
    if HAS_GRAD_SCALE:
        d = d / grad_scale.to(tl.float64)
    if WEIGHT_DECAY:
        p64 = p_raw.to(tl.float64)
        d = d + (p64 * wd_hi + p64 * wd_lo)  # fp32 scalars promote exactly to float64
    return b64 * b64, b64 * d


@triton.jit
def _tile(start, limit, write_limit, first, p_ptr, g_ptr, b_ptr, lr, std, grad_scale, seed, step, parameter,
          momentum, dampening, weight_decay, wd_hi, wd_lo,
          DTYPE: tl.constexpr, ACC: tl.constexpr, TILE: tl.constexpr, EPT: tl.constexpr,
          MOMENTUM: tl.constexpr, DAMPENING: tl.constexpr, NESTEROV: tl.constexpr,
          WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr, NOISE: tl.constexpr,
          HAS_GRAD_SCALE: tl.constexpr, FAST_NORMALS: tl.constexpr, MASKED: tl.constexpr):
    """One heavy-ball step on elements [start, start + TILE) below `limit`.

    Returns the terms (b^2, b d in float64; q (2 momentum b + q) in ACC) per element, q = the noise this step
    puts into the buffer ((1 - dampening) s xi; s xi on the first step): lr/2 times the last is the
    ledger's injected energy |momentum b + q|^2 - |momentum b|^2. (Summing each thread's terms here, through a reshape, costs
    shared-memory shuffles: the program adds them across tiles element-wise and reduces once.)

    MASKED=False: the caller found the whole tile below write_limit (<= limit), so no access needs a mask
    (no per-element compares, no zeroed registers for masked-off lanes, no masking of the noise).
    """
    offs = start + tl.arange(0, TILE)
    if MASKED:
        mask = offs < limit
        write = offs < write_limit  # 0 when an AMP step is skipped: params and buffers stay as they were
        g_raw = tl.load(g_ptr + offs, mask=mask, other=0.0)
        p_raw = tl.load(p_ptr + offs, mask=mask, other=0.0)
    else:
        g_raw = tl.load(g_ptr + offs)
        p_raw = tl.load(p_ptr + offs)
    g = g_raw.to(ACC)
    if HAS_GRAD_SCALE:
        g = g / grad_scale
    if MAXIMIZE:
        g = -g
    p = p_raw.to(ACC)
    if WEIGHT_DECAY:
        g = g + weight_decay * p
    kick = tl.zeros([TILE], ACC)
    if NOISE:
        kick = std * _noise(seed, start, step, parameter, ACC, TILE, EPT, FAST_NORMALS)
        if MASKED:
            kick = tl.where(mask, kick, 0.0)  # the tile's tail past numel injects nothing
        g = g + kick
    bb = tl.zeros([TILE], tl.float64)
    bd = tl.zeros([TILE], tl.float64)
    bq = tl.zeros([TILE], ACC)
    update = g
    if MOMENTUM:
        # b_k = 0 on the first step: the launcher creates the new buffer zero-filled (no per-element select)
        if MASKED:
            b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
        else:
            b = tl.load(b_ptr + offs).to(ACC)
        bb, bd = _sums(b, g_raw, p_raw, grad_scale, wd_hi, wd_lo, HAS_GRAD_SCALE, MAXIMIZE, WEIGHT_DECAY)
        if NOISE:
            q = kick
            if DAMPENING:
                q = tl.where(first, q, q * (1.0 - dampening))
            bq = q * (2.0 * momentum * b + q)  # in ACC: a statistic, not an exact sum (registers)
        if DAMPENING:
            b_new = tl.where(first, g, momentum * b + (1.0 - dampening) * g)
        else:
            b_new = momentum * b + g  # b = 0 on the first step: b_new = g (a zero's sign aside)
        if MASKED:
            tl.store(b_ptr + offs, b_new.to(DTYPE), mask=write)
        else:
            tl.store(b_ptr + offs, b_new.to(DTYPE))
        if NESTEROV:
            update = g + momentum * b_new
        else:
            update = b_new
    if MASKED:
        tl.store(p_ptr + offs, (p - lr * update).to(DTYPE), mask=write)
    else:
        tl.store(p_ptr + offs, (p - lr * update).to(DTYPE))
    return bb, bd, bq


@triton.jit
def _pointer(base_ptr, entry, column, VEC: tl.constexpr, ALIGNED: tl.constexpr):
    """base_ptr + the column's element offset. Alignment hints reach the compiler through an offset
    from an aligned pointer argument; a pointer made from an integer (int_to_ptr) drops them."""
    offset = tl.load(entry + column)
    if ALIGNED:
        offset = tl.multiple_of(offset, VEC)  # the launcher checked it
    return base_ptr + offset


@triton.jit(do_not_specialize=["seed"])  # a tensor in _philox even when it is 1 (Triton folds a 1 away)
def sgd_step_kernel(
    table_ptr, block_row_ptr, block_index_ptr, partials_ptr, base_ptr,
    lr_ptr, lr_value, step_ptr, grad_scale_ptr, found_inf_ptr,
    momentum, dampening, weight_decay, wd_hi, wd_lo, noise_value, seed,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr, TILE: tl.constexpr, VEC: tl.constexpr,
    EPT: tl.constexpr,
    ALIGNED: tl.constexpr, MOMENTUM: tl.constexpr, DAMPENING: tl.constexpr, NESTEROV: tl.constexpr,
    WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    NOISE: tl.constexpr, TEMPERATURE: tl.constexpr, FAST_NORMALS: tl.constexpr,
    LR_FROM_PTR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
    MASKED: tl.constexpr,
):
    """One heavy-ball step for BLOCK elements (BLOCK / TILE tiles) of one tensor of the table.

    NOISE: noise_value is the std s (TEMPERATURE=False) or the temperature T,
    s = sqrt(2 (1 - momentum) T / lr) (TEMPERATURE=True). FAST_NORMALS (16-bit parameters on a GPU):
    the normals through the special-function unit (_box_muller_fast).
    """
    pid = tl.program_id(0)
    row = tl.load(block_row_ptr + pid).to(tl.int64)
    entry = table_ptr + row * _COLUMNS
    numel = tl.load(entry + 3)
    if ALIGNED:
        numel = tl.multiple_of(numel, VEC)  # the launcher checked it
    start = tl.load(block_index_ptr + pid).to(tl.int64) * BLOCK
    p_ptr = _pointer(base_ptr, entry, 0, VEC, ALIGNED)
    g_ptr = _pointer(base_ptr, entry, 1, VEC, ALIGNED)
    b_ptr = _pointer(base_ptr, entry, 2, VEC, ALIGNED)
    first = tl.load(entry + 6) != 0
    parameter = tl.load(entry + 4)
    if LR_FROM_PTR:
        lr = tl.load(lr_ptr).to(ACC)
    else:
        lr = lr_value
    std = noise_value
    if TEMPERATURE:
        std = tl.sqrt(2.0 * (1.0 - momentum) * noise_value / lr)
    step = 0
    if NOISE:
        step = tl.load(step_ptr)
    grad_scale = 1.0
    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr).to(ACC)
    write_limit = numel
    if HAS_FOUND_INF:
        write_limit = tl.where(tl.load(found_inf_ptr) == 0, numel, 0)
    bb = tl.zeros([TILE], tl.float64)
    bd = tl.zeros([TILE], tl.float64)
    bq = tl.zeros([TILE], ACC)
    for t in range(BLOCK // TILE):  # a loop, not unrolled: ptxas would overlap the tiles (registers)
        tile_start = start + t * TILE
        if ALIGNED:
            tile_start = tl.multiple_of(tile_start, TILE)
        tb, td, tq = _tile(tile_start, numel, write_limit, first, p_ptr, g_ptr, b_ptr, lr, std, grad_scale,
                           seed, step, parameter, momentum, dampening, weight_decay, wd_hi, wd_lo, DTYPE, ACC,
                           TILE, EPT, MOMENTUM, DAMPENING, NESTEROV, WEIGHT_DECAY, MAXIMIZE, NOISE,
                           HAS_GRAD_SCALE, FAST_NORMALS, MASKED)
        bb += tb
        bd += td
        bq += tq
    tl.store(partials_ptr + pid * 3, tl.sum(bb, axis=0))
    tl.store(partials_ptr + pid * 3 + 1, tl.sum(bd, axis=0))
    tl.store(partials_ptr + pid * 3 + 2, tl.sum(bq.to(tl.float64), axis=0))
