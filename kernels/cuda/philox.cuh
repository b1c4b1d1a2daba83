// Philox4x32-10 and the fixed normal transform of docs/CONVENTIONS.md.
//
// One header for the device kernels (nvcc, NVRTC through cupy.RawModule) and
// for host programs (plain g++/gcc: the shim below defines __host__/__device__
// away), so the host build can be checked sample for sample against
// inertia_gpu.rng.  No includes are needed under NVRTC.
#ifndef INERTIA_GPU_PHILOX_CUH
#define INERTIA_GPU_PHILOX_CUH

#ifndef __CUDACC__
#  ifndef __host__
#    define __host__
#  endif
#  ifndef __device__
#    define __device__
#  endif
#  include <math.h>
#endif

#define IG_HD __host__ __device__ inline

typedef unsigned int ig_u32;
typedef unsigned long long ig_u64;

#define IG_PHILOX_M0 0xD2511F53u
#define IG_PHILOX_M1 0xCD9E8D57u
#define IG_PHILOX_W0 0x9E3779B9u
#define IG_PHILOX_W1 0xBB67AE85u

// Stream tags (word c3 of the counter).
#define IG_TAG_STEP 0u
#define IG_TAG_INIT 1u
#define IG_TAG_SPECTRUM 2u
#define IG_TAG_OPTIMIZER 3u

struct ig_u32x4 {
    ig_u32 x0, x1, x2, x3;
};

IG_HD void ig_mulhilo32(ig_u32 a, ig_u32 b, ig_u32 &hi, ig_u32 &lo) {
#ifdef __CUDA_ARCH__
    lo = a * b;
    hi = __umulhi(a, b);
#else
    ig_u64 p = (ig_u64)a * (ig_u64)b;
    lo = (ig_u32)p;
    hi = (ig_u32)(p >> 32);
#endif
}

// Philox4x32 with 10 rounds (Random123 constants; same function as tl.philox).
IG_HD ig_u32x4 ig_philox4x32_10(ig_u32 c0, ig_u32 c1, ig_u32 c2, ig_u32 c3, ig_u32 k0, ig_u32 k1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int round = 0; round < 10; ++round) {
        ig_u32 hi0, lo0, hi1, lo1;
        ig_mulhilo32(IG_PHILOX_M0, c0, hi0, lo0);
        ig_mulhilo32(IG_PHILOX_M1, c2, hi1, lo1);
        ig_u32 n0 = hi1 ^ c1 ^ k0;
        ig_u32 n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += IG_PHILOX_W0;
        k1 += IG_PHILOX_W1;
    }
    ig_u32x4 out;
    out.x0 = c0;
    out.x1 = c1;
    out.x2 = c2;
    out.x3 = c3;
    return out;
}

// Key words from a 64-bit seed: (seed & 0xffffffff, seed >> 32).
IG_HD ig_u32 ig_seed_k0(ig_u64 seed) { return (ig_u32)(seed & 0xFFFFFFFFull); }
IG_HD ig_u32 ig_seed_k1(ig_u64 seed) { return (ig_u32)(seed >> 32); }

// --- precise math, overloaded on the working dtype (no fast-math anywhere) ---
IG_HD float ig_sqrt(float x) { return sqrtf(x); }
IG_HD double ig_sqrt(double x) { return sqrt(x); }
IG_HD float ig_log(float x) { return logf(x); }
IG_HD double ig_log(double x) { return log(x); }
IG_HD float ig_exp(float x) { return expf(x); }
IG_HD double ig_exp(double x) { return exp(x); }
IG_HD float ig_expm1(float x) { return expm1f(x); }
IG_HD double ig_expm1(double x) { return expm1(x); }
IG_HD float ig_cos(float x) { return cosf(x); }
IG_HD double ig_cos(double x) { return cos(x); }
IG_HD float ig_sin(float x) { return sinf(x); }
IG_HD double ig_sin(double x) { return sin(x); }

// Top 24 bits as a uniform: open_at_zero -> ((x >> 8) + 1) 2^-24 in (0, 1]; else (x >> 8) 2^-24 in [0, 1).
template <typename real>
IG_HD real ig_uniform24(ig_u32 x, bool open_at_zero) {
    real u = (real)(x >> 8);
    if (open_at_zero) u = u + (real)1;
    return u * (real)5.9604644775390625e-08;  // 2^-24, exact in both dtypes
}

// Box-Muller on one pair of words, in the working dtype:
//   u1 = ((xa >> 8) + 1) 2^-24, u2 = (xb >> 8) 2^-24, r = sqrt(-2 log u1),
//   z0 = r cos(2 pi u2), z1 = r sin(2 pi u2).
template <typename real>
IG_HD void ig_box_muller(ig_u32 xa, ig_u32 xb, real &z0, real &z1) {
    real u1 = ig_uniform24<real>(xa, true);
    real u2 = ig_uniform24<real>(xb, false);
    real r = ig_sqrt((real)-2 * ig_log(u1));
    real angle = (real)6.283185307179586 * u2;
    z0 = r * ig_cos(angle);
    z1 = r * ig_sin(angle);
}

// Four standard normals of one counter (lanes 0..3).
template <typename real>
IG_HD void ig_normals4(ig_u32 c0, ig_u32 c1, ig_u32 c2, ig_u32 c3, ig_u32 k0, ig_u32 k1, real z[4]) {
    ig_u32x4 x = ig_philox4x32_10(c0, c1, c2, c3, k0, k1);
    ig_box_muller<real>(x.x0, x.x1, z[0], z[1]);
    ig_box_muller<real>(x.x2, x.x3, z[2], z[3]);
}

// --- counter layouts (docs/CONVENTIONS.md) ----------------------------------
// Ensemble: (trajectory, step // 4, coordinate, tag); lane step % 4 for TAG_STEP.
struct ig_counter {
    ig_u32 c0, c1, c2, c3;
};

IG_HD ig_counter ig_ensemble_counter(ig_u32 trajectory, ig_u64 step, ig_u32 coordinate, ig_u32 tag) {
    ig_counter c;
    c.c0 = trajectory;
    c.c1 = (ig_u32)(step >> 2);
    c.c2 = coordinate;
    c.c3 = tag;
    return c;
}

IG_HD int ig_ensemble_lane(ig_u64 step) { return (int)(step & 3ull); }

// Optimizer: ((e // 4) & 0xffffffff, t, p, 3 + ((e // 4) >> 32) * 16); lane e % 4.
IG_HD ig_counter ig_optimizer_counter(ig_u64 element, ig_u32 step, ig_u32 parameter) {
    ig_u64 group = element >> 2;
    ig_counter c;
    c.c0 = (ig_u32)(group & 0xFFFFFFFFull);
    c.c1 = step;
    c.c2 = parameter;
    c.c3 = IG_TAG_OPTIMIZER + (ig_u32)(group >> 32) * 16u;
    return c;
}

IG_HD int ig_optimizer_lane(ig_u64 element) { return (int)(element & 3ull); }

template <typename real>
IG_HD void ig_counter_normals4(ig_counter c, ig_u32 k0, ig_u32 k1, real z[4]) {
    ig_normals4<real>(c.c0, c.c1, c.c2, c.c3, k0, k1, z);
}

#endif  // INERTIA_GPU_PHILOX_CUH
