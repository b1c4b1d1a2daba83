"""Fused heavy-ball SGD step with gradient noise and the inertia reduction.

One kernel family for `inertia_gpu.InertiaSGD`: every torch.optim.SGD option
(weight decay, dampening, nesterov, maximize, AMP grad_scale / found_inf) is
a `tl.constexpr` switch, so each combination compiles to straight-line code.
A launch walks all parameters of one (group, dtype) through a pointer table,
so a model with hundreds of tensors costs one launch, not hundreds:

    table[row] = (param_ptr, grad_ptr, buffer_ptr, numel, parameter_index,
                  first_block, local_index, 0)                      int64
    block_row[pid] = row of the tensor program `pid` works on        int32

Each program reads p, g, b once, writes p, b once (20 bytes per float32
parameter with momentum) and writes two per-block partial sums for the
inertia bookkeeping, both of the state *before* the update:

    partials[pid] = (sum b_k^2, sum <b_k, d_k>)   d_k = noise-free update direction

The host combines them in float64 (no float atomics: results are
deterministic). Noise follows docs/CONVENTIONS.md (optimizer stream): one
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
def sgd_step_kernel(
    table_ptr, block_row_ptr, partials_ptr, ready_ptr,
    lr_ptr, lr_value, step_ptr, grad_scale_ptr, found_inf_ptr,
    momentum, dampening, weight_decay, noise_value, seed,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    MOMENTUM: tl.constexpr, DAMPENING: tl.constexpr, NESTEROV: tl.constexpr,
    WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    NOISE: tl.constexpr, TEMPERATURE: tl.constexpr,
    LR_FROM_PTR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
):
    """One heavy-ball step for BLOCK elements of one tensor of the table.

    NOISE: noise_value is the std s (TEMPERATURE=False) or the temperature T,
    s = sqrt(2 (1 - momentum) T / lr) (TEMPERATURE=True). ready_ptr[local]
    == 0 marks a momentum buffer not yet written, so this step sets b = g
    (torch's first step); the host raises it after an applied step.
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

    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_GRAD_SCALE:
        g = g / tl.load(grad_scale_ptr).to(ACC)
    if MAXIMIZE:
        g = -g
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(ACC)
    if WEIGHT_DECAY:
        g = g + weight_decay * p
    direction = g  # noise-free: the shadow inertia pairs b_k with it

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
        local = tl.load(entry + 6)
        first = tl.load(ready_ptr + local) == 0
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
        b = tl.where(first, 0.0, b)  # b_k = 0 before torch's first step, whatever the buffer holds
        tl.store(partials_ptr + pid * 2, tl.sum(b * b, axis=0))
        tl.store(partials_ptr + pid * 2 + 1, tl.sum(b * direction, axis=0))
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
