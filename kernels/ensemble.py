"""The ensemble kernel family: many trajectories, many steps, state in registers.

One `@triton.jit` kernel, `ensemble_kernel`; every variant of the dynamics
is a `tl.constexpr` switch, so each combination compiles to straight-line
code with no dead branches (codes: inertia_gpu/spec.py, copied below):

    PROBLEM        0 quadratic, 1 double-well, 2 rosenbrock
    INTEGRATOR     0 heavy-ball, 1 euler, 2 leapfrog, 3 baoab
    SCHEDULE       0 constant, 1 nesterov
    NOISE_MODEL    0 additive, 1 temperature, 2 loss-scaled
    DRAWN_SPECTRUM 0 fixed, 1 uniform, 2 loguniform, 3 lognormal
    NOISY          False compiles the Philox draws out entirely
    START_FROM_INIT  draw the initial state from Philox (window starting at step 0) instead of loading it
    DIM, DIMP      dimension and its next power of two (tile width; padding coordinates stay exactly 0)
    TPT, WIDTH     trajectories per thread and threads per program (WIDTH = 32 num_warps): a program
                   owns BLOCK = TPT * WIDTH consecutive trajectories, thread t the TPT consecutive ones
                   t * TPT .. t * TPT + TPT - 1. TPT = WIDTH = 1 is the wide layout for large DIM:
                   one trajectory per program, its coordinates spread over the program's threads
    GUARD          per-step window guards (needed unless step_begin and step_end are multiples of 4)

The working dtype (float32 or float64) is the element type of the state pointers.

Layout. The state is a [TPT, DIMP, WIDTH] register tile. Triton's default
layout gives the last axis to the threads (WIDTH = 32 num_warps covers them
exactly), so each thread holds whole trajectories: sums over coordinates
never leave the thread, and the 64 trajectories of a statistics group
(GROUP, spec.py) live in 64 / TPT adjacent lanes of one warp (TPT >= 2).

Steps. The program walks the window [step_begin, step_end) in quads of four
steps: ONE Philox call per coordinate per quad (counter (trajectory, n // 4,
coordinate, TAG_STEP), docs/CONVENTIONS.md), whose four lanes feed the steps
4q .. 4q + 3. With GUARD each step is wrapped in a uniform branch
`lo <= n < hi`, so one instantiation serves windows cut anywhere. The
gradient at the current theta is carried across steps.

Recording is table-driven: rec[k] is the partial-sum row of step
step_begin + k, or -1 when that step is not recorded (the launcher builds
the table from backends.base.recorded_in_window). At a recorded step each
trajectory's inertia, kinetic energy, loss and shadow inertia are formed in
float64 from the state converted to float64 (float32 runs stay right down to
1e-38 and never form subnormal products); first passage compares
I_n <= f I_0 in float64 (I_0 is kept in float64). A trajectory whose
inertia is not finite or above `diverge_above` is diverged: its theta and
momentum become NaN (so it stays diverged) and it is left out of every sum.
The kept trajectories are summed per group in float64 off the critical path:
each thread adds its TPT trajectories in order into eight partial sums (K, L,
shadow, I^2, D, Q, I_0, count), and one exchange through shared memory
(tl.gather, _transposed_group_sums) hands each lane ONE of the eight columns
from eight lanes of its group, which it adds in registers; a short shuffle
butterfly joins the group's 64 / TPT / 8 parts, and the group's first eight
lanes store the eight sums. The order depends on the lane alone, so the group
sums are identical for any chunking, window cut or rank count (a group is
always reduced by the same code); changing TPT (the block size at fixed warps)
may change their last bits. The launcher then forms the inertia column as
sum K + sum L and the residual as ((sum K + sum L) - sum I_0) + sum D - sum Q:
the same balance, rounded relative to the group's inertia (docs/CONVENTIONS.md).
In the wide layout (one trajectory per program) the kernel writes
per-trajectory rows and the launcher sums each group by a fixed pairwise tree
of elementwise adds (again independent of chunking). First passage is a
predicated min of the step into a register that holds NOT_YET until the
trajectory passes (-1 in memory).

Divergence. Two passes per window (the launcher): whole blocks first with
SAFE = False, which sums without the per-trajectory divergence selects (the
count is the group size) and only raises the program's flag when a thread's
inertia sum fails the compare (every term is >= 0 and rounding is monotone,
so the sum passes only when each trajectory does; NaN and inf propagate); then, with SAFE = True, every flagged program
(the partial last block, and any block that saw divergence) runs again from
the same inputs, turning diverged states to NaN and leaving them out of the
sums. A program without divergence gives the same bits either way (the same
values through the same reductions), so which pass produced a block never
shows; a healthy run pays neither the selects nor a read-back.

Floating-point contraction. The launcher compiles with
enable_fp_fusion=False: every product and sum is rounded as the torch
reference rounds it (no fused multiply-add), so states agree with
reference.py to the working dtype's rounding step for step instead of
drifting by an FMA's extra precision. Fusion would be faster by a few
instructions per step and statistically equivalent, but it would no longer
be the reference's arithmetic.

Registers (16 warps per SM need at most 128 per thread at TPT = 4). The
float32 normal transform is call-free and branch-free (kernels/philox.py),
which lets the compiler spread a lane's Box-Muller pair over the
neighbouring steps and their recording, or hoist Philox's first rounds (a
function of the trajectory and the seed alone) out of the loop, each
holding registers across it. With PIN (set by the launcher on a GPU; the
interpreter runs no inline PTX) an opaque register move (_pin) fixes where
such a value is formed: the pending normals z1 and z3, and the trajectory
word inside the loop.

Every scalar the dynamics multiplies by comes from the coefficient table
(inertia_gpu/coefficients.py, formed once in float64 and rounded once): the
constants `coef` (CONST_*) and the per-step rows `step` (STEP_*; one row for
a constant schedule, one per step of the window for nesterov), so the kernel
does only per-trajectory arithmetic, in the reference's order. The float64
observables take their float64 scalars from `obs` (OBS_*).
"""
import triton
import triton.language as tl

from .philox import normal_pair, uniform24

