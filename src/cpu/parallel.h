// Splitting elementwise work across OpenMP threads.
#pragma once
#include <omp.h>
#include <algorithm>
#include "ops/common.h"

namespace deepcore {

// Calls fn(begin, end) on contiguous chunks of [0, n), one per thread when n is
// at least `threshold` (large enough to pay for the fork), else once on the
// calling thread. Chunk starts are multiples of `align` elements (default 16
// floats = 64 bytes, so each thread owns whole cache lines).
template <class Fn>
void parallel_chunks(index_t n, Fn fn, index_t threshold = kParallelThreshold, index_t align = 16) {
  if (n < threshold || omp_get_max_threads() == 1) {
    fn(index_t(0), n);
    return;
  }
#pragma omp parallel
  {
    const index_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const index_t per = ((n + nt - 1) / nt + align - 1) / align * align;
    const index_t b = std::min(n, t * per), e = std::min(n, b + per);
    if (b < e) fn(b, e);
  }
}

}  // namespace deepcore
