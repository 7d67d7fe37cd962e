// CUDA batch normalization: the twin of src/cpu/batchnorm.cpp on the same
// (A, C, B) view (see ops/batchnorm.h). Each kernel is, as on the CPU,
//   - a per-feature reduction over A and B: s1 = sum v, s2 = sum v u with
//     u = x - k[c] and v = u (statistics, k = the feature's first value) or
//     v = dy (backward, k = mean); then one thread per feature computes its
//     per-feature coefficients in double, as the CPU does;
//   - an elementwise pass with those coefficients.
// Two reduction layouts, both split over blockIdx.y into slices of the values:
//   B == 1 (features last): a block takes 32 adjacent features, lane = feature,
//     the 8 warps stride over rows (coalesced); the 8 partials per feature are
//     added in warp order;
//   B > 1: a block per feature; its threads stride over the A*B values, then
//     warp shuffles and the warps' partials (fixed order).
// then one thread per feature adds the slices in order and finishes. Sums run
// in double per thread. Deterministic: no atomics, fixed orders.
#include <cmath>

#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"

namespace deepcore {
namespace cuda {
namespace {

// What finish_features_kernel does with a feature's (s1, s2).
enum class Finish { Mean, Stats, Grads };

struct FinishArgs {
  // Stats: writes mean, inv_std, scale = gamma inv_std, offset = beta; updates the moving statistics.
  const float* gamma;
  const float* beta;
  float* mean;
  float* inv_std;
  float* moving_mean;
  float* moving_var;
  float eps, momentum;
  // Grads: reads mean (the k) and inv_std (not written); writes dbeta, dgamma and the dx coefficients.
  float* dgamma;
  float* dbeta;
  // Per-feature coefficients for the elementwise pass (scratch): Stats c0 = scale, c1 = offset;
  // Grads c0 = g, c1 = md, c2 = q. Mean: c2 = the mean (the second pass's shift).
  float* c0;
  float* c1;
  float* c2;
  index_t n;  // A * B
};

template <Finish F>
__device__ void finish_feature(const FinishArgs& f, const float* shift, index_t c, double s1, double s2) {
  const double n = double(f.n);
  if (F == Finish::Mean) {
    f.c2[c] = float(double(shift[c]) + s1 / n);  // as the CPU: float(shift + s1 / n)
  } else if (F == Finish::Stats) {
    const double d = s1 / n;                          // mean - shift
    const double v = s2 / n - d * d;
    const double var = (0.0 < v) ? v : 0.0;           // std::max(0.0, v): biased, NaN -> 0 as on the CPU
    const double mu = double(shift[c]) + d;
    const double is = 1.0 / sqrt(var + double(f.eps));
    f.mean[c] = float(mu);
    f.inv_std[c] = float(is);
    f.c0[c] = float((f.gamma ? double(f.gamma[c]) : 1.0) * is);
    f.c1[c] = f.beta ? f.beta[c] : 0.0f;
    f.moving_mean[c] = float(double(f.moving_mean[c]) * f.momentum + mu * (1.0 - double(f.momentum)));
    f.moving_var[c] = float(double(f.moving_var[c]) * f.momentum + var * (1.0 - double(f.momentum)));
  } else {
    // dbeta = s1, dgamma = s2 inv_std; dx = g (dy - md - (x - mean) q),
    // g = gamma inv_std, md = s1 / n, q = inv_std^2 s2 / n
    const double is = f.inv_std[c];
    if (f.dbeta) f.dbeta[c] = float(s1);
    if (f.dgamma) f.dgamma[c] = float(s2 * is);
    if (f.c0) {
      f.c0[c] = float((f.gamma ? double(f.gamma[c]) : 1.0) * is);
      f.c1[c] = float(s1 / n);
      f.c2[c] = float(is * is * s2 / n);
    }
  }
}

// u = x - k[c], v = dy or u; (v, v u) summed per thread in double.
template <bool kWithDy>
__device__ __forceinline__ void accumulate(const float* x, const float* dy, float kc, index_t i, double& s1,
                                           double& s2) {
  const float u = x[i] - kc;
  const float v = kWithDy ? dy[i] : u;
  s1 += v;
  s2 += double(v * u);
}

// The reduction is split over blockIdx.y into `splits` slices of the values of
// each feature, so that a few features over many rows still fill the GPU; each
// (slice, feature) writes one partial, and finish_features adds the slices in
// order. part1, part2: splits x C doubles.

// B == 1: blockDim = (32, kWarpsPerBlock); feature c = blockIdx.x * 32 + lane;
// rows a = blockIdx.y * 8 + warp, stepping 8 * splits.
template <bool kWithDy>
__global__ void partial_sums_last_kernel(const float* x, const float* dy, const float* k, index_t A, index_t C,
                                         double* part1, double* part2) {
  __shared__ double p1[kWarpsPerBlock][32], p2[kWarpsPerBlock][32];
  const index_t c = index_t(blockIdx.x) * 32 + threadIdx.x;
  const index_t step = index_t(kWarpsPerBlock) * gridDim.y;
  double s1 = 0.0, s2 = 0.0;
  if (c < C) {
    const float kc = k[c];
    for (index_t a = index_t(blockIdx.y) * kWarpsPerBlock + threadIdx.y; a < A; a += step)
      accumulate<kWithDy>(x, dy, kc, a * C + c, s1, s2);
  }
  p1[threadIdx.y][threadIdx.x] = s1;
  p2[threadIdx.y][threadIdx.x] = s2;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int w = 1; w < kWarpsPerBlock; ++w) s1 += p1[w][threadIdx.x], s2 += p2[w][threadIdx.x];
    part1[index_t(blockIdx.y) * C + c] = s1;
    part2[index_t(blockIdx.y) * C + c] = s2;
  }
}

// B > 1: a block per (feature, slice), grid-stride over features; the values
// e = a B + b of the feature, from blockIdx.y * kThreads + thread, stepping
// kThreads * splits; warp shuffles, then the warps' partials.
template <bool kWithDy>
__global__ void partial_sums_inner_kernel(const float* x, const float* dy, const float* k, index_t A, index_t C,
                                          index_t B, double* part1, double* part2) {
  __shared__ double shared[kWarpsPerBlock];
  const index_t step = index_t(kThreads) * gridDim.y;
  for (index_t c = blockIdx.x; c < C; c += gridDim.x) {  // uniform across the block
    const float kc = k[c];
    double s1 = 0.0, s2 = 0.0;
    for (index_t e = index_t(blockIdx.y) * kThreads + threadIdx.x; e < A * B; e += step) {
      const index_t a = e / B, b = e - a * B;
      accumulate<kWithDy>(x, dy, kc, (a * C + c) * B + b, s1, s2);
    }
    s1 = block_sum(s1, shared);
    s2 = block_sum(s2, shared);
    if (threadIdx.x == 0) part1[index_t(blockIdx.y) * C + c] = s1, part2[index_t(blockIdx.y) * C + c] = s2;
  }
}

// One thread per feature: add the slices in order, then the per-feature math.
template <Finish F>
__global__ void finish_features_kernel(const double* part1, const double* part2, index_t splits, const float* k,
                                       index_t C, FinishArgs f) {
  for (index_t c = grid_index(); c < C; c += grid_stride()) {
    double s1 = 0.0, s2 = 0.0;
    for (index_t r = 0; r < splits; ++r) s1 += part1[r * C + c], s2 += part2[r * C + c];
    finish_feature<F>(f, k, c, s1, s2);
  }
}

// Per-feature sums of (v, v u), u = x - k[c], then finish_feature<F> for each feature.
template <Finish F>
void reduce_features(const float* x, const float* dy, const float* k, index_t A, index_t C, index_t B,
                     const FinishArgs& f) {
  constexpr bool with_dy = F == Finish::Grads;
  // About 2048 blocks in all, each slice at least ~2048 values of a feature.
  const index_t xblocks = B == 1 ? (C + 31) / 32 : std::min<index_t>(C, kMaxBlocks);
  const index_t per_feature = A * B;
  index_t splits = std::min<index_t>((2048 + xblocks - 1) / xblocks, (per_feature + 2047) / 2048);
  splits = std::max<index_t>(1, std::min<index_t>(splits, 65535));
  Scratch scratch(2 * size_t(splits) * size_t(C) * sizeof(double));
  double* part1 = static_cast<double*>(scratch.p);
  double* part2 = part1 + splits * C;
  const dim3 blocks{unsigned(xblocks), unsigned(splits), 1u};
  if (B == 1) {
    const dim3 block{32u, unsigned(kWarpsPerBlock), 1u};
    partial_sums_last_kernel<with_dy><<<blocks, block, 0, current_stream()>>>(x, dy, k, A, C, part1, part2);
    check_launch("batchnorm partial_sums_last_kernel");
  } else {
    partial_sums_inner_kernel<with_dy><<<blocks, kThreads, 0, current_stream()>>>(x, dy, k, A, C, B, part1, part2);
    check_launch("batchnorm partial_sums_inner_kernel");
  }
  finish_features_kernel<F><<<blocks_for(C), kThreads, 0, current_stream()>>>(part1, part2, splits, k, C, f);
  check_launch("batchnorm finish_features_kernel");
}

__device__ __forceinline__ index_t feature_of(index_t i, index_t C, index_t B) {
  return B == 1 ? i % C : (i / B) % C;
}

// The first value of each feature, x[c * B]: the shift of the statistics.
__global__ void first_values_kernel(const float* x, float* shift, index_t C, index_t B) {
  for (index_t c = grid_index(); c < C; c += grid_stride()) shift[c] = x[c * B];
}

// y = (x - m[c]) * s[c] + o[c]; m, o null = 0. y == x is allowed.
__global__ void affine_kernel(const float* x, const float* m, const float* s, const float* o, float* y, index_t n,
                              index_t C, index_t B) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    const index_t c = feature_of(i, C, B);
    y[i] = (x[i] - (m ? m[c] : 0.0f)) * s[c] + (o ? o[c] : 0.0f);
  }
}

