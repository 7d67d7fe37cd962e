// A caching device allocator: freed blocks are kept per (device, size) and
// handed out again, so a training step that allocates the same shapes every
// batch calls cudaMalloc only during the first step.
//
// Every kernel, memset and copy deepcore issues on a device runs on that
// device's one deepcore stream (stream.h), in issue order. So a block released
// after its last use was queued can be handed to the next request at once:
// whatever the new owner queues runs on the same stream, after that last use,
// without a synchronization. Memory another library may still be using on its
// own streams (exported through DLPack or __cuda_array_interface__) is the
// exception; DeviceBuffer synchronizes before returning such a block.
//
// CUDA graphs (graph.h) get private pools, as in PyTorch. While a graph is
// being captured on a device, every block handed out or freed on that device
// is claimed by the graph's pool: a replay touches those addresses again, so
// once freed they are held back from eager code (and from other graphs) until
// the graph is reset or destroyed, and only then go back to the cache. During
// the capture a freed block of the pool is reused by the same capture (the
// capture records stream order, so the reuse is as safe as eager reuse). No
// cudaFree happens during a capture; a cudaMalloc does (the pool grows), with
// the capturing thread switched to relaxed capture mode for that call, which
// the rules allow since a cudaMalloc is not recorded in the graph.
#pragma once
#include <cstddef>

namespace deepcore {
namespace cuda {

// A block of at least `bytes` bytes on the current device (nullptr for 0).
// When cudaMalloc fails the cache is emptied and the allocation retried once;
// if it still fails, throws CudaOutOfMemory saying how much was asked for, how
// much the device has free, and how much deepcore holds.
void* device_alloc(size_t bytes);
// Returns a block from device_alloc to the cache (no cudaFree).
void device_free(void* p);
// cudaFree every cached (unused) block.
void empty_cache();

// Scratch memory for one call, returned to the cache on every path (the
// kernels that use it are queued on deepcore's stream before any later reuse).
struct Scratch {
  void* p;
  explicit Scratch(size_t bytes) : p(device_alloc(bytes)) {}
  ~Scratch() { device_free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

struct AllocatorStats {
  size_t live_bytes;    // handed out and not yet freed
  size_t cached_bytes;  // freed, kept for reuse
  size_t malloc_calls;  // cudaMalloc calls so far (steady state: constant)
  size_t held_bytes;    // freed, but held back for CUDA graphs that may touch them
};
AllocatorStats allocator_stats();

// Private pools for CUDA graphs (graph.cpp drives them). A pool is a number > 0.
int private_pool_create();
// From now until private_pool_end_capture(device), blocks handed out or freed
// on `device` are claimed by `pool`.
void private_pool_begin_capture(int device, int pool);
void private_pool_end_capture(int device);
// Drops the pool's claims: its freed blocks go back to the cache (unless
// another live pool claims them too); its live blocks go there when freed.
void private_pool_release(int pool);
struct PoolStats {
  size_t live_bytes;  // claimed by the pool and handed out
  size_t held_bytes;  // claimed by the pool and freed (reserved for its graph)
};
PoolStats private_pool_stats(int pool);

}  // namespace cuda
}  // namespace deepcore
