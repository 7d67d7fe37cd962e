// Python bindings for deepcore._cuda: device queries, DeviceBuffer (see
// device_buffer.h), and the CUDA twins of the CPU kernels under the same names
// and argument names as in deepcore._core, taking DeviceBuffers where _core
// takes ndarrays.
// Every entry point validates at the boundary and raises TypeError/ValueError
// naming the function and the argument; CUDA failures raise CudaError (a
// RuntimeError) naming the kernel, and CudaOutOfMemoryError (a MemoryError).
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "allocator.h"
#include "bind/common.h"
#include "bind/conv_checks.h"
#include "bind/shared_checks.h"
#include "bind_args.h"
#include "check.h"
#include "cublaslt.h"
#include "device_buffer.h"
#include "graph.h"
#include "kernels.h"
#include "matmul.h"
#include "ops/losses.h"
#include "runtime.h"
#include "stream.h"

namespace py = pybind11;
using namespace deepcore;
using namespace deepcore::cuda;

namespace deepcore {
namespace cuda {
void def_graph(py::module_& m);  // graph_bindings.cpp
void def_merge(py::module_& m);  // merge_bindings.cpp
}  // namespace cuda
}  // namespace deepcore

// Argument rules shared with the CPU bindings (bind/shared_checks.h).
using bind::check_batch;
using bind::check_bounds;
using bind::check_epsilon;
using bind::check_momentum;
using bind::check_rate;

namespace {

// ------------------------------------------------------------- optimizers

// The checks of src/bind/training.cpp, with device params, grads and slots and
// host offsets / l1 / l2.
py::tuple optimizer_step_binding(py::handle hyper, py::handle w_, py::handle g_, py::object s0_, py::object s1_,
                                 py::object s2_, py::object offsets_, py::object l1_, py::object l2_,
                                 bool want_norm) {
  const char* fn = "optimizer_step";
  const OptParams p = opt_params(hyper, fn);
  check_opt_params(p);
  DeviceBuffer &w = dbuf(w_, fn, "params", "float32"), &g = dbuf(g_, fn, "grads", "float32");
  same_shape(w, g, fn, "params", "grads");
  float* p0 = optional_like(s0_, w, fn, "slot0", "params");
  float* p1 = optional_like(s1_, w, fn, "slot1", "params");
  float* p2 = optional_like(s2_, w, fn, "slot2", "params");
  p2 = bind::require_optimizer_slots(p, p0, p1, p2);
  const index_t n = index_t(w.size());
  const HostSegments segs = host_segments(offsets_, l1_, l2_, n, fn);
  double norm = NAN, penalty;
  {
    py::gil_scoped_release nogil;
    penalty = deepcore::cuda::optimizer_step(p, static_cast<float*>(w.data()), static_cast<const float*>(g.data()),
                                             p0, p1, p2, n, segs.op, segs.nseg, segs.l1p, segs.l2p,
                                             want_norm ? &norm : nullptr);
  }
  return py::make_tuple(penalty, want_norm ? py::object(py::float_(norm)) : py::object(py::none()));
}

// ------------------------------------------------------------------ batchnorm

// (A, C, B) of a device tensor viewed as (A, C) or (A, C, B).
std::tuple<index_t, index_t, index_t> acb(const DeviceBuffer& x, const char* fn, const char* name) {
  const auto& s = x.shape();
  if (s.size() != 2 && s.size() != 3)
    throw py::value_error(std::string(fn) + ": " + name + " must have shape (A, C) or (A, C, B), got " +
                          x.shape_str());
  return {s[0], s[1], s.size() == 3 ? s[2] : 1};
}

// A (C,) float32 device tensor, or nullptr for None when optional.
float* per_feature(py::handle obj, index_t C, const char* fn, const char* name, bool optional) {
  if (optional && obj.is_none()) return nullptr;
  DeviceBuffer& b = dbuf(obj, fn, name, "float32");
  if (b.shape() != std::vector<py::ssize_t>{C})
    throw py::value_error(std::string(fn) + ": " + name + " must have shape (" + std::to_string(C) + "), got " +
                          b.shape_str());
  return static_cast<float*>(b.data());
}



// ----------------------------------------------------------- dropout family



// Dropout and alpha dropout share their bindings: forward (x, y, rate, key,
// optional keep mask to fill) and backward (dy, dx, rate, key, optional keep
// mask to read instead of regenerating the draws).
using KeepMaskForward = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, uint32_t, uint32_t*);
using KeepMaskBackward = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, uint32_t);
using KeepBitsBackward = void (*)(const float*, float*, index_t, float, const uint32_t*);

void def_keep_mask_forward(py::module_& m, const char* fn, KeepMaskForward kernel, const char* doc) {
  m.def(fn, [fn, kernel](py::handle x_, py::handle y_, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                         py::object mask_) {
    check_rate(rate, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    uint32_t* bits = optional_keep_bits(mask_, index_t(x.size()), fn);
    py::gil_scoped_release nogil;
    kernel(p<float>(x), p<float>(y), index_t(x.size()), rate, seed, stream, call, bits);
  }, py::arg("x"), py::arg("y"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     py::arg("mask") = py::none(), doc);
}

void def_keep_mask_backward(py::module_& m, const char* fn, KeepMaskBackward regenerate, KeepBitsBackward from_bits,
                            const char* doc) {
  m.def(fn, [fn, regenerate, from_bits](py::handle dy_, py::handle dx_, float rate, uint64_t seed, uint64_t stream,
                                        uint32_t call, py::object mask_) {
    check_rate(rate, fn);
    DeviceBuffer &dy = dbuf(dy_, fn, "dy", "float32"), &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(dy, dx, fn, "dy", "dx");
    const index_t n = index_t(dy.size());
    uint32_t* bits = optional_keep_bits(mask_, n, fn);
    py::gil_scoped_release nogil;
    if (bits) from_bits(p<float>(dy), p<float>(dx), n, rate, bits);
    else regenerate(p<float>(dy), p<float>(dx), n, rate, seed, stream, call);
  }, py::arg("dy"), py::arg("dx"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     py::arg("mask") = py::none(), doc);
}

// PReLU's view, by the CPU binding's rules and words (bind/shared_checks.h).
using bind::PreluView;

PreluView prelu_view(const DeviceBuffer& x, const DeviceBuffer& alpha, const char* fn) {
  return bind::prelu_view_of(std::vector<index_t>(x.shape().begin(), x.shape().end()),
                             std::vector<index_t>(alpha.shape().begin(), alpha.shape().end()), x.shape_str(),
                             alpha.shape_str(), fn);
}

// A float32 scalar tensor (shape () or (1,)): Swish's beta and its gradient,
// by the CPU binding's rules and words (bind/shared_checks.h).
float* scalar_tensor(py::handle obj, const char* fn, const char* name) {
  DeviceBuffer& b = dbuf(obj, fn, name, "float32");
  bind::check_scalar_shape(std::vector<index_t>(b.shape().begin(), b.shape().end()), b.shape_str(), fn, name);
  return p<float>(b);
}

py::dict device_properties(int i) {
  const int n = deepcore::cuda::device_count();
  if (i < 0 || i >= n)
    throw py::value_error("device_properties: device " + std::to_string(i) + " does not exist (" +
                          std::to_string(n) + " CUDA devices)");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, i), "device_properties: cudaGetDeviceProperties");
  py::dict d;
  d["name"] = std::string(prop.name);
  d["compute_capability"] = py::make_tuple(prop.major, prop.minor);
  d["total_memory"] = size_t(prop.totalGlobalMem);
  d["multiprocessor_count"] = prop.multiProcessorCount;
  d["l2_cache_size"] = prop.l2CacheSize;
  d["shared_memory_per_block_optin"] = size_t(prop.sharedMemPerBlockOptin);
  return d;
}

}  // namespace