GROUP: tl.constexpr = tl.constexpr(64)
N_QUANTITIES: tl.constexpr = tl.constexpr(6)
NS: tl.constexpr = tl.constexpr(8)  # partial sums a thread exchanges per record (_transposed_group_sums)
# one partial-sum row: the quantities, then the ledger's group sums (spec.COLUMNS)
N_COLUMNS: tl.constexpr = tl.constexpr(9)
COL_DISSIPATED: tl.constexpr = tl.constexpr(6)
COL_INJECTED: tl.constexpr = tl.constexpr(7)
COL_RESIDUAL: tl.constexpr = tl.constexpr(8)
FRACTION_0: tl.constexpr = tl.constexpr(0.5)
FRACTION_1: tl.constexpr = tl.constexpr(0.36787944117144233)
FRACTION_2: tl.constexpr = tl.constexpr(0.1)
NOT_YET: tl.constexpr = tl.constexpr(2147483647)  # first passage not reached (in memory: -1)
TAG_STEP: tl.constexpr = tl.constexpr(0)
TAG_INIT: tl.constexpr = tl.constexpr(1)
TAG_SPECTRUM: tl.constexpr = tl.constexpr(2)

# switch codes (copies of inertia_gpu/spec.py; tests/test_spec.py checks them)
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
SPECTRUM_FIXED: tl.constexpr = tl.constexpr(0)
SPECTRUM_UNIFORM: tl.constexpr = tl.constexpr(1)
SPECTRUM_LOGUNIFORM: tl.constexpr = tl.constexpr(2)
SPECTRUM_LOGNORMAL: tl.constexpr = tl.constexpr(3)

# the coefficient table (copies of inertia_gpu/coefficients.py Const and Step; tests check them):
# constants, working dtype, formed once on the host in float64 and rounded once
CONST_LR: tl.constexpr = tl.constexpr(0)
CONST_HALF_LR: tl.constexpr = tl.constexpr(1)
CONST_H: tl.constexpr = tl.constexpr(2)
CONST_HALF_H: tl.constexpr = tl.constexpr(3)
CONST_SQRT_H: tl.constexpr = tl.constexpr(4)
CONST_SHADOW: tl.constexpr = tl.constexpr(5)
CONST_NOISE: tl.constexpr = tl.constexpr(6)
CONST_TEMPERATURE: tl.constexpr = tl.constexpr(7)
CONST_NESTEROV_R: tl.constexpr = tl.constexpr(8)
CONST_INIT_THETA_STD: tl.constexpr = tl.constexpr(9)
CONST_INIT_VELOCITY_STD: tl.constexpr = tl.constexpr(10)
CONST_SPECTRUM_A: tl.constexpr = tl.constexpr(11)
CONST_SPECTRUM_B: tl.constexpr = tl.constexpr(12)
# per-step columns (one row for a constant schedule, else one per step of the window)
STEP_DECAY: tl.constexpr = tl.constexpr(0)  # mu_n | h gamma_n | e^{-gamma_n h}
STEP_XI: tl.constexpr = tl.constexpr(1)  # the multiplier of xi (loss-scaled: noise)
STEP_SPREAD: tl.constexpr = tl.constexpr(2)  # 1 | sqrt(h) | sqrt(vf_n) (loss-scaled: (XI sqrt(L)) SPREAD)
N_STEP_COLUMNS: tl.constexpr = tl.constexpr(3)

# float64 scalars of the observables (the `obs` vector)
OBS_KINETIC: tl.constexpr = tl.constexpr(0)  # coefficients Obs.HALF_LR (heavy ball: K = lr/2 |b|^2) | 0.5 (continuous)
OBS_SHADOW: tl.constexpr = tl.constexpr(1)  # Obs.HALF_LR (heavy ball: + lr/2 b.g) | Obs.SHADOW = h^2/8 (continuous: - h^2/8 |g|^2)
OBS_DIVERGE: tl.constexpr = tl.constexpr(2)  # min(diverge_above, largest float64): non-finite inertia always diverges
OBS_NAN: tl.constexpr = tl.constexpr(3)  # a NaN: the state of a diverged trajectory (a constexpr NaN breaks jit caching)
OBS_FRACTION_1: tl.constexpr = tl.constexpr(4)  # FRACTION_1 and FRACTION_2 as data: read into uniform
OBS_FRACTION_2: tl.constexpr = tl.constexpr(5)  # registers once, not rematerialised as immediates per record
N_OBS = 6
OBS_INDEX = {k: int(v.value) for k, v in dict(globals()).items() if k.startswith("OBS_")}


# --- sums over coordinates (in-thread) and over groups (in-warp) --------------------------


@triton.jit
def _coord_sum(x):
    """[TPT, DIMP, WIDTH] -> [TPT, WIDTH]: the coordinates of a trajectory live in one thread."""
    return tl.sum(x, axis=1)


# --- problems -----------------------------------------------------------------------------


@triton.jit
def _shift(x, cols, row_buf, DIM: tl.constexpr, OFFSET: tl.constexpr):
    """out[:, i, :] = x[:, i + OFFSET, :] (0 where i + OFFSET is outside [0, DIM)); exact.

    x holds values of the working dtype (theta, or theta converted to float64). Coordinates in-thread
    (TPT/WIDTH layout): the masks are compile-time constants per register and the selects fold away,
    O(DIM) adds of zeros. The wide layout (coordinates across the threads of the program, row_buf this
    trajectory's row of theta_out, written only at the end): through memory, between CTA barriers,
    so compile time does not grow with DIM.
    """
    if x.shape[0] * x.shape[2] == 1:
        tl.debug_barrier()  # earlier readers of the row are done
        tl.store(row_buf + cols, x.to(row_buf.dtype.element_ty), mask=cols < DIM)
        tl.debug_barrier()  # the row is written
        src = cols + OFFSET
        inside = (src >= 0) & (src < DIM) & (cols < DIM)  # padding columns stay exactly 0
        out = tl.load(row_buf + src, mask=inside, other=0.0).to(x.dtype)
    else:
        out = tl.zeros_like(x)
        for j in tl.static_range(DIM):
            if (j - OFFSET >= 0) and (j - OFFSET < DIM):
                col = tl.sum(tl.where(cols == j, x, 0.0), axis=1)
                out = tl.where(cols == j - OFFSET, col[:, None, :], out)
    return out


@triton.jit
def _grad(theta, lam, cols, row_buf, PROBLEM: tl.constexpr, DIM: tl.constexpr):
    if PROBLEM == QUADRATIC:
        g = lam * theta
    elif PROBLEM == DOUBLE_WELL:
        g = theta * (theta * theta - 1.0)
    else:
        # chained Rosenbrock: r_i = theta_{i+1} - theta_i^2 for i < DIM - 1
        y = _shift(theta, cols, row_buf, DIM, 1)
        r = y - theta * theta
        a = -400.0 * theta * r - 2.0 * (1.0 - theta)
        a = tl.where(cols < DIM - 1, a, 0.0)
        # 200 r_{i-1} = 200 (theta_i - theta_{i-1}^2), zero at i = 0: the same operations as r at i - 1,
        # from a shift of theta (exact through a working-dtype buffer), not of r
        x = _shift(theta, cols, row_buf, DIM, -1)
        b = tl.where(cols >= 1, 200.0 * (theta - x * x), 0.0)
        g = a + b
    return g


