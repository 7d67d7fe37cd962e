#include "bind/common.h"

namespace deepcore {
namespace bind {

void bind_training(py::module_& m) {}

}  // namespace bind
}  // namespace deepcore
