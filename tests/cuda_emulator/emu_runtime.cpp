// Host emulator of the CUDA runtime API (a test tool; nothing here runs on a
// GPU): the part of libcudart that deepcore._cuda calls, executed on the CPU.
//
// - Device memory is host memory (posix_memalign, 256-byte aligned, exact
//   size, so AddressSanitizer sees overruns); a device pointer is a host pointer.
//   New device and pinned allocations are filled with 0xff bytes (NaN, -1):
//   reading memory nothing wrote does not find zeros, as it may not on a GPU.
// - DEEPCORE_EMU_DEVICES (1 to 8, default 1) emulated devices, each
//   "deepcore host emulator (not a GPU)", sm_90, 16 GiB. The current device is
//   per host thread (cudaSetDevice). Device memory, streams, events and graphs
//   belong to the device current when they were made. As on a GPU, a kernel
//   launch or graph launch on another device's stream fails
//   (cudaErrorInvalidResourceHandle), as does recording an event on a stream
//   of another device; copies may name any device's memory. A kernel given a
//   pointer argument into another device's memory is a kernel bug (no peer
//   access is ever enabled, so on a GPU it faults): the launch aborts, naming
//   the kernel and the argument.
// - Work queued on a stream (kernels, async copies and memsets, graph
//   launches, deepcore_emu_enqueue) is deferred: it runs, in order, only when
//   the host has to wait for it (cudaStreamSynchronize, cudaEventSynchronize,
//   cudaDeviceSynchronize, a copy to pageable host memory, the synchronous
//   cudaMemcpy/cudaMemset, cudaFree, cudaFreeHost, cudaStreamDestroy), or
//   when work on another stream that waits for it (cudaStreamWaitEvent) runs.
//   So a host that reads pinned memory, or overwrites a pinned source, before
//   waiting for the copy sees what a GPU may show it: the old contents. A
//   copy from pageable host memory reads its source at the call (the runtime
//   stages it). cudaStreamQuery and cudaEventQuery run the pending work and
//   report it done. Work queued on the legacy stream waits for the work queued
//   before it on the blocking streams (created without cudaStreamNonBlocking),
//   and theirs for the legacy stream's, as on a GPU; the synchronous
//   cudaMemcpy/cudaMemset and a legacy-stream sync run the legacy stream's
//   work (so, through those waits, the blocking streams' before it), not the
//   non-blocking streams'. DEEPCORE_EMU_DEFERRED=0 runs all work at once.
// - While a stream is being captured, its work is recorded into the graph and
//   runs only when the instantiated graph is launched, with the arguments and
//   pointers it was captured with.
// - The calls the real runtime refuses during a capture fail with its error
//   codes and invalidate the capture (cudaStreamEndCapture then returns
//   cudaErrorStreamCaptureInvalidated), following its capture modes.
// - cudaGetLastError / cudaPeekAtLastError: per thread, every failing call
//   sets it, cudaGetLastError clears it (the emulator has no sticky errors: a
//   faulting kernel crashes the process, under ASan with a report).
// - deepcore_emu_enqueue(): the entry for other emulated libraries (the fake
//   cuBLASLt): run a host function as work on a stream (README.md).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "emu_internal.h"

namespace deepcore_emu {

[[noreturn]] void fatal(const std::string& msg) {
  std::fprintf(stderr, "%s\n", msg.c_str());
  std::fflush(stderr);
  // Also into DEEPCORE_EMU_REPORT_FILE when set (run_tests.sh prints it): a
  // test runner that captures stderr loses it when the process aborts.
  if (const char* path = std::getenv("DEEPCORE_EMU_REPORT_FILE")) {
    if (FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "%s\n", msg.c_str());
      std::fclose(f);
    }
  }
  std::abort();
}

