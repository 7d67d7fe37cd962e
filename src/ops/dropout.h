// Dropout family (Dropout, AlphaDropout, MC dropout) and the activations with
// per-element randomness or learnable slopes (RReLU, PReLU). One declaration
// for both backends.
//
// Random draws. A call of a random layer is keyed by (seed, stream, call):
// seed is the Philox key, stream names the layer, call counts its training
// forward passes. Each call reads its own 2^32-block segment of the layer's
// stream: word k of call c is lane k % 4 of Philox block
//     philox_block(seed, stream, (c << 32) + k / 4).
// RReLU gives element i word i (a 24-bit uniform slope). The dropout family
// needs only a keep/drop decision, so element i takes 16 bits: the low half
// of word i / 2 for even i, the high half for odd i (half the Philox work).
// The draw is a pure function of the element index, so masks are identical
// for any thread count (and on the GPU). Backward either regenerates the same
// draws (no state between forward and backward) or reads a 1-bit-per-element
// keep mask the forward stored (faster: Philox costs more than the memory).
#pragma once
#include <cstdint>
#include "ops/common.h"
#include "ops/philox.h"

namespace deepcore {

// Testing hook: draw with the SIMD (AVX2) Philox when the CPU has it (the
// default) or with the scalar one, so both are checked on one machine.
// Returns the previous setting. Not thread-safe; for tests only.
bool set_philox_simd(bool enabled);

// A tensor may hold at most 2^34 elements (2^32 blocks of 4) per call.
constexpr index_t kMaxRandomElements = index_t(1) << 34;

// Keep element i iff its 16 random bits u_i >= threshold, threshold =
// round(rate * 2^16): the drop probability is the effective rate
// threshold / 2^16, within 2^-17 (7.6e-6) of rate. Kept values are scaled by
// 1 / (1 - effective rate) (and alpha dropout's a, b use it too), so the
// expectation is kept exactly. Rates above 1 - 2^-17 (threshold 2^16: every
// unit dropped) are rejected.
constexpr double kMaxDropoutRate = 1.0 - 1.0 / 131072.0;
DC_HD uint32_t dropout_threshold(double rate) {
  const double t = rate * 65536.0 + 0.5;
  return t >= 65536.0 ? 65536u : uint32_t(t);
}
DC_HD uint32_t dropout_bits16(uint32_t word, index_t i) { return (i & 1) ? word >> 16 : word & 0xFFFFu; }
DC_HD double dropout_effective_rate(double rate) { return dropout_threshold(rate) / 65536.0; }

DC_HD Philox4 random_call_block(uint64_t seed, uint64_t stream, uint32_t call, index_t block) {
  return philox_block(seed, stream, (uint64_t(call) << 32) + uint64_t(block));
}

// Keep bitmasks: bit k of word w is set iff element 32 w + k was kept;
// (n + 31) / 32 words. Storing one costs n / 8 bytes and makes backward a
// streaming multiply instead of a second pass of Philox.
constexpr index_t keep_bits_words(index_t n) { return (n + 31) / 32; }

// Inverted dropout: y = x / (1 - rate) where kept, 0 where dropped.
// x == y is allowed. rate in [0, 1). keep_bits (may be null) receives the mask.
void dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                     uint32_t* keep_bits = nullptr);
// dx = dy / (1 - rate) where kept, 0 where dropped: the forward's mask,
// regenerated from the key, or read from the forward's keep bitmask.
void dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                      uint32_t call);
void dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits);
// The mask itself, scaled: 1 / (1 - rate) where kept, 0 where dropped (for
// noise_shape, where the mask is broadcast).
void dropout_mask(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call);

// Alpha dropout (Klambauer et al., 2017) for SELU networks: dropped units are
// set to alpha' = -scale * alpha_selu, then y = a * x' + b with
//   a = ((1 - rate) (1 + rate alpha'^2))^(-1/2),  b = -a alpha' rate,
// which keeps a standard normal input at mean 0, variance 1.
constexpr double kAlphaDropoutAlphaP = -1.7580993408473766;
void alpha_dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           uint32_t call, uint32_t* keep_bits = nullptr);
// dx = a dy where kept, 0 where dropped (regenerated, or from the keep bitmask).
void alpha_dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            uint32_t call);
void alpha_dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits);

// RReLU (Xu et al., 2015; PyTorch semantics): y = x for x >= 0, else a x with
// a ~ U[lower, upper) per element in training (24-bit uniform from the lane),
// a = (lower + upper) / 2 at inference.
void rrelu_forward(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                   uint64_t stream, uint32_t call);
// dx = dy for x >= 0, else a dy (the same a as the forward).
void rrelu_backward(const float* x, const float* dy, float* dx, index_t n, float lower, float upper, bool training,
                    uint64_t seed, uint64_t stream, uint32_t call);

// PReLU (He et al., 2015): y = x for x > 0, else alpha x, with one learnable
// alpha per unit. x is viewed as (B, P, S, Q) and alpha as (P, Q): alpha is
// shared over B (the batch plus any leading shared axes) and over S (one
// contiguous group of shared axes).
void prelu_forward(const float* x, const float* alpha, float* y, index_t B, index_t P, index_t S, index_t Q);
// dx = dy for x > 0, else alpha dy (dx may be null);
// dalpha[p, q] = sum over (b, s) of dy x where x <= 0 (overwritten, summed in
// double in a fixed order, so the result does not depend on the thread count).
void prelu_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha, index_t B,
                    index_t P, index_t S, index_t Q);

}  // namespace deepcore
