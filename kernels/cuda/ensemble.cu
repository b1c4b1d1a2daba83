// Ensemble kernel: one thread per trajectory, state kept in registers across
// every step of a window, only per-group partial sums written per recorded step.
// Implements docs/CONVENTIONS.md (the reference is inertia_gpu/reference.py).
//
// Compile-time switches (one module per configuration; the launcher
// inertia_gpu/backends/cupy_backend.py::ensemble_defines passes them as -D):
//   IG_DOUBLE      0: float32, 1: float64 working dtype
//   IG_DIM         dimension d of theta
//   IG_PROBLEM     IG_QUADRATIC, IG_DOUBLE_WELL, IG_ROSENBROCK (chained)
//   IG_INTEGRATOR  IG_HEAVY_BALL, IG_EULER, IG_LEAPFROG (B A B O), IG_BAOAB
//   IG_SCHEDULE    IG_CONSTANT, IG_NESTEROV (mu_n = n / (n + r))
//   IG_NOISE_MODEL IG_ADDITIVE, IG_TEMPERATURE, IG_LOSS_SCALED
//   IG_NOISY       0: the noise term vanishes (skips the random numbers), 1: noisy
// The numbers are those of inertia_gpu/spec.py (this file imports nothing of the library:
// tests/test_spec.py checks the copies below against it).
//   IG_REG_MAX     largest d kept in registers (default 32); above it the state lives in a
//                  coordinate-major global work buffer (coalesced) and noise is drawn per step.
// The quadratic's eigenvalues come as an array with a row stride: stride 0 for
// one explicit spectrum [d], stride d for per-trajectory spectra [n, d].
//
// Everything but the launch is a __host__ __device__ template on the recorder,
// so a host program can include this file (without __CUDACC__ the kernel is
// left out) and run single trajectories for the tests.
#include "philox.cuh"

#ifndef IG_DOUBLE
#define IG_DOUBLE 0
#endif
#ifndef IG_DIM
#define IG_DIM 1
#endif
// switch values (spec.Problem, spec.Integrator, spec.Schedule, spec.NoiseModel)
#define IG_QUADRATIC 0
#define IG_DOUBLE_WELL 1
#define IG_ROSENBROCK 2
#define IG_HEAVY_BALL 0
#define IG_EULER 1
#define IG_LEAPFROG 2
#define IG_BAOAB 3
#define IG_CONSTANT 0
#define IG_NESTEROV 1
#define IG_ADDITIVE 0
#define IG_TEMPERATURE 1
#define IG_LOSS_SCALED 2

#ifndef IG_PROBLEM
#define IG_PROBLEM IG_QUADRATIC
#endif
#ifndef IG_INTEGRATOR
#define IG_INTEGRATOR IG_HEAVY_BALL
#endif
#ifndef IG_SCHEDULE
#define IG_SCHEDULE IG_CONSTANT
#endif
#ifndef IG_NOISE_MODEL
#define IG_NOISE_MODEL IG_ADDITIVE
#endif
#ifndef IG_NOISY
#define IG_NOISY 0
#endif
#ifndef IG_REG_MAX
#define IG_REG_MAX 32
#endif
#ifndef IG_BLOCK
#define IG_BLOCK 128
#endif

#if IG_DOUBLE
typedef double ig_real;
#else
typedef float ig_real;
#endif

#define IG_IN_REGS (IG_DIM <= IG_REG_MAX)
#define IG_GROUP 64  // spec.GROUP
#define IG_NQ 6  // spec.N_QUANTITIES
// spec.FRACTIONS: first passage at the first n with I_n <= f I_0
#define IG_FRACTION_0 0.5
#define IG_FRACTION_1 0.36787944117144233
#define IG_FRACTION_2 0.1

#if IG_IN_REGS
#define IG_FOR(i) _Pragma("unroll") for (int i = 0; i < IG_DIM; ++i)
#define IG_AT(arr, i) arr[i]
#else
#define IG_FOR(i) for (int i = 0; i < IG_DIM; ++i)
#define IG_AT(arr, i) arr[(long long)(i) * ws]
#endif