namespace {

constexpr size_t kTotalMemory = size_t(16) << 30;  // what the emulated device reports
constexpr const char* kDeviceName = "deepcore host emulator (not a GPU)";

using Node = std::function<void()>;

struct Graph {
  std::vector<Node> nodes;
  int device = 0;  // of the stream it was captured on
};
struct GraphExec {
  std::shared_ptr<const std::vector<Node>> nodes;  // shared with launches still queued
  int device = 0;
};

struct Stream {
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;  // that began the capture
  Graph* graph = nullptr;
  unsigned long long capture_id = 0;
  bool blocking = true;               // created without cudaStreamNonBlocking: ordered with the legacy stream
  int device = -1;                    // current when it was created (-1: the legacy stream, every device's)
  unsigned long long id = 0;          // never reused (a queued wait names its stream by id)
  std::deque<Node> queue;             // deferred work, oldest first
  unsigned long long queued = 0;      // work items ever queued
  unsigned long long executed = 0;    // of those, run (or running)
};

struct Event {
  int device = 0;                      // current when it was created
  unsigned long long captured_in = 0;  // capture id of its last record, 0: recorded outside a capture
  Stream* stream = nullptr;            // recorded outside a capture: complete once stream->executed >= upto
  unsigned long long upto = 0;
};

struct Alloc {
  size_t size;
  cudaMemoryType type;
  int device;  // current when it was allocated
};

std::recursive_mutex& mu() {
  static auto* m = new std::recursive_mutex();  // never destroyed: streams may be used at exit
  return *m;
}
struct State {
  std::map<uintptr_t, Alloc> allocs;  // start -> allocation (device and pinned host)
  size_t device_bytes[8] = {};  // per device
  std::set<Stream*> streams;
  std::set<Event*> events;
  std::set<Graph*> graphs;
  std::set<GraphExec*> execs;
  unsigned long long next_capture = 1;
  unsigned long long next_stream_id = 1;  // 0: the legacy stream
};
State& st() {
  static auto* s = new State();
  return *s;
}
Stream& legacy_stream() {  // stream 0, cudaStreamLegacy and cudaStreamPerThread: never captured here
  static auto* s = new Stream();
  return *s;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local cudaStreamCaptureMode t_mode = cudaStreamCaptureModeGlobal;
thread_local int t_device = 0;

int device_count() {
  static const int n = [] {
    const char* e = std::getenv("DEEPCORE_EMU_DEVICES");
    if (!e || !*e) return 1;
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (*end || v < 1 || v > 8) fatal(std::string("DEEPCORE_EMU_DEVICES must be 1 to 8, got '") + e + "'");
    return int(v);
  }();
  return n;
}
bool valid_device(int d) { return d >= 0 && d < device_count(); }

cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread; }

// The device a stream's work runs on: its own, or for the legacy stream the
// current device's (stream 0 names the current device's NULL stream).
int device_of(const Stream* s) { return s->device >= 0 ? s->device : t_device; }

// The stream behind a handle, or null for an unknown handle.
Stream* stream_of(cudaStream_t s) {
  if (is_legacy(s)) return &legacy_stream();
  auto* p = reinterpret_cast<Stream*>(s);
  return st().streams.count(p) ? p : nullptr;
}

// The captures a "potentially unsafe" call (cudaMalloc, cudaFree, a
// synchronous copy, cudaDeviceSynchronize, ...) from this thread conflicts
// with, following cudaThreadExchangeStreamCaptureMode's rules: a thread in
// relaxed mode never conflicts; otherwise its own non-relaxed captures do, and
// in global mode also other threads' global captures.
std::vector<Stream*> conflicting_captures() {
  std::vector<Stream*> out;
  if (t_mode == cudaStreamCaptureModeRelaxed) return out;
  const auto me = std::this_thread::get_id();
  for (Stream* s : st().streams) {
    if (!s->capturing || s->mode == cudaStreamCaptureModeRelaxed) continue;
    if (s->thread == me || (t_mode == cudaStreamCaptureModeGlobal && s->mode == cudaStreamCaptureModeGlobal))
      out.push_back(s);
  }
  return out;
}

// cudaErrorStreamCaptureUnsupported, invalidating the conflicting captures, when
// the call is not allowed now; cudaSuccess when it is.
cudaError_t refuse_if_unsafe() {
  auto c = conflicting_captures();
  if (c.empty()) return cudaSuccess;
  for (Stream* s : c) s->invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}

const Alloc* find_alloc(const void* p, uintptr_t* base = nullptr) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = st().allocs.upper_bound(a);
  if (it == st().allocs.begin()) return nullptr;
  --it;
  if (a >= it->first + std::max<size_t>(it->second.size, 1)) return nullptr;
  if (base) *base = it->first;
  return &it->second;
}

