// Bindings for the merge layers' kernels (add, subtract, multiply, average,
// maximum, minimum), concatenate, and RepeatVector's repeat. Lists of tensors come in as Python
// sequences; shapes, counts and the axis are checked by bind/merge_checks.h,
// the rules the CUDA bindings share.
#include <string>
#include <vector>

#include "bind/common.h"
#include "bind/merge_checks.h"
#include "ops/merge.h"
#include "ops/repeat.h"

namespace deepcore {
namespace bind {

namespace {

// Checked float32 C-contiguous arrays, kept alive by `keep`.
struct HostRefs {
  std::vector<py::array> keep;

  TensorRef one(py::handle h, const char* fn, const std::string& name, bool writable, bool optional = false) {
    TensorRef t;
    if (optional && h.is_none()) return t;
    py::array a = checked<float>(h, fn, name.c_str(), writable);
    keep.push_back(a);
    t.shape.assign(a.shape(), a.shape() + a.ndim());
    t.shape_str = shape_str(a);
    t.data = const_cast<float*>(cptr<float>(a));
    t.present = true;
    return t;
  }

  std::vector<TensorRef> list(py::handle seq, const char* fn, const char* name, bool writable, bool optional = false) {
    if (!py::isinstance<py::list>(seq) && !py::isinstance<py::tuple>(seq))
      throw py::type_error(std::string(fn) + ": " + name + " must be a list of numpy float32 arrays, got " +
                           py::str(py::type::of(seq)).cast<std::string>());
    py::sequence s = py::reinterpret_borrow<py::sequence>(seq);
    std::vector<TensorRef> out;
    for (size_t i = 0; i < s.size(); ++i) out.push_back(one(s[i], fn, item_name(name, i), writable, optional));
    return out;
  }
};

}  // namespace

void bind_merge(py::module_& m) {
  m.def("merge_forward", [](int kind, py::handle xs_, py::handle y_) {
    const char* fn = "merge_forward";
    const MergeOp op = merge_op(kind, fn);
    HostRefs refs;
    const std::vector<TensorRef> xs = refs.list(xs_, fn, "xs", false);
    const TensorRef y = refs.one(y_, fn, "y", true);
    const MergeArgs a = merge_forward_args(op, xs, y, fn);
    py::gil_scoped_release nogil;
    merge_forward(op, a.xs.data(), a.k, y.data, a.n);
  }, py::arg("kind"), py::arg("xs"), py::arg("y"),
     "y = op(xs) elementwise over k tensors of one shape (kind: 0 add, 1 subtract (k = 2), 2 multiply, 3 average, "
     "4 maximum, 5 minimum; ops/merge.h). y may be xs[0].");

  m.def("merge_backward", [](int kind, py::handle xs_, py::handle dy_, py::handle dxs_) {
    const char* fn = "merge_backward";
    const MergeOp op = merge_op(kind, fn);
    HostRefs refs;
    const std::vector<TensorRef> xs = refs.list(xs_, fn, "xs", false);
    const TensorRef dy = refs.one(dy_, fn, "dy", false);
    const std::vector<TensorRef> dxs = refs.list(dxs_, fn, "dxs", true, true);
    const MergeArgs a = merge_backward_args(op, xs, dy, dxs, fn);
    py::gil_scoped_release nogil;
    merge_backward(op, a.xs.data(), a.k, dy.data, a.dxs.data(), a.n);
  }, py::arg("kind"), py::arg("xs"), py::arg("dy"), py::arg("dxs"),
     "dxs[i] = the gradient of op's input i (None entries skipped); maximum / minimum send dy to the first input "
     "that holds the extreme (or the first NaN), multiply uses no division.");

  m.def("concatenate_forward", [](py::handle xs_, py::handle y_, int axis) {
    const char* fn = "concatenate_forward";
    HostRefs refs;
    const std::vector<TensorRef> xs = refs.list(xs_, fn, "xs", false);
    const TensorRef y = refs.one(y_, fn, "y", true);
    const MergeArgs a = concatenate_args(xs, y, axis, fn, "y");
    py::gil_scoped_release nogil;
    concatenate_forward(a.xs.data(), a.cols.data(), a.k, y.data, a.n);
  }, py::arg("xs"), py::arg("y"), py::arg("axis"),
     "y = the xs joined along axis (negative counts from the end); every x equal outside the axis.");

  m.def("concatenate_backward", [](py::handle xs_, py::handle dy_, py::handle dxs_, int axis) {
    const char* fn = "concatenate_backward";
    HostRefs refs;
    const std::vector<TensorRef> xs = refs.list(xs_, fn, "xs", false);
    const TensorRef dy = refs.one(dy_, fn, "dy", false);
    const std::vector<TensorRef> dxs = refs.list(dxs_, fn, "dxs", true, true);
    const MergeArgs a = concatenate_backward_args(xs, dy, dxs, axis, fn);
    py::gil_scoped_release nogil;
    concatenate_backward(dy.data, a.cols.data(), a.k, a.dxs.data(), a.n);
  }, py::arg("xs"), py::arg("dy"), py::arg("dxs"), py::arg("axis"),
     "dxs[i] = the slice of dy that xs[i] filled (None entries skipped); xs give the shapes only.");

  m.def("repeat_forward", [](py::handle x_, py::handle y_) {
    const char* fn = "repeat_forward";
    HostRefs refs;
    const TensorRef x = refs.one(x_, fn, "x", false), y = refs.one(y_, fn, "y", true);
    const index_t n = repeat_count(x, y, fn, "x", "y");
    py::gil_scoped_release nogil;
    repeat_forward(x.data, y.data, x.shape[0], n, x.shape[1]);
  }, py::arg("x"), py::arg("y"), "y[r, j, c] = x[r, c]: x (rows, cols) repeated into y (rows, n, cols).");

  m.def("repeat_backward", [](py::handle dy_, py::handle dx_) {
    const char* fn = "repeat_backward";
    HostRefs refs;
    const TensorRef dy = refs.one(dy_, fn, "dy", false), dx = refs.one(dx_, fn, "dx", true);
    const index_t n = repeat_count(dx, dy, fn, "dx", "dy");
    py::gil_scoped_release nogil;
    repeat_backward(dy.data, dx.data, dx.shape[0], n, dx.shape[1]);
  }, py::arg("dy"), py::arg("dx"), "dx[r, c] = sum over j of dy[r, j, c], added in j order (overwritten).");
}

}  // namespace bind
}  // namespace deepcore
