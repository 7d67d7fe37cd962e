// Shared between the emulator's runtime (emu_runtime.cpp) and its kernel
// scheduler (emu_scheduler.cpp). Host emulator only; not a GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

namespace deepcore_emu {

// One kernel launch, with its arguments already converted to the kernel's
// parameter types (emu_device.h); a graph keeps it to replay it.
struct KernelLaunch {
  const char* name;
  dim3 grid, block;
  void (*body)(void*);
  std::shared_ptr<void> args;
};

// Declared for device code in emu_device.h (which the runtime does not
// include: its macros, e.g. warpSize, would clash with cudaDeviceProp's fields).
void launch_erased(const char* name, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                   void (*body)(void*), std::shared_ptr<void> args, const void* const* pointers, size_t npointers);

// Runs every block of the launch on the calling thread (emu_scheduler.cpp).
void run_kernel(const KernelLaunch& k);

// Whether p is in a __shared__ variable that has run (emu_scheduler.cpp).
bool in_shared_memory(const void* p);

// The race checker's view of the scheduler (emu_racecheck.cpp, in builds
// with DEEPCORE_EMU_RACECHECK=ON; elsewhere these calls compile to nothing).
#if DEEPCORE_EMU_RACECHECK
namespace racecheck {
void begin_launch(const char* kernel, dim3 grid, dim3 block);
void begin_block(uint32_t linear_block);
void thread_runs(int thread, const char* stack, size_t stack_bytes);  // on this fiber's stack
void thread_stops();                                                  // back in the scheduler
void block_barrier_opened();
void warp_barrier_opened(int warp);
void end_launch();  // reports the launch's races (and aborts) if it had any
// Device memory nothing wrote (initcheck): cudaMalloc marks its bytes, kernel
// stores and the runtime's copies and memsets into them clear them, a kernel
// load of a marked byte is reported at the end of the launch; host_reads
// reports (and aborts) at once, naming `who` (a fake library's GEMM).
void allocated(const void* p, size_t n);
void written(const void* p, size_t n);
void host_reads(const void* p, size_t n, const char* who);
}  // namespace racecheck
#define DEEPCORE_EMU_RACECHECK_CALL(call) ::deepcore_emu::racecheck::call
#else
#define DEEPCORE_EMU_RACECHECK_CALL(call) ((void)0)
#endif

// Prints the message (a bug found in a kernel, or an emulator failure) and aborts.
[[noreturn]] void fatal(const std::string& msg);

}  // namespace deepcore_emu
