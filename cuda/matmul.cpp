// Row-major GEMM through cuBLASLt: the plan cache, the workspace and the one
// cublasLtMatmul call (see matmul.h for the transpose trick).
#include "matmul.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "allocator.h"
#include "check.h"
#include "cublaslt.h"
#include "graph.h"
#include "stream.h"

namespace deepcore {
namespace cuda {
namespace {

// 32 MiB: what NVIDIA recommends for Hopper; more than enough for Ampere.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// A model has a handful of GEMM shapes; past this many, the cache is dropped
// and rebuilt rather than grown without bound.
constexpr size_t kMaxPlans = 1024;

std::atomic<bool> g_tf32{false};

// What one cached GEMM configuration needs at call time.
struct Plan {
  lt::cublasLtMatmulDesc_t desc = nullptr;
  lt::cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A, B and C (= D)
  lt::cublasLtMatmulAlgo_t algo{};
};

// device, trans_a, trans_b, m, n, k, lda, ldb, ldc, epilogue, tf32,
// alignment of a, b, c and bias (the heuristic picks algorithms by alignment).
using PlanKey = std::tuple<int, bool, bool, index_t, index_t, index_t, index_t, index_t, index_t, int, bool, uint32_t,
                           uint32_t, uint32_t, uint32_t>;

struct State {
  std::mutex mu;  // one GEMM at a time is set up and queued (the bias pointer lives in the shared descriptor)
  std::map<int, lt::cublasLtHandle_t> handles;                 // per device
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;    // per (device, stream)
  std::map<PlanKey, Plan> plans;
};
// Never destroyed: at exit the driver or cuBLASLt may already be gone.
State& state() {
  static State* s = new State;
  return *s;
}

void lt_check(const lt::Api& L, lt::cublasStatus_t s, const char* what, const char* caller) {
  if (s != lt::CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(caller) + ": " + what + ": " + lt::status_text(L, s));
}

// Largest power of two <= 256 dividing the address (float pointers: >= 4).
uint32_t alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

bool has_bias(Epilogue ep) { return ep == Epilogue::Bias || ep == Epilogue::ReluBias; }

uint32_t lt_epilogue(Epilogue ep) {
  switch (ep) {
    case Epilogue::Bias: return lt::CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::Relu: return lt::CUBLASLT_EPILOGUE_RELU;
    case Epilogue::ReluBias: return lt::CUBLASLT_EPILOGUE_RELU_BIAS;
    default: return lt::CUBLASLT_EPILOGUE_DEFAULT;
  }
}

void destroy_plan(const lt::Api& L, Plan& p) {
  if (p.a) L.cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) L.cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) L.cublasLtMatrixLayoutDestroy(p.c);
  if (p.desc) L.cublasLtMatmulDescDestroy(p.desc);
  p = Plan();
}

template <class T>
void set_desc(const lt::Api& L, lt::cublasLtMatmulDesc_t d, lt::cublasLtMatmulDescAttributes_t attr, T value,
              const char* caller) {
  lt_check(L, L.cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof value), "cublasLtMatmulDescSetAttribute",
           caller);
}

template <class T>
void set_pref(const lt::Api& L, lt::cublasLtMatmulPreference_t p, lt::cublasLtMatmulPreferenceAttributes_t attr,
              T value, const char* caller) {
  lt_check(L, L.cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof value),
           "cublasLtMatmulPreferenceSetAttribute", caller);
}

// Descriptors, layouts and the heuristic's first choice for one configuration.
// In cuBLASLt's column-major terms: D (n x m) = op'(B_rm) op'(A_rm), where
// B_rm is our b read as column-major (op' = T iff trans_b) and A_rm our a.
Plan make_plan(const lt::Api& L, lt::cublasLtHandle_t h, bool ta, bool tb, index_t m, index_t n, index_t k,
               const float* a, index_t lda, const float* b, index_t ldb, float* c, index_t ldc, Epilogue ep,
               const float* bias, bool use_tf32, const char* caller) {
  Plan p;
  lt::cublasLtMatmulPreference_t pref = nullptr;
  try {
    const lt::cublasComputeType_t compute = use_tf32 ? lt::CUBLAS_COMPUTE_32F_FAST_TF32 : lt::CUBLAS_COMPUTE_32F;
    lt_check(L, L.cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate", caller);
    set_desc<int32_t>(L, p.desc, lt::CUBLASLT_MATMUL_DESC_TRANSA, tb ? lt::CUBLAS_OP_T : lt::CUBLAS_OP_N, caller);
    set_desc<int32_t>(L, p.desc, lt::CUBLASLT_MATMUL_DESC_TRANSB, ta ? lt::CUBLAS_OP_T : lt::CUBLAS_OP_N, caller);
    set_desc<uint32_t>(L, p.desc, lt::CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(ep), caller);
    if (has_bias(ep)) set_desc<const void*>(L, p.desc, lt::CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, caller);
    // The stored (pre-op) matrices, column-major: B_rm is (tb ? k : n) x (tb ? n : k), ld = ldb; A_rm is
    // (ta ? m : k) x (ta ? k : m), ld = lda; C is n x m, ld = ldc.
    lt_check(L, L.cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, uint64_t(tb ? k : n), uint64_t(tb ? n : k), ldb),
             "cublasLtMatrixLayoutCreate", caller);
    lt_check(L, L.cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, uint64_t(ta ? m : k), uint64_t(ta ? k : m), lda),
             "cublasLtMatrixLayoutCreate", caller);
    lt_check(L, L.cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(n), uint64_t(m), ldc),
             "cublasLtMatrixLayoutCreate", caller);

    lt_check(L, L.cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", caller);
    set_pref<uint64_t>(L, pref, lt::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, kWorkspaceBytes, caller);
    set_pref<uint32_t>(L, pref, lt::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(b), caller);
    set_pref<uint32_t>(L, pref, lt::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(a), caller);
    set_pref<uint32_t>(L, pref, lt::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(c), caller);
    set_pref<uint32_t>(L, pref, lt::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(c), caller);

    lt::cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    // NOT_SUPPORTED is the heuristic's "nothing fits": reported below with the shape.
    const lt::cublasStatus_t hs = L.cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result,
                                                                   &found);
    if (hs == lt::CUBLAS_STATUS_NOT_SUPPORTED) found = 0;
    else lt_check(L, hs, "cublasLtMatmulAlgoGetHeuristic", caller);
    if (found < 1 || result.state != lt::CUBLAS_STATUS_SUCCESS)
      throw CudaError(std::string(caller) + ": cuBLASLt has no algorithm for a " + std::to_string(m) + " x " +
                      std::to_string(n) + " x " + std::to_string(k) + " GEMM (trans_a=" + std::to_string(ta) +
                      ", trans_b=" + std::to_string(tb) + ", lda=" + std::to_string(lda) + ", ldb=" +
                      std::to_string(ldb) + ", ldc=" + std::to_string(ldc) + ", epilogue " +
                      std::to_string(int(ep)) + (use_tf32 ? ", TF32)" : ", fp32)"));
    p.algo = result.algo;
    L.cublasLtMatmulPreferenceDestroy(pref);
    return p;
  } catch (...) {
    if (pref) L.cublasLtMatmulPreferenceDestroy(pref);
    destroy_plan(L, p);
    throw;
  }
}

}  // namespace

