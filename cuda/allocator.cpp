#include "allocator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

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
  std::vector<int> claims;  // the live private pools whose graphs may touch this block (usually none or one)
};

using FreeMap = std::multimap<std::pair<int, size_t>, void*>;  // (device, size) -> block

// The smallest block of `m` on `device` that fits `size` and is at most twice
// it (a small tensor never pins a large block), taken out of `m`; or nullptr.
void* take_fit(FreeMap& m, int device, size_t size, size_t* got) {
  auto it = m.lower_bound({device, size});
  if (it == m.end() || it->first.first != device || it->first.second > 2 * size) return nullptr;
  void* p = it->second;
  *got = it->first.second;
  m.erase(it);
  return p;
}

// Switches the calling thread to relaxed stream-capture mode for a scope, so
// that a cudaMalloc during a capture neither fails nor invalidates it.
class RelaxedCaptureMode {
 public:
  explicit RelaxedCaptureMode(bool on) : on_(on) {
    if (on_ && cudaThreadExchangeStreamCaptureMode(&mode_) != cudaSuccess) on_ = false;
  }
  ~RelaxedCaptureMode() {
    if (on_) (void)cudaThreadExchangeStreamCaptureMode(&mode_);
  }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  bool on_;
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

bool has_claim(const Block& b, int pool) {
  for (int c : b.claims)
    if (c == pool) return true;
  return false;
}

class CachingAllocator {
 public:
  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    int device = 0;
    check(cudaGetDevice(&device), "device_alloc: cudaGetDevice");
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    const int pool = capture_pool(device);
    size_t got = 0;
    // During a capture: a block this capture freed, then one from the cache.
    if (pool) {
      if (void* p = take_fit(capture_free_, device, size, &got)) {
        auto node = held_.extract(p);
        held_bytes_ -= got;
        live_ += got;
        blocks_.insert(std::move(node));  // still claimed by `pool` alone
        return p;
      }
    }
    if (void* p = take_fit(free_, device, size, &got)) {
      cached_ -= got;
      live_ += got;
      blocks_[p] = Block{device, got, pool ? std::vector<int>{pool} : std::vector<int>{}};
      return p;
    }
    void* p = nullptr;
    cudaError_t e;
    {
      RelaxedCaptureMode relaxed(pool != 0);
      e = cudaMalloc(&p, size);
      // cudaFree is not allowed while a capture runs: the cache is emptied only outside captures.
      const bool may_free = capture_pool_.empty();
      if (e == cudaErrorMemoryAllocation && may_free) {
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
        msg += "; deepcore holds " + format_bytes(live_) + " in live tensors";
        msg += may_free ? " (its cache was emptied)"
                        : ", " + format_bytes(cached_) + " cached and " + format_bytes(held_bytes_) +
                              " held for CUDA graphs (the cache cannot be emptied during a graph capture)";
        throw CudaOutOfMemory(msg);
      }
    }
    check(e, ("device_alloc: cudaMalloc(" + format_bytes(size) + ")").c_str());
    ++malloc_calls_;
    live_ += size;
    blocks_[p] = Block{device, size, pool ? std::vector<int>{pool} : std::vector<int>{}};
    return p;
  }

  void release(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto node = blocks_.extract(p);
    if (node.empty()) return;  // not ours: never happens through DeviceBuffer
    Block& b = node.mapped();
    live_ -= b.size;
    // Freed during a capture: the captured work may have used it, so the
    // capture's graph claims it too.
    const int pool = capture_pool(b.device);
    if (pool && !has_claim(b, pool)) b.claims.push_back(pool);
    if (b.claims.empty()) {
      cached_ += b.size;
      free_.emplace(std::make_pair(b.device, b.size), p);
      return;
    }
    held_bytes_ += b.size;
    if (pool && b.claims.size() == 1) capture_free_.emplace(std::make_pair(b.device, b.size), p);
    held_.insert(std::move(node));
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!capture_pool_.empty())
      throw CaptureError("empty_cache cannot run inside a CUDA graph capture (cudaFree is not allowed then)");
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) current = -1;
    int on = current;
    for (auto& kv : free_) {  // each block freed with its own device current
      if (current >= 0 && kv.first.first != on && cudaSetDevice(kv.first.first) == cudaSuccess) on = kv.first.first;
      (void)cudaFree(kv.second);
    }
    if (current >= 0 && on != current) (void)cudaSetDevice(current);
    (void)cudaGetLastError();
    free_.clear();
    cached_ = 0;
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return AllocatorStats{live_, cached_, malloc_calls_, held_bytes_};
  }

  int create_pool() {
    std::lock_guard<std::mutex> lock(mu_);
    return ++last_pool_;
  }

  void begin_capture(int device, int pool) {
    std::lock_guard<std::mutex> lock(mu_);
    capture_pool_[device] = pool;
  }

  void end_capture(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    end_capture_locked(device);
  }

  void release_pool(int pool) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = capture_pool_.begin(); it != capture_pool_.end();) {
      if (it->second == pool) {
        const int device = it->first;
        ++it;
        end_capture_locked(device);
      } else {
        ++it;
      }
    }
    auto drop = [pool](Block& b) { b.claims.erase(std::remove(b.claims.begin(), b.claims.end(), pool), b.claims.end()); };
    for (auto& kv : blocks_) drop(kv.second);
    for (auto it = held_.begin(); it != held_.end();) {
      drop(it->second);
      if (it->second.claims.empty()) {
        held_bytes_ -= it->second.size;
        cached_ += it->second.size;
        free_.emplace(std::make_pair(it->second.device, it->second.size), it->first);
        it = held_.erase(it);
      } else {
        ++it;
      }
    }
  }

  PoolStats pool_stats(int pool) {
    std::lock_guard<std::mutex> lock(mu_);
    PoolStats s{0, 0};
    for (const auto& kv : blocks_)
      if (has_claim(kv.second, pool)) s.live_bytes += kv.second.size;
    for (const auto& kv : held_)
      if (has_claim(kv.second, pool)) s.held_bytes += kv.second.size;
    return s;
  }

 private:
  // Caller holds mu_. The pool capturing on `device`, or 0.
  int capture_pool(int device) const {
    auto it = capture_pool_.find(device);
    return it == capture_pool_.end() ? 0 : it->second;
  }

  // Caller holds mu_. The capture's freed blocks stay held (claimed by its
  // pool); they are just no longer offered for reuse.
  void end_capture_locked(int device) {
    capture_pool_.erase(device);
    for (auto it = capture_free_.begin(); it != capture_free_.end();) {
      if (it->first.first == device) it = capture_free_.erase(it);
      else ++it;
    }
  }

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
  FreeMap free_;                              // the cache: freed blocks no graph claims
  std::unordered_map<void*, Block> blocks_;   // live blocks
  std::unordered_map<void*, Block> held_;     // freed blocks that live pools claim
  FreeMap capture_free_;                      // the held blocks that only the capturing pool claims
  std::map<int, int> capture_pool_;           // device -> pool capturing there
  int last_pool_ = 0;
  size_t live_ = 0, cached_ = 0, malloc_calls_ = 0, held_bytes_ = 0;
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

int private_pool_create() { return allocator().create_pool(); }
void private_pool_begin_capture(int device, int pool) { allocator().begin_capture(device, pool); }
void private_pool_end_capture(int device) { allocator().end_capture(device); }
void private_pool_release(int pool) { allocator().release_pool(pool); }
PoolStats private_pool_stats(int pool) { return allocator().pool_stats(pool); }

}  // namespace cuda
}  // namespace deepcore
