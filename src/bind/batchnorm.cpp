// Bindings for the batchnorm op family: x is (A, C) or (A, C, B) float32 (see
// ops/batchnorm.h); per-feature arrays are (C,). Hyperparameters are checked
// here too, so a bad epsilon or momentum is a ValueError, never a NaN later.
#include <cmath>
#include <string>
#include <tuple>

#include "bind/common.h"
#include "bind/shared_checks.h"
#include "ops/batchnorm.h"

namespace deepcore {
namespace bind {
namespace {

// (A, C, B) of an input viewed as (A, C) or (A, C, B).
std::tuple<index_t, index_t, index_t> acb(const py::array& x, const char* fn, const char* name) {
  if (x.ndim() != 2 && x.ndim() != 3)
    throw py::value_error(std::string(fn) + ": " + name + " must have shape (A, C) or (A, C, B), got " +
                          shape_str(x));
  return {x.shape(0), x.shape(1), x.ndim() == 3 ? x.shape(2) : 1};
}

// A (C,) float32 array, or nullptr for None when optional.
std::pair<py::array, float*> per_feature(py::handle obj, index_t C, const char* fn, const char* name,
                                         bool writable, bool optional) {
  if (optional && obj.is_none()) return {py::array(), nullptr};
  py::array a = checked<float>(obj, fn, name, writable);
  expect_shape(a, {C}, fn, name);
  return {a, static_cast<float*>(const_cast<void*>(a.data()))};
}



}  // namespace

void bind_batchnorm(py::module_& m) {
  m.def("batchnorm_forward_train", [](py::handle x_, py::object gamma_, py::object beta_, py::handle y_,
                                      py::handle mean_, py::handle inv_std_, py::handle mm_, py::handle mv_,
                                      float epsilon, float momentum) {
    const char* fn = "batchnorm_forward_train";
    check_epsilon(epsilon, fn);
    check_momentum(momentum, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    auto [g, gp] = per_feature(gamma_, C, fn, "gamma", false, true);
    auto [b, bp] = per_feature(beta_, C, fn, "beta", false, true);
    auto [mu, mup] = per_feature(mean_, C, fn, "mean", true, false);
    auto [is, isp] = per_feature(inv_std_, C, fn, "inv_std", true, false);
    auto [mm, mmp] = per_feature(mm_, C, fn, "moving_mean", true, false);
    auto [mv, mvp] = per_feature(mv_, C, fn, "moving_var", true, false);
    check_batch(A * B, fn);
    py::gil_scoped_release nogil;
    batchnorm_forward_train(cptr<float>(x), gp, bp, ptr<float>(y), mup, isp, mmp, mvp, A, C, B, epsilon, momentum);
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("y"), py::arg("mean"), py::arg("inv_std"),
     py::arg("moving_mean"), py::arg("moving_var"), py::arg("epsilon"), py::arg("momentum"),
     "Training forward: y = gamma (x - mu) / sqrt(var + eps) + beta with batch statistics over A and B; "
     "writes mean and inv_std, updates moving_mean / moving_var in place. gamma, beta may be None.");

  m.def("batchnorm_forward_inference", [](py::handle x_, py::object gamma_, py::object beta_, py::handle mm_,
                                          py::handle mv_, py::handle y_, float epsilon) {
    const char* fn = "batchnorm_forward_inference";
    check_epsilon(epsilon, fn);
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    auto [g, gp] = per_feature(gamma_, C, fn, "gamma", false, true);
    auto [b, bp] = per_feature(beta_, C, fn, "beta", false, true);
    auto [mm, mmp] = per_feature(mm_, C, fn, "moving_mean", false, false);
    auto [mv, mvp] = per_feature(mv_, C, fn, "moving_var", false, false);
    py::gil_scoped_release nogil;
    batchnorm_forward_inference(cptr<float>(x), gp, bp, mmp, mvp, ptr<float>(y), A, C, B, epsilon);
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("moving_mean"), py::arg("moving_var"), py::arg("y"),
     py::arg("epsilon"), "Inference forward: y = (x - moving_mean) gamma / sqrt(moving_var + eps) + beta.");

  m.def("batchnorm_backward", [](py::handle x_, py::handle dy_, py::object gamma_, py::handle mean_,
                                 py::handle inv_std_, py::object dx_, py::object dgamma_, py::object dbeta_) {
    const char* fn = "batchnorm_backward";
    py::array x = checked<float>(x_, fn, "x"), dy = checked<float>(dy_, fn, "dy");
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, dy, fn, "x", "dy");
    auto [g, gp] = per_feature(gamma_, C, fn, "gamma", false, true);
    auto [mu, mup] = per_feature(mean_, C, fn, "mean", false, false);
    auto [is, isp] = per_feature(inv_std_, C, fn, "inv_std", false, false);
    auto [dx, dxp] = optional_output_like(dx_, x, fn, "dx", "x");
    auto [dg, dgp] = per_feature(dgamma_, C, fn, "dgamma", true, true);
    auto [db, dbp] = per_feature(dbeta_, C, fn, "dbeta", true, true);
    check_batch(A * B, fn);
    py::gil_scoped_release nogil;
    batchnorm_backward(cptr<float>(x), cptr<float>(dy), gp, mup, isp, dxp, dgp, dbp, A, C, B);
  }, py::arg("x"), py::arg("dy"), py::arg("gamma"), py::arg("mean"), py::arg("inv_std"), py::arg("dx"),
     py::arg("dgamma"), py::arg("dbeta"),
     "Backward of batchnorm_forward_train: dbeta = sum dy, dgamma = sum dy xhat, "
     "dx = gamma inv_std (dy - mean(dy) - xhat mean(dy xhat)). dx, dgamma, dbeta, gamma may be None.");

  m.def("channel_affine", [](py::handle x_, py::object center_, py::handle scale_, py::object offset_,
                             py::handle y_) {
    const char* fn = "channel_affine";
    py::array x = checked<float>(x_, fn, "x"), y = checked<float>(y_, fn, "y", true);
    auto [A, C, B] = acb(x, fn, "x");
    same_shape(x, y, fn, "x", "y");
    auto [m0, cp] = per_feature(center_, C, fn, "center", false, true);
    auto [s, sp] = per_feature(scale_, C, fn, "scale", false, false);
    auto [o, op] = per_feature(offset_, C, fn, "offset", false, true);
    py::gil_scoped_release nogil;
    channel_affine(cptr<float>(x), cp, sp, op, ptr<float>(y), A, C, B);
  }, py::arg("x"), py::arg("center"), py::arg("scale"), py::arg("offset"), py::arg("y"),
     "y = (x - center) * scale + offset per feature (center, offset may be None).");
}

}  // namespace bind
}  // namespace deepcore
