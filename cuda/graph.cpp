#include "graph.h"

#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "check.h"
#include "ops/common.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// The capture running on each device (at most one: a device has one deepcore
// stream, and captures on one stream cannot nest).
struct ActiveCapture {
  CudaGraph* owner;
  std::thread::id thread;  // the one that called capture_begin
  cudaStream_t stream;
  int pool;
};

// Never destroyed, as the allocator: graphs may die at interpreter exit.
std::mutex& registry_mu() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<int, ActiveCapture>& active() {
  static auto* m = new std::map<int, ActiveCapture>();
  return *m;
}
std::vector<std::pair<int, std::function<void()>>>& deferred() {
  static auto* v = new std::vector<std::pair<int, std::function<void()>>>();
  return *v;
}

bool stream_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  // An invalidated capture is still a capture: the stream stays in capture
  // mode until cudaStreamEndCapture.
  return status != cudaStreamCaptureStatusNone;
}

struct Ended {
  cudaGraph_t graph;  // null when the capture was invalidated
  cudaError_t error;  // of cudaStreamEndCapture
  int pool;
};

// Ends the capture on `device` (from its capturing thread), then runs what was
// deferred during it, then stops the pool's claiming (in that order: memory
// freed by the deferred work may have been used by the capture).
Ended end_capture(int device) {
  Ended r{nullptr, cudaSuccess, 0};
  std::vector<std::function<void()>> todo;
  {
    std::lock_guard<std::mutex> lock(registry_mu());
    const ActiveCapture a = active().at(device);
    r.error = cudaStreamEndCapture(a.stream, &r.graph);
    if (r.error != cudaSuccess) (void)cudaGetLastError();  // not blamed on a later launch
    r.pool = a.pool;
    active().erase(device);
    auto& d = deferred();
    for (auto it = d.begin(); it != d.end();) {
      if (it->first == device) todo.push_back(std::move(it->second)), it = d.erase(it);
      else ++it;
    }
  }
  for (auto& fn : todo) fn();
  private_pool_end_capture(device);
  return r;
}

void require_capturing_thread(int device, const char* fn) {
  std::lock_guard<std::mutex> lock(registry_mu());
  auto it = active().find(device);
  if (it != active().end() && it->second.thread != std::this_thread::get_id())
    throw CaptureError(std::string(fn) + ": must be called from the thread that called capture_begin()");
}

}  // namespace

CudaGraph::~CudaGraph() {
  try {
    reset();
  } catch (...) {
  }
}

bool CudaGraph::capturing() const { return state_ == State::Capturing; }
bool CudaGraph::captured() const { return state_ == State::Captured; }

PoolStats CudaGraph::memory_stats() const { return pool_ ? private_pool_stats(pool_) : PoolStats{0, 0}; }

void CudaGraph::mark_aborted(const std::string& why) {
  state_ = State::Empty;
  pool_ = 0;  // released by the caller
  aborted_ = why;
}

void CudaGraph::capture_begin() {
  const char* fn = "Graph.capture_begin";
  if (state_ == State::Capturing) throw CaptureError(std::string(fn) + ": this graph is already capturing");
  if (state_ == State::Captured)
    throw CaptureError(std::string(fn) + ": this graph already holds a capture; reset() it first (or use a new Graph)");
  int device = 0;
  check(cudaGetDevice(&device), "Graph.capture_begin: cudaGetDevice");
  const cudaStream_t s = current_stream();
  std::lock_guard<std::mutex> lock(registry_mu());
  if (active().count(device))
    throw CaptureError(std::string(fn) + ": another deepcore graph is capturing on cuda:" + std::to_string(device) +
                       " (captures on one device cannot nest)");
  if (stream_capturing(s))
    throw CaptureError(std::string(fn) + ": deepcore's stream on cuda:" + std::to_string(device) +
                       " is already being captured by another library");
  const int pool = private_pool_create();
  private_pool_begin_capture(device, pool);
  const cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    private_pool_release(pool);  // ends its capture too
    throw CudaError(std::string(fn) + ": cudaStreamBeginCapture: " + error_text(e));
  }
  active()[device] = ActiveCapture{this, std::this_thread::get_id(), s, pool};
  state_ = State::Capturing;
  device_ = device;
  pool_ = pool;
  aborted_.clear();
}

