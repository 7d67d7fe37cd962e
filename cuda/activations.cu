// CUDA activations: the twin of src/cpu/activations.cpp. The scalar math is the
// same inline code (ops/activations.h, ops/fastmath.h), one thread per element
// instead of one loop iteration per element; softmax is one warp per row.
#include <cmath>

#include "kernels.h"
#include "launch.cuh"
#include "ops/activations.h"

namespace deepcore {
namespace cuda {
namespace {

// y = f(x); the switch on `kind` is uniform across the grid, so it does not diverge.
__global__ void activation_forward_kernel(Act kind, const float* x, float* y, index_t n, float alpha, float beta) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) y[i] = act_forward_scalar(kind, x[i], alpha, beta);
}

// dx = f'(x) dy, from x or y (whichever the derivative is cheaper from).
__global__ void activation_backward_kernel(Act kind, const float* x, const float* y, const float* dy, float* dx,
                                           index_t n, float alpha, float beta) {
  for (index_t i = grid_index(); i < n; i += grid_stride())
    dx[i] = act_backward_scalar(kind, x[i], y[i], dy[i], alpha, beta);
}

// softmax(x)_j = e^{x_j - max x} / sum_k e^{x_k - max x}, one warp per row.
// x == y is allowed: each lane reads x_j before writing y_j.
__global__ void softmax_forward_kernel(const float* x, float* y, index_t rows, index_t cols) {
  const int lane = threadIdx.x % 32;
  for (index_t r = warp_row(); r < rows; r += warp_row_stride()) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = -INFINITY;
    for (index_t j = lane; j < cols; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max(m);
    float s = 0.0f;
    for (index_t j = lane; j < cols; j += 32) {
      const float e = fast_exp(xr[j] - m);
      yr[j] = e;
      s += e;
    }
    const float inv = 1.0f / warp_sum(s);
    for (index_t j = lane; j < cols; j += 32) yr[j] *= inv;
  }
}

// dx_j = y_j (dy_j - sum_k dy_k y_k), one warp per row. dx == dy is allowed.
__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, index_t rows, index_t cols) {
  const int lane = threadIdx.x % 32;
  for (index_t r = warp_row(); r < rows; r += warp_row_stride()) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    float dot = 0.0f;
    for (index_t j = lane; j < cols; j += 32) dot += gr[j] * yr[j];
    dot = warp_sum(dot);
    for (index_t j = lane; j < cols; j += 32) dr[j] = yr[j] * (gr[j] - dot);
  }
}

}  // namespace

void activation_forward(ActParams a, const float* x, float* y, index_t rows, index_t cols) {
  const index_t n = rows * cols;
  if (n == 0) return;
  if (a.kind == Act::Softmax) {
    softmax_forward_kernel<<<blocks_for_rows(rows), kThreads, 0, current_stream()>>>(x, y, rows, cols);
    check_launch("softmax_forward_kernel");
    return;
  }
  activation_forward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(a.kind, x, y, n, a.alpha, a.beta);
  check_launch("activation_forward_kernel");
}

void activation_backward(ActParams a, const float* x, const float* y, const float* dy, float* dx, index_t rows,
                         index_t cols) {
  const index_t n = rows * cols;
  if (n == 0) return;
  if (a.kind == Act::Softmax) {
    softmax_backward_kernel<<<blocks_for_rows(rows), kThreads, 0, current_stream()>>>(y, dy, dx, rows, cols);
    check_launch("softmax_backward_kernel");
    return;
  }
  activation_backward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(a.kind, x, y, dy, dx, n, a.alpha,
                                                                               a.beta);
  check_launch("activation_backward_kernel");
}

}  // namespace cuda
}  // namespace deepcore
