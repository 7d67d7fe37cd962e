#include "ops/optimizers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/parallel.h"

namespace deepcore {
namespace {

// A slot that decays geometrically (a dead unit's zero gradient) ends up
// denormal, and denormal arithmetic costs ~100x on x86. Flush it to zero.
DC_HD float flush_denormal(float v) { return std::fabs(v) < 1.17549435e-38f ? 0.0f : v; }
DC_HD float sign(float v) { return float(v > 0.0f) - float(v < 0.0f); }

// Threads split the step above kOptimizerParallelThreshold (ops/common.h).
template <class Fn>
void optimizer_chunks(index_t n, Fn fn) {
  parallel_chunks(n, fn, kOptimizerParallelThreshold);
}

struct Seg {
  float scale, l1, l2;
};

#define DC_EFFECTIVE_GRAD(i)                                                          \
  const float w0 = w[i];                                                              \
  float gi = (g[i] + pl2x2 * w0 + pl1 * sign(w0)) * scale;                            \
  gi = std::min(std::max(gi, -cv), cv);                                               \
  float wi = w0 * decay;

#define DC_RUN_CONSTANTS                                                              \
  const float scale = seg.scale, pl1 = seg.l1, pl2x2 = 2.0f * seg.l2;                 \
  const float cv = p.clipvalue > 0.0f ? p.clipvalue : std::numeric_limits<float>::infinity(); \
  const float decay = 1.0f - p.lr * p.weight_decay;

// Specialized loops, inlined into the multiversioned update_run.
template <bool Centered, bool Momentum>
DC_HD void rmsprop_run(const OptParams& p, float* __restrict w, const float* __restrict g, float* __restrict s0,
                       float* __restrict s1, float* __restrict s2, index_t n, Seg seg) {
  DC_RUN_CONSTANTS
  const float lr = p.lr, eps = p.epsilon, rho = p.beta2, mu = p.momentum;
#pragma omp simd
  for (index_t i = 0; i < n; ++i) {
    DC_EFFECTIVE_GRAD(i)
    const float v = flush_denormal(rho * s0[i] + (1.0f - rho) * gi * gi);
    s0[i] = v;
    float d = v + eps;
    if (Centered) {
      const float c = flush_denormal(rho * s2[i] + (1.0f - rho) * gi);
      s2[i] = c;
      d = v - c * c + eps;
    }
    const float inc = lr * gi / std::sqrt(d);
    if (Momentum) {
      const float mo = flush_denormal(mu * s1[i] + inc);
      s1[i] = mo;
      w[i] = wi - mo;
    } else {
      w[i] = wi - inc;
    }
  }
}

template <bool Half>
DC_HD void ftrl_run(const OptParams& p, float* __restrict w, const float* __restrict g, float* __restrict s0,
                    float* __restrict s1, index_t n, Seg seg) {
  DC_RUN_CONSTANTS
  const float lr = p.lr, inv_lr = 1.0f / p.lr, l1 = p.l1, l2_reg = p.l2 + p.ftrl_beta / (2.0f * p.lr);
  const float shrink2 = 2.0f * p.l2_shrinkage, power = -p.lr_power;
#pragma omp simd
  for (index_t i = 0; i < n; ++i) {
    DC_EFFECTIVE_GRAD(i)
    const float a = s0[i], a_new = a + gi * gi;
    const float pa = Half ? std::sqrt(a) : std::pow(a, power);
    const float pn = Half ? std::sqrt(a_new) : std::pow(a_new, power);
    const float z = s1[i] + (gi + shrink2 * wi) - (pn - pa) / lr * wi;
    const float quadratic = pn * inv_lr + 2.0f * l2_reg;
    s1[i] = z, s0[i] = a_new;
    const float shrunk = (std::min(std::max(z, -l1), l1) - z) / quadratic;  // both sides computed: no branch
    w[i] = std::fabs(z) > l1 ? shrunk : 0.0f;
  }
}

// One contiguous run of one segment: effective gradient, decoupled decay, rule.
DC_MULTIVERSION void update_run(const OptParams& p, float* __restrict w, const float* __restrict g,
                                float* __restrict s0, float* __restrict s1, float* __restrict s2, index_t n,
                                Seg seg) {
  DC_RUN_CONSTANTS
  const float lr = p.lr, eps = p.epsilon, b1 = p.beta1, b2 = p.beta2, mu = p.momentum;
  const float c1 = p.c1, c2 = p.c2, c3 = p.c3;
  switch (Opt(p.kind)) {
    case Opt::SGD:
      if (!s0 || mu == 0.0f) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
          DC_EFFECTIVE_GRAD(i)
          w[i] = wi - lr * gi;
        }
      } else if (p.nesterov) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
          DC_EFFECTIVE_GRAD(i)
          const float v = flush_denormal(mu * s0[i] - lr * gi);
          s0[i] = v;
          w[i] = wi + mu * v - lr * gi;
        }
      } else {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
          DC_EFFECTIVE_GRAD(i)
          const float v = flush_denormal(mu * s0[i] - lr * gi);
          s0[i] = v;
          w[i] = wi + v;
        }
      }
      break;
    case Opt::Adagrad:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) {
        DC_EFFECTIVE_GRAD(i)
        const float a = s0[i] + gi * gi;
        s0[i] = a;
        w[i] = wi - lr * gi / std::sqrt(a + eps);
      }
      break;
    case Opt::RMSprop:
      if (s2 && s1 && mu > 0.0f) rmsprop_run<true, true>(p, w, g, s0, s1, s2, n, seg);
      else if (s2) rmsprop_run<true, false>(p, w, g, s0, s1, s2, n, seg);
      else if (s1 && mu > 0.0f) rmsprop_run<false, true>(p, w, g, s0, s1, s2, n, seg);
      else rmsprop_run<false, false>(p, w, g, s0, s1, s2, n, seg);
      break;
    case Opt::Adam:
      if (s2) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
          DC_EFFECTIVE_GRAD(i)
          const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
          const float v = flush_denormal(s1[i] + (gi * gi - s1[i]) * (1.0f - b2));
          const float vh = std::max(s2[i], v);
          s0[i] = m, s1[i] = v, s2[i] = vh;
          w[i] = wi - c1 * m / (std::sqrt(vh) + eps);
        }
      } else {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
          DC_EFFECTIVE_GRAD(i)
          const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
          const float v = flush_denormal(s1[i] + (gi * gi - s1[i]) * (1.0f - b2));
          s0[i] = m, s1[i] = v;
          w[i] = wi - c1 * m / (std::sqrt(v) + eps);
        }
      }
      break;
    case Opt::Adamax:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) {
        DC_EFFECTIVE_GRAD(i)
        const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
        const float u = flush_denormal(std::max(b2 * s1[i], std::fabs(gi)));
        s0[i] = m, s1[i] = u;
        w[i] = wi - c1 * m / (u + eps);
      }
      break;
    case Opt::Nadam:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) {
        DC_EFFECTIVE_GRAD(i)
        const float m = flush_denormal(s0[i] + (gi - s0[i]) * (1.0f - b1));
        const float v = flush_denormal(s1[i] + (gi * gi - s1[i]) * (1.0f - b2));
        s0[i] = m, s1[i] = v;
        w[i] = wi - lr * (c1 * m + c2 * gi) / (std::sqrt(c3 * v) + eps);
      }
      break;
    case Opt::Ftrl:
      if (p.lr_power == -0.5f) ftrl_run<true>(p, w, g, s0, s1, n, seg);
      else ftrl_run<false>(p, w, g, s0, s1, n, seg);
      break;
  }
}
#undef DC_EFFECTIVE_GRAD
#undef DC_RUN_CONSTANTS

