// CPU RepeatVector kernels (ops/repeat.h): row copies, and row sums folded
// in repeat order with one vectorizable loop per repeat. Rows are split
// across threads for large tensors; each output element is computed the same
// way at any thread count.
#include "ops/repeat.h"
#include <cstring>
#include "cpu/parallel.h"

namespace deepcore {

void repeat_forward(const float* x, float* y, index_t rows, index_t n, index_t cols) {
  if (rows == 0 || n == 0 || cols == 0) return;
  parallel_chunks_if(rows * n * cols >= kParallelThreshold, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r)
      for (index_t j = 0; j < n; ++j) std::memcpy(y + (r * n + j) * cols, x + r * cols, size_t(cols) * sizeof(float));
  }, 1);
}

DC_MULTIVERSION static void add_row(float* acc, const float* row, index_t cols) {
  for (index_t c = 0; c < cols; ++c) acc[c] += row[c];
}

void repeat_backward(const float* dy, float* dx, index_t rows, index_t n, index_t cols) {
  if (rows == 0 || cols == 0) return;
  if (n == 0) {
    std::memset(dx, 0, size_t(rows * cols) * sizeof(float));
    return;
  }
  parallel_chunks_if(rows * n * cols >= kParallelThreshold, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      float* d = dx + r * cols;
      const float* g = dy + r * n * cols;
      std::memcpy(d, g, size_t(cols) * sizeof(float));
      for (index_t j = 1; j < n; ++j) add_row(d, g + j * cols, cols);
    }
  }, 1);
}

}  // namespace deepcore
