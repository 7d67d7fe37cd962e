// A host fake of the cuBLASLt subset deepcore calls (cuda/cublaslt.h), for
// tests on machines without a GPU. It is NOT cuBLASLt: it computes what
// NVIDIA's documentation says cublasLtMatmul computes, on the CPU, through
// plain host pointers (the CUDA emulator in tests/cuda_emulator/ makes device
// pointers host pointers), and it checks its arguments at least as strictly as
// the documentation says the real library does. See README_cublaslt.md.
//
// Build (standalone; the CMake snippet fake_cublaslt.cmake does the same):
//   g++ -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -Icuda -I/usr/local/cuda/include tests/cuda_emulator/fake_cublaslt.cpp -Wl,-soname,libcublasLt.so.13 -ldl -o libcublasLt.so.13
// (from the repository root; any CUDA toolkit's include/ works: only the types of
// cuda_runtime.h / library_types.h are used, nothing is linked from CUDA.)
// Then DEEPCORE_CUBLASLT_PATH=<that file or its directory> makes deepcore open it.
//
// What it computes (NVIDIA cuBLAS documentation, "cublasLtMatmul()",
// https://docs.nvidia.com/cuda/cublas/#cublasltmatmul):
//   D = epilogue(alpha * op(A) op(B) + beta * C), column-major, element (i, j) of
//   a rows x cols layout with leading dimension ld at p[i + j * ld];
//   op(X) = X or X^T by CUBLASLT_MATMUL_DESC_TRANSA / TRANSB;
//   D is m x n, op(A) m x k, op(B) k x n.
// Arithmetic: every product and the sum over k in double, then alpha, beta C,
// the bias and the ReLU in double, one rounding to float at the end. So the
// fake is at least as accurate as fp32 on a GPU; CUBLAS_COMPUTE_32F_FAST_TF32 is
// computed the same way (no TF32 rounding of the inputs is imitated).
//
// Stream semantics: the real cublasLtMatmul queues kernels on `stream` and
// returns; the kernels read A, B, C, bias and write D when they run (graph
// replay included), and the descriptors are read at call time. The fake copies
// everything the call needs except the matrix data into an immutable parameter
// block and hands (run_job, block) to the emulator's queue:
//   extern "C" void deepcore_emu_enqueue(cudaStream_t, void (*fn)(void*), void* arg);
// looked up at call time (see find_enqueue()); without it (the fake tested on
// its own, tests/test_fake_cublaslt.py, where nothing else is queued), the GEMM
// runs before cublasLtMatmul returns. Blocks are interned (one per distinct parameter set)
// and live until the library is unloaded, so a recorded closure can be replayed
// any number of times and a steady training loop adds no memory.
#include "cublaslt.h"

#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

using namespace deepcore::cuda::lt;

// -------------------------------------------------------------- the objects
// The opaque types of cublaslt.h, completed here (they live in deepcore::cuda::lt,
// so they never meet the real cublasLt.h's).
namespace deepcore {
namespace cuda {
namespace lt {

struct cublasLtContext {
  int device = 0;  // current at cublasLtCreate (under the emulator)
};

struct cublasLtMatmulDescOpaque_t {
  int32_t compute = 0;   // CUBLASLT_MATMUL_DESC_COMPUTE_TYPE (set at create)
  int32_t scale = 0;     // CUBLASLT_MATMUL_DESC_SCALE_TYPE (cudaDataType)
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;  // default CUBLAS_OP_N
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;       // default DEFAULT
  const void* bias = nullptr;                          // default NULL
};

struct cublasLtMatrixLayoutOpaque_t {
  int32_t type = 0;  // cudaDataType
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};

struct cublasLtMatmulPreferenceOpaque_t {
  uint64_t max_workspace = 0;                // default 0: no workspace allowed
  uint32_t min_align[4] = {256, 256, 256, 256};  // A, B, C, D; default 256 bytes
};

}  // namespace lt
}  // namespace cuda
}  // namespace deepcore

