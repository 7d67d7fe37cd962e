// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a counter-based generator. The i-th random block is a pure
// function of (seed, counter = i), so any thread (or GPU thread) can draw its
// own numbers and the result does not depend on how work is split.
// Header-only so host and device share one definition.
#pragma once
#include <cstdint>
#include "ops/common.h"

namespace deepcore {

struct Philox4 {
  uint32_t v[4];
};

DC_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// Ten rounds of the Philox S-box with the Weyl key schedule.
DC_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(M0, c0, &hi0);
    const uint32_t lo1 = mulhilo32(M1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Block `block` of the stream (seed, stream): counter = (block, stream).
DC_HD Philox4 philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  return philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(stream), uint32_t(stream >> 32),
                       uint32_t(seed), uint32_t(seed >> 32));
}

// 24 random bits -> float in [0, 1).
DC_HD float uint_to_unit(uint32_t u) { return float(u >> 8) * (1.0f / 16777216.0f); }
// 24 random bits -> float in (0, 1] (safe for log).
DC_HD float uint_to_unit_open0(uint32_t u) { return float((u >> 8) + 1) * (1.0f / 16777216.0f); }

// Element i of a stream is lane i % 4 of block i / 4.
void philox_uniform(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high);
// Normal(mean, std) by Box-Muller on lane pairs (0,1) and (2,3) of block i / 4.
// truncated: values beyond 2 std are redrawn (Keras's truncated_normal); the
// redraw of element i uses attempt-indexed counters, so it stays deterministic.
void philox_normal(float* out, index_t n, uint64_t seed, uint64_t stream, float mean, float stddev,
                   bool truncated);
// A uniformly random permutation of [0, n) (Fisher-Yates driven by the stream).
void philox_permutation(int64_t* out, index_t n, uint64_t seed, uint64_t stream);

}  // namespace deepcore
