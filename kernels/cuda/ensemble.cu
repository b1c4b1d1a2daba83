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
//   IG_LEDGER      1: keep the inertia ledger (config.ledger); 0: the kernel without it, which
//                  writes 0.0 into the ledger columns and passes the ledger state through
// The numbers are those of inertia_gpu/spec.py (this file imports nothing of the library:
// tests/test_spec.py checks the copies below against it).
//   IG_REG_MAX     largest d kept in registers (default 32); above it the state lives in a
//                  coordinate-major global work buffer (coalesced) and noise is drawn per step.
// The quadratic's eigenvalues come as an array with a row stride: stride 0 for
// one explicit spectrum [d], stride d for per-trajectory spectra [n, d].
//
// Every scalar the dynamics multiplies by comes from the host (inertia_gpu/coefficients.py,
// already rounded to the working dtype): a constant vector `consts` (IG_C_*) and a per-step
// table `table` (IG_S_*; one row per step, or one shared row when table_stride == 0), so the
// rounding is the reference's by construction. Recording is driven by `record_row`:
// record_row[n - step_begin] is the partial-sum row of state n, -1 when n is not recorded.
// Observables are formed in float64 from the state (docs/CONVENTIONS.md, "What is recorded");
// a trajectory whose float64 inertia is not <= diverge_above is diverged: its state becomes NaN.
//
// The ledger (docs/CONVENTIONS.md, "The inertia ledger"; inertia_gpu/ledger.py is the definition):
// per trajectory two float64 accumulators (D, Q) since step 0, carried in and out like theta. At
// each friction + noise substep, with a the friction factor, k = XI_SCALE xi the noise kick (the
// very working-dtype value the step adds) and m the velocity / momentum before the friction:
//     D += (1 - a^2) K(m)        Q += HALF_K (2 a <m, k> + <k, k>)
// (heavy ball M: m = b, a = DECAY, K = half_lr64 |b|^2; O: m = v, a = DECAY, K = |v|^2 / 2;
// Euler E: a = 1 - DECAY), the products formed in float64 from the working-dtype values. At a
// recorded step the kept trajectory adds (D, Q, W = (I_n - I_0) + D - Q) to columns 6..8.
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
#ifndef IG_LEDGER
#define IG_LEDGER 0
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
#define IG_NC 9  // spec.N_COLUMNS: the quantities, then the ledger columns
#define IG_COL_DISSIPATED 6  // spec.COLUMNS.index("dissipated")
#define IG_COL_INJECTED 7
#define IG_COL_RESIDUAL 8
// spec.FRACTIONS: first passage at the first n with I_n <= f I_0
#define IG_FRACTION_0 0.5
#define IG_FRACTION_1 0.36787944117144233
#define IG_FRACTION_2 0.1

// coefficients.Const: indices into consts (working dtype)
#define IG_C_LR 0
#define IG_C_HALF_LR 1
#define IG_C_H 2
#define IG_C_HALF_H 3
#define IG_C_SQRT_H 4
#define IG_C_SHADOW 5
#define IG_C_NOISE 6
#define IG_C_TEMPERATURE 7
#define IG_C_NESTEROV_R 8
#define IG_C_INIT_THETA_STD 9
#define IG_C_INIT_VELOCITY_STD 10
#define IG_C_SPECTRUM_A 11
#define IG_C_SPECTRUM_B 12
// coefficients.Step: columns of a table row (working dtype)
#define IG_S_DECAY 0
#define IG_S_XI 1
#define IG_S_SPREAD 2
#define IG_N_STEP 3

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
    const ig_real *consts;  // [IG_C_*]
    const ig_real *table;  // row of step n at table + (n - step_begin) * table_stride
    long long table_stride;  // IG_N_STEP, or 0 for a constant schedule (one shared row)
    const int *record_row;  // [step_end - step_begin + 1]: partial-sum row of state n, -1 = not recorded
    double half_lr64, shadow64, diverge_above;  // observables' constants (float64) and the divergence bound
    ig_u32 k0, k1;
    long long step_begin, step_end;
};

