// Branch-free float math that the compiler can vectorize (std::exp cannot be
// vectorized without -ffast-math, which would break NaN handling).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "ops/common.h"

namespace deepcore {

DC_HD float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
DC_HD uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// Round to nearest integer without floor/rint library calls (|v| < 2^22):
// adding 1.5 * 2^23 pushes the fraction out of the mantissa.
DC_HD float round_nearest(float v) { return (v + 12582912.0f) - 12582912.0f; }

// exp(x), Cephes expf: x = n*ln2 + r, |r| <= ln2/2, e^r by a degree-6
// polynomial, 2^n assembled in the exponent bits. Max error ~1 ulp.
// NaN propagates; x > 88.72 gives inf, x < -87 gives 0.
DC_HD float fast_exp(float x) {
  float xc = x < -87.0f ? -87.0f : x;
  xc = xc > 88.72283f ? 88.72283f : xc;
  const float n = round_nearest(xc * 1.44269504088896341f);
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

// log(x) for finite x > 0, Cephes logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) by a degree-9 polynomial in m - 1. Max error ~1 ulp.
DC_HD float fast_log(float x) {
  const uint32_t bits = float_to_bits(x);
  float e = float(int32_t((bits >> 23) & 0xffu) - 126);
  float m = bits_to_float((bits & 0x807fffffu) | 0x3f000000u);  // in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// log(1 + u) for u >= 0 without cancellation: with w = 1 + u rounded,
// log(w) * u / (w - 1) corrects the rounding of w (Goldberg's trick).
DC_HD float fast_log1p_pos(float u) {
  const float w = 1.0f + u;
  return (w == 1.0f) ? u : fast_log(w) * (u / (w - 1.0f));
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
DC_HD float softplus_f(float x) {
  const float pos = x > 0.0f ? x : 0.0f;
  const float r = pos + fast_log1p_pos(fast_exp(-std::fabs(x)));
  return (x != x) ? x : r;
}

// Standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, with erfc from
// Numerical Recipes' Chebyshev fit (relative error < 1.2e-7 in exact
// arithmetic) so that Phi keeps relative precision deep in the left tail.
DC_HD float normal_cdf(float x) {
  const float z = std::fabs(x) * 0.7071067811865476f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float erfc_z = t * fast_exp(-z * z + p);  // erfc(|x| / sqrt 2)
  return x < 0.0f ? 0.5f * erfc_z : 1.0f - 0.5f * erfc_z;
}

}  // namespace deepcore
