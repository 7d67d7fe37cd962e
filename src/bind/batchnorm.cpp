#include "bind/common.h"

namespace deepcore {
namespace bind {

void bind_batchnorm(py::module_& m) {}

}  // namespace bind
}  // namespace deepcore
