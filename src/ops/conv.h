// 2-D convolution, pooling and zero padding on NHWC tensors (Keras's
// channels_last). One declaration for both backends.
//
// Convolution as a GEMM (im2col): each output pixel (n, oh, ow) reads one
// patch of the input, kh x kw pixels of cin channels. Laid out as a row of
//   col[(n, oh, ow), (i, j, c)] = x[n, oh*sh + i*dh - pad_top, ow*sw + j*dw - pad_left, c]
// (0 outside the image), the patch rows times the kernel in Keras's HWIO
// layout, flattened to (kh*kw*cin, cout), give the output directly in NHWC:
//   z = col W + b,  y = act(z)                    (rows = n*oh*ow, K = kh*kw*cin)
// which is Dense on the patches. Backward is Dense's backward on the patches
// followed by col2im, which adds each patch gradient back into its pixels:
//   dz = dy * act'(z),  db = sum_rows dz,  dW = col^T dz,  dcol = dz W^T,
//   dx[n, ih, iw, c] = sum over the (row, i, j) that read (ih, iw) of dcol[row, (i, j, c)]
// In NHWC the cin channels of one patch pixel are contiguous in both x and
// col, so im2col and col2im move runs of cin floats.
#pragma once
#include "ops/activations.h"
#include "ops/common.h"

namespace deepcore {

// Output extent and leading padding of one spatial axis, as Keras (and
// TensorFlow) compute them:
//   valid: out = floor((in - dilated) / stride) + 1, no padding
//   same:  out = ceil(in / stride), pad_total = max((out - 1) * stride + dilated - in, 0),
//          pad_before = pad_total / 2 (the extra one, if odd, goes after)
// with dilated = (k - 1) * dilation + 1. out <= 0 means the window does not
// fit ("valid" with a kernel larger than the input).
struct AxisGeometry {
  index_t out, pad_before;
};
DC_HD AxisGeometry window_axis(index_t in, index_t k, index_t stride, index_t dilation, bool same) {
  const index_t dilated = (k - 1) * dilation + 1;
  if (!same) return {in >= dilated ? (in - dilated) / stride + 1 : 0, 0};
  const index_t out = (in + stride - 1) / stride;
  index_t pad = (out - 1) * stride + dilated - in;
  if (pad < 0) pad = 0;
  return {out, pad / 2};
}

// Everything a 2-D window op needs about its shapes: input (batch, h, w, c),
// window kh x kw with strides and dilations, output (batch, oh, ow, ...).
struct Window2D {
  index_t batch, h, w, c;
  index_t kh, kw, sh, sw, dh, dw;
  index_t oh, ow, pad_top, pad_left;
  DC_HD index_t rows() const { return batch * oh * ow; }
  DC_HD index_t patch() const { return kh * kw * c; }
};

// The in-image part [i0, i1) x [j0, j1) of output pixel (oh, ow)'s window
// (dilation 1: pooling), which starts at input pixel (ih0, iw0). Pooling
// counts only these pixels ("same" padding is not part of any window).
struct WindowRange {
  index_t ih0, iw0, i0, i1, j0, j1;
  DC_HD index_t count() const { return (i1 - i0) * (j1 - j0); }
};
DC_HD WindowRange window_range(const Window2D& g, index_t oh, index_t ow) {
  WindowRange r;
  r.ih0 = oh * g.sh - g.pad_top;
  r.iw0 = ow * g.sw - g.pad_left;
  r.i0 = r.ih0 < 0 ? -r.ih0 : 0;
  r.i1 = g.h - r.ih0 < g.kh ? g.h - r.ih0 : g.kh;
  r.j0 = r.iw0 < 0 ? -r.iw0 : 0;
  r.j1 = g.w - r.iw0 < g.kw ? g.w - r.iw0 : g.kw;
  return r;
}

// Max pooling's update of the running maximum m (and its pixel) by v: strictly
// greater wins, so the first maximum wins ties; a NaN, once taken, stays
// (nothing compares greater than it), so NaN propagates as in PyTorch.
DC_HD bool pool_takes(float v, float m) { return v > m || (v != v && m == m); }

inline Window2D make_window2d(index_t batch, index_t h, index_t w, index_t c, index_t kh, index_t kw, index_t sh,
                              index_t sw, index_t dh, index_t dw, bool same) {
  const AxisGeometry gy = window_axis(h, kh, sh, dh, same), gx = window_axis(w, kw, sw, dw, same);
  return Window2D{batch, h, w, c, kh, kw, sh, sw, dh, dw, gy.out, gx.out, gy.pad_before, gx.pad_before};
}

// col (rows, K) from x (batch, h, w, c); zeros where the patch leaves the image.
void im2col(const Window2D& g, const float* x, float* col);
// dx (batch, h, w, c) = the patch gradients dcol (rows, K) added back into
// their pixels (dx is overwritten). Each image is summed by one thread in a
// fixed order: the same bits at any thread count.
void col2im(const Window2D& g, const float* dcol, float* dx);

// z = im2col(x) W + b, y = act(z). w: (kh*kw*cin, cout), b: (cout) or null;
// col: (rows, K) scratch the forward fills and backward reads; z, y:
// (rows, cout), y == z allowed as in dense_forward.
void conv2d_forward(const Window2D& g, const float* x, const float* w, const float* b, float* col, float* z,
                    float* y, index_t cout, ActParams act);
// Backward from the forward's col, z and y. dz_buf: (rows, cout) scratch;
// dcol: (rows, K) scratch, needed only with dx; dx and db may be null.
// accumulate: dW/db += instead of =.
void conv2d_backward(const Window2D& g, const float* col, const float* w, const float* z, const float* y,
                     const float* dy, float* dz_buf, float* dcol, float* dx, float* dw, float* db, index_t cout,
                     ActParams act, bool dy_is_dz, bool accumulate);

// Pooling over kh x kw windows of each channel (dilation 1).
//   max: y = max over the window's pixels inside the image; argmax (batch, oh,
//        ow, c) keeps the winning pixel's index ih * w + iw (the first one on
//        ties) for backward: dx[argmax] += dy.
//   avg: y = mean over the window's pixels inside the image ("same" padding
//        is not counted, as in TensorFlow); backward spreads dy / count.
enum class Pool : int { Max = 0, Avg = 1 };
void pool2d_forward(const Window2D& g, Pool mode, const float* x, float* y, int32_t* argmax);
// dx is overwritten; argmax is read for Pool::Max only.
void pool2d_backward(const Window2D& g, Pool mode, const float* dy, const int32_t* argmax, float* dx);

// y (batch, h + top + bottom, w + left + right, c) = x with zero borders;
// crop2d is its backward: dx = dy[:, top:top + h, left:left + w, :].
void pad2d(const float* x, float* y, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
           index_t left, index_t right);
void crop2d(const float* dy, float* dx, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
            index_t left, index_t right);

}  // namespace deepcore