namespace {

// Every handle and descriptor the fake created and did not destroy: a call
// with anything else (NULL, destroyed, garbage) is refused instead of crashing.
std::mutex g_mu;
std::unordered_set<const void*>& live() {
  static auto* s = new std::unordered_set<const void*>;  // never destroyed: calls may come during exit
  return *s;
}
bool is_live(const void* p) {
  std::lock_guard<std::mutex> lock(g_mu);
  return p && live().count(p) != 0;
}
template <class T>
T* make_live() {
  T* p = new (std::nothrow) T();
  if (p) {
    std::lock_guard<std::mutex> lock(g_mu);
    live().insert(p);
  }
  return p;
}
template <class T>
cublasStatus_t destroy_live(T* p) {
  if (!p) return CUBLAS_STATUS_SUCCESS;  // destroying NULL is a no-op, as free() does
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (live().erase(p) == 0) return CUBLAS_STATUS_INVALID_VALUE;  // never created, or destroyed twice
  }
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}

// ------------------------------------------------------------- the "algorithm"
// The heuristic returns one algorithm. Its opaque data records what it was
// chosen for, so that cublasLtMatmul can refuse pointers it cannot serve (the
// real kernels would fault or compute garbage; the fake says so instead).
constexpr uint64_t kAlgoMagic = 0x666b4c5462616c67ull;  // "fkLTbalg": a fake algorithm
constexpr size_t kWorkspaceWanted = size_t(1) << 20;   // what the fake "needs" when allowed (1 MiB)
constexpr int kSms = 132;                               // H100 SXM, for a plausible wavesCount

struct AlgoData {  // packed into cublasLtMatmulAlgo_t::data (8 x uint64)
  uint64_t magic;
  uint64_t compute;
  uint64_t align[4];  // bytes the algorithm assumes for A, B, C, D
  uint64_t bias_align;
  uint64_t workspace;
};
static_assert(sizeof(AlgoData) <= sizeof(cublasLtMatmulAlgo_t), "algo data too large");

