#include "device_buffer.h"

#include <cuda_runtime.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "allocator.h"
#include "bind/common.h"
#include "check.h"
#include "fill.h"
#include "graph.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// Waits for all work on `device`; errors are dropped (a destructor's wait).
void synchronize_device_quietly(int device) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device) (void)cudaSetDevice(device);
  (void)cudaDeviceSynchronize();
  if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();  // a failure here must not be blamed on the next launch
}

// Device-to-device copy on `s`. Overlapping ranges (two views of one storage)
// go through a temporary, since cudaMemcpy's ranges may not overlap; the
// temporary returns to the cache after both copies are queued on the stream.
void device_copy(void* dst, const void* src, size_t bytes, cudaStream_t s, const char* fn) {
  const auto d = reinterpret_cast<uintptr_t>(dst), r = reinterpret_cast<uintptr_t>(src);
  if (bytes == 0 || d == r) return;
  if (d < r + bytes && r < d + bytes) {
    Scratch tmp(bytes);
    check(cudaMemcpyAsync(tmp.p, src, bytes, cudaMemcpyDeviceToDevice, s), fn);
    check(cudaMemcpyAsync(dst, tmp.p, bytes, cudaMemcpyDeviceToDevice, s), fn);
  } else {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), fn);
  }
}

// Pinned host memory for non-blocking host-to-device copies, one ring per
// device. A copy takes the next slot, waits until the device has read what
// that slot held last time (its event), grows it if needed, copies the
// caller's bytes into it and queues the device copy from it; so the caller's
// array may change as soon as the call returns. Two slots let the host fill
// one while the device reads the other. Slots are kept for reuse (pinned
// memory is slow to allocate) and never freed.
class PinnedStaging {
 public:
  void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream, const char* fn) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = slots_[next_];
    if (s.pending) {
      check_sync(cudaEventSynchronize(s.read), fn);
      s.pending = false;
    }
    if (s.bytes < bytes) {
      if (s.host) check(cudaFreeHost(s.host), fn);
      s.host = nullptr;
      s.bytes = 0;
      const size_t quantum = size_t(1) << 16;
      const size_t want = (bytes + quantum - 1) / quantum * quantum;
      check(cudaHostAlloc(&s.host, want, cudaHostAllocDefault), fn);
      s.bytes = want;
    }
    if (!s.read) check(cudaEventCreateWithFlags(&s.read, cudaEventDisableTiming), fn);
    std::memcpy(s.host, src, bytes);
    check(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream), fn);
    s.pending = true;  // from here on the device may read the slot
    check(cudaEventRecord(s.read, stream), fn);
    next_ = (next_ + 1) % kSlots;
  }

 private:
  static constexpr int kSlots = 2;
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t read = nullptr;  // recorded after the device copy from `host`
    bool pending = false;        // `read` recorded and not yet waited for
  };
  std::mutex mu_;
  Slot slots_[kSlots];
  int next_ = 0;
};

PinnedStaging& staging_for(int device) {
  static std::mutex mu;
  static auto* rings = new std::map<int, PinnedStaging*>();  // never destroyed, as the allocator
  std::lock_guard<std::mutex> lock(mu);
  PinnedStaging*& r = (*rings)[device];
  if (!r) r = new PinnedStaging();
  return *r;
}

bool is_numpy_scalar(py::handle obj) {
  return py::isinstance(obj, py::module_::import("numpy").attr("generic"));
}

// A dtype argument as a name: a string, or anything np.dtype() takes (np.float32, buf.dtype).
std::string dtype_name(py::handle obj) {
  if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
  try {
    return py::module_::import("numpy").attr("dtype")(obj).attr("name").cast<std::string>();
  } catch (const py::error_already_set&) {
    return py::repr(obj).cast<std::string>();
  }
}

}  // namespace

// DLPack type codes: kDLInt = 0, kDLFloat = 2.
const DType kDTypes[3] = {{"float32", "<f4", 4, 2}, {"int32", "<i4", 4, 0}, {"int64", "<i8", 8, 0}};

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")).cast<std::string>(); }

std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]) + (shape.size() == 1 ? "," : "");
  return s + ")";
}

