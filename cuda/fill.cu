// One value everywhere: one thread per element, grid-stride.
#include <cuda_runtime.h>

#include "fill.h"
#include "launch.cuh"

namespace deepcore {
namespace cuda {
namespace {

template <class T>
__global__ void fill_kernel(T* dst, index_t n, T value) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) dst[i] = value;
}

}  // namespace

void fill(void* dst, index_t n, size_t itemsize, uint64_t bits) {
  if (n == 0) return;
  if (bits == 0) {
    check(cudaMemsetAsync(dst, 0, size_t(n) * itemsize, current_stream()), "fill: cudaMemsetAsync");
    return;
  }
  if (itemsize == 4) {
    fill_kernel<uint32_t><<<blocks_for(n), kThreads, 0, current_stream()>>>(static_cast<uint32_t*>(dst), n,
                                                                            uint32_t(bits));
  } else {
    fill_kernel<uint64_t><<<blocks_for(n), kThreads, 0, current_stream()>>>(static_cast<uint64_t*>(dst), n, bits);
  }
  check_launch("fill_kernel");
}

}  // namespace cuda
}  // namespace deepcore
