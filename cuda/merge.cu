// CUDA merge, concatenate and repeat kernels: the twin of src/cpu/merge.cpp
// and src/cpu/repeat.cpp, one
// thread per element where the CPU has one loop iteration per element. Each
// element folds its inputs in the CPU's order (ops/merge.h), and none of the
// expressions can be contracted into a fused multiply-add, so the results are
// the CPU's bits.
//
// The k input (and gradient) pointers travel in the launch arguments, a
// fixed table of kMaxMergeInputs entries passed by value (2 KiB at most, under
// the 4 KiB argument limit): no upload, nothing to free, capturable.
#include "kernels.h"
#include "launch.cuh"
#include "ops/merge.h"
#include "ops/repeat.h"

namespace deepcore {
namespace cuda {
namespace {

struct MergeTable {
  const float* x[kMaxMergeInputs];
  float* dx[kMaxMergeInputs];
};

struct ConcatTable {
  const float* x[kMaxMergeInputs];
  float* dx[kMaxMergeInputs];
  index_t cols[kMaxMergeInputs];  // elements of one row of input i
  index_t off[kMaxMergeInputs];   // where they start in a row of y
};

// y = op(x_0, ..., x_{k-1}), folded left to right as on the CPU.
__global__ void merge_forward_kernel(MergeOp op, MergeTable t, int k, float* y, index_t n) {
  for (index_t e = grid_index(); e < n; e += grid_stride()) {
    float v = t.x[0][e];
    switch (op) {
      case MergeOp::Add:
      case MergeOp::Average:
        for (int i = 1; i < k; ++i) v += t.x[i][e];
        if (op == MergeOp::Average) v /= float(k);
        break;
      case MergeOp::Subtract: v -= t.x[1][e]; break;
      case MergeOp::Multiply:
        for (int i = 1; i < k; ++i) v *= t.x[i][e];
        break;
      case MergeOp::Maximum:
      case MergeOp::Minimum: {
        const bool is_max = op == MergeOp::Maximum;
        for (int i = 1; i < k; ++i) {
          const float x = t.x[i][e];
          v = merge_takes(is_max, v, x) ? x : v;
        }
        break;
      }
    }
    y[e] = v;
  }
}

// dx_i for every i with t.dx[i] set (ops/merge.h gives each rule).
__global__ void merge_backward_kernel(MergeOp op, MergeTable t, int k, const float* dy, index_t n) {
  for (index_t e = grid_index(); e < n; e += grid_stride()) {
    const float g = dy[e];
    switch (op) {
      case MergeOp::Add:
        for (int i = 0; i < k; ++i)
          if (t.dx[i]) t.dx[i][e] = g;
        break;
      case MergeOp::Subtract:
        if (t.dx[0]) t.dx[0][e] = g;
        if (t.dx[1]) t.dx[1][e] = -g;
        break;
      case MergeOp::Average:
        for (int i = 0; i < k; ++i)
          if (t.dx[i]) t.dx[i][e] = g / float(k);
        break;
      case MergeOp::Multiply: {
        // dx_i = (x_0 ... x_{i-1}) (dy x_{k-1} ... x_{i+1}): the prefix
        // products are stored in the dx_i, then multiplied by the suffixes.
        float acc = 1.0f;
        for (int i = 0; i < k - 1; ++i) {
          if (t.dx[i]) t.dx[i][e] = acc;
          acc *= t.x[i][e];
        }
        if (t.dx[k - 1]) t.dx[k - 1][e] = acc;
        acc = g;
        for (int i = k - 1; i >= 0; --i) {
          if (t.dx[i]) t.dx[i][e] *= acc;
          if (i > 0) acc *= t.x[i][e];
        }
        break;
      }
      case MergeOp::Maximum:
      case MergeOp::Minimum: {
        const bool is_max = op == MergeOp::Maximum;
        float best = t.x[0][e];
        int win = 0;
        for (int i = 1; i < k; ++i) {
          const float x = t.x[i][e];
          if (merge_takes(is_max, best, x)) best = x, win = i;
        }
        for (int i = 0; i < k; ++i)
          if (t.dx[i]) t.dx[i][e] = win == i ? g : 0.0f;
        break;
      }
    }
  }
}

// Input blockIdx.y: its element (r, c) goes to y[r, off + c] (backward: back).
__global__ void concatenate_forward_kernel(ConcatTable t, float* y, index_t rows, index_t total) {
  const int i = blockIdx.y;
  const index_t cols = t.cols[i], n = rows * cols;
  const float* x = t.x[i];
  float* yo = y + t.off[i];
  for (index_t e = grid_index(); e < n; e += grid_stride()) {
    const index_t r = e / cols;
    yo[r * total + (e - r * cols)] = x[e];
  }
}

__global__ void concatenate_backward_kernel(ConcatTable t, const float* dy, index_t rows, index_t total) {
  const int i = blockIdx.y;
  float* dx = t.dx[i];
  if (!dx) return;
  const index_t cols = t.cols[i], n = rows * cols;
  const float* go = dy + t.off[i];
  for (index_t e = grid_index(); e < n; e += grid_stride()) {
    const index_t r = e / cols;
    dx[e] = go[r * total + (e - r * cols)];
  }
}

// y[r, j, c] = x[r, c], one thread per element of y.
__global__ void repeat_forward_kernel(const float* x, float* y, index_t rows, index_t n, index_t cols) {
  const index_t total = rows * n * cols;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t r = e / (n * cols), c = e % cols;
    y[e] = x[r * cols + c];
  }
}

// dx[r, c] = dy[r, 0, c] + ... + dy[r, n-1, c], in j order as on the CPU; one thread per element of dx.
__global__ void repeat_backward_kernel(const float* dy, float* dx, index_t rows, index_t n, index_t cols) {
  for (index_t e = grid_index(); e < rows * cols; e += grid_stride()) {
    const index_t r = e / cols, c = e - r * cols;
    const float* g = dy + r * n * cols + c;
    float acc = n > 0 ? g[0] : 0.0f;
    for (index_t j = 1; j < n; ++j) acc += g[j * cols];
    dx[e] = acc;
  }
}

MergeTable merge_table(const float* const* xs, float* const* dxs, int k) {
  MergeTable t{};
  for (int i = 0; i < k; ++i) {
    t.x[i] = xs ? xs[i] : nullptr;
    t.dx[i] = dxs ? dxs[i] : nullptr;
  }
  return t;
}

// The table of a concatenation, its row width and its widest input.
ConcatTable concat_table(const float* const* xs, float* const* dxs, const index_t* cols, int k, index_t* total,
                         index_t* widest) {
  ConcatTable t{};
  *total = *widest = 0;
  for (int i = 0; i < k; ++i) {
    t.x[i] = xs ? xs[i] : nullptr;
    t.dx[i] = dxs ? dxs[i] : nullptr;
    t.cols[i] = cols[i];
    t.off[i] = *total;
    *total += cols[i];
    *widest = cols[i] > *widest ? cols[i] : *widest;
  }
  return t;
}

}  // namespace

void merge_forward(MergeOp op, const float* const* xs, int k, float* y, index_t n) {
  if (n == 0) return;
  merge_forward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(op, merge_table(xs, nullptr, k), k, y, n);
  check_launch("merge_forward_kernel");
}

void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs, index_t n) {
  bool any = false;
  for (int i = 0; i < k; ++i) any = any || dxs[i] != nullptr;
  if (n == 0 || !any) return;
  merge_backward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(op, merge_table(xs, dxs, k), k, dy, n);
  check_launch("merge_backward_kernel");
}

