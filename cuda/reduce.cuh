// Deterministic sums: a first kernel leaves one partial per block (block_sum,
// a fixed order) and sum_partials_kernel adds the partials in a fixed order
// into device memory; sum_partials_to_host then copies the total out and
// waits for current_stream(), while a sum that stays on the device (e.g.
// swish_beta_grad's) launches sum_partials_kernel alone. The grid size is a
// function of the problem size only, so the same input gives the same bits on
// every run.
#pragma once
#include <cuda_runtime.h>

#include "check.h"
#include "launch.cuh"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// One block of kThreads: *out = sum of partials[0, n), thread t taking t,
// t + kThreads, ... and then block_sum's fixed tree; the total is converted
// to Out (rounded to nearest) as it is stored. 0 when n == 0.
template <class T, class Out = T>
__global__ void sum_partials_kernel(const T* partials, index_t n, Out* out) {
  __shared__ T shared[kWarpsPerBlock];
  T v = T(0);
  for (index_t i = threadIdx.x; i < n; i += kThreads) v += partials[i];
  v = block_sum(v, shared);
  if (threadIdx.x == 0) *out = Out(v);
}

// Queues sum_partials_kernel and returns the total on the host (synchronizes
// current_stream(); the error, if any, names `what`).
template <class T>
T sum_partials_to_host(const T* partials, index_t n, T* out, const char* what) {
  sum_partials_kernel<T><<<1, kThreads, 0, current_stream()>>>(partials, n, out);
  check_launch(what);
  T h = T(0);
  copy_to_host(&h, out, sizeof(T), what);  // refuses to run inside a graph capture
  return h;
}

}  // namespace
}  // namespace cuda
}  // namespace deepcore
