// CUDA dense layer: the twin of src/cpu/dense.cpp. The GEMMs go to cuBLASLt
// (matmul.h), with the bias, and ReLU when the output overwrites z, fused in
// its epilogue; the other activations are our kernels (cuda/activations.cu,
// the CPU's scalar code), and the bias gradient is our deterministic reduction.
//
//   forward:  z = x W + b            cuBLASLt, epilogue BIAS (RELU_BIAS if relu and y == z)
//             y = act(z)             activation_forward (skipped when fused or linear in place)
//   backward: dz = dy * act'(z)      activation_backward (skipped when dy_is_dz or linear)
//             db (+)= sum_rows dz    bias_grad: fixed-order sums in double
//             dW (+)= x^T dz         cuBLASLt (beta = 1 to accumulate)
//             dx = dz W^T            cuBLASLt
//
// cuBLASLt's ReLU epilogue is max(t, 0): for a NaN t it may give 0 where the
// CPU (and activation_forward) keep NaN. It is used only when y == z, the
// Dense layer's in-place ReLU; NaN weights still show in count_nonfinite.
// cuBLASLt's GELU epilogue is the tanh form with its own tanh, not our
// GeluErf / GeluTanh, so GELU runs as our kernel.
#include <algorithm>

#include "allocator.h"
#include "kernels.h"
#include "launch.cuh"
#include "matmul.h"
#include "ops/activations.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// C = beta C (0 when beta is 0), + bias[j], then ReLU: a GEMM with k == 0.
// Products and sums rounded separately (no FMA), as BLAS and the CPU epilogue do.
__global__ void gemm_empty_inner_kernel(float* c, index_t m, index_t n, index_t ldc, float beta, const float* bias,
                                        bool relu) {
  for (index_t i = grid_index(); i < m * n; i += grid_stride()) {
    const index_t r = i / n, j = i % n;
    float* p = c + r * ldc + j;
    float v = beta == 0.0f ? 0.0f : __fmul_rn(beta, *p);
    if (bias) v = __fadd_rn(v, bias[j]);
    if (relu) v = act_forward_scalar(Act::Relu, v, 0.0f, 1.0f);
    *p = v;
  }
}

// Bias gradient, pass 1. Block (32, 8) over 32 columns and one slice of
// rows_per_slice rows: thread (tx, ty) adds rows ty, ty + 8, ... of the slice
// for column 32 blockIdx.x + tx in double (reads coalesced along the row),
// then row ty = 0 adds the 8 partials in ty order. partial[slice, col].
constexpr int kBiasRows = 8;
__global__ void bias_grad_partial_kernel(const float* dz, double* partial, index_t batch, index_t out,
                                         index_t rows_per_slice) {
  __shared__ double part[kBiasRows][33];
  const index_t col = index_t(blockIdx.x) * 32 + threadIdx.x;
  const index_t slice = blockIdx.y;
  const index_t r0 = slice * rows_per_slice, r1 = r0 + rows_per_slice < batch ? r0 + rows_per_slice : batch;
  double acc = 0.0;
  if (col < out)
    for (index_t r = r0 + threadIdx.y; r < r1; r += kBiasRows) acc += dz[r * out + col];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < out) {
    double t = 0.0;
    for (int i = 0; i < kBiasRows; ++i) t += part[i][threadIdx.x];
    partial[slice * out + col] = t;
  }
}

// Pass 2, one thread per column: the slices in order, then as the CPU:
// db = (accumulate ? db : 0) + float(sum).
__global__ void bias_grad_finish_kernel(const double* partial, float* db, index_t slices, index_t out,
                                        bool accumulate) {
  for (index_t col = grid_index(); col < out; col += grid_stride()) {
    double t = 0.0;
    for (index_t s = 0; s < slices; ++s) t += partial[s * out + col];
    db[col] = (accumulate ? db[col] : 0.0f) + float(t);
  }
}

// db (+)= column sums of dz (batch, out), in double, in an order fixed by the
// shape alone (deterministic); the CPU sums in double row by row, so the two
// agree to the float rounding of the double total.
void bias_grad(const float* dz, float* db, index_t batch, index_t out, bool accumulate) {
  if (out == 0) return;
  // Slices of >= 256 rows (a multiple of 8), at most 65535 of them (the grid's y limit).
  index_t rows_per_slice = std::max<index_t>(256, (batch + 65534) / 65535);
  rows_per_slice = (rows_per_slice + kBiasRows - 1) / kBiasRows * kBiasRows;
  const index_t slices = (batch + rows_per_slice - 1) / rows_per_slice;
  Scratch scratch(size_t(slices) * size_t(out) * sizeof(double));
  auto* partial = static_cast<double*>(scratch.p);
  if (slices > 0) {
    const dim3 grid(unsigned((out + 31) / 32), unsigned(slices)), block(32, kBiasRows);
    bias_grad_partial_kernel<<<grid, block, 0, current_stream()>>>(dz, partial, batch, out, rows_per_slice);
    check_launch("bias_grad_partial_kernel");
  }
  bias_grad_finish_kernel<<<blocks_for(out), kThreads, 0, current_stream()>>>(partial, db, slices, out, accumulate);
  check_launch("bias_grad_finish_kernel");
}

}  // namespace

void gemm_empty_inner(float* c, index_t m, index_t n, index_t ldc, float beta, const float* bias, bool relu) {
  if (m == 0 || n == 0) return;
  gemm_empty_inner_kernel<<<blocks_for(m * n), kThreads, 0, current_stream()>>>(c, m, n, ldc, beta, bias, relu);
  check_launch("gemm_empty_inner_kernel");
}

void sgemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
           const float* b, index_t ldb, float beta, float* c, index_t ldc) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, Epilogue::None, nullptr, "sgemm");
}

void dense_forward(const float* x, const float* w, const float* b, float* z, float* y, index_t batch, index_t in,
                   index_t out, ActParams act) {
  // ReLU joins the epilogue only in place: otherwise z must keep the pre-activation.
  const bool fuse_relu = act.kind == Act::Relu && y == z;
  const Epilogue ep = fuse_relu ? (b ? Epilogue::ReluBias : Epilogue::Relu) : (b ? Epilogue::Bias : Epilogue::None);
  gemm(false, false, batch, out, in, 1.0f, x, in, w, out, 0.0f, z, out, ep, b, "dense_forward");
  if (fuse_relu) return;
  if (act.kind != Act::Linear || y != z) cuda::activation_forward(act, z, y, batch, out);
}

void dense_backward(const float* x, const float* w, const float* z, const float* y, const float* dy, float* dz_buf,
                    float* dx, float* dw, float* db, index_t batch, index_t in, index_t out, ActParams act,
                    bool dy_is_dz, bool accumulate) {
  const float* dz = dy;
  if (!dy_is_dz && act.kind != Act::Linear) {
    cuda::activation_backward(act, z, y, dy, dz_buf, batch, out);
    dz = dz_buf;
  }
  if (db) bias_grad(dz, db, batch, out, accumulate);
  // dW = x^T dz : (in, batch) (batch, out)
  gemm(true, false, in, out, batch, 1.0f, x, in, dz, out, accumulate ? 1.0f : 0.0f, dw, out, Epilogue::None, nullptr,
       "dense_backward (dW = x^T dz)");
  // dx = dz W^T : (batch, out) (out, in)
  if (dx)
    gemm(false, true, batch, in, out, 1.0f, dz, out, w, out, 0.0f, dx, in, Epilogue::None, nullptr,
         "dense_backward (dx = dz W^T)");
}

}  // namespace cuda
}  // namespace deepcore
