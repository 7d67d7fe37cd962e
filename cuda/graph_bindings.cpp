// Python bindings for CUDA graphs (graph.h) and the *_graph variants of the
// kernels (kernels.h): _cuda.Graph, is_capturing, the device-resident step
// state (DeviceHyper, SegmentTable, LossScalars, call counters) and the
// variants that read it. Arguments are checked as by the eager bindings
// (bind_args.h), before anything touches the device.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "allocator.h"
#include "bind/shared_checks.h"
#include "bind_args.h"
#include "check.h"
#include "device_buffer.h"
#include "graph.h"
#include "kernels.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

int current_device(const char* fn) {
  int device = 0;
  check(cudaGetDevice(&device), (std::string(fn) + ": cudaGetDevice").c_str());
  return device;
}

void require_device(int device, const char* fn, const char* what) {
  const int current = current_device(fn);
  if (current != device)
    throw py::value_error(std::string(fn) + ": " + what + " is on cuda:" + std::to_string(device) +
                          " but the current device is cuda:" + std::to_string(current));
}

// ------------------------------------------------------------- DeviceHyper

// The fields whose change would need a different captured step: the rule,
// its flags, and which of clipping by norm and momentum are on (they decide
// what is queued and which slots are read).
bool same_structure(const OptParams& a, const OptParams& b) {
  return a.kind == b.kind && a.nesterov == b.nesterov && a.amsgrad == b.amsgrad && a.centered == b.centered &&
         (a.clipnorm > 0.0f) == (b.clipnorm > 0.0f) && (a.global_clipnorm > 0.0f) == (b.global_clipnorm > 0.0f) &&
         (a.momentum > 0.0f) == (b.momentum > 0.0f);
}

std::string structure_str(const OptParams& p) {
  return std::string(bind::optimizer_name(p.kind)) + " (nesterov=" + (p.nesterov ? "True" : "False") +
         ", amsgrad=" + (p.amsgrad ? "True" : "False") + ", centered=" + (p.centered ? "True" : "False") +
         ", momentum " + (p.momentum > 0.0f ? "> 0" : "0") + ", clipnorm " + (p.clipnorm > 0.0f ? "on" : "off") +
         ", global_clipnorm " + (p.global_clipnorm > 0.0f ? "on" : "off") + ")";
}

// One OptParams in device memory, refreshed from the host through pinned
// memory and a copy on deepcore's stream, so that the copy is ordered before
// the next replay. One pinned slot: a set() waits until the previous set's
// copy has been done by the device (in steady state long done: it came before
// the last replay).
class DeviceHyper {
 public:
  explicit DeviceHyper(py::object hyper) {
    const char* fn = "DeviceHyper";
    OptParams p;
    if (!hyper.is_none()) {
      p = opt_params(hyper, fn);
      check_opt_params(p);
    }
    device_ = current_device(fn);
    ensure_not_capturing(fn, "it allocates pinned host memory (make it before the capture)");
    dev_ = static_cast<OptParams*>(device_alloc(sizeof(OptParams)));
    try {
      check(cudaHostAlloc(reinterpret_cast<void**>(&pinned_), sizeof(OptParams), cudaHostAllocDefault),
            "DeviceHyper: cudaHostAlloc");
      check(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming), "DeviceHyper: cudaEventCreateWithFlags");
    } catch (...) {
      release();
      throw;
    }
    if (!hyper.is_none()) {
      try {
        upload(p, fn);
      } catch (...) {
        release();
        throw;
      }
    }
  }
  ~DeviceHyper() {
    // The waits and frees are not allowed during a capture: then they run after it.
    auto r = [dev = dev_, pinned = pinned_, copied = copied_, pending = pending_]() {
      if (copied && pending) (void)cudaEventSynchronize(copied);
      if (copied) (void)cudaEventDestroy(copied);
      if (pinned) (void)cudaFreeHost(pinned);
      (void)cudaGetLastError();
      device_free(dev);
    };
    if (!defer_until_capture_ends(device_, r)) r();
  }
  DeviceHyper(const DeviceHyper&) = delete;
  DeviceHyper& operator=(const DeviceHyper&) = delete;

  void set(py::handle hyper) {
    const char* fn = "DeviceHyper.set";
    const OptParams p = opt_params(hyper, fn);
    check_opt_params(p);
    if (frozen_ && !same_structure(p, structure_))
      throw py::value_error(std::string(fn) + ": this DeviceHyper serves an optimizer_step_graph queued for " +
                            structure_str(structure_) + ", got " + structure_str(p) +
                            "; between replays only the values may change (lr, c1..c3, betas, decay, clip "
                            "thresholds); use a new DeviceHyper and capture again for another rule");
    upload(p, fn);
  }

  bool has_value() const { return has_value_; }
  const OptParams& host() const { return host_; }
  const OptParams* device_ptr() const { return dev_; }
  int device() const { return device_; }
  // From the first optimizer_step_graph on, set() keeps the structure.
  void freeze() {
    if (!frozen_) frozen_ = true, structure_ = host_;
  }

 private:
  void upload(const OptParams& p, const char* fn) {
    require_device(device_, fn, "the DeviceHyper");
    ensure_not_capturing(fn, "it copies the hyperparameters from host memory (call it before each replay, "
                             "outside the capture)");
    const cudaStream_t s = current_stream();
    {
      py::gil_scoped_release nogil;
      if (pending_) check_sync(cudaEventSynchronize(copied_), fn);  // the device has read the slot
      pending_ = false;
      *pinned_ = p;
      check(cudaMemcpyAsync(dev_, pinned_, sizeof(OptParams), cudaMemcpyHostToDevice, s), fn);
      check(cudaEventRecord(copied_, s), fn);
      pending_ = true;
    }
    host_ = p;
    has_value_ = true;
  }
  void release() {
    if (copied_) (void)cudaEventDestroy(copied_);
    if (pinned_) (void)cudaFreeHost(pinned_);
    device_free(dev_);
    copied_ = nullptr, pinned_ = nullptr, dev_ = nullptr;
  }

  int device_ = 0;
  OptParams* dev_ = nullptr;
  OptParams* pinned_ = nullptr;
  cudaEvent_t copied_ = nullptr;
  bool pending_ = false;  // copied_ recorded and not yet waited for
  OptParams host_;        // the last value set
  bool has_value_ = false;
  bool frozen_ = false;
  OptParams structure_;
};