uint32_t pointer_alignment(const void* p) {  // largest power of two <= 256 dividing the address
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

// The alignment an algorithm may assume for one matrix, given the caller's
// minimum-alignment preference: 16 bytes (128-bit loads) when allowed, but no
// more than every column start keeps (ld * 4 bytes), and never below the element
// size. 0 when the preference is below the element size (no algorithm fits).
// The real heuristic's rules are not published; this is the fake's model.
uint64_t assumed_alignment(uint32_t pref, int64_t ld) {
  if (pref < sizeof(float)) return 0;
  uint64_t a = pref < 16 ? pref : 16;
  while (a > sizeof(float) && (uint64_t(ld) * sizeof(float)) % a != 0) a >>= 1;
  return a;
}

bool epilogue_known(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_DEFAULT || e == CUBLASLT_EPILOGUE_RELU || e == CUBLASLT_EPILOGUE_BIAS ||
         e == CUBLASLT_EPILOGUE_RELU_BIAS;
}
bool epilogue_has_bias(uint32_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS; }
bool epilogue_has_relu(uint32_t e) { return e == CUBLASLT_EPILOGUE_RELU || e == CUBLASLT_EPILOGUE_RELU_BIAS; }

// ------------------------------------------------------------ the problem
struct Problem {
  uint64_t m = 0, n = 0, k = 0;
};

// Checks the descriptors against each other. SUCCESS, or the status to return:
// `conflict` for shapes that do not fit together (the heuristic answers
// NOT_SUPPORTED there, cublasLtMatmul INVALID_VALUE: "in conflict or in an
// impossible configuration"), NOT_SUPPORTED for what this fake cannot compute.
cublasStatus_t check_problem(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t& a,
                             const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& c,
                             const cublasLtMatrixLayoutOpaque_t& dd, cublasStatus_t conflict, Problem* out) {
  // Supported types (documentation table of cublasLtMatmul(): compute 32F or 32F_FAST_TF32 with scale, A/B
  // and C types CUDA_R_32F; the bias is then CUDA_R_32F too, "the same type as the output elements").
  if (d.compute != CUBLAS_COMPUTE_32F && d.compute != CUBLAS_COMPUTE_32F_FAST_TF32) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (const auto* l : {&a, &b, &c, &dd})
    if (l->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!epilogue_known(d.epilogue)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if ((d.transa != CUBLAS_OP_N && d.transa != CUBLAS_OP_T) || (d.transb != CUBLAS_OP_N && d.transb != CUBLAS_OP_T))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  // op(A) is m x k, op(B) k x n, C and D m x n.
  const bool ta = d.transa == CUBLAS_OP_T, tb = d.transb == CUBLAS_OP_T;
  const uint64_t m = ta ? a.cols : a.rows, ka = ta ? a.rows : a.cols;
  const uint64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
  if (ka != kb || dd.rows != m || dd.cols != n) return conflict;
  // "out-of-place ... both matrices must have the same data type, number of rows, number of columns".
  if (c.rows != dd.rows || c.cols != dd.cols) return conflict;
  // Empty problems: what the real library does is not documented; deepcore never
  // asks (cuda/matmul.cpp handles them itself), and the fake refuses them.
  if (m == 0 || n == 0 || ka == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  // Column-major: ld >= rows (the column stride). A leading dimension 0 for C
  // (documented broadcast of C) is not implemented by the fake.
  for (const auto* l : {&a, &b, &c, &dd})
    if (l->ld < 1 || uint64_t(l->ld) < l->rows) return l == &c && l->ld == 0 ? CUBLAS_STATUS_NOT_SUPPORTED : conflict;
  out->m = m;
  out->n = n;
  out->k = ka;
  return CUBLAS_STATUS_SUCCESS;
}

// ------------------------------------------------------------------ the job
// Everything one cublasLtMatmul call needs when its work runs: values and
// pointers, never the matrix data (the real kernels read the data when they
// run). Compared by value so that identical calls share one block.
struct Job {
  uint64_t m, n, k;
  int32_t ta, tb;
  uint32_t epilogue;
  uint32_t alpha_bits, beta_bits;  // the float scalars, bit for bit (NaN-safe comparison)
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  const float* c;
  int64_t ldc;
  float* d;
  int64_t ldd;
  const float* bias;

  auto key() const {
    return std::tie(m, n, k, ta, tb, epilogue, alpha_bits, beta_bits, a, lda, b, ldb, c, ldc, d, ldd, bias);
  }
  bool operator<(const Job& o) const { return key() < o.key(); }
};

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

void note_matrix(const float* p, uint64_t rows, uint64_t cols, int64_t ld, int write, const char* who);

// D = epilogue(alpha op(A) op(B) + beta C), column-major.
void run_job(void* arg) {
  const Job& j = *static_cast<const Job*>(arg);
  const double alpha = bits_to_float(j.alpha_bits), beta = bits_to_float(j.beta_bits);
  const uint64_t m = j.m, n = j.n, k = j.k;
  // op(A) row i and op(B) column j, each packed contiguous in double, so that the
  // inner loop walks memory in order whatever the transposes.
  std::vector<double> ap(m * k), bp(n * k);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t p = 0; p < k; ++p) ap[i * k + p] = j.ta ? j.a[p + i * j.lda] : j.a[i + p * j.lda];
  for (uint64_t c = 0; c < n; ++c)
    for (uint64_t p = 0; p < k; ++p) bp[c * k + p] = j.tb ? j.b[c + p * j.ldb] : j.b[p + c * j.ldb];
  const bool bias = epilogue_has_bias(j.epilogue), relu = epilogue_has_relu(j.epilogue);
  // What the GEMM reads must have been written (the emulator's initcheck).
  note_matrix(j.a, j.ta ? k : m, j.ta ? m : k, j.lda, 0, "cublasLtMatmul (fake) reading A");
  note_matrix(j.b, j.tb ? n : k, j.tb ? k : n, j.ldb, 0, "cublasLtMatmul (fake) reading B");
  if (beta != 0.0) note_matrix(j.c, m, n, j.ldc, 0, "cublasLtMatmul (fake) reading C");
  if (bias) note_matrix(j.bias, m, 1, int64_t(m), 0, "cublasLtMatmul (fake) reading the bias");
  note_matrix(j.d, m, n, j.ldd, 1, "cublasLtMatmul (fake) writing D");
  for (uint64_t c = 0; c < n; ++c) {
    for (uint64_t i = 0; i < m; ++i) {
      double acc = 0.0;
      const double* x = &ap[i * k];
      const double* y = &bp[c * k];
      for (uint64_t p = 0; p < k; ++p) acc += x[p] * y[p];
      double t = alpha * acc;
      // beta == 0: C is not read (so NaN or garbage in C does not reach D), as BLAS
      // specifies for gemm and cuBLAS documents for cublas<t>gemm ("if beta == 0
      // then C does not have to be a valid input").
      if (beta != 0.0) t += beta * double(j.c[i + c * j.ldc]);
      // CUBLASLT_EPILOGUE_BIAS: "Bias vector length must match matrix D rows ... broadcasted to all columns
      // and added before applying final postprocessing" (cublasLt.h, cublasLtEpilogue_t): bias[i] for row i.
      if (bias) t += double(j.bias[i]);
      // CUBLASLT_EPILOGUE_RELU: "x := max(x, 0)". NaN is not documented; the fake
      // maps NaN to 0, as fmax(x, 0) does (IEEE 754 maxNum; CUDA's fmaxf, which
      // CUTLASS's maximum<float> uses by default). A NaN-keeping caller must not rely on it.
      if (relu) t = std::fmax(t, 0.0);
      j.d[i + c * j.ldd] = float(t);
    }
  }
}

// Interned, immutable job blocks: they stay valid until the library is unloaded
// (a captured graph may replay a closure at any time).
std::mutex g_jobs_mu;
std::set<Job>& jobs() {
  static std::set<Job> s;  // freed at unload (static destructor): no queue may hold them then
  return s;
}
const Job* intern(const Job& j) {
  std::lock_guard<std::mutex> lock(g_jobs_mu);
  return &*jobs().insert(j).first;  // std::set elements never move
}

// --------------------------------------------------------- the emulator queue
using EnqueueFn = void (*)(cudaStream_t, void (*)(void*), void*);

// deepcore_emu_enqueue, wherever it is loaded. dlsym(RTLD_DEFAULT) sees only the
// global scope; a Python extension module (the emulated deepcore._cuda) is
// loaded RTLD_LOCAL, so every loaded object is asked too, by handle
// (dlopen(RTLD_NOLOAD) opens nothing new). Found once, kept.
struct Lookup {
  const char* name;
  void* found;
};
int find_in_object(struct dl_phdr_info* info, size_t, void* data) {
  auto* l = static_cast<Lookup*>(data);
  if (!info->dlpi_name || !info->dlpi_name[0]) return 0;
  void* h = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return 0;
  void* f = dlsym(h, l->name);
  dlclose(h);  // drops the reference RTLD_NOLOAD took; the object stays loaded
  if (!f) return 0;
  l->found = f;
  return 1;
}
void* find_emulator_symbol(const char* name) {
  Lookup l{name, dlsym(RTLD_DEFAULT, name)};
  if (!l.found) dl_iterate_phdr(find_in_object, &l);
  return l.found;
}
EnqueueFn find_enqueue() {
  static std::atomic<EnqueueFn> found{nullptr};
  if (EnqueueFn f = found.load()) return f;
  auto f = reinterpret_cast<EnqueueFn>(find_emulator_symbol("deepcore_emu_enqueue"));
  if (f) found.store(f);
  return f;
}

// deepcore_emu_note_access (the emulator's initcheck: which device bytes a GEMM
// reads and writes), or null outside the emulator.
using NoteFn = void (*)(const void*, size_t, int, const char*);
NoteFn find_note() {
  static std::atomic<NoteFn> found{nullptr};
  if (NoteFn f = found.load()) return f;
  if (!find_enqueue()) return nullptr;  // not under the emulator: no second search per call
  auto f = reinterpret_cast<NoteFn>(find_emulator_symbol("deepcore_emu_note_access"));
  if (f) found.store(f);
  return f;
}

// Under the emulator (null elsewhere): cudaGetDevice, and
// deepcore_emu_device_of (the device whose memory holds p, -1 for none).
struct EmulatorDevices {
  cudaError_t (*current)(int*);
  int (*device_of)(const void*);
};
const EmulatorDevices* find_devices() {
  static std::atomic<const EmulatorDevices*> found{nullptr};
  if (const EmulatorDevices* d = found.load()) return d;
  if (!find_enqueue()) return nullptr;  // not under the emulator (looked for again next time, as the queue)
  auto current = reinterpret_cast<cudaError_t (*)(int*)>(find_emulator_symbol("cudaGetDevice"));
  auto device_of = reinterpret_cast<int (*)(const void*)>(find_emulator_symbol("deepcore_emu_device_of"));
  if (!current || !device_of) return nullptr;
  static const EmulatorDevices d{current, device_of};
  found.store(&d);
  return &d;
}

// A call the real library cannot serve (deepcore must never make one): said on
// stderr and in DEEPCORE_EMU_REPORT_FILE, as the emulator reports kernel bugs, then abort.
[[noreturn]] void misuse(const std::string& msg) {
  const std::string line = "host fake of cuBLASLt: " + msg;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  if (const char* path = std::getenv("DEEPCORE_EMU_REPORT_FILE"))
    if (FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    }
  std::abort();
}

// A handle works on the device that was current when it was created, on that
// device's memory (no peer access).
void check_devices(const cublasLtContext& h, const void* const* ptrs, const char* const* names, int n) {
  const EmulatorDevices* d = find_devices();
  if (!d) return;
  int current = 0;
  d->current(&current);
  if (current != h.device)
    misuse("cublasLtMatmul with a handle created on cuda:" + std::to_string(h.device) +
           " while cuda:" + std::to_string(current) + " is current");
  for (int i = 0; i < n; ++i) {
    const int dev = ptrs[i] ? d->device_of(ptrs[i]) : -1;
    if (dev >= 0 && dev != current)
      misuse(std::string("cublasLtMatmul on cuda:") + std::to_string(current) + ": " + names[i] +
             " points into memory of cuda:" + std::to_string(dev));
  }
}

// Tells the emulator that the column-major rows x cols matrix at p (leading
// dimension ld, floats) is read (write == 0) or written by `who`.
void note_matrix(const float* p, uint64_t rows, uint64_t cols, int64_t ld, int write, const char* who) {
  NoteFn note = find_note();
  if (!note || !p) return;
  for (uint64_t c = 0; c < cols; ++c) note(p + c * uint64_t(ld), rows * sizeof(float), write, who);
}

// ---------------------------------------------------------------- helpers
template <class T>
cublasStatus_t set_value(T& field, const void* buf, size_t size) {
  if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&field, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v, &end, 10);
  return end && *end == '\0' ? size_t(x) : fallback;
}

}  // namespace