struct IgParams {
    const ig_real *lam;  // quadratic eigenvalues, row t at lam + t * lam_stride
    long long lam_stride;
    double lr, momentum, nesterov_r, dt, damping, noise, temperature, init_theta_std, init_velocity_std;
    ig_u32 k0, k1;
    long long step_begin, step_end, record_every;
};

IG_HD bool ig_isfinite(double x) { return x >= -1.7976931348623157e308 && x <= 1.7976931348623157e308; }

// Loss at theta, gradient into g (both accessed through IG_AT).
#define IG_LOSS_GRAD(th, gr, lm, L_out)                                                            \
    do {                                                                                           \
        ig_real acc_ = (ig_real)0;                                                                 \
        if (IG_PROBLEM == IG_QUADRATIC) {                                                                     \
            IG_FOR(i_) {                                                                           \
                ig_real x_ = IG_AT(th, i_);                                                        \
                ig_real lx_ = lm(i_) * x_;                                                         \
                IG_AT(gr, i_) = lx_;                                                               \
                acc_ += lx_ * x_;                                                                  \
            }                                                                                      \
            L_out = (ig_real)0.5 * acc_;                                                           \
        } else if (IG_PROBLEM == IG_DOUBLE_WELL) {                                                              \
            IG_FOR(i_) {                                                                           \
                ig_real x_ = IG_AT(th, i_);                                                        \
                ig_real w_ = x_ * x_ - (ig_real)1;                                                 \
                IG_AT(gr, i_) = x_ * w_;                                                           \
                acc_ += w_ * w_;                                                                   \
            }                                                                                      \
            L_out = (ig_real)0.25 * acc_;                                                          \
        } else {                                                                                   \
            IG_FOR(i_) { IG_AT(gr, i_) = (ig_real)0; }                                             \
            IG_FOR(i_) {                                                                           \
                if (i_ < IG_DIM - 1) {                                                             \
                    ig_real x_ = IG_AT(th, i_);                                                    \
                    ig_real y_ = IG_AT(th, i_ + 1);                                                \
                    ig_real r_ = y_ - x_ * x_;                                                     \
                    ig_real o_ = (ig_real)1 - x_;                                                  \
                    acc_ += (ig_real)100 * (r_ * r_) + o_ * o_;                                    \
                    IG_AT(gr, i_) += (ig_real)-400 * x_ * r_ - (ig_real)2 * o_;                    \
                    IG_AT(gr, i_ + 1) += (ig_real)200 * r_;                                        \
                }                                                                                  \
            }                                                                                      \
            L_out = acc_;                                                                          \
        }                                                                                          \
    } while (0)

// Loss only (for the loss-scaled O-step of baoab at the half step).
#define IG_LOSS(th, lm, L_out)                                                                     \
    do {                                                                                           \
        ig_real acc_ = (ig_real)0;                                                                 \
        if (IG_PROBLEM == IG_QUADRATIC) {                                                                     \
            IG_FOR(i_) {                                                                           \
                ig_real x_ = IG_AT(th, i_);                                                        \
                acc_ += lm(i_) * x_ * x_;                                                          \
            }                                                                                      \
            L_out = (ig_real)0.5 * acc_;                                                           \
        } else if (IG_PROBLEM == IG_DOUBLE_WELL) {                                                              \
            IG_FOR(i_) {                                                                           \
                ig_real x_ = IG_AT(th, i_);                                                        \
                ig_real w_ = x_ * x_ - (ig_real)1;                                                 \
                acc_ += w_ * w_;                                                                   \
            }                                                                                      \
            L_out = (ig_real)0.25 * acc_;                                                          \
        } else {                                                                                   \
            IG_FOR(i_) {                                                                           \
                if (i_ < IG_DIM - 1) {                                                             \
                    ig_real x_ = IG_AT(th, i_);                                                    \
                    ig_real r_ = IG_AT(th, i_ + 1) - x_ * x_;                                      \
                    ig_real o_ = (ig_real)1 - x_;                                                  \
                    acc_ += (ig_real)100 * (r_ * r_) + o_ * o_;                                    \
                }                                                                                  \
            }                                                                                      \
            L_out = acc_;                                                                          \
        }                                                                                          \
    } while (0)

