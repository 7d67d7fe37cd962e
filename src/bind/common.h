// Boundary helpers shared by every binding file: validate dtype, contiguity,
// shape and writability, and raise TypeError / ValueError naming the function,
// the argument, what was expected and what was received.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/activations.h"

namespace deepcore {
namespace bind {
namespace py = pybind11;

// Error messages are built with std::to_string, never with iostreams: a
// stream formats through the locale's facets, and on a GPU machine (PyTorch,
// cuBLASLt and deepcore in one process) `ostringstream << long` crashed inside
// the facet lookup. to_string formats with snprintf and no locale.
inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i)) + (a.ndim() == 1 ? "," : "");
  return s + ")";
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Checks that `obj` is a C-contiguous ndarray of dtype T (writable if asked)
// and returns it. Raises TypeError / ValueError otherwise.
template <class T>
py::array checked(py::handle obj, const char* fn, const char* name, bool writable = false) {
  const char* want = std::is_same<T, float>::value     ? "float32"
                     : std::is_same<T, int32_t>::value ? "int32"
                     : std::is_same<T, int64_t>::value ? "int64"
                                                       : "?";
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a numpy " + want + " array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<T>()))
    throw py::type_error(std::string(fn) + ": " + name + " must have dtype " + want + ", got " + dtype_str(a) +
                         " with shape " + shape_str(a) + " (convert it once with .astype(np." + want + "))");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": " + name + " must be C-contiguous, got a strided array of shape " +
                          shape_str(a) + " (use np.ascontiguousarray)");
  if (writable && !a.writeable())
    throw py::value_error(std::string(fn) + ": " + name + " must be writable");
  return a;
}

// Raises ValueError unless a.shape == expected (-1 matches any extent).
inline void expect_shape(const py::array& a, std::vector<py::ssize_t> expected, const char* fn, const char* name) {
  bool ok = a.ndim() == py::ssize_t(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || a.shape(i) == expected[i];
  if (ok) return;
  std::string s = std::string(fn) + ": " + name + " must have shape (";
  for (size_t i = 0; i < expected.size(); ++i)
    s += (i ? ", " : "") + (expected[i] < 0 ? std::string("any") : std::to_string(expected[i]));
  throw py::value_error(s + "), got " + shape_str(a));
}

template <class T>
T* ptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }
template <class T>
const T* cptr(const py::array& a) { return static_cast<const T*>(a.data()); }

// rows = product of all but the last axis, cols = last axis.
inline std::pair<index_t, index_t> rows_cols(const py::array& a, const char* fn, const char* name) {
  if (a.ndim() < 1) throw py::value_error(std::string(fn) + ": " + name + " must have at least one dimension");
  index_t cols = a.shape(a.ndim() - 1);
  return {cols ? index_t(a.size()) / cols : 0, cols};
}

inline void same_shape(const py::array& a, const py::array& b, const char* fn, const char* an, const char* bn) {
  bool ok = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; ok && i < a.ndim(); ++i) ok = a.shape(i) == b.shape(i);
  if (!ok)
    throw py::value_error(std::string(fn) + ": " + bn + " must have the shape of " + an + " " + shape_str(a) +
                          ", got " + shape_str(b));
}

// An optional, writable float32 argument with the shape of `like`:
// (the array, to keep it alive; its data pointer, or null for None).
inline std::pair<py::array, float*> optional_output_like(py::object obj, const py::array& like, const char* fn,
                                                  const char* name, const char* like_name) {
  if (obj.is_none()) return {py::array(), nullptr};
  py::array a = checked<float>(obj, fn, name, true);
  same_shape(like, a, fn, like_name, name);
  return {a, ptr<float>(a)};
}

inline ActParams act_params(int kind, float alpha, float beta, const char* fn) {
  if (kind < 0 || kind >= kNumActs)
    throw py::value_error(std::string(fn) + ": unknown activation code " + std::to_string(kind));
  return ActParams{Act(kind), alpha, beta};
}


// Each op family registers its functions from its own file in src/bind/.
void bind_batchnorm(py::module_& m);
void bind_conv(py::module_& m);
void bind_dropout(py::module_& m);
void bind_merge(py::module_& m);
void bind_training(py::module_& m);

}  // namespace bind
}  // namespace deepcore
