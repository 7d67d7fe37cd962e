// The cuBLASLt loader: dlopen() the candidates of cublaslt.h in order, check
// the version, dlsym() the functions. Every refused candidate leaves a line in
// the reason, so blas_reason() tells a user exactly where deepcore looked.
#include "cublaslt.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace deepcore {
namespace cuda {
namespace lt {
namespace {

constexpr int kRuntimeMajor = CUDART_VERSION / 1000;  // 13 for the CUDA 13 runtime

std::mutex g_mu;
bool g_tried = false;
Api g_api;
bool g_ok = false;
std::string g_reason = "cuBLASLt has not been loaded yet";

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool dir_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string version_str(size_t v) {  // cuBLAS: major * 10000 + minor * 100 + patch
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}
std::string cuda_str(size_t v) {  // CUDA: major * 1000 + minor * 10
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// Opens one candidate. On success fills `out` and returns ""; otherwise
// returns why it was refused (and leaves nothing open).
std::string try_open(const std::string& name, Api& out) {
  dlerror();
  void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return e ? std::string(e) : "dlopen failed";
  }
  Api a;
#define DEEPCORE_CUBLASLT_SYM(fn, ret, params)                                      \
  a.fn = reinterpret_cast<ret(*) params>(dlsym(h, #fn));                            \
  if (!a.fn) {                                                                      \
    dlclose(h);                                                                     \
    return "opened, but it has no " #fn " (not a cuBLASLt, or one too old)";         \
  }
  DEEPCORE_CUBLASLT_FUNCTIONS(DEEPCORE_CUBLASLT_SYM)
#undef DEEPCORE_CUBLASLT_SYM
  a.version = a.cublasLtGetVersion();
  a.cudart = a.cublasLtGetCudartVersion();
  const int major = int(a.version / 10000);
  if (major != kRuntimeMajor) {
    const std::string why = "cuBLASLt " + version_str(a.version) + " (built for CUDA " + cuda_str(a.cudart) +
                            ") does not match the CUDA " + cuda_str(CUDART_VERSION) +
                            " runtime deepcore._cuda was built with";
    if (env("DEEPCORE_CUBLASLT_ALLOW_MISMATCH") != "1") {
      dlclose(h);
      return why + " (set DEEPCORE_CUBLASLT_ALLOW_MISMATCH=1 to use it anyway, unsupported)";
    }
  }
  // The file actually opened (a soname resolves through the loader's search).
  Dl_info info;
  a.path = dladdr(reinterpret_cast<void*>(a.cublasLtMatmul), &info) && info.dli_fname ? info.dli_fname : name;
  out = a;
  return "";
}

}  // namespace

const Api* load(const std::vector<std::string>& wheel_candidates) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_tried) return g_ok ? &g_api : nullptr;
  g_tried = true;

  const std::string want = "libcublasLt.so." + std::to_string(kRuntimeMajor);
  const char* names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
  std::vector<std::string> refused;  // "candidate: why"
  std::string label;                  // names where a candidate came from, in `refused`
  auto attempt = [&](const std::string& cand) {
    const std::string why = try_open(cand, g_api);
    if (why.empty()) return true;
    refused.push_back(label + cand + ": " + why);
    return false;
  };
  auto attempt_dir = [&](const std::string& dir) {
    bool any = false;
    for (const char* n : names) {
      const std::string f = dir + "/" + n;
      if (!file_exists(f)) continue;
      any = true;
      if (attempt(f)) return true;
    }
    if (!any) refused.push_back(label + dir + ": no libcublasLt.so* there");
    return false;
  };

  // 1. DEEPCORE_CUBLASLT_PATH
  const std::string forced = env("DEEPCORE_CUBLASLT_PATH");
  bool found = false;
  label = "$DEEPCORE_CUBLASLT_PATH=";
  if (forced.empty()) refused.push_back("$DEEPCORE_CUBLASLT_PATH: not set");
  else if (dir_exists(forced)) found = attempt_dir(forced);
  else found = attempt(forced);
  label.clear();
  // 2. the nvidia-cublas wheels
  if (!found) {
    bool any = false;
    for (const std::string& c : wheel_candidates) {
      if (!file_exists(c)) continue;
      any = true;
      if ((found = attempt(c))) break;
    }
    if (!any) refused.push_back("nvidia-cublas wheel: not installed (no nvidia/cu13/lib or nvidia/cublas/lib "
                                "with a libcublasLt next to the Python packages)");
  }
  // 3. sonames through the dynamic loader's search path
  for (const char* n : names) {
    if (found) break;
    found = attempt(n);
  }
  // 4. the usual toolkit locations
  std::vector<std::string> dirs;
  if (!env("CUDA_HOME").empty()) dirs.push_back(env("CUDA_HOME") + "/lib64");
  if (!env("CUDA_PATH").empty()) dirs.push_back(env("CUDA_PATH") + "/lib64");
  dirs.push_back("/usr/local/cuda/lib64");
  for (const std::string& d : dirs) {
    if (found) break;
    if (dir_exists(d)) found = attempt_dir(d);
    else refused.push_back(d + ": no such directory");
  }

  if (found) {
    g_ok = true;
    g_reason = "";
    return &g_api;
  }
  g_api = Api();
  std::string r = "cuBLASLt (" + want + ", for the CUDA " + cuda_str(CUDART_VERSION) +
                  " runtime) was not found or not usable. Looked at, in order:";
  for (const std::string& s : refused) r += "\n  - " + s;
  r += "\nInstall it with `pip install nvidia-cublas` (or deepcore[cuda]), or set DEEPCORE_CUBLASLT_PATH to a " +
       want + " file or its directory.";
  g_reason = r;
  return nullptr;
}

const Api* api() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_ok ? &g_api : nullptr;
}

std::string reason() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_reason;
}

std::string status_text(const Api& a, cublasStatus_t s) {
  const char* name = a.cublasLtGetStatusName ? a.cublasLtGetStatusName(s) : nullptr;
  const char* text = a.cublasLtGetStatusString ? a.cublasLtGetStatusString(s) : nullptr;
  std::string r = name ? std::string(name) : "cublasStatus " + std::to_string(int(s));
  return r + ": " + (text ? text : "no description");
}

}  // namespace lt
}  // namespace cuda
}  // namespace deepcore
