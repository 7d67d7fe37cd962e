// The DLPack declarations deepcore needs, written to the exact layout of
// dlpack.h v1.0 (https://github.com/dmlc/dlpack, Apache-2.0), so that
// DeviceBuffer can export and import tensors without the header. Only add
// fields in the order and types of that header: other libraries read these
// structs through their own copy of it.
#pragma once
#include <cstdint>

namespace deepcore {
namespace cuda {
namespace dlpack {

extern "C" {

// The version deepcore speaks (DLPACK_MAJOR_VERSION / DLPACK_MINOR_VERSION).
constexpr uint32_t kMajorVersion = 1;
constexpr uint32_t kMinorVersion = 0;

typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

// DLDeviceType is a C enum (int-sized); only the values used here.
typedef int32_t DLDeviceType;
constexpr DLDeviceType kDLCPU = 1;
constexpr DLDeviceType kDLCUDA = 2;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

// DLDataTypeCode values.
constexpr uint8_t kDLInt = 0;
constexpr uint8_t kDLUInt = 1;
constexpr uint8_t kDLFloat = 2;

typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

typedef struct {
  void* data;  // the producer's pointer; the tensor starts byte_offset bytes further
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;    // ndim entries (may be null when ndim == 0)
  int64_t* strides;  // in elements; null means C-contiguous (allowed before v1.2)
  uint64_t byte_offset;
} DLTensor;

// Capsule "dltensor" (renamed "used_dltensor" by the consumer that takes it).
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensor* self);
} DLManagedTensor;

constexpr uint64_t kFlagReadOnly = uint64_t(1) << 0;  // DLPACK_FLAG_BITMASK_READ_ONLY
constexpr uint64_t kFlagIsCopied = uint64_t(1) << 1;  // DLPACK_FLAG_BITMASK_IS_COPIED

// Capsule "dltensor_versioned" (renamed "used_dltensor_versioned"), DLPack >= 1.0.
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;

}  // extern "C"

// Layout checks against dlpack.h v1.0 on LP64 (x86-64, aarch64).
static_assert(sizeof(DLDevice) == 8, "DLDevice layout");
static_assert(sizeof(DLDataType) == 4, "DLDataType layout");
static_assert(sizeof(DLTensor) == 48, "DLTensor layout");
static_assert(sizeof(DLManagedTensor) == 64, "DLManagedTensor layout");
static_assert(sizeof(DLManagedTensorVersioned) == 80, "DLManagedTensorVersioned layout");

}  // namespace dlpack
}  // namespace cuda
}  // namespace deepcore