IG_HD bool ig_isfinite(double x) { return x >= -1.7976931348623157e308 && x <= 1.7976931348623157e308; }

IG_HD ig_real ig_nan() {
#if IG_DOUBLE
    return (ig_real)__builtin_nan("");
#else
    return __builtin_nanf("");
#endif
}

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

// One friction + noise substep's ledger sums over the coordinates, in float64 from the working-dtype
// momentum m (before the friction) and kick k; without IG_LEDGER it is empty and folds nothing.
struct IgLedgerSums {
#if IG_LEDGER
    double mm = 0.0, mk = 0.0, kk = 0.0;
    IG_HD void add(ig_real m, ig_real k) {
        double m64 = (double)m, k64 = (double)k;
        mm += m64 * m64;
        mk += m64 * k64;
        kk += k64 * k64;
    }
    // friction factor a, K = half_k |m|^2: D += (1 - a^2) K(m), Q += half_k (2 a <m, k> + <k, k>)
    IG_HD void fold(double a, double half_k, double &d, double &q) const {
        d += (1.0 - a * a) * (half_k * mm);
        q += half_k * (2.0 * a * mk + kk);
    }
#else
    IG_HD void add(ig_real, ig_real) {}
    IG_HD void fold(double, double, double &, double &) const {}
#endif
};

