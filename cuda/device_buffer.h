// deepcore._cuda.DeviceBuffer, the device tensor the CUDA bindings take, and
// the boundary checks every binding runs on its arguments (dbuf, same_shape,
// ...): TypeError/ValueError naming the function, the argument, what was
// expected and what was received.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace deepcore {
namespace cuda {
namespace py = pybind11;

// Owned, zero-filled device memory of a float32/int32/int64 tensor.
class DeviceBuffer {
 public:
  DeviceBuffer(std::vector<py::ssize_t> shape, const std::string& dtype);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  const std::vector<py::ssize_t>& shape() const { return shape_; }
  const std::string& dtype() const { return dtype_; }
  size_t size() const { return size_; }
  size_t nbytes() const { return size_ * itemsize_; }
  int device() const { return device_; }
  std::string shape_str() const;

  // Version 3 of the CUDA Array Interface.
  py::dict cuda_array_interface() const;
  py::array to_numpy() const;
  void copy_from(py::array a);

 private:
  std::vector<py::ssize_t> shape_;
  std::string dtype_, typestr_;
  size_t itemsize_ = 4, size_ = 0;
  int device_ = 0;
  void* data_ = nullptr;
};

// `obj` as a DeviceBuffer of dtype `want` on the current device, or TypeError/ValueError.
DeviceBuffer& dbuf(py::handle obj, const char* fn, const char* name, const char* want);
// ValueError unless b has a's shape.
void same_shape(const DeviceBuffer& a, const DeviceBuffer& b, const char* fn, const char* an, const char* bn);
// rows = product of all but the last axis, cols = last axis.
std::pair<index_t, index_t> rows_cols(const DeviceBuffer& a, const char* fn, const char* name);
// An optional float32 output with the shape of `like`: its pointer, or null for None.
float* optional_like(py::handle obj, const DeviceBuffer& like, const char* fn, const char* name, const char* like_name);

template <class T>
T* p(DeviceBuffer& b) { return static_cast<T*>(b.data()); }

// Adds DeviceBuffer and to_device to the module.
void def_device_buffer(py::module_& m);

}  // namespace cuda
}  // namespace deepcore