@triton.jit
def _loss(theta, lam, cols, row_buf, PROBLEM: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr):
    """Per-trajectory loss [TPT, WIDTH] in the dtype of theta."""
    if PROBLEM == QUADRATIC:
        out = 0.5 * _coord_sum(lam * theta * theta)
    elif PROBLEM == DOUBLE_WELL:
        w = theta * theta - 1.0
        ww = w * w
        if PAD:
            ww = tl.where(cols < DIM, ww, 0.0)
        out = 0.25 * _coord_sum(ww)
    else:
        y = _shift(theta, cols, row_buf, DIM, 1)
        r = y - theta * theta
        one_m = 1.0 - theta
        t = 100.0 * (r * r) + one_m * one_m
        t = tl.where(cols < DIM - 1, t, 0.0)
        out = _coord_sum(t)
    return out


# --- statistics ---------------------------------------------------------------------------


@triton.jit
def _observe64(theta, mom, lam, cols, row_buf, kin_c, shadow_c, PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr,
               DIM: tl.constexpr, PAD: tl.constexpr):
    """(inertia, kinetic, loss, shadow) per trajectory [TPT, WIDTH] in float64, as reference.Model.observe."""
    t64 = theta.to(tl.float64)
    m64 = mom.to(tl.float64)
    l64 = lam.to(tl.float64)
    loss = _loss(t64, l64, cols, row_buf, PROBLEM, DIM, PAD)
    g64 = _grad(t64, l64, cols, row_buf, PROBLEM, DIM)
    kinetic = kin_c * _coord_sum(m64 * m64)
    inertia = kinetic + loss
    if INTEGRATOR == HEAVY_BALL:
        shadow = inertia + shadow_c * _coord_sum(m64 * g64)
    else:
        shadow = inertia - shadow_c * _coord_sum(g64 * g64)
    return inertia, kinetic, loss, shadow


@triton.jit
def _slots(x0, x1, x2, x3, x4, x5, x6, x7):
    """[NS, WIDTH] (NS = 8) from eight per-thread values [WIDTH]: row c is x_c. The row of each register is a
    compile-time constant, so the selects fold away (no data movement)."""
    c = tl.arange(0, NS)[:, None]
    out = tl.where(c == 0, x0[None, :], tl.where(c == 1, x1[None, :], tl.where(c == 2, x2[None, :], x3[None, :])))
    return tl.where(c == 4, x4[None, :], tl.where(c == 5, x5[None, :], tl.where(c == 6, x6[None, :],
                                                                               tl.where(c == 7, x7[None, :], out))))