// The norms and the penalty are sums over blocks of kNormBlock elements
// counted from each segment's start: each block summed in float (full-width
// SIMD), then the blocks of a segment added in double in order. The blocks
// depend on the segments only, so the sums have the same bits at any thread
// count.
constexpr index_t kNormBlock = 4096;

// Over one block: sum of squares of the penalized gradient
// g + 2 l2 w + l1 sign(w), and the penalty l1 |w| + l2 w^2.
DC_MULTIVERSION void reduce_block(const float* __restrict w, const float* __restrict g, index_t n, float l1,
                                  float l2, float* sumsq, float* penalty) {
  const float l2x2 = 2.0f * l2;
  float s = 0.0f, q = 0.0f;
#pragma omp simd reduction(+ : s, q)
  for (index_t i = 0; i < n; ++i) {
    const float wi = w[i], gi = g[i] + l2x2 * wi + l1 * sign(wi);
    s += gi * gi;
    q += l1 * std::fabs(wi) + l2 * wi * wi;
  }
  *sumsq = s, *penalty = q;
}

// Calls fn(segment, begin, end) for each run of [b, e) that lies in one segment.
template <class Fn>
void for_runs(const int64_t* offsets, index_t nseg, index_t b, index_t e, Fn fn) {
  index_t s = index_t(std::upper_bound(offsets, offsets + nseg + 1, b) - offsets) - 1;
  while (b < e && s < nseg) {
    const index_t end = std::min<index_t>(e, offsets[s + 1]);
    if (end > b) fn(s, b, end);
    b = end;
    ++s;
  }
}

}  // namespace

