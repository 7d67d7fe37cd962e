// CPU dropout family, RReLU and PReLU. The random kernels work in tiles: the
// Philox bits of a tile are drawn into a small stack buffer (a loop over
// blocks that vectorizes), then one elementwise loop applies them. Chunk and
// tile starts are multiples of 4, so a tile always begins at a block boundary.
#include "ops/dropout.h"
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "cpu/parallel.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepcore {
namespace {

constexpr index_t kTile = 1024;  // elements; a multiple of 4

// bits[j] = lane (i0 + j) % 4 of block (i0 + j) / 4 of the call, for j < m
// (i0 % 4 == 0). bits must hold m rounded up to 128 (32 whole blocks).
//
// Philox4x32-10 exactly as philox4x32_10 in ops/philox.h, eight blocks at a
// time: one AVX2 register per counter word, the 32x32 -> 64 multiplies as
// even/odd vpmuludq pairs. (Written for the compiler's auto-vectorizer it
// spent most of its time shuffling between 32- and 64-bit lanes, ~2x slower.)
#if defined(__x86_64__) && defined(__GNUC__)
#define DC_PHILOX_AVX2 1
__attribute__((target("avx2"))) inline __m256i mulhilo8(__m256i a, __m256i mult, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, mult);                       // products of lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mult);  // products of lanes 1, 3, 5, 7
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// Eight blocks per register; G registers in flight per iteration, so that the
// multiply latency of one group hides behind the others.
template <int G>
__attribute__((target("avx2"), always_inline)) inline void philox8x(__m256i (&c)[G][4], uint64_t seed) {
  const __m256i M0 = _mm256_set1_epi32(int(0xD2511F53u)), M1 = _mm256_set1_epi32(int(0xCD9E8D57u));
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const __m256i K0 = _mm256_set1_epi32(int(k0)), K1 = _mm256_set1_epi32(int(k1));
    for (int q = 0; q < G; ++q) {
      __m256i hi0, hi1;
      const __m256i lo0 = mulhilo8(c[q][0], M0, &hi0), lo1 = mulhilo8(c[q][2], M1, &hi1);
      c[q][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[q][1]), K0);
      c[q][1] = lo1;
      c[q][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[q][3]), K1);
      c[q][3] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Transpose words x blocks of one register group into block order: out[4 l + w] = c_w[l].
__attribute__((target("avx2"), always_inline)) inline void store_blocks8(const __m256i (&c)[4], uint32_t* out) {
  const __m256i t01l = _mm256_unpacklo_epi32(c[0], c[1]), t23l = _mm256_unpacklo_epi32(c[2], c[3]);
  const __m256i t01h = _mm256_unpackhi_epi32(c[0], c[1]), t23h = _mm256_unpackhi_epi32(c[2], c[3]);
  const __m256i b04 = _mm256_unpacklo_epi64(t01l, t23l), b15 = _mm256_unpackhi_epi64(t01l, t23l);
  const __m256i b26 = _mm256_unpacklo_epi64(t01h, t23h), b37 = _mm256_unpackhi_epi64(t01h, t23h);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(b04, b15, 0x20));
  _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b26, b37, 0x20));
  _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(b04, b15, 0x31));
  _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(b26, b37, 0x31));
}

__attribute__((target("avx2"))) void draw_bits_avx2(uint32_t* bits, index_t i0, index_t m, uint64_t seed,
                                                    uint64_t stream, uint32_t call) {
  constexpr int G = 4;
  // Blocks of one call never carry into the call word: a call spans < 2^32 blocks.
  const uint64_t first = (uint64_t(call) << 32) + uint64_t(i0 / 4);
  const index_t nb = (m + 3) / 4;
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i hi = _mm256_set1_epi32(int(uint32_t(first >> 32)));
  const __m256i s0 = _mm256_set1_epi32(int(uint32_t(stream))), s1 = _mm256_set1_epi32(int(uint32_t(stream >> 32)));
  for (index_t g = 0; g < nb; g += 8 * G) {
    __m256i c[G][4];
    for (int q = 0; q < G; ++q) {
      const uint32_t lo = uint32_t(first + uint64_t(g + 8 * q));
      c[q][0] = _mm256_add_epi32(_mm256_set1_epi32(int(lo)), iota);
      c[q][1] = hi, c[q][2] = s0, c[q][3] = s1;
    }
    philox8x<G>(c, seed);
    for (int q = 0; q < G; ++q) store_blocks8(c[q], bits + 4 * (g + 8 * q));
  }
}
#endif

