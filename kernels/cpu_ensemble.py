"""Time-blocked ensemble kernel for the CPU (numba): one trajectory at a time, many steps in registers.

Kernel source only: plain numpy arrays and scalars in, nothing of the library
imported. The launcher is `inertia_gpu.backends.numba_cpu`; the contract is
docs/CONVENTIONS.md.

Work split: `prange` over GROUPs of 64 trajectories. A thread walks the
trajectories of its group in index order and advances each one through the
whole step window while its state stays in registers (d = 1) or in a small
L1-resident scratch row (d > 1); each recorded step adds the trajectory's
quantities to its group's float64 row. A group's sums are therefore formed by
one thread in trajectory order: the result is bitwise the same whatever the
thread count or schedule.

Noise: Philox4x32-10 in uint64 arithmetic (the 32x32 -> 64 products are exact),
one call per (trajectory, coordinate, four steps), all four outputs used
(lanes n % 4 of counter (trajectory, n // 4, coordinate, 0)).

Per-step scalars (mu_n, gamma_n, the OU coefficients, noise scales) are
computed by the launcher in the working dtype exactly as the reference
computes them, and passed as a table `coef[n - step_begin, :]`; the kernel
does only the per-trajectory arithmetic, in the operation order of
`inertia_gpu.reference`. One compiled specialisation per dtype: the
integrator, problem and noise model are runtime integer switches.

Integer switches:
    integrator  0 heavy-ball, 1 euler, 2 leapfrog, 3 baoab
    problem     0 quadratic, 1 double-well, 2 rosenbrock
    noise_model 0 additive, 1 temperature, 2 loss-scaled

coef columns per step:
    heavy-ball  [mu_n, s_n (loss-scaled: noise), 0]
    euler       [h*gamma_n, sigma_n*sqrt(h) (loss-scaled: noise), sqrt(h)]
    leapfrog/baoab (O-step)  [c1_n, sqrt(var_n), sigma_n*sqrt(var_n) (loss-scaled: noise)]

consts (working dtype): see the K_* indices below.
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

GROUP = 64
N_QUANTITIES = 6

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK = np.uint64(0xFFFFFFFF)
SH32 = np.uint64(32)
SH8 = np.uint64(8)
U1 = np.uint64(1)

# indices into `consts`
K_LR = 0          # heavy-ball lr
K_HALF_LR = 1     # 0.5 * lr (as the reference rounds it)
K_H = 2           # dt
K_HALF_H = 3      # 0.5 * dt
K_H2_8 = 4        # dt**2 / 8
K_INIT_THETA = 5  # init_theta_std
K_INIT_V = 6      # init_velocity_std
K_FRAC = 7        # 7, 8, 9: first-passage fractions
K_ONE = 10        # 1.0 (carries the working dtype)
N_CONSTS = 11


def cast_like(x, like):  # pragma: no cover - replaced by the overload inside numba
    return x


@overload(cast_like)
def _cast_like(x, like):
    if like == types.float32:
        return lambda x, like: np.float32(x)
    return lambda x, like: np.float64(x)


@njit
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 words holding uint32 values (Random123 constants)."""
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        n0 = (p1 >> SH32) ^ c1 ^ k0
        n2 = (p0 >> SH32) ^ c3 ^ k1
        c1 = p1 & MASK
        c3 = p0 & MASK
        c0 = n0
        c2 = n2
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    return c0, c1, c2, c3


@njit(cache=True)
def philox_batch(c0, c1, c2, c3, k0, k1):
    """Philox on arrays of counters (int64 holding uint32); returns [n, 4] uint32 (for tests)."""
    n = c0.shape[0]
    out = np.empty((n, 4), dtype=np.uint32)
    kk0 = np.uint64(k0)
    kk1 = np.uint64(k1)
    for i in range(n):
        x0, x1, x2, x3 = philox4x32(np.uint64(c0[i]), np.uint64(c1[i]), np.uint64(c2[i]), np.uint64(c3[i]), kk0, kk1)
        out[i, 0] = np.uint32(x0)
        out[i, 1] = np.uint32(x1)
        out[i, 2] = np.uint32(x2)
        out[i, 3] = np.uint32(x3)
    return out


@njit
def box_muller(xa, xb, one):
    """Two normals from two uint32 words, in the dtype of `one` (CONVENTIONS transform)."""
    scale = cast_like(5.9604644775390625e-08, one)  # 2**-24
    u1 = cast_like((xa >> SH8) + U1, one) * scale
    u2 = cast_like(xb >> SH8, one) * scale
    r = math.sqrt(cast_like(-2.0, one) * math.log(u1))
    angle = cast_like(6.283185307179586, one) * u2
    return r * math.cos(angle), r * math.sin(angle)


