// CUDA dropout family, RReLU and PReLU: the twin of src/cpu/dropout.cpp.
//
// The random draws are the CPU's by construction: both call the host/device
// helpers of ops/dropout.h (random_call_block, dropout_bits16,
// dropout_threshold) and ops/philox.h (uint_to_unit). Where the CPU draws a
// tile of words and then loops over elements, a GPU thread computes one Philox
// block and applies it to the elements that block serves:
//   dropout family: block b -> elements 8b .. 8b+7 (16 bits each; element
//                   8b+k takes half k % 2 of lane k / 2);
//   RReLU:          block b -> elements 4b .. 4b+3 (one word each).
// A keep bitmask (bit k of word w = element 32w + k) seen as little-endian
// bytes has byte b = the keep bits of elements 8b .. 8b+7, exactly the
// elements of Philox block b, so thread b writes byte b: no shuffles, no
// atomics.
//
// The *_graph variants (CUDA graphs) launch the same kernels with call_device
// set: each thread then reads the call word from device memory, so a replay
// draws the masks of the call that the counter holds at that time.
//
// Arithmetic after the draw: dropout is one product x * (keep ? scale : 0),
// exact on both devices. Alpha dropout (a x + b) and the RReLU slope
// (lower + span u) are a multiply-add: written here with __fmaf_rn, which is
// what GCC's -ffp-contract=fast makes of the CPU loops in their AVX2+FMA and
// AVX-512 clones (the ones any GPU host runs). The baseline x86-64 clone has
// no FMA and rounds twice, so on a CPU without FMA these two ops differ from
// the GPU in the last bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "ops/dropout.h"

namespace deepcore {
namespace cuda {
namespace {

// Keep bits of the elements 8b .. 8b+7 of Philox block b that are < n (bit
// k = element 8b + k kept; bits past n are 0, as the CPU leaves them).
__device__ __forceinline__ uint32_t keep_byte(uint64_t seed, uint64_t stream, uint32_t call, index_t b, index_t n,
                                              uint32_t thr) {
  const Philox4 r = random_call_block(seed, stream, call, b);
  uint32_t bits = 0;
  for (int k = 0; k < 8 && 8 * b + k < n; ++k) bits |= uint32_t(dropout_bits16(r.v[k / 2], k) >= thr) << k;
  return bits;
}

// What a dropout-family kernel does with element i once its keep bit is drawn.
// out = in * (scale where kept, else 0): dropout forward/backward, alpha
// dropout backward (scale = a), and the scaled mask (in null).
struct ScaleOp {
  const float* in;
  float* out;
  float scale;
  __device__ void operator()(index_t i, bool kept) const {
    const float m = kept ? scale : 0.0f;
    out[i] = in ? in[i] * m : m;
  }
};
// Alpha dropout: y = a x + b where kept, `dropped` (= a alpha' + b) where dropped.
struct AlphaOp {
  const float* x;
  float* y;
  float a, b, dropped;
  __device__ void operator()(index_t i, bool kept) const { y[i] = kept ? __fmaf_rn(a, x[i], b) : dropped; }
};

// Thread t handles Philox block t: draws the keep bits of elements 8t .. 8t+7
// and applies op to each. keep_bytes (may be null) receives the keep mask:
// nbytes = 4 * words bytes, those past the last element written as 0.
template <class Op>
__global__ void keep_mask_kernel(Op op, index_t n, uint32_t thr, uint64_t seed, uint64_t stream, uint32_t call,
                                 const uint32_t* call_device, uint8_t* keep_bytes, index_t nbytes) {
  if (call_device) call = *call_device;
  const index_t nblocks = keep_bytes ? nbytes : (n + 7) / 8;
  for (index_t b = grid_index(); b < nblocks; b += grid_stride()) {
    uint32_t keep = 0;
    if (8 * b < n) {
      keep = keep_byte(seed, stream, call, b, n, thr);
      for (int k = 0; k < 8 && 8 * b + k < n; ++k) op(8 * b + k, (keep >> k) & 1u);
    }
    if (keep_bytes) keep_bytes[b] = uint8_t(keep);
  }
}

// out = in * (scale where the stored keep bit is set, else 0): one thread per element.
__global__ void masked_scale_kernel(const float* in, float* out, index_t n, const uint32_t* words, float scale) {
  for (index_t i = grid_index(); i < n; i += grid_stride())
    out[i] = in[i] * (((words[i / 32] >> (i % 32)) & 1u) ? scale : 0.0f);
}

// RReLU in training: slope a = lower + span U, U the 24-bit uniform of word i.
// Forward (dy null): y = x for x > 0, else a x. Backward: dx = dy for x > 0, else a dy.
__global__ void rrelu_kernel(const float* x, const float* dy, float* out, index_t n, float lower, float span,
                             uint64_t seed, uint64_t stream, uint32_t call, const uint32_t* call_device) {
  if (call_device) call = *call_device;
  for (index_t b = grid_index(); b < (n + 3) / 4; b += grid_stride()) {
    const Philox4 r = random_call_block(seed, stream, call, b);
    for (int l = 0; l < 4 && 4 * b + l < n; ++l) {
      const index_t i = 4 * b + l;
      const float a = __fmaf_rn(span, uint_to_unit(r.v[l]), lower);
      const float v = dy ? dy[i] : x[i];
      out[i] = x[i] > 0.0f ? v : a * v;
    }
  }
}

// Fixed slope (RReLU at inference), applied for x <= 0 as in PyTorch; dy null for the forward.
__global__ void leaky_kernel(const float* x, const float* dy, float* out, index_t n, float a) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    const float v = dy ? dy[i] : x[i];
    out[i] = x[i] > 0.0f ? v : a * v;
  }
}

// PReLU on the (B, P, S, Q) view, alpha (P, Q). Forward (dy null):
// y = x for x > 0, else alpha x. Backward: dx = dy for x > 0, else alpha dy.
__global__ void prelu_kernel(const float* x, const float* alpha, const float* dy, float* out, index_t n, index_t P,
                             index_t S, index_t Q) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    const index_t q = i % Q, p = (i / (S * Q)) % P;
    const float v = dy ? dy[i] : x[i];
    out[i] = x[i] > 0.0f ? v : alpha[p * Q + q] * v;
  }
}

