// Host emulator of CUDA device code (a test tool; nothing here runs on a GPU).
//
// Force-included (g++ -include emu_device.h) into the translated copies of
// cuda/*.cu and cuda/*.cuh that translate_launches.py writes, so that nvcc-style
// device code compiles as plain C++17: the execution-space qualifiers vanish,
// __shared__ becomes per-block storage, the built-in variables (threadIdx, ...)
// read the state of the emulated thread that runs, and the warp and block
// intrinsics call into the fiber scheduler of emu_runtime.cpp. Every launch
// `k<<<g, b, s, st>>>(args)` has been rewritten into
// `::deepcore_emu::launch("k", g, b, s, st, [](auto&... a) { k(a...); }, args)`.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __shared__
#undef __constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
// translate_launches.py rewrites every `__shared__ T a[n];` into
// `static T a[n]; DEEPCORE_EMU_SHARED(a);`: blocks run one at a time in the
// whole process (the runtime's lock is held through a launch), so a static is
// exactly one block's shared memory. The registration (once per variable, at
// its first use) lets the scheduler fill every shared variable with 0xff bytes
// before each block: shared memory starts undefined, as on a GPU, and a kernel
// that reads it before writing it reads NaN (float, double) or -1 (integers)
// instead of the last block's values. The race checker also needs to know it.
// A __shared__ left untranslated is a compile error naming this.
#define __shared__ __shared___must_be_rewritten_by_translate_launches_py
#define DEEPCORE_EMU_SHARED(v) \
  [[maybe_unused]] static const bool deepcore_emu_shared_##v = ::deepcore_emu::register_shared(&(v), sizeof(v))
#define __constant__

namespace deepcore_emu {

// The emulated thread's coordinates, set by the scheduler before it resumes a
// thread. Reading them after a barrier is safe: the barrier is an opaque call.
// (Plain globals, not thread_local: kernels run one at a time in the whole
// process, under the runtime's lock, and a thread_local in a shared library
// costs a __tls_get_addr call on every read.)
extern uint3 t_thread_idx;
extern uint3 t_block_idx;
extern dim3 t_block_dim;
extern dim3 t_grid_dim;

// Barriers and warp exchanges (emu_runtime.cpp). A value is exchanged as its
// 8 bytes; the scheduler aborts, naming the kernel, on a divergent barrier.
void block_barrier();
// Registers a __shared__ variable (see DEEPCORE_EMU_SHARED) and fills it with 0xff bytes.
bool register_shared(const volatile void* p, size_t bytes);
void warp_barrier(unsigned mask);
uint64_t warp_exchange_xor(unsigned mask, uint64_t bits, int lane_mask, int width);

// Type-erased kernel launch: `body(args)` runs once per emulated thread.
// Queued on `stream` like any work (emu_runtime.cpp: it runs when the host
// waits for it), or recorded into a graph when `stream` is capturing.
// `pointers` are the launch's pointer arguments (checked against the device).
void launch_erased(const char* name, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                   void (*body)(void*), std::shared_ptr<void> args, const void* const* pointers, size_t npointers);


template <class F, class... A>
struct KernelCall {
  F call;  // [](auto&... a) { kernel(a...); }
  std::tuple<A...> args;
  static void run(void* self) {
    auto* c = static_cast<KernelCall*>(self);
    std::apply(c->call, c->args);
  }
};

// The arguments are copied once, at the launch (as CUDA copies them into the
// launch's parameter buffer), so that a captured launch replays with the
// values it was captured with. `call` is a generic lambda that calls the
// kernel (so that template kernels deduce their arguments as under nvcc).
template <class F, class... A>
void launch(const char* name, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, F call, A&&... args) {
  using Call = KernelCall<F, std::decay_t<A>...>;
  auto c = std::make_shared<Call>(Call{call, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)});
  // The pointer arguments, for the runtime's device check (a struct's pointer members are not seen).
  const void* pointers[sizeof...(A) + 1] = {};
  size_t npointers = 0;
  auto note = [&](const auto& a) {
    if constexpr (std::is_pointer<std::decay_t<decltype(a)>>::value) pointers[npointers++] = a;
  };
  std::apply([&](const auto&... a) { (note(a), ...); }, c->args);
  launch_erased(name, grid, block, shmem, stream, &Call::run, std::static_pointer_cast<void>(c), pointers, npointers);
}

