// Splitting work across deepcore's own thread pool (parallel.cpp).
//
// Why not OpenMP: an OpenMP runtime (libgomp) is process-wide and shared by
// every library that links it; PyTorch's wheel brings its own libgomp.so.1 and
// whichever loads first serves both. Its settings (wait policy, thread count)
// are then either not ours to set or set for PyTorch too, and its idle threads
// spin on the cores OpenBLAS's pthreads need (a 784-300-100-10 training step
// ran 16x slower after `import torch`). The pool below belongs to deepcore
// alone: its workers sleep as soon as a job is done (parallel.cpp has the
// measurements); its size is set by deepcore.set_num_threads or threadpoolctl
// (the C functions deepcore_get/set_num_threads) and by nothing else.
//
// Rules for kernels that use it:
//  - A job's work is split into static contiguous chunks, as OpenMP's
//    schedule(static) did; the calling thread runs chunk 0.
//  - Sums: partial sums per fixed-size block (boundaries that depend on the
//    input size only), added in block order, so that a result has the same
//    bits at any thread count.
//  - A parallel call made from inside a job (nested), or while another thread
//    is running a job, runs on the calling thread alone.
#pragma once
#include <algorithm>
#include <type_traits>
#include "ops/common.h"

namespace deepcore {

// Threads the kernels use, the calling thread included (>= 1). Default: the
// value of OMP_NUM_THREADS if it is set to a positive integer (read, never
// written: job schedulers such as joblib's loky set it to keep their workers
// from oversubscribing the cores), else the number of cores this process may
// run on (sched_getaffinity).
int pool_num_threads();
// Sets it (n >= 1; larger than the core count is allowed). Workers beyond the
// new count exit; missing ones are started at the next parallel call.
void pool_set_num_threads(int n);

namespace detail {
// Runs task(ctx, t, nt) for every t in [0, nt) and returns when all have
// returned: t = 0 on the calling thread, the others on pool workers. nt is
// capped at pool_num_threads(); it becomes 1 (the calling thread alone) for a
// nested call or while another thread's job runs. The first exception a task
// throws is rethrown here, after all tasks have finished.
void pool_run(int nt, void (*task)(void*, int, int), void* ctx);
}  // namespace detail

// Calls fn(t, nt) for t in [0, nt), at most `threads` of them (nt may be
// smaller, see detail::pool_run).
template <class Fn>
void parallel_threads(int threads, Fn&& fn) {
  if (threads <= 1) {
    fn(0, 1);
    return;
  }
  using F = std::remove_reference_t<Fn>;
  detail::pool_run(threads, [](void* ctx, int t, int nt) { (*static_cast<F*>(ctx))(t, nt); },
                   const_cast<void*>(static_cast<const void*>(&fn)));
}

// Calls fn(begin, end) on contiguous chunks of [0, n), one per thread when n is
// at least `threshold` (large enough to pay for the fork), else once on the
// calling thread. Chunk starts are multiples of `align` elements (default 16
// floats = 64 bytes, so each thread owns whole cache lines).
template <class Fn>
void parallel_chunks(index_t n, Fn fn, index_t threshold = kParallelThreshold, index_t align = 16) {
  const int threads = n < threshold ? 1 : pool_num_threads();
  if (threads <= 1 || n <= align) {
    fn(index_t(0), n);
    return;
  }
  parallel_threads(threads, [&](int t, int nt) {
    const index_t per = ((n + nt - 1) / nt + align - 1) / align * align;
    const index_t b = std::min(n, t * per), e = std::min(n, b + per);
    if (b < e) fn(b, e);
  });
}

// parallel_chunks(n, fn, align) when `parallel`, else fn(0, n) on the calling
// thread (for kernels whose threshold is not a count of their own units).
template <class Fn>
void parallel_chunks_if(bool parallel, index_t n, Fn fn, index_t align = 16) {
  if (!parallel) {
    fn(index_t(0), n);
    return;
  }
  parallel_chunks(n, fn, 0, align);
}

// init + sum_k block_sum(k) over k in [0, blocks), added in block order
// (T: double, or a struct of sums with +=). block_sum(k) computes block k's
// partial from its elements alone and blocks are fixed by the caller from the
// input size, so the result has the same bits at any thread count and on the
// serial path. Parallel when `work` (elements, say) reaches `threshold`.
// Partials are kept for at most kBlockBatch blocks at a time (a stack buffer,
// no allocation).
template <class T, class BlockSum>
T sum_blocks_in_order(index_t blocks, T init, BlockSum block_sum, index_t work,
                      index_t threshold = kParallelThreshold) {
  T acc = init;
  if (work < threshold || blocks < 2 || pool_num_threads() == 1) {
    for (index_t k = 0; k < blocks; ++k) acc += block_sum(k);
    return acc;
  }
  constexpr index_t kBlockBatch = 1024;
  T partial[kBlockBatch];
  for (index_t k0 = 0; k0 < blocks; k0 += kBlockBatch) {
    const index_t m = std::min(kBlockBatch, blocks - k0);
    parallel_chunks(
        m, [&](index_t b, index_t e) { for (index_t k = b; k < e; ++k) partial[k] = block_sum(k0 + k); }, 0, 1);
    for (index_t k = 0; k < m; ++k) acc += partial[k];
  }
  return acc;
}

}  // namespace deepcore