// Runs one trajectory over [step_begin, step_end]; calls rec(r, kept, I, K, L, S, D, Q, W) (float64)
// at every recorded step (the same sequence for every trajectory, so a warp can reduce in rec);
// D, Q, W are the ledger's cumulative terms (0 without IG_LEDGER).
// theta_in == nullptr: draw the initial state (step_begin must be 0).
// ws: element stride of the global work buffer (only used when d > IG_REG_MAX).
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Rec>
IG_HD void ig_run_trajectory(const IgParams &P, ig_u32 traj, long long t, bool active,
                             const ig_real *theta_in, const ig_real *mom_in, const double *inertia0_in,
                             const int *fp_in, const double *ledger_in, ig_real *theta_out, ig_real *mom_out,
                             double *inertia0_out, int *fp_out, double *ledger_out, ig_real *work, long long ws,
                             Rec &rec) {
    const bool continuous = IG_INTEGRATOR != IG_HEAVY_BALL;
    const ig_real lr = P.consts[IG_C_LR];
    const ig_real h = P.consts[IG_C_H];
    const ig_real half_h = P.consts[IG_C_HALF_H];

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

    ig_real L;
    double I0 = 0.0;
    int fp0 = -1, fp1 = -1, fp2 = -1;
    double led_d = 0.0, led_q = 0.0;  // the ledger's cumulative D and Q since step 0

    // --- observe the current state in float64 (loss and gradient recomputed from the state
    // converted to double, as the reference does: no float32 product can go subnormal) --------
#define IG_OBSERVE64(I_, K_, L_, S_)                                                               \
    do {                                                                                           \
        double kk_ = 0.0, dd_ = 0.0, ll_ = 0.0;                                                    \
        IG_FOR(i_) {                                                                               \
            double x_ = (double)IG_AT(th, i_), m_ = (double)IG_AT(mo, i_), g_ = 0.0;               \
            if (IG_PROBLEM == IG_QUADRATIC) {                                                      \
                g_ = (double)IG_LAM(i_) * x_;                                                      \
                ll_ += g_ * x_;                                                                    \
            } else if (IG_PROBLEM == IG_DOUBLE_WELL) {                                             \
                double w_ = x_ * x_ - 1.0;                                                         \
                g_ = x_ * w_;                                                                      \
                ll_ += w_ * w_;                                                                    \
            } else {                                                                               \
                if (i_ < IG_DIM - 1) {                                                             \
                    double r_ = (double)IG_AT(th, i_ + 1) - x_ * x_, o_ = 1.0 - x_;                \
                    ll_ += 100.0 * (r_ * r_) + o_ * o_;                                            \
                    g_ = -400.0 * x_ * r_ - 2.0 * o_;                                              \
                }                                                                                  \
                if (i_ > 0) {                                                                      \
                    double p_ = (double)IG_AT(th, i_ - 1);                                         \
                    g_ += 200.0 * (x_ - p_ * p_);                                                  \
                }                                                                                  \
            }                                                                                      \
            kk_ += m_ * m_;                                                                        \
            dd_ += continuous ? g_ * g_ : m_ * g_;                                                 \
        }                                                                                          \
        L_ = IG_PROBLEM == IG_QUADRATIC ? 0.5 * ll_ : IG_PROBLEM == IG_DOUBLE_WELL ? 0.25 * ll_ : ll_; \
        K_ = continuous ? 0.5 * kk_ : P.half_lr64 * kk_;                                           \
        I_ = K_ + L_;                                                                              \
        S_ = continuous ? I_ - P.shadow64 * dd_ : I_ + P.half_lr64 * dd_;                          \
    } while (0)

    // --- record state n if the window's row table says so: observe, check divergence, first passage
    auto record = [&](long long n, bool initial) {
        int r = P.record_row[n - P.step_begin];
        if (r < 0) return;
        double I, K, Ld, S;
        IG_OBSERVE64(I, K, Ld, S);
        bool kept = ig_isfinite(I) && I <= P.diverge_above;
        if (!kept) {  // diverged: NaN state (ledger included), so it stays diverged and out of every sum
            IG_FOR(i) {
                IG_AT(th, i) = ig_nan();
                IG_AT(mo, i) = ig_nan();
            }
            led_d = led_q = (double)ig_nan();
        }
        if (initial) {
            I0 = I;
        } else {
            if (fp0 < 0 && I <= IG_FRACTION_0 * I0) fp0 = (int)n;
            if (fp1 < 0 && I <= IG_FRACTION_1 * I0) fp1 = (int)n;
            if (fp2 < 0 && I <= IG_FRACTION_2 * I0) fp2 = (int)n;
        }
        rec((long long)r, kept, I, K, Ld, S, led_d, led_q, IG_LEDGER ? (I - I0) + led_d - led_q : 0.0);
    };

    if (theta_in == nullptr) {
        IG_FOR(i) {
            ig_real z[4];
            ig_counter c = ig_ensemble_counter(traj, 0ull, (ig_u32)i, IG_TAG_INIT);
            ig_counter_normals4<ig_real>(c, P.k0, P.k1, z);
            ig_real v = P.consts[IG_C_INIT_VELOCITY_STD] * z[1];
            IG_AT(th, i) = P.consts[IG_C_INIT_THETA_STD] * z[0];
            IG_AT(mo, i) = continuous ? v : -v / lr;
        }
        {  // I_0 is the float64 inertia of the initial state, recorded or not
            double I, K, Ld, S;
            IG_OBSERVE64(I, K, Ld, S);
            I0 = I;
        }
        record(0ll, true);
        IG_LOSS_GRAD(th, gr, IG_LAM, L);
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
            led_d = ledger_in[2 * t + 0];
            led_q = ledger_in[2 * t + 1];
        }
        IG_LOSS_GRAD(th, gr, IG_LAM, L);
    }

    // One step n -> n + 1 with noise xi(i); leaves L, gr current for the new theta.
    // The integrators are the words of inertia_gpu/reference.py (WORDS), unrolled here.
    auto do_step = [&](long long n, auto xi) {
        const ig_real *row = P.table + (n - P.step_begin) * P.table_stride;
        const ig_real decay = row[IG_S_DECAY];
        ig_real xs = row[IG_S_XI];  // the multiplier of xi (loss-scaled: noise, times sqrt(L) and SPREAD below)
        if (IG_INTEGRATOR == IG_HEAVY_BALL) {  // M: b <- mu b + (grad + s xi); theta <- theta - lr b
            if (IG_NOISE_MODEL == IG_LOSS_SCALED) xs = (xs * ig_sqrt(ig_max0(L))) * row[IG_S_SPREAD];
            IgLedgerSums led;
            IG_FOR(i) {
                ig_real g = IG_AT(gr, i);
#if IG_LEDGER
                ig_real k = IG_NOISY ? xs * xi(i) : (ig_real)0;
                led.add(IG_AT(mo, i), k);
                if (IG_NOISY) g = g + k;
#else
                if (IG_NOISY) g = g + xs * xi(i);
#endif
                ig_real b = decay * IG_AT(mo, i) + g;
                IG_AT(mo, i) = b;
                IG_AT(th, i) = IG_AT(th, i) - lr * b;
            }
            led.fold((double)decay, P.half_lr64, led_d, led_q);
            IG_LOSS_GRAD(th, gr, IG_LAM, L);
        } else if (IG_INTEGRATOR == IG_EULER) {  // E
            if (IG_NOISE_MODEL == IG_LOSS_SCALED) xs = (xs * ig_sqrt(ig_max0(L))) * row[IG_S_SPREAD];
            IgLedgerSums led;
            IG_FOR(i) {
                ig_real v = IG_AT(mo, i);
                ig_real vn = v - h * IG_AT(gr, i) - decay * v;
#if IG_LEDGER
                ig_real k = IG_NOISY ? xs * xi(i) : (ig_real)0;
                led.add(v, k);
                if (IG_NOISY) vn = vn + k;
#else
                if (IG_NOISY) vn = vn + xs * xi(i);
#endif
                IG_AT(th, i) = IG_AT(th, i) + h * v;
                IG_AT(mo, i) = vn;
            }
            led.fold(1.0 - (double)decay, 0.5, led_d, led_q);  // E: friction v -> (1 - h gamma) v
            IG_LOSS_GRAD(th, gr, IG_LAM, L);
        } else {  // leapfrog B A B O, or baoab B A O A B
            IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }  // B
            if (IG_INTEGRATOR == IG_LEAPFROG) {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + h * IG_AT(mo, i); }  // A (the word's only drift: h)
                IG_LOSS_GRAD(th, gr, IG_LAM, L);
                IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }  // B
            } else {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + half_h * IG_AT(mo, i); }  // A (one of two: h/2)
            }
            // O: v <- c1 v + (sigma sqrt(vf)) xi, exact over h
            IgLedgerSums led;
            if (IG_NOISY) {
                if (IG_NOISE_MODEL == IG_LOSS_SCALED) {
                    ig_real Lnow = L;
                    if (IG_INTEGRATOR == IG_BAOAB) IG_LOSS(th, IG_LAM, Lnow);
                    xs = (xs * ig_sqrt(ig_max0(Lnow))) * row[IG_S_SPREAD];
                }
#if IG_LEDGER
                IG_FOR(i) {
                    ig_real k = xs * xi(i);
                    led.add(IG_AT(mo, i), k);
                    IG_AT(mo, i) = decay * IG_AT(mo, i) + k;
                }
#else
                IG_FOR(i) { IG_AT(mo, i) = decay * IG_AT(mo, i) + xs * xi(i); }
#endif
            } else {
                IG_FOR(i) {
                    led.add(IG_AT(mo, i), (ig_real)0);
                    IG_AT(mo, i) = decay * IG_AT(mo, i);
                }
            }
            led.fold((double)decay, 0.5, led_d, led_q);
            if (IG_INTEGRATOR == IG_BAOAB) {
                IG_FOR(i) { IG_AT(th, i) = IG_AT(th, i) + half_h * IG_AT(mo, i); }  // A
                IG_LOSS_GRAD(th, gr, IG_LAM, L);
                IG_FOR(i) { IG_AT(mo, i) = IG_AT(mo, i) - half_h * IG_AT(gr, i); }  // B
            }
        }
    };

    auto after_step = [&](long long n1) { record(n1, false); };  // state n1 = n + 1 exists

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
        ledger_out[2 * t + 0] = led_d;
        ledger_out[2 * t + 1] = led_q;
    }