size_t checked_size(const std::vector<py::ssize_t>& shape, size_t itemsize, const char* fn) {
  size_t size = 1, nonzero = 1;
  for (auto d : shape) {
    if (d < 0) throw py::value_error(std::string(fn) + ": negative dimension in shape " + shape_str(shape));
    if (__builtin_mul_overflow(nonzero, size_t(d ? d : 1), &nonzero) || nonzero > size_t(PTRDIFF_MAX) / itemsize)
      throw py::value_error(std::string(fn) + ": shape " + shape_str(shape) + " too large (the byte count overflows)");
    size *= size_t(d);
  }
  return size;
}

int checked_device(py::handle device, const char* fn) {
  int current = 0;
  check(cudaGetDevice(&current), (std::string(fn) + ": cudaGetDevice").c_str());
  if (device.is_none()) return current;
  if (!py::isinstance<py::int_>(device) || py::isinstance<py::bool_>(device))
    throw py::type_error(std::string(fn) + ": device must be an int (a CUDA device index) or None (the current "
                         "device), got " + type_name(device));
  const long long d = device.cast<long long>();
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  if (d < 0 || d >= count)
    throw py::value_error(std::string(fn) + ": device " + std::to_string(d) + " does not exist: " +
                          std::to_string(count) + " CUDA device(s)" +
                          (count ? ", 0 .. " + std::to_string(count - 1) : std::string()));
  return int(d);
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&prev_), "cudaGetDevice");
  if (prev_ == device) prev_ = -1;
  else check(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) (void)cudaSetDevice(prev_);
}

