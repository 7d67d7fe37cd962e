// deepcore._cuda.DeviceBuffer, the device tensor the CUDA bindings take: a
// C-contiguous float32/int32/int64 tensor whose device memory (Storage) is
// shared, so that reshape and indexing along axis 0 return views (storage +
// byte offset + shape) that keep it alive. Also the boundary checks every
// binding runs on its arguments (dbuf, same_shape, ...): TypeError/ValueError
// naming the function, the argument, what was expected and what was received.
//
// Everything a DeviceBuffer queues (zero fill, copies, fills) goes to its
// device's deepcore stream (stream.h), as the kernels do; the host waits only
// where data comes back to it (to_numpy) or where the caller asked for a
// blocking copy.
#pragma once
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace deepcore {
namespace cuda {
namespace py = pybind11;

// The element types a DeviceBuffer holds.
struct DType {
  const char* name;     // "float32", "int32", "int64" (NumPy's names)
  const char* typestr;  // __cuda_array_interface__ typestr
  size_t itemsize;
  uint8_t dl_code;      // DLPack type code (kDLInt = 0, kDLFloat = 2)
};
// The DType called `name`, or nullptr.
const DType* find_dtype(const std::string& name);
// The three DTypes.
extern const DType kDTypes[3];

std::string shape_str(const std::vector<py::ssize_t>& shape);
// The name of obj's type, for messages.
std::string type_name(py::handle obj);
// Number of elements of `shape`; ValueError naming `fn` for a negative
// dimension, or when the byte count (or the product of the non-zero
// dimensions, so that any view's row size fits too) overflows.
size_t checked_size(const std::vector<py::ssize_t>& shape, size_t itemsize, const char* fn);

// `device` (an int) after checking that such a device exists, or the current
// device for None. TypeError for another type, ValueError naming `fn` for an
// index out of range (the message lists the devices there are).
int checked_device(py::handle device, const char* fn);

// Makes `device` current for a scope, so that what a buffer queues goes to its
// own device (the kernel bindings require the current device anyway).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Device memory shared by a DeviceBuffer and its views; released when the last
// of them dies.
class Storage {
 public:
  // `bytes` from the caching allocator on the current device, zero-filled on
  // deepcore's stream when `zero`.
  static std::shared_ptr<Storage> allocate(size_t bytes, bool zero);
  // Memory another library owns (a DLPack or __cuda_array_interface__ import),
  // on the current device. `release` (which must not throw) runs once, when the
  // last view dies, after the work deepcore queued on it has finished.
  static std::shared_ptr<Storage> borrow(void* ptr, size_t bytes, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  char* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }
  // deepcore's stream on this storage's device.
  cudaStream_t stream() const { return stream_; }
  // Called when the memory is handed to another library (DLPack export,
  // __cuda_array_interface__), whose streams may still use it after the last
  // deepcore view dies: the block then returns to the cache only after a
  // device synchronization.
  void mark_shared() { shared_.store(true); }

 private:
  Storage() = default;
  char* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool owned_ = false;            // from device_alloc
  std::function<void()> release_;  // borrowed memory
  std::atomic<bool> shared_{false};
};

class DeviceBuffer {
 public:
  // A new zero-filled tensor on the current device. TypeError for another
  // dtype, ValueError for a negative or overflowing shape, CudaError without a
  // device.
  DeviceBuffer(std::vector<py::ssize_t> shape, const std::string& dtype);
  // A new tensor whose contents the caller overwrites at once (no zero fill).
  static DeviceBuffer uninitialized(std::vector<py::ssize_t> shape, const std::string& dtype);
  // A view: `shape` elements of `dtype` from byte `offset` of `storage` on
  // (the caller checks that they fit).
  DeviceBuffer(std::shared_ptr<Storage> storage, size_t offset, std::vector<py::ssize_t> shape, const DType& dtype);

  // The first element (storage + offset).
  void* data() const { return storage_->ptr() + offset_; }
  const std::vector<py::ssize_t>& shape() const { return shape_; }
  std::string dtype() const { return dtype_->name; }
  const DType& dtype_info() const { return *dtype_; }
  size_t size() const { return size_; }
  size_t nbytes() const { return size_ * dtype_->itemsize; }
  int device() const { return storage_->device(); }
  cudaStream_t stream() const { return storage_->stream(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::string shape_str() const;

  // reshape(*shape) or reshape(shape), one -1 inferred: a view.
  DeviceBuffer reshape(py::args args) const;
  // The view that `key` selects along axis 0: an int drops the axis, a slice
  // with step 1 keeps it, Ellipsis is the whole tensor. `fn` names the caller.
  DeviceBuffer index(py::handle key, const char* fn) const;
  // self[key] = value: a NumPy array or Python/NumPy scalar (cast on the host
  // to this dtype; the target's shape, or a single element filled
  // everywhere), or a DeviceBuffer of the same dtype and shape (copied on the
  // device, through a temporary when the two overlap).
  void setitem(py::handle key, py::handle value);
  // A new tensor with the same contents (copied on the device).
  DeviceBuffer copy() const;
  // A new host ndarray with the contents (waits for deepcore's stream).
  py::array to_numpy() const;
  // Copies a C-contiguous ndarray of this shape and dtype. Blocking: returns
  // when the data is on the device. non_blocking: the array is first copied
  // to pinned staging memory, so the call returns before the device copy ends
  // and the caller may overwrite the array at once.
  void copy_from(py::handle array, bool non_blocking);
  // Version 3 of the CUDA Array Interface; "stream" is deepcore's stream.
  py::dict cuda_array_interface() const;
  // __dlpack__ of the Python array API (interop.cpp): a "dltensor" capsule, or
  // "dltensor_versioned" when max_version >= (1, 0). The consumer's `stream`
  // (None: the legacy default stream; -1: none) is made to wait for ours.
  py::object dlpack(py::object stream, py::object max_version, py::object dl_device, py::object copy) const;
  // (kDLCUDA = 2, device ordinal).
  py::tuple dlpack_device() const;

 private:
  static DeviceBuffer create(std::vector<py::ssize_t> shape, const std::string& dtype, bool zero);
  // Host-to-device copy of nbytes() from `src`.
  void upload(const void* src, bool non_blocking, const char* fn) const;
  // Every element = the `itemsize` bytes at `value`.
  void fill(const void* value) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  std::vector<py::ssize_t> shape_;
  const DType* dtype_;
  size_t size_ = 0;
};

// `obj` as a DeviceBuffer of dtype `want` on the current device, or TypeError/ValueError.
DeviceBuffer& dbuf(py::handle obj, const char* fn, const char* name, const char* want);
// ValueError unless b has a's shape.
void same_shape(const DeviceBuffer& a, const DeviceBuffer& b, const char* fn, const char* an, const char* bn);
// rows = product of all but the last axis, cols = last axis.
std::pair<index_t, index_t> rows_cols(const DeviceBuffer& a, const char* fn, const char* name);
// An optional float32 output with the shape of `like`: its pointer, or null for None.
float* optional_like(py::handle obj, const DeviceBuffer& like, const char* fn, const char* name, const char* like_name);

// The first element of a checked buffer, typed (views included).
template <class T>
T* p(DeviceBuffer& b) { return static_cast<T*>(b.data()); }

// A zero-copy DeviceBuffer over another library's CUDA tensor (interop.cpp):
// `obj` has __dlpack__ (asked with our stream and max_version (1, 0)) or
// __cuda_array_interface__; a DeviceBuffer gives a view of its own storage.
// The producer's memory stays alive until the last view dies.
DeviceBuffer from_dlpack(py::handle obj);

// Adds DeviceBuffer, to_device and from_dlpack to the module.
void def_device_buffer(py::module_& m);

}  // namespace cuda
}  // namespace deepcore
