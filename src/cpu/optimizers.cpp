#include "ops/optimizers.h"
#include <cmath>
#include "cpu/parallel.h"

namespace deepcore {
namespace {

// A velocity that decays geometrically (a dead unit's zero gradient) ends up
// denormal, and denormal arithmetic costs ~100x on x86. Flush it to zero.
inline float flush_denormal(float v) { return std::fabs(v) < 1.17549435e-38f ? 0.0f : v; }

DC_MULTIVERSION void sgd_chunk(float* w, const float* g, float* v, index_t n, float lr, float mom, bool nesterov) {
  if (!v || mom == 0.0f) {
#pragma omp simd
    for (index_t i = 0; i < n; ++i) w[i] -= lr * g[i];
  } else if (nesterov) {
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
      const float vi = flush_denormal(mom * v[i] - lr * g[i]);
      v[i] = vi;
      w[i] += mom * vi - lr * g[i];
    }
  } else {
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
      const float vi = flush_denormal(mom * v[i] - lr * g[i]);
      v[i] = vi;
      w[i] += vi;
    }
  }
}

}  // namespace

void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov) {
  parallel_chunks(n, [&](index_t b, index_t e) {
    sgd_chunk(w + b, g + b, velocity ? velocity + b : nullptr, e - b, lr, momentum, nesterov);
  });
}

}  // namespace deepcore
