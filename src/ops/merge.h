// Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum) and
// Concatenate: k input tensors into one. One declaration for both backends.
//
// Elementwise merges read k tensors of n floats each, all of one shape:
//   add       y = x_0 + x_1 + ... + x_{k-1}        (added left to right)
//   subtract  y = x_0 - x_1                        (k = 2)
//   multiply  y = x_0 x_1 ... x_{k-1}              (multiplied left to right)
//   average   y = (x_0 + ... + x_{k-1}) / k        (the sum as add, then divided by k)
//   maximum   y = max_i x_i,  minimum  y = min_i x_i
// and their gradients, dx_i = dy dy/dx_i:
//   add       dx_i = dy;  subtract dx_0 = dy, dx_1 = -dy;  average dx_i = dy / k
//   multiply  dx_i = dy prod_{j != i} x_j, without dividing by x_i (zeros are
//             fine): dx_i = (x_0 ... x_{i-1}) (dy x_{k-1} ... x_{i+1}), the
//             prefix product times the suffix product started from dy.
//   maximum / minimum: dx_i = dy for the input that won, 0 for the others.
//             The winner of an element is the first input holding a NaN there
//             if any (the output is that NaN, as np.maximum gives), else the
//             first input holding the extreme value: on ties the gradient
//             goes to the lowest-numbered input, all of it (never split).
// Every output element is computed from its own inputs in this fixed order on
// both backends and at any thread count, so the results are the same bits on
// the CPU (1 or many threads) and on the GPU (no fused multiply-add can
// contract any of these expressions).
//
// Concatenate: input i viewed as (rows, cols_i) (rows: the product of the axes
// before the concatenation axis; cols_i: the concatenation axis times the
// axes after it) fills columns [off_i, off_i + cols_i) of y viewed as
// (rows, sum_i cols_i), off_i = cols_0 + ... + cols_{i-1}; backward copies
// those columns of dy back into dx_i.
#pragma once
#include <cstdint>
#include "ops/common.h"

namespace deepcore {

enum class MergeOp : int { Add = 0, Subtract = 1, Multiply = 2, Average = 3, Maximum = 4, Minimum = 5 };
constexpr int kNumMergeOps = 6;

// The most inputs one merge or concatenate call takes: the CUDA kernels get
// the k pointers in their launch arguments (a fixed-size table, no upload).
constexpr int kMaxMergeInputs = 64;

// Whether x takes the place of the current winner `best` of maximum (minimum
// when !is_max): the winner keeps its place unless it is a number and x is a
// NaN or strictly beyond it (ties and later NaNs keep the earlier input).
DC_HD bool merge_takes(bool is_max, float best, float x) {
  const bool best_is_number = best == best;
  const bool beyond = is_max ? x > best : x < best;
  return best_is_number && (beyond || x != x);
}

// y = op(xs[0], ..., xs[k-1]) over n elements (k >= 1; k == 2 for subtract).
// y may be xs[0] (no other x).
void merge_forward(MergeOp op, const float* const* xs, int k, float* y, index_t n);
// dxs[i] = the gradient for input i, for each i with dxs[i] non-null. xs are
// read by multiply, maximum and minimum only (may be null for the others).
// No dxs[i] may alias dy or an x.
void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs, index_t n);

// y[r, off_i + c] = xs[i][r, c] for c < cols[i]; y has rows x sum(cols) elements.
void concatenate_forward(const float* const* xs, const index_t* cols, int k, float* y, index_t rows);
// dxs[i][r, c] = dy[r, off_i + c], for each i with dxs[i] non-null.
void concatenate_backward(const float* dy, const index_t* cols, int k, float* const* dxs, index_t rows);

}  // namespace deepcore