// Any CPU: the scalar generator, block by block.
void draw_bits_scalar(uint32_t* bits, index_t i0, index_t m, uint64_t seed, uint64_t stream, uint32_t call) {
  const index_t b0 = i0 / 4, nb = (m + 3) / 4;
  for (index_t b = 0; b < nb; ++b) {
    const Philox4 r = random_call_block(seed, stream, call, b0 + b);
    for (int l = 0; l < 4; ++l) bits[4 * b + l] = r.v[l];
  }
}

#ifdef DC_PHILOX_AVX2
bool g_philox_simd = __builtin_cpu_supports("avx2");
#else
bool g_philox_simd = false;
#endif

void draw_bits(uint32_t* bits, index_t i0, index_t m, uint64_t seed, uint64_t stream, uint32_t call) {
#ifdef DC_PHILOX_AVX2
  if (g_philox_simd) return draw_bits_avx2(bits, i0, m, seed, stream, call);
#endif
  draw_bits_scalar(bits, i0, m, seed, stream, call);
}

// The 16-bit draws of elements [i0, i0 + m) (i0 % 8 == 0), as an array of
// uint16: element j's bits are half j % 2 of word j / 2, which on a
// little-endian CPU is exactly the j-th uint16 of the words.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the 16-bit dropout draws assume little-endian words");
inline const uint16_t* draw_bits16(uint32_t* words, index_t i0, index_t m, uint64_t seed, uint64_t stream,
                                   uint32_t call) {
  draw_bits(words, i0 / 2, (m + 1) / 2, seed, stream, call);
  return reinterpret_cast<const uint16_t*>(words);
}

// words[w] bit k = (bits[32 w + k] >= thr), for the m elements of a tile
// (bits past m are 0). Full words use a fixed-length OR-reduction that vectorizes.
__attribute__((always_inline)) inline void pack_keep_bits(const uint16_t* bits, index_t m, uint32_t thr,
                                                          uint32_t* words) {
  index_t w = 0;
  for (; (w + 1) * 32 <= m; ++w) {
    uint32_t word = 0;
    const uint16_t* b = bits + w * 32;
#pragma omp simd reduction(| : word)
    for (int k = 0; k < 32; ++k) word |= uint32_t(uint32_t(b[k]) >= thr) << k;
    words[w] = word;
  }
  if (w * 32 < m) {
    uint32_t word = 0;
    for (index_t k = 0; w * 32 + k < m; ++k) word |= uint32_t(uint32_t(bits[w * 32 + k]) >= thr) << k;
    words[w] = word;
  }
}

// y = x * m with m = scale where kept, else 0 (a product, so NaN and Inf in x
// still propagate, as with a multiplied mask). keep_words (may be null)
// receives the keep mask, one bit per element.
DC_MULTIVERSION void dropout_scale_chunk(const float* x, float* y, index_t i0, index_t i1, uint32_t thr, float scale,
                                         uint64_t seed, uint64_t stream, uint32_t call, uint32_t* keep_words) {
  alignas(64) uint32_t words[kTile];
  for (index_t t = i0; t < i1; t += kTile) {
    const index_t m = std::min(kTile, i1 - t);
    const uint16_t* bits = draw_bits16(words, t, m, seed, stream, call);
    const float* xt = x + t;
    float* yt = y + t;
#pragma omp simd
    for (index_t j = 0; j < m; ++j) yt[j] = xt[j] * (uint32_t(bits[j]) >= thr ? scale : 0.0f);
    if (keep_words) pack_keep_bits(bits, m, thr, keep_words + t / 32);
  }
}

// out = in * (scale where the stored keep bit is set, else 0), for i0 % 32 == 0:
// one word at a time, its 32 bits tested by a fixed-length (vectorized) loop.
DC_MULTIVERSION void masked_scale_chunk(const float* in, float* out, index_t i0, index_t i1, const uint32_t* words,
                                        float scale) {
  index_t i = i0;
  for (; i + 32 <= i1; i += 32) {
    const uint32_t word = words[i / 32];
#pragma omp simd
    for (int k = 0; k < 32; ++k) out[i + k] = in[i + k] * (((word >> k) & 1u) ? scale : 0.0f);
  }
  for (; i < i1; ++i) out[i] = in[i] * (((words[i / 32] >> (i % 32)) & 1u) ? scale : 0.0f);
}

// Like parallel_chunks, but chunk starts are multiples of kTile, so that the
// 32-element words of a keep bitmask never straddle two threads.
template <class Fn>
void parallel_tiles(index_t n, Fn fn) {
  parallel_chunks(n, fn, kParallelThreshold, kTile);
}