IG_HD ig_real ig_max0(ig_real x) { return x > (ig_real)0 ? x : (ig_real)0; }

// Runs one trajectory over [step_begin, step_end]; calls rec(r, I, K, L, S) at every
// recorded step (the same sequence for every trajectory, so a warp can reduce in rec).
// theta_in == nullptr: draw the initial state (step_begin must be 0).
// ws: element stride of the global work buffer (only used when d > IG_REG_MAX).
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Rec>
IG_HD void ig_run_trajectory(const IgParams &P, ig_u32 traj, long long t, bool active,
                             const ig_real *theta_in, const ig_real *mom_in, const ig_real *inertia0_in,
                             const int *fp_in, ig_real *theta_out, ig_real *mom_out, ig_real *inertia0_out,
                             int *fp_out, ig_real *work, long long ws, Rec &rec) {
    const bool continuous = IG_INTEGRATOR != IG_HEAVY_BALL;
    const ig_real lr = (ig_real)P.lr;
    const ig_real h = (ig_real)P.dt;
    const ig_real half_h = (ig_real)(0.5 * P.dt);
    const ig_real sqrt_h = (ig_real)sqrt(P.dt);
    const ig_real half_lr = (ig_real)(0.5 * P.lr);
    const ig_real shadow_c = (ig_real)(P.dt * P.dt / 8.0);
    const ig_real noise = (ig_real)P.noise;
    const ig_real fr0 = (ig_real)IG_FRACTION_0, fr1 = (ig_real)IG_FRACTION_1, fr2 = (ig_real)IG_FRACTION_2;

#if IG_IN_REGS
    ig_real th[IG_DIM], mo[IG_DIM], gr[IG_DIM];
#if IG_PROBLEM == IG_QUADRATIC
    ig_real lam_r[IG_DIM];
    IG_FOR(i) { lam_r[i] = active ? P.lam[(long long)t * P.lam_stride + i] : (ig_real)0; }
#define IG_LAM(i) lam_r[i]
#else
#define IG_LAM(i) ((ig_real)0)
#endif
#else
    ig_real *th = work + t;
    ig_real *mo = work + (long long)IG_DIM * ws + t;
    ig_real *gr = work + 2ll * IG_DIM * ws + t;
#if IG_PROBLEM == IG_QUADRATIC
    const ig_real *lam_p = P.lam + (active ? (long long)t * P.lam_stride : 0ll);
#define IG_LAM(i) (active ? lam_p[i] : (ig_real)0)
#else
#define IG_LAM(i) ((ig_real)0)
#endif
#endif

    ig_real L, I0 = (ig_real)0;
    int fp0 = -1, fp1 = -1, fp2 = -1;
    const long long k = P.record_every;
    const long long rec_base = P.step_begin == 0 ? 0 : P.step_begin / k + 1;

    // --- observe the state whose loss L and gradient gr are current -----------------------
#define IG_OBSERVE(I_, K_, S_)                                                                     \
    do {                                                                                           \
        ig_real kk_ = (ig_real)0, dd_ = (ig_real)0;                                                \
        IG_FOR(i_) {                                                                               \
            ig_real m_ = IG_AT(mo, i_);                                                            \
            kk_ += m_ * m_;                                                                        \
            dd_ += continuous ? IG_AT(gr, i_) * IG_AT(gr, i_) : m_ * IG_AT(gr, i_);                \
        }                                                                                          \
        if (continuous) {                                                                          \
            K_ = (ig_real)0.5 * kk_;                                                               \
            I_ = K_ + L;                                                                           \
            S_ = I_ - shadow_c * dd_;                                                              \
        } else {                                                                                   \
            K_ = half_lr * kk_;                                                                    \
            I_ = K_ + L;                                                                           \
            S_ = I_ + half_lr * dd_;                                                               \
        }                                                                                          \
    } while (0)

    if (theta_in == nullptr) {
        IG_FOR(i) {
            ig_real z[4];
            ig_counter c = ig_ensemble_counter(traj, 0ull, (ig_u32)i, IG_TAG_INIT);
            ig_counter_normals4<ig_real>(c, P.k0, P.k1, z);
            ig_real v = (ig_real)P.init_velocity_std * z[1];
            IG_AT(th, i) = (ig_real)P.init_theta_std * z[0];
            IG_AT(mo, i) = continuous ? v : -v / lr;
        }
        IG_LOSS_GRAD(th, gr, IG_LAM, L);
        ig_real I, K, S;
        IG_OBSERVE(I, K, S);
        I0 = I;
        rec(0ll, I, K, L, S);  // step 0 is always recorded when the window starts at 0
    } else {
        IG_FOR(i) {
            IG_AT(th, i) = active ? theta_in[(long long)t * IG_DIM + i] : (ig_real)0;
            IG_AT(mo, i) = active ? mom_in[(long long)t * IG_DIM + i] : (ig_real)0;
        }
        if (active) {
            I0 = inertia0_in[t];
            fp0 = fp_in[3 * t + 0];
            fp1 = fp_in[3 * t + 1];
            fp2 = fp_in[3 * t + 2];
        }
        IG_LOSS_GRAD(th, gr, IG_LAM, L);
    }

    // Per-step scalars that do not depend on n are formed once (in float64, like the
    // reference's Python scalars, then rounded to the working dtype).
    const ig_real mu_c = (ig_real)P.momentum;
    const ig_real s_temp_hb_c = (ig_real)sqrt(2.0 * ((1.0 - P.momentum) / P.lr) * P.temperature);
    const ig_real gamma_c = (ig_real)P.damping;
    const ig_real h_gamma_c = (ig_real)(P.dt * P.damping);
    const ig_real s_temp_euler_c = (ig_real)sqrt(2.0 * P.damping * P.temperature);

    // One step n -> n + 1 with noise xi(i); leaves L, gr current for the new theta.
    auto do_step = [&](long long n, auto xi) {
        ig_real mu, gamma;
        if (IG_SCHEDULE == IG_CONSTANT) {
            mu = mu_c;
            gamma = gamma_c;
        } else {
            ig_real nt = (ig_real)n;
            mu = nt / (nt + (ig_real)P.nesterov_r);
            gamma = ((ig_real)1 - mu) / h;
        }
        if (IG_INTEGRATOR == IG_HEAVY_BALL) {  // heavy ball
            ig_real s = (ig_real)0;
            if (IG_NOISE_MODEL == IG_ADDITIVE) s = noise;
            if (IG_NOISE_MODEL == IG_TEMPERATURE) {
                if (IG_SCHEDULE == IG_CONSTANT) {
                    s = s_temp_hb_c;
                } else {
                    ig_real fr = ((ig_real)1 - mu) / lr;
                    s = ig_sqrt((ig_real)2 * fr * (ig_real)P.temperature);
                }
            }
            if (IG_NOISE_MODEL == IG_LOSS_SCALED) s = noise * ig_sqrt(ig_max0(L));
            IG_FOR(i) {
                ig_real g = IG_AT(gr, i);
                if (IG_NOISY) g = g + s * xi(i);
                ig_real b = mu * IG_AT(mo, i) + g;
                IG_AT(mo, i) = b;
                IG_AT(th, i) = IG_AT(th, i) - lr * b;
            }
            IG_LOSS_GRAD(th, gr, IG_LAM, L);
        } else if (IG_INTEGRATOR == IG_EULER) {  // euler
            ig_real sigma = (ig_real)0;
            if (IG_NOISE_MODEL == IG_ADDITIVE) sigma = noise;
            if (IG_NOISE_MODEL == IG_TEMPERATURE) sigma = IG_SCHEDULE == IG_CONSTANT ? s_temp_euler_c : ig_sqrt((ig_real)2 * gamma * (ig_real)P.temperature);
            if (IG_NOISE_MODEL == IG_LOSS_SCALED) sigma = noise * ig_sqrt(ig_max0(L));
            ig_real hg = IG_SCHEDULE == IG_CONSTANT ? h_gamma_c : h * gamma;
            ig_real c = sigma * sqrt_h;
            IG_FOR(i) {
                ig_real v = IG_AT(mo, i);
                ig_real vn = v - h * IG_AT(gr, i) - hg * v;
                if (IG_NOISY) vn = vn + c * xi(i);
                IG_AT(th, i) = IG_AT(th, i) + h * v;
                IG_AT(mo, i) = vn;
            }
            IG_LOSS_GRAD(th, gr, IG_LAM, L);
        } else {  // leapfrog (B A B O) or baoab (B A O A B)
            ig_real c1 = (ig_real)1, c2 = (ig_real)0;
            if (IG_SCHEDULE != IG_CONSTANT || P.damping > 0.0) c1 = ig_exp(-gamma * h);
            IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }
            if (IG_INTEGRATOR == IG_LEAPFROG) {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + h * IG_AT(mo, i); }
                IG_LOSS_GRAD(th, gr, IG_LAM, L);
                IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }
            } else {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + half_h * IG_AT(mo, i); }
            }
            // O-step: v <- c1 v + sigma sqrt((1 - e^{-2 gamma h}) / (2 gamma)) xi
            if (IG_NOISY) {
                ig_real var = gamma > (ig_real)0 ? -ig_expm1((ig_real)-2 * gamma * h) / ((ig_real)2 * gamma) : h;
                ig_real sigma = noise;
                if (IG_NOISE_MODEL == IG_TEMPERATURE) sigma = ig_sqrt((ig_real)2 * gamma * (ig_real)P.temperature);
                if (IG_NOISE_MODEL == IG_LOSS_SCALED) {
                    ig_real Lnow = L;
                    if (IG_INTEGRATOR == IG_BAOAB) IG_LOSS(th, IG_LAM, Lnow);
                    sigma = noise * ig_sqrt(ig_max0(Lnow));
                }
                c2 = sigma * ig_sqrt(var);
                IG_FOR(i) { IG_AT(mo, i) = c1 * IG_AT(mo, i) + c2 * xi(i); }
            } else {
                IG_FOR(i) { IG_AT(mo, i) = c1 * IG_AT(mo, i); }
            }
            if (IG_INTEGRATOR == IG_BAOAB) {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + half_h * IG_AT(mo, i); }
                IG_LOSS_GRAD(th, gr, IG_LAM, L);
                IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }
            }
        }
    };

    auto after_step = [&](long long n1) {  // state n1 = n + 1 exists; record it if due
        if (n1 % k == 0) {
            ig_real I, K, S;
            IG_OBSERVE(I, K, S);
            if (fp0 < 0 && I <= fr0 * I0) fp0 = (int)n1;
            if (fp1 < 0 && I <= fr1 * I0) fp1 = (int)n1;
            if (fp2 < 0 && I <= fr2 * I0) fp2 = (int)n1;
            rec(n1 / k - rec_base, I, K, L, S);
        }
    };

    const long long nb = P.step_begin, ne = P.step_end;
