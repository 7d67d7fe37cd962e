#include "stream.h"

#include <atomic>
#include <mutex>
#include <string>

#include "check.h"
#include "graph.h"

namespace deepcore {
namespace cuda {
namespace {

constexpr int kMaxDevices = 64;
// One stream per device, created once; streams are never destroyed (at exit
// the CUDA context may already be gone).
std::atomic<cudaStream_t> streams[kMaxDevices];
std::mutex create_mu;

}  // namespace

cudaStream_t current_stream() {
  int dev = 0;
  check(cudaGetDevice(&dev), "current_stream: cudaGetDevice");
  if (dev < 0 || dev >= kMaxDevices)
    throw CudaError("current_stream: device " + std::to_string(dev) + " is beyond the " +
                    std::to_string(kMaxDevices) + " devices deepcore supports");
  cudaStream_t s = streams[dev].load(std::memory_order_acquire);
  if (s) return s;
  std::lock_guard<std::mutex> lock(create_mu);
  s = streams[dev].load(std::memory_order_acquire);
  if (!s) {
    // Created on the current device, which is `dev`.
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "current_stream: cudaStreamCreateWithFlags");
    streams[dev].store(s, std::memory_order_release);
  }
  return s;
}

void copy_to_host(void* dst, const void* src, size_t bytes, const char* what) {
  if (bytes == 0) return;
  ensure_not_capturing(what, "it copies results to the host and waits for them");
  const cudaStream_t s = current_stream();
  check_sync(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), what);
  check_sync(cudaStreamSynchronize(s), what);
}

}  // namespace cuda
}  // namespace deepcore
