// DeviceBuffer <-> other libraries' CUDA tensors, without copies: DLPack export
// (__dlpack__, __dlpack_device__) and import (from_dlpack, which also takes
// __cuda_array_interface__ objects).
//
// Streams, as the Python array API specifies: the consumer passes the stream
// it will use; when it differs from the producer's, the producer records an
// event on its own stream and makes the consumer's stream wait on it. Stream
// integers: 1 = the legacy default stream, 2 = the per-thread default stream,
// -1 = no synchronization (DLPack only), 0 is not allowed, anything else a
// cudaStream_t.
//
// Lifetimes: an exported capsule holds the storage until its deleter runs (the
// consumer calls it; a capsule nobody consumed calls it when collected). An
// imported tensor's storage calls the producer's deleter (or drops the
// reference to the __cuda_array_interface__ object) when its last view dies.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "device_buffer.h"
#include "graph.h"
#include "dlpack.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

using namespace dlpack;

const char* const kCapsule = "dltensor";
const char* const kUsedCapsule = "used_dltensor";
const char* const kVersionedCapsule = "dltensor_versioned";
const char* const kUsedVersionedCapsule = "used_dltensor_versioned";

cudaStream_t stream_from_int(long long v) {
  if (v == 1) return cudaStreamLegacy;
  if (v == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(v));
}

// Makes `consumer` wait for the work queued so far on `producer` (both on the
// current device). The event is destroyed at once; CUDA releases it after
// the wait is satisfied.
void stream_wait(cudaStream_t consumer, cudaStream_t producer, const char* fn) {
  if (consumer == producer) return;
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), fn);
  cudaError_t err = cudaEventRecord(e, producer);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(consumer, e, 0);
  (void)cudaEventDestroy(e);
  check(err, fn);
}

std::string strides_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]) + (s.size() == 1 ? "," : "");
  return out + ")";
}

// C-order strides of `shape`, in units of `unit` (elements for DLPack, bytes
// for __cuda_array_interface__).
std::vector<int64_t> c_strides(const std::vector<py::ssize_t>& shape, int64_t unit) {
  std::vector<int64_t> s(shape.size());
  int64_t step = unit;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = step;
    step *= int64_t(shape[i]);
  }
  return s;
}

// ValueError unless `strides` (null: C order) describe C order; size-1 axes
// may have any stride, and an empty tensor any strides.
void check_c_contiguous(const std::vector<py::ssize_t>& shape, const std::vector<int64_t>* strides, size_t size,
                        int64_t unit, const char* unit_name, const char* fn) {
  if (!strides || size == 0) return;
  const std::vector<int64_t> want = c_strides(shape, unit);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != 1 && (*strides)[i] != want[i])
      throw py::value_error(std::string(fn) + ": expected a C-contiguous tensor (strides " + strides_str(want) +
                            " in " + unit_name + " for shape " + shape_str(shape) + "), got strides " +
                            strides_str(*strides) + "; make it contiguous first (e.g. .contiguous())");
}

// ----------------------------------------------------------------- export

// manager_ctx of an exported tensor: owns the storage and the shape/strides
// arrays the DLTensor points to. One of `managed`/`versioned` is used.
struct Exported {
  DLManagedTensor managed{};
  DLManagedTensorVersioned versioned{};
  std::shared_ptr<Storage> storage;
  std::vector<int64_t> shape, strides;
};

void delete_managed(DLManagedTensor* self) { delete static_cast<Exported*>(self->manager_ctx); }
void delete_versioned(DLManagedTensorVersioned* self) { delete static_cast<Exported*>(self->manager_ctx); }

// A capsule nobody consumed still owns its tensor; a consumed one was renamed
// "used_..." and its consumer calls the deleter.
void destroy_capsule(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, kCapsule)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsule));
    if (m && m->deleter) m->deleter(m);
  }
}
void destroy_versioned_capsule(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, kVersionedCapsule)) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, kVersionedCapsule));
    if (m && m->deleter) m->deleter(m);
  }
}

// The DLTensor of `b`: data points at the first element and byte_offset is 0,
// as PyTorch and CuPy export (the header advises consumers not to rely on a
// 256-byte aligned data pointer); explicit C-order strides, which DLPack 1.2
// requires.
void describe(const DeviceBuffer& b, Exported& ex, DLTensor& t) {
  ex.shape.assign(b.shape().begin(), b.shape().end());
  ex.strides = c_strides(b.shape(), 1);
  t.data = b.size() ? b.data() : nullptr;
  t.device = DLDevice{kDLCUDA, int32_t(b.device())};
  t.ndim = int32_t(b.shape().size());
  t.dtype = DLDataType{b.dtype_info().dl_code, uint8_t(8 * b.dtype_info().itemsize), 1};
  t.shape = ex.shape.empty() ? nullptr : ex.shape.data();
  t.strides = ex.strides.empty() ? nullptr : ex.strides.data();
  t.byte_offset = 0;
}

