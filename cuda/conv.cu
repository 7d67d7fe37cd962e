// CUDA convolution, pooling and zero padding on NHWC tensors: the twins of
// src/cpu/conv.cpp (ops/conv.h has the layout and the math).
//
//   conv2d_forward:  im2col_kernel, then dense_forward on the patch matrix (cuBLASLt + epilogue)
//   conv2d_backward: dense_backward on the patch matrix, then col2im_kernel for dx
//
// The CPU adds into shared pixels (col2im, pooling backward) image by image;
// here one thread owns each input pixel and gathers the same terms in the same
// order (output rows ascending), so for the same dcol / dy the result has the
// CPU's bits. Products and sums are rounded separately (__fmul_rn,
// __fadd_rn), as the CPU's, never contracted into an FMA. dcol itself comes
// from cuBLASLt and differs from OpenBLAS's within the GEMM bound.
#include "kernels.h"
#include "launch.cuh"
#include "ops/conv.h"

namespace deepcore {
namespace cuda {
namespace {

// One thread per patch element col[r, (i, j, c)].
__global__ void im2col_kernel(Window2D g, const float* x, float* col) {
  const index_t K = g.patch(), total = g.rows() * K;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t r = e / K, k = e % K;
    const index_t c = k % g.c, j = (k / g.c) % g.kw, i = k / (g.c * g.kw);
    const index_t ow = r % g.ow, oh = (r / g.ow) % g.oh, n = r / (g.ow * g.oh);
    const index_t ih = oh * g.sh + i * g.dh - g.pad_top, iw = ow * g.sw + j * g.dw - g.pad_left;
    col[e] = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? x[((n * g.h + ih) * g.w + iw) * g.c + c] : 0.0f;
  }
}

// The output positions o in [lo, hi] of one axis whose window (start o * s -
// pad, taps t * d for t < k) may reach input position p.
struct Reach {
  index_t lo, hi;
};
__device__ __forceinline__ Reach reach(index_t p, index_t k, index_t s, index_t d, index_t pad, index_t out) {
  const index_t last = p + pad, first = p + pad - (k - 1) * d;  // o * s within [first, last]
  index_t lo = first <= 0 ? 0 : (first + s - 1) / s;
  index_t hi = last / s;
  if (hi > out - 1) hi = out - 1;
  return {lo, hi};
}

// One thread per pixel dx[n, ih, iw, c]: the patch gradients that read it,
// output rows ascending (the CPU's order).
__global__ void col2im_kernel(Window2D g, const float* dcol, float* dx) {
  const index_t K = g.patch(), total = g.batch * g.h * g.w * g.c;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t c = e % g.c, iw = (e / g.c) % g.w, ih = (e / (g.c * g.w)) % g.h, n = e / (g.c * g.w * g.h);
    const Reach ry = reach(ih, g.kh, g.sh, g.dh, g.pad_top, g.oh), rx = reach(iw, g.kw, g.sw, g.dw, g.pad_left, g.ow);
    float acc = 0.0f;
    for (index_t oh = ry.lo; oh <= ry.hi; ++oh) {
      const index_t ti = ih + g.pad_top - oh * g.sh;
      if (ti % g.dh) continue;
      for (index_t ow = rx.lo; ow <= rx.hi; ++ow) {
        const index_t tj = iw + g.pad_left - ow * g.sw;
        if (tj % g.dw) continue;
        const index_t r = (n * g.oh + oh) * g.ow + ow;
        acc = __fadd_rn(acc, dcol[r * K + ((ti / g.dh) * g.kw + tj / g.dw) * g.c + c]);
      }
    }
    dx[e] = acc;
  }
}

// One thread per output element y[r, c]: the CPU's loop over the window.
__global__ void pool2d_forward_kernel(Window2D g, bool is_max, const float* x, float* y, int32_t* argmax) {
  const index_t total = g.rows() * g.c;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t c = e % g.c, r = e / g.c;
    const index_t ow = r % g.ow, oh = (r / g.ow) % g.oh, n = r / (g.ow * g.oh);
    const float* img = x + n * g.h * g.w * g.c;
    const WindowRange wr = window_range(g, oh, ow);
    if (is_max) {
      float m = 0.0f;
      int32_t arg = 0;
      bool first = true;
      for (index_t i = wr.i0; i < wr.i1; ++i) {
        for (index_t j = wr.j0; j < wr.j1; ++j) {
          const index_t pix = (wr.ih0 + i) * g.w + wr.iw0 + j;
          const float v = img[pix * g.c + c];
          if (first || pool_takes(v, m)) m = v, arg = int32_t(pix);
          first = false;
        }
      }
      y[e] = m;
      argmax[e] = arg;
    } else {
      float s = 0.0f;
      for (index_t i = wr.i0; i < wr.i1; ++i)
        for (index_t j = wr.j0; j < wr.j1; ++j) s = __fadd_rn(s, img[((wr.ih0 + i) * g.w + wr.iw0 + j) * g.c + c]);
      y[e] = __fmul_rn(s, 1.0f / float(wr.count()));
    }
  }
}

