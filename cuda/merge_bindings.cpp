// Bindings of the CUDA merge, concatenate and repeat kernels (merge.cu), with the
// names, arguments and checks of the CPU ones (src/bind/merge.cpp): the
// tensors are DeviceBuffers on the current device, and the shape rules are
// bind/merge_checks.h's, shared with the CPU module.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bind/merge_checks.h"
#include "device_buffer.h"
#include "kernels.h"

namespace deepcore {
namespace cuda {

namespace {

using bind::item_name;
using bind::MergeArgs;
using bind::TensorRef;

// A float32 DeviceBuffer as a TensorRef (None gives an absent one when optional).
TensorRef device_ref(py::handle h, const char* fn, const std::string& name, bool optional = false) {
  TensorRef t;
  if (optional && h.is_none()) return t;
  DeviceBuffer& b = dbuf(h, fn, name.c_str(), "float32");
  t.shape.assign(b.shape().begin(), b.shape().end());
  t.shape_str = b.shape_str();
  t.data = p<float>(b);
  t.present = true;
  return t;
}

// The list (or tuple) holds the buffers alive for the call.
std::vector<TensorRef> device_refs(py::handle seq, const char* fn, const char* name, bool optional = false) {
  if (!py::isinstance<py::list>(seq) && !py::isinstance<py::tuple>(seq))
    throw py::type_error(std::string(fn) + ": " + name + " must be a list of deepcore._cuda.DeviceBuffer float32 "
                         "tensors, got " + py::str(py::type::of(seq)).cast<std::string>());
  py::sequence s = py::reinterpret_borrow<py::sequence>(seq);
  std::vector<TensorRef> out;
  for (size_t i = 0; i < s.size(); ++i) out.push_back(device_ref(s[i], fn, item_name(name, i), optional));
  return out;
}

}  // namespace

void def_merge(py::module_& m) {
  m.def("merge_forward", [](int kind, py::handle xs_, py::handle y_) {
    const char* fn = "merge_forward";
    const MergeOp op = bind::merge_op(kind, fn);
    const std::vector<TensorRef> xs = device_refs(xs_, fn, "xs");
    const TensorRef y = device_ref(y_, fn, "y");
    const MergeArgs a = bind::merge_forward_args(op, xs, y, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::merge_forward(op, a.xs.data(), a.k, y.data, a.n);
  }, py::arg("kind"), py::arg("xs"), py::arg("y"), "CUDA twin of deepcore._core.merge_forward.");

  m.def("merge_backward", [](int kind, py::handle xs_, py::handle dy_, py::handle dxs_) {
    const char* fn = "merge_backward";
    const MergeOp op = bind::merge_op(kind, fn);
    const std::vector<TensorRef> xs = device_refs(xs_, fn, "xs");
    const TensorRef dy = device_ref(dy_, fn, "dy");
    const std::vector<TensorRef> dxs = device_refs(dxs_, fn, "dxs", true);
    const MergeArgs a = bind::merge_backward_args(op, xs, dy, dxs, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::merge_backward(op, a.xs.data(), a.k, dy.data, a.dxs.data(), a.n);
  }, py::arg("kind"), py::arg("xs"), py::arg("dy"), py::arg("dxs"), "CUDA twin of deepcore._core.merge_backward.");

  m.def("concatenate_forward", [](py::handle xs_, py::handle y_, int axis) {
    const char* fn = "concatenate_forward";
    const std::vector<TensorRef> xs = device_refs(xs_, fn, "xs");
    const TensorRef y = device_ref(y_, fn, "y");
    const MergeArgs a = bind::concatenate_args(xs, y, axis, fn, "y");
    py::gil_scoped_release nogil;
    deepcore::cuda::concatenate_forward(a.xs.data(), a.cols.data(), a.k, y.data, a.n);
  }, py::arg("xs"), py::arg("y"), py::arg("axis"), "CUDA twin of deepcore._core.concatenate_forward.");

  m.def("concatenate_backward", [](py::handle xs_, py::handle dy_, py::handle dxs_, int axis) {
    const char* fn = "concatenate_backward";
    const std::vector<TensorRef> xs = device_refs(xs_, fn, "xs");
    const TensorRef dy = device_ref(dy_, fn, "dy");
    const std::vector<TensorRef> dxs = device_refs(dxs_, fn, "dxs", true);
    const MergeArgs a = bind::concatenate_backward_args(xs, dy, dxs, axis, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::concatenate_backward(dy.data, a.cols.data(), a.k, a.dxs.data(), a.n);
  }, py::arg("xs"), py::arg("dy"), py::arg("dxs"), py::arg("axis"),
     "CUDA twin of deepcore._core.concatenate_backward.");

  m.def("repeat_forward", [](py::handle x_, py::handle y_) {
    const char* fn = "repeat_forward";
    const TensorRef x = device_ref(x_, fn, "x"), y = device_ref(y_, fn, "y");
    const index_t n = bind::repeat_count(x, y, fn, "x", "y");
    py::gil_scoped_release nogil;
    deepcore::cuda::repeat_forward(x.data, y.data, x.shape[0], n, x.shape[1]);
  }, py::arg("x"), py::arg("y"), "CUDA twin of deepcore._core.repeat_forward.");

  m.def("repeat_backward", [](py::handle dy_, py::handle dx_) {
    const char* fn = "repeat_backward";
    const TensorRef dy = device_ref(dy_, fn, "dy"), dx = device_ref(dx_, fn, "dx");
    const index_t n = bind::repeat_count(dx, dy, fn, "dx", "dy");
    py::gil_scoped_release nogil;
    deepcore::cuda::repeat_backward(dy.data, dx.data, dx.shape[0], n, dx.shape[1]);
  }, py::arg("dy"), py::arg("dx"), "CUDA twin of deepcore._core.repeat_backward.");
}

}  // namespace cuda
}  // namespace deepcore
