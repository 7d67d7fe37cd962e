// Bindings for the conv op family (ops/conv.h): NHWC float32 tensors, Keras's
// HWIO kernels, window geometry checked here so that a bad size is a
// ValueError naming the function, never a crash or an empty output.
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <tuple>

#include "bind/common.h"
#include "bind/conv_checks.h"
#include "ops/conv.h"

namespace deepcore {
namespace bind {
namespace {

using namespace conv_checks;

std::vector<py::ssize_t> dims(const py::array& a) { return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()); }

void expect_nhwc(const py::array& a, const Window2D& g, index_t c, bool output, const char* fn, const char* name) {
  expect_shape(a, nhwc(g, c, output), fn, name);
}

}  // namespace

void bind_conv(py::module_& m) {
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
     "(out_h, out_w, pad_top, pad_left) of a 2-D window over an h x w image, as Keras/TensorFlow compute them "
     "(an extent <= 0: the window does not fit).");

  m.def("conv2d_forward", [](py::handle x_, py::handle w_, py::object b_, py::handle col_, py::handle z_,
                             py::handle y_, Pair strides, Pair dilation, const std::string& padding, int kind,
                             float alpha, float beta) {
    const char* fn = "conv2d_forward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), w = checked<float>(w_, fn, "w");
    check_kernel_rank(dims(w), fn);
    const Window2D g = window_of(dims(x), "x", {w.shape(0), w.shape(1)}, strides, dilation, padding, fn);
    expect_shape(w, {-1, -1, g.c, -1}, fn, "w");
    const index_t cout = w.shape(3);
    py::array col = checked<float>(col_, fn, "col", true), z = checked<float>(z_, fn, "z", true),
              y = checked<float>(y_, fn, "y", true);
    expect_shape(col, {g.rows(), g.patch()}, fn, "col");
    expect_nhwc(z, g, cout, true, fn, "z");
    expect_nhwc(y, g, cout, true, fn, "y");
    const float* bp = nullptr;
    py::array b;
    if (!b_.is_none()) {
      b = checked<float>(b_, fn, "b");
      expect_shape(b, {cout}, fn, "b");
      bp = cptr<float>(b);
    }
    if (g.batch == 0 || cout == 0) return;
    py::gil_scoped_release nogil;
    conv2d_forward(g, cptr<float>(x), cptr<float>(w), bp, ptr<float>(col), ptr<float>(z), ptr<float>(y), cout, a);
  }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("col"), py::arg("z"), py::arg("y"), py::arg("strides"),
     py::arg("dilation"), py::arg("padding"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     "col = im2col(x); z = col w + b; y = act(z). x (N, H, W, C), w (KH, KW, C, F) (Keras's HWIO), b (F,) or None, "
     "col (N*OH*OW, KH*KW*C) scratch kept for backward, z and y (N, OH, OW, F) (y may be z as in dense_forward).");

  m.def("conv2d_backward", [](py::handle x_, py::handle w_, py::handle col_, py::handle z_, py::handle y_,
                              py::handle dy_, py::handle dzbuf_, py::object dcol_, py::object dx_, py::handle dw_,
                              py::object db_, Pair strides, Pair dilation, const std::string& padding, int kind,
                              float alpha, float beta, bool dy_is_dz, bool accumulate) {
    const char* fn = "conv2d_backward";
    auto a = act_params(kind, alpha, beta, fn);
    py::array x = checked<float>(x_, fn, "x"), w = checked<float>(w_, fn, "w");
    check_kernel_rank(dims(w), fn);
    const Window2D g = window_of(dims(x), "x", {w.shape(0), w.shape(1)}, strides, dilation, padding, fn);
    expect_shape(w, {-1, -1, g.c, -1}, fn, "w");
    const index_t cout = w.shape(3);
    py::array col = checked<float>(col_, fn, "col"), z = checked<float>(z_, fn, "z"), y = checked<float>(y_, fn, "y"),
              dy = checked<float>(dy_, fn, "dy"), dzb = checked<float>(dzbuf_, fn, "dz_buf", true),
              dw = checked<float>(dw_, fn, "dw", true);
    expect_shape(col, {g.rows(), g.patch()}, fn, "col");
    expect_nhwc(z, g, cout, true, fn, "z");
    expect_nhwc(y, g, cout, true, fn, "y");
    expect_nhwc(dy, g, cout, true, fn, "dy");
    expect_nhwc(dzb, g, cout, true, fn, "dz_buf");
    same_shape(w, dw, fn, "w", "dw");
    float* dxp = nullptr;
    float* dcolp = nullptr;
    float* dbp = nullptr;
    py::array dx, dcol, db;
    if (!dx_.is_none()) {
      dx = checked<float>(dx_, fn, "dx", true);
      same_shape(x, dx, fn, "x", "dx");
      if (dcol_.is_none())
        throw py::value_error(std::string(fn) + ": dcol (a scratch of col's shape) is required with dx");
      dcol = checked<float>(dcol_, fn, "dcol", true);
      same_shape(col, dcol, fn, "col", "dcol");
      dxp = ptr<float>(dx);
      dcolp = ptr<float>(dcol);
    }
    if (!db_.is_none()) {
      db = checked<float>(db_, fn, "db", true);
      expect_shape(db, {cout}, fn, "db");
      dbp = ptr<float>(db);
    }
    if (g.batch == 0 || cout == 0) return;
    py::gil_scoped_release nogil;
    conv2d_backward(g, cptr<float>(col), cptr<float>(w), cptr<float>(z), cptr<float>(y), cptr<float>(dy),
                    ptr<float>(dzb), dcolp, dxp, ptr<float>(dw), dbp, cout, a, dy_is_dz, accumulate);
  }, py::arg("x"), py::arg("w"), py::arg("col"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("dz_buf"),
     py::arg("dcol"), py::arg("dx"), py::arg("dw"), py::arg("db"), py::arg("strides"), py::arg("dilation"),
     py::arg("padding"), py::arg("kind"), py::arg("alpha") = 0.0f, py::arg("beta") = 1.0f,
     py::arg("dy_is_dz") = false, py::arg("accumulate") = false,
     "dz = dy act'(z); db = sum dz; dw = col^T dz; dx = col2im(dz w^T) (through the scratch dcol). x gives the "
     "input's shape; dx, dcol and db may be None.");

  m.def("pool2d_forward", [](py::handle x_, py::handle y_, py::object argmax_, Pair pool_size, Pair strides,
                             const std::string& padding, const std::string& mode) {
    const char* fn = "pool2d_forward";
    const Pool pm = pool_mode(mode, fn);
    py::array x = checked<float>(x_, fn, "x");
    const Window2D g = window_of(dims(x), "x", pool_size, strides, {1, 1}, padding, fn);
    py::array y = checked<float>(y_, fn, "y", true), arg;
    expect_nhwc(y, g, g.c, true, fn, "y");
    int32_t* argp = nullptr;
    if (pm == Pool::Max) {
      if (argmax_.is_none()) throw py::value_error(missing_argmax(fn, true));
      arg = checked<int32_t>(argmax_, fn, "argmax", true);
      same_shape(y, arg, fn, "y", "argmax");
      argp = ptr<int32_t>(arg);
    }
    if (g.rows() == 0 || g.c == 0) return;
    py::gil_scoped_release nogil;
    pool2d_forward(g, pm, cptr<float>(x), ptr<float>(y), argp);
  }, py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
     py::arg("mode"),
     "Max or average pooling of x (N, H, W, C) into y (N, OH, OW, C); max keeps each winner's pixel index "
     "(ih * W + iw) in argmax (int32, y's shape); average ignores 'same' padding as TensorFlow does.");

  m.def("pool2d_backward", [](py::handle dy_, py::object argmax_, py::handle dx_, Pair pool_size, Pair strides,
                              const std::string& padding, const std::string& mode) {
    const char* fn = "pool2d_backward";
    const Pool pm = pool_mode(mode, fn);
    py::array dx = checked<float>(dx_, fn, "dx", true);
    const Window2D g = window_of(dims(dx), "dx", pool_size, strides, {1, 1}, padding, fn);
    py::array dy = checked<float>(dy_, fn, "dy"), arg;
    expect_nhwc(dy, g, g.c, true, fn, "dy");
    const int32_t* argp = nullptr;
    if (pm == Pool::Max) {
      if (argmax_.is_none()) throw py::value_error(missing_argmax(fn, false));
      arg = checked<int32_t>(argmax_, fn, "argmax");
      same_shape(dy, arg, fn, "dy", "argmax");
      argp = cptr<int32_t>(arg);
    }
    if (g.rows() == 0 || g.c == 0) return;
    py::gil_scoped_release nogil;
    pool2d_backward(g, pm, cptr<float>(dy), argp, ptr<float>(dx));
  }, py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
     py::arg("mode"), "dx (overwritten, N, H, W, C) from dy (N, OH, OW, C): through argmax for max, dy / count "
     "over each window for average.");

  m.def("pad2d", [](py::handle x_, py::handle y_, std::array<Pair, 2> padding) {
    const char* fn = "pad2d";
    auto [top, bottom, left, right] = padding4(padding, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    expect_shape(x, {-1, -1, -1, -1}, fn, "x");
    expect_shape(y, {x.shape(0), x.shape(1) + top + bottom, x.shape(2) + left + right, x.shape(3)}, fn, "y");
    py::gil_scoped_release nogil;
    pad2d(cptr<float>(x), ptr<float>(y), x.shape(0), x.shape(1), x.shape(2), x.shape(3), top, bottom, left, right);
  }, py::arg("x"), py::arg("y"), py::arg("padding"),
     "y = x (N, H, W, C) with zero borders ((top, bottom), (left, right)).");

  m.def("crop2d", [](py::handle dy_, py::handle dx_, std::array<Pair, 2> padding) {
    const char* fn = "crop2d";
    auto [top, bottom, left, right] = padding4(padding, fn);
    py::array dy = checked<float>(dy_, fn, "dy"), dx = checked<float>(dx_, fn, "dx", true);
    expect_shape(dx, {-1, -1, -1, -1}, fn, "dx");
    expect_shape(dy, {dx.shape(0), dx.shape(1) + top + bottom, dx.shape(2) + left + right, dx.shape(3)}, fn, "dy");
    py::gil_scoped_release nogil;
    crop2d(cptr<float>(dy), ptr<float>(dx), dx.shape(0), dx.shape(1), dx.shape(2), dx.shape(3), top, bottom, left,
           right);
  }, py::arg("dy"), py::arg("dx"), py::arg("padding"),
     "dx = dy[:, top:top+H, left:left+W, :] (pad2d's backward).");
}

}  // namespace bind
}  // namespace deepcore