// One thread per pixel dx[n, ih, iw, c]: the windows that contain it, output
// rows ascending (the CPU's order).
__global__ void pool2d_backward_kernel(Window2D g, bool is_max, const float* dy, const int32_t* argmax, float* dx) {
  const index_t total = g.batch * g.h * g.w * g.c;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t c = e % g.c, iw = (e / g.c) % g.w, ih = (e / (g.c * g.w)) % g.h, n = e / (g.c * g.w * g.h);
    const Reach ry = reach(ih, g.kh, g.sh, 1, g.pad_top, g.oh), rx = reach(iw, g.kw, g.sw, 1, g.pad_left, g.ow);
    const int32_t pix = int32_t(ih * g.w + iw);
    float acc = 0.0f;
    for (index_t oh = ry.lo; oh <= ry.hi; ++oh) {
      for (index_t ow = rx.lo; ow <= rx.hi; ++ow) {
        const index_t o = ((n * g.oh + oh) * g.ow + ow) * g.c + c;
        if (is_max) {
          if (argmax[o] == pix) acc = __fadd_rn(acc, dy[o]);
        } else {
          acc = __fadd_rn(acc, __fmul_rn(dy[o], 1.0f / float(window_range(g, oh, ow).count())));
        }
      }
    }
    dx[e] = acc;
  }
}

// y (batch, H, W, c) from x (batch, h, w, c) at offset (top, left), zeros around.
__global__ void pad2d_kernel(const float* x, float* y, index_t batch, index_t h, index_t w, index_t c, index_t top,
                             index_t left, index_t H, index_t W) {
  const index_t total = batch * H * W * c;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t k = e % c, iw = (e / c) % W - left, ih = (e / (c * W)) % H - top, n = e / (c * W * H);
    y[e] = (ih >= 0 && ih < h && iw >= 0 && iw < w) ? x[((n * h + ih) * w + iw) * c + k] : 0.0f;
  }
}

__global__ void crop2d_kernel(const float* dy, float* dx, index_t batch, index_t h, index_t w, index_t c, index_t top,
                              index_t left, index_t H, index_t W) {
  const index_t total = batch * h * w * c;
  for (index_t e = grid_index(); e < total; e += grid_stride()) {
    const index_t k = e % c, iw = (e / c) % w, ih = (e / (c * w)) % h, n = e / (c * w * h);
    dx[e] = dy[((n * H + ih + top) * W + iw + left) * c + k];
  }
}

}  // namespace

void conv2d_forward(const Window2D& g, const float* x, const float* w, const float* b, float* col, float* z,
                    float* y, index_t cout, ActParams act) {
  const index_t n = g.rows() * g.patch();
  if (n == 0) return;
  im2col_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(g, x, col);
  check_launch("im2col_kernel");
  dense_forward(col, w, b, z, y, g.rows(), g.patch(), cout, act);
}

void conv2d_backward(const Window2D& g, const float* col, const float* w, const float* z, const float* y,
                     const float* dy, float* dz_buf, float* dcol, float* dx, float* dw, float* db, index_t cout,
                     ActParams act, bool dy_is_dz, bool accumulate) {
  if (g.rows() == 0) return;
  dense_backward(col, w, z, y, dy, dz_buf, dx ? dcol : nullptr, dw, db, g.rows(), g.patch(), cout, act, dy_is_dz,
                 accumulate);
  if (!dx) return;
  const index_t n = g.batch * g.h * g.w * g.c;
  col2im_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(g, dcol, dx);
  check_launch("col2im_kernel");
}

void pool2d_forward(const Window2D& g, Pool mode, const float* x, float* y, int32_t* argmax) {
  const index_t n = g.rows() * g.c;
  if (n == 0) return;
  pool2d_forward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(g, mode == Pool::Max, x, y, argmax);
  check_launch("pool2d_forward_kernel");
}

void pool2d_backward(const Window2D& g, Pool mode, const float* dy, const int32_t* argmax, float* dx) {
  const index_t n = g.batch * g.h * g.w * g.c;
  if (n == 0) return;
  pool2d_backward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(g, mode == Pool::Max, dy, argmax, dx);
  check_launch("pool2d_backward_kernel");
}

void pad2d(const float* x, float* y, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
           index_t left, index_t right) {
  const index_t H = h + top + bottom, W = w + left + right, n = batch * H * W * c;
  if (n == 0) return;
  pad2d_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, batch, h, w, c, top, left, H, W);
  check_launch("pad2d_kernel");
}

void crop2d(const float* dy, float* dx, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
            index_t left, index_t right) {
  const index_t H = h + top + bottom, W = w + left + right, n = batch * h * w * c;
  if (n == 0) return;
  crop2d_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(dy, dx, batch, h, w, c, top, left, H, W);
  check_launch("crop2d_kernel");
}

}  // namespace cuda
}  // namespace deepcore