// PReLU's dalpha[c] (c = p Q + q) = sum over (b, s) of dy x where x <= 0:
// a per-channel reduction over the B S rows, split over blockIdx.y into
// `splits` slices so that a few channels over many rows (a channels-last
// conv map shares alpha over N H W) still fill the GPU. Each (slice, channel)
// writes one partial (part: splits x C doubles) and prelu_dalpha_finish_kernel
// adds the slices in order. The products are exact in double, every sum runs
// in a fixed order: deterministic (as on the CPU; the order differs from the
// CPU's, so dalpha agrees to rounding, not bit for bit).
__device__ __forceinline__ double prelu_term(const float* x, const float* dy, index_t i) {
  return x[i] > 0.0f ? 0.0 : double(dy[i]) * double(x[i]);
}

// Q == 1 (alpha shared over S: channels-first maps): a block per (p, slice);
// its threads stride over the slice's terms j = b S + s (consecutive s:
// coalesced), then the fixed-order block_sum.
__global__ void prelu_dalpha_rows_kernel(const float* x, const float* dy, double* part, index_t B, index_t P,
                                         index_t S) {
  __shared__ double shared[kWarpsPerBlock];
  const index_t step = index_t(kThreads) * gridDim.y;
  for (index_t p = blockIdx.x; p < P; p += gridDim.x) {  // uniform across the block
    double acc = 0.0;
    for (index_t j = index_t(blockIdx.y) * kThreads + threadIdx.x; j < B * S; j += step)
      acc += prelu_term(x, dy, (j / S * P + p) * S + j % S);
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) part[index_t(blockIdx.y) * P + p] = acc;
  }
}

