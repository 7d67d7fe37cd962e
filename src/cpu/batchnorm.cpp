// CPU batch normalization. Every kernel is two kinds of loop over the (A, C, B)
// view of the input (see ops/batchnorm.h):
//   - a reduction: per-feature sums over A and B, in float for a block of rows
//     (full-width SIMD) and flushed into double between blocks;
//   - an elementwise pass with per-feature coefficients.
// For B == 1 (features last, the dense case) the inner loops run along the C
// contiguous features; otherwise along the B contiguous values of one feature.
// The reduction sums groups of rows fixed by the shape (reduce_rows), each
// from 0, and adds the groups' sums in order: the same bits at any thread
// count. Above kParallelThreshold the groups (and the elementwise rows) are
// split across deepcore's thread pool.
#include "ops/batchnorm.h"
#include <algorithm>
#include <cmath>
#include <vector>
#include "cpu/parallel.h"

namespace deepcore {
namespace {

// Rows summed in float before the block is flushed into double: the float
// error stays near kRowBlock * 2^-24 relative while the loop keeps 8 or 16
// floats per instruction. kSpanBlock is the same bound along B.
constexpr index_t kRowBlock = 64;
constexpr index_t kSpanBlock = 512;

// Over rows a in [a0, a1) of the (A, C, B) view, with u = x - k[c] and
// v = dy (kWithDy) or v = u:
//   s1[c] += sum v,  s2[c] += sum v * u.
// Without dy these are the shifted sums of x and x^2 (statistics); with dy and
// k = mean they are sum(dy) and sum(dy * (x - mean)) (backward).
// f1, f2 are float scratch of C elements.
template <bool kWithDy>
__attribute__((always_inline)) inline void centered_sums(const float* x, const float* dy, const float* k,
                                                         index_t a0, index_t a1, index_t C, index_t B, double* s1,
                                                         double* s2, float* f1, float* f2) {
  if (B == 1) {
    for (index_t r0 = a0; r0 < a1; r0 += kRowBlock) {
      const index_t r1 = std::min(a1, r0 + kRowBlock);
      std::fill(f1, f1 + C, 0.0f);
      std::fill(f2, f2 + C, 0.0f);
      for (index_t r = r0; r < r1; ++r) {
        const float* xr = x + r * C;
        const float* gr = kWithDy ? dy + r * C : xr;
#pragma omp simd
        for (index_t j = 0; j < C; ++j) {
          const float u = xr[j] - k[j];
          const float v = kWithDy ? gr[j] : u;
          f1[j] += v;
          f2[j] += v * u;
        }
      }
      for (index_t j = 0; j < C; ++j) s1[j] += f1[j], s2[j] += f2[j];
    }
    return;
  }
  for (index_t a = a0; a < a1; ++a) {
    for (index_t c = 0; c < C; ++c) {
      const float* xr = x + (a * C + c) * B;
      const float* gr = kWithDy ? dy + (a * C + c) * B : xr;
      const float kc = k[c];
      for (index_t b0 = 0; b0 < B; b0 += kSpanBlock) {
        const index_t b1 = std::min(B, b0 + kSpanBlock);
        float t1 = 0.0f, t2 = 0.0f;
#pragma omp simd reduction(+ : t1, t2)
        for (index_t b = b0; b < b1; ++b) {
          const float u = xr[b] - kc;
          const float v = kWithDy ? gr[b] : u;
          t1 += v;
          t2 += v * u;
        }
        s1[c] += t1, s2[c] += t2;
      }
    }
  }
}

DC_MULTIVERSION void stat_sums_chunk(const float* x, const float* k, index_t a0, index_t a1, index_t C, index_t B,
                                     double* s1, double* s2, float* f1, float* f2) {
  centered_sums<false>(x, nullptr, k, a0, a1, C, B, s1, s2, f1, f2);
}

DC_MULTIVERSION void grad_sums_chunk(const float* x, const float* dy, const float* k, index_t a0, index_t a1,
                                     index_t C, index_t B, double* s1, double* s2, float* f1, float* f2) {
  centered_sums<true>(x, dy, k, a0, a1, C, B, s1, s2, f1, f2);
}

// Row groups of reduce_rows, for a tensor of at least kParallelThreshold
// elements (a smaller one is one group, the plain loop, on one thread at any
// thread count): at least kGroupElems elements each, at most kMaxGroups of
// them (the groups' partial sums take at most kMaxGroups * 2C doubles); for
// B == 1 a group is whole float blocks of kRowBlock rows.
constexpr index_t kGroupElems = index_t(1) << 14;
constexpr index_t kMaxGroups = 64;

// s1, s2 (C each) = the sums of fn over all A rows; fn(a0, a1, s1, s2, f1, f2)
// adds rows [a0, a1) into its arguments. The rows are cut into groups that
// depend on (A, C, B) only; each group is summed from 0 and the groups' sums
// are added in group order, so the result has the same bits at any thread
// count.
template <class Fn>
void reduce_rows(index_t A, index_t C, index_t B, double* s1, double* s2, Fn fn) {
  std::fill(s1, s1 + C, 0.0);
  std::fill(s2, s2 + C, 0.0);
  const index_t row = std::max<index_t>(C * B, 1);
  index_t rows_per_group = std::max((kGroupElems + row - 1) / row, (A + kMaxGroups - 1) / kMaxGroups);
  if (B == 1) rows_per_group = (rows_per_group + kRowBlock - 1) / kRowBlock * kRowBlock;
  const index_t groups = A * row < kParallelThreshold ? 1 : (A + rows_per_group - 1) / rows_per_group;
  if (groups <= 1) {
    std::vector<float> f(2 * C);
    fn(index_t(0), A, s1, s2, f.data(), f.data() + C);
    return;
  }
  std::vector<double> part(2 * C * groups, 0.0);
  parallel_chunks(groups, [&](index_t g0, index_t g1) {
    std::vector<float> f(2 * C);
    for (index_t g = g0; g < g1; ++g) {
      double* p = part.data() + 2 * C * g;
      fn(g * rows_per_group, std::min(A, (g + 1) * rows_per_group), p, p + C, f.data(), f.data() + C);
    }
  }, 0, 1);
  for (index_t g = 0; g < groups; ++g)
    for (index_t c = 0; c < C; ++c) s1[c] += part[2 * C * g + c], s2[c] += part[2 * C * g + C + c];
}

// fn(a0, a1) over contiguous row ranges, in parallel when the tensor is large
// (elementwise: the same bits at any split).
template <class Fn>
void for_row_blocks(index_t A, index_t row_len, Fn fn) {
  parallel_chunks_if(A * row_len >= kParallelThreshold, A, fn, 1);
}

// y = (x - m[c]) * s[c] + o[c] over rows [a0, a1).
DC_MULTIVERSION void affine_chunk(const float* x, const float* m, const float* s, const float* o, float* y,
                                  index_t a0, index_t a1, index_t C, index_t B) {
  if (B == 1) {
    for (index_t r = a0; r < a1; ++r) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
#pragma omp simd
      for (index_t j = 0; j < C; ++j) yr[j] = (xr[j] - m[j]) * s[j] + o[j];
    }
    return;
  }
  for (index_t r = a0; r < a1; ++r)
    for (index_t c = 0; c < C; ++c) {
      const float* xr = x + (r * C + c) * B;
      float* yr = y + (r * C + c) * B;
      const float mc = m[c], sc = s[c], oc = o[c];
#pragma omp simd
      for (index_t b = 0; b < B; ++b) yr[b] = (xr[b] - mc) * sc + oc;
    }
}

// dx = g[c] * (dy - md[c] - (x - m[c]) * q[c]) over rows [a0, a1).
DC_MULTIVERSION void dx_chunk(const float* x, const float* dy, const float* m, const float* g, const float* md,
                              const float* q, float* dx, index_t a0, index_t a1, index_t C, index_t B) {
  if (B == 1) {
    for (index_t r = a0; r < a1; ++r) {
      const float* xr = x + r * C;
      const float* gr = dy + r * C;
      float* dr = dx + r * C;
#pragma omp simd
      for (index_t j = 0; j < C; ++j) dr[j] = g[j] * (gr[j] - md[j] - (xr[j] - m[j]) * q[j]);
    }
    return;
  }
  for (index_t r = a0; r < a1; ++r)
    for (index_t c = 0; c < C; ++c) {
      const index_t off = (r * C + c) * B;
      const float *xr = x + off, *gr = dy + off;
      float* dr = dx + off;
      const float mc = m[c], gc = g[c], mdc = md[c], qc = q[c];
#pragma omp simd
      for (index_t b = 0; b < B; ++b) dr[b] = gc * (gr[b] - mdc - (xr[b] - mc) * qc);
    }
}

void affine(const float* x, const float* m, const float* s, const float* o, float* y, index_t A, index_t C,
            index_t B) {
  for_row_blocks(A, C * B, [&](index_t a0, index_t a1) { affine_chunk(x, m, s, o, y, a0, a1, C, B); });
}

}  // namespace

