// CUDA Philox streams: the twin of src/cpu/random.cpp. Thread b computes block
// b of the stream (counter = (b, stream), key = seed) with the same header
// code as the CPU, so the same seed gives the same numbers on both devices.
//
// The float arithmetic after the integer generator is spelled with explicit
// round-to-nearest intrinsics (__fmul_rn, __fadd_rn): nvcc would otherwise
// contract a + b * c into one FMA, which rounds once instead of twice and so
// would differ from the CPU build (baseline x86-64, no FMA) in the last bit.
#include <cmath>

#include "kernels.h"
#include "launch.cuh"
#include "ops/philox.h"

namespace deepcore {
namespace cuda {
namespace {

// Element i is lane i % 4 of block i / 4; low + span * u kept in [low, high).
__global__ void philox_uniform_kernel(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high) {
  const float span = high - low;
  const index_t nblocks = (n + 3) / 4;
  for (index_t b = grid_index(); b < nblocks; b += grid_stride()) {
    const Philox4 r = philox_block(seed, stream, uint64_t(b));
    for (int l = 0; l < 4 && b * 4 + l < n; ++l) {
      const float v = __fadd_rn(low, __fmul_rn(span, uint_to_unit(r.v[l])));
      out[b * 4 + l] = v < high ? v : nextafterf(high, low);
    }
  }
}

// Two standard normals from two uniforms (Box-Muller), as on the CPU. logf,
// sinf and cosf are the CUDA library's (within 1-2 ulp of glibc's), so normals
// agree with the CPU to a few ulp, not bit for bit; the uniforms they come
// from are identical.
__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float* z0, float* z1) {
  const float u1 = uint_to_unit_open0(a), u2 = uint_to_unit(b);
  const float rad = sqrtf(-2.0f * logf(u1));
  const float th = __fmul_rn(6.28318530717958647f, u2);
  *z0 = rad * cosf(th);
  *z1 = rad * sinf(th);
}

// Normal(mean, std) from lane pairs (0,1) and (2,3) of block i / 4. Truncated:
// |z| > 2 is redrawn from counters keyed by (element, attempt), as on the CPU.
__global__ void philox_normal_kernel(float* out, index_t n, uint64_t seed, uint64_t stream, float mean,
                                     float stddev, bool truncated) {
  const index_t nblocks = (n + 3) / 4;
  for (index_t b = grid_index(); b < nblocks; b += grid_stride()) {
    const Philox4 r = philox_block(seed, stream, uint64_t(b));
    float z[4];
    box_muller(r.v[0], r.v[1], &z[0], &z[1]);
    box_muller(r.v[2], r.v[3], &z[2], &z[3]);
    for (int l = 0; l < 4 && b * 4 + l < n; ++l) {
      float v = z[l];
      if (truncated) {
        const index_t i = b * 4 + l;
        for (uint32_t attempt = 1; fabsf(v) > 2.0f; ++attempt) {
          const Philox4 q = philox4x32_10(uint32_t(i), uint32_t(uint64_t(i) >> 32), uint32_t(stream),
                                          uint32_t(stream >> 32) ^ (0x80000000u | attempt), uint32_t(seed),
                                          uint32_t(seed >> 32));
          float z0, z1;
          box_muller(q.v[0], q.v[1], &z0, &z1);
          v = fabsf(z0) <= 2.0f ? z0 : z1;
        }
      }
      out[b * 4 + l] = __fadd_rn(mean, __fmul_rn(stddev, v));
    }
  }
}

}  // namespace

void philox_uniform(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high) {
  if (n == 0) return;
  philox_uniform_kernel<<<blocks_for((n + 3) / 4), kThreads, 0, current_stream()>>>(out, n, seed, stream, low, high);
  check_launch("philox_uniform_kernel");
}

void philox_normal(float* out, index_t n, uint64_t seed, uint64_t stream, float mean, float stddev, bool truncated) {
  if (n == 0) return;
  philox_normal_kernel<<<blocks_for((n + 3) / 4), kThreads, 0, current_stream()>>>(out, n, seed, stream, mean, stddev,
                                                                                  truncated);
  check_launch("philox_normal_kernel");
}

}  // namespace cuda
}  // namespace deepcore