DC_MULTIVERSION void dropout_mask_chunk(float* mask, index_t i0, index_t i1, uint32_t thr, float scale, uint64_t seed,
                                        uint64_t stream, uint32_t call) {
  alignas(64) uint32_t words[kTile];
  for (index_t t = i0; t < i1; t += kTile) {
    const index_t m = std::min(kTile, i1 - t);
    const uint16_t* bits = draw_bits16(words, t, m, seed, stream, call);
#pragma omp simd
    for (index_t j = 0; j < m; ++j) mask[t + j] = uint32_t(bits[j]) >= thr ? scale : 0.0f;
  }
}

// Alpha dropout: y = a x + b where kept, a alpha' + b where dropped.
DC_MULTIVERSION void alpha_dropout_fwd_chunk(const float* x, float* y, index_t i0, index_t i1, uint32_t thr, float a,
                                             float b, float dropped, uint64_t seed, uint64_t stream, uint32_t call,
                                             uint32_t* keep_words) {
  alignas(64) uint32_t words[kTile];
  for (index_t t = i0; t < i1; t += kTile) {
    const index_t m = std::min(kTile, i1 - t);
    const uint16_t* bits = draw_bits16(words, t, m, seed, stream, call);
    const float* xt = x + t;
    float* yt = y + t;
#pragma omp simd
    for (index_t j = 0; j < m; ++j) yt[j] = uint32_t(bits[j]) >= thr ? a * xt[j] + b : dropped;
    if (keep_words) pack_keep_bits(bits, m, thr, keep_words + t / 32);
  }
}

// RReLU: slope a = lower + (upper - lower) * U, U the lane's 24-bit uniform.
DC_MULTIVERSION void rrelu_fwd_chunk(const float* x, float* y, index_t i0, index_t i1, float lower, float span,
                                     uint64_t seed, uint64_t stream, uint32_t call) {
  alignas(64) uint32_t bits[kTile];
  for (index_t t = i0; t < i1; t += kTile) {
    const index_t m = std::min(kTile, i1 - t);
    draw_bits(bits, t, m, seed, stream, call);
    const float* xt = x + t;
    float* yt = y + t;
#pragma omp simd
    for (index_t j = 0; j < m; ++j) {
      const float a = lower + span * uint_to_unit(bits[j]);
      yt[j] = xt[j] > 0.0f ? xt[j] : a * xt[j];
    }
  }
}

DC_MULTIVERSION void rrelu_bwd_chunk(const float* x, const float* dy, float* dx, index_t i0, index_t i1, float lower,
                                     float span, uint64_t seed, uint64_t stream, uint32_t call) {
  alignas(64) uint32_t bits[kTile];
  for (index_t t = i0; t < i1; t += kTile) {
    const index_t m = std::min(kTile, i1 - t);
    draw_bits(bits, t, m, seed, stream, call);
#pragma omp simd
    for (index_t j = 0; j < m; ++j) {
      const float a = lower + span * uint_to_unit(bits[j]);
      dx[t + j] = x[t + j] > 0.0f ? dy[t + j] : a * dy[t + j];
    }
  }
}

// Fixed-slope leaky ReLU (RReLU at inference): the slope applies for x <= 0, as in PyTorch.
DC_MULTIVERSION void leaky_fwd_chunk(const float* x, float* y, index_t n, float a) {
#pragma omp simd
  for (index_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : a * x[i];
}

DC_MULTIVERSION void leaky_bwd_chunk(const float* x, const float* dy, float* dx, index_t n, float a) {
#pragma omp simd
  for (index_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : a * dy[i];
}

void check_random_call(index_t n, const char* fn) {
  if (n > kMaxRandomElements)
    throw InvalidInput(std::string(fn) + ": at most 2^34 elements per call, got " + std::to_string(n));
}

void check_rate(float rate, const char* fn) {
  if (!(rate >= 0.0f && double(rate) <= kMaxDropoutRate))
    throw InvalidInput(std::string(fn) + ": rate must be in [0, 1 - 2^-17], got " + std::to_string(rate));
}

void check_bounds(float lower, float upper, const char* fn) {
  if (!(std::isfinite(lower) && std::isfinite(upper) && lower <= upper))
    throw InvalidInput(std::string(fn) + ": need finite lower <= upper, got lower=" + std::to_string(lower) +
                       ", upper=" + std::to_string(upper));
}

float inverted_scale(float rate) { return float(1.0 / (1.0 - dropout_effective_rate(rate))); }

}  // namespace

bool set_philox_simd(bool enabled) {
  const bool before = g_philox_simd;
#ifdef DC_PHILOX_AVX2
  g_philox_simd = enabled && __builtin_cpu_supports("avx2");
#endif
  return before;
}

void dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                     uint32_t* keep_bits) {
  check_rate(rate, "dropout_forward");
  check_random_call(n, "dropout_forward");
  const uint32_t thr = dropout_threshold(rate);
  const float scale = inverted_scale(rate);
  parallel_tiles(n, [&](index_t b, index_t e) {
    dropout_scale_chunk(x, y, b, e, thr, scale, seed, stream, call, keep_bits);
  });
}

void dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                      uint32_t call) {
  // dL/dx = dL/dy * m: the same product as the forward, with the same mask.
  check_rate(rate, "dropout_backward");
  check_random_call(n, "dropout_backward");
  const uint32_t thr = dropout_threshold(rate);
  const float scale = inverted_scale(rate);
  parallel_tiles(n, [&](index_t b, index_t e) {
    dropout_scale_chunk(dy, dx, b, e, thr, scale, seed, stream, call, nullptr);
  });
}

void dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits) {
  check_rate(rate, "dropout_backward");
  const float scale = inverted_scale(rate);
  parallel_tiles(n, [&](index_t b, index_t e) { masked_scale_chunk(dy, dx, b, e, keep_bits, scale); });
}

void dropout_mask(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call) {
  check_rate(rate, "dropout_mask");
  check_random_call(n, "dropout_mask");
  const uint32_t thr = dropout_threshold(rate);
  const float scale = inverted_scale(rate);
  parallel_tiles(n, [&](index_t b, index_t e) { dropout_mask_chunk(mask, b, e, thr, scale, seed, stream, call); });
}

namespace {
// a = ((1 - rate)(1 + rate alpha'^2))^(-1/2), b = -a alpha' rate (in double, then rounded).
void alpha_dropout_coefficients(float rate, float* a, float* b) {
  const double r = dropout_effective_rate(rate), ap = kAlphaDropoutAlphaP;
  const double ad = 1.0 / std::sqrt((1.0 - r) * (1.0 + r * ap * ap));
  *a = float(ad);
  *b = float(-ad * ap * r);
}
}  // namespace

void alpha_dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           uint32_t call, uint32_t* keep_bits) {
  check_rate(rate, "alpha_dropout_forward");
  check_random_call(n, "alpha_dropout_forward");
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  const float dropped = float(double(a) * kAlphaDropoutAlphaP + double(b));
  const uint32_t thr = dropout_threshold(rate);
  parallel_tiles(n, [&](index_t i0, index_t i1) {
    alpha_dropout_fwd_chunk(x, y, i0, i1, thr, a, b, dropped, seed, stream, call, keep_bits);
  });
}

void alpha_dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            uint32_t call) {
  check_rate(rate, "alpha_dropout_backward");
  check_random_call(n, "alpha_dropout_backward");
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  const uint32_t thr = dropout_threshold(rate);
  parallel_tiles(n, [&](index_t i0, index_t i1) {
    dropout_scale_chunk(dy, dx, i0, i1, thr, a, seed, stream, call, nullptr);
  });
}

void alpha_dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits) {
  check_rate(rate, "alpha_dropout_backward");
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  parallel_tiles(n, [&](index_t i0, index_t i1) { masked_scale_chunk(dy, dx, i0, i1, keep_bits, a); });
}

void rrelu_forward(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                   uint64_t stream, uint32_t call) {
  check_bounds(lower, upper, "rrelu_forward");
  check_random_call(n, "rrelu_forward");
  if (!training) {
    const float a = 0.5f * (lower + upper);
    parallel_chunks(n, [&](index_t b, index_t e) { leaky_fwd_chunk(x + b, y + b, e - b, a); });
    return;
  }
  const float span = upper - lower;
  parallel_chunks(n, [&](index_t b, index_t e) { rrelu_fwd_chunk(x, y, b, e, lower, span, seed, stream, call); });
}