void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                             float* inv_std, float* moving_mean, float* moving_var, index_t A, index_t C, index_t B,
                             float eps, float momentum) {
  const index_t n = A * B;
  // Two passes over x. The first, shifted by each feature's first value,
  // gives the mean; the second sums squares around that mean, so the
  // variance never comes from a difference of large numbers (neither when
  // |mean| >> std nor when the first value is an outlier).
  std::vector<float> shift(C);
  for (index_t c = 0; c < C; ++c) shift[c] = x[c * B];
  std::vector<double> s1(C), s2(C);
  auto sums_around = [&](const float* k) {
    reduce_rows(A, C, B, s1.data(), s2.data(), [&](index_t a0, index_t a1, double* p1, double* p2, float* f1,
                                                   float* f2) {
      stat_sums_chunk(x, k, a0, a1, C, B, p1, p2, f1, f2);
    });
  };
  sums_around(shift.data());
  for (index_t c = 0; c < C; ++c) shift[c] = float(double(shift[c]) + s1[c] / double(n));
  sums_around(shift.data());
  std::vector<float> scale(C), offset(C);
  for (index_t c = 0; c < C; ++c) {
    const double d = s1[c] / double(n);                           // mean - shift (rounding residue)
    const double var = std::max(0.0, s2[c] / double(n) - d * d);  // biased
    const double mu = double(shift[c]) + d;
    const double is = 1.0 / std::sqrt(var + double(eps));
    mean[c] = float(mu);
    inv_std[c] = float(is);
    scale[c] = float((gamma ? double(gamma[c]) : 1.0) * is);
    offset[c] = beta ? beta[c] : 0.0f;
    moving_mean[c] = float(double(moving_mean[c]) * momentum + mu * (1.0 - double(momentum)));
    moving_var[c] = float(double(moving_var[c]) * momentum + var * (1.0 - double(momentum)));
  }
  affine(x, mean, scale.data(), offset.data(), y, A, C, B);
}

