#include "ops/perceptron.h"
#include <vector>

namespace deepcore {

int64_t perceptron_epoch(const float* x, const float* targets, float* w, float* b, index_t n, index_t in,
                         index_t k, const int64_t* order, float eta) {
  // The rule is sequential by nature (each update changes the next prediction).
  std::vector<float> z(k);
  int64_t mistakes = 0;
  for (index_t s = 0; s < n; ++s) {
    const index_t i = order ? order[s] : s;
    const float* xi = x + i * in;
    const float* ti = targets + i * k;
    for (index_t u = 0; u < k; ++u) z[u] = b[u];
    for (index_t f = 0; f < in; ++f) {
      const float xf = xi[f];
      const float* wf = w + f * k;
      for (index_t u = 0; u < k; ++u) z[u] += xf * wf[u];
    }
    bool wrong = false;
    for (index_t u = 0; u < k; ++u) {
      const float err = ti[u] - (z[u] >= 0.0f ? 1.0f : 0.0f);  // t - step(z)
      z[u] = eta * err;
      wrong |= err != 0.0f;
    }
    if (!wrong) continue;
    ++mistakes;
    for (index_t f = 0; f < in; ++f) {
      const float xf = xi[f];
      float* wf = w + f * k;
      for (index_t u = 0; u < k; ++u) wf[u] += z[u] * xf;
    }
    for (index_t u = 0; u < k; ++u) b[u] += z[u];
  }
  return mistakes;
}

}  // namespace deepcore
