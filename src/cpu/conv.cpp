// CPU convolution, pooling and zero padding on NHWC tensors (ops/conv.h).
//
// Convolution is im2col + OpenBLAS sgemm + Dense's fused epilogue
// (dense_forward / dense_backward on the patch matrix), then col2im for dx.
// Why this and not a direct kernel, measured at the MNIST ladder's shapes
// (batch 100; 28x28x1 -> 6@5x5 s1, 12@5x5 s2, 24@4x4 s2, "same"; one thread,
// CPU time, a loaded 2-core VM, 2026-12-04): forward + backward took 4.1 +
// 4.8, 3.8 + 5.6 and 1.0 + 1.7 ms, PyTorch 2.13's (NCHW) 8.6, 11.0 and 5.4 ms.
// The GEMMs are most of it except in the first layer (cin = 1: im2col copies
// 25 single floats per output pixel, ~2.5 of its 4.1 ms forward), the one
// shape where a direct kernel could win; none is written yet. `deepcore bench
// --only conv` times these shapes against NumPy and PyTorch.
//
// Threads: im2col, pooling forward and padding write disjoint outputs per
// row (any split gives the same bits); col2im and the pooling backward add
// into pixels that several windows share, so each image is summed by one
// thread in a fixed order (again the same bits at any thread count).
#include "ops/conv.h"

#include <cstring>

#include "cpu/parallel.h"
#include "ops/dense.h"

namespace deepcore {

namespace {

inline void copy_run(float* dst, const float* src, index_t n) {
  if (n == 1) {
    *dst = *src;
  } else {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  }
}

// Rows (n, oh, ow) of the output, in [r0, r1), with their coordinates.
template <class Fn>
void for_output_rows(const Window2D& g, index_t r0, index_t r1, Fn fn) {
  index_t ow = r0 % g.ow, t = r0 / g.ow, oh = t % g.oh, n = t / g.oh;
  for (index_t r = r0; r < r1; ++r) {
    fn(r, n, oh, ow);
    if (++ow == g.ow) {
      ow = 0;
      if (++oh == g.oh) oh = 0, ++n;
    }
  }
}

// Splits [0, n) over threads when `work` floats reach the window threshold.
template <class Fn>
void window_chunks(index_t n, index_t work, Fn fn) {
  parallel_chunks_if(work >= kWindowParallelThreshold, n, fn, 1);
}

}  // namespace

namespace {

// The taps j in [j0, j1) of one kernel row that fall inside the image, for
// an output column whose window starts at iw0 (dilation dw).
struct TapRange {
  index_t j0, j1;
};
inline TapRange taps_inside(index_t iw0, index_t kw, index_t dw, index_t w) {
  index_t j0 = 0, j1 = kw;
  while (j0 < kw && iw0 + j0 * dw < 0) ++j0;
  while (j1 > j0 && iw0 + (j1 - 1) * dw >= w) --j1;
  return {j0, j1};
}

inline void zero_run(float* dst, index_t n) {
  for (index_t k = 0; k < n; ++k) dst[k] = 0.0f;
}

}  // namespace

void im2col(const Window2D& g, const float* x, float* col) {
  const index_t K = g.patch(), C = g.c, span = g.kw * C;
  window_chunks(g.rows(), g.rows() * K, [&](index_t r0, index_t r1) {
    for_output_rows(g, r0, r1, [&](index_t r, index_t n, index_t oh, index_t ow) {
      const float* img = x + n * g.h * g.w * C;
      float* dst = col + r * K;
      const index_t iw0 = ow * g.sw - g.pad_left;
      const TapRange t = taps_inside(iw0, g.kw, g.dw, g.w);
      for (index_t i = 0; i < g.kh; ++i, dst += span) {
        const index_t ih = oh * g.sh + i * g.dh - g.pad_top;
        if (ih < 0 || ih >= g.h) {
          zero_run(dst, span);
          continue;
        }
        const float* src = img + (ih * g.w + iw0) * C;
        zero_run(dst, t.j0 * C);
        if (g.dw == 1) {  // the taps inside the image are one contiguous run of x
          const index_t b = t.j0 * C, e = t.j1 * C;
          for (index_t k = b; k < e; ++k) dst[k] = src[k];
        } else {
          for (index_t j = t.j0; j < t.j1; ++j) copy_run(dst + j * C, src + j * g.dw * C, C);
        }
        zero_run(dst + t.j1 * C, span - t.j1 * C);
      }
    });
  });
}

void col2im(const Window2D& g, const float* dcol, float* dx) {
  const index_t K = g.patch(), C = g.c, image = g.h * g.w * C, per_image = g.oh * g.ow, span = g.kw * C;
  window_chunks(g.batch, g.rows() * K, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      float* img = dx + n * image;
      std::memset(img, 0, size_t(image) * sizeof(float));
      for (index_t oh = 0; oh < g.oh; ++oh) {
        for (index_t ow = 0; ow < g.ow; ++ow) {
          const float* src = dcol + (n * per_image + oh * g.ow + ow) * K;
          const index_t iw0 = ow * g.sw - g.pad_left;
          const TapRange t = taps_inside(iw0, g.kw, g.dw, g.w);
          for (index_t i = 0; i < g.kh; ++i, src += span) {
            const index_t ih = oh * g.sh + i * g.dh - g.pad_top;
            if (ih < 0 || ih >= g.h) continue;
            float* d = img + (ih * g.w + iw0) * C;
            if (g.dw == 1) {
              const index_t b = t.j0 * C, e = t.j1 * C;
#pragma omp simd
              for (index_t k = b; k < e; ++k) d[k] += src[k];
            } else {
              for (index_t j = t.j0; j < t.j1; ++j) {
                float* dj = d + j * g.dw * C;
                const float* sj = src + j * C;
#pragma omp simd
                for (index_t c = 0; c < C; ++c) dj[c] += sj[c];
              }
            }
          }
        }
      }
    }
  });
}

