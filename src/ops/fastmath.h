// Branch-free float math that the compiler can vectorize (std::exp cannot be
// vectorized without -ffast-math, which would break NaN handling).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "ops/common.h"

namespace deepcore {

DC_HD float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// exp(x), Cephes expf: x = n*ln2 + r, |r| <= ln2/2, e^r by a degree-6
// polynomial, 2^n assembled in the exponent bits. Max error ~1 ulp.
// NaN propagates; x > 88.72 gives inf, x < -87.3 gives 0.
DC_HD float fast_exp(float x) {
  const float xc = std::fmin(std::fmax(x, -87.0f), 88.72283f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2^n as 2 * 2^(n-1) so that n = 128 (x near 88.7) still fits the exponent.
  const float scale = bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 126) << 23);
  float y = p * scale * 2.0f;
  y = (x < -87.0f) ? 0.0f : y;
  y = (x > 88.72283f) ? INFINITY : y;
  return (x != x) ? x : y;
}

// sigmoid(x) = 1 / (1 + e^-x); for very negative x, e^-x = inf gives 0 exactly.
DC_HD float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// tanh: Cephes tanhf. |x| < 0.625 uses an odd polynomial (no cancellation
// near 0); otherwise 1 - 2/(e^{2|x|} + 1) with the sign restored.
DC_HD float fast_tanh(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  const float big = 1.0f - 2.0f / (fast_exp(2.0f * ax) + 1.0f);
  const float r = (ax < 0.625f) ? small : std::copysign(big, x);
  return (x != x) ? x : r;
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for all x.
DC_HD float softplus_f(float x) { return std::fmax(x, 0.0f) + std::log1p(fast_exp(-std::fabs(x))); }

}  // namespace deepcore
