"""The ensemble kernel family: many trajectories, many steps, state in registers.

One `@triton.jit` kernel, `ensemble_kernel`; every variant of the dynamics
is a `tl.constexpr` switch, so each combination compiles to straight-line
code with no dead branches:

    PROBLEM        0 quadratic, 1 double-well, 2 rosenbrock
    INTEGRATOR     0 heavy-ball, 1 euler, 2 leapfrog (BABO), 3 baoab
    SCHEDULE       0 constant, 1 nesterov:r (mu_n = n / (n + r), gamma_n = (1 - mu_n) / h)
    NOISE_MODEL    0 additive, 1 temperature, 2 loss-scaled
    NOISY          False compiles the Philox draws out entirely
    DRAWN_SPECTRUM 0 fixed eigenvalues (loaded), 1 uniform, 2 loguniform, 3 lognormal (drawn in-kernel)
    START_FROM_INIT  draw the initial state from Philox (window starting at step 0) instead of loading it
    DIM, DIMP, LOG2_DIMP   dimension, its next power of two (tile width) and log2 of that
    RECORD_EVERY   record statistics at steps n with n % RECORD_EVERY == 0
    TREE           fixed pairwise reduction trees (bitwise independent of BLOCK / warps / layout)
    BLOCK          trajectories per program, a multiple of GROUP = 64
    GUARD          per-step window guards (needed unless step_begin and step_end are multiples of 4)

The working dtype (float32 or float64) is the element type of the state pointers.

A program owns BLOCK consecutive trajectories as [BLOCK, DIMP] register tiles
(padding columns are kept exactly zero: their noise is masked, so every
integrator maps 0 to 0). It loads the state once (or draws it), then walks
the window [step_begin, step_end) in quads of four steps: ONE Philox call per
coordinate per quad (counter (trajectory, n // 4, coordinate, 0),
docs/CONVENTIONS.md), whose four lanes feed the four steps 4q .. 4q + 3. With
GUARD (the default) each of the four steps is wrapped in a uniform scalar
branch `lo <= n < hi`, so one instantiation serves windows cut anywhere (the
head and tail quads of an unaligned window run only their steps inside the
window); GUARD=False drops the branches for windows aligned to 4 at both
ends (the launcher checks).

The gradient at the current theta is carried across steps (one gradient per
step for every integrator: the closing half-kick of leapfrog / BAOAB and the
statistics reuse it). At a recorded step the program computes per-trajectory
(inertia, kinetic, loss, shadow), updates first passage, and writes only
per-GROUP float64 sums of [count_finite, I, K, L, shadow, I^2] to
partials[row, group, :] -- a reshape to [BLOCK // 64, 64] and a fixed
pairwise tree, never atomics, so the sums do not depend on BLOCK, the number
of warps or the launch split. Sums over coordinates use the same kind of
tree. At the end the program stores theta, momentum, I_0 and first passage.

Scalars that the reference forms in Python double and then rounds to the
working dtype (lr, 0.5 lr, constant-schedule noise scales, ...) arrive
precomputed in the coefficient vector `coef` (working dtype, see
COEF_* below), so the kernel multiplies by exactly the reference's values;
nesterov schedules compute their per-step scalars in the working dtype in
the same order of operations as the reference.
"""
import triton
import triton.language as tl

from .philox import box_muller, philox_normals4, uniform24

GROUP: tl.constexpr = tl.constexpr(64)
LOG2_GROUP: tl.constexpr = tl.constexpr(6)
N_QUANTITIES: tl.constexpr = tl.constexpr(6)
FRACTION_0: tl.constexpr = tl.constexpr(0.5)
FRACTION_1: tl.constexpr = tl.constexpr(0.36787944117144233)
FRACTION_2: tl.constexpr = tl.constexpr(0.1)
TAG_STEP: tl.constexpr = tl.constexpr(0)
TAG_INIT: tl.constexpr = tl.constexpr(1)
TAG_SPECTRUM: tl.constexpr = tl.constexpr(2)