template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "__shfl_xor_sync of an unsupported type");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange_xor(mask, bits, lane_mask, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace deepcore_emu

#define threadIdx (static_cast<const uint3&>(::deepcore_emu::t_thread_idx))
#define blockIdx (static_cast<const uint3&>(::deepcore_emu::t_block_idx))
#define blockDim (static_cast<const dim3&>(::deepcore_emu::t_block_dim))
#define gridDim (static_cast<const dim3&>(::deepcore_emu::t_grid_dim))
#define warpSize 32

// CUDA's math library has these in the global namespace.
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

// The C++ overload of cudaFuncGetAttributes that cuda_runtime.h only declares for nvcc.
template <class T>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}

inline void __syncthreads() { ::deepcore_emu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::deepcore_emu::warp_barrier(mask); }
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::deepcore_emu::shfl_xor(mask, v, lane_mask, width);
}

// Atomics, as compare-and-swap loops on the value's bits: one OS thread runs a
// launch, so a plain read-modify-write would do, but the atomic built-ins let
// the race checker (emu_racecheck.cpp) tell atomic accesses from plain ones.
namespace deepcore_emu {
template <class T, class F>
inline T atomic_update(T* p, F f) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- and 8-byte values only");
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* q = reinterpret_cast<Bits*>(p);
  Bits old_bits = __atomic_load_n(q, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &old_bits, sizeof(T));
    const T next = f(old);
    Bits next_bits;
    std::memcpy(&next_bits, &next, sizeof(T));
    if (__atomic_compare_exchange_n(q, &old_bits, next_bits, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old;
  }
}
}  // namespace deepcore_emu
template <class T>
inline T atomicMin(T* p, T v) {
  return ::deepcore_emu::atomic_update(p, [v](T old) { return v < old ? v : old; });
}
template <class T>
inline T atomicMax(T* p, T v) {
  return ::deepcore_emu::atomic_update(p, [v](T old) { return v > old ? v : old; });
}
template <class T>
inline T atomicAdd(T* p, T v) {
  return ::deepcore_emu::atomic_update(p, [v](T old) { return old + v; });
}

// Round-to-nearest arithmetic intrinsics. nvcc never fuses them into an FMA
// (while it does contract plain a * b + c, as the emulated sources are compiled
// to do where the host has FMA, see CMakeLists.txt): the empty asm statements
// hide the operands and results from the compiler's contraction.
#define DEEPCORE_EMU_OPAQUE(v) __asm__("" : "+x"(v))
inline float __fadd_rn(float a, float b) {
  DEEPCORE_EMU_OPAQUE(a);
  DEEPCORE_EMU_OPAQUE(b);
  float r = a + b;
  DEEPCORE_EMU_OPAQUE(r);
  return r;
}
inline float __fsub_rn(float a, float b) {
  DEEPCORE_EMU_OPAQUE(a);
  DEEPCORE_EMU_OPAQUE(b);
  float r = a - b;
  DEEPCORE_EMU_OPAQUE(r);
  return r;
}
inline float __fmul_rn(float a, float b) {
  DEEPCORE_EMU_OPAQUE(a);
  DEEPCORE_EMU_OPAQUE(b);
  float r = a * b;
  DEEPCORE_EMU_OPAQUE(r);
  return r;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) {
  DEEPCORE_EMU_OPAQUE(a);
  DEEPCORE_EMU_OPAQUE(b);
  double r = a + b;
  DEEPCORE_EMU_OPAQUE(r);
  return r;
}
inline double __dmul_rn(double a, double b) {
  DEEPCORE_EMU_OPAQUE(a);
  DEEPCORE_EMU_OPAQUE(b);
  double r = a * b;
  DEEPCORE_EMU_OPAQUE(r);
  return r;
}
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