#undef IG_LAM
#undef IG_OBSERVE
}

#ifdef __CUDACC__
// Per-warp float64 sums of [count_kept, I, K, L, S, I^2, D, Q, W] by a fixed shuffle tree; lane 0
// writes partial[(r * n_warps + warp) * IG_NC + q]. A GROUP of 64 is two warps; the launcher
// adds the pair (a + b, a fixed order), so the sums never depend on the launch shape.
struct IgWarpRecorder {
    double *partial;
    long long n_warps, warp;
    int lane;
    bool active;
    __device__ void operator()(long long r, bool kept, double I, double K, double L, double S, double D, double Q,
                               double W) {
        // without the ledger only the quantities are reduced; its columns are written 0.0
        const int nsum = IG_LEDGER ? IG_NC : IG_NQ;
        bool ok = active && kept;
        double v[IG_NC];
        v[0] = ok ? 1.0 : 0.0;
        v[1] = ok ? I : 0.0;
        v[2] = ok ? K : 0.0;
        v[3] = ok ? L : 0.0;
        v[4] = ok ? S : 0.0;
        v[5] = ok ? I * I : 0.0;
        v[IG_COL_DISSIPATED] = ok ? D : 0.0;
        v[IG_COL_INJECTED] = ok ? Q : 0.0;
        v[IG_COL_RESIDUAL] = ok ? W : 0.0;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
            for (int q = 0; q < nsum; ++q) v[q] += __shfl_down_sync(0xffffffffu, v[q], off);
        }
        if (lane == 0 && warp < n_warps) {
            double *out = partial + (r * n_warps + warp) * IG_NC;
#pragma unroll
            for (int q = 0; q < IG_NC; ++q) out[q] = q < nsum ? v[q] : 0.0;
        }
    }
};