// ----------------------------------------------------------------- import

struct Imported {
  char* ptr = nullptr;
  std::vector<py::ssize_t> shape;
  const DType* dtype = nullptr;
  size_t size = 0;
};

const DType* dtype_from_dl(DLDataType t) {
  if (t.lanes != 1) return nullptr;
  for (const DType& d : kDTypes)
    if (d.dl_code == t.code && 8 * d.itemsize == t.bits) return &d;
  return nullptr;
}

std::string dl_dtype_str(DLDataType t) {
  const char* names[] = {"int", "uint", "float", "opaque handle", "bfloat", "complex", "bool"};
  const std::string code = t.code < 7 ? names[t.code] : "code " + std::to_string(t.code);
  return code + std::to_string(t.bits) + (t.lanes != 1 ? " x" + std::to_string(t.lanes) + " lanes" : "");
}

void check_device_type(int type, const char* fn) {
  if (type == kDLCUDA) return;
  throw py::type_error(std::string(fn) + ": expected CUDA device memory (DLPack device type 2, kDLCUDA), got device "
                       "type " + std::to_string(type) +
                       (type == kDLCPU ? " (kDLCPU, host memory; copy host arrays with to_device(array))" : ""));
}

void check_device_id(int id, int expected, const char* fn) {
  if (id != expected)
    throw py::value_error(std::string(fn) + ": expected a tensor on cuda:" + std::to_string(expected) +
                          " (its __dlpack_device__, or the current device without one), got one on cuda:" +
                          std::to_string(id));
}

// The producer's device made current for the import (its stream, its
// memory's storage), after checking that it exists; the capture check is for
// that device too.
struct ImportDevice {
  std::optional<DeviceGuard> guard;
  ImportDevice(int device, const char* fn) {
    guard.emplace(checked_device(py::int_(device), fn));
    ensure_not_capturing(fn, "the producer's stream would have to wait on one being captured");
  }
};

void check_alignment(const Imported& im, const char* fn) {
  if (im.size && reinterpret_cast<uintptr_t>(im.ptr) % im.dtype->itemsize)
    throw py::value_error(std::string(fn) + ": the data pointer is not aligned to its " +
                          std::to_string(im.dtype->itemsize) + "-byte elements");
}

Imported check_dltensor(const DLTensor& t, int current, const char* fn) {
  check_device_type(t.device.device_type, fn);
  check_device_id(t.device.device_id, current, fn);
  Imported im;
  im.dtype = dtype_from_dl(t.dtype);
  if (!im.dtype)
    throw py::type_error(std::string(fn) + ": expected dtype float32, int32 or int64, got " + dl_dtype_str(t.dtype));
  if (t.ndim < 0 || (t.ndim > 0 && !t.shape))
    throw py::value_error(std::string(fn) + ": malformed DLTensor (ndim " + std::to_string(t.ndim) + ")");
  im.shape.assign(t.shape, t.shape + t.ndim);
  im.size = checked_size(im.shape, im.dtype->itemsize, fn);
  std::vector<int64_t> strides;
  if (t.strides) strides.assign(t.strides, t.strides + t.ndim);
  check_c_contiguous(im.shape, t.strides ? &strides : nullptr, im.size, 1, "elements", fn);
  im.ptr = im.size ? static_cast<char*>(t.data) + t.byte_offset : nullptr;
  check_alignment(im, fn);
  return im;
}

// A DeviceBuffer over checked foreign memory; `release` (which must not throw)
// gives it back. If making the storage fails, release runs at once.
DeviceBuffer adopt(const Imported& im, const std::function<void()>& release) {
  std::shared_ptr<Storage> s;
  try {
    s = Storage::borrow(im.ptr, im.size * im.dtype->itemsize, release);
  } catch (...) {
    release();
    throw;
  }
  return DeviceBuffer(std::move(s), 0, im.shape, *im.dtype);
}

template <class Managed>
std::function<void()> call_deleter(Managed* m) {
  // The last view may die on any thread (e.g. a consumer of a re-export that
  // calls our deleter without the GIL); producers' deleters may need the GIL.
  return [m]() {
    py::gil_scoped_acquire gil;
    py::error_scope keep_error;
    if (m->deleter) m->deleter(m);
  };
}

