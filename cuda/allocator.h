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
};
AllocatorStats allocator_stats();

}  // namespace cuda
}  // namespace deepcore
