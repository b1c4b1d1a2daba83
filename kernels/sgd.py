"""Fused heavy-ball SGD step with gradient noise and the inertia reduction.

One kernel family for `inertia_gpu.InertiaSGD`: every torch.optim.SGD option
(weight decay, dampening, nesterov, maximize, AMP grad_scale / found_inf) is
a `tl.constexpr` switch, so each combination compiles to straight-line code.
A launch walks all parameters of one (group, dtype) through a pointer table,
so a model with hundreds of tensors costs one launch, not hundreds:

    table[row] = (param_ptr, grad_ptr, buffer_ptr, numel, parameter_index,
                  first_block, first_step, 0)                       int64

first_step = 1 marks a momentum buffer that does not exist yet: this step writes b = g
(torch's first step) and counts b_k = 0 in the sums.
    block_row[pid] = row of the tensor program `pid` works on        int32

Each program reads p, g, b once, writes p, b once (20 bytes per float32
parameter with momentum) and writes two per-block partial sums for the
inertia bookkeeping, both of the state *before* the update:

    partials[pid] = (sum b_k^2, sum <b_k, d_k>)   d_k = noise-free update direction

in float64: products of the working-dtype values formed exactly in float64, d_k itself formed in
float64 from the gradient (as the foreach implementation does), weight decay passed as a float32
pair wd_hi + wd_lo (~48 bits; Triton passes Python floats as fp32). The host adds the partials in
float64 (no float atomics: results are deterministic). Noise follows docs/CONVENTIONS.md (optimizer stream): one
Philox call per four consecutive elements, all four normals used.
"""
import triton
import triton.language as tl

from .philox import normals4_from_bits

TABLE_COLUMNS = 8  # for the launcher; the kernel's copy is a constexpr (compiled code may read no other globals)
_COLUMNS = tl.constexpr(TABLE_COLUMNS)
TAG_OPTIMIZER = tl.constexpr(3)  # c3 of the optimizer stream (docs/CONVENTIONS.md)


@triton.jit
def _normals4(seed, group, step, parameter, ACC: tl.constexpr):
    """Four standard normals per element group (CONVENTIONS optimizer layout), interleaved."""
    c0 = (group & 0xFFFFFFFF).to(tl.uint32)
    c3 = ((group >> 32) * 16 + TAG_OPTIMIZER).to(tl.uint32)
    c1 = tl.zeros_like(c0) + step.to(tl.uint32)
    c2 = tl.zeros_like(c0) + parameter.to(tl.uint32)
    x0, x1, x2, x3 = tl.philox(seed, c0, c1, c2, c3)
    z0, z1, z2, z3 = normals4_from_bits(x0, x1, x2, x3, ACC)
    # interleave(interleave(z0, z2), interleave(z1, z3)) = z0[0], z1[0], z2[0], z3[0], z0[1], ...
    return tl.interleave(tl.interleave(z0, z2), tl.interleave(z1, z3))


@triton.jit
def _store_sums(out_ptr, b, g_raw, p_raw, grad_scale_ptr, wd_hi, wd_lo,
                HAS_GRAD_SCALE: tl.constexpr, MAXIMIZE: tl.constexpr, WEIGHT_DECAY: tl.constexpr):
    """out = (sum b^2, sum <b, d>) in float64, d = ±g / grad_scale + weight_decay p formed in float64."""
    b64 = b.to(tl.float64)
    d = g_raw.to(tl.float64)
    if MAXIMIZE:
        d = -d
    if HAS_GRAD_SCALE:
        d = d / tl.load(grad_scale_ptr).to(tl.float64)
    if WEIGHT_DECAY:
        p64 = p_raw.to(tl.float64)
        d = d + (p64 * wd_hi + p64 * wd_lo)  # fp32 scalars promote exactly to float64
    tl.store(out_ptr, tl.sum(b64 * b64, axis=0))
    tl.store(out_ptr + 1, tl.sum(b64 * d, axis=0))


@triton.jit
def sgd_step_kernel(
    table_ptr, block_row_ptr, partials_ptr,
    lr_ptr, lr_value, step_ptr, grad_scale_ptr, found_inf_ptr,
    momentum, dampening, weight_decay, wd_hi, wd_lo, noise_value, seed,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    MOMENTUM: tl.constexpr, DAMPENING: tl.constexpr, NESTEROV: tl.constexpr,
    WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    NOISE: tl.constexpr, TEMPERATURE: tl.constexpr,
    LR_FROM_PTR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
):
    """One heavy-ball step for BLOCK elements of one tensor of the table.

    NOISE: noise_value is the std s (TEMPERATURE=False) or the temperature T,
    s = sqrt(2 (1 - momentum) T / lr) (TEMPERATURE=True).
    """
    pid = tl.program_id(0)
    row = tl.load(block_row_ptr + pid).to(tl.int64)
    entry = table_ptr + row * _COLUMNS
    numel = tl.load(entry + 3)
    first_block = tl.load(entry + 5)
    start = (pid - first_block) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel

    p_ptr = tl.load(entry + 0).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(entry + 1).to(tl.pointer_type(DTYPE))

    if LR_FROM_PTR:
        lr = tl.load(lr_ptr).to(ACC)
    else:
        lr = lr_value
    write = mask
    if HAS_FOUND_INF:
        # a skipped AMP step writes nothing: params and buffers stay as they were
        write = offs < tl.where(tl.load(found_inf_ptr) == 0, numel, 0)

    g_raw = tl.load(g_ptr + offs, mask=mask, other=0.0)
    g = g_raw.to(ACC)
    if HAS_GRAD_SCALE:
        g = g / tl.load(grad_scale_ptr).to(ACC)
    if MAXIMIZE:
        g = -g
    p_raw = tl.load(p_ptr + offs, mask=mask, other=0.0)
    p = p_raw.to(ACC)
    if WEIGHT_DECAY:
        g = g + weight_decay * p

    if NOISE:
        parameter = tl.load(entry + 4)
        step = tl.load(step_ptr)
        group = (start // 4) + tl.arange(0, BLOCK // 4).to(tl.int64)
        xi = _normals4(seed, group, step, parameter, ACC)
        if TEMPERATURE:
            std = tl.sqrt(2.0 * (1.0 - momentum) * noise_value / lr)
        else:
            std = noise_value
        g = g + std * xi

    if MOMENTUM:
        b_ptr = tl.load(entry + 2).to(tl.pointer_type(DTYPE))
        first_step = tl.load(entry + 6)
        first = first_step != 0
        # b_k = 0 on the first step: the new buffer is not read
        b = tl.load(b_ptr + offs, mask=offs < tl.where(first, 0, numel), other=0.0).to(ACC)
        _store_sums(partials_ptr + pid * 2, b, g_raw, p_raw, grad_scale_ptr, wd_hi, wd_lo,
                    HAS_GRAD_SCALE, MAXIMIZE, WEIGHT_DECAY)
        if DAMPENING:
            b_new = momentum * b + (1.0 - dampening) * g
        else:
            b_new = momentum * b + g
        b_new = tl.where(first, g, b_new)
        tl.store(b_ptr + offs, b_new.to(DTYPE), mask=write)
        if NESTEROV:
            update = g + momentum * b_new
        else:
            update = b_new
    else:
        tl.store(partials_ptr + pid * 2, 0.0)
        tl.store(partials_ptr + pid * 2 + 1, 0.0)
        update = g
    tl.store(p_ptr + offs, (p - lr * update).to(DTYPE), mask=write)