#if IG_IN_REGS
    // One Philox call per coordinate serves the four steps 4q .. 4q + 3 (lanes 0..3).
    if (ne > nb) {
        for (long long q = nb >> 2; q <= (ne - 1) >> 2; ++q) {
            ig_real zq[4][IG_DIM];
            if (IG_NOISY) {
                IG_FOR(i) {
                    ig_real z[4];
                    ig_counter c = ig_ensemble_counter(traj, (ig_u64)(q << 2), (ig_u32)i, IG_TAG_STEP);
                    ig_counter_normals4<ig_real>(c, P.k0, P.k1, z);
                    zq[0][i] = z[0];
                    zq[1][i] = z[1];
                    zq[2][i] = z[2];
                    zq[3][i] = z[3];
                }
            }
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
            for (int lane = 0; lane < 4; ++lane) {
                long long n = (q << 2) + lane;
                if (n >= nb && n < ne) {
                    do_step(n, [&](int i) { return zq[lane][i]; });
                    after_step(n + 1);
                }
            }
        }
    }
#else
    for (long long n = nb; n < ne; ++n) {
        do_step(n, [&](int i) {
            ig_real z[4];
            ig_counter c = ig_ensemble_counter(traj, (ig_u64)n, (ig_u32)i, IG_TAG_STEP);
            ig_counter_normals4<ig_real>(c, P.k0, P.k1, z);
            int lane = ig_ensemble_lane((ig_u64)n);
            return lane == 0 ? z[0] : lane == 1 ? z[1] : lane == 2 ? z[2] : z[3];
        });
        after_step(n + 1);
    }