bool is_pinned(const void* p) {
  const Alloc* a = find_alloc(p);
  return a && a->type == cudaMemoryTypeHost;
}

bool deferred() {
  static const bool d = [] {
    const char* e = std::getenv("DEEPCORE_EMU_DEFERRED");
    return !(e && !std::strcmp(e, "0"));
  }();
  return d;
}

// Runs the stream's queued work up to item `upto` (counted from its creation).
// A running item may run other streams' work (a cudaStreamWaitEvent).
void run_until(Stream* s, unsigned long long upto) {
  while (s->executed < upto && !s->queue.empty()) {
    Node n = std::move(s->queue.front());
    s->queue.pop_front();
    ++s->executed;
    n();
  }
}
void run_stream(Stream* s) { run_until(s, s->queued); }
void run_all() {
  run_stream(&legacy_stream());
  for (Stream* s : std::vector<Stream*>(st().streams.begin(), st().streams.end())) run_stream(s);
}
// The work of the current device's streams (and the legacy stream's, which
// all devices share here): what cudaDeviceSynchronize waits for.
void run_device() {
  run_stream(&legacy_stream());
  for (Stream* s : std::vector<Stream*>(st().streams.begin(), st().streams.end()))
    if (s->device == t_device) run_stream(s);
}

// A point in a stream's work: done once the stream has run `upto` items. The
// stream is named by its id, so a destroyed stream (whose work ran at its
// destruction) is never confused with a new one at the same address.
struct Mark {
  Stream* stream;
  unsigned long long id, upto;
};
Mark mark_of(Stream* s) { return Mark{s, s->id, s->queued}; }
void run_to(const Mark& m) {
  if (m.stream == &legacy_stream() || (st().streams.count(m.stream) && m.stream->id == m.id))
    run_until(m.stream, m.upto);
}

// Queues `node` on `s` (deferred, see the top of this file; or run now), or
// records it into the stream's capture. The legacy stream's work waits for
// the work queued before it on the blocking streams, and a blocking stream's
// for the legacy stream's, as on a GPU.
cudaError_t enqueue(cudaStream_t s, Node node) {
  Stream* str = stream_of(s);
  if (!str) return cudaErrorInvalidResourceHandle;
  if (str->capturing) {
    if (!str->invalidated) str->graph->nodes.push_back(std::move(node));
    return cudaSuccess;
  }
  std::vector<Mark> before;
  if (str == &legacy_stream()) {
    for (Stream* b : st().streams)
      if (b->blocking && b->queued > b->executed) before.push_back(mark_of(b));
  } else if (str->blocking) {
    Stream* l = &legacy_stream();
    if (l->queued > l->executed) before.push_back(mark_of(l));
  }
  if (!before.empty())
    node = [before = std::move(before), node = std::move(node)] {
      for (const Mark& m : before) run_to(m);
      node();
    };
  str->queue.push_back(std::move(node));
  ++str->queued;
  if (!deferred()) run_stream(str);
  return cudaSuccess;
}

// A copy as it runs: the bytes, and (race-checker builds) the destination
// marked written for the initcheck.
void copy_now(void* dst, const void* src, size_t n) {
  std::memmove(dst, src, n);
  DEEPCORE_EMU_RACECHECK_CALL(written(dst, n));
}

cudaError_t copy_async(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  Stream* str = stream_of(s);
  if (!str) return cudaErrorInvalidResourceHandle;
  if (n == 0) return cudaSuccess;
  if (!dst || !src) return cudaErrorInvalidValue;
  if (str->capturing) {
    // A capture may only copy between device memory and pinned host memory.
    const bool host_src = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost ||
                          (kind == cudaMemcpyDefault && !find_alloc(src));
    const bool host_dst = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost ||
                          (kind == cudaMemcpyDefault && !find_alloc(dst));
    if ((host_src && !is_pinned(src)) || (host_dst && !is_pinned(dst))) {
      str->invalidated = true;
      return cudaErrorStreamCaptureUnsupported;
    }
    return enqueue(s, [dst, src, n] { copy_now(dst, src, n); });
  }
  const bool host_src = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost ||
                        (kind == cudaMemcpyDefault && !find_alloc(src));
  const bool host_dst = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost ||
                        (kind == cudaMemcpyDefault && !find_alloc(dst));
  cudaError_t e;
  if (host_src && !is_pinned(src)) {  // pageable: staged at the call, so the caller may reuse it at once
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    e = enqueue(s, [dst, staged] { copy_now(dst, staged->data(), staged->size()); });
  } else {
    e = enqueue(s, [dst, src, n] { copy_now(dst, src, n); });
  }
  // To pageable memory the call returns once the copy is done.
  if (e == cudaSuccess && host_dst && !is_pinned(dst)) run_stream(str);
  return e;
}

}  // namespace