// ------------------------------------------------------- the exported API
// Declared from cublaslt.h's own list, so that a definition below whose type
// differs from deepcore's declaration does not compile ("conflicting declaration
// of C function").
// Each definition is extern "C" too: a second C function of the same name with
// other parameter types is an error, not a silent C++ overload.
#define DEEPCORE_FAKE_API extern "C" __attribute__((visibility("default")))
#define DEEPCORE_FAKE_DECLARE(name, ret, params) DEEPCORE_FAKE_API ret name params;
DEEPCORE_CUBLASLT_FUNCTIONS(DEEPCORE_FAKE_DECLARE)
#undef DEEPCORE_FAKE_DECLARE

// major * 10000 + minor * 100 + patch. 13.0.0 by default;
// DEEPCORE_FAKE_CUBLASLT_VERSION / _CUDART_VERSION override (to test a loader's version check).
DEEPCORE_FAKE_API size_t cublasLtGetVersion(void) { return env_size("DEEPCORE_FAKE_CUBLASLT_VERSION", 130000); }
DEEPCORE_FAKE_API size_t cublasLtGetCudartVersion(void) { return env_size("DEEPCORE_FAKE_CUBLASLT_CUDART_VERSION", 13000); }

DEEPCORE_FAKE_API const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

DEEPCORE_FAKE_API const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully (host fake of cuBLASLt)";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized (host fake of cuBLASLt)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed (host fake of cuBLASLt)";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value was used as an argument (host fake of cuBLASLt)";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported (host fake of cuBLASLt)";
    default: return "an error the host fake of cuBLASLt never returns";
  }
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = make_live<cublasLtContext>();
  if (!*handle) return CUBLAS_STATUS_ALLOC_FAILED;
  if (const EmulatorDevices* d = find_devices()) d->current(&(*handle)->device);
  return CUBLAS_STATUS_SUCCESS;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulDescOpaque_t* d = make_live<cublasLtMatmulDescOpaque_t>();
  if (!d) return CUBLAS_STATUS_ALLOC_FAILED;
  d->compute = int32_t(compute);
  d->scale = int32_t(scale);
  *desc = d;
  return CUBLAS_STATUS_SUCCESS;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { return destroy_live(desc); }