#endif

    if (active) {
        IG_FOR(i) {
            theta_out[(long long)t * IG_DIM + i] = IG_AT(th, i);
            mom_out[(long long)t * IG_DIM + i] = IG_AT(mo, i);
        }
        inertia0_out[t] = I0;
        fp_out[3 * t + 0] = fp0;
        fp_out[3 * t + 1] = fp1;
        fp_out[3 * t + 2] = fp2;
    }
#undef IG_LAM
#undef IG_OBSERVE
}

#ifdef __CUDACC__
// Per-warp float64 sums of [count_finite, I, K, L, S, I^2] by a fixed shuffle tree; lane 0
// writes partial[(r * n_warps + warp) * 6 + q]. A GROUP of 64 is two warps; the launcher
// adds the pair (a + b, a fixed order), so the sums never depend on the launch shape.
struct IgWarpRecorder {
    double *partial;
    long long n_warps, warp;
    int lane;
    bool active;
    __device__ void operator()(long long r, ig_real I, ig_real K, ig_real L, ig_real S) {
        double Id = (double)I;
        bool ok = active && ig_isfinite(Id);
        double v[IG_NQ];
        v[0] = ok ? 1.0 : 0.0;
        v[1] = ok ? Id : 0.0;
        v[2] = ok ? (double)K : 0.0;
        v[3] = ok ? (double)L : 0.0;
        v[4] = ok ? (double)S : 0.0;
        v[5] = ok ? Id * Id : 0.0;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
            for (int q = 0; q < IG_NQ; ++q) v[q] += __shfl_down_sync(0xffffffffu, v[q], off);
        }
        if (lane == 0 && warp < n_warps) {
            double *out = partial + (r * n_warps + warp) * IG_NQ;
#pragma unroll
            for (int q = 0; q < IG_NQ; ++q) out[q] = v[q];
        }
    }
};