// Q > 1: a block of 32 x 8 threads per (p, 32 columns q, slice); lanes run
// along q (coalesced), the 8 thread rows stride over the slice's rows j = b S + s,
// and thread row 0 adds the 8 row partials in order.
constexpr int kColRows = kThreads / 32;
__global__ void prelu_dalpha_cols_kernel(const float* x, const float* dy, double* part, index_t B, index_t P,
                                         index_t S, index_t Q) {
  __shared__ double partial[kColRows][32];
  const int lane = threadIdx.x % 32, row = threadIdx.x / 32;
  const index_t tiles = (Q + 31) / 32, step = index_t(kColRows) * gridDim.y;
  for (index_t t = blockIdx.x; t < P * tiles; t += gridDim.x) {  // uniform across the block
    const index_t p = t / tiles, q = (t % tiles) * 32 + lane;
    double acc = 0.0;
    if (q < Q) {
      for (index_t j = index_t(blockIdx.y) * kColRows + row; j < B * S; j += step)
        acc += prelu_term(x, dy, ((j / S * P + p) * S + j % S) * Q + q);
    }
    __syncthreads();  // the previous tile's partials have been read
    partial[row][lane] = acc;
    __syncthreads();
    if (row == 0 && q < Q) {
      double sum = 0.0;
      for (int r = 0; r < kColRows; ++r) sum += partial[r][lane];
      part[index_t(blockIdx.y) * P * Q + p * Q + q] = sum;
    }
  }
}

// dalpha[c] = the slices' partials added in order.
__global__ void prelu_dalpha_finish_kernel(const double* part, index_t splits, float* dalpha, index_t C) {
  for (index_t c = grid_index(); c < C; c += grid_stride()) {
    double sum = 0.0;
    for (index_t r = 0; r < splits; ++r) sum += part[r * C + c];
    dalpha[c] = float(sum);
  }
}

inline float inverted_scale(float rate) { return float(1.0 / (1.0 - dropout_effective_rate(rate))); }

// a = ((1 - r)(1 + r alpha'^2))^(-1/2), b = -a alpha' r with r the effective
// rate (in double, then rounded): as on the CPU.
void alpha_dropout_coefficients(float rate, float* a, float* b) {
  const double r = dropout_effective_rate(rate), ap = kAlphaDropoutAlphaP;
  const double ad = 1.0 / std::sqrt((1.0 - r) * (1.0 + r * ap * ap));
  *a = float(ad);
  *b = float(-ad * ap * r);
}

void check_rate(float rate, const char* fn) {
  if (!(rate >= 0.0f && double(rate) <= kMaxDropoutRate))
    throw InvalidInput(std::string(fn) + ": rate must be in [0, 1 - 2^-17], got " + std::to_string(rate));
}

void check_random_call(index_t n, const char* fn) {
  if (n > kMaxRandomElements)
    throw InvalidInput(std::string(fn) + ": at most 2^34 elements per call, got " + std::to_string(n));
}

void check_bounds(float lower, float upper, const char* fn) {
  if (!(std::isfinite(lower) && std::isfinite(upper) && lower <= upper))
    throw InvalidInput(std::string(fn) + ": need finite lower <= upper, got lower=" + std::to_string(lower) +
                       ", upper=" + std::to_string(upper));
}

// One thread per byte of the keep mask, or per Philox block of 8 elements
// without one. The call word is `call`, or *call_device when that is not null.
template <class Op>
void launch_keep_mask(Op op, const char* kernel, index_t n, float rate, uint64_t seed, uint64_t stream,
                      uint32_t call, const uint32_t* call_device, uint32_t* keep_bits) {
  const index_t threads = keep_bits ? 4 * keep_bits_words(n) : (n + 7) / 8;
  keep_mask_kernel<<<blocks_for(threads), kThreads, 0, current_stream()>>>(
      op, n, dropout_threshold(rate), seed, stream, call, call_device, reinterpret_cast<uint8_t*>(keep_bits),
      threads);
  check_launch(kernel);
}

void launch_masked_scale(const float* in, float* out, index_t n, const uint32_t* keep_bits, float scale) {
  masked_scale_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(in, out, n, keep_bits, scale);
  check_launch("masked_scale_kernel");
}

}  // namespace

