// CUDA twin of count_nonfinite (the CPU's is in src/bindings.cpp): how many
// elements are NaN or +-inf, for TerminateOnNaN and the training guard.
// Integer counts, so any order gives the same answer; synchronizes.
#include <cmath>

#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "reduce.cuh"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

__global__ void count_nonfinite_kernel(const float* x, index_t n, long long* partial) {
  __shared__ long long shared[kWarpsPerBlock];
  long long bad = 0;
  for (index_t i = grid_index(); i < n; i += grid_stride()) bad += !isfinite(x[i]);
  bad = block_sum(bad, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = bad;
}

}  // namespace

int64_t count_nonfinite(const float* x, index_t n) {
  if (n == 0) return 0;
  const unsigned blocks = blocks_for(n);
  Scratch scratch((size_t(blocks) + 1) * sizeof(long long));  // [partial: blocks][total]
  auto* partial = static_cast<long long*>(scratch.p);
  count_nonfinite_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, n, partial);
  check_launch("count_nonfinite_kernel");
  return int64_t(sum_partials_to_host(partial, index_t(blocks), partial + blocks, "count_nonfinite"));
}

}  // namespace cuda
}  // namespace deepcore