@njit
def _normals4(traj, block, coord, tag, k0, k1, one):
    x0, x1, x2, x3 = philox4x32(np.uint64(traj), np.uint64(block), np.uint64(coord), np.uint64(tag), k0, k1)
    z0, z1 = box_muller(x0, x1, one)
    z2, z3 = box_muller(x2, x3, one)
    return z0, z1, z2, z3


# --- problems on a row (d > 1) -------------------------------------------------

@njit
def _grad_loss_row(problem, theta, lam, g, one):
    """Fill g with grad L(theta); return L(theta) (reference operation order, sequential sums)."""
    d = theta.shape[0]
    zero = cast_like(0.0, one)
    if problem == 0:
        acc = zero
        for j in range(d):
            lt = lam[j] * theta[j]
            acc += lt * theta[j]
            g[j] = lt
        return cast_like(0.5, one) * acc
    if problem == 1:
        acc = zero
        for j in range(d):
            w = theta[j] * theta[j] - one
            acc += w * w
            g[j] = theta[j] * w
        return cast_like(0.25, one) * acc
    # rosenbrock
    acc = zero
    for j in range(d):
        g[j] = zero
    for j in range(d - 1):
        x = theta[j]
        r = theta[j + 1] - x * x
        omx = one - x
        acc += cast_like(100.0, one) * (r * r) + omx * omx
        g[j] = g[j] + (cast_like(-400.0, one) * x * r - cast_like(2.0, one) * omx)
    for j in range(1, d):
        x = theta[j - 1]
        r = theta[j] - x * x
        g[j] = g[j] + cast_like(200.0, one) * r
    return acc


@njit
def _grad_loss_1(problem, th, lam, one):
    """(grad, loss) for d = 1 (quadratic or double well)."""
    if problem == 0:
        lt = lam * th
        return lt, cast_like(0.5, one) * (lt * th)
    w = th * th - one
    return th * w, cast_like(0.25, one) * (w * w)


@njit
def _clamp0(x, one):
    # torch.clamp(min=0) keeps NaN
    return cast_like(0.0, one) if x < 0 else x


