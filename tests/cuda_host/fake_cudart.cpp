// A fake CUDA runtime for host-only tests of cuda/allocator.cpp, graph.cpp and
// stream.cpp: device memory is malloc'ed, a stream capture is a flag, and the
// calls that a capture forbids fail while it is on, as the real runtime does.
#include <cuda_runtime.h>

#include <cstdlib>

int g_mallocs = 0, g_frees = 0, g_mode_swaps = 0, g_launches = 0, g_exec_destroyed = 0, g_graph_destroyed = 0;
bool g_capturing = false, g_invalidate = false;
cudaStreamCaptureMode g_mode = cudaStreamCaptureModeGlobal;

namespace {
int stream_object, graph_object, exec_object;
}

extern "C" {
cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  ++g_mallocs;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (g_capturing) return cudaErrorStreamCaptureUnsupported;
  std::free(p);
  ++g_frees;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) {
  *f = *t = 0;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode*) {
  ++g_mode_swaps;
  return cudaSuccess;
}
const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaErrorStreamCaptureInvalidated ? "cudaErrorStreamCaptureInvalidated" : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t) { return "fake"; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(&stream_object);
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode mode) {
  if (g_capturing) return cudaErrorIllegalState;
  g_capturing = true;
  g_mode = mode;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (!g_capturing) return cudaErrorIllegalState;
  g_capturing = false;
  if (g_invalidate) {
    g_invalidate = false;
    *graph = nullptr;
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = reinterpret_cast<cudaGraph_t>(&graph_object);
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* s) {
  *s = g_capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t, unsigned long long) {
  *e = reinterpret_cast<cudaGraphExec_t>(&exec_object);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t) {
  ++g_graph_destroyed;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) {
  ++g_exec_destroyed;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) {
  ++g_launches;
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void*, const void*, size_t, cudaMemcpyKind, cudaStream_t) {
  return g_capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return g_capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
}

// runtime.cu (a .cu file) is not built here.
namespace deepcore {
namespace cuda {
void check_launch(const char*) {}
}  // namespace cuda
}  // namespace deepcore
