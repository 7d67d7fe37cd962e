// CPU dense layer: the GEMMs go to OpenBLAS; our code is the fused epilogue
// (bias + activation in one pass over the cache-hot output) and the fused
// activation backward + bias gradient.
#include "ops/dense.h"
#include <cblas.h>
#include <algorithm>
#include <cstring>
#include <vector>
#include "cpu/parallel.h"

namespace deepcore {

void sgemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
           const float* b, index_t ldb, float beta, float* c, index_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
                    (blasint)ldc);
}

namespace {

// db (+)= column sums of dz, accumulated in double for a batch-size-independent error.
void bias_grad(const float* dz, float* db, index_t batch, index_t out, bool accumulate) {
  std::vector<double> acc(out, 0.0);
  for (index_t r = 0; r < batch; ++r) {
    const float* g = dz + r * out;
#pragma omp simd
    for (index_t j = 0; j < out; ++j) acc[j] += g[j];
  }
  for (index_t j = 0; j < out; ++j) db[j] = (accumulate ? db[j] : 0.0f) + float(acc[j]);
}

}  // namespace

void dense_forward(const float* x, const float* w, const float* b, float* z, float* y, index_t batch, index_t in,
                   index_t out, ActParams act) {
  sgemm(false, false, batch, out, in, 1.0f, x, in, w, out, 0.0f, z, out);
  // Epilogue, one pass over the cache-hot output: z += b, y = act(z).
  if (b) {
    bias_activation_forward(act, z, y, b, batch, out);
  } else if (act.kind != Act::Linear || y != z) {
    activation_forward(act, z, y, batch, out);
  }
}

void dense_backward(const float* x, const float* w, const float* z, const float* y, const float* dy, float* dz_buf,
                    float* dx, float* dw, float* db, index_t batch, index_t in, index_t out, ActParams act,
                    bool dy_is_dz, bool accumulate) {
  const float* dz = dy;
  if (!dy_is_dz && act.kind != Act::Linear) {
    activation_backward(act, z, y, dy, dz_buf, batch, out);
    dz = dz_buf;
  }
  if (db) bias_grad(dz, db, batch, out, accumulate);
  // dW = x^T dz : (in, batch) (batch, out)
  sgemm(true, false, in, out, batch, 1.0f, x, in, dz, out, accumulate ? 1.0f : 0.0f, dw, out);
  // dx = dz W^T : (batch, out) (out, in)
  if (dx) sgemm(false, true, batch, in, out, 1.0f, dz, out, w, out, 0.0f, dx, in);
}

}  // namespace deepcore
