#include "allocator.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "check.h"

namespace deepcore {
namespace cuda {
namespace {

// Sizes are rounded up so that nearby shapes share blocks: to 512 bytes below
// 1 MiB, to 2 MiB above. A request takes the smallest cached block that fits,
// if that block is at most twice the request (a small tensor never pins a
// large block). Blocks are never split.
constexpr size_t kSmallQuantum = 512;
constexpr size_t kLargeQuantum = size_t(2) << 20;
constexpr size_t kLargeThreshold = size_t(1) << 20;

size_t round_size(size_t n) {
  const size_t q = n < kLargeThreshold ? kSmallQuantum : kLargeQuantum;
  return (n + q - 1) / q * q;
}

std::string format_bytes(size_t n) {
  char buf[64];
  if (n >= (size_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(n) / double(size_t(1) << 30));
  else if (n >= (size_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", double(n) / double(size_t(1) << 20));
  else std::snprintf(buf, sizeof buf, "%zu bytes", n);
  return buf;
}

struct Block {
  int device;
  size_t size;
};

class CachingAllocator {
 public:
  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    int device = 0;
    check(cudaGetDevice(&device), "device_alloc: cudaGetDevice");
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound({device, size});
    if (it != free_.end() && it->first.first == device && it->first.second <= 2 * size) {
      void* p = it->second;
      const size_t got = it->first.second;
      free_.erase(it);
      cached_ -= got;
      live_ += got;
      blocks_[p] = Block{device, got};
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the (non-sticky) error before retrying
      release_cached(device);
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      const bool info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
      std::string msg = "CUDA out of memory on device " + std::to_string(device) + ": tried to allocate " +
                        format_bytes(bytes);
      if (info) msg += "; " + format_bytes(free_b) + " free of " + format_bytes(total_b) + " total";
      msg += "; deepcore holds " + format_bytes(live_) + " in live tensors (its cache was emptied)";
      throw CudaOutOfMemory(msg);
    }
    check(e, ("device_alloc: cudaMalloc(" + format_bytes(size) + ")").c_str());
    ++malloc_calls_;
    live_ += size;
    blocks_[p] = Block{device, size};
    return p;
  }

  void release(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(p);
    if (it == blocks_.end()) return;  // not ours: never happens through DeviceBuffer
    const Block b = it->second;
    blocks_.erase(it);
    live_ -= b.size;
    cached_ += b.size;
    free_.emplace(std::make_pair(b.device, b.size), p);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_) (void)cudaFree(kv.second);
    free_.clear();
    cached_ = 0;
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return AllocatorStats{live_, cached_, malloc_calls_};
  }

 private:
  // Caller holds mu_. cudaFree synchronizes the device, so blocks still in use
  // by queued kernels are not freed under them.
  void release_cached(int device) {
    for (auto it = free_.begin(); it != free_.end();) {
      if (it->first.first == device) {
        (void)cudaFree(it->second);
        cached_ -= it->first.second;
        it = free_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::mutex mu_;
  std::multimap<std::pair<int, size_t>, void*> free_;  // (device, size) -> block
  std::unordered_map<void*, Block> blocks_;              // live blocks
  size_t live_ = 0, cached_ = 0, malloc_calls_ = 0;
};

// Never destroyed: at interpreter exit the CUDA context may already be gone,
// and the driver frees device memory with the process anyway.
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

void* device_alloc(size_t bytes) { return allocator().allocate(bytes); }
void device_free(void* p) { allocator().release(p); }
void empty_cache() { allocator().empty(); }
AllocatorStats allocator_stats() { return allocator().stats(); }

}  // namespace cuda
}  // namespace deepcore
