// Python bindings for deepcore._core. Every entry point validates dtype,
// contiguity and shapes here, at the boundary, and raises TypeError or
// ValueError naming the function, the argument, what was expected and what was
// received; kernels then run with the GIL released. Kernels never copy: a
// float64 or strided array is an error, not a silent conversion.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ops/activations.h"
#include "ops/dense.h"
#include "ops/elementwise.h"
#include "ops/gather.h"
#include "ops/losses.h"
#include "ops/optimizers.h"
#include "ops/perceptron.h"
#include "ops/philox.h"
#include "cpu/parallel.h"
#include "bind/common.h"
#include "bind/shared_checks.h"

namespace py = pybind11;
using namespace deepcore;
using namespace deepcore::bind;

namespace {

// An aligned, owned float32/int32/int64 buffer that NumPy views without a copy
// (buffer protocol). 64-byte alignment keeps SIMD loads and cache lines whole.
class Buffer {
 public:
  Buffer(std::vector<py::ssize_t> shape, const std::string& dtype) : shape_(std::move(shape)), dtype_(dtype) {
    if (dtype == "float32") itemsize_ = 4, format_ = py::format_descriptor<float>::format();
    else if (dtype == "int32") itemsize_ = 4, format_ = py::format_descriptor<int32_t>::format();
    else if (dtype == "int64") itemsize_ = 8, format_ = py::format_descriptor<int64_t>::format();
    else throw py::type_error("Buffer: dtype must be 'float32', 'int32' or 'int64', got '" + dtype + "'");
    size_t n = 1;
    for (auto d : shape_) {
      if (d < 0) throw py::value_error("Buffer: negative dimension in shape");
      if (__builtin_mul_overflow(n, size_t(d), &n) || n > size_t(PTRDIFF_MAX) / 64)
        throw py::value_error("Buffer: shape too large (the byte count overflows)");
    }
    bytes_ = n * itemsize_;
    const size_t alloc = std::max<size_t>(64, (bytes_ + 63) / 64 * 64);
    data_ = std::aligned_alloc(64, alloc);
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, alloc);
  }
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  py::buffer_info info() {
    std::vector<py::ssize_t> strides(shape_.size());
    py::ssize_t s = py::ssize_t(itemsize_);
    for (size_t i = shape_.size(); i-- > 0;) strides[i] = s, s *= shape_[i];
    return py::buffer_info(data_, py::ssize_t(itemsize_), format_, py::ssize_t(shape_.size()), shape_, strides);
  }
  const std::vector<py::ssize_t>& shape() const { return shape_; }
  const std::string& dtype() const { return dtype_; }
  size_t nbytes() const { return bytes_; }

 private:
  std::vector<py::ssize_t> shape_;
  std::string dtype_, format_;
  size_t itemsize_ = 4, bytes_ = 0;
  void* data_ = nullptr;
};

// A float32 scalar tensor (shape () or (1,)), the CUDA bindings' rule (bind/shared_checks.h).
py::array scalar_tensor(py::handle obj, const char* fn, const char* name, bool writable) {
  py::array a = checked<float>(obj, fn, name, writable);
  check_scalar_shape(std::vector<index_t>(a.shape(), a.shape() + a.ndim()), shape_str(a), fn, name);
  return a;
}

// Non-finite floats (NaN, +-Inf: all exponent bits set) in x[0, n). A test on
// the bits vectorizes; std::isfinite in the same loop did not (fit's check of
// 55000x784 inputs on 2 threads: 72 ms with std::isfinite, 12 ms with the bit
// test; the OpenMP loop with std::isfinite took 25-36 ms).
DC_MULTIVERSION int64_t count_nonfinite_run(const float* x, index_t n) {
  uint32_t bad = 0;  // n <= kBlock below
  for (index_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof(u));
    bad += (u & 0x7F800000u) == 0x7F800000u;
  }
  return bad;
}

}  // namespace

