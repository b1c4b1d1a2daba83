// Fused SGD step (torch.optim.SGD semantics) on one flat tensor, with gradient noise from
// the optimizer stream of docs/CONVENTIONS.md and the inertia partial sums.
//
// Per element e (g = p.grad, b = momentum buffer, p = parameter), as InertiaSGD's foreach path:
//   if maximize: g = -g
//   if weight_decay: g += wd p            (g is now the noise-free direction d_k)
//   g_noisy = g + noise * xi_e           xi_e: Philox optimizer stream (step, parameter, element)
//   b_old = b (0 on the first step, where torch creates the buffer)
//   momentum != 0: b = first ? g_noisy : momentum b_old + (1 - dampening) g_noisy
//                  d = nesterov ? g_noisy + momentum b : b
//   momentum == 0: d = g_noisy  (no buffer)
//   p = p - lr d
// and per block, in float64: partial[3 blk] = sum b_old^2, partial[3 blk + 1] = sum <b_old, g>
// (g without noise), both of the state before the step, so the caller forms K = lr/2 sum b^2,
// I = K + L and the shadow inertia I + lr/2 <b, d> (same convention as kernels/sgd.py), and
// partial[3 blk + 2] = sum <q, 2 momentum b_old + q>, q the noise this step puts into the buffer
// ((1 - dampening) noise xi, noise xi where the buffer is new): lr/2 times it is the ledger's
// injected energy lr/2 (|momentum b_old + q|^2 - |momentum b_old|^2), the third sum of the Triton
// and foreach paths. Without momentum there is no buffer and all three sums are 0.
//
// Each thread owns quads of four consecutive elements (one Philox call, four lanes); the quad
// -> thread map is a grid-stride loop over a grid the launcher fixes from numel alone, and the
// block reduction is a fixed shared-memory tree: the sums are deterministic. The per-quad step
// `ig_sgd_quad` is __host__ __device__: a host program includes this file (without __CUDACC__ the
// kernels are left out) to check the arithmetic without a GPU (tests/test_cuda_sources.py).
#include "philox.cuh"

#ifndef IG_SGD_BLOCK
#define IG_SGD_BLOCK 256
#endif

#define IG_SGD_SUMS 3  // sum b_old^2, sum <b_old, g>, sum <q, 2 momentum b_old + q>

struct IgSgdArgs {
    long long numel;
    double lr, momentum, dampening, weight_decay, noise;
    int nesterov, maximize, first, has_buf;
    ig_u32 k0, k1, step, param_index;
};

// One quad (elements 4q .. 4q + 3 below numel) of the step, in place; adds its terms to acc.
template <typename real>
IG_HD void ig_sgd_quad(real *__restrict__ param, const real *__restrict__ grad, real *__restrict__ buf,
                       long long q, const IgSgdArgs &a, double acc[IG_SGD_SUMS]) {
    const real lr = (real)a.lr, mom = (real)a.momentum, damp1 = (real)(1.0 - a.dampening);
    const real wd = (real)a.weight_decay, noise = (real)a.noise;
    const bool noisy = a.noise != 0.0, decay = a.weight_decay != 0.0;
    // the noise the buffer receives, per unit xi, in float64 as the foreach path forms it
    const double q_scale = a.first ? a.noise : (1.0 - a.dampening) * a.noise;
    real z[4] = {(real)0, (real)0, (real)0, (real)0};
    if (noisy) {
        ig_counter c = ig_optimizer_counter((ig_u64)(q << 2), a.step, a.param_index);
        ig_counter_normals4<real>(c, a.k0, a.k1, z);
    }
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int lane = 0; lane < 4; ++lane) {
        long long e = (q << 2) + lane;
        if (e < a.numel) {
            real p = param[e];
            real g = grad[e];
            if (a.maximize) g = -g;
            if (decay) g = g + wd * p;
            real gn = noisy ? g + noise * z[lane] : g;
            real d = gn;
            if (a.has_buf) {
                real b_old = a.first ? (real)0 : buf[e];
                acc[0] += (double)b_old * (double)b_old;
                acc[1] += (double)b_old * (double)g;
                if (noisy) {
                    double kick = (double)z[lane] * q_scale;
                    acc[2] += kick * (2.0 * a.momentum * (double)b_old + kick);
                }
                real b = a.first ? gn : mom * b_old + damp1 * gn;
                buf[e] = b;
                d = a.nesterov ? gn + mom * b : b;
            }
            param[e] = p - lr * d;
        }
    }
}

#ifdef __CUDACC__
template <typename real>
__device__ __forceinline__ void ig_sgd_step(real *__restrict__ param, const real *__restrict__ grad,
                                            real *__restrict__ buf, double *__restrict__ partial,
                                            const IgSgdArgs &a) {
    __shared__ double sums[IG_SGD_SUMS][IG_SGD_BLOCK];
    double acc[IG_SGD_SUMS] = {0.0, 0.0, 0.0};
    const long long nquads = (a.numel + 3) >> 2;
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < nquads;
         q += (long long)gridDim.x * blockDim.x)
        ig_sgd_quad<real>(param, grad, buf, q, a, acc);
#pragma unroll
    for (int k = 0; k < IG_SGD_SUMS; ++k) sums[k][threadIdx.x] = acc[k];
    __syncthreads();
#pragma unroll
    for (int s = IG_SGD_BLOCK / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
#pragma unroll
            for (int k = 0; k < IG_SGD_SUMS; ++k) sums[k][threadIdx.x] += sums[k][threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
#pragma unroll
        for (int k = 0; k < IG_SGD_SUMS; ++k) partial[IG_SGD_SUMS * blockIdx.x + k] = sums[k][0];
    }
}

// blockDim.x must be IG_SGD_BLOCK.
#define IG_SGD_KERNEL(NAME, REAL)                                                                          \
    extern "C" __global__ void __launch_bounds__(IG_SGD_BLOCK)                                              \
        NAME(REAL *param, const REAL *grad, REAL *buf, double *partial, long long numel, double lr,         \
             double momentum, double dampening, double weight_decay, double noise, int nesterov, int maximize, \
             int first, int has_buf, unsigned int k0, unsigned int k1, unsigned int step,                  \
             unsigned int param_index) {                                                                   \
        IgSgdArgs a = {numel, lr, momentum, dampening, weight_decay, noise, nesterov, maximize, first,      \
                       has_buf, k0, k1, step, param_index};                                                \
        ig_sgd_step<REAL>(param, grad, buf, partial, a);                                                   \
    }

IG_SGD_KERNEL(inertia_sgd_f32, float)
IG_SGD_KERNEL(inertia_sgd_f64, double)
#endif
