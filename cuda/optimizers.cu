// CUDA optimizer updates: the twin of src/cpu/optimizers.cpp, op for op.
//
// optimizer_step over one flat buffer split into segments (one per variable):
//   1. reduce_runs (only when clipping by norm, a penalty or the norm is asked
//      for): the buffer is cut into runs of at most kRunLen elements that never
//      cross a segment; one block per run writes the run's sum of squared
//      penalized gradients and its penalty value (fixed-order partials);
//   2. finalize (one block): one warp per segment adds its runs in order, then
//      the per-segment scales for clipnorm / global_clipnorm are computed on
//      the device, so the update needs no host round trip;
//   3. update_runs: one block per run; the run's segment gives the scale and
//      the l1/l2 strengths; each thread updates its elements with the rule.
// The run table is implicit: first_run[s] = runs before segment s, so a block
// finds its segment by a binary search over nseg + 1 entries.
//
// optimizer_step_graph runs the same kernels for a CUDA graph: the tables live
// on the device (upload_segments, once), and the hyperparameters are read from
// a device OptParams when the kernels run (finalize_device_kernel,
// update_runs_device_kernel wrap the same bodies), so a replay uses the values
// set before it and the step returns nothing to the host.
//
// The per-element formulas are those of src/cpu/optimizers.cpp, written again
// here (see the note on update_element) in the same order of operations.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "allocator.h"
#include "graph.h"
#include "kernels.h"
#include "launch.cuh"