// ------------------------------------------------------------ SegmentTable

class SegmentTable {
 public:
  SegmentTable(py::ssize_t size, py::object offsets, py::object l1, py::object l2) {
    const char* fn = "SegmentTable";
    if (size < 0) throw py::value_error(std::string(fn) + ": size must be >= 0, got " + std::to_string(size));
    const HostSegments h = host_segments(offsets, l1, l2, index_t(size), fn);
    device_ = current_device(fn);
    t_ = upload_segments(h.op, h.nseg, h.l1p, h.l2p, index_t(size));
  }
  ~SegmentTable() { device_free(t_.block); }
  SegmentTable(const SegmentTable&) = delete;
  SegmentTable& operator=(const SegmentTable&) = delete;

  const DeviceSegments& tables() const { return t_; }
  int device() const { return device_; }
  // Whether read_result() has a result: an optimizer_step_graph with this
  // table queued the reduction into it (true), or into a LossScalars (false).
  void note_reduction(bool into_table) { reduced_ = into_table; }

  py::tuple read_result() {
    if (!reduced_) return py::make_tuple(0.0, py::none());
    require_device(device_, "SegmentTable.read_result", "the SegmentTable");
    double h[2];
    {
      py::gil_scoped_release nogil;
      copy_to_host(h, t_.result, sizeof h, "SegmentTable.read_result");
    }
    return py::make_tuple(h[0], std::sqrt(h[1]));
  }

 private:
  DeviceSegments t_;
  int device_ = 0;
  bool reduced_ = false;  // an optimizer_step_graph with this table queued the reduction
};

// -------------------------------------------------------------- LossScalars

class LossScalarsBuffer {
 public:
  LossScalarsBuffer() {
    current_device("LossScalars");
    storage_ = Storage::allocate(sizeof(LossScalars), false);
    reset();
  }
  LossScalars* ptr() const { return reinterpret_cast<LossScalars*>(storage_->ptr()); }
  int device() const { return storage_->device(); }

  void reset() {
    require_device(device(), "LossScalars.reset", "the LossScalars");
    reset_loss_scalars(ptr());
  }

  py::tuple read() const {
    require_device(device(), "LossScalars.read", "the LossScalars");
    LossScalars h;
    {
      py::gil_scoped_release nogil;
      copy_to_host(&h, ptr(), sizeof h, "LossScalars.read");
    }
    if (h.first_bad != kNoBadLabel) throw_bad_label(h.bad_label, h.first_bad, h.bad_cols);
    const double loss = h.rows ? h.total / double(h.rows) : std::numeric_limits<double>::quiet_NaN();
    return py::make_tuple(loss, h.hits, h.rows, h.penalty);
  }