@njit(cache=True, parallel=True, fastmath=False)
def ensemble_window(theta, mom, inertia0, first_passage, lam, coef, consts, out,
                    start, step_begin, step_end, record_every, init,
                    key0, key1, integrator, problem, noise_model, noisy=1):
    """Advance trajectories [start, start + count) from step_begin to step_end, in place.

    theta, mom [count, dim]; inertia0 [count]; first_passage [count, 3] int32;
    lam [1 or count, dim]; coef [step_end - step_begin, 3]; consts [N_CONSTS];
    out [n_groups, n_records, 6] float64, zeroed (records as in recorded_in_window).
    init != 0: draw the initial state (step_begin must be 0) instead of reading theta/mom.
    noisy == 0: every noise scale is zero, so the Philox draws are skipped (xi stays 0 or 1, times 0).
    """
    count = theta.shape[0]
    dim = theta.shape[1]
    n_groups = (count + GROUP - 1) // GROUP
    lam_shared = lam.shape[0] == 1
    k0 = np.uint64(key0)
    k1 = np.uint64(key1)
    one = consts[K_ONE]
    lr = consts[K_LR]
    half_lr = consts[K_HALF_LR]
    h = consts[K_H]
    half_h = consts[K_HALF_H]
    h2_8 = consts[K_H2_8]
    heavy = integrator == 0
    loss_scaled = noise_model == 2
    for grp in prange(n_groups):
        acc = out[grp]
        lo = grp * GROUP
        hi = min(lo + GROUP, count)
        if dim == 1:
            # ---- scalar path: LANES trajectories in lockstep, state in registers ----
            _group_lanes(lo, hi, start, theta, mom, inertia0, first_passage, lam, lam_shared, coef, consts,
                         acc, step_begin, step_end, record_every, init, k0, k1, integrator, problem,
                         noise_model, noisy)
            continue
        # ---- row path (d > 1): one trajectory at a time, state in an L1-resident scratch row ----
        zrow = np.zeros((dim, 4), dtype=theta.dtype)  # stays 0 without noise
        th = np.empty(dim, dtype=theta.dtype)
        v = np.empty(dim, dtype=theta.dtype)
        g = np.empty(dim, dtype=theta.dtype)
        for i in range(lo, hi):
            traj = start + i
            lrow = lam[0] if lam_shared else lam[i]
            fp0 = first_passage[i, 0]
            fp1 = first_passage[i, 1]
            fp2 = first_passage[i, 2]
            rec = 0
            # steps until the next recorded state (a countdown: no integer division per step)
            until_rec = record_every - (step_begin + 1) % record_every
            if until_rec == record_every:
                until_rec = 0
            if init != 0:
                for j in range(dim):
                    za, zb, _, _ = _normals4(traj, 0, j, 1, k0, k1, one)
                    th[j] = consts[K_INIT_THETA] * za
                    yy = consts[K_INIT_V] * zb
                    v[j] = -yy / lr if heavy else yy
            else:
                for j in range(dim):
                    th[j] = theta[i, j]
                    v[j] = mom[i, j]
            L = _grad_loss_row(problem, th, lrow, g, one)
            if init != 0:
                kin, ine, sh = _observe_row(heavy, v, g, L, half_lr, h2_8, one)
                i0 = ine
                fp0 = -1
                fp1 = -1
                fp2 = -1
                _accumulate(acc, 0, ine, kin, L, sh)
                rec = 1
            else:
                i0 = inertia0[i]
            for n in range(step_begin, step_end):
                lane = n & 3
                if noisy != 0 and (lane == 0 or n == step_begin):
                    for j in range(dim):
                        a0, a1, a2, a3 = _normals4(traj, n >> 2, j, 0, k0, k1, one)
                        zrow[j, 0] = a0
                        zrow[j, 1] = a1
                        zrow[j, 2] = a2
                        zrow[j, 3] = a3
                c = coef[n - step_begin]
                if heavy:
                    s = c[1]
                    if loss_scaled:
                        s = s * math.sqrt(_clamp0(L, one))
                    mu = c[0]
                    for j in range(dim):
                        gg = g[j] + s * zrow[j, lane]
                        v[j] = mu * v[j] + gg
                        th[j] = th[j] - lr * v[j]
                elif integrator == 1:
                    sg = c[1]
                    if loss_scaled:
                        sg = (sg * math.sqrt(_clamp0(L, one))) * c[2]
                    hg = c[0]
                    for j in range(dim):
                        xn = th[j] + h * v[j]
                        v[j] = ((v[j] - h * g[j]) - hg * v[j]) + sg * zrow[j, lane]
                        th[j] = xn
                elif integrator == 2:
                    for j in range(dim):
                        v[j] = v[j] - half_h * g[j]
                        th[j] = th[j] + h * v[j]
                    L = _grad_loss_row(problem, th, lrow, g, one)
                    sg = c[2]
                    if loss_scaled:
                        sg = (sg * math.sqrt(_clamp0(L, one))) * c[1]
                    c1 = c[0]
                    for j in range(dim):
                        vv = v[j] - half_h * g[j]
                        v[j] = c1 * vv + sg * zrow[j, lane]
                else:
                    for j in range(dim):
                        v[j] = v[j] - half_h * g[j]
                        th[j] = th[j] + half_h * v[j]
                    sg = c[2]
                    if loss_scaled:
                        L = _grad_loss_row(problem, th, lrow, g, one)
                        sg = (sg * math.sqrt(_clamp0(L, one))) * c[1]
                    c1 = c[0]
                    for j in range(dim):
                        v[j] = c1 * v[j] + sg * zrow[j, lane]
                        th[j] = th[j] + half_h * v[j]
                    _grad_loss_row(problem, th, lrow, g, one)
                    for j in range(dim):
                        v[j] = v[j] - half_h * g[j]
                L = _grad_loss_row(problem, th, lrow, g, one)
                m = n + 1
                if until_rec != 0:
                    until_rec -= 1
                else:
                    until_rec = record_every - 1
                    kin, ine, sh = _observe_row(heavy, v, g, L, half_lr, h2_8, one)
                    fp0, fp1, fp2 = _first_passage(fp0, fp1, fp2, ine, i0, consts, m)
                    _accumulate(acc, rec, ine, kin, L, sh)
                    rec += 1
            for j in range(dim):
                theta[i, j] = th[j]
                mom[i, j] = v[j]
            inertia0[i] = i0
            first_passage[i, 0] = fp0
            first_passage[i, 1] = fp1
            first_passage[i, 2] = fp2


LANES = 8  # trajectories advanced in lockstep on the scalar path