double optimizer_step(const OptParams& p, float* w, const float* g, float* s0, float* s1, float* s2, index_t n,
                      const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                      double* grad_norm) {
  const int64_t whole[2] = {0, n};
  if (!offsets) offsets = whole, nseg = 1, seg_l1 = seg_l2 = nullptr;
  std::vector<Seg> segs(size_t(nseg), Seg{1.0f, 0.0f, 0.0f});
  bool penalties = false;
  for (index_t s = 0; s < nseg; ++s) {
    segs[s].l1 = seg_l1 ? seg_l1[s] : 0.0f;
    segs[s].l2 = seg_l2 ? seg_l2[s] : 0.0f;
    penalties |= segs[s].l1 != 0.0f || segs[s].l2 != 0.0f;
  }
  const bool by_norm = p.clipnorm > 0.0f || p.global_clipnorm > 0.0f || grad_norm;
  double penalty = 0.0;
  if (by_norm || penalties) {
    // first[s]: the index of segment s's first block; part: (sum of squares, penalty) per block.
    std::vector<index_t> first(size_t(nseg) + 1, 0);
    for (index_t s = 0; s < nseg; ++s) first[s + 1] = first[s] + (offsets[s + 1] - offsets[s] + kNormBlock - 1) / kNormBlock;
    const index_t blocks = first[nseg];
    std::vector<float> part(size_t(2 * blocks));
    parallel_chunks_if(n >= kOptimizerParallelThreshold, blocks, [&](index_t k0, index_t k1) {
      index_t s = index_t(std::upper_bound(first.begin(), first.end(), k0) - first.begin()) - 1;
      for (index_t k = k0; k < k1; ++k) {
        while (k >= first[s + 1]) ++s;  // past empty segments too
        const index_t b = offsets[s] + (k - first[s]) * kNormBlock, e = std::min<index_t>(offsets[s + 1], b + kNormBlock);
        reduce_block(w + b, g + b, e - b, segs[s].l1, segs[s].l2, &part[2 * k], &part[2 * k + 1]);
      }
    }, 1);
    double total = 0.0;
    for (index_t s = 0; s < nseg; ++s) {
      double sq = 0.0, pen = 0.0;
      for (index_t k = first[s]; k < first[s + 1]; ++k) sq += part[2 * k], pen += part[2 * k + 1];
      total += sq;
      penalty += pen;
      if (p.clipnorm > 0.0f) {
        const double norm = std::sqrt(sq);
        segs[s].scale = float(double(p.clipnorm) / std::max(norm, double(p.clipnorm)));
      }
    }
    const double gnorm = std::sqrt(total);
    if (grad_norm) *grad_norm = gnorm;
    if (p.global_clipnorm > 0.0f) {
      const float scale = float(double(p.global_clipnorm) / std::max(gnorm, double(p.global_clipnorm)));
      for (auto& sg : segs) sg.scale = std::isnan(gnorm) ? NAN : scale;
    }
  }
  optimizer_chunks(n, [&](index_t b, index_t e) {
    for_runs(offsets, nseg, b, e, [&](index_t s, index_t rb, index_t re) {
      update_run(p, w + rb, g + rb, s0 ? s0 + rb : nullptr, s1 ? s1 + rb : nullptr, s2 ? s2 + rb : nullptr, re - rb,
                 segs[s]);
    });
  });
  return penalty;
}

void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov) {
  OptParams p;
  p.kind = int(Opt::SGD), p.lr = lr, p.momentum = momentum, p.nesterov = nesterov;
  optimizer_step(p, w, g, velocity, nullptr, nullptr, n, nullptr, 0, nullptr, nullptr, nullptr);
}

DC_MULTIVERSION void max_norm(float* w, index_t outer, index_t r, index_t inner, float max_value) {
  std::vector<double> sq(static_cast<size_t>(inner));
  for (index_t o = 0; o < outer; ++o) {
    float* base = w + o * r * inner;
    std::fill(sq.begin(), sq.end(), 0.0);
    for (index_t k = 0; k < r; ++k) {
      const float* row = base + k * inner;
#pragma omp simd
      for (index_t j = 0; j < inner; ++j) sq[j] += double(row[j]) * row[j];
    }
    std::vector<float> scale(static_cast<size_t>(inner));
    for (index_t j = 0; j < inner; ++j) {
      const double norm = std::sqrt(sq[j]);
      scale[j] = norm > max_value ? float(max_value / norm) : 1.0f;
    }
    for (index_t k = 0; k < r; ++k) {
      float* row = base + k * inner;
#pragma omp simd
      for (index_t j = 0; j < inner; ++j) row[j] *= scale[j];
    }
  }
}

}  // namespace deepcore