// ------------------------------------------- GPU dense (cuBLASLt), losses, reductions, gather
namespace {

// bind::expect_shape's rule and words for a DeviceBuffer (-1 matches any extent).
void expect_shape(const DeviceBuffer& a, const std::vector<py::ssize_t>& expected, const char* fn,
                  const char* name) {
  bool ok = a.shape().size() == expected.size();
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || a.shape()[i] == expected[i];
  if (ok) return;
  std::string s = std::string(fn) + ": " + name + " must have shape (";
  for (size_t i = 0; i < expected.size(); ++i)
    s += (i ? ", " : "") + (expected[i] < 0 ? std::string("any") : std::to_string(expected[i]));
  throw py::value_error(s + "), got " + a.shape_str());
}

// The libcublasLt files of the nvidia-cublas wheels, wherever the `nvidia`
// namespace package lives on sys.path (importlib lists every folder of it).
std::vector<std::string> cublaslt_wheel_candidates() {
  std::vector<std::string> out;
  try {
    py::object spec = py::module_::import("importlib.util").attr("find_spec")("nvidia");
    if (spec.is_none()) return out;
    py::object dirs = spec.attr("submodule_search_locations");
    if (dirs.is_none()) return out;
    for (py::handle d : dirs) {
      const std::string dir = py::str(d).cast<std::string>();
      out.push_back(dir + "/cu13/lib/libcublasLt.so.13");    // nvidia-cublas 13.x (CUDA 13)
      out.push_back(dir + "/cublas/lib/libcublasLt.so.13");
      out.push_back(dir + "/cublas/lib/libcublasLt.so.12");  // nvidia-cublas-cu12
    }
  } catch (const py::error_already_set&) {
    // no importable `nvidia` package: the other places are still tried
  }
  return out;
}

// cuBLASLt, loaded on first use (the caller holds the GIL, which guards `tried`).
const lt::Api* cublaslt() {
  static bool tried = false;
  if (!tried) {
    tried = true;
    lt::load(cublaslt_wheel_candidates());
  }
  return lt::api();
}

// RuntimeError naming the function and saying why, when cuBLASLt is unavailable.
void require_cublaslt(const char* fn) {
  if (!cublaslt())
    throw std::runtime_error(std::string(fn) + ": the GPU GEMM needs cuBLASLt, which is unavailable: " +
                             lt::reason());
}

// The conv family (ops/conv.h) with the CPU bindings' names, arguments and checks
// (bind/conv_checks.h); conv2d_* need cuBLASLt (their GEMMs are dense's).
void bind_conv_twins(py::module_& m) {
  using namespace bind::conv_checks;
  const auto opt_float = [](py::object obj, const char* fn, const char* name) -> DeviceBuffer* {
    return obj.is_none() ? nullptr : &dbuf(obj, fn, name, "float32");
  };

  m.def("conv2d_output_shape", [](int64_t h, int64_t w, Pair kernel, Pair strides, Pair dilation,
                                  const std::string& padding) {
    const char* fn = "conv2d_output_shape";
    positive(kernel, fn, "the window size");
    positive(strides, fn, "strides");
    positive(dilation, fn, "dilation_rate");
    const bool same = is_same(padding, fn);
    const AxisGeometry gy = window_axis(h, kernel[0], strides[0], dilation[0], same);
    const AxisGeometry gx = window_axis(w, kernel[1], strides[1], dilation[1], same);
    return std::make_tuple(gy.out, gx.out, gy.pad_before, gx.pad_before);
  }, py::arg("h"), py::arg("w"), py::arg("kernel"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
     "The CPU's rule (a host computation).");

  m.def("conv2d_forward", [opt_float](py::handle x_, py::handle w_, py::object b_, py::handle col_, py::handle z_,
                                      py::handle y_, Pair strides, Pair dilation, const std::string& padding,
                                      int kind, float alpha, float beta) {
    const char* fn = "conv2d_forward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &w = dbuf(w_, fn, "w", "float32");
    check_kernel_rank(w.shape(), fn);
    const Window2D g = window_of(x.shape(), "x", {w.shape()[0], w.shape()[1]}, strides, dilation, padding, fn);
    expect_shape(w, {-1, -1, g.c, -1}, fn, "w");
    const index_t cout = w.shape()[3];
    DeviceBuffer &col = dbuf(col_, fn, "col", "float32"), &z = dbuf(z_, fn, "z", "float32"),
                 &y = dbuf(y_, fn, "y", "float32");
    expect_shape(col, {g.rows(), g.patch()}, fn, "col");
    expect_shape(z, nhwc(g, cout, true), fn, "z");
    expect_shape(y, nhwc(g, cout, true), fn, "y");
    DeviceBuffer* b = opt_float(b_, fn, "b");
    if (b) expect_shape(*b, {cout}, fn, "b");
    if (g.batch == 0 || cout == 0) return;
    require_cublaslt(fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::conv2d_forward(g, p<float>(x), p<float>(w), b ? p<float>(*b) : nullptr, p<float>(col),
                                   p<float>(z), p<float>(y), cout, a);
  }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("col"), py::arg("z"), py::arg("y"), py::arg("strides"),
     py::arg("dilation"), py::arg("padding"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     "col = im2col(x) (a kernel); z = col w + b, y = act(z) by dense_forward (cuBLASLt).");

  m.def("conv2d_backward", [opt_float](py::handle x_, py::handle w_, py::handle col_, py::handle z_, py::handle y_,
                                       py::handle dy_, py::handle dzbuf_, py::object dcol_, py::object dx_,
                                       py::handle dw_, py::object db_, Pair strides, Pair dilation,
                                       const std::string& padding, int kind, float alpha, float beta, bool dy_is_dz,
                                       bool accumulate) {
    const char* fn = "conv2d_backward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &w = dbuf(w_, fn, "w", "float32");
    check_kernel_rank(w.shape(), fn);
    const Window2D g = window_of(x.shape(), "x", {w.shape()[0], w.shape()[1]}, strides, dilation, padding, fn);
    expect_shape(w, {-1, -1, g.c, -1}, fn, "w");
    const index_t cout = w.shape()[3];
    DeviceBuffer &col = dbuf(col_, fn, "col", "float32"), &z = dbuf(z_, fn, "z", "float32"),
                 &y = dbuf(y_, fn, "y", "float32"), &dy = dbuf(dy_, fn, "dy", "float32"),
                 &dzb = dbuf(dzbuf_, fn, "dz_buf", "float32"), &dw = dbuf(dw_, fn, "dw", "float32");
    expect_shape(col, {g.rows(), g.patch()}, fn, "col");
    for (auto [buf, name] : {std::pair<DeviceBuffer*, const char*>{&z, "z"}, {&y, "y"}, {&dy, "dy"}, {&dzb, "dz_buf"}})
      expect_shape(*buf, nhwc(g, cout, true), fn, name);
    expect_shape(dw, w.shape(), fn, "dw");
    DeviceBuffer* dx = opt_float(dx_, fn, "dx");
    DeviceBuffer* dcol = nullptr;
    if (dx) {
      expect_shape(*dx, x.shape(), fn, "dx");
      if (dcol_.is_none())
        throw py::value_error(std::string(fn) + ": dcol (a scratch of col's shape) is required with dx");
      dcol = &dbuf(dcol_, fn, "dcol", "float32");
      expect_shape(*dcol, col.shape(), fn, "dcol");
    }
    DeviceBuffer* db = opt_float(db_, fn, "db");
    if (db) expect_shape(*db, {cout}, fn, "db");
    if (g.batch == 0 || cout == 0) return;
    require_cublaslt(fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::conv2d_backward(g, p<float>(col), p<float>(w), p<float>(z), p<float>(y), p<float>(dy),
                                    p<float>(dzb), dcol ? p<float>(*dcol) : nullptr, dx ? p<float>(*dx) : nullptr,
                                    p<float>(dw), db ? p<float>(*db) : nullptr, cout, a, dy_is_dz, accumulate);
  }, py::arg("x"), py::arg("w"), py::arg("col"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("dz_buf"),
     py::arg("dcol"), py::arg("dx"), py::arg("dw"), py::arg("db"), py::arg("strides"), py::arg("dilation"),
     py::arg("padding"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     py::arg("dy_is_dz") = false, py::arg("accumulate") = false,
     "dense_backward on the patch matrix (cuBLASLt), then dx = col2im(dcol) (a gather kernel).");

  m.def("pool2d_forward", [](py::handle x_, py::handle y_, py::object argmax_, Pair pool_size, Pair strides,
                             const std::string& padding, const std::string& mode) {
    const char* fn = "pool2d_forward";
    const Pool pm = pool_mode(mode, fn);
    DeviceBuffer& x = dbuf(x_, fn, "x", "float32");
    const Window2D g = window_of(x.shape(), "x", pool_size, strides, {1, 1}, padding, fn);
    DeviceBuffer& y = dbuf(y_, fn, "y", "float32");
    expect_shape(y, nhwc(g, g.c, true), fn, "y");
    int32_t* argp = nullptr;
    if (pm == Pool::Max) {
      if (argmax_.is_none()) throw py::value_error(missing_argmax(fn, true));
      DeviceBuffer& arg = dbuf(argmax_, fn, "argmax", "int32");
      expect_shape(arg, y.shape(), fn, "argmax");
      argp = p<int32_t>(arg);
    }
    py::gil_scoped_release nogil;
    deepcore::cuda::pool2d_forward(g, pm, p<float>(x), p<float>(y), argp);
  }, py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
     py::arg("mode"), "One thread per output: the CPU's window loop, the same bits.");

  m.def("pool2d_backward", [](py::handle dy_, py::object argmax_, py::handle dx_, Pair pool_size, Pair strides,
                              const std::string& padding, const std::string& mode) {
    const char* fn = "pool2d_backward";
    const Pool pm = pool_mode(mode, fn);
    DeviceBuffer& dx = dbuf(dx_, fn, "dx", "float32");
    const Window2D g = window_of(dx.shape(), "dx", pool_size, strides, {1, 1}, padding, fn);
    DeviceBuffer& dy = dbuf(dy_, fn, "dy", "float32");
    expect_shape(dy, nhwc(g, g.c, true), fn, "dy");
    const int32_t* argp = nullptr;
    if (pm == Pool::Max) {
      if (argmax_.is_none()) throw py::value_error(missing_argmax(fn, false));
      DeviceBuffer& arg = dbuf(argmax_, fn, "argmax", "int32");
      expect_shape(arg, dy.shape(), fn, "argmax");
      argp = p<int32_t>(arg);
    }
    py::gil_scoped_release nogil;
    deepcore::cuda::pool2d_backward(g, pm, p<float>(dy), argp, p<float>(dx));
  }, py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
     py::arg("mode"), "One thread per input pixel gathering its windows' terms in the CPU's order: the same bits.");

  m.def("pad2d", [](py::handle x_, py::handle y_, std::array<Pair, 2> padding) {
    const char* fn = "pad2d";
    auto [top, bottom, left, right] = padding4(padding, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    expect_shape(x, {-1, -1, -1, -1}, fn, "x");
    const auto& s = x.shape();
    expect_shape(y, {s[0], s[1] + top + bottom, s[2] + left + right, s[3]}, fn, "y");
    py::gil_scoped_release nogil;
    deepcore::cuda::pad2d(p<float>(x), p<float>(y), s[0], s[1], s[2], s[3], top, bottom, left, right);
  }, py::arg("x"), py::arg("y"), py::arg("padding"), "y = x with zero borders.");

  m.def("crop2d", [](py::handle dy_, py::handle dx_, std::array<Pair, 2> padding) {
    const char* fn = "crop2d";
    auto [top, bottom, left, right] = padding4(padding, fn);
    DeviceBuffer &dy = dbuf(dy_, fn, "dy", "float32"), &dx = dbuf(dx_, fn, "dx", "float32");
    expect_shape(dx, {-1, -1, -1, -1}, fn, "dx");
    const auto& s = dx.shape();
    expect_shape(dy, {s[0], s[1] + top + bottom, s[2] + left + right, s[3]}, fn, "dy");
    py::gil_scoped_release nogil;
    deepcore::cuda::crop2d(p<float>(dy), p<float>(dx), s[0], s[1], s[2], s[3], top, bottom, left, right);
  }, py::arg("dy"), py::arg("dx"), py::arg("padding"), "dx = the interior of dy (pad2d's backward).");
}

void bind_dense_twins(py::module_& m) {
  // ------------------------------------------------------------- cuBLASLt
  m.def("blas_available", []() { return cublaslt() != nullptr; },
        "True when cuBLASLt was found and loaded (needed by sgemm, dense_forward, dense_backward); see blas_reason().");
  m.def("blas_reason", []() {
    cublaslt();
    return lt::reason();
  }, "'' when cuBLASLt is loaded; otherwise where deepcore looked for it and why each candidate was refused.");
  m.def("blas_library", []() -> py::object {
    const lt::Api* a = cublaslt();
    if (!a) return py::none();
    py::dict d;
    d["path"] = a->path;
    d["version"] = a->version;
    d["cuda_version"] = a->cudart;
    return d;
  }, "The loaded cuBLASLt: {'path', 'version' (major*10000 + minor*100 + patch), 'cuda_version'}, or None.");
  m.def("set_tf32", [](bool enabled) { deepcore::cuda::set_tf32(enabled); }, py::arg("enabled"),
        "GEMMs in TF32 (CUBLAS_COMPUTE_32F_FAST_TF32: inputs rounded to a 10-bit mantissa, ~1e-3 relative error "
        "on sums of products) instead of fp32 (the default; agrees with the CPU to ~1e-5).");
  m.def("get_tf32", []() { return deepcore::cuda::tf32(); }, "Whether GEMMs run in TF32 (see set_tf32).");

  // ---------------------------------------------------------------- dense
  m.def("sgemm", [](py::handle a_, py::handle b_, py::handle c_, bool ta, bool tb, float alpha, float beta) {
    const char* fn = "sgemm";
    DeviceBuffer &a = dbuf(a_, fn, "a", "float32"), &b = dbuf(b_, fn, "b", "float32"),
                 &c = dbuf(c_, fn, "c", "float32");
    expect_shape(a, {-1, -1}, fn, "a");
    expect_shape(b, {-1, -1}, fn, "b");
    const index_t m_ = ta ? a.shape()[1] : a.shape()[0], k = ta ? a.shape()[0] : a.shape()[1];
    const index_t kb = tb ? b.shape()[1] : b.shape()[0], n = tb ? b.shape()[0] : b.shape()[1];
    if (k != kb)
      throw py::value_error("sgemm: inner dimensions differ: op(a) is (" + std::to_string(m_) + ", " +
                            std::to_string(k) + "), op(b) is (" + std::to_string(kb) + ", " + std::to_string(n) + ")");
    expect_shape(c, {m_, n}, fn, "c");
    require_cublaslt(fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::sgemm(ta, tb, m_, n, k, alpha, p<float>(a), a.shape()[1], p<float>(b), b.shape()[1], beta,
                          p<float>(c), n);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false, py::arg("trans_b") = false,
     py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, "c = alpha op(a) op(b) + beta c (cuBLASLt, fp32 or TF32)");

  m.def("dense_forward", [](py::handle x_, py::handle w_, py::object b_, py::handle z_, py::handle y_, int kind,
                            float alpha, float beta) {
    const char* fn = "dense_forward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &w = dbuf(w_, fn, "w", "float32");
    expect_shape(x, {-1, -1}, fn, "x");
    expect_shape(w, {x.shape()[1], -1}, fn, "w");
    const index_t batch = x.shape()[0], in = x.shape()[1], out = w.shape()[1];
    DeviceBuffer &z = dbuf(z_, fn, "z", "float32"), &y = dbuf(y_, fn, "y", "float32");
    expect_shape(z, {batch, out}, fn, "z");
    expect_shape(y, {batch, out}, fn, "y");
    const float* bp = nullptr;
    if (!b_.is_none()) {
      DeviceBuffer& b = dbuf(b_, fn, "b", "float32");
      expect_shape(b, {out}, fn, "b");
      bp = p<float>(b);
    }
    require_cublaslt(fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::dense_forward(p<float>(x), p<float>(w), bp, p<float>(z), p<float>(y), batch, in, out, a);
  }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("z"), py::arg("y"), py::arg("kind"), py::arg("alpha") = 0.0f,
     py::arg("beta") = 1.0f,
     "z = x w + b; y = act(z) (y may be z for linear/sigmoid/tanh/relu). cuBLASLt with the bias (and, when y is "
     "z, ReLU) in its epilogue.");

  m.def("dense_backward", [](py::handle x_, py::handle w_, py::handle z_, py::handle y_, py::handle dy_,
                             py::handle dzbuf_, py::object dx_, py::handle dw_, py::object db_, int kind, float alpha,
                             float beta, bool dy_is_dz, bool accumulate) {
    const char* fn = "dense_backward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &w = dbuf(w_, fn, "w", "float32");
    expect_shape(x, {-1, -1}, fn, "x");
    expect_shape(w, {x.shape()[1], -1}, fn, "w");
    const index_t batch = x.shape()[0], in = x.shape()[1], out = w.shape()[1];
    DeviceBuffer &z = dbuf(z_, fn, "z", "float32"), &y = dbuf(y_, fn, "y", "float32"),
                 &dy = dbuf(dy_, fn, "dy", "float32"), &dzb = dbuf(dzbuf_, fn, "dz_buf", "float32"),
                 &dw = dbuf(dw_, fn, "dw", "float32");
    expect_shape(z, {batch, out}, fn, "z");
    expect_shape(y, {batch, out}, fn, "y");
    expect_shape(dy, {batch, out}, fn, "dy");
    expect_shape(dzb, {batch, out}, fn, "dz_buf");
    expect_shape(dw, {in, out}, fn, "dw");
    float* dxp = nullptr;
    float* dbp = nullptr;
    if (!dx_.is_none()) {
      DeviceBuffer& dx = dbuf(dx_, fn, "dx", "float32");
      expect_shape(dx, {batch, in}, fn, "dx");
      dxp = p<float>(dx);
    }
    if (!db_.is_none()) {
      DeviceBuffer& db = dbuf(db_, fn, "db", "float32");
      expect_shape(db, {out}, fn, "db");
      dbp = p<float>(db);
    }
    require_cublaslt(fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::dense_backward(p<float>(x), p<float>(w), p<float>(z), p<float>(y), p<float>(dy), p<float>(dzb),
                                   dxp, p<float>(dw), dbp, batch, in, out, a, dy_is_dz, accumulate);
  }, py::arg("x"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("dz_buf"), py::arg("dx"),
     py::arg("dw"), py::arg("db"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     py::arg("dy_is_dz") = false, py::arg("accumulate") = false,
     "dz = dy act'(z) (dy itself when dy_is_dz), dW (+)= x^T dz and dx = dz W^T by cuBLASLt, db (+)= column "
     "sums of dz (fixed order, double); dx and db may be None.");

  // --------------------------------------------------------------- losses
  m.def("loss_forward_backward", [](int kind, py::handle p_, py::handle t_, py::object g_, float param) {
    const char* fn = "loss_forward_backward";
    if (kind < 0 || kind > int(Loss::CategoricalCrossentropyLogits))
      throw py::value_error(std::string(fn) + ": unknown loss code " + std::to_string(kind));
    DeviceBuffer &pred = dbuf(p_, fn, "y_pred", "float32"), &t = dbuf(t_, fn, "y_true", "float32");
    same_shape(pred, t, fn, "y_pred", "y_true");
    auto [rows, cols] = rows_cols(pred, fn, "y_pred");
    if (rows * cols == 0) throw py::value_error(std::string(fn) + ": y_pred is empty");
    float* gp = optional_like(g_, pred, fn, "grad", "y_pred");
    py::gil_scoped_release nogil;
    return deepcore::cuda::loss_forward_backward(Loss(kind), p<float>(pred), p<float>(t), gp, rows, cols, param);
  }, py::arg("kind"), py::arg("y_pred"), py::arg("y_true"), py::arg("grad"), py::arg("param") = 1.0f,
     "Mean loss (a host float, summed in double in a fixed order; synchronizes); grad (optional) receives "
     "dL/dy_pred.");

  // ----------------------------------------------------------- reductions
  m.def("count_nonfinite", [](py::handle x_) {
    DeviceBuffer& x = dbuf(x_, "count_nonfinite", "x", "float32");
    py::gil_scoped_release nogil;
    return deepcore::cuda::count_nonfinite(p<float>(x), index_t(x.size()));
  }, py::arg("x"), "Number of NaN and +-inf elements (synchronizes).");

  // --------------------------------------------------------------- gather
  m.def("gather_rows", [](py::handle s_, py::handle i_, py::handle d_) {
    const char* fn = "gather_rows";
    if (!py::isinstance<DeviceBuffer>(s_) || !py::isinstance<DeviceBuffer>(d_))
      throw py::type_error("gather_rows: src and dst must be deepcore._cuda.DeviceBuffers, got " +
                           py::str(py::type::of(s_)).cast<std::string>() + " and " +
                           py::str(py::type::of(d_)).cast<std::string>());
    if (py::isinstance<DeviceBuffer>(i_))
      throw py::type_error("gather_rows: indices must be a host numpy int64 array (the CUDA twin checks them on "
                           "the host and uploads them), got a DeviceBuffer");
    DeviceBuffer& s = dbuf(s_, fn, "src", s_.cast<DeviceBuffer&>().dtype().c_str());
    DeviceBuffer& d = dbuf(d_, fn, "dst", d_.cast<DeviceBuffer&>().dtype().c_str());
    py::array idx = bind::checked<int64_t>(i_, fn, "indices");
    if (s.dtype() != d.dtype())
      throw py::type_error("gather_rows: dst dtype " + d.dtype() + " differs from src dtype " + s.dtype());
    if (s.shape().empty()) throw py::value_error("gather_rows: src must have at least one dimension, got a scalar");
    bind::expect_shape(idx, {-1}, fn, "indices");
    std::vector<py::ssize_t> want = s.shape();
    want[0] = idx.shape(0);
    expect_shape(d, want, fn, "dst");
    const size_t row_bytes = s.shape()[0] ? s.nbytes() / size_t(s.shape()[0]) : 0;
    const int64_t* ip = bind::cptr<int64_t>(idx);
    py::gil_scoped_release nogil;
    deepcore::cuda::gather_rows(s.data(), s.shape()[0], row_bytes, ip, idx.shape(0), d.data());
  }, py::arg("src"), py::arg("indices"), py::arg("dst"),
     "dst[i] = src[indices[i]]: src and dst DeviceBuffers of one dtype, indices a host int64 array (checked "
     "there, then uploaded).");
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "deepcore CUDA kernels (GPU backend); use deepcore.cuda, which imports this lazily";

  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
  py::register_exception<CudaOutOfMemory>(m, "CudaOutOfMemoryError", PyExc_MemoryError);
  // After CudaError: pybind11 tries the later registration first.
  py::register_exception<CaptureError>(m, "CaptureError", m.attr("CudaError"));

  // ---------------------------------------------------------------- runtime
  m.attr("built_archs") = DEEPCORE_CUDA_ARCHS;
  m.attr("runtime_version") = CUDART_VERSION;
  m.def("device_count", &deepcore::cuda::device_count, "Usable CUDA devices (0 without driver or device).");
  m.def("current_device", []() {
    int d = 0;
    check(cudaGetDevice(&d), "current_device");
    return d;
  }, "The index of this thread's current CUDA device, where new buffers are allocated and kernels run.");
  m.def("set_device", [](py::handle device) {
    check(cudaSetDevice(checked_device(device, "set_device")), "set_device");
  }, py::arg("device"),
     "Make `device` (an index) this thread's current CUDA device (cudaSetDevice). Kernels require their "
     "tensors on the current device; deepcore.cuda.device(n) sets it for a block.");
  m.def("unavailable_reason", &unavailable_reason, py::arg("device") = -1,
        "'' when the current device (or `device`) is usable, else why not.");
  m.def("driver_version", []() {
    int v = 0;
    (void)cudaDriverGetVersion(&v);
    return v;
  }, "CUDA version the driver supports (e.g. 12040), 0 without a driver.");
  m.def("device_properties", &device_properties, py::arg("device") = 0);
  m.def("synchronize", []() {
    ensure_not_capturing("synchronize", "it waits for the device");
    const cudaStream_t s = current_stream();
    py::gil_scoped_release nogil;
    check_sync(cudaStreamSynchronize(s), "synchronize");
  }, "Wait until the work deepcore queued on the current device (its stream) is done.");
  m.def("current_stream", []() { return reinterpret_cast<uintptr_t>(current_stream()); },
        "The handle (cudaStream_t as an int) of deepcore's stream on the current device, where all its work is "
        "queued; created on first use, non-blocking with respect to the legacy default stream.");
  m.def("memory_stats", []() {
    const AllocatorStats s = allocator_stats();
    py::dict d;
    d["live_bytes"] = s.live_bytes;
    d["cached_bytes"] = s.cached_bytes;
    d["malloc_calls"] = s.malloc_calls;
    d["held_bytes"] = s.held_bytes;
    return d;
  }, "Caching allocator: bytes in live buffers, bytes cached for reuse, cudaMalloc calls so far, freed bytes "
     "held back for CUDA graphs.");
  m.def("empty_cache", []() {
    ensure_not_capturing("empty_cache", "cudaFree is not allowed during a capture");
    empty_cache();
  }, "cudaFree the cached (unused) blocks.");

  def_device_buffer(m);
  def_graph(m);  // graph_bindings.cpp: CUDA graphs and the *_graph variants
  def_merge(m);  // merge_bindings.cpp: the merge layers' kernels and concatenate

  // ------------------------------------------------------------ activations
  m.def("activation_forward", [](int kind, py::handle x_, py::handle y_, float alpha, float beta) {
    const char* fn = "activation_forward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    auto [rows, cols] = rows_cols(x, fn, "x");
    py::gil_scoped_release nogil;
    deepcore::cuda::activation_forward(a, p<float>(x), p<float>(y), rows, cols);
  }, py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f);

  m.def("activation_backward", [](int kind, py::handle x_, py::handle y_, py::handle dy_, py::handle dx_, float alpha,
                                  float beta) {
    const char* fn = "activation_backward";
    const ActParams a = bind::act_params(kind, alpha, beta, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32"),
                 &dy = dbuf(dy_, fn, "dy", "float32"), &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(x, y, fn, "x", "y");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    auto [rows, cols] = rows_cols(x, fn, "x");
    py::gil_scoped_release nogil;
    deepcore::cuda::activation_backward(a, p<float>(x), p<float>(y), p<float>(dy), p<float>(dx), rows, cols);
  }, py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("dy"), py::arg("dx"), py::arg("alpha") = 0.0f,
     py::arg("beta") = 1.0f);

  // Swish with a learnable beta: beta (and dbeta) live on the device and are
  // read (written) by the kernels; nothing waits, so a graph can capture them.
  m.def("swish_forward", [](py::handle x_, py::handle y_, py::handle beta_) {
    const char* fn = "swish_forward";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    const float* beta = scalar_tensor(beta_, fn, "beta");
    py::gil_scoped_release nogil;
    deepcore::cuda::swish_forward(p<float>(x), p<float>(y), index_t(x.size()), beta);
  }, py::arg("x"), py::arg("y"), py::arg("beta"),
     "y = x sigmoid(beta x); beta a float32 tensor of shape () or (1,), read when the kernel runs.");

  m.def("swish_backward", [](py::handle x_, py::handle dy_, py::handle dx_, py::handle beta_) {
    const char* fn = "swish_backward";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &dy = dbuf(dy_, fn, "dy", "float32"),
                 &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    const float* beta = scalar_tensor(beta_, fn, "beta");
    py::gil_scoped_release nogil;
    deepcore::cuda::swish_backward(p<float>(x), p<float>(dy), p<float>(dx), index_t(x.size()), beta);
  }, py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("beta"),
     "dx = dy (s + beta x s (1 - s)), s = sigmoid(beta x); beta as in swish_forward.");

  m.def("swish_beta_grad", [](py::handle x_, py::handle dy_, py::handle beta_, py::handle dbeta_) {
    const char* fn = "swish_beta_grad";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &dy = dbuf(dy_, fn, "dy", "float32");
    same_shape(x, dy, fn, "x", "dy");
    const float* beta = scalar_tensor(beta_, fn, "beta");
    float* dbeta = scalar_tensor(dbeta_, fn, "dbeta");
    py::gil_scoped_release nogil;
    deepcore::cuda::swish_beta_grad(p<float>(x), p<float>(dy), index_t(x.size()), beta, dbeta);
  }, py::arg("x"), py::arg("dy"), py::arg("beta"), py::arg("dbeta"),
     "dbeta = sum dy x^2 s (1 - s), s = sigmoid(beta x), summed in double and stored as float32 (overwritten); "
     "beta and dbeta float32 tensors of shape () or (1,).");

  // ----------------------------------------------------------------- losses
  m.def("sparse_categorical_crossentropy", [](py::handle p_, py::handle l_, py::object g_, bool from_logits) {
    const char* fn = "sparse_categorical_crossentropy";
    DeviceBuffer &pred = dbuf(p_, fn, "y_pred", "float32"), &labels = dbuf(l_, fn, "labels", "int32");
    check_sparse_ce_shapes(pred, labels, fn);
    float* gp = optional_like(g_, pred, fn, "grad", "y_pred");
    int64_t correct = 0;
    double loss;
    {
      py::gil_scoped_release nogil;
      loss = deepcore::cuda::sparse_categorical_crossentropy(p<float>(pred), p<int32_t>(labels), gp, pred.shape()[0],
                                                             pred.shape()[1], from_logits, &correct);
    }
    return py::make_tuple(loss, correct);
  }, py::arg("y_pred"), py::arg("labels"), py::arg("grad"), py::arg("from_logits"),
     "Returns (mean loss, number of rows whose argmax equals the label). Synchronizes.");

  // ----------------------------------------------------------------- random
  m.def("philox_uniform", [](py::handle o_, uint64_t seed, uint64_t stream, float low, float high) {
    DeviceBuffer& o = dbuf(o_, "philox_uniform", "out", "float32");
    py::gil_scoped_release nogil;
    deepcore::cuda::philox_uniform(p<float>(o), index_t(o.size()), seed, stream, low, high);
  }, py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("low") = 0.0f, py::arg("high") = 1.0f);
  m.def("philox_normal", [](py::handle o_, uint64_t seed, uint64_t stream, float mean, float stddev, bool truncated) {
    DeviceBuffer& o = dbuf(o_, "philox_normal", "out", "float32");
    py::gil_scoped_release nogil;
    deepcore::cuda::philox_normal(p<float>(o), index_t(o.size()), seed, stream, mean, stddev, truncated);
  }, py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("mean") = 0.0f, py::arg("stddev") = 1.0f,
     py::arg("truncated") = false);

  // ------------------------------------------------------------- optimizers
  m.def("sgd_update", [](py::handle w_, py::handle g_, py::object v_, float lr, float momentum, bool nesterov) {
    const char* fn = "sgd_update";
    DeviceBuffer &w = dbuf(w_, fn, "params", "float32"), &g = dbuf(g_, fn, "grads", "float32");
    same_shape(w, g, fn, "params", "grads");
    float* vp = optional_like(v_, w, fn, "velocity", "params");
    py::gil_scoped_release nogil;
    deepcore::cuda::sgd_update(p<float>(w), p<float>(g), vp, index_t(w.size()), lr, momentum, nesterov);
  }, py::arg("params"), py::arg("grads"), py::arg("velocity"), py::arg("learning_rate"), py::arg("momentum"),
     py::arg("nesterov"));

  m.def("axpby", [](float a, py::handle x_, float b, py::handle y_) {
    const char* fn = "axpby";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(y, x, fn, "y", "x");
    py::gil_scoped_release nogil;
    deepcore::cuda::axpby(a, p<float>(x), b, p<float>(y), index_t(y.size()));
  }, py::arg("a"), py::arg("x"), py::arg("b"), py::arg("y"),
     "y <- a x + b y in place (float32 DeviceBuffers of one shape); a == 0 ignores x's values.");

  m.def("optimizer_step", &optimizer_step_binding, py::arg("hyper"), py::arg("params"), py::arg("grads"),
        py::arg("slot0"), py::arg("slot1"), py::arg("slot2"), py::arg("offsets"), py::arg("l1"), py::arg("l2"),
        py::arg("want_norm") = false,
        "One fused update of all parameters (device params, grads, slots; host offsets, l1, l2; hyper a "
        "deepcore._core.OptParams); returns (penalty, gradient norm or None). Synchronizes only when a penalty "
        "is set or the norm is asked for.");

  m.def("max_norm", [](py::handle w_, int first_axis, int last_axis, float max_value) {
    const char* fn = "max_norm";
    DeviceBuffer& w = dbuf(w_, fn, "w", "float32");
    if (!(max_value >= 0.0f) || !std::isfinite(max_value))
      throw py::value_error("max_norm: max_value must be finite and >= 0, got " + std::to_string(max_value));
    const int nd = int(w.shape().size());
    if (nd == 0) throw py::value_error("max_norm: w must have at least one dimension");
    if (first_axis < 0 || last_axis >= nd || first_axis > last_axis)
      throw py::value_error("max_norm: axes " + std::to_string(first_axis) + ".." + std::to_string(last_axis) +
                            " do not exist for a tensor of rank " + std::to_string(nd));
    index_t outer = 1, r = 1, inner = 1;
    for (int a = 0; a < nd; ++a) (a < first_axis ? outer : a <= last_axis ? r : inner) *= index_t(w.shape()[a]);
    py::gil_scoped_release nogil;
    deepcore::cuda::max_norm(p<float>(w), outer, r, inner, max_value);
  }, py::arg("w"), py::arg("first_axis"), py::arg("last_axis"), py::arg("max_value"),
     "Rescale, in place, each vector along axes first..last whose L2 norm exceeds max_value.");

  // -------------------------------------------------------------- batchnorm
  m.def("batchnorm_forward_train", [](py::handle x_, py::object gamma_, py::object beta_, py::handle y_,
                                      py::handle mean_, py::handle inv_std_, py::handle mm_, py::handle mv_,
                                      float epsilon, float momentum) {
    const char* fn = "batchnorm_forward_train";
    check_epsilon(epsilon, fn);
    check_momentum(momentum, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    float* gp = per_feature(gamma_, C, fn, "gamma", true);
    float* bp = per_feature(beta_, C, fn, "beta", true);
    float* mup = per_feature(mean_, C, fn, "mean", false);
    float* isp = per_feature(inv_std_, C, fn, "inv_std", false);
    float* mmp = per_feature(mm_, C, fn, "moving_mean", false);
    float* mvp = per_feature(mv_, C, fn, "moving_var", false);
    check_batch(A * B, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::batchnorm_forward_train(p<float>(x), gp, bp, p<float>(y), mup, isp, mmp, mvp, A, C, B, epsilon,
                                            momentum);
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("y"), py::arg("mean"), py::arg("inv_std"),
     py::arg("moving_mean"), py::arg("moving_var"), py::arg("epsilon"), py::arg("momentum"),
     "Training forward with batch statistics over A and B (see deepcore._core.batchnorm_forward_train).");

  m.def("batchnorm_forward_inference", [](py::handle x_, py::object gamma_, py::object beta_, py::handle mm_,
                                          py::handle mv_, py::handle y_, float epsilon) {
    const char* fn = "batchnorm_forward_inference";
    check_epsilon(epsilon, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    float* gp = per_feature(gamma_, C, fn, "gamma", true);
    float* bp = per_feature(beta_, C, fn, "beta", true);
    float* mmp = per_feature(mm_, C, fn, "moving_mean", false);
    float* mvp = per_feature(mv_, C, fn, "moving_var", false);
    py::gil_scoped_release nogil;
    deepcore::cuda::batchnorm_forward_inference(p<float>(x), gp, bp, mmp, mvp, p<float>(y), A, C, B, epsilon);
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("moving_mean"), py::arg("moving_var"), py::arg("y"),
     py::arg("epsilon"), "Inference forward: y = (x - moving_mean) gamma / sqrt(moving_var + eps) + beta.");

  m.def("batchnorm_backward", [](py::handle x_, py::handle dy_, py::object gamma_, py::handle mean_,
                                 py::handle inv_std_, py::object dx_, py::object dgamma_, py::object dbeta_) {
    const char* fn = "batchnorm_backward";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &dy = dbuf(dy_, fn, "dy", "float32");
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, dy, fn, "x", "dy");
    float* gp = per_feature(gamma_, C, fn, "gamma", true);
    float* mup = per_feature(mean_, C, fn, "mean", false);
    float* isp = per_feature(inv_std_, C, fn, "inv_std", false);
    float* dxp = optional_like(dx_, x, fn, "dx", "x");
    float* dgp = per_feature(dgamma_, C, fn, "dgamma", true);
    float* dbp = per_feature(dbeta_, C, fn, "dbeta", true);
    check_batch(A * B, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::batchnorm_backward(p<float>(x), p<float>(dy), gp, mup, isp, dxp, dgp, dbp, A, C, B);
  }, py::arg("x"), py::arg("dy"), py::arg("gamma"), py::arg("mean"), py::arg("inv_std"), py::arg("dx"),
     py::arg("dgamma"), py::arg("dbeta"),
     "Backward of batchnorm_forward_train (dx, dgamma, dbeta, gamma may be None).");

  m.def("channel_affine", [](py::handle x_, py::object center_, py::handle scale_, py::object offset_,
                             py::handle y_) {
    const char* fn = "channel_affine";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    float* cp = per_feature(center_, C, fn, "center", true);
    float* sp = per_feature(scale_, C, fn, "scale", false);
    float* op = per_feature(offset_, C, fn, "offset", true);
    py::gil_scoped_release nogil;
    deepcore::cuda::channel_affine(p<float>(x), cp, sp, op, p<float>(y), A, C, B);
  }, py::arg("x"), py::arg("center"), py::arg("scale"), py::arg("offset"), py::arg("y"),
     "y = (x - center) * scale + offset per feature (center, offset may be None).");

  // ---------------------------------------------------------- dropout family
  // The names, arguments and messages of deepcore._core's; mask is an int32
  // DeviceBuffer of (n + 31) // 32 keep words.
  def_keep_mask_forward(m, "dropout_forward", &deepcore::cuda::dropout_forward,
                        "Inverted dropout: y = x / (1 - rate) where kept, 0 where dropped. y may be x. mask (int32, "
                        "(n + 31) // 32 words, optional) receives the keep bits for backward.");
  def_keep_mask_backward(m, "dropout_backward", &deepcore::cuda::dropout_backward,
                         &deepcore::cuda::dropout_backward_bits,
                         "dx = dy * mask: the forward's mask read from its keep bits, or regenerated from the key "
                         "when mask is None.");
  m.def("dropout_mask", [](py::handle mask_, float rate, uint64_t seed, uint64_t stream, uint32_t call) {
    const char* fn = "dropout_mask";
    check_rate(rate, fn);
    DeviceBuffer& mask = dbuf(mask_, fn, "mask", "float32");
    py::gil_scoped_release nogil;
    deepcore::cuda::dropout_mask(p<float>(mask), index_t(mask.size()), rate, seed, stream, call);
  }, py::arg("mask"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     "The scaled mask of the same key: 1 / (1 - rate) where kept, 0 where dropped.");

  def_keep_mask_forward(m, "alpha_dropout_forward", &deepcore::cuda::alpha_dropout_forward,
                        "Alpha dropout: y = a x + b where kept, a alpha' + b where dropped (mask as in "
                        "dropout_forward).");
  def_keep_mask_backward(m, "alpha_dropout_backward", &deepcore::cuda::alpha_dropout_backward,
                         &deepcore::cuda::alpha_dropout_backward_bits,
                         "dx = a dy where kept, 0 where dropped (from the keep bits, or regenerated).");

  m.def("rrelu_forward", [](py::handle x_, py::handle y_, float lower, float upper, bool training, uint64_t seed,
                            uint64_t stream, uint32_t call) {
    const char* fn = "rrelu_forward";
    check_bounds(lower, upper, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    py::gil_scoped_release nogil;
    deepcore::cuda::rrelu_forward(p<float>(x), p<float>(y), index_t(x.size()), lower, upper, training, seed, stream,
                                  call);
  }, py::arg("x"), py::arg("y"), py::arg("lower"), py::arg("upper"), py::arg("training"), py::arg("seed") = 0,
     py::arg("stream") = 0, py::arg("call") = 0);

  m.def("rrelu_backward", [](py::handle x_, py::handle dy_, py::handle dx_, float lower, float upper, bool training,
                             uint64_t seed, uint64_t stream, uint32_t call) {
    const char* fn = "rrelu_backward";
    check_bounds(lower, upper, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &dy = dbuf(dy_, fn, "dy", "float32"),
                 &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    py::gil_scoped_release nogil;
    deepcore::cuda::rrelu_backward(p<float>(x), p<float>(dy), p<float>(dx), index_t(x.size()), lower, upper,
                                   training, seed, stream, call);
  }, py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("lower"), py::arg("upper"), py::arg("training"),
     py::arg("seed") = 0, py::arg("stream") = 0, py::arg("call") = 0);

  m.def("prelu_forward", [](py::handle x_, py::handle a_, py::handle y_) {
    const char* fn = "prelu_forward";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &a = dbuf(a_, fn, "alpha", "float32"),
                 &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    const PreluView v = prelu_view(x, a, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::prelu_forward(p<float>(x), p<float>(a), p<float>(y), v.B, v.P, v.S, v.Q);
  }, py::arg("x"), py::arg("alpha"), py::arg("y"),
     "y = x where x > 0, else alpha x; alpha has x's per-sample shape with 1 at shared axes.");

  m.def("prelu_backward", [](py::handle x_, py::handle a_, py::handle dy_, py::object dx_, py::handle da_) {
    const char* fn = "prelu_backward";
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &a = dbuf(a_, fn, "alpha", "float32"),
                 &dy = dbuf(dy_, fn, "dy", "float32"), &da = dbuf(da_, fn, "dalpha", "float32");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(a, da, fn, "alpha", "dalpha");
    float* dxp = optional_like(dx_, x, fn, "dx", "x");
    const PreluView v = prelu_view(x, a, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::prelu_backward(p<float>(x), p<float>(a), p<float>(dy), dxp, p<float>(da), v.B, v.P, v.S, v.Q);
  }, py::arg("x"), py::arg("alpha"), py::arg("dy"), py::arg("dx"), py::arg("dalpha"),
     "dx = dy where x > 0, else alpha dy (dx may be None); dalpha = sum of dy x where x <= 0 (overwritten).");

  // GPU dense through cuBLASLt, dense-target losses, reductions, gather.
  bind_dense_twins(m);
  bind_conv_twins(m);
}
