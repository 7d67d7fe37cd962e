// Compile-time proof that cuda/cublaslt.h declares cuBLASLt as a real
// cublasLt.h does: every enum value, the layout of the structs passed by value,
// and the type of every function deepcore looks up with dlsym(). Not part of
// deepcore._cuda; built only with
//   cmake -DDEEPCORE_CUBLASLT_HEADER_CHECK=<dir with cublasLt.h> ...
// (e.g. the include/ folder of the nvidia-cublas wheel). It compiles or it
// fails with the name of what differs; there is nothing to run.
#include <cublasLt.h>

#include <cstddef>
#include <type_traits>

#include "cublaslt.h"

namespace L = deepcore::cuda::lt;

// ------------------------------------------------------------ enum values
#define DEEPCORE_SAME_VALUE(name) static_assert(int(L::name) == int(::name), "cublaslt.h: wrong value of " #name);
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_SUCCESS)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_NOT_INITIALIZED)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_ALLOC_FAILED)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_INVALID_VALUE)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_ARCH_MISMATCH)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_MAPPING_ERROR)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_EXECUTION_FAILED)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_INTERNAL_ERROR)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_NOT_SUPPORTED)
DEEPCORE_SAME_VALUE(CUBLAS_STATUS_LICENSE_ERROR)
DEEPCORE_SAME_VALUE(CUBLAS_OP_N)
DEEPCORE_SAME_VALUE(CUBLAS_OP_T)
DEEPCORE_SAME_VALUE(CUBLAS_COMPUTE_32F)
DEEPCORE_SAME_VALUE(CUBLAS_COMPUTE_32F_FAST_TF32)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_SCALE_TYPE)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_TRANSA)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_TRANSB)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_EPILOGUE)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_DESC_BIAS_POINTER)
DEEPCORE_SAME_VALUE(CUBLASLT_EPILOGUE_DEFAULT)
DEEPCORE_SAME_VALUE(CUBLASLT_EPILOGUE_RELU)
DEEPCORE_SAME_VALUE(CUBLASLT_EPILOGUE_BIAS)
DEEPCORE_SAME_VALUE(CUBLASLT_EPILOGUE_RELU_BIAS)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES)
DEEPCORE_SAME_VALUE(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)
#undef DEEPCORE_SAME_VALUE

// The enums travel as function arguments and attribute values: same size.
static_assert(sizeof(L::cublasStatus_t) == sizeof(::cublasStatus_t), "cublasStatus_t size");
static_assert(sizeof(L::cublasComputeType_t) == sizeof(::cublasComputeType_t), "cublasComputeType_t size");
static_assert(sizeof(L::cublasLtMatmulDescAttributes_t) == sizeof(::cublasLtMatmulDescAttributes_t), "attr size");
static_assert(sizeof(L::cublasLtMatmulPreferenceAttributes_t) == sizeof(::cublasLtMatmulPreferenceAttributes_t),
              "preference attr size");
// Attribute values are passed as int32_t (TRANSA/B, COMPUTE/SCALE_TYPE) and uint32_t (EPILOGUE).
static_assert(sizeof(::cublasOperation_t) == sizeof(int32_t) && sizeof(::cublasLtEpilogue_t) == sizeof(uint32_t),
              "attribute value sizes");

// ------------------------------------------------------ structs by value
static_assert(sizeof(L::cublasLtMatmulAlgo_t) == sizeof(::cublasLtMatmulAlgo_t), "cublasLtMatmulAlgo_t size");
static_assert(alignof(L::cublasLtMatmulAlgo_t) == alignof(::cublasLtMatmulAlgo_t), "cublasLtMatmulAlgo_t align");
using LR = L::cublasLtMatmulHeuristicResult_t;
using RR = ::cublasLtMatmulHeuristicResult_t;
static_assert(sizeof(LR) == sizeof(RR) && alignof(LR) == alignof(RR), "heuristic result size");
static_assert(offsetof(LR, algo) == offsetof(RR, algo), "heuristic result: algo");
static_assert(offsetof(LR, workspaceSize) == offsetof(RR, workspaceSize), "heuristic result: workspaceSize");
static_assert(offsetof(LR, state) == offsetof(RR, state), "heuristic result: state");
static_assert(offsetof(LR, wavesCount) == offsetof(RR, wavesCount), "heuristic result: wavesCount");
static_assert(offsetof(LR, reserved) == offsetof(RR, reserved), "heuristic result: reserved");

// --------------------------------------------------- function signatures
// Real<T>: our type T spelled with the real header's types, so that the
// function pointer types of cublaslt.h can be compared with the real ones.
template <class T> struct Real { using type = T; };
template <class T> struct Real<T*> { using type = typename Real<T>::type*; };
template <class T> struct Real<const T> { using type = const typename Real<T>::type; };
template <class R, class... A> struct Real<R (*)(A...)> {
  using type = typename Real<R>::type (*)(typename Real<A>::type...);
};
#define DEEPCORE_REAL(ours, theirs) template <> struct Real<ours> { using type = theirs; };
DEEPCORE_REAL(L::cublasStatus_t, ::cublasStatus_t)
DEEPCORE_REAL(L::cublasComputeType_t, ::cublasComputeType_t)
DEEPCORE_REAL(L::cublasLtMatmulDescAttributes_t, ::cublasLtMatmulDescAttributes_t)
DEEPCORE_REAL(L::cublasLtMatmulPreferenceAttributes_t, ::cublasLtMatmulPreferenceAttributes_t)
DEEPCORE_REAL(L::cublasLtMatmulAlgo_t, ::cublasLtMatmulAlgo_t)
DEEPCORE_REAL(L::cublasLtMatmulHeuristicResult_t, ::cublasLtMatmulHeuristicResult_t)
DEEPCORE_REAL(L::cublasLtContext, ::cublasLtContext)
DEEPCORE_REAL(L::cublasLtMatmulDescOpaque_t, ::cublasLtMatmulDescOpaque_t)
DEEPCORE_REAL(L::cublasLtMatrixLayoutOpaque_t, ::cublasLtMatrixLayoutOpaque_t)
DEEPCORE_REAL(L::cublasLtMatmulPreferenceOpaque_t, ::cublasLtMatmulPreferenceOpaque_t)
#undef DEEPCORE_REAL

#define DEEPCORE_SAME_SIGNATURE(fn, ret, params)                                                          \
  static_assert(std::is_same<Real<decltype(L::Api::fn)>::type, decltype(&::fn)>::value,                   \
                "cublaslt.h: the declared type of " #fn " differs from cublasLt.h's");
DEEPCORE_CUBLASLT_FUNCTIONS(DEEPCORE_SAME_SIGNATURE)
#undef DEEPCORE_SAME_SIGNATURE

#define DEEPCORE_STR2(x) #x
#define DEEPCORE_STR(x) DEEPCORE_STR2(x)
// The version this check ran against, for the build log.
#pragma message("cublaslt.h checked against cublasLt.h of cuBLAS " DEEPCORE_STR(CUBLAS_VER_MAJOR) "." DEEPCORE_STR(CUBLAS_VER_MINOR) "." DEEPCORE_STR(CUBLAS_VER_PATCH))