// The thread count of deepcore's pool, for threadpoolctl (python/deepcore/threads.py
// registers a controller that calls these through ctypes). C symbols with
// default visibility: the module is otherwise built with hidden visibility.
// They leave OpenBLAS alone: threadpoolctl controls deepcore's OpenBLAS
// (libscipy_openblas) through its own OpenBLAS controller.
extern "C" __attribute__((visibility("default"))) int deepcore_get_num_threads() { return pool_num_threads(); }
extern "C" __attribute__((visibility("default"))) int deepcore_set_num_threads(int n) {
  // threadpoolctl passes a positive count; anything else is refused (returns -1), never thrown across C.
  try {
    pool_set_num_threads(n);
    return 0;
  } catch (...) {
    return -1;
  }
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "deepcore C++ kernels (CPU backend)";

  py::class_<Buffer>(m, "Buffer", py::buffer_protocol(),
                     "64-byte aligned host tensor storage; np.asarray(buf) views it without a copy.")
      .def(py::init<std::vector<py::ssize_t>, const std::string&>(), py::arg("shape"), py::arg("dtype") = "float32")
      .def_buffer(&Buffer::info)
      .def_property_readonly("shape", &Buffer::shape)
      .def_property_readonly("dtype", &Buffer::dtype)
      .def_property_readonly("nbytes", &Buffer::nbytes);

  // ---------------------------------------------------------------- runtime
  m.def("set_num_threads", [](int n) {
    pool_set_num_threads(n);  // ValueError for n < 1
    scipy_openblas_set_num_threads(n);
  }, py::arg("n"), "Threads for deepcore's kernels (its own thread pool) and for its OpenBLAS (scipy_openblas32's).");
  m.def("get_num_threads", []() { return pool_num_threads(); },
        "Threads of deepcore's thread pool, the calling thread included.");
  m.def("parallel_thresholds", []() {
    py::dict d;
    d["kParallelThreshold"] = kParallelThreshold;
    d["kOptimizerParallelThreshold"] = kOptimizerParallelThreshold;
    d["kNormalParallelThreshold"] = kNormalParallelThreshold;
    d["kGatherParallelBytes"] = kGatherParallelBytes;
    d["kPreluBackwardParallelChannels"] = kPreluBackwardParallelChannels;
    d["kWindowParallelThreshold"] = kWindowParallelThreshold;
    return d;
  }, "The sizes at which CPU kernels split their work across threads (src/ops/common.h), name -> int.");
  m.def("blas_config", []() { return std::string(scipy_openblas_get_config()); });
  m.def("blas_num_threads", []() { return scipy_openblas_get_num_threads(); });

  // ------------------------------------------------------------ activations
  m.def("activation_forward", [](int kind, py::handle x_, py::handle y_, float alpha, float beta) {
    const char* fn = "activation_forward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    same_shape(x, y, fn, "x", "y");
    auto [rows, cols] = rows_cols(x, fn, "x");
    py::gil_scoped_release nogil;
    activation_forward(a, cptr<float>(x), ptr<float>(y), rows, cols);
  }, py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f);

  m.def("activation_backward", [](int kind, py::handle x_, py::handle y_, py::handle dy_, py::handle dx_, float alpha,
                                  float beta) {
    const char* fn = "activation_backward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y"), dy = checked<float>(dy_, fn, "dy"),
              dx = checked<float>(dx_, fn, "dx", true);
    same_shape(x, y, fn, "x", "y");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    auto [rows, cols] = rows_cols(x, fn, "x");
    py::gil_scoped_release nogil;
    activation_backward(a, cptr<float>(x), cptr<float>(y), cptr<float>(dy), ptr<float>(dx), rows, cols);
  }, py::arg("kind"), py::arg("x"), py::arg("y"), py::arg("dy"), py::arg("dx"), py::arg("alpha") = 0.0f,
     py::arg("beta") = 1.0f);

  // Swish with a learnable beta: beta (and the gradient dbeta) are float32
  // scalar tensors, read (written) by the kernel, as on the device.
  m.def("swish_forward", [](py::handle x_, py::handle y_, py::handle beta_) {
    const char* fn = "swish_forward";
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    same_shape(x, y, fn, "x", "y");
    py::array beta = scalar_tensor(beta_, fn, "beta", false);
    py::gil_scoped_release nogil;
    swish_forward(cptr<float>(x), ptr<float>(y), index_t(x.size()), cptr<float>(beta));
  }, py::arg("x"), py::arg("y"), py::arg("beta"),
     "y = x sigmoid(beta x); beta a float32 tensor of shape () or (1,), read when the kernel runs.");

  m.def("swish_backward", [](py::handle x_, py::handle dy_, py::handle dx_, py::handle beta_) {
    const char* fn = "swish_backward";
    py::array x = checked<float>(x_, fn, "x"), dy = checked<float>(dy_, fn, "dy"),
              dx = checked<float>(dx_, fn, "dx", true);
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    py::array beta = scalar_tensor(beta_, fn, "beta", false);
    py::gil_scoped_release nogil;
    swish_backward(cptr<float>(x), cptr<float>(dy), ptr<float>(dx), index_t(x.size()), cptr<float>(beta));
  }, py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("beta"),
     "dx = dy (s + beta x s (1 - s)), s = sigmoid(beta x); beta as in swish_forward.");

  m.def("swish_beta_grad", [](py::handle x_, py::handle dy_, py::handle beta_, py::handle dbeta_) {
    const char* fn = "swish_beta_grad";
    py::array x = checked<float>(x_, fn, "x"), dy = checked<float>(dy_, fn, "dy");
    same_shape(x, dy, fn, "x", "dy");
    py::array beta = scalar_tensor(beta_, fn, "beta", false), dbeta = scalar_tensor(dbeta_, fn, "dbeta", true);
    py::gil_scoped_release nogil;
    swish_beta_grad(cptr<float>(x), cptr<float>(dy), index_t(x.size()), cptr<float>(beta), ptr<float>(dbeta));
  }, py::arg("x"), py::arg("dy"), py::arg("beta"), py::arg("dbeta"),
     "dbeta = sum dy x^2 s (1 - s), s = sigmoid(beta x), summed in double and stored as float32 (overwritten); "
     "beta and dbeta float32 tensors of shape () or (1,).");

  // ------------------------------------------------------------------ dense
  m.def("sgemm", [](py::handle a_, py::handle b_, py::handle c_, bool ta, bool tb, float alpha, float beta) {
    const char* fn = "sgemm";
    py::array a = checked<float>(a_, fn, "a"), b = checked<float>(b_, fn, "b"), c = checked<float>(c_, fn, "c", true);
    expect_shape(a, {-1, -1}, fn, "a");
    expect_shape(b, {-1, -1}, fn, "b");
    const index_t m_ = ta ? a.shape(1) : a.shape(0), k = ta ? a.shape(0) : a.shape(1);
    const index_t kb = tb ? b.shape(1) : b.shape(0), n = tb ? b.shape(0) : b.shape(1);
    if (k != kb)
      throw py::value_error("sgemm: inner dimensions differ: op(a) is (" + std::to_string(m_) + ", " +
                            std::to_string(k) + "), op(b) is (" + std::to_string(kb) + ", " + std::to_string(n) + ")");
    expect_shape(c, {m_, n}, fn, "c");
    py::gil_scoped_release nogil;
    sgemm(ta, tb, m_, n, k, alpha, cptr<float>(a), a.shape(1), cptr<float>(b), b.shape(1), beta, ptr<float>(c), n);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false, py::arg("trans_b") = false,
     py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, "c = alpha op(a) op(b) + beta c (OpenBLAS sgemm)");

  m.def("dense_forward", [](py::handle x_, py::handle w_, py::object b_, py::handle z_, py::handle y_, int kind,
                            float alpha, float beta) {
    const char* fn = "dense_forward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), w = checked<float>(w_, fn, "w");
    expect_shape(x, {-1, -1}, fn, "x");
    expect_shape(w, {x.shape(1), -1}, fn, "w");
    const index_t batch = x.shape(0), in = x.shape(1), out = w.shape(1);
    py::array z = checked<float>(z_, fn, "z", true), y = checked<float>(y_, fn, "y", true);
    expect_shape(z, {batch, out}, fn, "z");
    expect_shape(y, {batch, out}, fn, "y");
    const float* bp = nullptr;
    py::array b;
    if (!b_.is_none()) {
      b = checked<float>(b_, fn, "b");
      expect_shape(b, {out}, fn, "b");
      bp = cptr<float>(b);
    }
    py::gil_scoped_release nogil;
    dense_forward(cptr<float>(x), cptr<float>(w), bp, ptr<float>(z), ptr<float>(y), batch, in, out, a);
  }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("z"), py::arg("y"), py::arg("kind"), py::arg("alpha") = 0.0f,
     py::arg("beta") = 1.0f, "z = x w + b; y = act(z) (y may be z for linear/sigmoid/tanh/relu)");

  m.def("dense_backward", [](py::handle x_, py::handle w_, py::handle z_, py::handle y_, py::handle dy_,
                             py::handle dzbuf_, py::object dx_, py::handle dw_, py::object db_, int kind, float alpha,
                             float beta, bool dy_is_dz, bool accumulate) {
    const char* fn = "dense_backward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), w = checked<float>(w_, fn, "w");
    expect_shape(x, {-1, -1}, fn, "x");
    expect_shape(w, {x.shape(1), -1}, fn, "w");
    const index_t batch = x.shape(0), in = x.shape(1), out = w.shape(1);
    py::array z = checked<float>(z_, fn, "z"), y = checked<float>(y_, fn, "y"), dy = checked<float>(dy_, fn, "dy"),
              dzb = checked<float>(dzbuf_, fn, "dz_buf", true), dw = checked<float>(dw_, fn, "dw", true);
    expect_shape(z, {batch, out}, fn, "z");
    expect_shape(y, {batch, out}, fn, "y");
    expect_shape(dy, {batch, out}, fn, "dy");
    expect_shape(dzb, {batch, out}, fn, "dz_buf");
    expect_shape(dw, {in, out}, fn, "dw");
    float* dxp = nullptr;
    float* dbp = nullptr;
    py::array dx, db;
    if (!dx_.is_none()) {
      dx = checked<float>(dx_, fn, "dx", true);
      expect_shape(dx, {batch, in}, fn, "dx");
      dxp = ptr<float>(dx);
    }
    if (!db_.is_none()) {
      db = checked<float>(db_, fn, "db", true);
      expect_shape(db, {out}, fn, "db");
      dbp = ptr<float>(db);
    }
    py::gil_scoped_release nogil;
    dense_backward(cptr<float>(x), cptr<float>(w), cptr<float>(z), cptr<float>(y), cptr<float>(dy), ptr<float>(dzb),
                   dxp, ptr<float>(dw), dbp, batch, in, out, a, dy_is_dz, accumulate);
  }, py::arg("x"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("dz_buf"), py::arg("dx"),
     py::arg("dw"), py::arg("db"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     py::arg("dy_is_dz") = false, py::arg("accumulate") = false);

  // ----------------------------------------------------------------- losses
  m.def("loss_forward_backward", [](int kind, py::handle p_, py::handle t_, py::object g_, float param) {
    const char* fn = "loss_forward_backward";
    if (kind < 0 || kind > int(Loss::CategoricalCrossentropyLogits))
      throw py::value_error(std::string(fn) + ": unknown loss code " + std::to_string(kind));
    py::array p = checked<float>(p_, fn, "y_pred"), t = checked<float>(t_, fn, "y_true");
    same_shape(p, t, fn, "y_pred", "y_true");
    auto [rows, cols] = rows_cols(p, fn, "y_pred");
    if (rows * cols == 0) throw py::value_error(std::string(fn) + ": y_pred is empty");
    auto [g, gp] = optional_output_like(g_, p, fn, "grad", "y_pred");
    py::gil_scoped_release nogil;
    return loss_forward_backward(Loss(kind), cptr<float>(p), cptr<float>(t), gp, rows, cols, param);
  }, py::arg("kind"), py::arg("y_pred"), py::arg("y_true"), py::arg("grad"), py::arg("param") = 1.0f);

  m.def("sparse_categorical_crossentropy", [](py::handle p_, py::handle l_, py::object g_, bool from_logits) {
    const char* fn = "sparse_categorical_crossentropy";
    py::array p = checked<float>(p_, fn, "y_pred"), l = checked<int32_t>(l_, fn, "labels");
    expect_shape(p, {-1, -1}, fn, "y_pred");
    expect_shape(l, {p.shape(0)}, fn, "labels");
    if (p.shape(0) == 0 || p.shape(1) == 0) throw py::value_error(std::string(fn) + ": y_pred is empty");
    auto [g, gp] = optional_output_like(g_, p, fn, "grad", "y_pred");
    int64_t correct = 0;
    double loss;
    {
      py::gil_scoped_release nogil;
      loss = sparse_categorical_crossentropy(cptr<float>(p), cptr<int32_t>(l), gp, p.shape(0), p.shape(1),
                                             from_logits, &correct);
    }
    return py::make_tuple(loss, correct);
  }, py::arg("y_pred"), py::arg("labels"), py::arg("grad"), py::arg("from_logits"),
     "Returns (mean loss, number of rows whose argmax equals the label).");

  // ----------------------------------------------------------------- random
  m.def("philox4x32_10", [](std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
    auto r = philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
    return std::array<uint32_t, 4>{r.v[0], r.v[1], r.v[2], r.v[3]};
  }, py::arg("counter"), py::arg("key"));
  m.def("philox_uniform", [](py::handle o_, uint64_t seed, uint64_t stream, float low, float high) {
    py::array o = checked<float>(o_, "philox_uniform", "out", true);
    py::gil_scoped_release nogil;
    philox_uniform(ptr<float>(o), index_t(o.size()), seed, stream, low, high);
  }, py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("low") = 0.0f, py::arg("high") = 1.0f);
  m.def("philox_normal", [](py::handle o_, uint64_t seed, uint64_t stream, float mean, float stddev, bool truncated) {
    py::array o = checked<float>(o_, "philox_normal", "out", true);
    py::gil_scoped_release nogil;
    philox_normal(ptr<float>(o), index_t(o.size()), seed, stream, mean, stddev, truncated);
  }, py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("mean") = 0.0f, py::arg("stddev") = 1.0f,
     py::arg("truncated") = false);
  m.def("philox_permutation", [](int64_t n, uint64_t seed, uint64_t stream) {
    if (n < 0) throw py::value_error("philox_permutation: n must be >= 0, got " + std::to_string(n));
    py::array_t<int64_t> out(n);
    int64_t* p = out.mutable_data();
    py::gil_scoped_release nogil;
    philox_permutation(p, n, seed, stream);
    return out;
  }, py::arg("n"), py::arg("seed"), py::arg("stream"));

  // ----------------------------------------------------------------- gather
  m.def("gather_rows", [](py::handle s_, py::handle i_, py::handle d_) {
    const char* fn = "gather_rows";
    if (!py::isinstance<py::array>(s_) || !py::isinstance<py::array>(d_))
      throw py::type_error("gather_rows: src and dst must be numpy arrays");
    py::array s = py::reinterpret_borrow<py::array>(s_), d = py::reinterpret_borrow<py::array>(d_);
    py::array idx = checked<int64_t>(i_, fn, "indices");
    if (!(s.flags() & py::array::c_style) || !(d.flags() & py::array::c_style))
      throw py::value_error("gather_rows: src and dst must be C-contiguous");
    if (!d.writeable()) throw py::value_error("gather_rows: dst must be writable");
    if (!s.dtype().equal(d.dtype()))
      throw py::type_error("gather_rows: dst dtype " + dtype_str(d) + " differs from src dtype " + dtype_str(s));
    if (s.ndim() < 1) throw py::value_error("gather_rows: src must have at least one dimension, got a scalar");
    expect_shape(idx, {-1}, fn, "indices");
    std::vector<py::ssize_t> want(s.shape(), s.shape() + s.ndim());
    want[0] = idx.shape(0);
    expect_shape(d, want, fn, "dst");
    const size_t row_bytes = s.shape(0) ? size_t(s.nbytes()) / size_t(s.shape(0)) : 0;
    py::gil_scoped_release nogil;
    gather_rows(s.data(), s.shape(0), row_bytes, cptr<int64_t>(idx), idx.shape(0), d.mutable_data());
  }, py::arg("src"), py::arg("indices"), py::arg("dst"));

  m.def("count_nonfinite", [](py::handle x_) {
    py::array x = checked<float>(x_, "count_nonfinite", "x");
    const float* p = cptr<float>(x);
    const index_t n = x.size();
    py::gil_scoped_release nogil;
    constexpr index_t kBlock = 4096;  // integer counts: exact in any order
    return sum_blocks_in_order((n + kBlock - 1) / kBlock, int64_t(0), [&](index_t k) {
      return count_nonfinite_run(p + k * kBlock, std::min(kBlock, n - k * kBlock));
    }, n);
  }, py::arg("x"));

  // ------------------------------------------------------------- perceptron
  m.def("perceptron_epoch", [](py::handle x_, py::handle t_, py::handle w_, py::handle b_, py::object order_,
                               float eta) {
    const char* fn = "perceptron_epoch";
    py::array x = checked<float>(x_, fn, "x"), t = checked<float>(t_, fn, "targets"),
              w = checked<float>(w_, fn, "w", true), b = checked<float>(b_, fn, "b", true);
    expect_shape(x, {-1, -1}, fn, "x");
    expect_shape(w, {x.shape(1), -1}, fn, "w");
    expect_shape(t, {x.shape(0), w.shape(1)}, fn, "targets");
    expect_shape(b, {w.shape(1)}, fn, "b");
    const int64_t* op = nullptr;
    py::array order;
    if (!order_.is_none()) {
      order = checked<int64_t>(order_, fn, "order");
      expect_shape(order, {x.shape(0)}, fn, "order");
      op = cptr<int64_t>(order);
      for (py::ssize_t i = 0; i < order.shape(0); ++i)
        if (op[i] < 0 || op[i] >= x.shape(0)) throw py::value_error("perceptron_epoch: order has an index out of range");
    }
    py::gil_scoped_release nogil;
    return perceptron_epoch(cptr<float>(x), cptr<float>(t), ptr<float>(w), ptr<float>(b), x.shape(0), x.shape(1),
                            w.shape(1), op, eta);
  }, py::arg("x"), py::arg("targets"), py::arg("w"), py::arg("b"), py::arg("order"), py::arg("eta"));

  // ------------------------------------------------------------- optimizers
  m.def("axpby", [](float a, py::handle x_, float b, py::handle y_) {
    const char* fn = "axpby";
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    same_shape(y, x, fn, "y", "x");
    py::gil_scoped_release nogil;
    axpby(a, cptr<float>(x), b, ptr<float>(y), index_t(y.size()));
  }, py::arg("a"), py::arg("x"), py::arg("b"), py::arg("y"),
     "y <- a x + b y in place (float32 C-contiguous arrays of one shape); a == 0 ignores x's values.");

  m.def("sgd_update", [](py::handle w_, py::handle g_, py::object v_, float lr, float momentum, bool nesterov) {
    const char* fn = "sgd_update";
    py::array w = checked<float>(w_, fn, "params", true), g = checked<float>(g_, fn, "grads");
    same_shape(w, g, fn, "params", "grads");
    auto [v, vp] = optional_output_like(v_, w, fn, "velocity", "params");
    py::gil_scoped_release nogil;
    sgd_update(ptr<float>(w), cptr<float>(g), vp, index_t(w.size()), lr, momentum, nesterov);
  }, py::arg("params"), py::arg("grads"), py::arg("velocity"), py::arg("learning_rate"), py::arg("momentum"),
     py::arg("nesterov"));

  bind_batchnorm(m);
  bind_conv(m);
  bind_dropout(m);
  bind_merge(m);
  bind_training(m);
}