void set_tf32(bool on) { g_tf32.store(on); }
bool tf32() { return g_tf32.load(); }

void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
          const float* b, index_t ldb, float beta, float* c, index_t ldc, Epilogue ep, const float* bias,
          const char* caller) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    const bool relu = ep == Epilogue::Relu || ep == Epilogue::ReluBias;
    gemm_empty_inner(c, m, n, ldc, beta, has_bias(ep) ? bias : nullptr, relu);
    return;
  }
  // A bias that is not 16-byte aligned (a view into the packed parameters of
  // an odd-sized layer) stays out of cuBLASLt's epilogue. There is no
  // MIN_ALIGNMENT preference for the bias; cublasLt.h says the heuristic
  // judges it from the BIAS_POINTER value in the descriptor (make_plan sets it
  // before asking, and the plan key holds its alignment), yet kernels that
  // assume 16 bytes have faulted with "misaligned address" on under-aligned
  // biases (pytorch/pytorch#194497, sm_75, CUDA 13.3). The GEMM runs without
  // the epilogue and our kernel adds the bias (and the NaN-keeping ReLU) after it.
  if (has_bias(ep) && alignment(bias) < 16) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, Epilogue::None, nullptr, caller);
    gemm_empty_inner(c, m, n, ldc, 1.0f, bias, ep == Epilogue::ReluBias);
    return;
  }
  const lt::Api* L = lt::api();
  if (!L) throw std::runtime_error(std::string(caller) + ": cuBLASLt is unavailable: " + lt::reason());
  int device = 0;
  check(cudaGetDevice(&device), caller);
  const cudaStream_t stream = current_stream();
  const bool use_tf32 = g_tf32.load();

  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  lt::cublasLtHandle_t& h = s.handles[device];
  const bool capturing = is_capturing();
  // Creating the handle, the workspace or a plan inside a graph capture fails
  // (cublasLtCreate and the heuristic are not capturable): the step must have
  // run eagerly once with these shapes, pointer alignments and settings.
  auto need_setup = [&](const char* what) {
    if (capturing)
      ensure_not_capturing(caller, (std::string("cuBLASLt would have to create its ") + what +
                                    " during the capture; run the step eagerly once with the same shapes first")
                                       .c_str());
  };
  if (!h) {
    need_setup("handle");
    lt::cublasLtHandle_t created = nullptr;
    lt_check(*L, L->cublasLtCreate(&created), "cublasLtCreate", caller);
    h = created;
  }
  void*& workspace = s.workspaces[{device, stream}];
  if (!workspace) {
    need_setup("workspace");
    workspace = device_alloc(kWorkspaceBytes);
  }

  const PlanKey key{device, trans_a, trans_b, m, n, k, lda, ldb, ldc, int(ep), use_tf32, alignment(a),
                    alignment(b), alignment(c), has_bias(ep) ? alignment(bias) : 0u};
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    need_setup("plan for this GEMM");
    if (s.plans.size() >= kMaxPlans) {
      for (auto& kv : s.plans) destroy_plan(*L, kv.second);
      s.plans.clear();
    }
    Plan p = make_plan(*L, h, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, ep, bias, use_tf32, caller);
    it = s.plans.emplace(key, p).first;
  }
  const Plan& p = it->second;
  if (has_bias(ep)) set_desc<const void*>(*L, p.desc, lt::CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, caller);
  // cuBLASLt's A is our b, its B our a; C and D are c (in place, same layout).
  lt_check(*L, L->cublasLtMatmul(h, p.desc, &alpha, b, p.a, a, p.b, &beta, c, p.c, c, p.c, &p.algo, workspace,
                                 kWorkspaceBytes, stream),
           "cublasLtMatmul", caller);
  check_launch(caller);
}

}  // namespace cuda
}  // namespace deepcore