void launch_erased(const char* name, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, void (*body)(void*),
                   std::shared_ptr<void> args, const void* const* pointers, size_t npointers) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  // A launch goes to a stream of the current device.
  if (Stream* str = stream_of(stream); str && device_of(str) != t_device) {
    fail(cudaErrorInvalidResourceHandle);
    return;
  }
  // Its pointer arguments must not point into another device's memory.
  for (size_t i = 0; i < npointers; ++i) {
    const Alloc* a = find_alloc(pointers[i]);
    if (a && a->type == cudaMemoryTypeDevice && a->device != t_device)
      fatal(std::string("deepcore host emulator: kernel ") + name + " (at its launch): pointer argument " +
            std::to_string(i + 1) + " points into memory of cuda:" + std::to_string(a->device) +
            ", but the kernel is launched on cuda:" + std::to_string(t_device) +
            " (without peer access a GPU faults on it)");
  }
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
      threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (shmem > 0) {  // no kernel of deepcore uses dynamic shared memory; the emulator has none
    fail(cudaErrorInvalidValue);
    return;
  }
  KernelLaunch k{name, grid, block, body, std::move(args)};
  const cudaError_t e = enqueue(stream, [k] { run_kernel(k); });
  if (e != cudaSuccess) fail(e);
}

}  // namespace deepcore_emu

using namespace deepcore_emu;

#define EMU_LOCK std::lock_guard<std::recursive_mutex> emu_lock(mu())

// Default visibility: a fake library loaded beside the emulated module (the
// fake cuBLASLt) resolves the runtime API and deepcore_emu_enqueue from it
// when the module is loaded with RTLD_GLOBAL (tests/conftest.py does).
#pragma GCC visibility push(default)
extern "C" {

// The contract for other emulated libraries (README.md): `fn(arg)` runs as one
// piece of work on `stream`, in order with the kernels and copies queued there:
// deferred like them (when the host waits), or, while the stream is being
// captured, at each launch of the graph.
// `arg` must stay valid as long as a graph holding the call may be launched.
void deepcore_emu_enqueue(cudaStream_t stream, void (*fn)(void*), void* arg) {
  EMU_LOCK;
  // As a kernel launch: a library queues its work on a stream of the current device.
  if (Stream* str = stream_of(stream); str && device_of(str) != t_device)
    fatal("deepcore host emulator: a library call (deepcore_emu_enqueue) on a stream of cuda:" +
          std::to_string(device_of(str)) + " while cuda:" + std::to_string(t_device) +
          " is current (on a GPU its kernels would not launch)");
  const cudaError_t e = enqueue(stream, [fn, arg] { fn(arg); });
  if (e != cudaSuccess) fail(e);
}

// The device whose memory holds p (cudaMalloc'd on it), -1 for any other
// address; for emulated libraries (the fake cuBLASLt checks its operands).
int deepcore_emu_device_of(const void* p) {
  EMU_LOCK;
  const Alloc* a = find_alloc(p);
  return a && a->type == cudaMemoryTypeDevice ? a->device : -1;
}

// For the race checker's initcheck (emu_racecheck.cpp; a no-op in other
// builds): an emulated library's work (from deepcore_emu_enqueue) says which
// device bytes it reads (write == 0: an unwritten byte aborts, naming `who`)
// and writes.
void deepcore_emu_note_access(const void* p, size_t n, int write, const char* who) {
  EMU_LOCK;
  if (write) DEEPCORE_EMU_RACECHECK_CALL(written(p, n));
  else DEEPCORE_EMU_RACECHECK_CALL(host_reads(p, n, who));
  (void)p, (void)n, (void)who;
}

// ------------------------------------------------------------------ errors
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define NAME(x) \
  case x: return #x;
    NAME(cudaSuccess)
    NAME(cudaErrorInvalidValue)
    NAME(cudaErrorMemoryAllocation)
    NAME(cudaErrorInvalidConfiguration)
    NAME(cudaErrorInvalidDevice)
    NAME(cudaErrorInvalidResourceHandle)
    NAME(cudaErrorNotReady)
    NAME(cudaErrorIllegalState)
    NAME(cudaErrorStreamCaptureUnsupported)
    NAME(cudaErrorStreamCaptureInvalidated)
    NAME(cudaErrorStreamCaptureUnjoined)
    NAME(cudaErrorStreamCaptureIsolation)
    NAME(cudaErrorCapturedEvent)
    NAME(cudaErrorStreamCaptureWrongThread)
    NAME(cudaErrorNoDevice)
    NAME(cudaErrorInsufficientDriver)
    NAME(cudaErrorInvalidDeviceFunction)
    NAME(cudaErrorNoKernelImageForDevice)
    NAME(cudaErrorLaunchOutOfResources)
#undef NAME
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureIsolation:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error (host emulator)";
  }
}

