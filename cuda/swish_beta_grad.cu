// CUDA twin of swish_beta_grad (src/cpu/activations.cpp): the gradient of a
// learnable Swish beta, dL/dbeta = sum_i dy_i x_i^2 s_i (1 - s_i) with
// s_i = sigmoid(beta x_i), each term and the sum in double as on the CPU.
// Fixed-order block sums, then the partials in order (reduce.cuh):
// deterministic; synchronizes (the value comes back to the host).
#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "ops/fastmath.h"
#include "reduce.cuh"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

__global__ void swish_beta_grad_kernel(const float* x, const float* dy, index_t n, float beta, double* partial) {
  __shared__ double shared[kWarpsPerBlock];
  double acc = 0.0;
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    const float s = fast_sigmoid(beta * x[i]);
    acc += double(dy[i]) * x[i] * x[i] * s * (1.0f - s);
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace

double swish_beta_grad(const float* x, const float* dy, index_t n, float beta) {
  if (n == 0) return 0.0;
  const unsigned blocks = blocks_for(n);
  Scratch scratch((size_t(blocks) + 1) * sizeof(double));  // [partial: blocks][total]
  auto* partial = static_cast<double*>(scratch.p);
  swish_beta_grad_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, dy, n, beta, partial);
  check_launch("swish_beta_grad_kernel");
  return sum_partials_to_host(partial, index_t(blocks), partial + blocks, "swish_beta_grad");
}

}  // namespace cuda
}  // namespace deepcore
