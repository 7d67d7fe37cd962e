#include "ops/elementwise.h"

#include "cpu/parallel.h"

namespace deepcore {

DC_MULTIVERSION void axpby(float a, const float* x, float b, float* y, index_t n) {
  // Each element on its own: the same bits at any thread count.
  parallel_chunks(n, [&](index_t i0, index_t i1) {
    if (a == 0.0f) {
#pragma omp simd
      for (index_t i = i0; i < i1; ++i) y[i] = b * y[i];
    } else if (b == 1.0f) {
#pragma omp simd
      for (index_t i = i0; i < i1; ++i) y[i] = y[i] + a * x[i];
    } else {
#pragma omp simd
      for (index_t i = i0; i < i1; ++i) y[i] = a * x[i] + b * y[i];
    }
  });
}

}  // namespace deepcore