  // The `bad` word as an int32 DeviceBuffer of shape (1,), sharing the memory.
  DeviceBuffer bad_label_flag() const {
    return DeviceBuffer(storage_, offsetof(LossScalars, bad), {1}, *find_dtype("int32"));
  }

 private:
  std::shared_ptr<Storage> storage_;
};

// ------------------------------------------------------- argument helpers

// A Philox call word: an int32 DeviceBuffer of one element (read as uint32).
const uint32_t* call_word(py::handle obj, const char* fn) {
  DeviceBuffer& b = dbuf(obj, fn, "call", "int32");
  if (b.size() != 1)
    throw py::value_error(std::string(fn) + ": call must hold one element (the call counter), got shape " +
                          b.shape_str());
  return static_cast<const uint32_t*>(b.data());
}

// An optional int32 DeviceBuffer of one element, or nullptr for None.
const int32_t* optional_flag(py::handle obj, const char* fn, const char* name) {
  if (obj.is_none()) return nullptr;
  DeviceBuffer& b = dbuf(obj, fn, name, "int32");
  if (b.size() != 1)
    throw py::value_error(std::string(fn) + ": " + name + " must hold one element, got shape " + b.shape_str());
  return static_cast<const int32_t*>(b.data());
}

using KeepMaskForwardGraph = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, const uint32_t*,
                                      uint32_t*);
using KeepMaskBackwardGraph = void (*)(const float*, float*, index_t, float, uint64_t, uint64_t, const uint32_t*);