void conv2d_forward(const Window2D& g, const float* x, const float* w, const float* b, float* col, float* z,
                    float* y, index_t cout, ActParams act) {
  im2col(g, x, col);
  dense_forward(col, w, b, z, y, g.rows(), g.patch(), cout, act);
}

void conv2d_backward(const Window2D& g, const float* col, const float* w, const float* z, const float* y,
                     const float* dy, float* dz_buf, float* dcol, float* dx, float* dw, float* db, index_t cout,
                     ActParams act, bool dy_is_dz, bool accumulate) {
  dense_backward(col, w, z, y, dy, dz_buf, dx ? dcol : nullptr, dw, db, g.rows(), g.patch(), cout, act, dy_is_dz,
                 accumulate);
  if (dx) col2im(g, dcol, dx);
}

// ------------------------------------------------------------------ pooling


void pool2d_forward(const Window2D& g, Pool mode, const float* x, float* y, int32_t* argmax) {
  const index_t C = g.c;
  window_chunks(g.rows(), g.rows() * g.kh * g.kw * C, [&](index_t r0, index_t r1) {
    for_output_rows(g, r0, r1, [&](index_t r, index_t n, index_t oh, index_t ow) {
      const float* img = x + n * g.h * g.w * C;
      float* out = y + r * C;
      const WindowRange wr = window_range(g, oh, ow);
      if (mode == Pool::Max) {
        int32_t* arg = argmax + r * C;
        bool first = true;
        for (index_t i = wr.i0; i < wr.i1; ++i) {
          for (index_t j = wr.j0; j < wr.j1; ++j) {
            const index_t pix = (wr.ih0 + i) * g.w + wr.iw0 + j;
            const float* v = img + pix * C;
            if (first) {
              for (index_t c = 0; c < C; ++c) out[c] = v[c], arg[c] = int32_t(pix);
              first = false;
              continue;
            }
            for (index_t c = 0; c < C; ++c) {
              const bool take = pool_takes(v[c], out[c]);
              out[c] = take ? v[c] : out[c];
              arg[c] = take ? int32_t(pix) : arg[c];
            }
          }
        }
      } else {
        std::memset(out, 0, size_t(C) * sizeof(float));
        for (index_t i = wr.i0; i < wr.i1; ++i) {
          for (index_t j = wr.j0; j < wr.j1; ++j) {
            const float* v = img + ((wr.ih0 + i) * g.w + wr.iw0 + j) * C;
#pragma omp simd
            for (index_t c = 0; c < C; ++c) out[c] += v[c];
          }
        }
        const float inv = 1.0f / float(wr.count());
#pragma omp simd
        for (index_t c = 0; c < C; ++c) out[c] *= inv;
      }
    });
  });
}

void pool2d_backward(const Window2D& g, Pool mode, const float* dy, const int32_t* argmax, float* dx) {
  const index_t C = g.c, image = g.h * g.w * C, per_image = g.oh * g.ow;
  window_chunks(g.batch, g.rows() * g.kh * g.kw * C, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      float* img = dx + n * image;
      std::memset(img, 0, size_t(image) * sizeof(float));
      for (index_t oh = 0; oh < g.oh; ++oh) {
        for (index_t ow = 0; ow < g.ow; ++ow) {
          const index_t r = n * per_image + oh * g.ow + ow;
          const float* d = dy + r * C;
          if (mode == Pool::Max) {
            const int32_t* arg = argmax + r * C;
            for (index_t c = 0; c < C; ++c) img[index_t(arg[c]) * C + c] += d[c];
            continue;
          }
          const WindowRange wr = window_range(g, oh, ow);
          const float inv = 1.0f / float(wr.count());
          for (index_t i = wr.i0; i < wr.i1; ++i) {
            for (index_t j = wr.j0; j < wr.j1; ++j) {
              float* p = img + ((wr.ih0 + i) * g.w + wr.iw0 + j) * C;
#pragma omp simd
              for (index_t c = 0; c < C; ++c) p[c] += d[c] * inv;
            }
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------- zero padding

void pad2d(const float* x, float* y, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
           index_t left, index_t right) {
  const index_t H = h + top + bottom, W = w + left + right, row = W * c;
  window_chunks(batch * H, batch * H * row, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t n = r / H, ih = r % H - top;
      float* dst = y + r * row;
      if (ih < 0 || ih >= h) {
        std::memset(dst, 0, size_t(row) * sizeof(float));
        continue;
      }
      std::memset(dst, 0, size_t(left * c) * sizeof(float));
      std::memcpy(dst + left * c, x + (n * h + ih) * w * c, size_t(w * c) * sizeof(float));
      std::memset(dst + (left + w) * c, 0, size_t(right * c) * sizeof(float));
    }
  });
}

void crop2d(const float* dy, float* dx, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
            index_t left, index_t right) {
  const index_t H = h + top + bottom, W = w + left + right;
  window_chunks(batch * h, batch * h * w * c, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t n = r / h, ih = r % h;
      std::memcpy(dx + r * w * c, dy + ((n * H + ih + top) * W + left) * c, size_t(w * c) * sizeof(float));
    }
  });
}

}  // namespace deepcore
