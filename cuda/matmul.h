// Row-major GEMM on the GPU through cuBLASLt (loaded at run time, see
// cublaslt.h), with the bias / ReLU epilogues the Dense layer fuses.
//
// cuBLASLt is column-major; a row-major (r, c) matrix with leading dimension
// ld is the column-major (c, r) matrix with the same ld, its transpose. So
//   C = op(A) op(B)   (row-major, m x n)
// is computed as the column-major
//   C^T = op(B)^T op(A)^T   (n x m),
// i.e. cuBLASLt's "A" is our B (transposed iff trans_b), its "B" is our A
// (transposed iff trans_a), and nothing is copied. The epilogue's bias has one
// value per row of the column-major result: one per column of ours (length n).
//
// Steady state makes no allocation and no heuristic query: the descriptors,
// layouts and chosen algorithm are cached per (device, shape, leading
// dimensions, transposes, epilogue, precision, pointer alignments), and each
// (device, stream) has one 32 MiB workspace from the caching allocator, held
// for the life of the process. Everything is queued on current_stream().
#pragma once
#include "ops/common.h"

namespace deepcore {
namespace cuda {

// Applied to t = alpha op(A) op(B) + beta C, element (i, j) of the row-major result.
enum class Epilogue : int {
  None = 0,      // C = t
  Bias = 1,      // C = t + bias[j]
  Relu = 2,      // C = max(t, 0)
  ReluBias = 3,  // C = max(t + bias[j], 0)
};

// C = epilogue(alpha op(A) op(B) + beta C), row-major, all pointers on the
// device. m == 0 or n == 0 does nothing; k == 0 gives C = beta C (0 when beta
// is 0, whatever C held) and then the epilogue, as BLAS does. Throws
// std::runtime_error with lt::reason() when cuBLASLt is unavailable, and
// CudaError naming `caller` when cuBLASLt fails.
void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
          const float* b, index_t ldb, float beta, float* c, index_t ldc, Epilogue ep, const float* bias,
          const char* caller);

// TF32 (CUBLAS_COMPUTE_32F_FAST_TF32) instead of full fp32 for every later
// GEMM. Off by default: fp32 agrees with the CPU to ~1e-5 relative to the sum
// of |products|; TF32 rounds each input to a 10-bit mantissa (relative error
// up to 2^-11 per input), so results differ by up to ~1e-3 of that sum.
void set_tf32(bool on);
bool tf32();

// The k == 0 case of gemm() (cuBLASLt rejects an empty inner dimension):
// C = beta C (0 when beta is 0), + bias[j], then ReLU as the CPU computes it.
// Defined in dense.cu.
void gemm_empty_inner(float* c, index_t m, index_t n, index_t ldc, float beta, const float* bias, bool relu);

}  // namespace cuda
}  // namespace deepcore