void rrelu_backward(const float* x, const float* dy, float* dx, index_t n, float lower, float upper, bool training,
                    uint64_t seed, uint64_t stream, uint32_t call) {
  check_bounds(lower, upper, "rrelu_backward");
  check_random_call(n, "rrelu_backward");
  if (!training) {
    const float a = 0.5f * (lower + upper);
    parallel_chunks(n, [&](index_t b, index_t e) { leaky_bwd_chunk(x + b, dy + b, dx + b, e - b, a); });
    return;
  }
  const float span = upper - lower;
  parallel_chunks(n, [&](index_t b, index_t e) {
    rrelu_bwd_chunk(x, dy, dx, b, e, lower, span, seed, stream, call);
  });
}

// ------------------------------------------------------------------ PReLU
namespace {

// One row of Q units, alpha per unit.
DC_MULTIVERSION void prelu_fwd_row(const float* x, const float* alpha, float* y, index_t q) {
#pragma omp simd
  for (index_t j = 0; j < q; ++j) y[j] = x[j] > 0.0f ? x[j] : alpha[j] * x[j];
}

// A contiguous run of units sharing one alpha.
DC_MULTIVERSION void prelu_fwd_shared(const float* x, float alpha, float* y, index_t n) {
#pragma omp simd
  for (index_t j = 0; j < n; ++j) y[j] = x[j] > 0.0f ? x[j] : alpha * x[j];
}

// Columns [q0, q1) of one row: dx and acc[j] += dy x where x <= 0.
DC_MULTIVERSION void prelu_bwd_row(const float* x, const float* alpha, const float* dy, float* dx, double* acc,
                                   index_t q0, index_t q1) {
  if (dx) {
#pragma omp simd
    for (index_t j = q0; j < q1; ++j) dx[j] = x[j] > 0.0f ? dy[j] : alpha[j] * dy[j];
  }
#pragma omp simd
  for (index_t j = q0; j < q1; ++j) acc[j] += x[j] > 0.0f ? 0.0 : double(dy[j]) * double(x[j]);
}

DC_MULTIVERSION double prelu_bwd_shared(const float* x, float alpha, const float* dy, float* dx, index_t n) {
  if (dx) {
#pragma omp simd
    for (index_t j = 0; j < n; ++j) dx[j] = x[j] > 0.0f ? dy[j] : alpha * dy[j];
  }
  double s = 0.0;
  // A fixed-width set of partial sums, combined in a fixed order: vectorizes
  // and gives the same result on every run.
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  index_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) part[l] += x[j + l] > 0.0f ? 0.0 : double(dy[j + l]) * double(x[j + l]);
  for (; j < n; ++j) s += x[j] > 0.0f ? 0.0 : double(dy[j]) * double(x[j]);
  for (int l = 0; l < 8; ++l) s += part[l];
  return s;
}

}  // namespace

void prelu_forward(const float* x, const float* alpha, float* y, index_t B, index_t P, index_t S, index_t Q) {
  const index_t rows = B * P, n = rows * S * Q;
  parallel_chunks_if(n >= kParallelThreshold, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t p = r % P, base = r * S * Q;
      if (Q == 1) {
        prelu_fwd_shared(x + base, alpha[p], y + base, S);
      } else {
        for (index_t s = 0; s < S; ++s) prelu_fwd_row(x + base + s * Q, alpha + p * Q, y + base + s * Q, Q);
      }
    }
  }, 1);
}

void prelu_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha, index_t B,
                    index_t P, index_t S, index_t Q) {
  const index_t C = P * Q, n = B * P * S * Q;
  std::vector<double> acc(size_t(C), 0.0);
  // Each thread owns a range of alpha entries [c0, c1) and sums them over
  // (b, s) in order: deterministic for any thread count.
  auto run = [&](index_t c0, index_t c1) {
    for (index_t b = 0; b < B; ++b)
      for (index_t p = c0 / Q; p < P && p * Q < c1; ++p) {
        const index_t q0 = std::max<index_t>(c0 - p * Q, 0), q1 = std::min<index_t>(c1 - p * Q, Q);
        const index_t base = (b * P + p) * S * Q;
        if (Q == 1) {
          acc[p] += prelu_bwd_shared(x + base, alpha[p], dy + base, dx ? dx + base : nullptr, S);
          continue;
        }
        for (index_t s = 0; s < S; ++s) {
          const index_t off = base + s * Q;
          prelu_bwd_row(x + off, alpha + p * Q, dy + off, dx ? dx + off : nullptr, acc.data() + p * Q, q0, q1);
        }
      }
  };
  parallel_chunks_if(n >= kParallelThreshold && C >= kPreluBackwardParallelChannels, C, run, 16);
  for (index_t c = 0; c < C; ++c) dalpha[c] = float(acc[size_t(c)]);
}

}  // namespace deepcore