// ------------------------------------------------------------------ device
cudaError_t cudaGetDeviceCount(int* n) {
  *n = device_count();
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (!valid_device(d)) return fail(cudaErrorInvalidDevice);
  t_device = d;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (!valid_device(d)) return fail(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "%s", kDeviceName);
  p->major = 9;
  p->minor = 0;
  p->totalGlobalMem = kTotalMemory;
  p->multiProcessorCount = 1;
  p->l2CacheSize = 1 << 20;
  p->sharedMemPerBlock = 48 << 10;
  p->sharedMemPerBlockOptin = 48 << 10;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int d) {
  if (!valid_device(d)) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *v = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *v = 1; return cudaSuccess;
    case cudaDevAttrWarpSize: *v = 32; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; return cudaSuccess;
    default: return fail(cudaErrorInvalidValue);
  }
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* fn) {
  if (!fn) return fail(cudaErrorInvalidDeviceFunction);
  std::memset(a, 0, sizeof(*a));
  a->maxThreadsPerBlock = 1024;
  a->ptxVersion = a->binaryVersion = 90;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  EMU_LOCK;
  // A capture in progress cannot be waited for.
  bool any = false;
  for (Stream* s : st().streams)
    if (s->capturing) s->invalidated = true, any = true;
  if (any) return fail(cudaErrorStreamCaptureUnsupported);
  run_device();  // not the other devices' work: a missing wait on the right device stays visible
  return cudaSuccess;
}