// The dropout family's bodies, for both the eager functions (call_device null)
// and the *_graph variants (call_device set, call unused).
namespace {
void dropout_forward_at(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                        uint32_t call, const uint32_t* call_device, uint32_t* keep_bits) {
  check_rate(rate, "dropout_forward");
  check_random_call(n, "dropout_forward");
  if (n == 0) return;
  launch_keep_mask(ScaleOp{x, y, inverted_scale(rate)}, "keep_mask_kernel<dropout>", n, rate, seed, stream, call,
                   call_device, keep_bits);
}

void dropout_backward_at(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                         uint32_t call, const uint32_t* call_device) {
  // dL/dx = dL/dy * m: the same product as the forward, with the same mask.
  check_rate(rate, "dropout_backward");
  check_random_call(n, "dropout_backward");
  if (n == 0) return;
  launch_keep_mask(ScaleOp{dy, dx, inverted_scale(rate)}, "keep_mask_kernel<dropout>", n, rate, seed, stream, call,
                   call_device, nullptr);
}

void dropout_mask_at(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                     const uint32_t* call_device) {
  check_rate(rate, "dropout_mask");
  check_random_call(n, "dropout_mask");
  if (n == 0) return;
  launch_keep_mask(ScaleOp{nullptr, mask, inverted_scale(rate)}, "keep_mask_kernel<dropout_mask>", n, rate, seed,
                   stream, call, call_device, nullptr);
}

void alpha_dropout_forward_at(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                              uint32_t call, const uint32_t* call_device, uint32_t* keep_bits) {
  check_rate(rate, "alpha_dropout_forward");
  check_random_call(n, "alpha_dropout_forward");
  if (n == 0) return;
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  const float dropped = float(double(a) * kAlphaDropoutAlphaP + double(b));
  launch_keep_mask(AlphaOp{x, y, a, b, dropped}, "keep_mask_kernel<alpha_dropout>", n, rate, seed, stream, call,
                   call_device, keep_bits);
}

void alpha_dropout_backward_at(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                               uint32_t call, const uint32_t* call_device) {
  check_rate(rate, "alpha_dropout_backward");
  check_random_call(n, "alpha_dropout_backward");
  if (n == 0) return;
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  launch_keep_mask(ScaleOp{dy, dx, a}, "keep_mask_kernel<dropout>", n, rate, seed, stream, call, call_device,
                   nullptr);
}

void launch_rrelu(const char* fn, const float* x, const float* dy, float* out, index_t n, float lower, float upper,
                  bool training, uint64_t seed, uint64_t stream, uint32_t call, const uint32_t* call_device) {
  check_bounds(lower, upper, fn);
  check_random_call(n, fn);
  if (n == 0) return;
  if (!training) {
    leaky_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, dy, out, n, 0.5f * (lower + upper));
    check_launch("leaky_kernel");
    return;
  }
  rrelu_kernel<<<blocks_for((n + 3) / 4), kThreads, 0, current_stream()>>>(x, dy, out, n, lower, upper - lower, seed,
                                                                          stream, call, call_device);
  check_launch("rrelu_kernel");
}

// counters[i] += 1 (mod 2^32).
__global__ void increment_counters_kernel(uint32_t* counters, index_t n) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) counters[i] += 1u;
}
}  // namespace

void dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                     uint32_t* keep_bits) {
  dropout_forward_at(x, y, n, rate, seed, stream, call, nullptr, keep_bits);
}

void dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                      uint32_t call) {
  dropout_backward_at(dy, dx, n, rate, seed, stream, call, nullptr);
}

void dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits) {
  check_rate(rate, "dropout_backward");
  if (n == 0) return;
  launch_masked_scale(dy, dx, n, keep_bits, inverted_scale(rate));
}

void dropout_mask(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call) {
  dropout_mask_at(mask, n, rate, seed, stream, call, nullptr);
}

void alpha_dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           uint32_t call, uint32_t* keep_bits) {
  alpha_dropout_forward_at(x, y, n, rate, seed, stream, call, nullptr, keep_bits);
}

void alpha_dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            uint32_t call) {
  alpha_dropout_backward_at(dy, dx, n, rate, seed, stream, call, nullptr);
}

void alpha_dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits) {
  check_rate(rate, "alpha_dropout_backward");
  if (n == 0) return;
  float a, b;
  alpha_dropout_coefficients(rate, &a, &b);
  launch_masked_scale(dy, dx, n, keep_bits, a);
}