const DType* find_dtype(const std::string& name) {
  for (const DType& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

// -------------------------------------------------------------------- Storage

std::shared_ptr<Storage> Storage::allocate(size_t bytes, bool zero) {
  std::shared_ptr<Storage> s(new Storage());
  check(cudaGetDevice(&s->device_), "DeviceBuffer: cudaGetDevice");
  s->stream_ = current_stream();
  s->ptr_ = static_cast<char*>(device_alloc(bytes));
  s->bytes_ = bytes;
  s->owned_ = true;  // from here on the destructor returns the block
  if (zero && bytes) check(cudaMemsetAsync(s->ptr_, 0, bytes, s->stream_), "DeviceBuffer: cudaMemsetAsync");
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* ptr, size_t bytes, std::function<void()> release) {
  std::shared_ptr<Storage> s(new Storage());
  check(cudaGetDevice(&s->device_), "cudaGetDevice");
  s->stream_ = current_stream();
  s->ptr_ = static_cast<char*>(ptr);
  s->bytes_ = bytes;
  s->release_ = std::move(release);  // last: if anything above throws, the caller still owns the memory
  return s;
}

Storage::~Storage() {
  // The waits below are not allowed during a CUDA graph capture: then they
  // (and the frees after them) run when the capture ends (graph.h).
  if (owned_) {
    // Our own stream's queued work needs no wait (allocator.h); another
    // library's might still read or write the block.
    if (ptr_ && shared_.load()) {
      const int device = device_;
      char* ptr = ptr_;
      auto wait_and_free = [device, ptr]() {
        synchronize_device_quietly(device);
        device_free(ptr);
      };
      if (!defer_until_capture_ends(device, wait_and_free)) wait_and_free();
      return;
    }
    device_free(ptr_);
  } else if (release_) {
    // The owner may reuse the memory as soon as it is released: let the work
    // deepcore queued on it finish first.
    // Re-exported (shared) borrowed memory may also have a third library's
    // work queued on it: then wait for the whole device.
    const cudaStream_t stream = stream_;
    const int device = device_;
    const bool shared = shared_.load();
    auto wait_and_release = [stream, device, shared, release = std::move(release_)]() {
      if (shared) synchronize_device_quietly(device);
      else (void)cudaStreamSynchronize(stream);
      (void)cudaGetLastError();
      release();
    };
    if (!defer_until_capture_ends(device_, wait_and_release)) wait_and_release();
  }
}

// --------------------------------------------------------------- DeviceBuffer

DeviceBuffer::DeviceBuffer(std::vector<py::ssize_t> shape, const std::string& dtype)
    : DeviceBuffer(create(std::move(shape), dtype, true)) {}

DeviceBuffer DeviceBuffer::uninitialized(std::vector<py::ssize_t> shape, const std::string& dtype) {
  return create(std::move(shape), dtype, false);
}

DeviceBuffer DeviceBuffer::create(std::vector<py::ssize_t> shape, const std::string& dtype, bool zero) {
  const DType* dt = find_dtype(dtype);
  if (!dt) throw py::type_error("DeviceBuffer: dtype must be 'float32', 'int32' or 'int64', got '" + dtype + "'");
  const size_t n = checked_size(shape, dt->itemsize, "DeviceBuffer");
  return DeviceBuffer(Storage::allocate(n * dt->itemsize, zero), 0, std::move(shape), *dt);
}

DeviceBuffer::DeviceBuffer(std::shared_ptr<Storage> storage, size_t offset, std::vector<py::ssize_t> shape,
                           const DType& dtype)
    : storage_(std::move(storage)), offset_(offset), shape_(std::move(shape)), dtype_(&dtype) {
  size_ = 1;
  for (auto d : shape_) size_ *= size_t(d);
}

std::string DeviceBuffer::shape_str() const { return cuda::shape_str(shape_); }

DeviceBuffer DeviceBuffer::reshape(py::args args) const {
  const char* fn = "DeviceBuffer.reshape";
  py::object dims = args;
  if (args.size() == 1 && PySequence_Check(args[0].ptr())) dims = args[0];  // reshape((2, 3))
  if (!py::isinstance<py::sequence>(dims) || py::isinstance<py::str>(dims))
    throw py::type_error(std::string(fn) + ": expected ints or one tuple of ints, got " + type_name(dims));
  std::vector<py::ssize_t> shape;
  int unknown = -1;
  for (py::handle h : dims) {
    if (PyBool_Check(h.ptr()) || !PyIndex_Check(h.ptr()))
      throw py::type_error(std::string(fn) + ": dimensions must be ints, got " + type_name(h));
    const py::ssize_t d = PyNumber_AsSsize_t(h.ptr(), PyExc_OverflowError);
    if (d == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (d == -1) {
      if (unknown >= 0) throw py::value_error(std::string(fn) + ": only one dimension can be -1");
      unknown = int(shape.size());
    } else if (d < 0) {
      throw py::value_error(std::string(fn) + ": negative dimension " + std::to_string(d));
    }
    shape.push_back(d);
  }
  const std::string asked = cuda::shape_str(shape);
  auto mismatch = [&]() {
    return py::value_error(std::string(fn) + ": cannot reshape a tensor of shape " + shape_str() + " (" +
                           std::to_string(size_) + " elements) into shape " + asked);
  };
  if (unknown >= 0) {
    shape[size_t(unknown)] = 1;
    const size_t known = checked_size(shape, dtype_->itemsize, fn);
    if (known == 0 || size_ % known != 0) throw mismatch();
    shape[size_t(unknown)] = py::ssize_t(size_ / known);
  }
  if (checked_size(shape, dtype_->itemsize, fn) != size_) throw mismatch();
  return DeviceBuffer(storage_, offset_, std::move(shape), *dtype_);
}

DeviceBuffer DeviceBuffer::index(py::handle key, const char* fn) const {
  PyObject* k = key.ptr();
  if (k == Py_Ellipsis) return *this;
  const bool is_slice = PySlice_Check(k);
  py::object as_int;
  if (!is_slice && !PyBool_Check(k) && PyIndex_Check(k)) {
    as_int = py::reinterpret_steal<py::object>(PyNumber_Index(k));
    if (!as_int) PyErr_Clear();  // e.g. a NumPy array of several ints: rejected below
  }
  if (!is_slice && !as_int)
    throw py::type_error(std::string(fn) + ": a DeviceBuffer is indexed along its first axis by an int, a slice "
                         "with step 1 (start:stop, None and negative bounds allowed) or ..., got " + type_name(key));
  if (shape_.empty())
    throw py::index_error(std::string(fn) + ": a 0-d DeviceBuffer has no axis to index (only ... selects it)");
  const py::ssize_t n = shape_[0];
  size_t row = dtype_->itemsize;  // bytes per index along axis 0 (checked_size bounds it)
  for (size_t i = 1; i < shape_.size(); ++i) row *= size_t(shape_[i]);
  if (as_int) {
    const py::ssize_t i0 = PyNumber_AsSsize_t(as_int.ptr(), PyExc_IndexError);
    if (i0 == -1 && PyErr_Occurred()) throw py::error_already_set();
    const py::ssize_t i = i0 < 0 ? i0 + n : i0;
    if (i < 0 || i >= n)
      throw py::index_error(std::string(fn) + ": index " + std::to_string(i0) +
                            " is out of bounds for axis 0 with size " + std::to_string(n));
    return DeviceBuffer(storage_, offset_ + size_t(i) * row, std::vector<py::ssize_t>(shape_.begin() + 1, shape_.end()),
                        *dtype_);
  }
  Py_ssize_t start = 0, stop = 0, step = 1;
  if (PySlice_Unpack(k, &start, &stop, &step) < 0) throw py::error_already_set();
  if (step != 1)
    throw py::type_error(std::string(fn) + ": only slices with step 1 give a contiguous view, got step " +
                         std::to_string(step) + " (copy to the host with to_numpy() for strided access)");
  const py::ssize_t len = PySlice_AdjustIndices(n, &start, &stop, step);  // 0 <= start <= n
  std::vector<py::ssize_t> shape = shape_;
  shape[0] = len;
  return DeviceBuffer(storage_, offset_ + size_t(start) * row, std::move(shape), *dtype_);
}

void DeviceBuffer::setitem(py::handle key, py::handle value) {
  const char* fn = "DeviceBuffer.__setitem__";
  const DeviceBuffer dst = index(key, fn);
  if (py::isinstance<DeviceBuffer>(value)) {
    const DeviceBuffer& src = value.cast<const DeviceBuffer&>();
    if (src.dtype_ != dst.dtype_)
      throw py::type_error(std::string(fn) + ": expected a DeviceBuffer of dtype " + dst.dtype() + ", got dtype " +
                           src.dtype() + " (a DeviceBuffer is copied without a cast)");
    if (src.shape_ != dst.shape_)
      throw py::value_error(std::string(fn) + ": expected a DeviceBuffer of shape " + dst.shape_str() +
                            ", got shape " + src.shape_str());
    if (src.device() != dst.device())
      throw py::value_error(std::string(fn) + ": the value is on cuda:" + std::to_string(src.device()) +
                            ", the target on cuda:" + std::to_string(dst.device()));
    DeviceGuard guard(dst.device());
    device_copy(dst.data(), src.data(), dst.nbytes(), dst.stream(), fn);
    return;
  }
  const bool number = PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr());  // bool is an int
  if (!number && !py::isinstance<py::array>(value) && !is_numpy_scalar(value))
    throw py::type_error(std::string(fn) + ": the value must be a NumPy array, a DeviceBuffer or a Python int/float, "
                         "got " + type_name(value));
  // Cast on the host, as NumPy would assign (OverflowError for an int that does not fit).
  const py::array host = py::module_::import("numpy").attr("asarray")(value, py::arg("dtype") = dst.dtype(),
                                                                       py::arg("order") = "C");
  const std::vector<py::ssize_t> hshape(host.shape(), host.shape() + host.ndim());
  if (hshape == dst.shape_) {
    dst.upload(host.data(), false, fn);
  } else if (host.size() == 1 && host.ndim() <= py::ssize_t(dst.shape_.size())) {
    dst.fill(host.data());  // a scalar, or a single element that broadcasts
  } else {
    throw py::value_error(std::string(fn) + ": expected a value of shape " + dst.shape_str() +
                          " (or a single element), got shape " + cuda::shape_str(hshape));
  }
}

void DeviceBuffer::fill(const void* value) const {
  if (size_ == 0) return;
  uint64_t bits = 0;  // the element's bytes, little-endian in the low bytes
  std::memcpy(&bits, value, dtype_->itemsize);
  DeviceGuard guard(device());
  cuda::fill(data(), index_t(size_), dtype_->itemsize, bits);
}

DeviceBuffer DeviceBuffer::copy() const {
  DeviceGuard guard(device());
  DeviceBuffer out = create(shape_, dtype_->name, false);
  device_copy(out.data(), data(), nbytes(), stream(), "DeviceBuffer.copy");
  return out;
}

py::array DeviceBuffer::to_numpy() const {
  py::array out(py::dtype(dtype()), shape_);
  if (nbytes()) {
    void* dst = out.mutable_data();
    DeviceGuard guard(device());
    py::gil_scoped_release nogil;
    copy_to_host(dst, data(), nbytes(), "DeviceBuffer.to_numpy");
  }
  return out;
}

void DeviceBuffer::copy_from(py::handle obj, bool non_blocking) {
  const char* fn = "DeviceBuffer.copy_from";
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": expected a NumPy array, got " + type_name(obj));
  const py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype(dtype())))
    throw py::type_error(std::string(fn) + ": expected dtype " + dtype() + ", got " + bind::dtype_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": the array must be C-contiguous (use np.ascontiguousarray)");
  if (std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()) != shape_)
    throw py::value_error(std::string(fn) + ": expected shape " + shape_str() + ", got " + bind::shape_str(a));
  upload(a.data(), non_blocking, fn);
}

