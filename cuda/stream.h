// The stream that deepcore's kernels, copies and library calls (cuBLASLt) are
// queued on. Every launch names it, so moving deepcore onto its own stream
// (needed for CUDA graph capture, which the legacy default stream forbids) is
// a change to this one function.
#pragma once
#include <cuda_runtime.h>

namespace deepcore {
namespace cuda {

// Today: the legacy default stream, where every kernel in cuda/ runs.
inline cudaStream_t current_stream() { return cudaStreamLegacy; }

}  // namespace cuda
}  // namespace deepcore