namespace deepcore {
namespace cuda {
namespace {

// As on the CPU: a velocity that decays geometrically ends up denormal; flush
// it to zero so that both backends keep the same state.
__device__ __forceinline__ float flush_denormal(float v) { return fabsf(v) < 1.17549435e-38f ? 0.0f : v; }
__device__ __forceinline__ float sign(float v) { return float(v > 0.0f) - float(v < 0.0f); }
// std::min / std::max, NaN behaviour included (the CPU's clip and max).
template <class T>
__device__ __forceinline__ T min_of(T a, T b) { return b < a ? b : a; }
template <class T>
__device__ __forceinline__ T max_of(T a, T b) { return a < b ? b : a; }

// Keras SGD, one thread per parameter:
//   momentum == 0:  w <- w - lr g
//   else:           v <- momentum v - lr g
//                   w <- w + v                      (classical)
//                   w <- w + momentum v - lr g      (Nesterov)
__global__ void sgd_update_kernel(float* w, const float* g, float* v, index_t n, float lr, float mom, bool nesterov) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    // As the CPU, which runs sgd_update through optimizer_step: the gradient
    // carries the (zero) penalty terms, so an infinite weight gives NaN there too.
    const float gi = g[i] + 0.0f * w[i] + 0.0f * sign(w[i]);
    if (!v || mom == 0.0f) {
      w[i] = w[i] - lr * gi;
    } else {
      const float vi = flush_denormal(mom * v[i] - lr * gi);
      v[i] = vi;
      w[i] = nesterov ? (w[i] + mom * vi) - lr * gi : w[i] + vi;  // the CPU's grouping
    }
  }
}

// ------------------------------------------------------------ optimizer_step

// Elements per run: 256 threads x 32 elements; a block per run.
constexpr index_t kRunLen = 8192;

// The per-segment tables, uploaded once per call (see optimizer_step).
struct Tables {
  const int64_t* offsets;    // nseg + 1: segment s is [offsets[s], offsets[s+1])
  const int64_t* first_run;  // nseg + 1: runs of segment s are [first_run[s], first_run[s+1])
  const float* l1;           // nseg
  const float* l2;           // nseg
  index_t nseg;
};

struct Run {
  index_t seg, begin, end;
};

// Run r: the largest s with first_run[s] <= r (empty segments have no runs, so
// first_run[s + 1] > r), then the r - first_run[s]-th slice of that segment.
__device__ __forceinline__ Run run_of(const Tables& t, index_t r) {
  index_t lo = 0, hi = t.nseg;  // first_run[lo] <= r < first_run[hi]
  while (hi - lo > 1) {
    const index_t mid = (lo + hi) / 2;
    if (t.first_run[mid] <= r) lo = mid;
    else hi = mid;
  }
  const index_t b = t.offsets[lo] + (r - t.first_run[lo]) * kRunLen;
  return Run{lo, b, min_of<index_t>(b + kRunLen, t.offsets[lo + 1])};
}

// Per run: sum of squares of g + 2 l2 w + l1 sign(w), and l1 |w| + l2 w^2.
// Each thread sums at most 32 elements in float (as the CPU sums 4096-element
// blocks in float), then the block adds the threads in double, in fixed order.
__global__ void reduce_runs_kernel(const float* w, const float* g, Tables t, index_t nruns, double* run_sq,
                                   double* run_pen) {
  __shared__ double shared[kWarpsPerBlock];
  for (index_t r = blockIdx.x; r < nruns; r += gridDim.x) {  // uniform across the block
    const Run run = run_of(t, r);
    const float l1 = t.l1[run.seg], l2 = t.l2[run.seg], l2x2 = 2.0f * l2;
    float s = 0.0f, q = 0.0f;
    for (index_t i = run.begin + threadIdx.x; i < run.end; i += kThreads) {
      const float wi = w[i], gi = g[i] + l2x2 * wi + l1 * sign(wi);
      s += gi * gi;
      q += l1 * fabsf(wi) + l2 * wi * wi;
    }
    const double sq = block_sum(double(s), shared);
    const double pen = block_sum(double(q), shared);
    if (threadIdx.x == 0) run_sq[r] = sq, run_pen[r] = pen;
  }
}

// One block. Per segment (one warp each): sq = its runs' sum; with clipnorm,
// scale = clipnorm / max(sqrt(sq), clipnorm). Then the total over segments
// (penalty, squared norm) into result[0], result[1]; with global_clipnorm every
// scale is global_clipnorm / max(norm, global_clipnorm) (NaN for a NaN norm).
__device__ __forceinline__ void finalize(Tables t, const double* run_sq, const double* run_pen, float clipnorm,
                                         float global_clipnorm, float* scale, double* result) {
  __shared__ double shared[kWarpsPerBlock];
  __shared__ double total_sq;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double my_sq = 0.0, my_pen = 0.0;  // this warp's segments (valid in lane 0)
  for (index_t s = warp; s < t.nseg; s += kWarpsPerBlock) {
    double sq = 0.0, pen = 0.0;
    for (index_t r = t.first_run[s] + lane; r < t.first_run[s + 1]; r += 32) sq += run_sq[r], pen += run_pen[r];
    sq = warp_sum(sq);
    pen = warp_sum(pen);
    my_sq += sq, my_pen += pen;
    if (lane == 0) {
      scale[s] = 1.0f;
      if (clipnorm > 0.0f) scale[s] = float(double(clipnorm) / max_of(sqrt(sq), double(clipnorm)));
    }
  }
  if (lane != 0) my_sq = my_pen = 0.0;
  const double sq = block_sum(my_sq, shared);
  const double pen = block_sum(my_pen, shared);
  if (threadIdx.x == 0) result[0] = pen, result[1] = sq, total_sq = sq;
  __syncthreads();
  if (global_clipnorm > 0.0f) {
    const double gnorm = sqrt(total_sq);
    const float sc = float(double(global_clipnorm) / max_of(gnorm, double(global_clipnorm)));
    for (index_t s = threadIdx.x; s < t.nseg; s += kThreads) scale[s] = isnan(gnorm) ? NAN : sc;
  }
}

__global__ void finalize_kernel(Tables t, const double* run_sq, const double* run_pen, float clipnorm,
                                float global_clipnorm, float* scale, double* result) {
  finalize(t, run_sq, run_pen, clipnorm, global_clipnorm, scale, result);
}

// The clipping thresholds from the device (optimizer_step_graph).
__global__ void finalize_device_kernel(Tables t, const double* run_sq, const double* run_pen, const OptParams* hyper,
                                       float* scale, double* result) {
  finalize(t, run_sq, run_pen, hyper->clipnorm, hyper->global_clipnorm, scale, result);
}

// The effective gradient's per-segment constants.
struct GradTerms {
  float scale, l1, l2x2, clip, decay;
};

// One element: effective gradient, decoupled decay, the rule (Keras 3, as in
// ops/optimizers.h). Written apart from the CPU's loops on purpose: sharing one
// inline function with them moved the last bit of a few elements in the CPU's
// loop remainders (a different FMA contraction), and the CPU results must not
// change. The switch and the slot tests are uniform across the grid.
__device__ __forceinline__ void update_element(const OptParams& p, const GradTerms& t, float* w, const float* g,
                                               float* s0, float* s1, float* s2, index_t i) {
  // g <- clip((g + 2 l2 w + l1 sign(w)) * scale, -clipvalue, clipvalue);  w <- (1 - lr wd) w
  const float w0 = w[i];
  float gi = (g[i] + t.l2x2 * w0 + t.l1 * sign(w0)) * t.scale;
  gi = min_of(max_of(gi, -t.clip), t.clip);
  const float wi = w0 * t.decay;
  const float lr = p.lr, eps = p.epsilon, b1 = p.beta1, b2 = p.beta2, mu = p.momentum;
  switch (Opt(p.kind)) {
    case Opt::SGD: {
      // v <- mu v - lr g;  w <- w + v  (Nesterov: w <- w + mu v - lr g)
      if (!s0 || mu == 0.0f) {
        w[i] = wi - lr * gi;
      } else {
        const float v = flush_denormal(mu * s0[i] - lr * gi);
        s0[i] = v;
        w[i] = p.nesterov ? wi + mu * v - lr * gi : wi + v;
      }
      break;
    }
    case Opt::Adagrad: {
      // a <- a + g^2;  w <- w - lr g / sqrt(a + eps)
      const float a = s0[i] + gi * gi;
      s0[i] = a;
      w[i] = wi - lr * gi / sqrtf(a + eps);
      break;
    }
    case Opt::RMSprop: {
      // v <- rho v + (1-rho) g^2;  centered: c <- rho c + (1-rho) g, d = v - c^2 + eps, else d = v + eps
      // i = lr g / sqrt(d);  momentum: mo <- mu mo + i, w <- w - mo, else w <- w - i
      const float rho = b2;
      const float v = flush_denormal(rho * s0[i] + (1.0f - rho) * gi * gi);
      s0[i] = v;
      float d = v + eps;
      if (s2) {
        const float c = flush_denormal(rho * s2[i] + (1.0f - rho) * gi);
        s2[i] = c;
        d = v - c * c + eps;
      }
      const float inc = lr * gi / sqrtf(d);
      if (s1 && mu > 0.0f) {
        const float mo = flush_denormal(mu * s1[i] + inc);
        s1[i] = mo;
        w[i] = wi - mo;
      } else {
        w[i] = wi - inc;
      }
      break;
    }
    case Opt::Adam: {
      // m <- m + (g - m)(1 - b1);  v <- v + (g^2 - v)(1 - b2);  amsgrad: vh <- max(vh, v)
      // w <- w - c1 m / (sqrt(v or vh) + eps)
      const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
      const float v = flush_denormal(s1[i] + (gi * gi - s1[i]) * (1.0f - b2));
      s0[i] = m, s1[i] = v;
      if (s2) {
        const float vh = max_of(s2[i], v);
        s2[i] = vh;
        w[i] = wi - p.c1 * m / (sqrtf(vh) + eps);
      } else {
        w[i] = wi - p.c1 * m / (sqrtf(v) + eps);
      }
      break;
    }
    case Opt::Adamax: {
      // m <- m + (g - m)(1 - b1);  u <- max(b2 u, |g|);  w <- w - c1 m / (u + eps)
      const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
      const float u = flush_denormal(max_of(b2 * s1[i], fabsf(gi)));
      s0[i] = m, s1[i] = u;
      w[i] = wi - p.c1 * m / (u + eps);
      break;
    }
    case Opt::Nadam: {
      // m, v as Adam;  w <- w - lr (c1 m + c2 g) / (sqrt(c3 v) + eps)
      const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
      const float v = flush_denormal(s1[i] + (gi * gi - s1[i]) * (1.0f - b2));
      s0[i] = m, s1[i] = v;
      w[i] = wi - lr * (p.c1 * m + p.c2 * gi) / (sqrtf(p.c3 * v) + eps);
      break;
    }
    case Opt::Ftrl: {
      // a' = a + g^2;  z <- z + (g + 2 shrinkage w) - (a'^-p - a^-p) / lr w;  a <- a'
      // w <- |z| > l1 ? (clip(z, -l1, l1) - z) / (a'^-p / lr + 2 (l2 + beta / (2 lr))) : 0
      const bool half = p.lr_power == -0.5f;
      const float l1 = p.l1, l2_reg = p.l2 + p.ftrl_beta / (2.0f * p.lr), power = -p.lr_power;
      const float a = s0[i], a_new = a + gi * gi;
      const float pa = half ? sqrtf(a) : powf(a, power);
      const float pn = half ? sqrtf(a_new) : powf(a_new, power);
      const float z = s1[i] + (gi + 2.0f * p.l2_shrinkage * wi) - (pn - pa) / lr * wi;
      const float quadratic = pn * (1.0f / p.lr) + 2.0f * l2_reg;
      s1[i] = z, s0[i] = a_new;
      const float shrunk = (min_of(max_of(z, -l1), l1) - z) / quadratic;
      w[i] = fabsf(z) > l1 ? shrunk : 0.0f;
      break;
    }
  }
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Four elements i..i+3 (i a multiple of 4, every buffer 16-byte aligned) with
// 128-bit loads and stores: each thread has more bytes in flight, which is
// what a bandwidth-bound update needs. The arithmetic is update_element's on
// register copies, so every element gets the same bits as in the scalar loop.
// A slot the rule does not write (SGD without momentum) is stored back unchanged.
__device__ __forceinline__ void update_vec4(const OptParams& p, const GradTerms& t, float* w, const float* g,
                                            float* s0, float* s1, float* s2, index_t i) {
  float4 wv = *reinterpret_cast<const float4*>(w + i);
  const float4 gv = *reinterpret_cast<const float4*>(g + i);
  float4 a = s0 ? *reinterpret_cast<const float4*>(s0 + i) : float4{};
  float4 b = s1 ? *reinterpret_cast<const float4*>(s1 + i) : float4{};
  float4 c = s2 ? *reinterpret_cast<const float4*>(s2 + i) : float4{};
  float* lw = &wv.x;
  const float* lg = &gv.x;
  float *la = s0 ? &a.x : nullptr, *lb = s1 ? &b.x : nullptr, *lc = s2 ? &c.x : nullptr;
#pragma unroll
  for (int k = 0; k < 4; ++k) update_element(p, t, lw, lg, la, lb, lc, k);
  *reinterpret_cast<float4*>(w + i) = wv;
  if (s0) *reinterpret_cast<float4*>(s0 + i) = a;
  if (s1) *reinterpret_cast<float4*>(s1 + i) = b;
  if (s2) *reinterpret_cast<float4*>(s2 + i) = c;
}

// One block per run; scale is null when no norm clipping was computed (= 1).
// With every buffer 16-byte aligned (uniform across the grid), the run's
// elements from its first multiple of 4 to its last go four at a time; the
// few before and after (a run starts where its segment does) one at a time.
__device__ __forceinline__ void update_runs(const OptParams& p, float* w, const float* g, float* s0, float* s1,
                                            float* s2, Tables t, index_t nruns, const float* scale) {
  const float clip = p.clipvalue > 0.0f ? p.clipvalue : INFINITY;
  const float decay = 1.0f - p.lr * p.weight_decay;
  const bool vec = aligned16(w) && aligned16(g) && aligned16(s0) && aligned16(s1) && aligned16(s2);
  for (index_t r = blockIdx.x; r < nruns; r += gridDim.x) {
    const Run run = run_of(t, r);
    const GradTerms terms{scale ? scale[run.seg] : 1.0f, t.l1[run.seg], 2.0f * t.l2[run.seg], clip, decay};
    if (!vec) {
      for (index_t i = run.begin + threadIdx.x; i < run.end; i += kThreads)
        update_element(p, terms, w, g, s0, s1, s2, i);
      continue;
    }
    const index_t lo = min_of<index_t>((run.begin + 3) / 4 * 4, run.end), hi = max_of<index_t>(lo, run.end / 4 * 4);
    for (index_t i = lo + 4 * index_t(threadIdx.x); i < hi; i += 4 * kThreads) update_vec4(p, terms, w, g, s0, s1, s2, i);
    // The head [begin, lo) and the tail [hi, end): at most 3 elements each.
    const index_t k = threadIdx.x;
    if (k < lo - run.begin) update_element(p, terms, w, g, s0, s1, s2, run.begin + k);
    if (k < run.end - hi) update_element(p, terms, w, g, s0, s1, s2, hi + k);
  }
}

__global__ void update_runs_kernel(OptParams p, float* w, const float* g, float* s0, float* s1, float* s2,
                                   Tables t, index_t nruns, const float* scale) {
  update_runs(p, w, g, s0, s1, s2, t, nruns, scale);
}

// The hyperparameters from the device (optimizer_step_graph); nothing changes
// while *skip is nonzero (the step's loss found a bad label).
__global__ void update_runs_device_kernel(const OptParams* hyper, float* w, const float* g, float* s0, float* s1,
                                          float* s2, Tables t, index_t nruns, const float* scale,
                                          const int32_t* skip) {
  if (skip && *skip) return;
  const OptParams p = *hyper;
  update_runs(p, w, g, s0, s1, s2, t, nruns, scale);
}

// ------------------------------------------------------------------ max_norm

// One thread per vector (o, j) along the middle axis, for inner > 1: adjacent
// threads read adjacent j (coalesced). sq in double, as on the CPU.
__global__ void max_norm_columns_kernel(float* w, index_t outer, index_t r, index_t inner, float max_value) {
  for (index_t v = grid_index(); v < outer * inner; v += grid_stride()) {
    float* base = w + (v / inner) * r * inner + v % inner;
    double sq = 0.0;
    for (index_t k = 0; k < r; ++k) sq += double(base[k * inner]) * base[k * inner];
    const double norm = sqrt(sq);
    const float scale = norm > max_value ? float(max_value / norm) : 1.0f;
    for (index_t k = 0; k < r; ++k) base[k * inner] *= scale;
  }
}

// One warp per vector, for inner == 1 (the vector is contiguous).
__global__ void max_norm_rows_kernel(float* w, index_t outer, index_t r, float max_value) {
  const int lane = threadIdx.x % 32;
  for (index_t o = warp_row(); o < outer; o += warp_row_stride()) {
    float* row = w + o * r;
    double sq = 0.0;
    for (index_t k = lane; k < r; k += 32) sq += double(row[k]) * row[k];
    const double norm = sqrt(warp_sum(sq));
    const float scale = norm > max_value ? float(max_value / norm) : 1.0f;
    for (index_t k = lane; k < r; k += 32) row[k] *= scale;
  }
}

unsigned blocks_for_runs(index_t nruns) { return unsigned(std::min<index_t>(nruns, kMaxBlocks)); }

// first_run[s + 1] = first_run[s] + the runs of segment s (nseg + 1 entries).
std::vector<int64_t> first_runs(const int64_t* offsets, index_t nseg) {
  std::vector<int64_t> first_run(size_t(nseg) + 1, 0);
  for (index_t s = 0; s < nseg; ++s)
    first_run[s + 1] = first_run[s] + (offsets[s + 1] - offsets[s] + kRunLen - 1) / kRunLen;
  return first_run;
}

}  // namespace

void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov) {
  if (n == 0) return;
  sgd_update_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(w, g, velocity, n, lr, momentum, nesterov);
  check_launch("sgd_update_kernel");
}

