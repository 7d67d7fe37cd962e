// The argument rules of the merge and concatenate bindings, shared by the CPU
// (src/bind/merge.cpp) and CUDA (cuda/merge_bindings.cpp) modules: each backend
// turns its tensors into TensorRefs (after its own dtype, contiguity and device
// checks), and everything about shapes, counts and axes is decided here, once,
// with the same words on both.
#pragma once
#include <pybind11/pybind11.h>

#include <array>
#include <string>
#include <vector>

#include "ops/merge.h"

namespace deepcore {
namespace bind {
namespace py = pybind11;

// A checked float32 tensor: its shape (and how messages print it) and data.
// present == false for an optional argument given as None.
struct TensorRef {
  std::vector<index_t> shape;
  std::string shape_str;
  float* data = nullptr;
  bool present = false;
};

inline std::string item_name(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

inline MergeOp merge_op(int kind, const char* fn) {
  if (kind < 0 || kind >= kNumMergeOps)
    throw py::value_error(std::string(fn) + ": unknown merge code " + std::to_string(kind) +
                          " (0 add, 1 subtract, 2 multiply, 3 average, 4 maximum, 5 minimum)");
  return MergeOp(kind);
}

// 1 .. kMaxMergeInputs inputs (exactly 2 for subtract).
inline void check_input_count(size_t k, const char* fn, bool subtract = false) {
  if (subtract && k != 2)
    throw py::value_error(std::string(fn) + ": subtract takes exactly 2 inputs, got " + std::to_string(k));
  if (k < 1 || k > size_t(kMaxMergeInputs))
    throw py::value_error(std::string(fn) + ": xs must hold 1 to " + std::to_string(kMaxMergeInputs) +
                          " tensors, got " + std::to_string(k));
}

inline void check_same_shape(const TensorRef& a, const TensorRef& b, const char* fn, const std::string& an,
                             const std::string& bn) {
  if (a.shape != b.shape)
    throw py::value_error(std::string(fn) + ": " + bn + " must have the shape of " + an + " " + a.shape_str +
                          ", got " + b.shape_str);
}

inline index_t element_count(const TensorRef& t) {
  index_t n = 1;
  for (index_t d : t.shape) n *= d;
  return n;
}

// Pointer tables of one call, in the form the kernels take.
struct MergeArgs {
  std::array<const float*, kMaxMergeInputs> xs{};
  std::array<float*, kMaxMergeInputs> dxs{};
  std::array<index_t, kMaxMergeInputs> cols{};
  int k = 0;
  index_t n = 0;  // elements per tensor (merges) or rows (concatenate)
};

// merge_forward(kind, xs, y): every x and y of xs[0]'s shape.
inline MergeArgs merge_forward_args(MergeOp op, const std::vector<TensorRef>& xs, const TensorRef& y, const char* fn) {
  check_input_count(xs.size(), fn, op == MergeOp::Subtract);
  MergeArgs a;
  a.k = int(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i) check_same_shape(xs[0], xs[i], fn, "xs[0]", item_name("xs", i));
    a.xs[i] = xs[i].data;
  }
  check_same_shape(xs[0], y, fn, "xs[0]", "y");
  a.n = element_count(y);
  return a;
}

// merge_backward(kind, xs, dy, dxs): len(dxs) == len(xs); dy and every dx given of xs[0]'s shape.
inline MergeArgs merge_backward_args(MergeOp op, const std::vector<TensorRef>& xs, const TensorRef& dy,
                                     const std::vector<TensorRef>& dxs, const char* fn) {
  check_input_count(xs.size(), fn, op == MergeOp::Subtract);
  if (dxs.size() != xs.size())
    throw py::value_error(std::string(fn) + ": dxs must hold one entry (a tensor or None) per input, " +
                          std::to_string(xs.size()) + ", got " + std::to_string(dxs.size()));
  MergeArgs a;
  a.k = int(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i) check_same_shape(xs[0], xs[i], fn, "xs[0]", item_name("xs", i));
    a.xs[i] = xs[i].data;
  }
  check_same_shape(xs[0], dy, fn, "xs[0]", "dy");
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (!dxs[i].present) continue;
    check_same_shape(xs[0], dxs[i], fn, "xs[0]", item_name("dxs", i));
    a.dxs[i] = dxs[i].data;
  }
  a.n = element_count(dy);
  return a;
}