@njit
def _group_lanes(lo, hi, start, theta, mom, inertia0, first_passage, lam, lam_shared, coef, consts, acc,
                 step_begin, step_end, record_every, init, k0, k1, integrator, problem, noise_model, noisy):
    """d = 1: trajectories [lo, hi) of one group, LANES at a time in lockstep.

    One trajectory's steps form a chain of dependent operations; LANES independent chains
    overlap in the pipeline and the lane loops vectorise. Per trajectory the operations and
    their order are those of `inertia_gpu.reference`; each record's sums still add the
    trajectories in index order (lanes in order, chunks in order), so the group's float64
    sums are bitwise those of a one-at-a-time loop.
    """
    one = consts[K_ONE]
    lr = consts[K_LR]
    half_lr = consts[K_HALF_LR]
    h = consts[K_H]
    half_h = consts[K_HALF_H]
    h2_8 = consts[K_H2_8]
    heavy = integrator == 0
    loss_scaled = noise_model == 2
    dt = theta.dtype
    x = np.empty(LANES, dtype=dt)
    y = np.empty(LANES, dtype=dt)
    gr = np.empty(LANES, dtype=dt)
    L = np.empty(LANES, dtype=dt)
    lm = np.empty(LANES, dtype=dt)
    i0 = np.empty(LANES, dtype=dt)
    fpa = np.empty(LANES, dtype=np.int32)  # first passage below f I_0, one array per fraction
    fpb = np.empty(LANES, dtype=np.int32)
    fpc = np.empty(LANES, dtype=np.int32)
    thr_a = consts[K_FRAC]
    thr_b = consts[K_FRAC + 1]
    thr_c = consts[K_FRAC + 2]
    z = np.zeros((4, LANES), dtype=dt)  # [lane of the Philox call, trajectory]; stays 0 without noise
    w = np.empty((4, LANES), dtype=np.uint64)  # the Philox words before the normal transform
    for c_lo in range(lo, hi, LANES):
        nl = min(LANES, hi - c_lo)
        for j in range(nl):
            i = c_lo + j
            lm[j] = lam[0, 0] if lam_shared else lam[i, 0]
            fpa[j] = first_passage[i, 0]
            fpb[j] = first_passage[i, 1]
            fpc[j] = first_passage[i, 2]
            if init != 0:
                za, zb, _, _ = _normals4(start + i, 0, 0, 1, k0, k1, one)
                x[j] = consts[K_INIT_THETA] * za
                yy = consts[K_INIT_V] * zb
                y[j] = -yy / lr if heavy else yy
            else:
                x[j] = theta[i, 0]
                y[j] = mom[i, 0]
            gr[j], L[j] = _grad_loss_1(problem, x[j], lm[j], one)
        rec = 0
        if init != 0:
            for j in range(nl):
                kin, ine, sh = _observe_sums(heavy, y[j] * y[j], y[j] * gr[j], gr[j] * gr[j], L[j], half_lr, h2_8, one)
                i0[j] = ine
                fpa[j] = -1
                fpb[j] = -1
                fpc[j] = -1
                _accumulate(acc, 0, ine, kin, L[j], sh)
            rec = 1
        else:
            for j in range(nl):
                i0[j] = inertia0[c_lo + j]
        # steps until the next recorded state (a countdown: no integer division per step)
        until_rec = record_every - (step_begin + 1) % record_every
        if until_rec == record_every:
            until_rec = 0
        for n in range(step_begin, step_end):
            lane = n & 3
            if noisy != 0 and (lane == 0 or n == step_begin):
                # integer Philox for all lanes first (independent, pipelined), then the transform
                quad = np.uint64(n >> 2)
                for j in range(nl):
                    w[0, j], w[1, j], w[2, j], w[3, j] = philox4x32(np.uint64(start + c_lo + j), quad, np.uint64(0),
                                                                    np.uint64(0), k0, k1)
                for j in range(nl):
                    z[0, j], z[1, j] = box_muller(w[0, j], w[1, j], one)
                    z[2, j], z[3, j] = box_muller(w[2, j], w[3, j], one)
            r = n - step_begin
            ca = coef[r, 0]
            cb = coef[r, 1]
            cc = coef[r, 2]
            if heavy:
                for j in range(nl):
                    s = cb
                    if loss_scaled:
                        s = s * math.sqrt(_clamp0(L[j], one))
                    gg = gr[j] + s * z[lane, j]
                    y[j] = ca * y[j] + gg
                    x[j] = x[j] - lr * y[j]
                    gr[j], L[j] = _grad_loss_1(problem, x[j], lm[j], one)
            elif integrator == 1:
                for j in range(nl):
                    sg = cb
                    if loss_scaled:
                        sg = (sg * math.sqrt(_clamp0(L[j], one))) * cc
                    xn = x[j] + h * y[j]
                    y[j] = ((y[j] - h * gr[j]) - ca * y[j]) + sg * z[lane, j]
                    x[j] = xn
                    gr[j], L[j] = _grad_loss_1(problem, x[j], lm[j], one)
            elif integrator == 2:
                for j in range(nl):
                    yj = y[j] - half_h * gr[j]
                    xj = x[j] + h * yj
                    g1, l1 = _grad_loss_1(problem, xj, lm[j], one)
                    yj = yj - half_h * g1
                    sg = cc
                    if loss_scaled:
                        sg = (sg * math.sqrt(_clamp0(l1, one))) * cb
                    y[j] = ca * yj + sg * z[lane, j]
                    x[j] = xj
                    gr[j], L[j] = g1, l1
            else:
                for j in range(nl):
                    yj = y[j] - half_h * gr[j]
                    xj = x[j] + half_h * yj
                    sg = cc
                    if loss_scaled:
                        _, l_mid = _grad_loss_1(problem, xj, lm[j], one)
                        sg = (sg * math.sqrt(_clamp0(l_mid, one))) * cb
                    yj = ca * yj + sg * z[lane, j]
                    xj = xj + half_h * yj
                    g1, l1 = _grad_loss_1(problem, xj, lm[j], one)
                    y[j] = yj - half_h * g1
                    x[j] = xj
                    gr[j], L[j] = g1, l1
            if until_rec != 0:
                until_rec -= 1
            else:
                until_rec = record_every - 1
                m = n + 1
                for j in range(nl):
                    kin, ine, sh = _observe_sums(heavy, y[j] * y[j], y[j] * gr[j], gr[j] * gr[j], L[j],
                                                 half_lr, h2_8, one)
                    if fpa[j] < 0 and ine <= thr_a * i0[j]:
                        fpa[j] = m
                    if fpb[j] < 0 and ine <= thr_b * i0[j]:
                        fpb[j] = m
                    if fpc[j] < 0 and ine <= thr_c * i0[j]:
                        fpc[j] = m
                    _accumulate(acc, rec, ine, kin, L[j], sh)
                rec += 1
        for j in range(nl):
            i = c_lo + j
            theta[i, 0] = x[j]
            mom[i, 0] = y[j]
            inertia0[i] = i0[j]
            first_passage[i, 0] = fpa[j]
            first_passage[i, 1] = fpb[j]
            first_passage[i, 2] = fpc[j]


