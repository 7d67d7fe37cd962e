// Shared between the emulator's runtime (emu_runtime.cpp) and its kernel
// scheduler (emu_scheduler.cpp). Host emulator only; not a GPU.
#pragma once
#include <cuda_runtime.h>

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
                   void (*body)(void*), std::shared_ptr<void> args);

// Runs every block of the launch on the calling thread (emu_scheduler.cpp).
void run_kernel(const KernelLaunch& k);

// Prints the message (a bug found in a kernel, or an emulator failure) and aborts.
[[noreturn]] void fatal(const std::string& msg);

}  // namespace deepcore_emu