// The concatenation view of xs along `axis` (negative counts from the end):
// every x of one rank >= 1 and equal outside the axis; y (or dy) their
// concatenation. Fills cols and n (rows).
inline MergeArgs concatenate_args(const std::vector<TensorRef>& xs, const TensorRef& y, int axis, const char* fn,
                                  const char* y_name) {
  check_input_count(xs.size(), fn);
  const int rank = int(xs[0].shape.size());
  if (rank < 1) throw py::value_error(std::string(fn) + ": xs[0] must have at least one dimension, got ()");
  if (axis < -rank || axis >= rank)
    throw py::value_error(std::string(fn) + ": axis " + std::to_string(axis) + " is out of range for tensors of " +
                          std::to_string(rank) + " dimensions");
  const size_t ax = size_t(axis < 0 ? axis + rank : axis);
  MergeArgs a;
  a.k = int(xs.size());
  std::vector<index_t> want = xs[0].shape;
  want[ax] = 0;
  index_t rows = 1, inner = 1;
  for (size_t d = 0; d < ax; ++d) rows *= xs[0].shape[d];
  for (size_t d = ax + 1; d < size_t(rank); ++d) inner *= xs[0].shape[d];
  for (size_t i = 0; i < xs.size(); ++i) {
    bool ok = xs[i].shape.size() == size_t(rank);
    for (size_t d = 0; ok && d < size_t(rank); ++d) ok = d == ax || xs[i].shape[d] == xs[0].shape[d];
    if (!ok)
      throw py::value_error(std::string(fn) + ": " + item_name("xs", i) + " " + xs[i].shape_str +
                            " must match xs[0] " + xs[0].shape_str + " on every axis but axis " +
                            std::to_string(axis));
    want[ax] += xs[i].shape[ax];
    a.xs[i] = xs[i].data;
    a.cols[i] = xs[i].shape[ax] * inner;
  }
  if (y.shape != want) {
    std::string s = "(";
    for (size_t d = 0; d < want.size(); ++d) s += (d ? ", " : "") + std::to_string(want[d]) + (want.size() == 1 ? "," : "");
    throw py::value_error(std::string(fn) + ": " + y_name + " must have shape " + s + ") (the inputs joined on axis " +
                          std::to_string(axis) + "), got " + y.shape_str);
  }
  a.n = rows;
  return a;
}

// concatenate_backward(xs, dy, dxs, axis): as concatenate_args for dy, and each dx given of its x's shape.
inline MergeArgs concatenate_backward_args(const std::vector<TensorRef>& xs, const TensorRef& dy,
                                           const std::vector<TensorRef>& dxs, int axis, const char* fn) {
  MergeArgs a = concatenate_args(xs, dy, axis, fn, "dy");
  if (dxs.size() != xs.size())
    throw py::value_error(std::string(fn) + ": dxs must hold one entry (a tensor or None) per input, " +
                          std::to_string(xs.size()) + ", got " + std::to_string(dxs.size()));
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (!dxs[i].present) continue;
    check_same_shape(xs[i], dxs[i], fn, item_name("xs", i), item_name("dxs", i));
    a.dxs[i] = dxs[i].data;
  }
  return a;
}

// RepeatVector: x (rows, cols) and y (rows, n, cols); returns n. `x_name`
// and `y_name` name the two in messages (x, y forward; dx, dy backward).
inline index_t repeat_count(const TensorRef& x, const TensorRef& y, const char* fn, const char* x_name,
                            const char* y_name) {
  if (x.shape.size() != 2)
    throw py::value_error(std::string(fn) + ": " + x_name + " must have shape (rows, cols), got " + x.shape_str);
  if (y.shape.size() != 3 || y.shape[0] != x.shape[0] || y.shape[2] != x.shape[1])
    throw py::value_error(std::string(fn) + ": " + y_name + " must have shape (" + std::to_string(x.shape[0]) +
                          ", n, " + std::to_string(x.shape[1]) + ") for " + x_name + " " + x.shape_str + ", got " +
                          y.shape_str);
  return y.shape[1];
}

}  // namespace bind
}  // namespace deepcore