void def_keep_mask_forward_graph(py::module_& m, const char* fn, KeepMaskForwardGraph kernel, const char* doc) {
  m.def(fn, [fn, kernel](py::handle x_, py::handle y_, float rate, uint64_t seed, uint64_t stream, py::handle call_,
                         py::object mask_) {
    bind::check_rate(rate, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    const uint32_t* call = call_word(call_, fn);
    uint32_t* bits = optional_keep_bits(mask_, index_t(x.size()), fn);
    py::gil_scoped_release nogil;
    kernel(p<float>(x), p<float>(y), index_t(x.size()), rate, seed, stream, call, bits);
  }, py::arg("x"), py::arg("y"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     py::arg("mask") = py::none(), doc);
}

void def_keep_mask_backward_graph(py::module_& m, const char* fn, KeepMaskBackwardGraph kernel, const char* doc) {
  m.def(fn, [fn, kernel](py::handle dy_, py::handle dx_, float rate, uint64_t seed, uint64_t stream,
                         py::handle call_) {
    bind::check_rate(rate, fn);
    DeviceBuffer &dy = dbuf(dy_, fn, "dy", "float32"), &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(dy, dx, fn, "dy", "dx");
    const uint32_t* call = call_word(call_, fn);
    py::gil_scoped_release nogil;
    kernel(p<float>(dy), p<float>(dx), index_t(dy.size()), rate, seed, stream, call);
  }, py::arg("dy"), py::arg("dx"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"), doc);
}

}  // namespace

void def_graph(py::module_& m) {
  // ------------------------------------------------------------------ Graph
  py::class_<CudaGraph>(m, "Graph", R"(A CUDA graph of the work deepcore queues on its stream.

Capture once, replay many times::

    g = _cuda.Graph()
    with g.capture():        # or g.capture_begin() ... g.capture_end()
        ...                  # deepcore calls: queued into the graph, not run
    g.replay()               # runs them (asynchronously), again and again

Capture mode: thread-local (only the capturing thread is checked for calls a
capture forbids). Before the capture: run the same step eagerly once (loads
the kernels, warms the allocator's cache) and allocate every buffer the graph
reads or writes; keep those buffers alive and in place while the graph may be
replayed (refresh inputs with copy_from / slice assignment). During the
capture, call only functions that queue work without waiting: a function that
must synchronize with the host (to_numpy, the eager losses and optimizer_step,
copies from host memory, synchronize, empty_cache, DeviceHyper.set, the read
methods) raises CaptureError, and the capture is aborted (ended and discarded;
the stream is usable again). Before each replay: refresh the inputs and
DeviceHyper.set(hyper); after it: LossScalars.read() (and SegmentTable.read_result()
when the optimizer's reduction went to the table).
Memory allocated during the capture stays reserved for the graph (its private
pool) until reset() or the graph's destruction.)")
      .def(py::init<>())
      .def("capture_begin", &CudaGraph::capture_begin,
           "Start capturing deepcore's stream on the current device (CaptureError if this graph holds a capture: "
           "reset() it first).")
      .def("capture_end", &CudaGraph::capture_end,
           "End the capture and instantiate the graph. CaptureError if the capture was aborted or invalidated "
           "(nothing captured; the graph is empty again).")
      .def("capture", [](CudaGraph& g) -> CudaGraph& { return g; }, py::return_value_policy::reference_internal,
           "Context manager: `with g.capture(): ...` calls capture_begin() on entry, capture_end() on a normal "
           "exit, and discards the capture when the block raises.")
      .def("__enter__", [](CudaGraph& g) -> CudaGraph& {
        g.capture_begin();
        return g;
      }, py::return_value_policy::reference_internal)
      .def("__exit__", [](CudaGraph& g, py::object type, py::object, py::object) {
        if (type.is_none()) g.capture_end();
        else g.capture_abort();
        return false;
      })
      .def("replay", &CudaGraph::replay,
           "Queue the captured work on deepcore's stream (returns at once). Refresh inputs and DeviceHyper before.")
      .def("reset", &CudaGraph::reset,
           "Discard the captured graph (a replay in flight still completes) and release its private memory to "
           "the cache; the graph may capture again.")
      .def_property_readonly("is_captured", &CudaGraph::captured)
      .def_property_readonly("is_capturing", &CudaGraph::capturing)
      .def("memory_stats", [](const CudaGraph& g) {
        const PoolStats s = g.memory_stats();
        py::dict d;
        d["live_bytes"] = s.live_bytes;
        d["held_bytes"] = s.held_bytes;
        return d;
      }, "This graph's private pool: bytes in live buffers it claims, and freed bytes held back for it.");

  m.def("is_capturing", &is_capturing,
        "True while deepcore's stream on the current device is being captured into a CUDA graph (False without "
        "a device).");

  // --------------------------------------------------- device step state
  py::class_<DeviceHyper>(m, "DeviceHyper", R"(An optimizer's hyperparameters in device memory, for optimizer_step_graph.

DeviceHyper(hyper=None) with hyper a deepcore._core.OptParams. set(hyper)
copies a new value through pinned memory on deepcore's stream (ordered before
the next replay); call it outside the capture, before each replay, with the
step's lr and c1..c3. From the first optimizer_step_graph that uses it, the
structure (rule, nesterov, amsgrad, centered, momentum > 0, clipnorm and
global_clipnorm on/off) may no longer change. Keep it alive while a graph that
uses it may be replayed.)")
      .def(py::init<py::object>(), py::arg("hyper") = py::none())
      .def("set", &DeviceHyper::set, py::arg("hyper"),
           "Queue a copy of hyper (a deepcore._core.OptParams) to the device; checked like optimizer_step's.")
      .def_property_readonly("has_value", &DeviceHyper::has_value);

  py::class_<SegmentTable>(m, "SegmentTable", R"(optimizer_step's segment tables in device memory, for optimizer_step_graph.

SegmentTable(size, offsets=None, l1=None, l2=None): size = params.size;
offsets (int64, nseg + 1 entries from 0 to size, or None for one segment), l1
and l2 (float32, nseg) as optimizer_step takes them; uploaded once (not during
a capture). Also holds the step's reduction: read_result() returns (penalty,
gradient norm) of the last step that computed them (clipping by norm,
penalties or want_norm), else (0.0, None); it synchronizes.)")
      .def(py::init<py::ssize_t, py::object, py::object, py::object>(), py::arg("size"),
           py::arg("offsets") = py::none(), py::arg("l1") = py::none(), py::arg("l2") = py::none())
      .def_property_readonly("size", [](const SegmentTable& t) { return t.tables().n; })
      .def_property_readonly("segments", [](const SegmentTable& t) { return t.tables().nseg; })
      .def_property_readonly("penalties", [](const SegmentTable& t) { return t.tables().penalties; })
      .def("read_result", &SegmentTable::read_result);

  py::class_<LossScalarsBuffer>(m, "LossScalars", R"(Where sparse_categorical_crossentropy_graph leaves its results, in device memory.

read() -> (mean loss, correct, rows, penalty): synchronizes; raises the eager
loss's ValueError when a call found a label out of range. penalty is the l1/l2
penalty of the last optimizer_step_graph given this LossScalars as `scalars`
after the last overwriting loss call (else 0.0): one copy brings back both. reset() zeroes the sums (on
the stream; may be captured). bad_label_flag: an int32 DeviceBuffer (1,) that
is 1 when the last call found a bad label; pass it as optimizer_step_graph's
skip so that a bad batch leaves the weights unchanged, as in eager mode.)")
      .def(py::init<>())
      .def("read", &LossScalarsBuffer::read)
      .def("reset", &LossScalarsBuffer::reset)
      .def_property_readonly("bad_label_flag", &LossScalarsBuffer::bad_label_flag);

  // ------------------------------------------------------------ optimizer
  m.def("optimizer_step_graph", [](DeviceHyper& hyper, py::handle w_, py::handle g_, py::object s0_, py::object s1_,
                                   py::object s2_, SegmentTable& table, bool want_norm, py::object skip_,
                                   LossScalarsBuffer* scalars) {
    const char* fn = "optimizer_step_graph";
    if (!hyper.has_value())
      throw py::value_error(std::string(fn) + ": the DeviceHyper holds no hyperparameters yet (call set(hyper))");
    const OptParams& hp = hyper.host();
    DeviceBuffer &w = dbuf(w_, fn, "params", "float32"), &g = dbuf(g_, fn, "grads", "float32");
    same_shape(w, g, fn, "params", "grads");
    float* p0 = optional_like(s0_, w, fn, "slot0", "params");
    float* p1 = optional_like(s1_, w, fn, "slot1", "params");
    float* p2 = optional_like(s2_, w, fn, "slot2", "params");
    p2 = bind::require_optimizer_slots(hp, p0, p1, p2);
    if (index_t(w.size()) != table.tables().n)
      throw py::value_error(std::string(fn) + ": params has " + std::to_string(w.size()) +
                            " elements but the SegmentTable was made for " + std::to_string(table.tables().n));
    require_device(hyper.device(), fn, "the DeviceHyper");
    require_device(table.device(), fn, "the SegmentTable");
    const int32_t* skip = optional_flag(skip_, fn, "skip");
    double* result = nullptr;  // the table's
    if (scalars) {
      if (want_norm)
        throw py::value_error(std::string(fn) + ": want_norm=True with scalars: LossScalars.read() returns the "
                              "penalty, not the norm (leave scalars None and use table.read_result())");
      require_device(scalars->device(), fn, "scalars");
      result = &scalars->ptr()->penalty;
    }
    hyper.freeze();
    if (optimizer_step_graph_reduces(hp, table.tables(), want_norm)) table.note_reduction(!scalars);
    py::gil_scoped_release nogil;
    deepcore::cuda::optimizer_step_graph(hp, hyper.device_ptr(), p<float>(w), p<float>(g), p0, p1, p2,
                                         table.tables(), want_norm, skip, result);
  }, py::arg("hyper"), py::arg("params"), py::arg("grads"), py::arg("slot0"), py::arg("slot1"), py::arg("slot2"),
     py::arg("table"), py::arg("want_norm") = false, py::arg("skip") = py::none(), py::arg("scalars") = py::none(),
     "optimizer_step for CUDA graphs: hyper a DeviceHyper (read on the device when the step runs), table a "
     "SegmentTable; params, grads, slots as in optimizer_step. Queues the update and returns None (no host "
     "copy, no wait); the penalty and norm stay on the device: in table (table.read_result()), or with scalars "
     "(a LossScalars) in it, so that scalars.read() returns the loss and the penalty in one copy. skip: an "
     "optional int32 DeviceBuffer (1,); while it holds a nonzero value the step leaves params and slots "
     "unchanged.");

  // ---------------------------------------------------------- dropout family
  def_keep_mask_forward_graph(m, "dropout_forward_graph", &deepcore::cuda::dropout_forward_graph,
                              "dropout_forward with call an int32 DeviceBuffer of one element, read on the device "
                              "when the kernel runs: the masks of that call (as on the CPU and eagerly).");
  def_keep_mask_backward_graph(m, "dropout_backward_graph", &deepcore::cuda::dropout_backward_graph,
                               "dropout_backward (mask regenerated) with call read from the device.");
  m.def("dropout_mask_graph", [](py::handle mask_, float rate, uint64_t seed, uint64_t stream, py::handle call_) {
    const char* fn = "dropout_mask_graph";
    bind::check_rate(rate, fn);
    DeviceBuffer& mask = dbuf(mask_, fn, "mask", "float32");
    const uint32_t* call = call_word(call_, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::dropout_mask_graph(p<float>(mask), index_t(mask.size()), rate, seed, stream, call);
  }, py::arg("mask"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("call"),
     "dropout_mask with call read from the device.");
  def_keep_mask_forward_graph(m, "alpha_dropout_forward_graph", &deepcore::cuda::alpha_dropout_forward_graph,
                              "alpha_dropout_forward with call read from the device.");
  def_keep_mask_backward_graph(m, "alpha_dropout_backward_graph", &deepcore::cuda::alpha_dropout_backward_graph,
                               "alpha_dropout_backward (mask regenerated) with call read from the device.");

  m.def("rrelu_forward_graph", [](py::handle x_, py::handle y_, float lower, float upper, bool training,
                                  uint64_t seed, uint64_t stream, py::handle call_) {
    const char* fn = "rrelu_forward_graph";
    bind::check_bounds(lower, upper, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &y = dbuf(y_, fn, "y", "float32");
    same_shape(x, y, fn, "x", "y");
    const uint32_t* call = call_word(call_, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::rrelu_forward_graph(p<float>(x), p<float>(y), index_t(x.size()), lower, upper, training, seed,
                                        stream, call);
  }, py::arg("x"), py::arg("y"), py::arg("lower"), py::arg("upper"), py::arg("training"), py::arg("seed"),
     py::arg("stream"), py::arg("call"), "rrelu_forward with call read from the device.");
  m.def("rrelu_backward_graph", [](py::handle x_, py::handle dy_, py::handle dx_, float lower, float upper,
                                   bool training, uint64_t seed, uint64_t stream, py::handle call_) {
    const char* fn = "rrelu_backward_graph";
    bind::check_bounds(lower, upper, fn);
    DeviceBuffer &x = dbuf(x_, fn, "x", "float32"), &dy = dbuf(dy_, fn, "dy", "float32"),
                 &dx = dbuf(dx_, fn, "dx", "float32");
    same_shape(x, dy, fn, "x", "dy");
    same_shape(x, dx, fn, "x", "dx");
    const uint32_t* call = call_word(call_, fn);
    py::gil_scoped_release nogil;
    deepcore::cuda::rrelu_backward_graph(p<float>(x), p<float>(dy), p<float>(dx), index_t(x.size()), lower, upper,
                                         training, seed, stream, call);
  }, py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("lower"), py::arg("upper"), py::arg("training"),
     py::arg("seed"), py::arg("stream"), py::arg("call"), "rrelu_backward with call read from the device.");

  m.def("increment_counter", [](py::handle c_) {
    DeviceBuffer& c = dbuf(c_, "increment_counter", "counter", "int32");
    py::gil_scoped_release nogil;
    increment_counters(p<uint32_t>(c), index_t(c.size()));
  }, py::arg("counter"),
     "Add 1 (mod 2^32, as uint32) to every element of an int32 DeviceBuffer, on the stream: the call counters "
     "of the *_graph variants, advanced inside the graph.");

  // ----------------------------------------------------------------- losses
  m.def("sparse_categorical_crossentropy_graph", [](py::handle p_, py::handle l_, py::object g_, bool from_logits,
                                                    LossScalarsBuffer& out, bool accumulate) {
    const char* fn = "sparse_categorical_crossentropy_graph";
    DeviceBuffer &pred = dbuf(p_, fn, "y_pred", "float32"), &labels = dbuf(l_, fn, "labels", "int32");
    check_sparse_ce_shapes(pred, labels, fn);
    float* gp = optional_like(g_, pred, fn, "grad", "y_pred");
    require_device(out.device(), fn, "out");
    py::gil_scoped_release nogil;
    deepcore::cuda::sparse_categorical_crossentropy_graph(p<float>(pred), p<int32_t>(labels), gp, pred.shape()[0],
                                                          pred.shape()[1], from_logits, out.ptr(), accumulate);
  }, py::arg("y_pred"), py::arg("labels"), py::arg("grad"), py::arg("from_logits"), py::arg("out"),
     py::arg("accumulate") = false,
     "sparse_categorical_crossentropy for CUDA graphs: the same loss and grad, left in out (a LossScalars: "
     "overwritten, or added to when accumulate) instead of returned; returns None without waiting. A bad label "
     "writes no grad and sets out.bad_label_flag; out.read() raises the eager ValueError.");
}

}  // namespace cuda
}  // namespace deepcore