double optimizer_step(const OptParams& p, float* w, const float* g, float* s0, float* s1, float* s2, index_t n,
                      const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                      double* grad_norm) {
  ensure_not_capturing("optimizer_step",
                       "it uploads its segment tables from pageable host memory (in a graph, use "
                       "optimizer_step_graph with a SegmentTable and a DeviceHyper)");
  const int64_t whole[2] = {0, n};
  if (!offsets) offsets = whole, nseg = 1, seg_l1 = seg_l2 = nullptr;
  // Host tables: offsets, first_run (int64), then l1, l2 (float).
  const std::vector<int64_t> first_run = first_runs(offsets, nseg);
  bool penalties = false;
  for (index_t s = 0; s < nseg; ++s) penalties |= (seg_l1 && seg_l1[s] != 0.0f) || (seg_l2 && seg_l2[s] != 0.0f);
  const index_t nruns = first_run[nseg];
  const bool reduce = p.clipnorm > 0.0f || p.global_clipnorm > 0.0f || grad_norm || penalties;
  if (nruns == 0) {  // n == 0: nothing to update, a zero norm
    if (grad_norm) *grad_norm = 0.0;
    return 0.0;
  }

  // Device scratch: [offsets | first_run | result(2) | run_sq | run_pen] as 8-byte words, then
  // [l1 | l2 | scale] as floats. The first two and l1, l2 come from one host buffer.
  const size_t n8 = 2 * (size_t(nseg) + 1) + 2 + (reduce ? 2 * size_t(nruns) : 0);
  const size_t bytes = n8 * 8 + 3 * size_t(nseg) * sizeof(float);
  Scratch scratch(bytes);
  auto* d64 = static_cast<int64_t*>(scratch.p);
  auto* result = reinterpret_cast<double*>(d64 + 2 * (nseg + 1));
  auto* run_sq = result + 2;
  auto* run_pen = run_sq + nruns;
  auto* dl1 = reinterpret_cast<float*>(d64 + n8);
  auto* dl2 = dl1 + nseg, *scale = dl2 + nseg;
  {
    std::vector<int64_t> head(2 * (size_t(nseg) + 1));
    std::memcpy(head.data(), offsets, (size_t(nseg) + 1) * sizeof(int64_t));
    std::memcpy(head.data() + nseg + 1, first_run.data(), (size_t(nseg) + 1) * sizeof(int64_t));
    std::vector<float> l12(2 * size_t(nseg), 0.0f);
    if (seg_l1) std::memcpy(l12.data(), seg_l1, size_t(nseg) * sizeof(float));
    if (seg_l2) std::memcpy(l12.data() + nseg, seg_l2, size_t(nseg) * sizeof(float));
    // Pageable sources: the copies return once the data is staged, so the vectors may go.
    check(cudaMemcpyAsync(d64, head.data(), head.size() * sizeof(int64_t), cudaMemcpyHostToDevice,
                          current_stream()),
          "optimizer_step: cudaMemcpyAsync");
    check(cudaMemcpyAsync(dl1, l12.data(), l12.size() * sizeof(float), cudaMemcpyHostToDevice, current_stream()),
          "optimizer_step: cudaMemcpyAsync");
  }
  const Tables t{d64, d64 + nseg + 1, dl1, dl2, nseg};
  if (reduce) {
    reduce_runs_kernel<<<blocks_for_runs(nruns), kThreads, 0, current_stream()>>>(w, g, t, nruns, run_sq, run_pen);
    check_launch("reduce_runs_kernel");
    finalize_kernel<<<1, kThreads, 0, current_stream()>>>(t, run_sq, run_pen, p.clipnorm, p.global_clipnorm, scale,
                                                          result);
    check_launch("finalize_kernel");
  }
  update_runs_kernel<<<blocks_for_runs(nruns), kThreads, 0, current_stream()>>>(p, w, g, s0, s1, s2, t, nruns,
                                                                               reduce ? scale : nullptr);
  check_launch("update_runs_kernel");
  // Only a penalty or a norm brings a result back to the host (and synchronizes).
  if (!penalties && !grad_norm) return 0.0;
  double h[2];
  copy_to_host(h, result, sizeof h, "optimizer_step");
  if (grad_norm) *grad_norm = std::sqrt(h[1]);
  return h[0];
}

