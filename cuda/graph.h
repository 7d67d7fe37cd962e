// CUDA graphs of deepcore work: capture what deepcore queues on its stream
// (stream.h) once, replay it with one cudaGraphLaunch.
//
// Capture mode: cudaStreamCaptureModeThreadLocal. Only the capturing thread is
// checked for calls that are unsafe during a capture (a synchronization, a
// cudaFree, a copy from pageable memory, the legacy stream); other Python
// threads (a data loader, a progress bar, another library) keep working, where
// the global mode would make their unrelated CUDA calls fail for as long as the
// capture lasts. deepcore's own stream is protected by the guard below, not by
// the mode. The allocator's cudaMalloc during a capture switches the thread to
// relaxed mode for that one call (allocator.h).
//
// What the caller does:
//   * before capture_begin: run the step eagerly at least once with the same
//     shapes (loads every kernel, fills the allocator's cache, and shows that
//     the step is valid); allocate every buffer the graph reads or writes and
//     keep it alive, at the same address, for as long as the graph may be
//     replayed (inputs are refreshed with copy_from / __setitem__ between
//     replays, never replaced by new buffers);
//   * during the capture: call only deepcore functions that queue work without
//     waiting for it (kernels, device copies, fills, the *_graph variants), from
//     the capturing thread; no other thread may use deepcore on that device;
//   * before each replay: refresh the inputs and the device-resident step state
//     (DeviceHyper.set); after it, read results with the read methods (one
//     synchronization each).
// Memory allocated during the capture belongs to the graph's private pool
// (allocator.h) until reset() or the graph's destruction.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <string>

#include "allocator.h"

namespace deepcore {
namespace cuda {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();  // reset(), errors ignored
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Starts capturing deepcore's stream on the current device into this graph.
  // CaptureError when this graph is capturing or holds a capture (reset()
  // first) or when the stream is already being captured.
  void capture_begin();
  // Ends the capture and instantiates the graph. CaptureError when the capture
  // was aborted (see ensure_not_capturing) or invalidated by an illegal call;
  // the graph is then empty again and its pool released.
  void capture_end();
  // Ends a capture that an exception interrupted, discarding it (no error).
  void capture_abort();
  // Queues the captured work on deepcore's stream (asynchronous).
  void replay();
  // Destroys the captured graph (a replay in flight finishes first) and
  // releases the private pool; the graph may capture again.
  void reset();

  bool capturing() const;
  bool captured() const;
  PoolStats memory_stats() const;

  // For the capture registry (graph.cpp): the capture was aborted because of `why`.
  void mark_aborted(const std::string& why);

 private:
  enum class State { Empty, Capturing, Captured };
  State state_ = State::Empty;
  int device_ = -1;
  int pool_ = 0;  // the private pool; 0 when none
  cudaGraphExec_t exec_ = nullptr;
  std::string aborted_;  // why the last capture was aborted, "" when it was not
};

// True when deepcore's stream on the current device is being captured (by a
// CudaGraph or by another library handed the stream). False without a device.
bool is_capturing();

// For every entry point that waits for the device or copies from pageable host
// memory: when deepcore's stream on the current device is being captured,
// throws CaptureError("<fn> cannot run inside a CUDA graph capture: <why>...")
// before anything is queued. When the capture is a CudaGraph's and this is its
// capturing thread, the capture is first aborted cleanly (capture ended, the
// partial graph discarded, its pool released, the stream usable again);
// capture_end() then reports the abort. `why` (may be null) says what the call
// needs the host for.
void ensure_not_capturing(const char* fn, const char* why = nullptr);

// For destructors that must wait for the device before freeing (shared or
// borrowed memory): while a capture runs on `device`, `fn` is kept and run
// right after that capture ends, and true is returned; otherwise false (the
// caller runs it now). fn must not throw.
bool defer_until_capture_ends(int device, std::function<void()> fn);

}  // namespace cuda
}  // namespace deepcore