void rrelu_forward(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                   uint64_t stream, uint32_t call) {
  launch_rrelu("rrelu_forward", x, nullptr, y, n, lower, upper, training, seed, stream, call, nullptr);
}

void rrelu_backward(const float* x, const float* dy, float* dx, index_t n, float lower, float upper, bool training,
                    uint64_t seed, uint64_t stream, uint32_t call) {
  launch_rrelu("rrelu_backward", x, dy, dx, n, lower, upper, training, seed, stream, call, nullptr);
}

// ------------------------------------------------------------ graph variants

void dropout_forward_graph(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           const uint32_t* call, uint32_t* keep_bits) {
  dropout_forward_at(x, y, n, rate, seed, stream, 0, call, keep_bits);
}

void dropout_backward_graph(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            const uint32_t* call) {
  dropout_backward_at(dy, dx, n, rate, seed, stream, 0, call);
}

void dropout_mask_graph(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, const uint32_t* call) {
  dropout_mask_at(mask, n, rate, seed, stream, 0, call);
}

void alpha_dropout_forward_graph(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                                 const uint32_t* call, uint32_t* keep_bits) {
  alpha_dropout_forward_at(x, y, n, rate, seed, stream, 0, call, keep_bits);
}

void alpha_dropout_backward_graph(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                                  const uint32_t* call) {
  alpha_dropout_backward_at(dy, dx, n, rate, seed, stream, 0, call);
}

void rrelu_forward_graph(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                         uint64_t stream, const uint32_t* call) {
  launch_rrelu("rrelu_forward", x, nullptr, y, n, lower, upper, training, seed, stream, 0, call);
}

void rrelu_backward_graph(const float* x, const float* dy, float* dx, index_t n, float lower, float upper,
                          bool training, uint64_t seed, uint64_t stream, const uint32_t* call) {
  launch_rrelu("rrelu_backward", x, dy, dx, n, lower, upper, training, seed, stream, 0, call);
}

void increment_counters(uint32_t* counters, index_t n) {
  if (n == 0) return;
  increment_counters_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(counters, n);
  check_launch("increment_counters_kernel");
}

void prelu_forward(const float* x, const float* alpha, float* y, index_t B, index_t P, index_t S, index_t Q) {
  const index_t n = B * P * S * Q;
  if (n == 0) return;
  prelu_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, alpha, nullptr, y, n, P, S, Q);
  check_launch("prelu_kernel");
}

void prelu_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha, index_t B,
                    index_t P, index_t S, index_t Q) {
  // dalpha first, then dx: the dalpha kernels have read dy before dx is
  // written, so dx may be dy (or x). With no terms (B S == 0) they still write
  // dalpha = 0, as the CPU does.
  const index_t C = P * Q, rows = B * S;
  if (C > 0) {
    // As for BatchNorm's statistics: about 2048 blocks in all, each slice at
    // least ~2048 terms of a channel.
    const index_t xblocks = std::min<index_t>(Q == 1 ? P : P * ((Q + 31) / 32), kMaxBlocks);
    index_t splits = std::min<index_t>((2048 + xblocks - 1) / xblocks, (rows + 2047) / 2048);
    splits = std::max<index_t>(1, std::min<index_t>(splits, 65535));
    Scratch scratch(size_t(splits) * size_t(C) * sizeof(double));
    double* part = static_cast<double*>(scratch.p);
    const dim3 blocks{unsigned(xblocks), unsigned(splits), 1u};
    if (Q == 1) {
      prelu_dalpha_rows_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, dy, part, B, P, S);
      check_launch("prelu_dalpha_rows_kernel");
    } else {
      prelu_dalpha_cols_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, dy, part, B, P, S, Q);
      check_launch("prelu_dalpha_cols_kernel");
    }
    prelu_dalpha_finish_kernel<<<blocks_for(C), kThreads, 0, current_stream()>>>(part, splits, dalpha, C);
    check_launch("prelu_dalpha_finish_kernel");
  }
  const index_t n = B * P * S * Q;
  if (dx && n > 0) {
    prelu_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, alpha, dy, dx, n, P, S, Q);
    check_launch("prelu_kernel");
  }
}

}  // namespace cuda
}  // namespace deepcore
