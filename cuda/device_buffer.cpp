#include "device_buffer.h"

#include <cuda_runtime.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "allocator.h"
#include "bind/common.h"
#include "check.h"
#include "stream.h"

namespace deepcore {
namespace cuda {

DeviceBuffer::DeviceBuffer(std::vector<py::ssize_t> shape, const std::string& dtype)
    : shape_(std::move(shape)), dtype_(dtype) {
  if (dtype == "float32") itemsize_ = 4, typestr_ = "<f4";
  else if (dtype == "int32") itemsize_ = 4, typestr_ = "<i4";
  else if (dtype == "int64") itemsize_ = 8, typestr_ = "<i8";
  else throw py::type_error("DeviceBuffer: dtype must be 'float32', 'int32' or 'int64', got '" + dtype + "'");
  size_ = 1;
  for (auto d : shape_) {
    if (d < 0) throw py::value_error("DeviceBuffer: negative dimension in shape");
    if (__builtin_mul_overflow(size_, size_t(d), &size_) || size_ > size_t(PTRDIFF_MAX) / itemsize_)
      throw py::value_error("DeviceBuffer: shape too large (the byte count overflows)");
  }
  check(cudaGetDevice(&device_), "DeviceBuffer: cudaGetDevice");
  data_ = device_alloc(nbytes());
  const cudaError_t e = data_ ? cudaMemsetAsync(data_, 0, nbytes(), current_stream()) : cudaSuccess;
  if (e != cudaSuccess) {
    device_free(data_);  // the destructor does not run for a throwing constructor
    check(e, "DeviceBuffer: cudaMemsetAsync");
  }
}

DeviceBuffer::~DeviceBuffer() { device_free(data_); }

// "stream" names deepcore's stream, where the buffer's writes are queued
// (consumers make their stream wait for it).
py::dict DeviceBuffer::cuda_array_interface() const {
  py::dict d;
  d["shape"] = py::tuple(py::cast(shape_));
  d["typestr"] = typestr_;
  d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(data_), false);
  d["strides"] = py::none();
  d["version"] = 3;
  d["stream"] = reinterpret_cast<uintptr_t>(current_stream());
  return d;
}

py::array DeviceBuffer::to_numpy() const {
  py::array out(py::dtype(dtype_), shape_);
  if (nbytes()) {
    void* dst = out.mutable_data();
    py::gil_scoped_release nogil;
    copy_to_host(dst, data_, nbytes(), "DeviceBuffer.to_numpy");
  }
  return out;
}

void DeviceBuffer::copy_from(py::array a) {
  const char* fn = "DeviceBuffer.copy_from";
  if (!a.dtype().equal(py::dtype(dtype_)))
    throw py::type_error(std::string(fn) + ": expected dtype " + dtype_ + ", got " + bind::dtype_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": the array must be C-contiguous (use np.ascontiguousarray)");
  bool same = a.ndim() == py::ssize_t(shape_.size());
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == shape_[size_t(i)];
  if (!same) throw py::value_error(std::string(fn) + ": expected shape " + shape_str() + ", got " + bind::shape_str(a));
  if (nbytes()) {
    const void* src = a.data();
    const cudaStream_t s = current_stream();
    py::gil_scoped_release nogil;
    check_sync(cudaMemcpyAsync(data_, src, nbytes(), cudaMemcpyHostToDevice, s), "DeviceBuffer.copy_from");
    check_sync(cudaStreamSynchronize(s), "DeviceBuffer.copy_from");
  }
}

std::string DeviceBuffer::shape_str() const {
  std::string s = "(";
  for (size_t i = 0; i < shape_.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape_[i]) + (shape_.size() == 1 ? "," : "");
  return s + ")";
}

// ------------------------------------------------------------ boundary checks

DeviceBuffer& dbuf(py::handle obj, const char* fn, const char* name, const char* want) {
  if (!py::isinstance<DeviceBuffer>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a deepcore._cuda.DeviceBuffer of " + want +
                         " (deepcore._cuda.to_device(array) makes one), got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  DeviceBuffer& b = obj.cast<DeviceBuffer&>();
  if (b.dtype() != want)
    throw py::type_error(std::string(fn) + ": " + name + " must have dtype " + want + ", got " + b.dtype() +
                         " with shape " + b.shape_str());
  int dev = 0;
  check(cudaGetDevice(&dev), fn);
  if (b.device() != dev)
    throw py::value_error(std::string(fn) + ": " + name + " is on cuda:" + std::to_string(b.device()) +
                          " but the current device is cuda:" + std::to_string(dev));
  return b;
}

void same_shape(const DeviceBuffer& a, const DeviceBuffer& b, const char* fn, const char* an, const char* bn) {
  if (a.shape() != b.shape())
    throw py::value_error(std::string(fn) + ": " + bn + " must have the shape of " + an + " " + a.shape_str() +
                          ", got " + b.shape_str());
}

std::pair<index_t, index_t> rows_cols(const DeviceBuffer& a, const char* fn, const char* name) {
  if (a.shape().empty()) throw py::value_error(std::string(fn) + ": " + name + " must have at least one dimension");
  const index_t cols = a.shape().back();
  return {cols ? index_t(a.size()) / cols : 0, cols};
}

float* optional_like(py::handle obj, const DeviceBuffer& like, const char* fn, const char* name, const char* like_name) {
  if (obj.is_none()) return nullptr;
  DeviceBuffer& b = dbuf(obj, fn, name, "float32");
  same_shape(like, b, fn, like_name, name);
  return static_cast<float*>(b.data());
}

// ------------------------------------------------------------------ bindings

namespace {

DeviceBuffer* to_device(py::handle obj) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error("to_device: expected a numpy array, got " + py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  std::string dt = bind::dtype_str(a);
  if (a.dtype().equal(py::dtype::of<int64_t>())) dt = "int64";  // np.longlong spells itself differently
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  auto* b = new DeviceBuffer(shape, dt);  // TypeError for other dtypes
  try {
    b->copy_from(a);
  } catch (...) {
    delete b;
    throw;
  }
  return b;
}

}  // namespace

void def_device_buffer(py::module_& m) {
  py::class_<DeviceBuffer>(m, "DeviceBuffer", "Zero-filled device tensor storage (float32, int32 or int64).")
      .def(py::init<std::vector<py::ssize_t>, const std::string&>(), py::arg("shape"), py::arg("dtype") = "float32")
      .def_property_readonly("shape", [](const DeviceBuffer& b) { return py::tuple(py::cast(b.shape())); })
      .def_property_readonly("dtype", &DeviceBuffer::dtype)
      .def_property_readonly("nbytes", &DeviceBuffer::nbytes)
      .def_property_readonly("size", &DeviceBuffer::size)
      .def_property_readonly("device", &DeviceBuffer::device)
      .def_property_readonly("__cuda_array_interface__", &DeviceBuffer::cuda_array_interface)
      .def("to_numpy", &DeviceBuffer::to_numpy, "Copy to a new host ndarray (synchronizes).")
      .def("copy_from", &DeviceBuffer::copy_from, py::arg("array"), "Copy a host ndarray of the same shape and dtype.")
      .def("__repr__", [](const DeviceBuffer& b) {
        return "DeviceBuffer(shape=" + b.shape_str() + ", dtype=" + b.dtype() + ", device=cuda:" +
               std::to_string(b.device()) + ")";
      });
  m.def("to_device", &to_device, py::arg("array"), "A DeviceBuffer holding a copy of a float32/int32/int64 ndarray.");
}

}  // namespace cuda
}  // namespace deepcore
