// Errors from the CUDA runtime become C++ exceptions that name the operation;
// the bindings translate them to deepcore._cuda.CudaError (a RuntimeError),
// CaptureError (a CudaError) and CudaOutOfMemoryError (a MemoryError). Host code only.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace deepcore {
namespace cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct CudaOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Something that cannot run while deepcore's stream is being captured into a
// CUDA graph (graph.h); deepcore._cuda.CaptureError, a CudaError.
struct CaptureError : CudaError {
  using CudaError::CudaError;
};

inline std::string error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// Throws CudaError("<what>: <cudaErrorName>: <description>") unless e is cudaSuccess.
// The thread's last-error slot is cleared first, so that check_launch after
// the next (successful) launch does not report this error again.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw CudaError(std::string(what) + ": " + error_text(e));
  }
}

// After a kernel launch. Launch errors (bad configuration, no kernel image for
// this GPU) are reported at once, naming the kernel. A fault inside the kernel
// is asynchronous: it surfaces at the next synchronizing call, unless
// DEEPCORE_CUDA_SYNC=1, which synchronizes deepcore's stream after every
// launch so that the error names the kernel that faulted (slow; for debugging).
void check_launch(const char* kernel);

// Message for errors found at a synchronizing call (copies, loss results):
// an earlier asynchronous kernel may be the culprit.
inline void check_sync(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // cleared, as in check()
    throw CudaError(std::string(what) + ": " + error_text(e) +
                    " (the error may come from an earlier kernel; rerun with DEEPCORE_CUDA_SYNC=1 to name it)");
  }
}

}  // namespace cuda
}  // namespace deepcore
