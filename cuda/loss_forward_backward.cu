// CUDA losses with dense targets: the twin of loss_forward_backward in
// src/cpu/losses.cpp, every kind, each term and gradient written as the CPU
// writes it (the loss terms in double, the gradients in float).
//
// Elementwise kinds (and categorical cross-entropy on probabilities, which is
// elementwise too): one thread per element writes the gradient and adds its
// term to a per-thread double; block_sum gives one partial per block.
// Categorical cross-entropy on logits: one warp per row (log-sum-exp needs the
// whole row), one partial per row. Then sum_partials_to_host adds the partials
// in a fixed order (reduce.cuh) and synchronizes: the loss comes back to the
// host. Deterministic; it agrees with the CPU's double sum to ~1e-15 relative.
#include <cmath>
#include <string>

#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "ops/fastmath.h"
#include "ops/losses.h"
#include "reduce.cuh"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// One element: writes dL/dpred to *g and returns the loss term. s is the
// CPU's scale (2/n for MSE, 1/rows for categorical cross-entropy, else 1/n).
__device__ __forceinline__ double loss_term(Loss kind, float pred, float t, float s, float param, float* g) {
  switch (kind) {
    case Loss::MeanSquaredError: {  // (p - t)^2 ; 2 (p - t) / n
      const float e = pred - t;
      *g = s * e;
      return double(e) * e;
    }
    case Loss::MeanAbsoluteError: {  // |p - t| ; sign(p - t) / n
      const float e = pred - t;
      *g = e > 0.0f ? s : (e < 0.0f ? -s : 0.0f);
      return fabsf(e);
    }
    case Loss::Huber: {  // 0.5 e^2 if |e| <= delta else delta (|e| - 0.5 delta)
      const float d = param, e = pred - t, ae = fabsf(e);
      *g = s * (ae <= d ? e : copysignf(d, e));
      return ae <= d ? 0.5 * double(e) * e : double(d) * (ae - 0.5 * d);
    }
    case Loss::BinaryCrossentropy: {  // -(t log p + (1 - t) log(1 - p)), p clipped
      const float p = clip_probability(pred);
      *g = s * (p - t) / (p * (1.0f - p));
      return -(double(t) * log(double(p)) + (1.0 - t) * log(1.0 - double(p)));
    }
    case Loss::BinaryCrossentropyLogits: {  // max(z, 0) - z t + log(1 + e^-|z|) ; sigmoid(z) - t
      const double z = pred;
      *g = s * (fast_sigmoid(pred) - t);
      return (z < 0.0 ? 0.0 : z) - z * t + log1p(exp(-fabs(z)));  // std::max's NaN rule: NaN stays
    }
    case Loss::CategoricalCrossentropy: {  // -t log p, p clipped ; -t / (p rows)
      const float pc = clip_probability(pred);
      *g = -s * t / pc;
      return -double(t) * log(double(pc));
    }
    default: *g = 0.0f; return 0.0;  // CategoricalCrossentropyLogits goes to the row kernel
  }
}

__global__ void elementwise_loss_kernel(Loss kind, const float* pred, const float* target, float* grad, index_t n,
                                        float s, float param, double* partial) {
  __shared__ double shared[kWarpsPerBlock];
  double acc = 0.0;
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    float g;
    acc += loss_term(kind, pred[i], target[i], s, param, &g);
    if (grad) grad[i] = g;
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Softmax cross-entropy with dense targets, one warp per row, as the CPU:
//   m = max z (NaN ignored), lse = m + log sum e^{z - m}   (the sum in double)
//   loss_r = sum_j t_j (lse - z_j), tsum = sum_j t_j        (double)
//   grad_j = s (float(e^{z_j - lse} tsum) - t_j)
// grad may alias pred: every lane has read the row before any lane writes.
__global__ void softmax_crossentropy_rows_kernel(const float* pred, const float* target, float* grad, index_t rows,
                                                 index_t cols, float s, double* row_loss) {
  const int lane = threadIdx.x % 32;
  for (index_t r = warp_row(); r < rows; r += warp_row_stride()) {
    const float* z = pred + r * cols;
    const float* t = target + r * cols;
    const double lse = warp_row_logsumexp(z, cols, lane);
    double loss = 0.0, tsum = 0.0;
    for (index_t j = lane; j < cols; j += 32) {
      loss += double(t[j]) * (lse - z[j]);
      tsum += t[j];
    }
    loss = warp_sum(loss);
    tsum = warp_sum(tsum);
    __syncwarp();
    if (grad) {
      float* g = grad + r * cols;
      for (index_t j = lane; j < cols; j += 32) g[j] = s * (float(exp(double(z[j]) - lse) * tsum) - t[j]);
    }
    if (lane == 0) row_loss[r] = loss;
  }
}

}  // namespace

double loss_forward_backward(Loss kind, const float* pred, const float* target, float* grad, index_t rows,
                             index_t cols, float param) {
  if (int(kind) < 0 || int(kind) > int(Loss::CategoricalCrossentropyLogits))
    throw InvalidInput("unknown loss kind " + std::to_string(int(kind)));
  const index_t n = rows * cols;
  const bool per_row = kind == Loss::CategoricalCrossentropy || kind == Loss::CategoricalCrossentropyLogits;
  const double count = per_row ? double(rows) : double(n);  // the CPU's denominator
  if (n == 0) return 0.0 / count;
  const char* what = "loss_forward_backward";
  if (kind == Loss::CategoricalCrossentropyLogits) {
    Scratch scratch((size_t(rows) + 1) * sizeof(double));  // [row_loss: rows][total]
    auto* row_loss = static_cast<double*>(scratch.p);
    softmax_crossentropy_rows_kernel<<<blocks_for_rows(rows), kThreads, 0, current_stream()>>>(
        pred, target, grad, rows, cols, 1.0f / float(rows), row_loss);
    check_launch("softmax_crossentropy_rows_kernel");
    return sum_partials_to_host(row_loss, rows, row_loss + rows, what) / count;
  }
  const float s = kind == Loss::MeanSquaredError ? 2.0f / float(n)
                  : kind == Loss::CategoricalCrossentropy ? 1.0f / float(rows)
                                                          : 1.0f / float(n);
  const unsigned blocks = blocks_for(n);
  Scratch scratch((size_t(blocks) + 1) * sizeof(double));  // [partial: blocks][total]
  auto* partial = static_cast<double*>(scratch.p);
  elementwise_loss_kernel<<<blocks, kThreads, 0, current_stream()>>>(kind, pred, target, grad, n, s, param, partial);
  check_launch("elementwise_loss_kernel");
  return sum_partials_to_host(partial, index_t(blocks), partial + blocks, what) / count;
}

}  // namespace cuda
}  // namespace deepcore