DeviceSegments upload_segments(const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                               index_t n) {
  ensure_not_capturing("SegmentTable", "it uploads the tables from host memory (build it before the capture)");
  const int64_t whole[2] = {0, n};
  if (!offsets) offsets = whole, nseg = 1, seg_l1 = seg_l2 = nullptr;
  const std::vector<int64_t> first_run = first_runs(offsets, nseg);
  DeviceSegments t;
  t.n = n, t.nseg = nseg, t.nruns = first_run[nseg];
  for (index_t s = 0; s < nseg; ++s) t.penalties |= (seg_l1 && seg_l1[s] != 0.0f) || (seg_l2 && seg_l2[s] != 0.0f);
  // One block, as optimizer_step's scratch: [offsets | first_run | result(2) | run_sq | run_pen] as 8-byte
  // words, then [l1 | l2 | scale] as floats. The head (result zeroed) and l1, l2 are uploaded.
  const size_t head = 2 * (size_t(nseg) + 1) + 2, n8 = head + 2 * size_t(t.nruns);
  t.bytes = n8 * 8 + 3 * size_t(nseg) * sizeof(float);
  t.block = device_alloc(t.bytes);
  auto* d64 = static_cast<int64_t*>(t.block);
  t.offsets = d64, t.first_run = d64 + nseg + 1;
  t.result = reinterpret_cast<double*>(d64 + 2 * (nseg + 1));
  t.run_sq = t.result + 2, t.run_pen = t.run_sq + t.nruns;
  auto* f = reinterpret_cast<float*>(d64 + n8);
  t.l1 = f, t.l2 = f + nseg, t.scale = f + 2 * nseg;
  std::vector<int64_t> h(head, 0);  // result: two zero words (0.0)
  std::memcpy(h.data(), offsets, (size_t(nseg) + 1) * sizeof(int64_t));
  std::memcpy(h.data() + nseg + 1, first_run.data(), (size_t(nseg) + 1) * sizeof(int64_t));
  std::vector<float> l12(2 * size_t(nseg), 0.0f);
  if (seg_l1) std::memcpy(l12.data(), seg_l1, size_t(nseg) * sizeof(float));
  if (seg_l2) std::memcpy(l12.data() + nseg, seg_l2, size_t(nseg) * sizeof(float));
  try {
    // Pageable sources: the copies return once the data is staged, so the vectors may go.
    check(cudaMemcpyAsync(d64, h.data(), h.size() * sizeof(int64_t), cudaMemcpyHostToDevice, current_stream()),
          "SegmentTable: cudaMemcpyAsync");
    check(cudaMemcpyAsync(f, l12.data(), l12.size() * sizeof(float), cudaMemcpyHostToDevice, current_stream()),
          "SegmentTable: cudaMemcpyAsync");
  } catch (...) {
    device_free(t.block);
    throw;
  }
  return t;
}

