#include <cmath>
#include "cpu/parallel.h"
#include "ops/philox.h"

namespace deepcore {

void philox_uniform(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high) {
  const float span = high - low;
  const index_t nblocks = (n + 3) / 4;
  // Element i's value depends on (seed, stream, i) only: the same bits at any split.
  parallel_chunks_if(n >= kParallelThreshold, nblocks, [&](index_t b0, index_t b1) {
    for (index_t b = b0; b < b1; ++b) {
      const Philox4 r = philox_block(seed, stream, uint64_t(b));
      for (int l = 0; l < 4 && b * 4 + l < n; ++l) {
        // low + span * u can round up to high when ulp(high) > span * 2^-24;
        // keep the interval half-open.
        const float v = low + span * uint_to_unit(r.v[l]);
        out[b * 4 + l] = v < high ? v : std::nextafter(high, low);
      }
    }
  }, 1);
}

namespace {
// Two standard normals from two uniforms (Box-Muller).
inline void box_muller(uint32_t a, uint32_t b, float* z0, float* z1) {
  const float u1 = uint_to_unit_open0(a), u2 = uint_to_unit(b);
  const float rad = std::sqrt(-2.0f * std::log(u1));
  const float th = 6.28318530717958647f * u2;
  *z0 = rad * std::cos(th);
  *z1 = rad * std::sin(th);
}

// Blocks [b0, b1) of philox_normal. A function with value parameters: as a
// lambda body run by a pool thread, with its captures by reference, every
// store to out could alias mean and stddev (4M normals on 2 threads: 23.0 ms
// as a lambda, 21.1-23.1 ms as a function; OpenMP 21.6-22.4 ms).
void philox_normal_blocks(float* __restrict out, index_t b0, index_t b1, index_t n, uint64_t seed, uint64_t stream,
                          float mean, float stddev, bool truncated) {
  for (index_t b = b0; b < b1; ++b) {
    const Philox4 r = philox_block(seed, stream, uint64_t(b));
    float z[4];
    box_muller(r.v[0], r.v[1], &z[0], &z[1]);
    box_muller(r.v[2], r.v[3], &z[2], &z[3]);
    for (int l = 0; l < 4 && b * 4 + l < n; ++l) {
      float v = z[l];
      if (truncated) {
        // Redraw from a counter keyed by (element, attempt): the high half of
        // the stream word marks redraws, so it never collides with the main draws.
        const index_t i = b * 4 + l;
        for (uint32_t attempt = 1; std::fabs(v) > 2.0f; ++attempt) {
          const Philox4 q = philox4x32_10(uint32_t(i), uint32_t(uint64_t(i) >> 32), uint32_t(stream),
                                          uint32_t(stream >> 32) ^ (0x80000000u | attempt), uint32_t(seed),
                                          uint32_t(seed >> 32));
          float z0, z1;
          box_muller(q.v[0], q.v[1], &z0, &z1);
          v = std::fabs(z0) <= 2.0f ? z0 : z1;
        }
      }
      out[b * 4 + l] = mean + stddev * v;
    }
  }
}
}  // namespace

void philox_normal(float* out, index_t n, uint64_t seed, uint64_t stream, float mean, float stddev,
                   bool truncated) {
  const index_t nblocks = (n + 3) / 4;
  parallel_chunks_if(n >= kNormalParallelThreshold, nblocks, [&](index_t b0, index_t b1) {
    philox_normal_blocks(out, b0, b1, n, seed, stream, mean, stddev, truncated);
  }, 1);
}

void philox_permutation(int64_t* out, index_t n, uint64_t seed, uint64_t stream) {
  for (index_t i = 0; i < n; ++i) out[i] = i;
  for (index_t i = n - 1; i > 0; --i) {
    const Philox4 r = philox_block(seed, stream, uint64_t(i) / 4);
    const uint64_t j = (uint64_t(r.v[i % 4]) * uint64_t(i + 1)) >> 32;  // Lemire: uniform in [0, i]
    const int64_t t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
}

}  // namespace deepcore
