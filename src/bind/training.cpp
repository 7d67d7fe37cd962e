// Bindings for the training step's tail: the fused multi-tensor optimizer
// update (penalties, clipping, weight decay and the rule in one call) and the
// MaxNorm constraint.
#include <pybind11/stl.h>

#include <cmath>

#include "bind/common.h"
#include "bind/shared_checks.h"
#include "ops/optimizers.h"

namespace deepcore {
namespace bind {

void bind_training(py::module_& m) {
  py::class_<OptParams>(m, "OptParams", "Hyperparameters of one optimizer step (see src/ops/optimizers.h).")
      .def(py::init<>())
      .def_readwrite("kind", &OptParams::kind)
      .def_readwrite("lr", &OptParams::lr)
      .def_readwrite("momentum", &OptParams::momentum)
      .def_readwrite("beta1", &OptParams::beta1)
      .def_readwrite("beta2", &OptParams::beta2)
      .def_readwrite("epsilon", &OptParams::epsilon)
      .def_readwrite("nesterov", &OptParams::nesterov)
      .def_readwrite("amsgrad", &OptParams::amsgrad)
      .def_readwrite("centered", &OptParams::centered)
      .def_readwrite("c1", &OptParams::c1)
      .def_readwrite("c2", &OptParams::c2)
      .def_readwrite("c3", &OptParams::c3)
      .def_readwrite("weight_decay", &OptParams::weight_decay)
      .def_readwrite("clipvalue", &OptParams::clipvalue)
      .def_readwrite("clipnorm", &OptParams::clipnorm)
      .def_readwrite("global_clipnorm", &OptParams::global_clipnorm)
      .def_readwrite("lr_power", &OptParams::lr_power)
      .def_readwrite("l1", &OptParams::l1)
      .def_readwrite("l2", &OptParams::l2)
      .def_readwrite("l2_shrinkage", &OptParams::l2_shrinkage)
      .def_readwrite("ftrl_beta", &OptParams::ftrl_beta);

  m.def(
      "optimizer_step",
      [](const OptParams& p, py::handle w_, py::handle g_, py::object s0_, py::object s1_, py::object s2_,
         py::object offsets_, py::object l1_, py::object l2_, bool want_norm) {
        const char* fn = "optimizer_step";
        if (p.kind < 0 || p.kind >= kNumOpts)
          throw py::value_error("optimizer_step: unknown optimizer kind " + std::to_string(p.kind));
        const char* opt = optimizer_name(p.kind);
        if (!std::isfinite(p.lr) || p.lr < 0.0f)
          throw py::value_error(std::string("optimizer_step: ") + opt + " learning rate must be finite and >= 0, got " +
                                std::to_string(p.lr));
        py::array w = checked<float>(w_, fn, "params", true), g = checked<float>(g_, fn, "grads");
        same_shape(w, g, fn, "params", "grads");
        auto [s0, p0] = optional_output_like(s0_, w, fn, "slot0", "params");
        auto [s1, p1] = optional_output_like(s1_, w, fn, "slot1", "params");
        auto [s2, p2] = optional_output_like(s2_, w, fn, "slot2", "params");
        p2 = require_optimizer_slots(p, p0, p1, p2);
        const index_t n = index_t(w.size());
        py::array offsets, l1, l2;
        const int64_t* op = nullptr;
        const float *l1p = nullptr, *l2p = nullptr;
        index_t nseg = 0;
        if (!offsets_.is_none()) {
          offsets = checked<int64_t>(offsets_, fn, "offsets");
          expect_shape(offsets, {-1}, fn, "offsets");
          if (offsets.shape(0) < 2) throw py::value_error("optimizer_step: offsets needs at least 2 entries (0 and n)");
          op = cptr<int64_t>(offsets);
          nseg = offsets.shape(0) - 1;
          if (op[0] != 0 || op[nseg] != n)
            throw py::value_error("optimizer_step: offsets must start at 0 and end at params.size = " +
                                  std::to_string(n) + ", got " + std::to_string(op[0]) + " .. " +
                                  std::to_string(op[nseg]));
          for (index_t s = 0; s < nseg; ++s)
            if (op[s + 1] < op[s]) throw py::value_error("optimizer_step: offsets must be non-decreasing");
          if (!l1_.is_none()) {
            l1 = checked<float>(l1_, fn, "l1");
            expect_shape(l1, {nseg}, fn, "l1");
            l1p = cptr<float>(l1);
          }
          if (!l2_.is_none()) {
            l2 = checked<float>(l2_, fn, "l2");
            expect_shape(l2, {nseg}, fn, "l2");
            l2p = cptr<float>(l2);
          }
        } else if (!l1_.is_none() || !l2_.is_none()) {
          throw py::value_error("optimizer_step: per-segment l1/l2 need offsets");
        }
        double norm = NAN, penalty;
        {
          py::gil_scoped_release nogil;
          penalty = optimizer_step(p, ptr<float>(w), cptr<float>(g), p0, p1, p2, n, op, nseg, l1p, l2p,
                                   want_norm ? &norm : nullptr);
        }
        return py::make_tuple(penalty, want_norm ? py::object(py::float_(norm)) : py::object(py::none()));
      },
      py::arg("hyper"), py::arg("params"), py::arg("grads"), py::arg("slot0"), py::arg("slot1"), py::arg("slot2"), py::arg("offsets"),
      py::arg("l1"), py::arg("l2"), py::arg("want_norm") = false,
      "One fused update of all parameters; returns (penalty, gradient norm or None).");

  m.def(
      "max_norm",
      [](py::handle w_, int first_axis, int last_axis, float max_value) {
        const char* fn = "max_norm";
        py::array w = checked<float>(w_, fn, "w", true);
        if (!(max_value >= 0.0f) || !std::isfinite(max_value))
          throw py::value_error("max_norm: max_value must be finite and >= 0, got " + std::to_string(max_value));
        const int nd = int(w.ndim());
        if (nd == 0) throw py::value_error("max_norm: w must have at least one dimension");
        if (first_axis < 0 || last_axis >= nd || first_axis > last_axis)
          throw py::value_error("max_norm: axes " + std::to_string(first_axis) + ".." + std::to_string(last_axis) +
                                " do not exist for a tensor of rank " + std::to_string(nd));
        index_t outer = 1, r = 1, inner = 1;
        for (int a = 0; a < nd; ++a)
          (a < first_axis ? outer : a <= last_axis ? r : inner) *= index_t(w.shape(a));
        py::gil_scoped_release nogil;
        max_norm(ptr<float>(w), outer, r, inner, max_value);
      },
      py::arg("w"), py::arg("first_axis"), py::arg("last_axis"), py::arg("max_value"),
      "Rescale, in place, each vector along axes first..last whose L2 norm exceeds max_value.");
}

}  // namespace bind
}  // namespace deepcore
