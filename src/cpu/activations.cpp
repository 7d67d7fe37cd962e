// CPU activations. Each elementwise loop is instantiated per activation (the
// switch is resolved outside the loop) so the compiler vectorizes it, and each
// chunk function is multiversioned for AVX2 / AVX-512 at run time.
#include "ops/activations.h"
#include <algorithm>
#include <cmath>
#include <vector>
#include "cpu/parallel.h"

namespace deepcore {
namespace {

template <Act K>
__attribute__((always_inline)) inline void fwd_loop(const float* x, float* y, index_t n, float alpha, float beta) {
#pragma omp simd
  for (index_t i = 0; i < n; ++i) y[i] = act_forward_scalar(K, x[i], alpha, beta);
}

template <Act K>
__attribute__((always_inline)) inline void bwd_loop(const float* x, const float* y, const float* dy, float* dx,
                                                    index_t n, float alpha, float beta) {
#pragma omp simd
  for (index_t i = 0; i < n; ++i) dx[i] = act_backward_scalar(K, x[i], y[i], dy[i], alpha, beta);
}

#define DC_FOR_EACH_ELEMENTWISE_ACT(X) \
  X(Linear) X(Sigmoid) X(Tanh) X(Relu) X(LeakyRelu) X(Elu) X(Selu) X(GeluErf) X(GeluTanh) X(Swish) X(Mish) X(Softplus)

DC_MULTIVERSION void fwd_chunk(Act k, const float* x, float* y, index_t n, float alpha, float beta) {
  switch (k) {
#define X(name) case Act::name: fwd_loop<Act::name>(x, y, n, alpha, beta); break;
    DC_FOR_EACH_ELEMENTWISE_ACT(X)
#undef X
    default: break;
  }
}

DC_MULTIVERSION void bwd_chunk(Act k, const float* x, const float* y, const float* dy, float* dx, index_t n,
                               float alpha, float beta) {
  switch (k) {
#define X(name) case Act::name: bwd_loop<Act::name>(x, y, dy, dx, n, alpha, beta); break;
    DC_FOR_EACH_ELEMENTWISE_ACT(X)
#undef X
    default: break;
  }
}

template <Act K>
__attribute__((always_inline)) inline void bias_fwd_loop(float* z, float* y, const float* b, index_t rows,
                                                         index_t cols, float alpha, float beta) {
  for (index_t r = 0; r < rows; ++r) {
    float* zr = z + r * cols;
    float* yr = y + r * cols;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) {
      const float v = zr[j] + b[j];
      zr[j] = v;
      yr[j] = act_forward_scalar(K, v, alpha, beta);
    }
  }
}

DC_MULTIVERSION void bias_fwd_chunk(Act k, float* z, float* y, const float* b, index_t rows, index_t cols,
                                    float alpha, float beta) {
  switch (k) {
#define X(name) case Act::name: bias_fwd_loop<Act::name>(z, y, b, rows, cols, alpha, beta); break;
    DC_FOR_EACH_ELEMENTWISE_ACT(X)
#undef X
    default: break;
  }
}

// softmax(x)_j = e^{x_j - max x} / sum_k e^{x_k - max x}
DC_MULTIVERSION void softmax_rows(const float* x, float* y, index_t r0, index_t r1, index_t cols) {
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = -INFINITY;
    for (index_t j = 0; j < cols; ++j) m = std::max(m, xr[j]);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (index_t j = 0; j < cols; ++j) {
      yr[j] = fast_exp(xr[j] - m);
      s += yr[j];
    }
    const float inv = 1.0f / s;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) yr[j] *= inv;
  }
}

// dx_j = y_j (dy_j - sum_k dy_k y_k)
DC_MULTIVERSION void softmax_backward_rows(const float* y, const float* dy, float* dx, index_t r0, index_t r1,
                                           index_t cols) {
  for (index_t r = r0; r < r1; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (index_t j = 0; j < cols; ++j) dot += gr[j] * yr[j];
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) dr[j] = yr[j] * (gr[j] - dot);
  }
}

// fn(r0, r1) over contiguous row ranges (starts multiples of 8 rows), in
// parallel when the tensor is large. Each row is computed alone: the same bits
// at any split.
template <class Fn>
void parallel_rows(index_t rows, index_t cols, Fn fn) {
  parallel_chunks_if(rows * cols >= kParallelThreshold, rows, fn, 8);
}

}  // namespace

