// Dense (fully connected) layer: y = act(x W + b), Keras layout W: (in, out).
#pragma once
#include "ops/activations.h"
#include "ops/common.h"

namespace deepcore {

// z = x W + b (b may be null), y = act(z). x: (batch, in), w: (in, out),
// z and y: (batch, out). y == z is allowed (then only y survives; fine for
// activations whose derivative is a function of y: linear, sigmoid, tanh, relu).
void dense_forward(const float* x, const float* w, const float* b, float* z, float* y, index_t batch, index_t in,
                   index_t out, ActParams act);

// Backward through act and the affine map.
//   dz = dy * act'(z)        (dz == dy when dy_is_dz: the loss already gave dL/dz)
//   dW = x^T dz, db = sum_rows dz, dx = dz W^T
// dx and db may be null (first layer: no dx; no bias: no db). dz_buf is a
// (batch, out) scratch buffer (may alias dy). accumulate: dW/db += instead of =.
void dense_backward(const float* x, const float* w, const float* z, const float* y, const float* dy, float* dz_buf,
                    float* dx, float* dw, float* db, index_t batch, index_t in, index_t out, ActParams act,
                    bool dy_is_dz, bool accumulate);

// C = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS.
void sgemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
           const float* b, index_t ldb, float beta, float* c, index_t ldc);

}  // namespace deepcore