DeviceBuffer import_dlpack(py::handle obj, const char* fn) {
  int current = 0;
  if (py::hasattr(obj, "__dlpack_device__")) {
    const auto dev = obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
    check_device_type(dev.first, fn);  // before any CUDA call: host arrays fail here on any machine
    current = dev.second;              // imported on the producer's device, whichever is current
  } else {
    check(cudaGetDevice(&current), fn);
  }
  const ImportDevice on(current, fn);
  // Our stream: the producer makes it wait for the producer's pending work.
  const py::int_ ours(reinterpret_cast<uintptr_t>(current_stream()));
  py::object capsule;
  try {
    capsule = obj.attr("__dlpack__")(py::arg("stream") = ours, py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;  // a producer older than max_version
    capsule = obj.attr("__dlpack__")(py::arg("stream") = ours);
  }
  PyObject* c = capsule.ptr();
  if (PyCapsule_IsValid(c, kVersionedCapsule)) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(c, kVersionedCapsule));
    if (m->version.major != kMajorVersion)
      throw py::value_error(std::string(fn) + ": expected DLPack version 1.x, got " +
                            std::to_string(m->version.major) + "." + std::to_string(m->version.minor));
    if (m->flags & kFlagReadOnly)
      throw py::value_error(std::string(fn) + ": the producer exported read-only memory, but a DeviceBuffer is "
                            "writable; export a copy");
    const Imported im = check_dltensor(m->dl_tensor, current, fn);
    // From here on the tensor is ours: the capsule's destructor leaves it alone.
    if (PyCapsule_SetName(c, kUsedVersionedCapsule) != 0) throw py::error_already_set();
    return adopt(im, call_deleter(m));
  }
  if (PyCapsule_IsValid(c, kCapsule)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, kCapsule));
    const Imported im = check_dltensor(m->dl_tensor, current, fn);
    if (PyCapsule_SetName(c, kUsedCapsule) != 0) throw py::error_already_set();
    return adopt(im, call_deleter(m));
  }
  throw py::type_error(std::string(fn) + ": __dlpack__ returned " + type_name(capsule) +
                       ", not an unconsumed 'dltensor' or 'dltensor_versioned' capsule");
}

DeviceBuffer import_cuda_array_interface(py::handle obj, const char* fn) {
  const py::object iface = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(iface))
    throw py::type_error(std::string(fn) + ": __cuda_array_interface__ must be a dict, got " + type_name(iface));
  const py::dict d = py::reinterpret_borrow<py::dict>(iface);
  auto field = [&](const char* key) -> py::object {
    if (!d.contains(key))
      throw py::value_error(std::string(fn) + ": __cuda_array_interface__ has no '" + key + "'");
    return d[key];
  };
  Imported im;
  const std::string typestr = py::str(field("typestr")).cast<std::string>();
  for (const DType& t : kDTypes)
    if (typestr == t.typestr) im.dtype = &t;
  if (!im.dtype)
    throw py::type_error(std::string(fn) + ": expected typestr '<f4', '<i4' or '<i8' (float32, int32, int64), got '" +
                         typestr + "'");
  im.shape = field("shape").cast<std::vector<py::ssize_t>>();
  im.size = checked_size(im.shape, im.dtype->itemsize, fn);
  const auto data = field("data").cast<std::pair<uintptr_t, bool>>();
  if (data.second)
    throw py::value_error(std::string(fn) + ": the producer exported read-only memory, but a DeviceBuffer is "
                          "writable; export a copy");
  if (d.contains("mask") && !d["mask"].is_none())
    throw py::value_error(std::string(fn) + ": masked arrays (a __cuda_array_interface__ 'mask') are not supported");
  std::vector<int64_t> strides;
  const bool has_strides = d.contains("strides") && !d["strides"].is_none();
  if (has_strides) strides = d["strides"].cast<std::vector<int64_t>>();
  if (has_strides && strides.size() != im.shape.size())
    throw py::value_error(std::string(fn) + ": __cuda_array_interface__ strides and shape differ in length");
  check_c_contiguous(im.shape, has_strides ? &strides : nullptr, im.size, int64_t(im.dtype->itemsize), "bytes", fn);
  im.ptr = im.size ? reinterpret_cast<char*>(data.first) : nullptr;
  check_alignment(im, fn);

  int current = 0;
  check(cudaGetDevice(&current), fn);
  if (im.size) {  // imported on the device that holds the memory, whichever is current
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, im.ptr);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw py::value_error(std::string(fn) + ": the data pointer is not CUDA memory (" + error_text(e) + ")");
    }
    if (attr.type != cudaMemoryTypeDevice)
      throw py::type_error(std::string(fn) + ": expected device memory, got " +
                           (attr.type == cudaMemoryTypeManaged ? "managed"
                            : attr.type == cudaMemoryTypeHost  ? "pinned host"
                                                               : "unregistered host") +
                           " memory");
    current = attr.device;
  }
  const ImportDevice on(current, fn);
  // Version 3: the producer's pending work is on "stream" (None: nothing pending).
  if (d.contains("stream") && !d["stream"].is_none()) {
    const long long s = d["stream"].cast<long long>();
    if (s == 0) throw py::value_error(std::string(fn) + ": __cuda_array_interface__ stream 0 is not allowed");
    stream_wait(current_stream(), stream_from_int(s), fn);
  }
  PyObject* owner = obj.ptr();
  Py_INCREF(owner);  // the producer's memory lives as long as the object does
  return adopt(im, [owner]() {
    py::gil_scoped_acquire gil;
    py::error_scope keep_error;
    Py_DECREF(owner);
  });
}

}  // namespace