// Each attribute has the size cublasLt.h gives it ("CUBLAS_STATUS_INVALID_VALUE if
// buf is NULL or sizeInBytes doesn't match size of internal storage for selected
// attribute"); ids outside cuda/cublaslt.h's subset are refused with INVALID_VALUE.
DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if (!is_live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return set_value(desc->compute, buf, size);  // int32_t
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return set_value(desc->scale, buf, size);      // int32_t
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_value(desc->transa, buf, size);         // int32_t
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_value(desc->transb, buf, size);         // int32_t
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set_value(desc->epilogue, buf, size);     // uint32_t
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_value(desc->bias, buf, size);     // const void*
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatrixLayoutOpaque_t* l = make_live<cublasLtMatrixLayoutOpaque_t>();
  if (!l) return CUBLAS_STATUS_ALLOC_FAILED;
  // Shapes are checked against each other where they meet (heuristic, matmul):
  // a layout alone may be anything (ld 0 is even meaningful for C).
  l->type = int32_t(type);
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
  *layout = l;
  return CUBLAS_STATUS_SUCCESS;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) { return destroy_live(layout); }

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = make_live<cublasLtMatmulPreferenceOpaque_t>();
  return *pref ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) { return destroy_live(pref); }

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  if (!is_live(pref)) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return set_value(pref->max_workspace, buf, size);  // uint64_t
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return set_value(pref->min_align[0], buf, size);  // uint32_t
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return set_value(pref->min_align[1], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return set_value(pref->min_align[2], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return set_value(pref->min_align[3], buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

namespace {

// The heuristic's one answer for a checked problem, or NOT_SUPPORTED.
cublasStatus_t choose(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t* lay[4],
                      const cublasLtMatmulPreferenceOpaque_t& pref, const Problem& pb,
                      cublasLtMatmulHeuristicResult_t* r) {
  AlgoData ad{};
  ad.magic = kAlgoMagic;
  ad.compute = uint64_t(d.compute);
  for (int i = 0; i < 4; ++i) {
    ad.align[i] = assumed_alignment(pref.min_align[i], lay[i]->ld);
    if (ad.align[i] == 0) return CUBLAS_STATUS_NOT_SUPPORTED;  // below the element size: nothing fits
  }
  // The bias pointer is not dereferenced here, but "Routines that don't dereference
  // this pointer, like cublasLtMatmulAlgoGetHeuristic() depend on its value to
  // determine expected pointer alignment" (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER).
  if (epilogue_has_bias(d.epilogue)) {
    const uint32_t b = d.bias ? pointer_alignment(d.bias) : 256;
    if (b < sizeof(float)) return CUBLAS_STATUS_NOT_SUPPORTED;
    ad.bias_align = b < 16 ? b : 16;
  }
  ad.workspace = pref.max_workspace < kWorkspaceWanted ? pref.max_workspace : kWorkspaceWanted;
  std::memset(r, 0, sizeof *r);
  std::memcpy(r->algo.data, &ad, sizeof ad);
  r->workspaceSize = size_t(ad.workspace);
  r->state = CUBLAS_STATUS_SUCCESS;
  const double tiles = double((pb.m + 127) / 128) * double((pb.n + 127) / 128);  // 128 x 128 output tiles
  r->wavesCount = float(tiles / kSms);
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

// Returns one algorithm, or NOT_SUPPORTED with *returnAlgoCount = 0 where no
// algorithm fits ("CUBLAS_STATUS_NOT_SUPPORTED if no heuristic function available
// for current configuration"); INVALID_VALUE "if requestedAlgoCount is less or
// equal to zero" (cublasLt.h) and for NULL or unknown objects.
DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* returned) {
  if (returned) *returned = 0;
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requested <= 0 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
  if (!is_live(desc) || !is_live(a) || !is_live(b) || !is_live(c) || !is_live(dd) || !is_live(pref))
    return CUBLAS_STATUS_INVALID_VALUE;
  Problem pb;
  const cublasStatus_t s = check_problem(*desc, *a, *b, *c, *dd, CUBLAS_STATUS_NOT_SUPPORTED, &pb);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  const cublasLtMatrixLayoutOpaque_t* lay[4] = {a, b, c, dd};
  const cublasStatus_t cs = choose(*desc, lay, *pref, pb, &results[0]);
  if (cs != CUBLAS_STATUS_SUCCESS) return cs;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

DEEPCORE_FAKE_API cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t adesc, const void* B, cublasLtMatrixLayout_t bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t cdesc, void* D,
                              cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_size, cudaStream_t stream) {
  // "CUBLAS_STATUS_NOT_INITIALIZED: If cuBLASLt handle has not been initialized."
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  // "CUBLAS_STATUS_INVALID_VALUE: If the parameters are unexpectedly NULL, in conflict or in an impossible
  // configuration. For example, when workspaceSizeInBytes is less than workspace required by the configured algo."
  if (!is_live(desc) || !is_live(adesc) || !is_live(bdesc) || !is_live(cdesc) || !is_live(ddesc))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!alpha || !beta || !A || !B || !C || !D) return CUBLAS_STATUS_INVALID_VALUE;
  {
    const void* ptrs[6] = {A, B, C, D, desc->bias, workspace};
    const char* names[6] = {"A", "B", "C", "D", "the bias", "the workspace"};
    check_devices(*handle, ptrs, names, 6);
  }
  Problem pb;
  const cublasStatus_t s = check_problem(*desc, *adesc, *bdesc, *cdesc, *ddesc, CUBLAS_STATUS_INVALID_VALUE, &pb);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  // In place: "C == D and Cdesc == Ddesc" (the same layout, leading dimension included).
  if (C == D && cdesc->ld != ddesc->ld) return CUBLAS_STATUS_INVALID_VALUE;
  const bool has_bias = epilogue_has_bias(desc->epilogue);
  if (has_bias && !desc->bias) return CUBLAS_STATUS_INVALID_VALUE;

  // algo == NULL: "an implicit heuristics query with default search preferences" (no workspace, 256-byte alignment).
  cublasLtMatmulHeuristicResult_t implicit;
  if (!algo) {
    const cublasLtMatmulPreferenceOpaque_t defaults;
    const cublasLtMatrixLayoutOpaque_t* lay[4] = {adesc, bdesc, cdesc, ddesc};
    const cublasStatus_t cs = choose(*desc, lay, defaults, pb, &implicit);
    if (cs != CUBLAS_STATUS_SUCCESS) return cs;
    algo = &implicit.algo;
  }
  AlgoData ad;
  std::memcpy(&ad, algo->data, sizeof ad);
  if (ad.magic != kAlgoMagic || ad.compute != uint64_t(desc->compute)) return CUBLAS_STATUS_INVALID_VALUE;
  // The pointers must have the alignment the algorithm was chosen for (the
  // MIN_ALIGNMENT preferences, or the bias pointer the heuristic saw); the
  // real kernels would fault ("misaligned address") or misread.
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % ad.align[i] != 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (has_bias && (ad.bias_align == 0 || reinterpret_cast<uintptr_t>(desc->bias) % ad.bias_align != 0))
    return CUBLAS_STATUS_INVALID_VALUE;
  // "The workspace pointer must be aligned to at least a multiple of 256 bytes."
  if (workspace_size < ad.workspace) return CUBLAS_STATUS_INVALID_VALUE;
  if (workspace_size > 0 && (!workspace || reinterpret_cast<uintptr_t>(workspace) % 256 != 0))
    return CUBLAS_STATUS_INVALID_VALUE;

  // Pointer mode host (the default): alpha and beta are read now, the data later.
  Job j{};
  j.m = pb.m;
  j.n = pb.n;
  j.k = pb.k;
  j.ta = desc->transa == CUBLAS_OP_T;
  j.tb = desc->transb == CUBLAS_OP_T;
  j.epilogue = desc->epilogue;
  j.alpha_bits = float_to_bits(*static_cast<const float*>(alpha));
  j.beta_bits = float_to_bits(*static_cast<const float*>(beta));
  j.a = static_cast<const float*>(A);
  j.lda = adesc->ld;
  j.b = static_cast<const float*>(B);
  j.ldb = bdesc->ld;
  j.c = static_cast<const float*>(C);
  j.ldc = cdesc->ld;
  j.d = static_cast<float*>(D);
  j.ldd = ddesc->ld;
  j.bias = has_bias ? static_cast<const float*>(desc->bias) : nullptr;
  const Job* job = intern(j);
  if (EnqueueFn enqueue = find_enqueue()) enqueue(stream, run_job, const_cast<Job*>(job));
  else run_job(const_cast<Job*>(job));
  return CUBLAS_STATUS_SUCCESS;
}