// Launch with blockDim.x == IG_BLOCK (a multiple of 64) and enough blocks to cover
// n_warps * 32 threads; every thread of a launched warp must run (no early exit).
extern "C" __global__ void __launch_bounds__(IG_BLOCK) inertia_ensemble(
    const ig_real *lam, long long lam_stride, int init,
    const ig_real *theta_in, const ig_real *mom_in, const double *inertia0_in, const int *fp_in,
    const double *ledger_in, ig_real *theta_out, ig_real *mom_out, double *inertia0_out, int *fp_out,
    double *ledger_out, double *partial, long long n_warps, ig_real *work,
    const ig_real *consts, const ig_real *table, long long table_stride, const int *record_row,
    double half_lr64, double shadow64, double diverge_above,
    unsigned int k0, unsigned int k1, unsigned int start, long long count,
    long long step_begin, long long step_end) {
    IgParams P;
    P.lam = lam;
    P.lam_stride = lam_stride;
    P.consts = consts;
    P.table = table;
    P.table_stride = table_stride;
    P.record_row = record_row;
    P.half_lr64 = half_lr64;
    P.shadow64 = shadow64;
    P.diverge_above = diverge_above;
    P.k0 = k0;
    P.k1 = k1;
    P.step_begin = step_begin;
    P.step_end = step_end;
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long ws = (long long)gridDim.x * blockDim.x;
    IgWarpRecorder rec;
    rec.partial = partial;
    rec.n_warps = n_warps;
    rec.warp = t >> 5;
    rec.lane = (int)(t & 31);
    rec.active = t < count;
    ig_run_trajectory(P, start + (ig_u32)t, t, t < count, init ? nullptr : theta_in, mom_in, inertia0_in, fp_in,
                      ledger_in, theta_out, mom_out, inertia0_out, fp_out, ledger_out, work, ws, rec);
}
#endif