// dx = g[c] (dy - md[c] - (x - m[c]) q[c]). dx == dy is allowed.
__global__ void batchnorm_dx_kernel(const float* x, const float* dy, const float* m, const float* g,
                                    const float* md, const float* q, float* dx, index_t n, index_t C, index_t B) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    const index_t c = feature_of(i, C, B);
    dx[i] = g[c] * (dy[i] - md[c] - (x[i] - m[c]) * q[c]);
  }
}

// Inference coefficients: scale = gamma / sqrt(moving_var + eps) (in double), offset = beta.
__global__ void inference_coeffs_kernel(const float* gamma, const float* beta, const float* moving_var, float eps,
                                        float* scale, float* offset, index_t C) {
  for (index_t c = grid_index(); c < C; c += grid_stride()) {
    scale[c] = float((gamma ? double(gamma[c]) : 1.0) / sqrt(double(moving_var[c]) + double(eps)));
    offset[c] = beta ? beta[c] : 0.0f;
  }
}

void affine(const float* x, const float* m, const float* s, const float* o, float* y, index_t A, index_t C,
            index_t B) {
  const index_t n = A * C * B;
  affine_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, m, s, o, y, n, C, B);
  check_launch("affine_kernel");
}

}  // namespace

void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                             float* inv_std, float* moving_mean, float* moving_var, index_t A, index_t C, index_t B,
                             float eps, float momentum) {
  if (A * C * B == 0) return;
  Scratch scratch(4 * size_t(C) * sizeof(float));  // first values, scale, offset, mean
  float* shift = static_cast<float*>(scratch.p);
  FinishArgs f{};
  f.gamma = gamma, f.beta = beta, f.mean = mean, f.inv_std = inv_std, f.moving_mean = moving_mean,
  f.moving_var = moving_var, f.eps = eps, f.momentum = momentum, f.c0 = shift + C, f.c1 = shift + 2 * C,
  f.c2 = shift + 3 * C, f.n = A * B;
  first_values_kernel<<<blocks_for(C), kThreads, 0, current_stream()>>>(x, shift, C, B);
  check_launch("first_values_kernel");
  // Two passes, as on the CPU: the mean (sums shifted by the first values),
  // then the variance from sums around that mean.
  reduce_features<Finish::Mean>(x, nullptr, shift, A, C, B, f);
  reduce_features<Finish::Stats>(x, nullptr, f.c2, A, C, B, f);
  affine(x, mean, f.c0, f.c1, y, A, C, B);  // after the statistics: y == x is fine
}

