#include "runtime.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "check.h"
#include "graph.h"
#include "stream.h"

namespace deepcore {
namespace cuda {

namespace {
bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("DEEPCORE_CUDA_SYNC");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

std::string version_str(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// Exists only so that unavailable_reason() can ask whether this build holds
// code (SASS or PTX) that the device can run.
__global__ void probe_kernel() {}
}  // namespace

void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  switch (e) {
    case cudaSuccess: break;
    // Errors of this launch itself.
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidValue:
    case cudaErrorLaunchOutOfResources:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidDeviceFunction:
      throw CudaError(std::string(kernel) + ": launch failed: " + error_text(e));
    // A fault left behind by an earlier asynchronous kernel (the context is now unusable).
    default:
      throw CudaError(std::string(kernel) + ": " + error_text(e) +
                      " (the error may come from an earlier kernel; rerun with DEEPCORE_CUDA_SYNC=1 to name it)");
  }
  if (sync_after_launch() && !is_capturing()) {  // a capture cannot synchronize
    e = cudaStreamSynchronize(current_stream());
    if (e != cudaSuccess) throw CudaError(std::string(kernel) + ": " + error_text(e));
  }
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string unavailable_reason(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    int driver = 0;
    (void)cudaDriverGetVersion(&driver);
    const std::string runtime = version_str(CUDART_VERSION);
    if (e == cudaErrorInsufficientDriver) {
      if (driver == 0) return "no NVIDIA driver was found (libcuda.so.1 could not be loaded)";
      return "the NVIDIA driver supports CUDA " + version_str(driver) + ", older than the CUDA " + runtime +
             " runtime deepcore was built with; update the driver";
    }
    if (e == cudaErrorNoDevice) return "the NVIDIA driver found no CUDA device (" + error_text(e) + ")";
    return "cudaGetDeviceCount failed (" + error_text(e) + ")";
  }
  if (n == 0) return "the NVIDIA driver found no CUDA device";
  if (device >= n) return "device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " devices)";
  // A device exists; check that this build has code it can run. Querying a
  // kernel's attributes loads the module for the device without launching
  // (on `device`, made current for the query).
  int prev = -1;
  if (device >= 0 && (cudaGetDevice(&prev) != cudaSuccess || prev == device || cudaSetDevice(device) != cudaSuccess))
    prev = -1;
  cudaFuncAttributes attr;
  const cudaError_t k = cudaFuncGetAttributes(&attr, probe_kernel);
  int dev = 0;
  (void)cudaGetDevice(&dev);
  if (prev >= 0) (void)cudaSetDevice(prev);
  if (k != cudaSuccess) {
    (void)cudaGetLastError();
    int major = 0, minor = 0;
    (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (k == cudaErrorNoKernelImageForDevice || k == cudaErrorInvalidDeviceFunction)
      return "device " + std::to_string(dev) + " is sm_" + std::to_string(major * 10 + minor) +
             ", but deepcore._cuda was built for " DEEPCORE_CUDA_ARCHS
             " (rebuild with -DDEEPCORE_CUDA_ARCHS=...)";
    return "device " + std::to_string(dev) + " is unusable (" + error_text(k) + ")";
  }
  return "";
}

}  // namespace cuda
}  // namespace deepcore
