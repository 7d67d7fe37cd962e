// RepeatVector's kernels: each row of a (rows, cols) tensor copied n times,
// into a (rows, n, cols) tensor, and the gradient back:
//   forward   y[r, j, c] = x[r, c]                 for j < n
//   backward  dx[r, c] = dy[r, 0, c] + dy[r, 1, c] + ... + dy[r, n-1, c]
// (added in j order in float on both backends and at any thread count, so
// the CPU and the GPU give the same bits). One declaration for both backends.
#pragma once
#include "ops/common.h"

namespace deepcore {

void repeat_forward(const float* x, float* y, index_t rows, index_t n, index_t cols);
void repeat_backward(const float* dy, float* dx, index_t rows, index_t n, index_t cols);

}  // namespace deepcore
