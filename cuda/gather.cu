// CUDA twin of gather_rows (src/cpu/gather.cpp): dst[i, :] = src[idx[i], :],
// the batch assembly of Model.fit with the data resident on the GPU. The
// indices are a HOST array (the shuffled order comes from philox_permutation,
// which runs on the host): they are checked there with the CPU's words before
// anything is queued, then uploaded with the call. One thread per 4-byte word
// of the output (every dtype deepcore stores is 4 or 8 bytes wide).
#include <string>

#include "allocator.h"
#include "check.h"
#include "kernels.h"
#include "graph.h"
#include "launch.cuh"
#include "ops/gather.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

__global__ void gather_rows_kernel(const uint32_t* src, const int64_t* idx, index_t n, index_t row_words,
                                   uint32_t* dst) {
  for (index_t i = grid_index(); i < n * row_words; i += grid_stride()) {
    const index_t r = i / row_words, w = i % row_words;
    dst[i] = src[idx[r] * row_words + w];
  }
}

}  // namespace

void gather_rows(const void* src, index_t src_rows, size_t row_bytes, const int64_t* idx, index_t n, void* dst) {
  check_gather_indices(idx, n, src_rows);
  // The indices come from pageable host memory: a graph would replay a copy
  // from an address the caller no longer owns.
  ensure_not_capturing("gather_rows", "it uploads host indices with each call");
  if (n == 0 || row_bytes == 0) return;
  if (row_bytes % 4 != 0)
    throw InvalidInput("gather_rows: rows of " + std::to_string(row_bytes) + " bytes (the CUDA twin copies whole "
                       "4-byte words)");
  Scratch scratch(size_t(n) * sizeof(int64_t));
  auto* didx = static_cast<int64_t*>(scratch.p);
  // A pageable source: the copy returns once the indices are staged, so the caller may free them.
  check(cudaMemcpyAsync(didx, idx, size_t(n) * sizeof(int64_t), cudaMemcpyHostToDevice, current_stream()),
        "gather_rows: cudaMemcpyAsync");
  const index_t row_words = index_t(row_bytes / 4);
  gather_rows_kernel<<<blocks_for(n * row_words), kThreads, 0, current_stream()>>>(
      static_cast<const uint32_t*>(src), didx, n, row_words, static_cast<uint32_t*>(dst));
  check_launch("gather_rows_kernel");
}

}  // namespace cuda
}  // namespace deepcore
