// Launch geometry shared by the kernels: grid-stride loops over elements, and
// one warp per row for the row-wise ops (softmax, cross-entropy). Every launch
// goes to current_stream() (stream.h): kernel<<<grid, block, 0, current_stream()>>>.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "check.h"
#include "stream.h"
#include "ops/common.h"

namespace deepcore {
namespace cuda {

constexpr int kThreads = 256;                  // threads per block
constexpr int kWarpsPerBlock = kThreads / 32;  // rows per block for row-wise kernels
// Enough blocks to fill any current GPU several times over; grid-stride loops
// cover the rest, so huge tensors never overflow the grid limits.
constexpr index_t kMaxBlocks = index_t(1) << 16;

inline unsigned blocks_for(index_t n_threads) {
  return unsigned(std::min<index_t>((n_threads + kThreads - 1) / kThreads, kMaxBlocks));
}
inline unsigned blocks_for_rows(index_t rows) {
  return unsigned(std::min<index_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxBlocks));
}

// i = first index of this thread, step = the grid's size, both 64-bit.
__device__ __forceinline__ index_t grid_index() { return index_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ index_t grid_stride() { return index_t(gridDim.x) * blockDim.x; }
// Row handled by this warp first, and the stride between this warp's rows.
__device__ __forceinline__ index_t warp_row() { return (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; }
__device__ __forceinline__ index_t warp_row_stride() { return index_t(gridDim.x) * blockDim.x / 32; }

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over a block of kThreads threads, in a fixed order (warp shuffles, then
// warp 0 over the warps' sums): deterministic. Every thread must call it; the
// result is valid in thread 0. `shared` holds kWarpsPerBlock values; the
// leading __syncthreads makes it safe to call again in a loop.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  v = warp_sum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kWarpsPerBlock ? shared[threadIdx.x] : T(0);
    v = warp_sum(v);
  }
  return v;
}
// Maximum that ignores NaN, like std::max(m, x) starting from -inf on the CPU.
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// log(sum_j exp(z_j)) of one row, for the warp that owns it: the row's max m
// (NaN ignored), then m + log(sum exp(z_j - m)) summed in double, as the CPU's
// softmax losses do. Every lane gets the result.
__device__ __forceinline__ double warp_row_logsumexp(const float* z, index_t cols, int lane) {
  float m = -INFINITY;
  for (index_t j = lane; j < cols; j += 32) m = fmaxf(m, z[j]);
  m = warp_max(m);
  double se = 0.0;
  for (index_t j = lane; j < cols; j += 32) se += exp(double(z[j]) - m);
  return double(m) + log(warp_sum(se));
}

}  // namespace cuda
}  // namespace deepcore
