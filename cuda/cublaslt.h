// cuBLASLt, opened at run time. The toolkits deepcore builds with need not
// ship cuBLAS, and `import deepcore` must not need it: the library is
// dlopen()ed on first use and the few functions the GPU Dense layer calls are
// looked up with dlsym(). This header declares them (and the types, enum values
// and structs they take) as the cuBLASLt API defines them, inside
// deepcore::cuda::lt so that they never clash with the real cublasLt.h.
// cudaDataType_t (CUDA_R_32F) and cudaStream_t come from the CUDA runtime
// headers every build of deepcore._cuda has.
//
// The values below were written from cuBLAS 13.10's cublasLt.h and are checked
// against a real header at compile time by cuda/cublaslt_header_check.cpp
// (cmake -DDEEPCORE_CUBLASLT_HEADER_CHECK=<dir with cublasLt.h>): every
// constant, the struct layouts, and every function's signature.
//
// Which library is opened, in this order (the first that loads and passes the
// version check wins):
//   1. $DEEPCORE_CUBLASLT_PATH: a libcublasLt file, or a directory holding one;
//   2. the nvidia-cublas wheel next to the Python packages (the caller passes
//      the candidate files it found: nvidia/cu13/lib/libcublasLt.so.13 for
//      CUDA 13, nvidia/cublas/lib/libcublasLt.so.12 for the -cu12 wheel);
//   3. the plain sonames libcublasLt.so.13, libcublasLt.so.12, libcublasLt.so
//      (LD_LIBRARY_PATH, the ld.so cache);
//   4. $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
// Version: cuBLASLt's major version must equal the CUDA runtime's this module
// was built with (13): NVIDIA supports a cuBLAS only with the CUDA major it was
// built for. A cuBLASLt 12 is skipped with that reason, unless
// DEEPCORE_CUBLASLT_ALLOW_MISMATCH=1 (unsupported; for a machine that has no
// cuBLAS 13: cuBLASLt links its own runtime statically and shares streams and
// memory with ours through the driver, which usually works).
#pragma once
#include <cuda_runtime.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace deepcore {
namespace cuda {
namespace lt {

// ------------------------------------------------------------ cublas_api.h
typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
  CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;

typedef enum {
  CUBLAS_COMPUTE_32F = 68,            // float: fp32 multiplies and accumulation
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77,  // float; inputs rounded to TF32 (10-bit mantissa) for tensor cores
} cublasComputeType_t;

// -------------------------------------------------------------- cublasLt.h
struct cublasLtContext;  // declared here first, so that it never names a global one
typedef cublasLtContext* cublasLtHandle_t;

// The descriptors are created and destroyed by the library (never by value
// here), so their opaque structs stay incomplete.
struct cublasLtMatmulDescOpaque_t;
struct cublasLtMatrixLayoutOpaque_t;
struct cublasLtMatmulPreferenceOpaque_t;
typedef cublasLtMatmulDescOpaque_t* cublasLtMatmulDesc_t;
typedef cublasLtMatrixLayoutOpaque_t* cublasLtMatrixLayout_t;
typedef cublasLtMatmulPreferenceOpaque_t* cublasLtMatmulPreference_t;

// Semi-opaque algorithm descriptor, returned by value in the heuristic result.
typedef struct {
  uint64_t data[8];
} cublasLtMatmulAlgo_t;

typedef struct {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;   // workspace this algorithm needs
  cublasStatus_t state;   // the other fields are valid only when this is SUCCESS
  float wavesCount;
  int reserved[4];
} cublasLtMatmulHeuristicResult_t;

typedef enum {
  CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,  // int32_t
  CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,    // int32_t
  CUBLASLT_MATMUL_DESC_TRANSA = 3,        // int32_t (cublasOperation_t)
  CUBLASLT_MATMUL_DESC_TRANSB = 4,        // int32_t (cublasOperation_t)
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,      // uint32_t (cublasLtEpilogue_t)
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,  // const void*
} cublasLtMatmulDescAttributes_t;

typedef enum {
  CUBLASLT_EPILOGUE_DEFAULT = 1,
  CUBLASLT_EPILOGUE_RELU = 2,       // max(x, 0)
  CUBLASLT_EPILOGUE_BIAS = 4,       // x + bias (one value per row of column-major D)
  CUBLASLT_EPILOGUE_RELU_BIAS = 6,  // max(x + bias, 0)
} cublasLtEpilogue_t;

typedef enum {
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,  // uint64_t
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,  // uint32_t, default 256
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;

// The functions deepcore calls, as pointers filled by dlsym(). X(name, return
// type, parameter list) for each; cublaslt_header_check.cpp compares each
// type with the real declaration.
#define DEEPCORE_CUBLASLT_FUNCTIONS(X)                                                                              \
  X(cublasLtGetVersion, size_t, (void))                                                                             \
  X(cublasLtGetCudartVersion, size_t, (void))                                                                       \
  X(cublasLtGetStatusName, const char*, (cublasStatus_t))                                                           \
  X(cublasLtGetStatusString, const char*, (cublasStatus_t))                                                         \
  X(cublasLtCreate, cublasStatus_t, (cublasLtHandle_t*))                                                            \
  X(cublasLtMatmulDescCreate, cublasStatus_t, (cublasLtMatmulDesc_t*, cublasComputeType_t, cudaDataType_t))         \
  X(cublasLtMatmulDescDestroy, cublasStatus_t, (cublasLtMatmulDesc_t))                                              \
  X(cublasLtMatmulDescSetAttribute, cublasStatus_t,                                                                 \
    (cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void*, size_t))                                    \
  X(cublasLtMatrixLayoutCreate, cublasStatus_t, (cublasLtMatrixLayout_t*, cudaDataType, uint64_t, uint64_t, int64_t)) \
  X(cublasLtMatrixLayoutDestroy, cublasStatus_t, (cublasLtMatrixLayout_t))                                          \
  X(cublasLtMatmulPreferenceCreate, cublasStatus_t, (cublasLtMatmulPreference_t*))                                  \
  X(cublasLtMatmulPreferenceDestroy, cublasStatus_t, (cublasLtMatmulPreference_t))                                  \
  X(cublasLtMatmulPreferenceSetAttribute, cublasStatus_t,                                                           \
    (cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void*, size_t))                        \
  X(cublasLtMatmulAlgoGetHeuristic, cublasStatus_t,                                                                 \
    (cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, \
     cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t*, int*))            \
  X(cublasLtMatmul, cublasStatus_t,                                                                                 \
    (cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*, cublasLtMatrixLayout_t, const void*,         \
     cublasLtMatrixLayout_t, const void*, const void*, cublasLtMatrixLayout_t, void*, cublasLtMatrixLayout_t,       \
     const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t))

struct Api {
#define DEEPCORE_CUBLASLT_MEMBER(name, ret, params) ret(*name) params = nullptr;
  DEEPCORE_CUBLASLT_FUNCTIONS(DEEPCORE_CUBLASLT_MEMBER)
#undef DEEPCORE_CUBLASLT_MEMBER
  std::string path;      // the file that was opened
  size_t version = 0;    // cublasLtGetVersion(): major * 10000 + minor * 100 + patch
  size_t cudart = 0;     // cublasLtGetCudartVersion(): the CUDA it was built for, e.g. 13000
};

// Opens cuBLASLt once (thread-safe; later calls return the first answer).
// wheel_candidates: files the caller found in the nvidia-cublas wheels (step
// 2 above), tried in order; ignored after the first call. Returns nullptr when
// no usable library was found; reason() says where it looked and why each
// candidate was refused.
const Api* load(const std::vector<std::string>& wheel_candidates);
// The library opened by load(), or nullptr (also before load() was called).
const Api* api();
// "" when load() succeeded; otherwise why not. Before load(): "not loaded yet".
std::string reason();

// "CUBLAS_STATUS_...: description" for an error status of the loaded library.
std::string status_text(const Api& a, cublasStatus_t s);

}  // namespace lt
}  // namespace cuda
}  // namespace deepcore