void optimizer_step_graph(const OptParams& structure, const OptParams* hyper, float* w, const float* g, float* s0,
                          float* s1, float* s2, const DeviceSegments& t, bool want_norm, const int32_t* skip,
                          double* result) {
  if (t.nruns == 0) return;  // n == 0: nothing to update; the result stays zero
  const Tables tables{t.offsets, t.first_run, t.l1, t.l2, t.nseg};
  if (optimizer_step_graph_reduces(structure, t, want_norm)) {
    reduce_runs_kernel<<<blocks_for_runs(t.nruns), kThreads, 0, current_stream()>>>(w, g, tables, t.nruns, t.run_sq,
                                                                                     t.run_pen);
    check_launch("reduce_runs_kernel");
    finalize_device_kernel<<<1, kThreads, 0, current_stream()>>>(tables, t.run_sq, t.run_pen, hyper, t.scale,
                                                                 result ? result : t.result);
    check_launch("finalize_device_kernel");
    update_runs_device_kernel<<<blocks_for_runs(t.nruns), kThreads, 0, current_stream()>>>(
        hyper, w, g, s0, s1, s2, tables, t.nruns, t.scale, skip);
  } else {
    update_runs_device_kernel<<<blocks_for_runs(t.nruns), kThreads, 0, current_stream()>>>(
        hyper, w, g, s0, s1, s2, tables, t.nruns, nullptr, skip);
  }
  check_launch("update_runs_device_kernel");
}

bool optimizer_step_graph_reduces(const OptParams& structure, const DeviceSegments& t, bool want_norm) {
  return structure.clipnorm > 0.0f || structure.global_clipnorm > 0.0f || want_norm || t.penalties;
}

void max_norm(float* w, index_t outer, index_t r, index_t inner, float max_value) {
  if (outer == 0 || r == 0 || inner == 0) return;
  if (inner == 1) {
    max_norm_rows_kernel<<<blocks_for_rows(outer), kThreads, 0, current_stream()>>>(w, outer, r, max_value);
    check_launch("max_norm_rows_kernel");
  } else {
    max_norm_columns_kernel<<<blocks_for(outer * inner), kThreads, 0, current_stream()>>>(w, outer, r, inner,
                                                                                         max_value);
    check_launch("max_norm_columns_kernel");
  }
}

}  // namespace cuda
}  // namespace deepcore
