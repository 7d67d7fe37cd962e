// Argument checks of the conv op family, shared by the CPU bindings
// (src/bind/conv.cpp) and the CUDA ones (cuda/module.cpp) so that both accept
// and refuse the same input with the same words.
#pragma once
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "ops/conv.h"

namespace deepcore {
namespace bind {
namespace conv_checks {
namespace py = pybind11;

using Pair = std::array<int64_t, 2>;

inline std::string pair_str(const Pair& p) {
  return "(" + std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")";
}

inline std::string dims_str(const std::vector<py::ssize_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]) + (d.size() == 1 ? "," : "");
  return s + ")";
}

inline bool is_same(const std::string& padding, const char* fn) {
  if (padding == "same") return true;
  if (padding == "valid") return false;
  throw py::value_error(std::string(fn) + ": padding must be 'valid' or 'same', got '" + padding + "'");
}

inline void positive(const Pair& p, const char* fn, const char* name) {
  if (p[0] <= 0 || p[1] <= 0)
    throw py::value_error(std::string(fn) + ": " + name + " must be positive, got " + pair_str(p));
}

// The window geometry of an input of shape x (batch, h, w, c); ValueError for
// another rank, a non-positive size, or an empty output (a "valid" window
// larger than the input).
inline Window2D window_of(const std::vector<py::ssize_t>& x, const char* name, const Pair& kernel,
                          const Pair& strides, const Pair& dilation, const std::string& padding, const char* fn) {
  if (x.size() != 4)
    throw py::value_error(std::string(fn) + ": " + name +
                          " must be a 4-D (batch, height, width, channels) tensor, got shape " + dims_str(x));
  positive(kernel, fn, "the window size");
  positive(strides, fn, "strides");
  positive(dilation, fn, "dilation_rate");
  const bool same = is_same(padding, fn);
  Window2D g = make_window2d(x[0], x[1], x[2], x[3], kernel[0], kernel[1], strides[0], strides[1], dilation[0],
                             dilation[1], same);
  if (g.oh <= 0 || g.ow <= 0)
    throw py::value_error(std::string(fn) + ": the window " + pair_str(kernel) + " (dilation " + pair_str(dilation) +
                          ") is larger than the input's " + std::to_string(g.h) + "x" + std::to_string(g.w) +
                          " pixels with padding='valid'; use padding='same' or a smaller window");
  if (g.h * g.w > INT32_MAX)
    throw py::value_error(std::string(fn) + ": images of more than 2^31 pixels are not supported");
  return g;
}

// The expected (batch, h, w, c) or (batch, oh, ow, c) shape.
inline std::vector<py::ssize_t> nhwc(const Window2D& g, index_t c, bool output) {
  return {g.batch, output ? g.oh : g.h, output ? g.ow : g.w, c};
}

inline void check_kernel_rank(const std::vector<py::ssize_t>& w, const char* fn) {
  if (w.size() != 4)
    throw py::value_error(std::string(fn) + ": w must be a 4-D (kh, kw, in_channels, filters) kernel, got shape " +
                          dims_str(w));
}

inline Pool pool_mode(const std::string& mode, const char* fn) {
  if (mode == "max") return Pool::Max;
  if (mode == "avg") return Pool::Avg;
  throw py::value_error(std::string(fn) + ": mode must be 'max' or 'avg', got '" + mode + "'");
}

inline std::tuple<index_t, index_t, index_t, index_t> padding4(const std::array<Pair, 2>& p, const char* fn) {
  for (const Pair& q : p)
    if (q[0] < 0 || q[1] < 0)
      throw py::value_error(std::string(fn) + ": padding must be non-negative, got (" + pair_str(p[0]) + ", " +
                            pair_str(p[1]) + ")");
  return {p[0][0], p[0][1], p[1][0], p[1][1]};
}

inline std::string missing_argmax(const char* fn, bool forward) {
  return std::string(fn) + (forward ? ": max pooling needs an int32 argmax buffer of y's shape"
                                    : ": max pooling needs the forward's argmax");
}

}  // namespace conv_checks
}  // namespace bind
}  // namespace deepcore