@njit(inline="always")  # in the innermost loop: inlined at the numba IR level, as if written there
def _first_passage(fp0, fp1, fp2, ine, i0, consts, m):
    """First recorded step m with I <= f I_0 for each of the three fractions (-1: not yet)."""
    if fp0 < 0 and ine <= consts[K_FRAC] * i0:
        fp0 = m
    if fp1 < 0 and ine <= consts[K_FRAC + 1] * i0:
        fp1 = m
    if fp2 < 0 and ine <= consts[K_FRAC + 2] * i0:
        fp2 = m
    return fp0, fp1, fp2


@njit(inline="always")
def _accumulate(acc, rec, ine, kin, L, sh):
    """Add one trajectory to its group's float64 sums at record `rec`; non-finite inertia is left out."""
    if math.isfinite(ine):
        ie = np.float64(ine)
        acc[rec, 0] += 1.0
        acc[rec, 1] += ie
        acc[rec, 2] += np.float64(kin)
        acc[rec, 3] += np.float64(L)
        acc[rec, 4] += np.float64(sh)
        acc[rec, 5] += ie * ie


@njit
def _observe_row(heavy, v, g, L, half_lr, h2_8, one):
    d = v.shape[0]
    vv = cast_like(0.0, one)
    vg = vv
    gg = vv
    for j in range(d):
        vv += v[j] * v[j]
        vg += v[j] * g[j]
        gg += g[j] * g[j]
    return _observe_sums(heavy, vv, vg, gg, L, half_lr, h2_8, one)


@njit(inline="always")
def _observe_sums(heavy, vv, vg, gg, L, half_lr, h2_8, one):
    """(kinetic, inertia, shadow) from |v|^2, <v, grad L>, |grad L|^2 (docs/CONVENTIONS.md, "What is recorded")."""
    if heavy:
        kin = half_lr * vv
        ine = kin + L
        return kin, ine, ine + half_lr * vg
    kin = cast_like(0.5, one) * vv
    ine = kin + L
    return kin, ine, ine - h2_8 * gg
