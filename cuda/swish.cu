// CUDA twin of the Swish kernels with a learnable beta (src/cpu/activations.cpp:
// swish_forward, swish_backward, swish_beta_grad). beta is read from device
// memory when a kernel runs and dL/dbeta is written to device memory, so
// nothing here waits for the device or touches the host: a training step
// that calls them can be captured as a CUDA graph, and each replay reads the
// beta the optimizer left there.
//
// y = x s and dx = dy (s + beta x s (1 - s)), s = sigmoid(beta x): the inline
// math of ops/activations.h (Act::Swish), as activation_forward_kernel runs it.
//
// dL/dbeta = sum_i dy_i x_i^2 s_i (1 - s_i): each term in float as on the CPU
// (swish_beta_grad_term, ops/activations.h), the sum in double: fixed-order
// block sums, then the partials in order (reduce.cuh), rounded once to float
// into *dbeta. The grid depends on n only, so the same input gives the same
// bits on every run. (The CPU sums in another fixed order: the two agree to a
// tolerance, not bitwise.)
#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "ops/activations.h"
#include "reduce.cuh"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

__global__ void swish_forward_kernel(const float* x, float* y, index_t n, const float* beta) {
  const float b = *beta;
  for (index_t i = grid_index(); i < n; i += grid_stride()) y[i] = act_forward_scalar(Act::Swish, x[i], 0.0f, b);
}

// Swish's derivative reads x only (the y argument of act_backward_scalar is unused).
__global__ void swish_backward_kernel(const float* x, const float* dy, float* dx, index_t n, const float* beta) {
  const float b = *beta;
  for (index_t i = grid_index(); i < n; i += grid_stride())
    dx[i] = act_backward_scalar(Act::Swish, x[i], 0.0f, dy[i], 0.0f, b);
}

// One partial sum per block.
__global__ void swish_beta_grad_kernel(const float* x, const float* dy, index_t n, const float* beta,
                                       double* partial) {
  __shared__ double shared[kWarpsPerBlock];
  const float b = *beta;
  double acc = 0.0;
  for (index_t i = grid_index(); i < n; i += grid_stride()) acc += double(swish_beta_grad_term(x[i], dy[i], b));
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace

void swish_forward(const float* x, float* y, index_t n, const float* beta) {
  if (n == 0) return;
  swish_forward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, n, beta);
  check_launch("swish_forward_kernel");
}

void swish_backward(const float* x, const float* dy, float* dx, index_t n, const float* beta) {
  if (n == 0) return;
  swish_backward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, dy, dx, n, beta);
  check_launch("swish_backward_kernel");
}

void swish_beta_grad(const float* x, const float* dy, index_t n, const float* beta, float* dbeta) {
  // No terms (n == 0): no partials, and the sum writes 0, as on the CPU.
  const unsigned blocks = n > 0 ? blocks_for(n) : 0u;
  Scratch scratch(size_t(blocks) * sizeof(double));
  auto* partial = static_cast<double*>(scratch.p);
  if (blocks > 0) {
    swish_beta_grad_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, dy, n, beta, partial);
    check_launch("swish_beta_grad_kernel");
  }
  sum_partials_kernel<double, float><<<1, kThreads, 0, current_stream()>>>(partial, index_t(blocks), dbeta);
  check_launch("swish_beta_grad");
}

}  // namespace cuda
}  // namespace deepcore
