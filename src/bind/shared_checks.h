// Argument rules that the CPU bindings (src/bind/*.cpp) and the CUDA bindings
// (cuda/module.cpp) share, written once on plain shapes and pointers so both
// backends accept and reject exactly the same input with the same words.
#pragma once
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "ops/common.h"
#include "ops/dropout.h"
#include "ops/optimizers.h"

namespace deepcore {
namespace bind {
namespace py = pybind11;

inline const char* optimizer_name(int kind) {
  static const char* names[kNumOpts] = {"SGD", "Adagrad", "RMSprop", "Adam", "Adamax", "Nadam", "Ftrl"};
  return names[kind];
}

// Raises unless every slot the rule reads is given; returns slot2 as the
// kernel must see it (null when the rule's flag leaves it unused).
inline float* require_optimizer_slots(const OptParams& p, float* s0, float* s1, float* s2) {
  const char* opt = optimizer_name(p.kind);
  auto need = [&](bool needed, float* slot, const char* name) {
    if (needed && !slot)
      throw py::value_error(std::string("optimizer_step: ") + opt + " needs the " + name + " slot, got None");
  };
  switch (Opt(p.kind)) {
    case Opt::SGD: need(p.momentum > 0.0f, s0, "velocity (slot0)"); return s2;
    case Opt::Adagrad: need(true, s0, "accumulator (slot0)"); return s2;
    case Opt::RMSprop:
      need(true, s0, "velocity (slot0)");
      need(p.momentum > 0.0f, s1, "momentum (slot1)");
      need(p.centered, s2, "average gradient (slot2)");
      return p.centered ? s2 : nullptr;
    case Opt::Adam:
      need(true, s0, "m (slot0)");
      need(true, s1, "v (slot1)");
      need(p.amsgrad, s2, "vhat (slot2)");
      return p.amsgrad ? s2 : nullptr;
    case Opt::Adamax:
    case Opt::Nadam:
      need(true, s0, "m (slot0)");
      need(true, s1, Opt(p.kind) == Opt::Adamax ? "u (slot1)" : "v (slot1)");
      return s2;
    case Opt::Ftrl:
      need(true, s0, "accumulator (slot0)");
      need(true, s1, "linear (slot1)");
      return s2;
  }
  return s2;
}

// Scalar arguments of the dropout family and BatchNorm.
inline void check_rate(float rate, const char* fn) {
  if (!(rate >= 0.0f && double(rate) <= kMaxDropoutRate))
    throw py::value_error(std::string(fn) + ": rate must be in [0, 1 - 2^-17] (masks use 16-bit draws), got " +
                          std::to_string(rate));
}

inline void check_bounds(float lower, float upper, const char* fn) {
  if (!std::isfinite(lower) || !std::isfinite(upper) || lower > upper)
    throw py::value_error(std::string(fn) + ": need finite lower <= upper, got lower=" + std::to_string(lower) +
                          ", upper=" + std::to_string(upper));
}

inline void check_epsilon(float eps, const char* fn) {
  if (!(eps > 0.0f) || !std::isfinite(eps))
    throw py::value_error(std::string(fn) + ": epsilon must be a positive finite number, got " +
                          std::to_string(eps));
}

// BatchNorm's moving-average momentum.
inline void check_momentum(float momentum, const char* fn) {
  if (!(momentum >= 0.0f && momentum <= 1.0f))
    throw py::value_error(std::string(fn) + ": momentum must be in [0, 1], got " + std::to_string(momentum));
}

inline void check_batch(index_t n, const char* fn) {
  if (n < 2)
    throw py::value_error(std::string(fn) + ": batch statistics need more than one value per feature, got " +
                          std::to_string(n) + " (a batch of one sample cannot be normalized in training mode)");
}

// A learnable scalar passed as a tensor (Swish's beta and its gradient):
// shape () or (1,), so that the kernel reads or writes its one element.
inline void check_scalar_shape(const std::vector<index_t>& shape, const std::string& shape_str, const char* fn,
                               const char* name) {
  if (shape.empty() || (shape.size() == 1 && shape[0] == 1)) return;
  throw py::value_error(std::string(fn) + ": " + name + " must be a scalar tensor of shape () or (1,), got " +
                        shape_str);
}

// PReLU's view of x (batch, d1..dk) and alpha (k dims, 1 at shared axes) as
// x (B, P, S, Q) and alpha (P, Q). Shared axes may form a leading group
// (merged into B) and one more group between unshared ones.
struct PreluView {
  index_t B, P, S, Q;
};

inline PreluView prelu_view_of(const std::vector<index_t>& xs, const std::vector<index_t>& as,
                               const std::string& x_str, const std::string& a_str, const char* fn) {
  if (xs.size() < 2)
    throw py::value_error(std::string(fn) + ": x must have a batch axis and at least one more, got shape " + x_str);
  if (as.size() != xs.size() - 1)
    throw py::value_error(std::string(fn) + ": alpha must have x's shape without the batch axis (1 at shared "
                          "axes); x has shape " + x_str + ", alpha " + a_str);
  // Runs of shared / unshared axes (axes of extent 1 belong to either).
  std::vector<std::pair<bool, index_t>> runs;  // (shared, product of extents)
  index_t B = xs[0];
  for (size_t i = 1; i < xs.size(); ++i) {
    const index_t d = xs[i], a = as[i - 1];
    if (a != 1 && a != d)
      throw py::value_error(std::string(fn) + ": alpha " + a_str + " does not broadcast against x " + x_str +
                            " (each axis must be 1 or match)");
    if (d == 1) continue;
    const bool shared = a == 1;
    if (!runs.empty() && runs.back().first == shared) runs.back().second *= d;
    else runs.push_back({shared, d});
  }
  size_t k = 0;
  if (k < runs.size() && runs[k].first) B *= runs[k++].second;
  PreluView v{B, 1, 1, 1};
  const size_t left = runs.size() - k;
  if (left == 1) v.Q = runs[k].second;
  else if (left == 2) v.P = runs[k].second, v.S = runs[k + 1].second;
  else if (left == 3) v.P = runs[k].second, v.S = runs[k + 1].second, v.Q = runs[k + 2].second;
  else if (left > 3)
    throw py::value_error(std::string(fn) + ": alpha " + a_str + " shares more than one group of non-leading axes "
                          "of x " + x_str + "; shared axes must be contiguous");
  return v;
}

}  // namespace bind
}  // namespace deepcore