void batchnorm_forward_inference(const float* x, const float* gamma, const float* beta, const float* moving_mean,
                                 const float* moving_var, float* y, index_t A, index_t C, index_t B, float eps) {
  std::vector<float> scale(C), offset(C);
  for (index_t c = 0; c < C; ++c) {
    scale[c] = float((gamma ? double(gamma[c]) : 1.0) / std::sqrt(double(moving_var[c]) + double(eps)));
    offset[c] = beta ? beta[c] : 0.0f;
  }
  affine(x, moving_mean, scale.data(), offset.data(), y, A, C, B);
}

void batchnorm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* inv_std, float* dx, float* dgamma, float* dbeta, index_t A, index_t C,
                        index_t B) {
  const index_t n = A * B;
  // s1 = sum(dy), s2 = sum(dy * (x - mean)); sum(dy * xhat) = s2 * inv_std.
  std::vector<double> s1(C), s2(C);
  reduce_rows(A, C, B, s1.data(), s2.data(), [&](index_t a0, index_t a1, double* p1, double* p2, float* f1,
                                                 float* f2) {
    grad_sums_chunk(x, dy, mean, a0, a1, C, B, p1, p2, f1, f2);
  });
  for (index_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(s1[c]);
    if (dgamma) dgamma[c] = float(s2[c] * inv_std[c]);
  }
  if (!dx) return;
  // dx = gamma inv_std (dy - mean(dy) - xhat mean(dy xhat))
  //    = g (dy - md - (x - mean) q),  g = gamma inv_std, md = s1 / n, q = inv_std^2 s2 / n
  std::vector<float> g(C), md(C), q(C);
  for (index_t c = 0; c < C; ++c) {
    const double is = inv_std[c];
    g[c] = float((gamma ? double(gamma[c]) : 1.0) * is);
    md[c] = float(s1[c] / double(n));
    q[c] = float(is * is * s2[c] / double(n));
  }
  for_row_blocks(A, C * B, [&](index_t a0, index_t a1) {
    dx_chunk(x, dy, mean, g.data(), md.data(), q.data(), dx, a0, a1, C, B);
  });
}

void channel_affine(const float* x, const float* center, const float* scale, const float* offset, float* y,
                    index_t A, index_t C, index_t B) {
  std::vector<float> zeros;
  if (!center || !offset) zeros.assign(C, 0.0f);
  affine(x, center ? center : zeros.data(), scale, offset ? offset : zeros.data(), y, A, C, B);
}

}  // namespace deepcore
