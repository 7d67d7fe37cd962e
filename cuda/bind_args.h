// Arguments that the eager bindings (module.cpp) and their CUDA-graph variants
// (graph_bindings.cpp) read and check alike, so both accept and reject the
// same input with the same words (those of the CPU bindings where there is
// one): the optimizer hyperparameters (a deepcore._core.OptParams) and host
// segment tables, the dropout keep mask, the sparse cross-entropy's shapes.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "bind/common.h"
#include "bind/shared_checks.h"
#include "device_buffer.h"
#include "ops/dropout.h"
#include "ops/optimizers.h"

namespace deepcore {
namespace cuda {
namespace py = pybind11;

// The hyperparameters from deepcore._core.OptParams (or any object with its
// fields): the Python optimizers hand both backends the same object.
inline OptParams opt_params(py::handle h, const char* fn) {
  OptParams p;
  const std::pair<const char*, float OptParams::*> floats[] = {
      {"lr", &OptParams::lr}, {"momentum", &OptParams::momentum}, {"beta1", &OptParams::beta1},
      {"beta2", &OptParams::beta2}, {"epsilon", &OptParams::epsilon}, {"c1", &OptParams::c1},
      {"c2", &OptParams::c2}, {"c3", &OptParams::c3}, {"weight_decay", &OptParams::weight_decay},
      {"clipvalue", &OptParams::clipvalue}, {"clipnorm", &OptParams::clipnorm},
      {"global_clipnorm", &OptParams::global_clipnorm}, {"lr_power", &OptParams::lr_power}, {"l1", &OptParams::l1},
      {"l2", &OptParams::l2}, {"l2_shrinkage", &OptParams::l2_shrinkage}, {"ftrl_beta", &OptParams::ftrl_beta}};
  const std::pair<const char*, bool OptParams::*> flags[] = {
      {"nesterov", &OptParams::nesterov}, {"amsgrad", &OptParams::amsgrad}, {"centered", &OptParams::centered}};
  const char* field = "kind";
  try {
    p.kind = h.attr(field).cast<int>();
    for (const auto& [name, member] : floats) field = name, p.*member = h.attr(name).cast<float>();
    for (const auto& [name, member] : flags) field = name, p.*member = h.attr(name).cast<bool>();
  } catch (const py::error_already_set&) {
    throw py::type_error(std::string(fn) + ": hyper must be a deepcore._core.OptParams (or have its fields), got " +
                         py::str(py::type::of(h)).cast<std::string>() + " without a usable '" + field + "'");
  } catch (const py::cast_error&) {
    throw py::type_error(std::string(fn) + ": hyper." + field + " has the wrong type");
  }
  return p;
}

// ValueError for an unknown rule or a learning rate that is not finite and >= 0.
inline void check_opt_params(const OptParams& p) {
  if (p.kind < 0 || p.kind >= kNumOpts)
    throw py::value_error("optimizer_step: unknown optimizer kind " + std::to_string(p.kind));
  const char* opt = bind::optimizer_name(p.kind);
  if (!std::isfinite(p.lr) || p.lr < 0.0f)
    throw py::value_error(std::string("optimizer_step: ") + opt + " learning rate must be finite and >= 0, got " +
                          std::to_string(p.lr));
}

// Checked host segment tables: offsets (nseg + 1 entries, 0 .. n,
// non-decreasing) and optional per-segment l1, l2; all null without offsets.
struct HostSegments {
  py::array offsets, l1, l2;  // kept alive
  const int64_t* op = nullptr;
  const float *l1p = nullptr, *l2p = nullptr;
  index_t nseg = 0;
};

inline HostSegments host_segments(py::object offsets_, py::object l1_, py::object l2_, index_t n, const char* fn) {
  HostSegments h;
  const std::string f = fn;
  if (!offsets_.is_none()) {
    h.offsets = bind::checked<int64_t>(offsets_, fn, "offsets");
    bind::expect_shape(h.offsets, {-1}, fn, "offsets");
    if (h.offsets.shape(0) < 2) throw py::value_error(f + ": offsets needs at least 2 entries (0 and n)");
    h.op = bind::cptr<int64_t>(h.offsets);
    h.nseg = h.offsets.shape(0) - 1;
    if (h.op[0] != 0 || h.op[h.nseg] != n)
      throw py::value_error(f + ": offsets must start at 0 and end at params.size = " + std::to_string(n) + ", got " +
                            std::to_string(h.op[0]) + " .. " + std::to_string(h.op[h.nseg]));
    for (index_t s = 0; s < h.nseg; ++s)
      if (h.op[s + 1] < h.op[s]) throw py::value_error(f + ": offsets must be non-decreasing");
    if (!l1_.is_none()) {
      h.l1 = bind::checked<float>(l1_, fn, "l1");
      bind::expect_shape(h.l1, {h.nseg}, fn, "l1");
      h.l1p = bind::cptr<float>(h.l1);
    }
    if (!l2_.is_none()) {
      h.l2 = bind::checked<float>(l2_, fn, "l2");
      bind::expect_shape(h.l2, {h.nseg}, fn, "l2");
      h.l2p = bind::cptr<float>(h.l2);
    }
  } else if (!l1_.is_none() || !l2_.is_none()) {
    throw py::value_error(f + ": per-segment l1/l2 need offsets");
  }
  return h;
}

// An optional keep bitmask for n elements: an int32 device tensor of
// (n + 31) / 32 words (bit k of word w: element 32 w + k kept), or None.
inline uint32_t* optional_keep_bits(py::handle obj, index_t n, const char* fn) {
  if (obj.is_none()) return nullptr;
  DeviceBuffer& b = dbuf(obj, fn, "mask", "int32");
  const index_t words = keep_bits_words(n);
  if (b.shape() != std::vector<py::ssize_t>{words})
    throw py::value_error(std::string(fn) + ": mask must have shape (" + std::to_string(words) + "), got " +
                          b.shape_str());
  return static_cast<uint32_t*>(b.data());
}

// y_pred (rows, cols), non-empty, and labels (rows,).
inline void check_sparse_ce_shapes(const DeviceBuffer& pred, const DeviceBuffer& labels, const char* fn) {
  if (pred.shape().size() != 2)
    throw py::value_error(std::string(fn) + ": y_pred must have shape (any, any), got " + pred.shape_str());
  if (labels.shape() != std::vector<py::ssize_t>{pred.shape()[0]})
    throw py::value_error(std::string(fn) + ": labels must have shape (" + std::to_string(pred.shape()[0]) +
                          "), got " + labels.shape_str());
  if (pred.size() == 0) throw py::value_error(std::string(fn) + ": y_pred is empty");
}

}  // namespace cuda
}  // namespace deepcore