@triton.jit
def _transposed_group_sums(tile, TPT: tl.constexpr, WIDTH: tl.constexpr, PIN: tl.constexpr):
    """tile [NS, WIDTH]: thread t's partial sums of NS columns -> [WIDTH]: lane t holds the sum over its
    GROUP of column t % NS.

    A group's LANES = GROUP / TPT lanes hold NS x LANES partials. One exchange through shared memory
    (tl.gather) gives lane t the column c = t % NS of the NS lanes t ^ k (k < NS) of its part: each lane
    sums NS values of ONE column in registers, then the LANES / NS parts of the group combine by a short
    shuffle butterfly. Against a butterfly of every column over all lanes (NS x log2(LANES) float64
    shuffle steps per thread) this is NS stores, NS loads and log2(LANES / NS) shuffle steps.

    The element (c, t) of the tile sits at c WIDTH + t, so lane t's k-th value is at (c WIDTH + t) ^ k:
    for each k a warp's 32 lanes read 32 doubles that fill every bank pair exactly twice (two wavefronts,
    the least 256 bytes take: no conflicts), and each
    address is one xor of a per-lane base (_pin keeps the compiler from holding all NS addresses in
    registers across the loop). The order of every sum depends on the lane alone, so the sums are the
    same bits for any chunking, window cut or rank count, and the same for every column: two columns with
    equal terms have equal sums."""
    LANES: tl.constexpr = GROUP // TPT
    t = tl.arange(0, WIDTH)
    k = tl.arange(0, NS)[:, None]
    idx = _pin((t % NS) * WIDTH + t, PIN)[None, :] ^ k  # [NS, WIDTH]
    mine = tl.gather(tl.reshape(tile, [NS * WIDTH]), tl.reshape(idx, [NS * WIDTH]), 0)
    # lane t's share of column t % NS, as a pairwise tree over the bits of k: the xor by the column only swaps
    # the two operands of some adds (exact), so every column is summed in the same order, bit for bit
    part = tl.sum(tl.sum(tl.sum(tl.reshape(mine, [2, 2, 2, WIDTH]), axis=0), axis=0), axis=0)  # [WIDTH]
    s = tl.sum(tl.reshape(part, [WIDTH // LANES, LANES // NS, NS]), axis=1, keep_dims=True)
    return tl.reshape(tl.broadcast_to(s, [WIDTH // LANES, LANES // NS, NS]), [WIDTH])


@triton.jit
def _store_sums(partials_ptr, row, grp, n_groups, kept, inertia, kinetic, loss, shadow, dis, inj,
                inertia0, i0_sum, TPT: tl.constexpr, WIDTH: tl.constexpr, LEDGER: tl.constexpr, SAFE: tl.constexpr,
                PIN: tl.constexpr):
    """partials[row, grp, :] = group sums over the kept trajectories of [count, ., K, L, shadow, I^2, D, Q,
    I_0] (without LEDGER D, Q and I_0 are 0.0); the launcher then forms the inertia column as
    sum K + sum L and the residual column as ((sum K + sum L) - sum I_0) + sum D - sum Q, the same balance
    as summing each trajectory's (I_n - I_0) + D - Q, rounded once per group (a few float64 ulps of the
    group's inertia) instead of once per trajectory. The kept inertia is the kept K plus the kept L (the
    same bits as selecting I = K + L).

    Returns each thread's sum of the kept inertia (sum K + sum L over its TPT trajectories): every term is
    >= 0 (eigenvalues >= 0), and float64 rounding is monotone, so the sum is <= a bound only when every
    trajectory's inertia is (NaN and inf propagate): one compare checks the thread for divergence.

    SAFE = False is the program whose trajectories are all valid and, the caller checks, all kept: no
    selects, each thread's count is TPT. SAFE selects every column by `kept`: on a program without
    divergence both give the same bits (the same values through the same reduction).
    """
    base = partials_ptr + (row.to(tl.int64) * n_groups + grp) * N_COLUMNS
    if TPT * WIDTH < GROUP:
        # the wide layout (one trajectory per program): per-trajectory rows, summed into groups by the
        # launcher in a fixed pairwise order
        zero = tl.zeros_like(inertia)
        k64 = tl.where(kept, kinetic, zero)
        l64 = tl.where(kept, loss, zero)
        i64 = k64 + l64
        base = tl.reshape(base, [1, 1])
        tl.store(base + 0, kept.to(tl.float64))
        tl.store(base + 1, i64)
        tl.store(base + 2, k64)
        tl.store(base + 3, l64)
        tl.store(base + 4, tl.where(kept, shadow, zero))
        tl.store(base + 5, i64 * i64)
        if LEDGER:
            d64 = tl.where(kept, dis, zero)
            q64 = tl.where(kept, inj, zero)
            tl.store(base + COL_DISSIPATED, d64)
            tl.store(base + COL_INJECTED, q64)
            tl.store(base + COL_RESIDUAL, ((i64 - tl.where(kept, inertia0, zero)) + d64) - q64)
        else:
            tl.store(base + COL_DISSIPATED, zero)
            tl.store(base + COL_INJECTED, zero)
            tl.store(base + COL_RESIDUAL, zero)
        total = i64
    else:
        if SAFE:
            zero = tl.zeros_like(inertia)
            k64 = tl.where(kept, kinetic, zero)
            l64 = tl.where(kept, loss, zero)
            s64 = tl.where(kept, shadow, zero)
            count = tl.sum(kept.to(tl.float64), axis=0)
        else:
            k64 = kinetic
            l64 = loss
            s64 = shadow
            count = tl.full([WIDTH], TPT, tl.float64)
        i64 = k64 + l64
        # each thread's partial sums over its TPT trajectories (in-thread, in order), then the groups' (one
        # transposition for every configuration: turning the ledger off leaves the other columns' bits alone)
        sk = tl.sum(k64, axis=0)
        sl = tl.sum(l64, axis=0)
        total = sk + sl
        if LEDGER:
            if SAFE:
                d64 = tl.where(kept, dis, zero)
                q64 = tl.where(kept, inj, zero)
                i0_sum = tl.sum(tl.where(kept, inertia0, zero), axis=0)
            else:
                d64 = dis
                q64 = inj
            sd = tl.sum(d64, axis=0)
            sq = tl.sum(q64, axis=0)
        else:  # D, Q and sum I_0 are 0.0: the residual the launcher forms is 0.0
            sd = tl.zeros_like(sk)
            sq = sd
            i0_sum = sd
        sums = _transposed_group_sums(_slots(sk, sl, tl.sum(s64, axis=0), tl.sum(i64 * i64, axis=0), sd, sq, i0_sum,
                                             count), TPT, WIDTH, PIN)
        # lane t of a group holds the group's sum of slot t % 8; the group's first eight lanes store them, from
        # their own layout (no conversion): slots K, L, shadow, I^2, D, Q -> columns 2..7, sum I_0 -> the
        # residual's column (the launcher forms the residual from it), the count -> column 0
        t = tl.arange(0, WIDTH)
        slot = t % 8
        group = tl.program_id(0) * (TPT * WIDTH // GROUP) + t // (GROUP // TPT)
        at = (partials_ptr + group * N_COLUMNS) + row.to(tl.int64) * (n_groups * N_COLUMNS)
        column = tl.where(slot < 6, slot + 2, tl.where(slot == 6, COL_RESIDUAL, 0))
        tl.store(at + column, sums, mask=(t % (GROUP // TPT) < 8) & (group < n_groups))
    return total


@triton.jit
def _record(theta, mom, g, lam, cols, row_buf, n, row, inertia0, i0_sum, fp0, fp1, fp2, dis, inj, partials_ptr, grp,
            n_groups, valid, flag_ptr, kin_c, shadow_c, diverge, nan64, frac1, frac2, PROBLEM: tl.constexpr,
            INTEGRATOR: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, TPT: tl.constexpr, WIDTH: tl.constexpr,
            LEDGER: tl.constexpr, SAFE: tl.constexpr, PIN: tl.constexpr):
    """Statistics of the state at recorded step n (partial-sum row `row`), divergence, first passage.

    `diverge` is min(diverge_above, largest float64), so the one compare `I <= diverge` is false for
    NaN, for +inf and above the bound. The ledger's residual W = (I_n - I_0) + D - Q closes the
    balance of each trajectory; a diverged trajectory's D and Q become NaN with its state.

    SAFE = False (a program of valid trajectories, none diverged so far: the launcher's first pass) sums
    without selects and only raises the program's flag when a trajectory fails the compare; the launcher
    then runs the program again with SAFE = True, which turns diverged states to NaN and leaves them out
    of every sum. Healthy runs never pay for divergence (module docstring, "Divergence").
    """
    inertia, kinetic, loss, shadow = _observe64(theta, mom, lam, cols, row_buf, kin_c, shadow_c, PROBLEM, INTEGRATOR,
                                                DIM, PAD)
    ok = inertia <= diverge
    if SAFE:
        _store_sums(partials_ptr, row, grp, n_groups, valid & ok, inertia, kinetic, loss, shadow, dis, inj, inertia0,
                    i0_sum, TPT, WIDTH, LEDGER, SAFE, PIN)
        if LEDGER:
            dis = tl.where(ok, dis, nan64)
            inj = tl.where(ok, inj, nan64)
        keep = ok[:, None, :]
        nan = nan64.to(theta.dtype)
        theta = tl.where(keep, theta, nan)
        mom = tl.where(keep, mom, nan)
        if INTEGRATOR == LEAPFROG or INTEGRATOR == BAOAB:
            g = tl.where(keep, g, nan)
    else:
        total = _store_sums(partials_ptr, row, grp, n_groups, ok, inertia, kinetic, loss, shadow, dis, inj,
                            inertia0, i0_sum, TPT, WIDTH, LEDGER, SAFE, PIN)
        # any trajectory of this thread not kept (its inertia sum says so, see _store_sums): the program's
        # results are void; flag it for the rerun
        lost = ~(total <= diverge)
        tl.store(flag_ptr + lost.to(tl.int32) * 0, lost.to(tl.int32), mask=lost)
    # a diverged trajectory cannot pass: its inertia fails every compare (NaN), or exceeds f I_0
    # (I_0 <= diverge_above, else it diverged at step 0 and is NaN since)
    # first passage: the smallest step at which I_n <= f I_0 (NOT_YET until then; one predicated min each)
    n32 = n.to(tl.int32)
    fp0 = tl.where(inertia <= FRACTION_0 * inertia0, tl.minimum(fp0, n32), fp0)
    fp1 = tl.where(inertia <= frac1 * inertia0, tl.minimum(fp1, n32), fp1)
    fp2 = tl.where(inertia <= frac2 * inertia0, tl.minimum(fp2, n32), fp2)
    return theta, mom, g, fp0, fp1, fp2, dis, inj


# --- dynamics -----------------------------------------------------------------------------


@triton.jit
def _xi_scale(theta, lam, cols, row_buf, xi_c, spread, PROBLEM: tl.constexpr, NOISE_MODEL: tl.constexpr,
              DIM: tl.constexpr, PAD: tl.constexpr):
    """What multiplies xi: the table's XI, or (XI sqrt(max(L, 0))) SPREAD for loss-scaled noise."""
    if NOISE_MODEL == LOSS_SCALED:
        loss = _loss(theta, lam, cols, row_buf, PROBLEM, DIM, PAD)
        out = ((xi_c * tl.sqrt(tl.where(loss < 0.0, 0.0, loss))) * spread)[:, None, :]
    else:
        out = xi_c
    return out


@triton.jit
def _ledger_split(m, k, dis, inj, c_dis, two_a, half_k, NOISY: tl.constexpr):
    """The ledger's terms of one friction (m -> a m) and noise (+ k) substep, added to the trajectory's float64
    cumulative dissipated D and injected Q (docs/THEORY.md §8):

        D += (1 - a^2) K(m)        Q += K(a m + k) - K(a m) = HALF_K (2 a m . k + k . k)

    with K(m) = HALF_K |m|^2; c_dis = (1 - a^2) HALF_K and two_a = 2 a are the step's float64 scalars. The
    working-dtype values are converted exactly, so the terms carry float64 rounding only; Q in the form
    without the cancellation of K(a m + k) - K(a m)."""
    if m.dtype == tl.float32 and m.shape[1] > 1:
        # float32 with several coordinates: the sums over coordinates in float32 (a rounding of a few
        # float32 ulps of the step's terms) and one conversion per trajectory instead of one per coordinate
        dis = tl.fma(c_dis, _coord_sum(m * m).to(tl.float64), dis)
        if NOISY:
            inj = tl.fma(half_k, _coord_sum(tl.fma(two_a.to(tl.float32), m, k) * k).to(tl.float64), inj)
    else:
        m64 = m.to(tl.float64)
        dis = tl.fma(c_dis, _coord_sum(m64 * m64), dis)
        if NOISY:
            k64 = k.to(tl.float64)
            inj = tl.fma(half_k, _coord_sum(tl.fma(two_a, m64, k64) * k64), inj)
    return dis, inj


@triton.jit
def _ou(v, xi, theta, lam, cols, row_buf, decay, xi_c, spread, dis, inj, c_dis, two_a, half_k,
        PROBLEM: tl.constexpr, NOISE_MODEL: tl.constexpr, NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr,
        LEDGER: tl.constexpr):
    """The exact Ornstein-Uhlenbeck step v <- DECAY v + scale xi (reference.Model.step, letter O)."""
    out = decay * v
    k = 0.0
    if NOISY:
        k = _xi_scale(theta, lam, cols, row_buf, xi_c, spread, PROBLEM, NOISE_MODEL, DIM, PAD) * xi
        out = out + k
    if LEDGER:
        dis, inj = _ledger_split(v, k, dis, inj, c_dis, two_a, half_k, NOISY)
    return out, dis, inj


@triton.jit
def _advance(theta, mom, g, lam, xi, cols, row_buf, lr, h, half_h, decay, xi_c, spread, dis, inj, c_dis, two_a,
             half_k, PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, NOISE_MODEL: tl.constexpr,
             NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, LEDGER: tl.constexpr):
    """State n -> n + 1 with the step's table scalars (reference.Model.step: the same operations in order),
    and with LEDGER the step's dissipated and injected energy (_ledger_split at the friction + noise substep).

    Leapfrog and BAOAB carry g = grad L(theta) in and out (their closing half-kick's gradient opens the
    next step); heavy ball and Euler compute it at the start of the step and carry nothing (g = 0.0),
    which saves a register per coordinate.
    """
    if INTEGRATOR == HEAVY_BALL:  # M: torch.optim.SGD's convention
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM)
        k = 0.0
        if NOISY:
            k = _xi_scale(theta, lam, cols, row_buf, xi_c, spread, PROBLEM, NOISE_MODEL, DIM, PAD) * xi
            g = g + k
        if LEDGER:
            dis, inj = _ledger_split(mom, k, dis, inj, c_dis, two_a, half_k, NOISY)
        mom = decay * mom + g
        theta = theta - lr * mom
        g = 0.0
    elif INTEGRATOR == EULER:  # E
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM)
        new_mom = mom - h * g - decay * mom
        k = 0.0
        if NOISY:
            k = _xi_scale(theta, lam, cols, row_buf, xi_c, spread, PROBLEM, NOISE_MODEL, DIM, PAD) * xi
            new_mom = new_mom + k
        if LEDGER:
            dis, inj = _ledger_split(mom, k, dis, inj, c_dis, two_a, half_k, NOISY)
        theta = theta + h * mom
        mom = new_mom
        g = 0.0
    elif INTEGRATOR == LEAPFROG:  # B A B O
        mom = mom - half_h * g
        theta = theta + h * mom
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM)
        mom = mom - half_h * g
        mom, dis, inj = _ou(mom, xi, theta, lam, cols, row_buf, decay, xi_c, spread, dis, inj, c_dis, two_a, half_k,
                            PROBLEM, NOISE_MODEL, NOISY, DIM, PAD, LEDGER)
    else:  # baoab: B A O A B
        mom = mom - half_h * g
        theta = theta + half_h * mom
        mom, dis, inj = _ou(mom, xi, theta, lam, cols, row_buf, decay, xi_c, spread, dis, inj, c_dis, two_a, half_k,
                            PROBLEM, NOISE_MODEL, NOISY, DIM, PAD, LEDGER)
        theta = theta + half_h * mom
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM)
        mom = mom - half_h * g
    return theta, mom, g, dis, inj


@triton.jit
def _step(theta, mom, g, lam, xi, cols, row_buf, n, rec_ptr, lo, inertia0, i0_sum, fp0, fp1, fp2, dis, inj, partials_ptr,
          grp, n_groups, valid, flag_ptr, step_ptr, lr, h, half_h, decay0, xi0, spread0, kin_c, shadow_c, diverge, nan64, frac1, frac2,
          PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
          NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, TPT: tl.constexpr, WIDTH: tl.constexpr,
          LEDGER: tl.constexpr, SAFE: tl.constexpr, PIN: tl.constexpr):
    """One step n -> n + 1 plus, when the table says n + 1 is recorded, its statistics.

    The step's scalars: the constant row (decay0, xi0, spread0) or, for a nesterov schedule, row n - lo
    of the window's table. The ledger's friction factor a is the table's DECAY converted to float64
    (Euler: 1 - DECAY, DECAY being h gamma there), as ledger.step takes it.
    """
    if SCHEDULE == NESTEROV:
        at = step_ptr + (n - lo) * N_STEP_COLUMNS
        decay = tl.load(at + STEP_DECAY)
        xi_c = tl.load(at + STEP_XI)
        spread = tl.load(at + STEP_SPREAD)
    else:
        decay = decay0
        xi_c = xi0
        spread = spread0
    if INTEGRATOR == EULER:
        a = 1.0 - decay.to(tl.float64)
    else:
        a = decay.to(tl.float64)
    c_dis = (1.0 - a * a) * kin_c
    two_a = a + a
    theta, mom, g, dis, inj = _advance(theta, mom, g, lam, xi, cols, row_buf, lr, h, half_h, decay, xi_c, spread,
                                       dis, inj, c_dis, two_a, kin_c, PROBLEM, INTEGRATOR, NOISE_MODEL, NOISY, DIM,
                                       PAD, LEDGER)
    row = tl.load(rec_ptr + (n + 1 - lo))
    if row >= 0:
        theta, mom, g, fp0, fp1, fp2, dis, inj = _record(
            theta, mom, g, lam, cols, row_buf, n + 1, row, inertia0, i0_sum, fp0, fp1, fp2, dis, inj, partials_ptr,
            grp, n_groups, valid, flag_ptr, kin_c, shadow_c, diverge, nan64, frac1, frac2, PROBLEM, INTEGRATOR, DIM, PAD, TPT,
            WIDTH, LEDGER, SAFE, PIN)
    return theta, mom, g, fp0, fp1, fp2, dis, inj


@triton.jit
def _pin(x, PIN: tl.constexpr):
    """x, formed here: an opaque register move (inline PTX) that the compiler may neither hoist nor sink. PIN is
    set by the launcher on a GPU (the interpreter runs no inline assembly). On the pending normals z1 and z3:
    the call-free, branch-free float32 transform would otherwise be spread over the neighbouring steps and
    their recording, its intermediates live there instead of its one result (registers: 16 warps per SM)."""
    if PIN:
        if x.dtype.primitive_bitwidth == 64:
            x = tl.inline_asm_elementwise("mov.b64 $0, $1;", "=l,l", [x], dtype=x.dtype, is_pure=False, pack=1)
        else:
            x = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=1)
    return x


@triton.jit
def _quad(theta, mom, g, lam, cols, row_buf, colmask, traj_u32, q, lo, hi, seed, rec_ptr, inertia0, i0_sum, fp0, fp1,
          fp2, dis, inj, partials_ptr, grp, n_groups, valid, flag_ptr, step_ptr, lr, h, half_h, decay0, xi0, spread0,
          kin_c, shadow_c, diverge, nan64, frac1, frac2,
          PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
          NOISY: tl.constexpr, DIM: tl.constexpr, PAD: tl.constexpr, TPT: tl.constexpr, WIDTH: tl.constexpr,
          GUARD: tl.constexpr, LEDGER: tl.constexpr, SAFE: tl.constexpr, PIN: tl.constexpr):
    """Steps 4q .. 4q + 3 from one Philox call per coordinate (lane = n % 4).

    GUARD: only the steps n with lo <= n < hi run (head and tail of an unaligned window).
    """
    if NOISY:
        zero = tl.zeros(theta.shape, dtype=tl.uint32)
        c1 = zero + q.to(tl.uint32)
        c2 = zero + cols.to(tl.uint32)
        c3 = zero + TAG_STEP
        # the raw words, not four normals: the second Box-Muller pair is transformed only at lane 2,
        # so at most one pending normal per coordinate is live (registers: float64 and d > 1)
        # the trajectory word through _pin: Philox's first rounds depend on it (and the seed) alone, and
        # hoisted out of the loop they would hold six registers per trajectory across it
        x0, x1, x2, x3 = tl.philox(seed, zero + _pin(traj_u32, PIN), c1, c2, c3)
    base = q * 4
    for lane in tl.static_range(4):
        if NOISY:
            if lane == 0:
                z0, z1 = normal_pair(x0, x1, theta.dtype)
                z1 = _pin(z1, PIN)
                xi = z0
            elif lane == 1:
                xi = z1
            elif lane == 2:
                z2, z3 = normal_pair(x2, x3, theta.dtype)
                z3 = _pin(z3, PIN)
                xi = z2
            else:
                xi = z3
            if PAD:
                xi = tl.where(colmask, xi, 0.0)
        else:
            xi = 0.0
        n = base + lane
        if GUARD:
            if (n >= lo) & (n < hi):
                theta, mom, g, fp0, fp1, fp2, dis, inj = _step(
                    theta, mom, g, lam, xi, cols, row_buf, n, rec_ptr, lo, inertia0, i0_sum, fp0, fp1, fp2, dis, inj,
                    partials_ptr, grp, n_groups, valid, flag_ptr, step_ptr, lr, h, half_h, decay0, xi0, spread0,
                    kin_c, shadow_c, diverge, nan64, frac1, frac2, PROBLEM, INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD,
                    TPT, WIDTH, LEDGER, SAFE, PIN)
        else:
            theta, mom, g, fp0, fp1, fp2, dis, inj = _step(
                theta, mom, g, lam, xi, cols, row_buf, n, rec_ptr, lo, inertia0, i0_sum, fp0, fp1, fp2, dis, inj,
                partials_ptr, grp, n_groups, valid, flag_ptr, step_ptr, lr, h, half_h, decay0, xi0, spread0, kin_c,
                shadow_c, diverge, nan64, frac1, frac2, PROBLEM, INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD, TPT, WIDTH,
                LEDGER, SAFE, PIN)
    return theta, mom, g, fp0, fp1, fp2, dis, inj


# --- the kernel ---------------------------------------------------------------------------


@triton.jit(do_not_specialize=["start", "count", "n_groups", "step_begin", "step_end", "seed"])
def ensemble_kernel(
    theta_in, mom_in, inertia0_in, fp_in, ledger_in,
    theta_out, mom_out, inertia0_out, fp_out, ledger_out,
    lam_ptr, coef_ptr, step_ptr, obs_ptr, rec_ptr, partials_ptr, flag_ptr,
    start, count, n_groups, step_begin, step_end, seed,
    PROBLEM: tl.constexpr, INTEGRATOR: tl.constexpr, SCHEDULE: tl.constexpr, NOISE_MODEL: tl.constexpr,
    NOISY: tl.constexpr, DRAWN_SPECTRUM: tl.constexpr, START_FROM_INIT: tl.constexpr,
    DIM: tl.constexpr, DIMP: tl.constexpr, TPT: tl.constexpr, WIDTH: tl.constexpr, GUARD: tl.constexpr = True,
    LEDGER: tl.constexpr = True, SAFE: tl.constexpr = True, PIN: tl.constexpr = False,
):
    """Advance trajectories [start, start + count) over steps [step_begin, step_end).

    Per-trajectory buffers are blocked per program (padded to whole programs; the launcher permutes):
    theta/mom [programs, TPT, DIM, WIDTH] working dtype; inertia0 [programs, TPT, WIDTH] float64;
    fp [programs, TPT, 3, WIDTH] int32; ledger [programs, TPT, 2, WIDTH] float64 (cumulative D, Q; not
    touched without LEDGER); trajectory pid * BLOCK + t * TPT + i sits at [pid, i, ., t].
    rec [step_end - step_begin + 1] int32 (row of step step_begin + k, -1 = not recorded);
    partials [rows, n_groups, N_COLUMNS] float64; obs float64 [N_OBS]; flag [programs] int32.

    SAFE = False: every trajectory of the program is valid (a whole block) and the statistics are summed
    without the divergence selects; a trajectory that fails the divergence compare at a record sets
    flag[pid] = 1 and the program's outputs are void. SAFE = True: the program runs only when flag[pid]
    is nonzero (the launcher sets it for the partial last block, and the first pass for a program that
    saw divergence) and handles validity and divergence per trajectory.
    """
    ACC = theta_out.dtype.element_ty
    PAD: tl.constexpr = DIMP != DIM
    BLOCK: tl.constexpr = TPT * WIDTH
    CARRY_G: tl.constexpr = INTEGRATOR == LEAPFROG or INTEGRATOR == BAOAB
    pid = tl.program_id(0)
    flag_ptr += pid
    if SAFE:
        if tl.load(flag_ptr) == 0:
            return
    # element (i, j, t): trajectory pid * BLOCK + t * TPT + i, coordinate j
    ii = tl.arange(0, TPT)[:, None, None]
    tt = tl.arange(0, WIDTH)[None, None, :]
    cols = tl.arange(0, DIMP)[None, :, None]
    rows = pid.to(tl.int64) * BLOCK + (tt * TPT + ii).to(tl.int64)  # [TPT, 1, WIDTH]
    valid = tl.reshape(rows < count, [TPT, WIDTH])
    colmask = cols < DIM
    # the state buffers are blocked per program as [TPT, DIM, WIDTH] (the launcher permutes them), so
    # consecutive threads touch consecutive addresses: the loads' coalesced layout is the compute layout
    # (per-program int64 bases, int32 offsets within the program: cheap to rematerialise after the loop)
    offs3 = (ii * DIM + cols) * WIDTH + tt
    i2 = tl.arange(0, TPT)[:, None]
    t2 = tl.arange(0, WIDTH)[None, :]
    offs2 = i2 * WIDTH + t2
    offs_fp = i2 * (3 * WIDTH) + t2
    offs_ledger = i2 * (2 * WIDTH) + t2
    prog = pid.to(tl.int64) * BLOCK
    theta_in += prog * DIM
    mom_in += prog * DIM
    theta_out += prog * DIM
    mom_out += prog * DIM
    inertia0_in += prog
    inertia0_out += prog
    fp_in += prog * 3
    fp_out += prog * 3
    ledger_in += prog * 2
    ledger_out += prog * 2
    traj_u32 = (start.to(tl.int64) + rows).to(tl.uint32)  # [TPT, 1, WIDTH]; Philox broadcasts it
    if BLOCK < GROUP:  # the wide layout: one trajectory per program, `partials` holds per-trajectory rows
        grp = pid.to(tl.int64) + tl.arange(0, 1).to(tl.int64)
    else:
        grp = pid * (BLOCK // GROUP) + tl.arange(0, BLOCK // GROUP)  # int32: one register (groups < 2^31)

    # the wide layout's shift buffer: this trajectory's row of theta_out (written only at the end)
    row_buf = theta_out  # (already offset to this program)
    lr = tl.load(coef_ptr + CONST_LR)
    h = tl.load(coef_ptr + CONST_H)
    half_h = tl.load(coef_ptr + CONST_HALF_H)
    decay0 = tl.load(step_ptr + STEP_DECAY)  # row 0: every step's row when the schedule is constant
    xi0 = tl.load(step_ptr + STEP_XI)
    spread0 = tl.load(step_ptr + STEP_SPREAD)
    kin_c = tl.load(obs_ptr + OBS_KINETIC)
    shadow_c = tl.load(obs_ptr + OBS_SHADOW)
    diverge = tl.load(obs_ptr + OBS_DIVERGE)
    nan64 = tl.load(obs_ptr + OBS_NAN)
    frac1 = tl.load(obs_ptr + OBS_FRACTION_1)
    frac2 = tl.load(obs_ptr + OBS_FRACTION_2)

    # eigenvalues of the quadratic: shared (loaded) or per trajectory (drawn from the spectrum stream)
    if PROBLEM == QUADRATIC:
        if DRAWN_SPECTRUM == SPECTRUM_FIXED:
            lam = tl.load(lam_ptr + cols, mask=colmask, other=0.0).to(ACC)  # [1, DIMP, 1]: shared
        else:
            spec_a = tl.load(coef_ptr + CONST_SPECTRUM_A)
            spec_b = tl.load(coef_ptr + CONST_SPECTRUM_B)
            zero = tl.zeros([TPT, DIMP, WIDTH], dtype=tl.uint32)
            x0, x1, _x2, _x3 = tl.philox(seed, zero + traj_u32, zero, zero + cols.to(tl.uint32), zero + TAG_SPECTRUM)
            if DRAWN_SPECTRUM == SPECTRUM_UNIFORM:
                lam = spec_a + spec_b * uniform24(x0, ACC)
            elif DRAWN_SPECTRUM == SPECTRUM_LOGUNIFORM:
                lam = tl.exp(spec_a + spec_b * uniform24(x0, ACC))
            else:
                z, _z1 = normal_pair(x0, x1, ACC)
                lam = tl.exp(spec_a + spec_b * z)
            lam = tl.where(colmask, lam, 0.0)
    else:
        lam = tl.zeros([TPT, DIMP, WIDTH], dtype=ACC)

    if START_FROM_INIT:
        zero = tl.zeros([TPT, DIMP, WIDTH], dtype=tl.uint32)
        x0, x1, _x2, _x3 = tl.philox(seed, zero + traj_u32, zero, zero + cols.to(tl.uint32), zero + TAG_INIT)
        z_theta, z_v = normal_pair(x0, x1, ACC)  # lanes 0 and 1 of the init draw
        theta = tl.where(colmask, tl.load(coef_ptr + CONST_INIT_THETA_STD) * z_theta, 0.0)
        v = tl.where(colmask, tl.load(coef_ptr + CONST_INIT_VELOCITY_STD) * z_v, 0.0)
        if INTEGRATOR == HEAVY_BALL:
            mom = -v / lr
        else:
            mom = v
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM) if CARRY_G else 0.0
        inertia0, _k, _l, _s = _observe64(theta, mom, lam, cols, row_buf, kin_c, shadow_c, PROBLEM, INTEGRATOR, DIM, PAD)
        i0_sum = tl.sum(inertia0, axis=0)  # each thread's sum of I_0: the fast pass's I_0 column
        fp0 = tl.full([TPT, WIDTH], NOT_YET, dtype=tl.int32)
        fp1 = tl.full([TPT, WIDTH], NOT_YET, dtype=tl.int32)
        fp2 = tl.full([TPT, WIDTH], NOT_YET, dtype=tl.int32)
        dis = tl.zeros([TPT, WIDTH], dtype=tl.float64)
        inj = tl.zeros([TPT, WIDTH], dtype=tl.float64)
        row = tl.load(rec_ptr)
        if row >= 0:  # step 0 is recorded whenever the run starts (backends.base.recorded_in_window)
            theta, mom, g, fp0, fp1, fp2, dis, inj = _record(
                theta, mom, g, lam, cols, row_buf, step_begin * 0, row, inertia0, i0_sum, fp0, fp1, fp2, dis, inj,
                partials_ptr, grp, n_groups, valid, flag_ptr, kin_c, shadow_c, diverge, nan64, frac1, frac2, PROBLEM, INTEGRATOR,
                DIM, PAD, TPT, WIDTH, LEDGER, SAFE, PIN)
    else:
        if PAD:
            theta = tl.load(theta_in + offs3, mask=colmask, other=0.0).to(ACC)
            mom = tl.load(mom_in + offs3, mask=colmask, other=0.0).to(ACC)
        else:
            theta = tl.load(theta_in + offs3).to(ACC)
            mom = tl.load(mom_in + offs3).to(ACC)
        inertia0 = tl.load(inertia0_in + offs2).to(tl.float64)
        i0_sum = tl.sum(inertia0, axis=0)  # each thread's sum of I_0: the fast pass's I_0 column
        # -1 (not passed) in memory, NOT_YET (above every step) in registers: a pass is then a min
        fp0 = tl.load(fp_in + offs_fp)
        fp1 = tl.load(fp_in + offs_fp + WIDTH)
        fp2 = tl.load(fp_in + offs_fp + 2 * WIDTH)
        fp0 = tl.where(fp0 < 0, NOT_YET, fp0)
        fp1 = tl.where(fp1 < 0, NOT_YET, fp1)
        fp2 = tl.where(fp2 < 0, NOT_YET, fp2)
        if LEDGER:
            dis = tl.load(ledger_in + offs_ledger)
            inj = tl.load(ledger_in + offs_ledger + WIDTH)
        else:
            dis = tl.zeros([TPT, WIDTH], dtype=tl.float64)
            inj = tl.zeros([TPT, WIDTH], dtype=tl.float64)
        g = _grad(theta, lam, cols, row_buf, PROBLEM, DIM) if CARRY_G else 0.0

    # I_0 is final already: stored now
    tl.store(inertia0_out + offs2, inertia0)
    lo = step_begin.to(tl.int64)
    hi = step_end.to(tl.int64)
    # a while loop, not `for q in range(lo // 4, ...)`: triton 3.6's interpreter hands range() the bounds
    # as shape-(1,) arrays, which numpy >= 2.4 refuses to turn into Python ints
    q = lo // 4
    q_last = (hi - 1) // 4  # inclusive; the window has at least one step
    while q <= q_last:
        # I_0 times a 1.0 the compiler cannot prove constant (q >= 0 always holds): I_0 becomes loop-carried,
        # so the three first-passage thresholds f I_0 are formed at each record (3 DMUL) instead of being
        # hoisted out of the loop and held in 6 float64 registers per trajectory (12 warps/SM instead of 16)
        inertia0 = inertia0 * (q >= 0).to(tl.float64)
        theta, mom, g, fp0, fp1, fp2, dis, inj = _quad(
            theta, mom, g, lam, cols, row_buf, colmask, traj_u32, q, lo, hi, seed, rec_ptr, inertia0, i0_sum, fp0, fp1,
            fp2, dis, inj, partials_ptr, grp, n_groups, valid, flag_ptr, step_ptr, lr, h, half_h, decay0, xi0, spread0,
            kin_c, shadow_c, diverge, nan64, frac1, frac2, PROBLEM, INTEGRATOR, SCHEDULE, NOISE_MODEL, NOISY, DIM, PAD, TPT, WIDTH,
            GUARD, LEDGER, SAFE, PIN)
        q += 1

    if PAD:
        tl.store(theta_out + offs3, theta.to(theta_out.dtype.element_ty), mask=colmask)
        tl.store(mom_out + offs3, mom.to(mom_out.dtype.element_ty), mask=colmask)
    else:
        tl.store(theta_out + offs3, theta.to(theta_out.dtype.element_ty))
        tl.store(mom_out + offs3, mom.to(mom_out.dtype.element_ty))
    tl.store(fp_out + offs_fp, tl.where(fp0 == NOT_YET, -1, fp0))
    tl.store(fp_out + offs_fp + WIDTH, tl.where(fp1 == NOT_YET, -1, fp1))
    tl.store(fp_out + offs_fp + 2 * WIDTH, tl.where(fp2 == NOT_YET, -1, fp2))
    if LEDGER:
        tl.store(ledger_out + offs_ledger, dis)
        tl.store(ledger_out + offs_ledger + WIDTH, inj)