void DeviceBuffer::upload(const void* src, bool non_blocking, const char* fn) const {
  if (nbytes() == 0) return;
  DeviceGuard guard(device());
  ensure_not_capturing(fn, "it copies from host memory, which a replay would not copy again");
  const cudaStream_t s = stream();
  py::gil_scoped_release nogil;
  if (non_blocking) {
    staging_for(device()).copy(data(), src, nbytes(), s, fn);
  } else {
    // A pageable source: the copy is staged by the driver; wait so that the
    // data is on the device when the call returns.
    check_sync(cudaMemcpyAsync(data(), src, nbytes(), cudaMemcpyHostToDevice, s), fn);
    check_sync(cudaStreamSynchronize(s), fn);
  }
}

py::dict DeviceBuffer::cuda_array_interface() const {
  // A consumer would queue work against a stream being captured (on this buffer's device).
  DeviceGuard guard(device());
  ensure_not_capturing("DeviceBuffer.__cuda_array_interface__", "another library would use the memory");
  // The consumer may queue work on this memory on its own streams.
  storage_->mark_shared();
  py::dict d;
  d["shape"] = py::tuple(py::cast(shape_));
  d["typestr"] = dtype_->typestr;
  d["data"] = py::make_tuple(size_ ? reinterpret_cast<uintptr_t>(data()) : uintptr_t(0), false);
  d["strides"] = py::none();
  d["version"] = 3;
  // Consumers make their stream wait for this one before reading.
  d["stream"] = reinterpret_cast<uintptr_t>(stream());
  return d;
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

DeviceBuffer to_device(py::handle obj, bool non_blocking, py::handle device) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error("to_device: expected a numpy array, got " + py::str(py::type::of(obj)).cast<std::string>());
  const py::array a = py::reinterpret_borrow<py::array>(obj);
  std::string dt = bind::dtype_str(a);
  if (a.dtype().equal(py::dtype::of<int64_t>())) dt = "int64";  // np.longlong spells itself differently
  if (!find_dtype(dt))
    throw py::type_error("to_device: dtype must be 'float32', 'int32' or 'int64', got '" + dt + "'");
  // A strided array is made C-contiguous on the host first (0-d stays 0-d).
  const py::array c = (a.flags() & py::array::c_style) ? a : py::array::ensure(a, py::array::c_style);
  if (!c) throw py::value_error("to_device: could not make a C-contiguous copy of the array");
  std::optional<DeviceGuard> guard;  // on `device`, after the checks that need none
  if (!device.is_none()) guard.emplace(checked_device(device, "to_device"));
  DeviceBuffer b = DeviceBuffer::uninitialized(std::vector<py::ssize_t>(c.shape(), c.shape() + c.ndim()), dt);
  b.copy_from(c, non_blocking);
  return b;
}

}  // namespace

