// The stream that deepcore's kernels, copies and library calls (cuBLASLt) are
// queued on: one deepcore-owned stream per device, created on first use with
// cudaStreamNonBlocking, so that it never waits for (or makes wait) the legacy
// default stream that other libraries may use, and so that a training step can
// be captured as a CUDA graph (which the legacy stream forbids). Every launch,
// memset, copy and host synchronization in cuda/ names it; deepcore never
// synchronizes the whole device on the hot path.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace deepcore {
namespace cuda {

// deepcore's stream on the current device (created on the first call for that
// device, never destroyed). Throws CudaError when there is no usable device.
cudaStream_t current_stream();

// Copies `bytes` of device memory to the host after the work already queued on
// current_stream(), and waits for it: the one way results come back to the
// host. Errors (including those of earlier kernels) name `what`. During a CUDA
// graph capture it throws CaptureError instead (graph.h).
void copy_to_host(void* dst, const void* src, size_t bytes, const char* what);

}  // namespace cuda
}  // namespace deepcore