# switch values (mirrored by the launcher in inertia_gpu/backends/triton_ensemble.py)
QUADRATIC: tl.constexpr = tl.constexpr(0)
DOUBLE_WELL: tl.constexpr = tl.constexpr(1)
ROSENBROCK: tl.constexpr = tl.constexpr(2)
HEAVY_BALL: tl.constexpr = tl.constexpr(0)
EULER: tl.constexpr = tl.constexpr(1)
LEAPFROG: tl.constexpr = tl.constexpr(2)
BAOAB: tl.constexpr = tl.constexpr(3)
CONSTANT: tl.constexpr = tl.constexpr(0)
NESTEROV: tl.constexpr = tl.constexpr(1)
ADDITIVE: tl.constexpr = tl.constexpr(0)
TEMPERATURE: tl.constexpr = tl.constexpr(1)
LOSS_SCALED: tl.constexpr = tl.constexpr(2)

# coefficient vector layout (working dtype)
COEF_LR_H: tl.constexpr = tl.constexpr(0)  # lr (heavy ball) | h = dt (continuous)
COEF_MU: tl.constexpr = tl.constexpr(1)  # constant schedule: mu (heavy ball) | c1 = exp(-gamma h) (leapfrog, baoab) | h*gamma (euler)
COEF_S: tl.constexpr = tl.constexpr(2)  # constant schedule, additive/temperature: s (heavy ball) | sigma sqrt(h) (euler) | sigma sqrt(vf) (O-step)
COEF_NOISE: tl.constexpr = tl.constexpr(3)  # noise (loss-scaled factor; additive sigma for nesterov O-step)
COEF_HALF: tl.constexpr = tl.constexpr(4)  # 0.5 lr | 0.5 h
COEF_R: tl.constexpr = tl.constexpr(5)  # nesterov r
COEF_T: tl.constexpr = tl.constexpr(6)  # temperature
COEF_INIT_THETA: tl.constexpr = tl.constexpr(7)
COEF_INIT_V: tl.constexpr = tl.constexpr(8)
COEF_SHADOW: tl.constexpr = tl.constexpr(9)  # h^2 / 8
COEF_SPEC_A: tl.constexpr = tl.constexpr(10)  # a | log a | m
COEF_SPEC_B: tl.constexpr = tl.constexpr(11)  # b - a | log b - log a | s
COEF_SQRT_H: tl.constexpr = tl.constexpr(12)  # sqrt(h)
COEF_SQRT_VF: tl.constexpr = tl.constexpr(13)  # constant O-step sqrt((1 - e^{-2 gamma h}) / (2 gamma))
N_COEF = 16
COEF_INDEX = {k: int(v.value) for k, v in dict(globals()).items() if k.startswith("COEF_")}


# --- reductions with a fixed order --------------------------------------------------------