// ------------------------------------------------------------------ memory
cudaError_t cudaMalloc(void** p, size_t n) {
  EMU_LOCK;
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  if (n == 0) return cudaSuccess;
  if (n > kTotalMemory - st().device_bytes[t_device]) return fail(cudaErrorMemoryAllocation);
  void* q = nullptr;
  if (posix_memalign(&q, 256, n) != 0 || !q) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, n);  // undefined, as cudaMalloc's (fresh host pages would read as zeros)
  DEEPCORE_EMU_RACECHECK_CALL(allocated(q, n));
  st().allocs[reinterpret_cast<uintptr_t>(q)] = Alloc{n, cudaMemoryTypeDevice, t_device};
  st().device_bytes[t_device] += n;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  EMU_LOCK;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  if (!p) return cudaSuccess;
  auto it = st().allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == st().allocs.end() || it->second.type != cudaMemoryTypeDevice) return fail(cudaErrorInvalidValue);
  run_all();  // cudaFree waits for the device
  DEEPCORE_EMU_RACECHECK_CALL(written(p, it->second.size));  // forget its bytes
  st().device_bytes[it->second.device] -= it->second.size;
  st().allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) {
  EMU_LOCK;
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  void* q = nullptr;
  if (posix_memalign(&q, 256, std::max<size_t>(n, 1)) != 0 || !q) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, n);  // undefined, as cudaHostAlloc's
  st().allocs[reinterpret_cast<uintptr_t>(q)] = Alloc{n, cudaMemoryTypeHost, t_device};
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t n) { return cudaHostAlloc(p, n, 0); }
cudaError_t cudaFreeHost(void* p) {
  EMU_LOCK;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  if (!p) return cudaSuccess;
  auto it = st().allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == st().allocs.end() || it->second.type != cudaMemoryTypeHost) return fail(cudaErrorInvalidValue);
  run_all();  // as cudaFree
  st().allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  EMU_LOCK;
  *free_b = kTotalMemory - st().device_bytes[t_device];
  *total_b = kTotalMemory;
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  EMU_LOCK;
  if (!a) return fail(cudaErrorInvalidValue);
  std::memset(a, 0, sizeof(*a));
  uintptr_t base = 0;
  const Alloc* al = find_alloc(p, &base);
  a->device = 0;
  if (!al) {
    a->type = cudaMemoryTypeUnregistered;
    a->device = -2;
    return cudaSuccess;
  }
  a->type = al->type;
  a->device = al->device;
  a->devicePointer = const_cast<void*>(p);
  a->hostPointer = al->type == cudaMemoryTypeHost ? const_cast<void*>(p) : nullptr;
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  EMU_LOCK;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  if (cudaError_t e = copy_async(dst, src, n, kind, nullptr)) return fail(e);
  run_stream(&legacy_stream());  // returns when the copy is done (and the work it is ordered behind)
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  EMU_LOCK;
  return fail(copy_async(dst, src, n, kind, s));
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  EMU_LOCK;
  if (n == 0) return cudaSuccess;
  if (!p) return fail(cudaErrorInvalidValue);
  return fail(enqueue(s, [p, v, n] {
    std::memset(p, v, n);
    DEEPCORE_EMU_RACECHECK_CALL(written(p, n));
  }));
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  EMU_LOCK;
  if (cudaError_t e = refuse_if_unsafe()) return fail(e);
  if (cudaError_t e = cudaMemsetAsync(p, v, n, nullptr)) return e;
  run_stream(&legacy_stream());
  return cudaSuccess;
}

