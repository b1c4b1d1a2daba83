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
// and per block, in float64: partial[2 blk] = sum b_old^2, partial[2 blk + 1] = sum <b_old, g>
// (g without noise), both of the state before the step, so the caller forms K = lr/2 sum b^2,
// I = K + L and the shadow inertia I + lr/2 <b, d> (same convention as kernels/sgd.py).
//
// Each thread owns quads of four consecutive elements (one Philox call, four lanes); the quad
// -> thread map is a grid-stride loop over a grid the launcher fixes from numel alone, and the
// block reduction is a fixed shared-memory tree: the sums are deterministic.
#include "philox.cuh"

#ifndef IG_SGD_BLOCK
#define IG_SGD_BLOCK 256
#endif

template <typename real>
__device__ __forceinline__ void ig_sgd_step(real *__restrict__ param, const real *__restrict__ grad,
                                            real *__restrict__ buf, double *__restrict__ partial, long long numel,
                                            double lr_d, double momentum_d, double dampening_d,
                                            double weight_decay_d, double noise_d, int nesterov, int maximize,
                                            int first, int has_buf, unsigned int k0, unsigned int k1,
                                            unsigned int step, unsigned int param_index) {
    __shared__ double sk[IG_SGD_BLOCK];
    __shared__ double sd[IG_SGD_BLOCK];
    const real lr = (real)lr_d, mom = (real)momentum_d, damp1 = (real)(1.0 - dampening_d);
    const real wd = (real)weight_decay_d, noise = (real)noise_d;
    const bool noisy = noise_d != 0.0, decay = weight_decay_d != 0.0;
    double acc_k = 0.0, acc_d = 0.0;
    const long long nquads = (numel + 3) >> 2;
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < nquads;
         q += (long long)gridDim.x * blockDim.x) {
        real z[4] = {(real)0, (real)0, (real)0, (real)0};
        if (noisy) {
            ig_counter c = ig_optimizer_counter((ig_u64)(q << 2), step, param_index);
            ig_counter_normals4<real>(c, k0, k1, z);
        }
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) {
            long long e = (q << 2) + lane;
            if (e < numel) {
                real p = param[e];
                real g = grad[e];
                if (maximize) g = -g;
                if (decay) g = g + wd * p;
                real gn = noisy ? g + noise * z[lane] : g;
                real d = gn;
                if (has_buf) {
                    real b_old = first ? (real)0 : buf[e];
                    acc_k += (double)b_old * (double)b_old;
                    acc_d += (double)b_old * (double)g;
                    real b = first ? gn : mom * b_old + damp1 * gn;
                    buf[e] = b;
                    d = nesterov ? gn + mom * b : b;
                }
                param[e] = p - lr * d;
            }
        }
    }
    sk[threadIdx.x] = acc_k;
    sd[threadIdx.x] = acc_d;
    __syncthreads();
#pragma unroll
    for (int s = IG_SGD_BLOCK / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            sk[threadIdx.x] += sk[threadIdx.x + s];
            sd[threadIdx.x] += sd[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = sk[0];
        partial[2 * blockIdx.x + 1] = sd[0];
    }
}

// blockDim.x must be IG_SGD_BLOCK.
#define IG_SGD_KERNEL(NAME, REAL)                                                                          \
    extern "C" __global__ void __launch_bounds__(IG_SGD_BLOCK)                                              \
        NAME(REAL *param, const REAL *grad, REAL *buf, double *partial, long long numel, double lr,         \
             double momentum, double dampening, double weight_decay, double noise, int nesterov, int maximize, \
             int first, int has_buf, unsigned int k0, unsigned int k1, unsigned int step,                  \
             unsigned int param_index) {                                                                   \
        ig_sgd_step<REAL>(param, grad, buf, partial, numel, lr, momentum, dampening, weight_decay, noise,  \
                          nesterov, maximize, first, has_buf, k0, k1, step, param_index);                  \
    }

IG_SGD_KERNEL(inertia_sgd_f32, float)
IG_SGD_KERNEL(inertia_sgd_f64, double)
