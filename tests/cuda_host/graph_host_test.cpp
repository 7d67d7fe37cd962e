// Host-only checks of the CUDA graph bookkeeping (allocator.cpp's private
// pools, graph.cpp's capture registry and abort) against fake_cudart.cpp.
// Built and run by tests/test_cuda_graph_host.py; exits nonzero on failure.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "allocator.h"
#include "check.h"
#include "graph.h"
#include "stream.h"

using namespace deepcore::cuda;

extern int g_mallocs, g_frees, g_mode_swaps, g_launches, g_exec_destroyed, g_graph_destroyed;
extern bool g_capturing, g_invalidate;
extern cudaStreamCaptureMode g_mode;

#define EXPECT(c)                                                     \
  do {                                                                \
    if (!(c)) {                                                       \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
      std::exit(1);                                                   \
    }                                                                 \
  } while (0)

template <class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

void private_pools_hold_blocks_back_from_eager_code() {
  void* a = device_alloc(1000);
  device_free(a);
  EXPECT(device_alloc(1000) == a && g_mallocs == 1);  // eager reuse
  device_free(a);

  const int P = private_pool_create();
  private_pool_begin_capture(0, P);
  void* c = device_alloc(1000);  // from the cache, now claimed by P
  EXPECT(c == a && g_mallocs == 1);
  device_free(c);
  EXPECT(allocator_stats().held_bytes == 1024 && allocator_stats().cached_bytes == 0);
  EXPECT(device_alloc(1000) == a);  // reused within the same capture
  device_free(a);
  void* e = device_alloc(5000);  // a cudaMalloc during the capture: relaxed mode around it
  EXPECT(g_mallocs == 2 && g_mode_swaps == 2);
  private_pool_end_capture(0);

  void* pre = device_alloc(300000);  // allocated outside, freed during a capture: claimed
  private_pool_begin_capture(0, P);
  device_free(pre);
  private_pool_end_capture(0);
  void* f = device_alloc(1000);
  void* f2 = device_alloc(300000);
  EXPECT(f != a && f2 != pre && g_mallocs == 5);  // eager code cannot get P's blocks
  device_free(e);  // claimed by P: held, not cached
  EXPECT(private_pool_stats(P).live_bytes == 0 && private_pool_stats(P).held_bytes == 1024 + 5120 + 300032);

  // A block of P freed during Q's capture is claimed by both: Q may not reuse it.
  const int Q = private_pool_create();
  private_pool_begin_capture(0, P);
  void* shared = device_alloc(2000);
  private_pool_end_capture(0);
  private_pool_begin_capture(0, Q);
  device_free(shared);
  void* g = device_alloc(2000);
  EXPECT(g != shared);
  device_free(g);
  private_pool_end_capture(0);

  private_pool_release(P);  // a, e, pre back to the cache; `shared` still held for Q
  EXPECT(allocator_stats().cached_bytes == 1024 + 5120 + 300032);
  EXPECT(private_pool_stats(P).held_bytes == 0 && private_pool_stats(Q).held_bytes == 4096);
  EXPECT(device_alloc(1000) == a);
  private_pool_release(Q);
  EXPECT(allocator_stats().held_bytes == 0);
  device_free(a);
  device_free(f);
  device_free(f2);
  EXPECT(allocator_stats().live_bytes == 0);

  const int R = private_pool_create();
  private_pool_begin_capture(0, R);
  EXPECT(starts_with(message_of([] { empty_cache(); }), "empty_cache cannot run inside a CUDA graph capture"));
  private_pool_release(R);  // ends its capture too
  empty_cache();
  EXPECT(allocator_stats().cached_bytes == 0 && g_frees == g_mallocs);
}

void captures_abort_cleanly_and_replay() {
  CudaGraph g;
  EXPECT(!is_capturing());
  g.capture_begin();
  EXPECT(g_mode == cudaStreamCaptureModeThreadLocal && is_capturing() && g.capturing());
  void* scratch = device_alloc(100);
  device_free(scratch);
  EXPECT(g.memory_stats().held_bytes == 512);
  bool deferred_ran = false;
  EXPECT(defer_until_capture_ends(0, [&] { deferred_ran = true; }));

  // A host synchronization inside the capture: CaptureError, the capture ended and discarded.
  double h;
  std::string m = message_of([&] { copy_to_host(&h, &h, 8, "DeviceBuffer.to_numpy"); });
  EXPECT(starts_with(m, "DeviceBuffer.to_numpy cannot run inside a CUDA graph capture") && contains(m, "aborted"));
  EXPECT(deferred_ran && !is_capturing() && !g.capturing() && !g.captured() && g_graph_destroyed == 1);
  EXPECT(allocator_stats().held_bytes == 0 && allocator_stats().cached_bytes == 512);  // pool released
  m = message_of([&] { g.capture_end(); });
  EXPECT(starts_with(m, "Graph.capture_end: nothing was captured, the capture was aborted: DeviceBuffer.to_numpy"));
  EXPECT(!defer_until_capture_ends(0, [] {}));

  g.capture_begin();
  void* s = device_alloc(100);
  device_free(s);
  g.capture_end();
  EXPECT(g.captured() && g_graph_destroyed == 2);
  g.replay();
  g.replay();
  EXPECT(g_launches == 2);
  EXPECT(contains(message_of([&] { g.capture_begin(); }), "already holds a capture"));
  void* e = device_alloc(100);
  EXPECT(e != s);  // held for the graph
  device_free(e);

  CudaGraph h2, h3;
  h2.capture_begin();
  EXPECT(contains(message_of([&] { h2.capture_begin(); }), "already capturing"));
  EXPECT(contains(message_of([&] { h3.capture_begin(); }), "another deepcore graph is capturing"));
  EXPECT(starts_with(message_of([&] { g.replay(); }), "Graph.replay cannot run inside a CUDA graph capture"));
  EXPECT(!is_capturing() && g_launches == 2);

  h2.capture_begin();
  g_invalidate = true;
  m = message_of([&] { h2.capture_end(); });
  EXPECT(contains(m, "the capture was invalidated (cudaErrorStreamCaptureInvalidated") && !h2.capturing());
  h2.capture_begin();
  h2.capture_abort();  // what __exit__ does when the block raised
  EXPECT(!is_capturing() && !h2.capturing());
  h2.capture_abort();

  g.reset();
  EXPECT(!g.captured() && g_exec_destroyed == 1 && allocator_stats().held_bytes == 0);
  g.reset();
  {
    CudaGraph dropped;
    dropped.capture_begin();
  }
  EXPECT(!is_capturing());
}

int main() {
  private_pools_hold_blocks_back_from_eager_code();
  captures_abort_cleanly_and_replay();
  std::printf("ok\n");
  return 0;
}