void batchnorm_forward_inference(const float* x, const float* gamma, const float* beta, const float* moving_mean,
                                 const float* moving_var, float* y, index_t A, index_t C, index_t B, float eps) {
  if (A * C * B == 0) return;
  Scratch scratch(2 * size_t(C) * sizeof(float));
  float* scale = static_cast<float*>(scratch.p);
  inference_coeffs_kernel<<<blocks_for(C), kThreads, 0, current_stream()>>>(gamma, beta, moving_var, eps, scale,
                                                                            scale + C, C);
  check_launch("inference_coeffs_kernel");
  affine(x, moving_mean, scale, scale + C, y, A, C, B);
}

void batchnorm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* inv_std, float* dx, float* dgamma, float* dbeta, index_t A, index_t C,
                        index_t B) {
  if (A * C * B == 0 || (!dx && !dgamma && !dbeta)) return;
  Scratch scratch(dx ? 3 * size_t(C) * sizeof(float) : 0);  // g, md, q
  FinishArgs f{};
  f.gamma = gamma, f.inv_std = const_cast<float*>(inv_std), f.dgamma = dgamma, f.dbeta = dbeta, f.n = A * B;
  if (dx) {
    float* c = static_cast<float*>(scratch.p);
    f.c0 = c, f.c1 = c + C, f.c2 = c + 2 * C;
  }
  reduce_features<Finish::Grads>(x, dy, mean, A, C, B, f);
  if (!dx) return;
  const index_t n = A * C * B;
  batchnorm_dx_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, dy, mean, f.c0, f.c1, f.c2, dx, n, C, B);
  check_launch("batchnorm_dx_kernel");
}

void channel_affine(const float* x, const float* center, const float* scale, const float* offset, float* y,
                    index_t A, index_t C, index_t B) {
  if (A * C * B == 0) return;
  affine(x, center, scale, offset, y, A, C, B);
}

}  // namespace cuda
}  // namespace deepcore
