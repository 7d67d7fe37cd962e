// Python bindings for CUDA graphs (graph.h): _cuda.Graph and is_capturing.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "allocator.h"
#include "check.h"
#include "graph.h"

namespace deepcore {
namespace cuda {
namespace py = pybind11;

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
DeviceHyper.set(hyper); after it: LossScalars.read(), SegmentTable.read_result().
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

}

}  // namespace cuda
}  // namespace deepcore