// ------------------------------------------------------------------ streams
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  EMU_LOCK;
  auto* str = new Stream();
  str->blocking = !(flags & cudaStreamNonBlocking);
  str->device = t_device;
  str->id = st().next_stream_id++;
  st().streams.insert(str);
  *s = reinterpret_cast<cudaStream_t>(str);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  EMU_LOCK;
  auto* str = reinterpret_cast<Stream*>(s);
  if (is_legacy(s) || !st().streams.count(str)) return fail(cudaErrorInvalidResourceHandle);
  if (str->capturing) return fail(cudaErrorStreamCaptureUnsupported);
  run_stream(str);  // its work completes first, as on a GPU
  for (Event* ev : st().events)
    if (ev->stream == str) ev->stream = nullptr;  // complete
  st().streams.erase(str);
  delete str;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  EMU_LOCK;
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  if (str->capturing) {  // captured work runs only at replay: waiting for it is refused
    str->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (is_legacy(s)) {  // the legacy stream waits for the blocking streams: not allowed with unsafe captures
    if (cudaError_t e = refuse_if_unsafe()) return fail(e);
    // Its work, and (queued inside it) the blocking streams' work before it;
    // not the non-blocking streams'.
    run_stream(str);
    return cudaSuccess;
  }
  run_stream(str);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  EMU_LOCK;
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  if (str->capturing) {
    str->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  run_stream(str);  // (deferred work completes when asked about)
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  EMU_LOCK;
  if (is_legacy(s)) return fail(cudaErrorStreamCaptureUnsupported);
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  if (str->capturing) return fail(cudaErrorIllegalState);
  str->capturing = true;
  str->invalidated = false;
  str->mode = mode;
  str->thread = std::this_thread::get_id();
  str->graph = new Graph();
  str->graph->device = device_of(str);
  str->capture_id = st().next_capture++;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  EMU_LOCK;
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  if (!str->capturing) return fail(cudaErrorIllegalState);
  if (str->mode != cudaStreamCaptureModeRelaxed && str->thread != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  str->capturing = false;
  Graph* graph = str->graph;
  str->graph = nullptr;
  if (str->invalidated) {
    str->invalidated = false;
    delete graph;
    *g = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  st().graphs.insert(graph);
  *g = reinterpret_cast<cudaGraph_t>(graph);
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  EMU_LOCK;
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  *status = !str->capturing    ? cudaStreamCaptureStatusNone
            : str->invalidated ? cudaStreamCaptureStatusInvalidated
                               : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode) return fail(cudaErrorInvalidValue);
  const cudaStreamCaptureMode old = t_mode;
  t_mode = *mode;
  *mode = old;
  return cudaSuccess;
}

// ------------------------------------------------------------------ events
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  EMU_LOCK;
  auto* ev = new Event();
  ev->device = t_device;
  st().events.insert(ev);
  *e = reinterpret_cast<cudaEvent_t>(ev);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  EMU_LOCK;
  auto* ev = reinterpret_cast<Event*>(e);
  if (!st().events.erase(ev)) return fail(cudaErrorInvalidResourceHandle);
  delete ev;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  EMU_LOCK;
  auto* ev = reinterpret_cast<Event*>(e);
  Stream* str = stream_of(s);
  if (!st().events.count(ev) || !str) return fail(cudaErrorInvalidResourceHandle);
  if (device_of(str) != ev->device) return fail(cudaErrorInvalidResourceHandle);
  ev->captured_in = str->capturing ? str->capture_id : 0;
  // Outside a capture: complete once the stream's work queued so far has run.
  ev->stream = str->capturing ? nullptr : str;
  ev->upto = str->queued;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  EMU_LOCK;
  auto* ev = reinterpret_cast<Event*>(e);
  if (!st().events.count(ev)) return fail(cudaErrorInvalidResourceHandle);
  if (ev->captured_in) return fail(cudaErrorCapturedEvent);
  if (ev->stream) run_until(ev->stream, ev->upto);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  EMU_LOCK;
  auto* ev = reinterpret_cast<Event*>(e);
  Stream* str = stream_of(s);
  if (!st().events.count(ev) || !str) return fail(cudaErrorInvalidResourceHandle);
  const unsigned long long here = str->capturing ? str->capture_id : 0;
  if (ev->captured_in != here) {
    // Joining another stream into a capture (fork/join) is not emulated; a wait
    // across the capture's boundary is an error on a GPU too.
    if (str->capturing) str->invalidated = true;
    return fail(cudaErrorStreamCaptureIsolation);
  }
  // In a capture, the event was recorded earlier in the same capture (in
  // order). Outside: the stream's later work first runs the event's.
  if (!str->capturing && ev->stream && ev->stream != str) {
    const Mark m{ev->stream, ev->stream->id, ev->upto};
    return fail(enqueue(s, [m] { run_to(m); }));
  }
  return cudaSuccess;
}

// ------------------------------------------------------------------ graphs
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  EMU_LOCK;
  auto* graph = reinterpret_cast<Graph*>(g);
  if (!st().graphs.count(graph)) return fail(cudaErrorInvalidValue);
  auto* x = new GraphExec{std::make_shared<const std::vector<Node>>(graph->nodes), graph->device};
  st().execs.insert(x);
  *exec = reinterpret_cast<cudaGraphExec_t>(x);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  EMU_LOCK;
  auto* graph = reinterpret_cast<Graph*>(g);
  if (!st().graphs.erase(graph)) return fail(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
  EMU_LOCK;
  auto* exec = reinterpret_cast<GraphExec*>(x);
  if (!st().execs.erase(exec)) return fail(cudaErrorInvalidValue);
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
  EMU_LOCK;
  auto* exec = reinterpret_cast<GraphExec*>(x);
  if (!st().execs.count(exec)) return fail(cudaErrorInvalidValue);
  Stream* str = stream_of(s);
  if (!str) return fail(cudaErrorInvalidResourceHandle);
  // A graph runs on the device it was captured on, from a stream of that device.
  if (device_of(str) != exec->device) return fail(cudaErrorInvalidResourceHandle);
  if (str->capturing) {
    for (const Node& n : *exec->nodes)
      if (!str->invalidated) str->graph->nodes.push_back(n);
    return cudaSuccess;
  }
  // One piece of work: the nodes in capture order (the exec may be destroyed before it runs).
  auto nodes = exec->nodes;
  return fail(enqueue(s, [nodes] {
    for (const Node& n : *nodes) n();
  }));
}

}  // extern "C"
#pragma GCC visibility pop