void CudaGraph::capture_end() {
  const char* fn = "Graph.capture_end";
  if (state_ != State::Capturing) {
    if (!aborted_.empty()) {
      const std::string why = aborted_;
      aborted_.clear();
      throw CaptureError(std::string(fn) + ": nothing was captured, the capture was aborted: " + why);
    }
    throw CaptureError(std::string(fn) + (state_ == State::Captured ? ": the capture already ended"
                                                                     : ": capture_begin() was not called"));
  }
  require_capturing_thread(device_, fn);
  const Ended r = end_capture(device_);
  state_ = State::Empty;
  if (r.error != cudaSuccess || !r.graph) {
    if (r.graph) (void)cudaGraphDestroy(r.graph);
    private_pool_release(pool_);
    pool_ = 0;
    throw CaptureError(std::string(fn) + ": the capture was invalidated (" + error_text(r.error) +
                       "): a call that is not allowed during a capture ran on the capturing thread (a "
                       "synchronization, a cudaFree, a copy from pageable memory, the legacy stream); nothing "
                       "was captured");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, r.graph, 0);
  (void)cudaGraphDestroy(r.graph);  // the executable graph does not depend on it
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    private_pool_release(pool_);
    pool_ = 0;
    throw CudaError(std::string(fn) + ": cudaGraphInstantiate: " + error_text(e));
  }
  exec_ = exec;
  state_ = State::Captured;
}

void CudaGraph::capture_abort() {
  aborted_.clear();
  if (state_ != State::Capturing) return;
  // cudaStreamEndCapture fails on another thread (thread-local mode), which
  // would leave the stream capturing for good: refuse instead.
  require_capturing_thread(device_, "Graph.reset");
  const Ended r = end_capture(device_);
  if (r.graph) (void)cudaGraphDestroy(r.graph);
  private_pool_release(pool_);
  pool_ = 0;
  state_ = State::Empty;
}

void CudaGraph::replay() {
  const char* fn = "Graph.replay";
  if (state_ != State::Captured)
    throw CaptureError(std::string(fn) + (state_ == State::Capturing
                                              ? ": the graph is still capturing (call capture_end() first)"
                                              : ": nothing was captured (capture_begin() ... capture_end() first)"));
  int device = 0;
  check(cudaGetDevice(&device), "Graph.replay: cudaGetDevice");
  if (device != device_)
    throw InvalidInput(std::string(fn) + ": the graph was captured on cuda:" + std::to_string(device_) +
                       " but the current device is cuda:" + std::to_string(device));
  ensure_not_capturing(fn, "a replay captured into another graph would share this graph's private memory with it");
  check(cudaGraphLaunch(exec_, current_stream()), "Graph.replay: cudaGraphLaunch");
  check_launch(fn);
}

void CudaGraph::reset() {
  if (state_ == State::Capturing) capture_abort();
  if (exec_) {
    // A replay still in flight completes first; the driver frees it afterwards.
    if (cudaGraphExecDestroy(exec_) != cudaSuccess) (void)cudaGetLastError();
    exec_ = nullptr;
  }
  if (pool_) private_pool_release(pool_);
  pool_ = 0;
  state_ = State::Empty;
  aborted_.clear();
}

bool is_capturing() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  try {
    return stream_capturing(current_stream());
  } catch (const CudaError&) {
    return false;
  }
}

void ensure_not_capturing(const char* fn, const char* why) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return;  // no device, no capture: the caller reports its own error
  }
  if (!stream_capturing(current_stream())) return;
  std::string msg = std::string(fn) + " cannot run inside a CUDA graph capture: " +
                    (why ? why : "it waits for the device, for results that captured work only produces at replay");
  CudaGraph* owner = nullptr;
  bool mine = false;
  {
    std::lock_guard<std::mutex> lock(registry_mu());
    auto it = active().find(device);
    if (it != active().end()) owner = it->second.owner, mine = it->second.thread == std::this_thread::get_id();
  }
  if (owner && mine) {
    msg += "; the capture was aborted and its graph discarded (deepcore's stream is usable again)";
    const Ended r = end_capture(device);
    if (r.graph) (void)cudaGraphDestroy(r.graph);
    private_pool_release(r.pool);
    owner->mark_aborted(msg);
  } else if (owner) {
    msg += "; another thread is capturing deepcore's stream, and only that thread may use deepcore on cuda:" +
           std::to_string(device) + " until the capture ends";
  } else {
    msg += "; deepcore's stream is being captured by another library (deepcore leaves that capture alone)";
  }
  throw CaptureError(msg);
}

bool defer_until_capture_ends(int device, std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(registry_mu());
  if (!active().count(device)) return false;
  deferred().emplace_back(device, std::move(fn));
  return true;
}

}  // namespace cuda
}  // namespace deepcore