@triton.jit
def _row_sum(x, R: tl.constexpr, LOG2C: tl.constexpr, TREE: tl.constexpr):
    """Sum of x [R, 2**LOG2C] along the last axis -> [R]; TREE: pairwise tree (a fixed order)."""
    if TREE:
        for _ in tl.static_range(LOG2C):
            a, b = tl.split(tl.reshape(x, [R, x.shape[1] // 2, 2]))
            x = a + b
        out = tl.reshape(x, [R])
    else:
        out = tl.sum(x, axis=1)
    return out


@triton.jit
def _group_sum(x, BLOCK: tl.constexpr, TREE: tl.constexpr):
    """Sums of consecutive runs of GROUP entries of x [BLOCK] -> [BLOCK // GROUP]."""
    return _row_sum(tl.reshape(x, [BLOCK // GROUP, GROUP]), BLOCK // GROUP, LOG2_GROUP, TREE)


# --- problems -----------------------------------------------------------------------------


@triton.jit
def _shift(x, cols, DIM: tl.constexpr, OFFSET: tl.constexpr):
    """out[:, i] = x[:, i + OFFSET] (0 where i + OFFSET is outside [0, DIM)); exact (adds zeros)."""
    out = tl.zeros_like(x)
    for j in tl.static_range(DIM):
        if (j - OFFSET >= 0) and (j - OFFSET < DIM):
            col = tl.sum(tl.where(cols == j, x, 0.0), axis=1)
            out = tl.where(cols == j - OFFSET, col[:, None], out)
    return out


@triton.jit
def _grad(theta, lam, cols, PROBLEM: tl.constexpr, DIM: tl.constexpr):
    if PROBLEM == QUADRATIC:
        g = lam * theta
    elif PROBLEM == DOUBLE_WELL:
        g = theta * (theta * theta - 1.0)
    else:
        # chained Rosenbrock: r_i = theta_{i+1} - theta_i^2 for i < DIM - 1
        y = _shift(theta, cols, DIM, 1)
        r = y - theta * theta
        a = -400.0 * theta * r - 2.0 * (1.0 - theta)
        a = tl.where(cols < DIM - 1, a, 0.0)
        b = _shift(200.0 * r, cols, DIM, -1)  # 200 r_{i-1}, zero at i = 0
        g = a + b
    return g


@triton.jit
def _loss(theta, lam, cols, PROBLEM: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr,
          BLOCK: tl.constexpr, LOG2_DIMP: tl.constexpr, TREE: tl.constexpr):
    if PROBLEM == QUADRATIC:
        out = 0.5 * _row_sum(lam * theta * theta, BLOCK, LOG2_DIMP, TREE)
    elif PROBLEM == DOUBLE_WELL:
        w = theta * theta - 1.0
        ww = w * w
        if PAD:
            ww = tl.where(cols < DIM, ww, 0.0)
        out = 0.25 * _row_sum(ww, BLOCK, LOG2_DIMP, TREE)
    else:
        y = _shift(theta, cols, DIM, 1)
        r = y - theta * theta
        one_m = 1.0 - theta
        t = 100.0 * (r * r) + one_m * one_m
        t = tl.where(cols < DIM - 1, t, 0.0)
        out = _row_sum(t, BLOCK, LOG2_DIMP, TREE)
    return out


# --- statistics ---------------------------------------------------------------------------


@triton.jit
def _observe(theta, mom, g, lam, cols, half, shadow_c, PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr,
             DIM: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr, LOG2_DIMP: tl.constexpr,
             TREE: tl.constexpr):
    """(inertia, kinetic, loss, shadow) per trajectory, as reference.Model.observe."""
    loss = _loss(theta, lam, cols, PROBLEM, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
    if INTEGRATOR == HEAVY_BALL:
        kinetic = half * _row_sum(mom * mom, BLOCK, LOG2_DIMP, TREE)
        inertia = kinetic + loss
        shadow = inertia + half * _row_sum(mom * g, BLOCK, LOG2_DIMP, TREE)
    else:
        kinetic = 0.5 * _row_sum(mom * mom, BLOCK, LOG2_DIMP, TREE)
        inertia = kinetic + loss
        shadow = inertia - shadow_c * _row_sum(g * g, BLOCK, LOG2_DIMP, TREE)
    return inertia, kinetic, loss, shadow


@triton.jit
def _store_sums(partials_ptr, row, grp, n_groups, valid, inertia, kinetic, loss, shadow,
                BLOCK: tl.constexpr, TREE: tl.constexpr):
    """partials[row, grp, :] = group sums of [finite, I, K, L, shadow, I^2] over finite trajectories."""
    finite = valid & ((inertia - inertia) == 0.0)  # false for inf and nan
    c = tl.where(finite, 1.0, 0.0).to(tl.float64)
    i64 = tl.where(finite, inertia.to(tl.float64), 0.0)
    k64 = tl.where(finite, kinetic.to(tl.float64), 0.0)
    l64 = tl.where(finite, loss.to(tl.float64), 0.0)
    s64 = tl.where(finite, shadow.to(tl.float64), 0.0)
    base = partials_ptr + (row.to(tl.int64) * n_groups + grp) * N_QUANTITIES
    gmask = grp < n_groups
    tl.store(base + 0, _group_sum(c, BLOCK, TREE), mask=gmask)
    tl.store(base + 1, _group_sum(i64, BLOCK, TREE), mask=gmask)
    tl.store(base + 2, _group_sum(k64, BLOCK, TREE), mask=gmask)
    tl.store(base + 3, _group_sum(l64, BLOCK, TREE), mask=gmask)
    tl.store(base + 4, _group_sum(s64, BLOCK, TREE), mask=gmask)
    tl.store(base + 5, _group_sum(i64 * i64, BLOCK, TREE), mask=gmask)


@triton.jit
def _record(theta, mom, g, lam, cols, n1, inertia0, fp0, fp1, fp2, partials_ptr, row0, grp, n_groups, valid,
            half, shadow_c, PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, DIM: tl.constexpr,
            PAD: tl.constexpr, BLOCK: tl.constexpr, LOG2_DIMP: tl.constexpr, TREE: tl.constexpr,
            RECORD_EVERY: tl.constexpr):
    """Statistics of the state at step n1 >= 1 (a recorded step) and the first-passage update."""
    inertia, kinetic, loss, shadow = _observe(theta, mom, g, lam, cols, half, shadow_c, PROBLEM, INTEGRATOR,
                                              DIM, PAD, BLOCK, LOG2_DIMP, TREE)
    _store_sums(partials_ptr, n1 // RECORD_EVERY - row0, grp, n_groups, valid, inertia, kinetic, loss, shadow,
                BLOCK, TREE)
    n32 = n1.to(tl.int32)
    fp0 = tl.where((fp0 < 0) & (inertia <= FRACTION_0 * inertia0), n32, fp0)
    fp1 = tl.where((fp1 < 0) & (inertia <= FRACTION_1 * inertia0), n32, fp1)
    fp2 = tl.where((fp2 < 0) & (inertia <= FRACTION_2 * inertia0), n32, fp2)
    return fp0, fp1, fp2


# --- dynamics -----------------------------------------------------------------------------


@triton.jit
def _neg_expm1(x):
    """-(e^x - 1), accurate for small |x| (Kahan: (u - 1) x / log u)."""
    u = tl.exp(x)
    um1 = u - 1.0
    em1 = tl.where(u == 1.0, x, tl.where(um1 == -1.0, -1.0, um1 * x / tl.log(u)))
    return -em1


@triton.jit
def _ou(v, xi, theta, lam, cols, n, h, c_mu, c_s, noise_c, r_c, temp_c, sqrt_vf,
        PROBLEM: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr, NOISY: tl.constexpr,
        DIM: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr, LOG2_DIMP: tl.constexpr, TREE: tl.constexpr):
    """Exact Ornstein-Uhlenbeck step v <- c1 v + c2 xi (reference.Model.ou_step)."""
    if SCHEDULE == CONSTANT:
        out = c_mu * v
        if NOISY:
            if NOISE_MODEL == LOSS_SCALED:
                loss = _loss(theta, lam, cols, PROBLEM, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
                sigma = noise_c * tl.sqrt(tl.where(loss < 0.0, 0.0, loss))
                out = out + (sigma * sqrt_vf)[:, None] * xi
            else:
                out = out + c_s * xi
    else:
        nf = n.to(v.dtype)
        mu = nf / (nf + r_c)
        gamma = (1.0 - mu) / h
        c1 = tl.exp(-gamma * h)
        out = c1 * v
        if NOISY:
            vf = tl.where(gamma > 0.0, _neg_expm1(-2.0 * gamma * h) / (2.0 * gamma), h)
            sq = tl.sqrt(vf)
            if NOISE_MODEL == LOSS_SCALED:
                loss = _loss(theta, lam, cols, PROBLEM, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
                sigma = noise_c * tl.sqrt(tl.where(loss < 0.0, 0.0, loss))
                out = out + (sigma * sq)[:, None] * xi
            elif NOISE_MODEL == TEMPERATURE:
                sigma = tl.sqrt(2.0 * gamma * temp_c)
                out = out + (sigma * sq) * xi
            else:
                out = out + (noise_c * sq) * xi
    return out


@triton.jit
def _advance(theta, mom, g, lam, xi, cols, n, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf,
             PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr,
             NOISE_MODEL: tl.constexpr, NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr,
             BLOCK: tl.constexpr, LOG2_DIMP: tl.constexpr, TREE: tl.constexpr):
    """State n -> n + 1 (docs/CONVENTIONS.md, Dynamics); g = grad L(theta) in and out."""
    if INTEGRATOR == HEAVY_BALL:
        lr = lr_h
        if SCHEDULE == CONSTANT:
            mu = c_mu
        else:
            nf = n.to(theta.dtype)
            mu = nf / (nf + r_c)
        gn = g
        if NOISY:
            if NOISE_MODEL == LOSS_SCALED:
                loss = _loss(theta, lam, cols, PROBLEM, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
                s = noise_c * tl.sqrt(tl.where(loss < 0.0, 0.0, loss))
                gn = g + s[:, None] * xi
            elif NOISE_MODEL == TEMPERATURE and SCHEDULE == NESTEROV:
                friction = (1.0 - mu) / lr
                gn = g + tl.sqrt(2.0 * friction * temp_c) * xi
            else:
                gn = g + c_s * xi
        mom = mu * mom + gn
        theta = theta - lr * mom
        g = _grad(theta, lam, cols, PROBLEM, DIM)
    elif INTEGRATOR == EULER:
        h = lr_h
        if SCHEDULE == CONSTANT:
            hg = c_mu
        else:
            nf = n.to(theta.dtype)
            mu = nf / (nf + r_c)
            gamma = (1.0 - mu) / h
            hg = h * gamma
        new_mom = mom - h * g - hg * mom
        if NOISY:
            if NOISE_MODEL == LOSS_SCALED:
                loss = _loss(theta, lam, cols, PROBLEM, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
                sigma = noise_c * tl.sqrt(tl.where(loss < 0.0, 0.0, loss))
                new_mom = new_mom + (sigma * sqrt_h)[:, None] * xi
            elif NOISE_MODEL == TEMPERATURE and SCHEDULE == NESTEROV:
                new_mom = new_mom + (tl.sqrt(2.0 * gamma * temp_c) * sqrt_h) * xi
            else:
                new_mom = new_mom + c_s * xi
        theta = theta + h * mom
        mom = new_mom
        g = _grad(theta, lam, cols, PROBLEM, DIM)
    elif INTEGRATOR == LEAPFROG:  # B A B O
        h = lr_h
        mom = mom - half * g
        theta = theta + h * mom
        g = _grad(theta, lam, cols, PROBLEM, DIM)
        mom = mom - half * g
        mom = _ou(mom, xi, theta, lam, cols, n, h, c_mu, c_s, noise_c, r_c, temp_c, sqrt_vf, PROBLEM, SCHEDULE,
                  NOISE_MODEL, NOISY, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
    else:  # baoab: B A O A B
        h = lr_h
        mom = mom - half * g
        theta = theta + half * mom
        mom = _ou(mom, xi, theta, lam, cols, n, h, c_mu, c_s, noise_c, r_c, temp_c, sqrt_vf, PROBLEM, SCHEDULE,
                  NOISE_MODEL, NOISY, DIM, PAD, BLOCK, LOG2_DIMP, TREE)
        theta = theta + half * mom
        g = _grad(theta, lam, cols, PROBLEM, DIM)
        mom = mom - half * g
    return theta, mom, g


@triton.jit
def _step(theta, mom, g, lam, xi, cols, n, inertia0, fp0, fp1, fp2, partials_ptr, row0, grp, n_groups, valid,
          lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf, shadow_c,
          PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
          NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr,
          LOG2_DIMP: tl.constexpr, TREE: tl.constexpr, RECORD_EVERY: tl.constexpr):
    """One step plus, when n + 1 is a recorded step, its statistics."""
    theta, mom, g = _advance(theta, mom, g, lam, xi, cols, n, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c,
                             sqrt_h, sqrt_vf, PROBLEM, INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD,
                             BLOCK, LOG2_DIMP, TREE)
    n1 = n + 1
    if RECORD_EVERY == 1:
        fp0, fp1, fp2 = _record(theta, mom, g, lam, cols, n1, inertia0, fp0, fp1, fp2, partials_ptr, row0, grp,
                                n_groups, valid, half, shadow_c, PROBLEM, INTEGRATOR, DIM, PAD, BLOCK,
                                LOG2_DIMP, TREE, RECORD_EVERY)
    else:
        if n1 % RECORD_EVERY == 0:
            fp0, fp1, fp2 = _record(theta, mom, g, lam, cols, n1, inertia0, fp0, fp1, fp2, partials_ptr, row0,
                                    grp, n_groups, valid, half, shadow_c, PROBLEM, INTEGRATOR, DIM, PAD, BLOCK,
                                    LOG2_DIMP, TREE, RECORD_EVERY)
    return theta, mom, g, fp0, fp1, fp2


@triton.jit
def _quad(theta, mom, g, lam, cols, colmask, traj_u32, q, lo, hi, seed, inertia0, fp0, fp1, fp2, partials_ptr,
          row0, grp, n_groups, valid, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf, shadow_c,
          PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
          NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr,
          LOG2_DIMP: tl.constexpr, TREE: tl.constexpr, RECORD_EVERY: tl.constexpr, GUARD: tl.constexpr):
    """Steps 4q .. 4q + 3 from one Philox call per coordinate (lane = n % 4).

    GUARD: only the steps n with lo <= n < hi run (head and tail of an unaligned window).
    """
    if NOISY:
        c1 = tl.zeros_like(traj_u32) + q.to(tl.uint32)
        c2 = tl.zeros_like(traj_u32) + cols.to(tl.uint32)
        c3 = tl.zeros_like(traj_u32) + TAG_STEP
        z0, z1, z2, z3 = philox_normals4(seed, traj_u32, c1, c2, c3, theta.dtype)
        if PAD:
            z0 = tl.where(colmask, z0, 0.0)
            z1 = tl.where(colmask, z1, 0.0)
            z2 = tl.where(colmask, z2, 0.0)
            z3 = tl.where(colmask, z3, 0.0)
    else:
        z0 = 0.0
        z1 = 0.0
        z2 = 0.0
        z3 = 0.0
    base = q * 4
    for lane in tl.static_range(4):
        if lane == 0:
            xi = z0
        elif lane == 1:
            xi = z1
        elif lane == 2:
            xi = z2
        else:
            xi = z3
        n = base + lane
        if GUARD:
            if (n >= lo) & (n < hi):
                theta, mom, g, fp0, fp1, fp2 = _step(
                    theta, mom, g, lam, xi, cols, n, inertia0, fp0, fp1, fp2, partials_ptr, row0, grp, n_groups,
                    valid, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf, shadow_c, PROBLEM,
                    INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD, BLOCK, LOG2_DIMP, TREE, RECORD_EVERY)
        else:
            theta, mom, g, fp0, fp1, fp2 = _step(
                theta, mom, g, lam, xi, cols, n, inertia0, fp0, fp1, fp2, partials_ptr, row0, grp, n_groups,
                valid, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf, shadow_c, PROBLEM,
                INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD, BLOCK, LOG2_DIMP, TREE, RECORD_EVERY)
    return theta, mom, g, fp0, fp1, fp2


# --- the kernel ---------------------------------------------------------------------------


@triton.jit(do_not_specialize=["start", "count", "n_groups", "step_begin", "step_end", "row0", "seed"])
def ensemble_kernel(
    theta_in, mom_in, inertia0_in, fp_in,
    theta_out, mom_out, inertia0_out, fp_out,
    lam_ptr, coef_ptr, partials_ptr,
    start, count, n_groups, step_begin, step_end, row0, seed,
    PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
    NOISY: tl.constexpr, DRAWN_SPECTRUM: tl.constexpr, START_FROM_INIT: tl.constexpr,
    DIM: tl.constexpr, DIMP: tl.constexpr, LOG2_DIMP: tl.constexpr, RECORD_EVERY: tl.constexpr,
    TREE: tl.constexpr, BLOCK: tl.constexpr, GUARD: tl.constexpr = True,
):
    """Advance trajectories [start, start + count) over steps [step_begin, step_end).

    theta/mom: [count, DIM] row-major, working dtype; inertia0 [count]; fp [count, 3] int32;
    partials [rows, n_groups, 6] float64, row = n // RECORD_EVERY - row0 for recorded step n.
    """
    ACC = theta_out.dtype.element_ty
    PAD: tl.constexpr = DIMP != DIM
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    valid = rows < count
    traj = start.to(tl.int64) + rows
    cols = tl.arange(0, DIMP)[None, :]
    colmask = cols < DIM
    mask2 = valid[:, None] & colmask
    offs2 = rows[:, None] * DIM + cols
    traj_u32 = (traj[:, None] + tl.zeros([BLOCK, DIMP], dtype=tl.int64)).to(tl.uint32)
    grp = pid.to(tl.int64) * (BLOCK // GROUP) + tl.arange(0, BLOCK // GROUP).to(tl.int64)

    lr_h = tl.load(coef_ptr + COEF_LR_H)
    c_mu = tl.load(coef_ptr + COEF_MU)
    c_s = tl.load(coef_ptr + COEF_S)
    noise_c = tl.load(coef_ptr + COEF_NOISE)
    half = tl.load(coef_ptr + COEF_HALF)
    r_c = tl.load(coef_ptr + COEF_R)
    temp_c = tl.load(coef_ptr + COEF_T)
    shadow_c = tl.load(coef_ptr + COEF_SHADOW)
    sqrt_h = tl.load(coef_ptr + COEF_SQRT_H)
    sqrt_vf = tl.load(coef_ptr + COEF_SQRT_VF)

    # eigenvalues of the quadratic: shared (loaded) or per trajectory (drawn from the spectrum stream)
    if PROBLEM == QUADRATIC:
        if DRAWN_SPECTRUM == 0:
            lam = tl.load(lam_ptr + cols, mask=colmask, other=0.0).to(ACC)
        else:
            spec_a = tl.load(coef_ptr + COEF_SPEC_A)
            spec_b = tl.load(coef_ptr + COEF_SPEC_B)
            zero = tl.zeros_like(traj_u32)
            x0, x1, _x2, _x3 = tl.philox(seed, traj_u32, zero, zero + cols.to(tl.uint32), zero + TAG_SPECTRUM)
            if DRAWN_SPECTRUM == 1:
                lam = spec_a + spec_b * uniform24(x0, ACC)
            elif DRAWN_SPECTRUM == 2:
                lam = tl.exp(spec_a + spec_b * uniform24(x0, ACC))
            else:
                z, _z1 = box_muller(x0, x1, ACC)
                lam = tl.exp(spec_a + spec_b * z)
            lam = tl.where(colmask, lam, 0.0)
    else:
        lam = tl.zeros([BLOCK, DIMP], dtype=ACC)

    if START_FROM_INIT:
        zero = tl.zeros_like(traj_u32)
        z_theta, z_v, _z2, _z3 = philox_normals4(seed, traj_u32, zero, zero + cols.to(tl.uint32), zero + TAG_INIT,
                                                 ACC)
        theta = tl.where(colmask, tl.load(coef_ptr + COEF_INIT_THETA) * z_theta, 0.0)
        v = tl.where(colmask, tl.load(coef_ptr + COEF_INIT_V) * z_v, 0.0)
        if INTEGRATOR == HEAVY_BALL:
            mom = -v / lr_h
        else:
            mom = v
        g = _grad(theta, lam, cols, PROBLEM, DIM)
        inertia0, kinetic, loss, shadow = _observe(theta, mom, g, lam, cols, half, shadow_c, PROBLEM, INTEGRATOR,
                                                   DIM, PAD, BLOCK, LOG2_DIMP, TREE)
        _store_sums(partials_ptr, row0 * 0, grp, n_groups, valid, inertia0, kinetic, loss, shadow, BLOCK, TREE)
        fp0 = tl.full([BLOCK], -1, dtype=tl.int32)
        fp1 = tl.full([BLOCK], -1, dtype=tl.int32)
        fp2 = tl.full([BLOCK], -1, dtype=tl.int32)
    else:
        theta = tl.load(theta_in + offs2, mask=mask2, other=0.0).to(ACC)
        mom = tl.load(mom_in + offs2, mask=mask2, other=0.0).to(ACC)
        inertia0 = tl.load(inertia0_in + rows, mask=valid, other=0.0).to(ACC)
        fp0 = tl.load(fp_in + rows * 3 + 0, mask=valid, other=-1)
        fp1 = tl.load(fp_in + rows * 3 + 1, mask=valid, other=-1)
        fp2 = tl.load(fp_in + rows * 3 + 2, mask=valid, other=-1)
        g = _grad(theta, lam, cols, PROBLEM, DIM)

    lo = step_begin.to(tl.int64)
    hi = step_end.to(tl.int64)
    q_first = lo // 4
    q_last = (hi - 1) // 4  # inclusive; the window has at least one step
    for qi in range(q_first, q_last + 1):
        q = lo * 0 + qi  # an int64 tensor also under the interpreter (which iterates Python ints)
        theta, mom, g, fp0, fp1, fp2 = _quad(
            theta, mom, g, lam, cols, colmask, traj_u32, q, lo, hi, seed, inertia0, fp0, fp1, fp2, partials_ptr,
            row0, grp, n_groups, valid, lr_h, c_mu, c_s, noise_c, half, r_c, temp_c, sqrt_h, sqrt_vf, shadow_c,
            PROBLEM, INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD, BLOCK, LOG2_DIMP, TREE, RECORD_EVERY,
            GUARD)

    tl.store(theta_out + offs2, theta.to(theta_out.dtype.element_ty), mask=mask2)
    tl.store(mom_out + offs2, mom.to(mom_out.dtype.element_ty), mask=mask2)
    tl.store(inertia0_out + rows, inertia0.to(inertia0_out.dtype.element_ty), mask=valid)
    tl.store(fp_out + rows * 3 + 0, fp0, mask=valid)
    tl.store(fp_out + rows * 3 + 1, fp1, mask=valid)
    tl.store(fp_out + rows * 3 + 2, fp2, mask=valid)