void concatenate_forward(const float* const* xs, const index_t* cols, int k, float* y, index_t rows) {
  index_t total, widest;
  const ConcatTable t = concat_table(xs, nullptr, cols, k, &total, &widest);
  if (rows == 0 || widest == 0) return;
  const dim3 grid(blocks_for(rows * widest), unsigned(k));
  concatenate_forward_kernel<<<grid, kThreads, 0, current_stream()>>>(t, y, rows, total);
  check_launch("concatenate_forward_kernel");
}

void concatenate_backward(const float* dy, const index_t* cols, int k, float* const* dxs, index_t rows) {
  index_t total, widest;
  const ConcatTable t = concat_table(nullptr, dxs, cols, k, &total, &widest);
  if (rows == 0 || widest == 0) return;
  const dim3 grid(blocks_for(rows * widest), unsigned(k));
  concatenate_backward_kernel<<<grid, kThreads, 0, current_stream()>>>(t, dy, rows, total);
  check_launch("concatenate_backward_kernel");
}

void repeat_forward(const float* x, float* y, index_t rows, index_t n, index_t cols) {
  const index_t total = rows * n * cols;
  if (total == 0) return;
  repeat_forward_kernel<<<blocks_for(total), kThreads, 0, current_stream()>>>(x, y, rows, n, cols);
  check_launch("repeat_forward_kernel");
}

void repeat_backward(const float* dy, float* dx, index_t rows, index_t n, index_t cols) {
  if (rows * cols == 0) return;
  repeat_backward_kernel<<<blocks_for(rows * cols), kThreads, 0, current_stream()>>>(dy, dx, rows, n, cols);
  check_launch("repeat_backward_kernel");
}

}  // namespace cuda
}  // namespace deepcore