void def_device_buffer(py::module_& m) {
  py::class_<DeviceBuffer>(m, "DeviceBuffer",
                           "A C-contiguous float32/int32/int64 tensor in device memory (zero-filled when made "
                           "from a shape). Reshape and indexing along axis 0 give views sharing its memory. "
                           "Conversion to NumPy is explicit: to_numpy().")
      .def(py::init([](std::vector<py::ssize_t> shape, py::handle dtype, py::handle device) {
             const std::string dt = dtype_name(dtype);
             if (device.is_none()) return DeviceBuffer(std::move(shape), dt);
             DeviceGuard guard(checked_device(device, "DeviceBuffer"));
             return DeviceBuffer(std::move(shape), dt);
           }),
           py::arg("shape"), py::arg("dtype") = "float32", py::arg("device") = py::none(),
           "A zero-filled tensor on `device` (an index; None: the current device).")
      .def_property_readonly("shape", [](const DeviceBuffer& b) { return py::tuple(py::cast(b.shape())); })
      .def_property_readonly("dtype", [](const DeviceBuffer& b) { return py::dtype(b.dtype()); },
                             "A NumPy dtype (buf.dtype == np.float32 works).")
      .def_property_readonly("size", &DeviceBuffer::size)
      .def_property_readonly("ndim", [](const DeviceBuffer& b) { return b.shape().size(); })
      .def_property_readonly("nbytes", &DeviceBuffer::nbytes)
      .def_property_readonly("device", &DeviceBuffer::device, "The CUDA device ordinal.")
      .def_property_readonly("data_ptr", [](const DeviceBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); },
                             "Address of the first element (a view's offset included).")
      .def("__len__", [](const DeviceBuffer& b) {
        if (b.shape().empty()) throw py::type_error("len() of a 0-d DeviceBuffer");
        return b.shape()[0];
      })
      .def_property_readonly("__cuda_array_interface__", &DeviceBuffer::cuda_array_interface)
      // No __array__: NumPy conversion is explicit. Without one NumPy would
      // walk the buffer as a sequence of views into an object array; this
      // makes np.asarray(buf) fail instead.
      .def_property_readonly("__array_interface__", [](const DeviceBuffer& b) -> py::object {
        throw py::type_error("a DeviceBuffer lives on cuda:" + std::to_string(b.device()) +
                             "; convert it to NumPy explicitly with .to_numpy()");
      })
      .def("reshape", &DeviceBuffer::reshape,
           "reshape(*shape) or reshape(shape), one dimension may be -1: a view sharing this memory.")
      .def("__getitem__",
           [](const DeviceBuffer& b, py::handle key) { return b.index(key, "DeviceBuffer.__getitem__"); },
           "buf[i], buf[start:stop] or buf[...]: a view along the first axis.")
      .def("__setitem__", &DeviceBuffer::setitem,
           "buf[key] = a NumPy array (cast to this dtype), a scalar (fill) or a DeviceBuffer (device copy).")
      .def("copy", &DeviceBuffer::copy, "A new DeviceBuffer with the same contents (copied on the device).")
      .def("to_numpy", &DeviceBuffer::to_numpy, "Copy to a new host ndarray (waits for deepcore's stream).")
      .def("numpy", &DeviceBuffer::to_numpy, "Alias of to_numpy().")
      .def("copy_from", &DeviceBuffer::copy_from, py::arg("array"), py::arg("non_blocking") = false,
           "Copy a host ndarray of the same shape and dtype. non_blocking=True returns before the device copy "
           "ends (through pinned staging memory: the array may be overwritten at once).")
      .def("__dlpack__", &DeviceBuffer::dlpack, py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none(),
           "Export as a DLPack capsule (Python array API): zero-copy unless copy=True; the consumer's stream "
           "(None: the legacy default stream, -1: no synchronization) waits for deepcore's.")
      .def("__dlpack_device__", &DeviceBuffer::dlpack_device, "(2, device ordinal): kDLCUDA.")
      .def("__repr__", [](const DeviceBuffer& b) {
        return "DeviceBuffer(shape=" + b.shape_str() + ", dtype=" + b.dtype() + ", device=cuda:" +
               std::to_string(b.device()) + ")";
      });
  m.def("to_device", &to_device, py::arg("array"), py::arg("non_blocking") = false, py::arg("device") = py::none(),
        "A DeviceBuffer on `device` (an index; None: the current device) holding a copy of a "
        "float32/int32/int64 ndarray (non_blocking as in DeviceBuffer.copy_from).");
  m.def("from_dlpack", &from_dlpack, py::arg("obj"),
        "A zero-copy DeviceBuffer over a CUDA tensor of another library (an object with __dlpack__ or "
        "__cuda_array_interface__: float32/int32/int64, C-contiguous), on the tensor's own device whichever is "
        "current; the producer's memory stays alive while any view of it does.");
}

}  // namespace cuda
}  // namespace deepcore