void activation_forward(ActParams a, const float* x, float* y, index_t rows, index_t cols) {
  if (a.kind == Act::Softmax) {
    parallel_rows(rows, cols, [&](index_t r0, index_t r1) { softmax_rows(x, y, r0, r1, cols); });
    return;
  }
  parallel_chunks(rows * cols, [&](index_t b, index_t e) { fwd_chunk(a.kind, x + b, y + b, e - b, a.alpha, a.beta); });
}

void activation_backward(ActParams a, const float* x, const float* y, const float* dy, float* dx, index_t rows,
                         index_t cols) {
  if (a.kind == Act::Softmax) {
    parallel_rows(rows, cols, [&](index_t r0, index_t r1) { softmax_backward_rows(y, dy, dx, r0, r1, cols); });
    return;
  }
  parallel_chunks(rows * cols, [&](index_t b, index_t e) {
    bwd_chunk(a.kind, x + b, y + b, dy + b, dx + b, e - b, a.alpha, a.beta);
  });
}

void bias_activation_forward(ActParams a, float* z, float* y, const float* b, index_t rows, index_t cols) {
  if (a.kind == Act::Softmax) {  // row-wise: add the bias, then normalize
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < cols; ++j) z[r * cols + j] += b[j];
    activation_forward(a, z, y, rows, cols);
    return;
  }
  // Elementwise after the bias add: the same bits at any split of the rows.
  parallel_chunks_if(rows * cols >= kParallelThreshold, rows, [&](index_t r0, index_t r1) {
    bias_fwd_chunk(a.kind, z + r0 * cols, y + r0 * cols, b, r1 - r0, cols, a.alpha, a.beta);
  }, 16);
}

// Swish with beta read from *beta: the Act::Swish paths above, so the same
// code (and the same bits) as activation_forward / activation_backward with
// that beta as a number.
void swish_forward(const float* x, float* y, index_t n, const float* beta) {
  activation_forward(ActParams{Act::Swish, 0.0f, *beta}, x, y, 1, n);
}

void swish_backward(const float* x, const float* dy, float* dx, index_t n, const float* beta) {
  // Swish's derivative reads x only: x stands in for the unused y.
  activation_backward(ActParams{Act::Swish, 0.0f, *beta}, x, x, dy, dx, 1, n);
}

namespace {

// dL/dbeta = sum_i dy_i x_i^2 s_i (1 - s_i), s_i = sigmoid(beta x_i).
//
// Each term in float (swish_beta_grad_term in ops/activations.h: no 1 - s
// cancellation); a term is within a few float ulps of its exact value (plus
// the rounding of beta x, as in any float sigmoid). The terms are summed in double, in a fixed
// order that depends on n only: 8 lanes per block of kBetaGradBlock elements,
// the lanes in order, then the blocks' partials in block order. Threads take
// whole blocks, so any thread count gives the same bits.
constexpr index_t kBetaGradBlock = 4096;

// Sum of the terms of x[0, n), n <= kBetaGradBlock.
DC_MULTIVERSION double swish_beta_grad_block(const float* __restrict x, const float* __restrict dy, index_t n,
                                             float beta) {
  // Terms in runs of kRun (in L1), each added to lane i % 8.
  constexpr index_t kRun = 256;
  float term[kRun];
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (index_t r = 0; r < n; r += kRun) {
    const index_t m = std::min(kRun, n - r);
    const float* xr = x + r;
    const float* dyr = dy + r;
#pragma omp simd
    for (index_t i = 0; i < m; ++i) term[i] = swish_beta_grad_term(xr[i], dyr[i], beta);
    index_t i = 0;
    for (; i + 8 <= m; i += 8)
      for (int l = 0; l < 8; ++l) lane[l] += double(term[i + l]);
    for (; i < m; ++i) lane[i % 8] += double(term[i]);
  }
  double sum = 0.0;
  for (int l = 0; l < 8; ++l) sum += lane[l];
  return sum;
}

}  // namespace

void swish_beta_grad(const float* x, const float* dy, index_t n, const float* beta, float* dbeta) {
  const float b = *beta;
  const index_t blocks = (n + kBetaGradBlock - 1) / kBetaGradBlock;
  auto block_sum = [&](index_t k) {
    const index_t i = k * kBetaGradBlock;
    return swish_beta_grad_block(x + i, dy + i, std::min(kBetaGradBlock, n - i), b);
  };
  // The blocks' partials added to 0 in block order, on one thread or several: the same bits.
  const double acc = sum_blocks_in_order(blocks, 0.0, block_sum, n);
  *dbeta = float(acc);
}

}  // namespace deepcore