py::object DeviceBuffer::dlpack(py::object stream, py::object max_version, py::object dl_device,
                                py::object copy) const {
  const char* fn = "DeviceBuffer.__dlpack__";
  // The consumer's stream would wait on an event of a stream being captured (and join the capture).
  DeviceGuard guard(device());
  ensure_not_capturing(fn, "another library would use the memory");
  if (!dl_device.is_none()) {
    const auto dev = dl_device.cast<std::pair<int, int>>();
    if (dev.first != kDLCUDA || dev.second != device())
      throw py::buffer_error(std::string(fn) + ": cannot export to DLPack device (" + std::to_string(dev.first) +
                             ", " + std::to_string(dev.second) + "); this tensor is on (2, " +
                             std::to_string(device()) + ") (kDLCUDA); use to_numpy() for a host copy");
  }
  const bool versioned = !max_version.is_none() && max_version.cast<std::pair<int, int>>().first >= 1;
  const bool copied = !copy.is_none() && copy.cast<bool>();
  long long consumer = 1;  // None: the legacy default stream
  if (!stream.is_none()) {
    consumer = stream.cast<long long>();
    if (consumer == 0 || consumer < -1)
      throw py::value_error(std::string(fn) + ": stream must be None, -1 (no synchronization), 1 (legacy default "
                            "stream), 2 (per-thread default stream) or a cudaStream_t, got " +
                            std::to_string(consumer));
  }
  const DeviceBuffer src = copied ? this->copy() : *this;
  if (consumer != -1) stream_wait(stream_from_int(consumer), src.stream(), fn);
  src.storage()->mark_shared();  // the consumer's streams may use it after our last view dies

  auto ex = std::make_unique<Exported>();
  ex->storage = src.storage();
  PyObject* capsule = nullptr;
  if (versioned) {
    DLManagedTensorVersioned& m = ex->versioned;
    m.version = DLPackVersion{kMajorVersion, kMinorVersion};
    m.manager_ctx = ex.get();
    m.deleter = delete_versioned;
    m.flags = copied ? kFlagIsCopied : 0;
    describe(src, *ex, m.dl_tensor);
    capsule = PyCapsule_New(&m, kVersionedCapsule, destroy_versioned_capsule);
  } else {
    DLManagedTensor& m = ex->managed;
    m.manager_ctx = ex.get();
    m.deleter = delete_managed;
    describe(src, *ex, m.dl_tensor);
    capsule = PyCapsule_New(&m, kCapsule, destroy_capsule);
  }
  if (!capsule) throw py::error_already_set();
  ex.release();  // the capsule (or its consumer) owns it now
  return py::reinterpret_steal<py::object>(capsule);
}

py::tuple DeviceBuffer::dlpack_device() const { return py::make_tuple(int(kDLCUDA), device()); }

DeviceBuffer from_dlpack(py::handle obj) {
  const char* fn = "from_dlpack";
  if (py::isinstance<DeviceBuffer>(obj)) {  // a view of the same storage
    DeviceGuard guard(obj.cast<const DeviceBuffer&>().device());
    ensure_not_capturing(fn, "the producer's stream would have to wait on one being captured");
    return obj.cast<DeviceBuffer>();
  }
  if (py::hasattr(obj, "__dlpack__")) return import_dlpack(obj, fn);
  if (py::hasattr(obj, "__cuda_array_interface__")) return import_cuda_array_interface(obj, fn);
  throw py::type_error(std::string(fn) + ": expected a CUDA tensor with __dlpack__ or __cuda_array_interface__ "
                       "(a DeviceBuffer, a torch.Tensor on CUDA, a CuPy array, ...), got " + type_name(obj) +
                       "; copy host arrays with to_device(array)");
}

}  // namespace cuda
}  // namespace deepcore
