// Bindings for the dropout family (dropout, alpha dropout, the scaled mask),
// RReLU and PReLU. A random call is keyed by (seed, stream, call); see
// src/ops/dropout.h for how the key maps to Philox counters.
#include <cmath>
#include <string>
#include <vector>

#include "bind/common.h"
#include "bind/shared_checks.h"
#include "ops/dropout.h"

namespace deepcore {
namespace bind {

namespace {



// An optional keep bitmask for n elements: an int32 array of (n + 31) / 32
// words (bit k of word w: element 32 w + k kept), or None.
std::pair<py::array, uint32_t*> optional_keep_bits(py::object obj, index_t n, const char* fn, bool writable) {
  if (obj.is_none()) return {py::array(), nullptr};
  py::array a = checked<int32_t>(obj, fn, "mask", writable);
  expect_shape(a, {py::ssize_t(keep_bits_words(n))}, fn, "mask");
  // Backward only reads the mask: a read-only array is fine there.
  uint32_t* p = writable ? static_cast<uint32_t*>(a.mutable_data())
                         : const_cast<uint32_t*>(static_cast<const uint32_t*>(a.data()));
  return {a, p};
}

PreluView prelu_view(const py::array& x, const py::array& alpha, const char* fn) {
  return prelu_view_of(std::vector<index_t>(x.shape(), x.shape() + x.ndim()),
                       std::vector<index_t>(alpha.shape(), alpha.shape() + alpha.ndim()), shape_str(x),
                       shape_str(alpha), fn);
}

// Dropout and alpha dropout share their bindings (as the CUDA ones do):
// forward (x, y, rate, key, optional keep mask to fill) and backward (dy, dx,
// rate, key, optional keep mask to read instead of regenerating the draws).
using KeepMaskForward = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, uint32_t, uint32_t*);
using KeepMaskBackward = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, uint32_t);
using KeepBitsBackward = void (*)(const float*, float*, index_t, float, const uint32_t*);

void def_keep_mask_forward(py::module_& m, const char* fn, KeepMaskForward kernel, const char* doc) {
  m.def(fn, [fn, kernel](py::handle x_, py::handle y_, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                         py::object mask_) {
    check_rate(rate, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    same_shape(x, y, fn, "x", "y");
    auto [mask, bits] = optional_keep_bits(mask_, index_t(x.size()), fn, true);
    py::gil_scoped_release nogil;
    kernel(cptr<float>(x), ptr<float>(y), index_t(x.size()), rate, seed, stream, call, bits);
  }, py::arg("x"), py::arg("y"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     py::arg("mask") = py::none(), doc);
}

void def_keep_mask_backward(py::module_& m, const char* fn, KeepMaskBackward regenerate, KeepBitsBackward from_bits,
                            const char* doc) {
  m.def(fn, [fn, regenerate, from_bits](py::handle dy_, py::handle dx_, float rate, uint64_t seed, uint64_t stream,
                                        uint32_t call, py::object mask_) {
    check_rate(rate, fn);
    py::array dy = checked<float>(dy_, fn, "dy"), dx = checked<float>(dx_, fn, "dx", true);
    same_shape(dy, dx, fn, "dy", "dx");
    const index_t n = index_t(dy.size());
    auto [mask, bits] = optional_keep_bits(mask_, n, fn, false);
    py::gil_scoped_release nogil;
    if (bits) from_bits(cptr<float>(dy), ptr<float>(dx), n, rate, bits);
    else regenerate(cptr<float>(dy), ptr<float>(dx), n, rate, seed, stream, call);
  }, py::arg("dy"), py::arg("dx"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     py::arg("mask") = py::none(), doc);
}

}  // namespace

void bind_dropout(py::module_& m) {
  // ---------------------------------------------------------------- dropout
  def_keep_mask_forward(m, "dropout_forward", &dropout_forward,
                        "Inverted dropout: y = x / (1 - rate) where kept, 0 where dropped. y may be x. mask (int32, "
                        "(n + 31) // 32 words, optional) receives the keep bits for backward.");
  def_keep_mask_backward(m, "dropout_backward", &dropout_backward, &dropout_backward_bits,
                         "dx = dy * mask: the forward's mask read from its keep bits, or regenerated from the key "
                         "when mask is None.");

  m.def("dropout_mask", [](py::handle mask_, float rate, uint64_t seed, uint64_t stream, uint32_t call) {
    const char* fn = "dropout_mask";
    check_rate(rate, fn);
    py::array mask = checked<float>(mask_, fn, "mask", true);
    py::gil_scoped_release nogil;
    dropout_mask(ptr<float>(mask), index_t(mask.size()), rate, seed, stream, call);
  }, py::arg("mask"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     "The scaled mask of the same key: 1 / (1 - rate) where kept, 0 where dropped.");

  def_keep_mask_forward(m, "alpha_dropout_forward", &alpha_dropout_forward,
                        "Alpha dropout: y = a x + b where kept, a alpha' + b where dropped (mask as in "
                        "dropout_forward).");
  def_keep_mask_backward(m, "alpha_dropout_backward", &alpha_dropout_backward, &alpha_dropout_backward_bits,
                         "dx = a dy where kept, 0 where dropped (from the keep bits, or regenerated).");

  m.def("_set_philox_simd", &set_philox_simd, py::arg("enabled"),
        "Testing hook: use the AVX2 (True, the default where supported) or the scalar Philox for the "
        "dropout family and RReLU. Returns the previous setting.");

  // ------------------------------------------------------------------ RReLU
  m.def("rrelu_forward", [](py::handle x_, py::handle y_, float lower, float upper, bool training, uint64_t seed,
                            uint64_t stream, uint32_t call) {
    const char* fn = "rrelu_forward";
    check_bounds(lower, upper, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    same_shape(x, y, fn, "x", "y");
    py::gil_scoped_release nogil;
    rrelu_forward(cptr<float>(x), ptr<float>(y), index_t(x.size()), lower, upper, training, seed, stream, call);
  }, py::arg("x"), py::arg("y"), py::arg("lower"), py::arg("upper"), py::arg("training"), py::arg("seed") = 0,
     py::arg("stream") = 0, py::arg("call") = 0);

  m.def("rrelu_backward", [](py::handle x_, py::handle dy_, py::handle dx_, float lower, float upper, bool training,
                             uint64_t seed, uint64_t stream, uint32_t call) {
    const char* fn = "rrelu_backward";
    check_bounds(lower, upper, fn);
    py::array x = checked<float>(x_, fn, "x"), dy = checked<float>(dy_, fn, "dy"),
              dx = checked<float>(dx_, fn, "dx", true);
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    py::gil_scoped_release nogil;
    rrelu_backward(cptr<float>(x), cptr<float>(dy), ptr<float>(dx), index_t(x.size()), lower, upper, training, seed,
                   stream, call);
  }, py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("lower"), py::arg("upper"), py::arg("training"),
     py::arg("seed") = 0, py::arg("stream") = 0, py::arg("call") = 0);

  // ------------------------------------------------------------------ PReLU
  m.def("prelu_forward", [](py::handle x_, py::handle a_, py::handle y_) {
    const char* fn = "prelu_forward";
    py::array x = checked<float>(x_, fn, "x"), a = checked<float>(a_, fn, "alpha"),
              y = checked<float>(y_, fn, "y", true);
    same_shape(x, y, fn, "x", "y");
    const PreluView v = prelu_view(x, a, fn);
    py::gil_scoped_release nogil;
    prelu_forward(cptr<float>(x), cptr<float>(a), ptr<float>(y), v.B, v.P, v.S, v.Q);
  }, py::arg("x"), py::arg("alpha"), py::arg("y"),
     "y = x where x > 0, else alpha x; alpha has x's per-sample shape with 1 at shared axes.");

  m.def("prelu_backward", [](py::handle x_, py::handle a_, py::handle dy_, py::object dx_, py::handle da_) {
    const char* fn = "prelu_backward";
    py::array x = checked<float>(x_, fn, "x"), a = checked<float>(a_, fn, "alpha"),
              dy = checked<float>(dy_, fn, "dy"), da = checked<float>(da_, fn, "dalpha", true);
    same_shape(x, dy, fn, "x", "dy");
    same_shape(a, da, fn, "alpha", "dalpha");
    auto [dx, dxp] = optional_output_like(dx_, x, fn, "dx", "x");
    const PreluView v = prelu_view(x, a, fn);
    py::gil_scoped_release nogil;
    prelu_backward(cptr<float>(x), cptr<float>(a), cptr<float>(dy), dxp, ptr<float>(da), v.B, v.P, v.S, v.Q);
  }, py::arg("x"), py::arg("alpha"), py::arg("dy"), py::arg("dx"), py::arg("dalpha"),
     "dx = dy where x > 0, else alpha dy (dx may be None); dalpha = sum of dy x where x <= 0 (overwritten).");
}

}  // namespace bind
}  // namespace deepcore