// Launch with blockDim.x == IG_BLOCK (a multiple of 64) and enough blocks to cover
// n_warps * 32 threads; every thread of a launched warp must run (no early exit).
extern "C" __global__ void __launch_bounds__(IG_BLOCK) inertia_ensemble(
    const ig_real *lam, long long lam_stride, int init,
    const ig_real *theta_in, const ig_real *mom_in, const ig_real *inertia0_in, const int *fp_in,
    ig_real *theta_out, ig_real *mom_out, ig_real *inertia0_out, int *fp_out,
    double *partial, long long n_warps, ig_real *work,
    double lr, double momentum, double nesterov_r, double dt, double damping, double noise,
    double temperature, double init_theta_std, double init_velocity_std,
    unsigned int k0, unsigned int k1, unsigned int start, long long count,
    long long step_begin, long long step_end, long long record_every) {
    IgParams P;
    P.lam = lam;
    P.lam_stride = lam_stride;
    P.lr = lr;
    P.momentum = momentum;
    P.nesterov_r = nesterov_r;
    P.dt = dt;
    P.damping = damping;
    P.noise = noise;
    P.temperature = temperature;
    P.init_theta_std = init_theta_std;
    P.init_velocity_std = init_velocity_std;
    P.k0 = k0;
    P.k1 = k1;
    P.step_begin = step_begin;
    P.step_end = step_end;
    P.record_every = record_every;
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long ws = (long long)gridDim.x * blockDim.x;
    IgWarpRecorder rec;
    rec.partial = partial;
    rec.n_warps = n_warps;
    rec.warp = t >> 5;
    rec.lane = (int)(t & 31);
    rec.active = t < count;
    ig_run_trajectory(P, start + (ig_u32)t, t, t < count, init ? nullptr : theta_in, mom_in, inertia0_in, fp_in,
                      theta_out, mom_out, inertia0_out, fp_out, work, ws, rec);
}
#endif
