// What the CUDA runtime can tell about this machine, without failing: device
// count, a reason when no device is usable, device properties.
#pragma once
#include <string>

namespace deepcore {
namespace cuda {

// Number of usable CUDA devices; 0 when there is no driver or no device.
int device_count();
// "" when the current device (or `device`, when >= 0) is usable; otherwise why
// not: no driver, a driver older than the runtime, no device, or a GPU
// architecture this build has no code for.
std::string unavailable_reason(int device = -1);

}  // namespace cuda
}  // namespace deepcore
