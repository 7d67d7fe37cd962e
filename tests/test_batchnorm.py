"""BatchNormalization: the batchnorm kernels (deepcore._core.batchnorm_*) and the
layer, against a float64 NumPy reference, central finite differences and
PyTorch's BatchNorm1d.

Kernels see the input as (A, C, B) with statistics per feature c over A and B
(ops/batchnorm.h). Backward is checked on the scalar L = sum(w * bn(x)) for a
fixed random w: the float32 dx, dgamma, dbeta against central differences of
the float64 reference.
"""
import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore import Activation, BatchNormalization, Dense, Input, Sequential, optimizers
from finite_differences import central_difference as fd

EPS = 1e-3


# --------------------------------------------------------------------------
# float64 reference
# --------------------------------------------------------------------------
def bn_ref(x3, gamma, beta, eps=EPS):
    """Training forward on an (A, C, B) array: (y, mean, biased var)."""
    x3 = np.asarray(x3, np.float64)
    mu = x3.mean(axis=(0, 2))
    var = x3.var(axis=(0, 2))
    g = np.ones_like(mu) if gamma is None else np.asarray(gamma, np.float64)
    b = np.zeros_like(mu) if beta is None else np.asarray(beta, np.float64)
    y = g[:, None] * (x3 - mu[:, None]) / np.sqrt(var[:, None] + eps) + b[:, None]
    return y, mu, var


def problem(shape, seed=0, loc=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.normal(size=shape) * scale + loc).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, c).astype(np.float32)
    beta = rng.normal(size=c).astype(np.float32)
    return x, gamma, beta


def train_forward(x, gamma, beta, mm=None, mv=None, eps=EPS, momentum=0.99):
    c = x.shape[1]
    y = np.full_like(x, np.nan)
    mean, inv_std = np.full(c, np.nan, np.float32), np.full(c, np.nan, np.float32)
    mm = np.zeros(c, np.float32) if mm is None else mm
    mv = np.ones(c, np.float32) if mv is None else mv
    C.batchnorm_forward_train(x, gamma, beta, y, mean, inv_std, mm, mv, eps, momentum)
    return y, mean, inv_std, mm, mv


def close32(got, ref, rtol=1e-4):
    ref = np.asarray(ref)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(1.0, float(np.abs(ref).max())))


SHAPES = [pytest.param((32, 7), id="dense-32x7"), pytest.param((5, 3, 8), id="spatial-5x3x8"),
          pytest.param((2, 4, 1), id="B1-3d"), pytest.param((3, 2, 700), id="B-over-span-block")]


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_forward_train_matches_float64_reference(shape):
    x, gamma, beta = problem(shape, 1)
    y, mean, inv_std, mm, mv = train_forward(x, gamma, beta)
    x3 = x.reshape(shape if len(shape) == 3 else shape + (1,))
    y_ref, mu, var = bn_ref(x3, gamma, beta)
    close32(y.reshape(x3.shape), y_ref, 1e-5)
    close32(mean, mu, 1e-6)
    close32(inv_std, 1 / np.sqrt(var + EPS), 1e-6)


def test_batchnorm_forward_train_is_accurate_far_from_zero():
    # mean 1000, std 0.01: a naive float32 E[x^2] - E[x]^2 would lose the variance entirely.
    x, gamma, beta = problem((256, 5), 2, loc=1000.0, scale=0.01)
    y, mean, inv_std, _, _ = train_forward(x, gamma, beta, eps=1e-6)
    y_ref, mu, var = bn_ref(x[:, :, None], gamma, beta, eps=1e-6)
    close32(inv_std, 1 / np.sqrt(var + 1e-6), 1e-4)
    np.testing.assert_allclose(y, y_ref[:, :, 0], atol=2e-3 * np.abs(y_ref).max())


def test_batchnorm_moving_statistics_follow_keras_update_with_biased_variance():
    rng = np.random.default_rng(3)
    mm, mv = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    mm64, mv64 = mm.astype(np.float64), mv.astype(np.float64)
    for step in range(5):
        x, gamma, beta = problem((16, 4), 10 + step, loc=step, scale=1 + step)
        train_forward(x, gamma, beta, mm, mv, momentum=0.9)
        _, mu, var = bn_ref(x[:, :, None], gamma, beta)
        mm64 = mm64 * 0.9 + mu * 0.1
        mv64 = mv64 * 0.9 + var * 0.1  # biased, as Keras
    close32(mm, mm64, 1e-5)
    close32(mv, mv64, 1e-5)


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_batchnorm_momentum_bounds_replace_or_keep_moving_statistics(momentum):
    x, gamma, beta = problem((8, 3), 4)
    mm, mv = np.full(3, 7.0, np.float32), np.full(3, 5.0, np.float32)
    train_forward(x, gamma, beta, mm, mv, momentum=momentum)
    _, mu, var = bn_ref(x[:, :, None], gamma, beta)
    close32(mm, mu if momentum == 0 else np.full(3, 7.0), 1e-6)
    close32(mv, var if momentum == 0 else np.full(3, 5.0), 1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_forward_inference_uses_moving_statistics(shape):
    x, gamma, beta = problem(shape, 5)
    rng = np.random.default_rng(6)
    c = shape[1]
    mm, mv = rng.normal(size=c).astype(np.float32), rng.uniform(0.1, 3, c).astype(np.float32)
    y = np.full_like(x, np.nan)
    C.batchnorm_forward_inference(x, gamma, beta, mm, mv, y, EPS)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    ref = (gamma.reshape(bshape) * (x - mm.reshape(bshape).astype(np.float64))
           / np.sqrt(mv.reshape(bshape).astype(np.float64) + EPS) + beta.reshape(bshape))
    close32(y, ref, 1e-5)


def test_batchnorm_without_gamma_or_beta_is_gamma_one_beta_zero():
    x, _, _ = problem((10, 4), 7)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    y_none = train_forward(x, None, None)[0]
    y_full = train_forward(x, ones, zeros)[0]
    np.testing.assert_array_equal(y_none, y_full)
    close32(y_none, bn_ref(x[:, :, None], None, None)[0][:, :, 0], 1e-5)


def test_batchnorm_output_may_alias_input():
    x, gamma, beta = problem((12, 5), 8)
    y_ref = train_forward(x, gamma, beta)[0]
    xy = x.copy()
    C.batchnorm_forward_train(xy, gamma, beta, xy, np.empty(5, np.float32), np.empty(5, np.float32),
                              np.zeros(5, np.float32), np.ones(5, np.float32), EPS, 0.99)
    np.testing.assert_array_equal(xy, y_ref)


@pytest.mark.parametrize("shape", [(4096, 300), (64, 16, 1100)], ids=["parallel-B1", "parallel-B"])
def test_batchnorm_large_tensors_take_the_parallel_path_and_match_reference(shape):
    assert np.prod(shape) >= 1 << 20  # kParallelThreshold
    x, gamma, beta = problem(shape, 9, loc=2.0)
    y, mean, inv_std, _, _ = train_forward(x, gamma, beta)
    x3 = x.reshape(shape if len(shape) == 3 else shape + (1,))
    y_ref, mu, var = bn_ref(x3, gamma, beta)
    close32(y.reshape(x3.shape), y_ref, 1e-5)
    dy = np.random.default_rng(10).normal(size=shape).astype(np.float32)
    dx, dg, db = np.empty_like(x), np.empty(shape[1], np.float32), np.empty(shape[1], np.float32)
    C.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dg, db)
    dy3 = dy.reshape(x3.shape).astype(np.float64)
    xhat = (x3 - mu[:, None]) / np.sqrt(var[:, None] + EPS)
    n = x3.shape[0] * x3.shape[2]
    db_ref = dy3.sum(axis=(0, 2))
    dg_ref = (dy3 * xhat).sum(axis=(0, 2))
    dx_ref = gamma[:, None] / np.sqrt(var[:, None] + EPS) * (dy3 - db_ref[:, None] / n - xhat * dg_ref[:, None] / n)
    close32(db, db_ref, 1e-4)
    close32(dg, dg_ref, 1e-4)
    close32(dx.reshape(x3.shape), dx_ref, 1e-4)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5)], ids=["dense", "spatial"])
@pytest.mark.parametrize("with_gamma", [True, False], ids=["gamma", "no-gamma"])
def test_batchnorm_backward_matches_finite_differences(shape, with_gamma):
    x, gamma, beta = problem(shape, 11, loc=0.5, scale=2.0)
    g = gamma if with_gamma else None
    w = np.random.default_rng(12).normal(size=shape)
    y, mean, inv_std, _, _ = train_forward(x, g, beta)
    dy = w.astype(np.float32)
    dx, dgamma, dbeta = np.full_like(x, np.nan), np.full(shape[1], np.nan, np.float32), \
        np.full(shape[1], np.nan, np.float32)
    C.batchnorm_backward(x, dy, g, mean, inv_std, dx, dgamma, dbeta)

    x64, g64, b64 = x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64)
    as3 = (lambda a: a.reshape(shape + (1,))) if len(shape) == 2 else (lambda a: a)

    def loss(x_, g_, b_):
        return float(np.sum(as3(w) * bn_ref(as3(x_), g_ if with_gamma else None, b_)[0]))

    close32(dx, fd(lambda a: loss(a, g64, b64), x64), 1e-3)
    close32(dbeta, fd(lambda a: loss(x64, g64, a), b64), 1e-3)
    if with_gamma:
        close32(dgamma, fd(lambda a: loss(x64, a, b64), g64), 1e-3)


def test_batchnorm_backward_optional_outputs_and_dx_aliasing_dy():
    x, gamma, beta = problem((9, 3), 13)
    _, mean, inv_std, _, _ = train_forward(x, gamma, beta)
    dy = np.random.default_rng(14).normal(size=x.shape).astype(np.float32)
    dx, dg, db = np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32)
    C.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dg, db)
    dg2 = np.empty(3, np.float32)
    C.batchnorm_backward(x, dy, gamma, mean, inv_std, None, dg2, None)
    np.testing.assert_array_equal(dg2, dg)
    g = dy.copy()
    C.batchnorm_backward(x, g, gamma, mean, inv_std, g, None, None)
    np.testing.assert_array_equal(g, dx)


# --------------------------------------------------------------------------
# bad input at the binding
# --------------------------------------------------------------------------
def _train_args(**over):
    kw = dict(x=np.zeros((4, 3), np.float32), gamma=np.ones(3, np.float32), beta=np.zeros(3, np.float32),
              y=np.zeros((4, 3), np.float32), mean=np.zeros(3, np.float32), inv_std=np.zeros(3, np.float32),
              moving_mean=np.zeros(3, np.float32), moving_var=np.ones(3, np.float32), epsilon=EPS, momentum=0.99)
    kw.update(over)
    return kw


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_batchnorm_kernel_rejects_non_positive_epsilon(eps):
    with pytest.raises(ValueError, match="epsilon"):
        C.batchnorm_forward_train(**_train_args(epsilon=eps))
    with pytest.raises(ValueError, match="epsilon"):
        C.batchnorm_forward_inference(np.zeros((4, 3), np.float32), None, None, np.zeros(3, np.float32),
                                      np.ones(3, np.float32), np.zeros((4, 3), np.float32), eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_batchnorm_kernel_rejects_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match="momentum"):
        C.batchnorm_forward_train(**_train_args(momentum=momentum))


def test_batchnorm_kernel_rejects_a_batch_of_one():
    kw = _train_args(x=np.zeros((1, 3), np.float32), y=np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="batch of one"):
        C.batchnorm_forward_train(**kw)


@pytest.mark.parametrize("arg,bad,exc,words", [
    ("x", np.zeros((4, 3), np.float64), TypeError, ["x", "float32", "float64"]),
    ("x", np.zeros(12, np.float32), ValueError, ["x", "(12,)"]),
    ("x", np.zeros((4, 3, 1, 1), np.float32), ValueError, ["x", "(4, 3, 1, 1)"]),
    ("x", np.zeros((4, 6), np.float32)[:, ::2], ValueError, ["x", "C-contiguous"]),
    ("x", [[0.0] * 3] * 4, TypeError, ["x"]),
    ("y", np.zeros((3, 4), np.float32), ValueError, ["y", "(4, 3)", "(3, 4)"]),
    ("gamma", np.ones(4, np.float32), ValueError, ["gamma", "(3)", "(4,)"]),
    ("beta", np.ones((3, 1), np.float32), ValueError, ["beta", "(3, 1)"]),
    ("moving_var", np.ones(3, np.float64), TypeError, ["moving_var", "float64"]),
    ("mean", None, TypeError, ["mean"]),
])
def test_batchnorm_kernel_bad_arrays_raise_naming_the_argument(arg, bad, exc, words):
    with pytest.raises(exc) as ei:
        C.batchnorm_forward_train(**_train_args(**{arg: bad}))
    for w in words:
        assert w in str(ei.value), str(ei.value)


def test_batchnorm_kernel_read_only_moving_statistics_are_value_errors():
    mv = np.ones(3, np.float32)
    mv.setflags(write=False)
    with pytest.raises(ValueError, match="moving_var must be writable"):
        C.batchnorm_forward_train(**_train_args(moving_var=mv))


def test_batchnorm_backward_kernel_bad_shapes_raise():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="dy"):
        C.batchnorm_backward(x, np.zeros((4, 2), np.float32), None, np.zeros(3, np.float32),
                             np.ones(3, np.float32), None, None, None)
    with pytest.raises(ValueError, match="dgamma"):
        C.batchnorm_backward(x, x, None, np.zeros(3, np.float32), np.ones(3, np.float32), None,
                             np.zeros(2, np.float32), None)
    with pytest.raises(ValueError, match="batch of one"):
        C.batchnorm_backward(x[:1], x[:1], None, np.zeros(3, np.float32), np.ones(3, np.float32), None, None,
                             None)


# --------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------
def test_layer_training_forward_normalizes_with_batch_statistics_and_updates_moving_ones():
    x, _, _ = problem((32, 6), 20, loc=3.0, scale=2.0)
    bn = BatchNormalization(momentum=0.8)
    y = bn(x, training=True)
    y_ref, mu, var = bn_ref(x[:, :, None], None, None)
    close32(y, y_ref[:, :, 0], 1e-5)
    close32(bn.moving_mean.value, 0.2 * mu, 1e-5)
    close32(bn.moving_variance.value, 0.8 + 0.2 * var, 1e-5)
    # inference uses the moving statistics and leaves them alone
    before = bn.moving_mean.numpy()
    y_inf = bn(x, training=False)
    close32(y_inf, (x - 0.2 * mu) / np.sqrt(0.8 + 0.2 * var + EPS), 1e-5)
    np.testing.assert_array_equal(bn.moving_mean.value, before)


def test_layer_weights_are_gamma_beta_then_non_trainable_moving_statistics():
    bn = BatchNormalization()
    bn(np.zeros((2, 5), np.float32))
    assert [v.name for v in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.name for v in bn.trainable_weights] == ["gamma", "beta"]
    assert bn.count_params() == 20


@pytest.mark.parametrize("center,scale,names", [
    (False, True, ["gamma"]), (True, False, ["beta"]), (False, False, [])])
def test_layer_center_scale_false_drop_beta_or_gamma(center, scale, names):
    x, gamma, beta = problem((16, 3), 21, loc=1.0)
    bn = BatchNormalization(center=center, scale=scale, gamma_initializer=dc.initializers.Constant(2.0),
                            beta_initializer=dc.initializers.Constant(0.5))
    y = bn(x, training=True)
    assert [v.name for v in bn.trainable_weights] == names
    ref = bn_ref(x[:, :, None], np.full(3, 2.0) if scale else None, np.full(3, 0.5) if center else None)[0]
    close32(y, ref[:, :, 0], 1e-5)
    dy = np.random.default_rng(22).normal(size=x.shape).astype(np.float32)
    dx = bn.backward(dy)
    w = dy.astype(np.float64)

    def loss(x_):
        return float(np.sum(w * bn_ref(x_[:, :, None], np.full(3, 2.0) if scale else None,
                                       np.full(3, 0.5) if center else None)[0][:, :, 0]))
    close32(dx, fd(loss, x.astype(np.float64)), 1e-3)


def _layer_fd_check(bn, x, seed, kept_axes):
    """Layer backward (dx, gamma.grad, beta.grad) against central differences of a
    float64 reference that keeps `kept_axes` and reduces over the others."""
    y = bn(x, training=True)
    w = np.random.default_rng(seed).normal(size=x.shape)
    dx = bn.backward(w.astype(np.float32)).copy()
    red = tuple(a for a in range(x.ndim) if a not in kept_axes)
    pshape = tuple(x.shape[a] for a in kept_axes)
    bshape = tuple(x.shape[a] if a in kept_axes else 1 for a in range(x.ndim))

    def ref(x_, g_, b_):
        mu, var = x_.mean(axis=red, keepdims=True), x_.var(axis=red, keepdims=True)
        return g_.reshape(bshape) * (x_ - mu) / np.sqrt(var + EPS) + b_.reshape(bshape)

    x64, g64, b64 = x.astype(np.float64), bn.gamma.value.astype(np.float64), bn.beta.value.astype(np.float64)
    assert bn.gamma.shape == pshape
    close32(y, ref(x64, g64, b64), 1e-5)
    close32(dx, fd(lambda a: float(np.sum(w * ref(a, g64, b64))), x64), 1e-3)
    close32(bn.gamma.grad, fd(lambda a: float(np.sum(w * ref(x64, a, b64))), g64), 1e-3)
    close32(bn.beta.grad, fd(lambda a: float(np.sum(w * ref(x64, g64, a))), b64), 1e-3)


@pytest.mark.parametrize("axis,kept", [
    ([1, 2], (1, 2)),     # adjacent: (H, W) parameters, a reshape
    ([1, 3], (1, 3)),     # not adjacent: transposed
    (-1, (3,)),           # channels last on images
    (1, (1,)),            # channels first: B = W*C > 1
    ([-3, -1], (1, 3)),   # negative axes
])
def test_layer_axis_int_or_list_matches_finite_differences(axis, kept):
    x, _, _ = problem((3, 4, 2, 5), 23, loc=1.0)
    bn = BatchNormalization(axis=axis, gamma_initializer=dc.initializers.RandomUniform(0.5, 2.0, seed=1),
                            beta_initializer=dc.initializers.RandomNormal(0, 1, seed=2))
    _layer_fd_check(bn, x, 24, kept)


def test_layer_frozen_uses_moving_statistics_in_training():
    x, _, _ = problem((16, 4), 25, loc=2.0)
    bn = BatchNormalization()
    bn(x, training=True)
    bn.trainable = False
    mm = bn.moving_mean.numpy()
    y = bn(x, training=True)
    close32(y, bn(x, training=False), 1e-7)
    np.testing.assert_array_equal(bn.moving_mean.value, mm)
    dy = np.ones_like(x)
    close32(bn.backward(dy), np.broadcast_to(1 / np.sqrt(bn.moving_variance.value + EPS), x.shape), 1e-6)


@pytest.mark.parametrize("shape,axis", [((16, 4), -1), ((6, 3, 5), 1), ((6, 5, 3), -1)])
def test_frozen_layer_backward_is_dy_times_gamma_over_moving_std(shape, axis):
    """A frozen layer is y = x * s + const with s = gamma / sqrt(moving_variance + eps):
    dx = dy * s, against a float64 reference with a non-trivial gamma and moving variance."""
    rng = np.random.default_rng(31)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    bn = BatchNormalization(axis=axis)
    bn(x, training=True)
    c = bn.gamma.value.shape
    bn.gamma.assign(rng.uniform(-2, 2, size=c).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.01, 4, size=c).astype(np.float32))
    bn.trainable = False
    bn(x, training=True)
    dy = rng.normal(size=shape).astype(np.float32)
    feat = [1] * len(shape)
    feat[axis] = -1
    s = (bn.gamma.value.astype(np.float64) / np.sqrt(bn.moving_variance.value.astype(np.float64) + EPS)).reshape(feat)
    np.testing.assert_allclose(bn.backward(dy), dy * s, rtol=2e-6, atol=1e-7)


def test_layer_get_config_round_trips():
    bn = BatchNormalization(axis=[1, 2], momentum=0.9, epsilon=1e-5, center=False, name="bn_cfg")
    cfg = bn.get_config()
    clone = BatchNormalization.from_config(cfg)
    assert clone.get_config() == cfg
    assert (clone.axis, clone.momentum, clone.epsilon, clone.center, clone.scale) == ([1, 2], 0.9, 1e-5, False, True)


def test_layer_regularizer_and_constraint_are_stored_on_the_variables():
    reg, con = dc.regularizers.l2(0.01), dc.constraints.MaxNorm(3.0)
    bn = BatchNormalization(gamma_regularizer=reg, beta_constraint=con, beta_regularizer="l1")
    bn(np.zeros((2, 3), np.float32))
    assert bn.gamma.regularizer is reg and bn.beta.constraint is con
    assert type(bn.beta.regularizer).__name__ == type(dc.regularizers.get("l1")).__name__
    assert bn.moving_mean.regularizer is None and bn.gamma.constraint is None


def test_layer_rejects_unknown_regularizer_at_construction():
    with pytest.raises(ValueError, match="regularizer"):
        BatchNormalization(gamma_regularizer="l3")


# --------------------------------------------------------------------------
# bad input at the layer
# --------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0, -1e-3, 1e-60, float("nan"), "1e-3"])
def test_layer_rejects_non_positive_epsilon(eps):
    with pytest.raises(ValueError, match="epsilon"):
        BatchNormalization(epsilon=eps)


@pytest.mark.parametrize("momentum", [-0.01, 1.01, float("nan"), None])
def test_layer_rejects_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=momentum)


@pytest.mark.parametrize("axis,shape,match", [
    (2, (4, 3), "axis 2 does not exist for input of rank 2"),
    (-3, (4, 3), "axis -3 does not exist"),
    ([1, 5], (4, 3, 2, 2), "axis 5 does not exist for input of rank 4"),
    (0, (4, 3), "batch axis"),
    ([1, -2], (4, 3, 2), "twice"),
])
def test_layer_rejects_axis_that_does_not_exist_for_the_input(axis, shape, match):
    bn = BatchNormalization(axis=axis)
    with pytest.raises(ValueError, match=match):
        bn(np.zeros(shape, np.float32))


@pytest.mark.parametrize("axis", [1.5, "channels", [], [1, "2"], True])
def test_layer_rejects_axis_of_the_wrong_type(axis):
    with pytest.raises(TypeError, match="axis"):
        BatchNormalization(axis=axis)


def test_layer_training_on_a_batch_of_one_is_a_value_error_saying_so():
    bn = BatchNormalization(name="bn_one")
    x = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match=r"bn_one.*batch of 1 sample"):
        bn(x, training=True)
    np.testing.assert_array_equal(bn.moving_mean.value, 0)   # nothing was updated
    assert np.all(np.isfinite(bn(x, training=False)))       # inference on one sample is fine
    # one image still has many values per channel
    assert np.all(np.isfinite(BatchNormalization()(np.random.rand(1, 3, 3, 2).astype(np.float32), training=True)))


def test_layer_wrong_input_shape_names_the_layer():
    bn = BatchNormalization(name="bn_shape")
    bn(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="bn_shape"):
        bn.forward(np.zeros((2, 5), np.float32), training=True)


# --------------------------------------------------------------------------
# PyTorch parity
# --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_layer_matches_pytorch_batchnorm1d_in_train_and_eval_mode(steps):
    torch = pytest.importorskip("torch")
    n, c, keras_momentum = 24, 6, 0.9
    rng = np.random.default_rng(30)
    gamma, beta = rng.uniform(0.5, 2, c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    bn = BatchNormalization(momentum=keras_momentum)
    bn(np.zeros((2, c), np.float32))
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    tbn = torch.nn.BatchNorm1d(c, eps=EPS, momentum=1 - keras_momentum).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(gamma))
        tbn.bias.copy_(torch.from_numpy(beta))
    tbn.train()
    for s in range(steps):
        x = (rng.normal(size=(n, c)) * (1 + s) + s).astype(np.float32)
        dy = rng.normal(size=(n, c)).astype(np.float32)
        y = bn(x, training=True)
        dx = bn.backward(dy)
        tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        ty = tbn(tx)
        ty.backward(torch.from_numpy(dy.astype(np.float64)))
        close32(y, ty.detach().numpy(), 1e-5)
        close32(dx, tx.grad.numpy(), 1e-4)
        close32(bn.gamma.grad, tbn.weight.grad.numpy(), 1e-4)
        close32(bn.beta.grad, tbn.bias.grad.numpy(), 1e-4)
        tbn.weight.grad = tbn.bias.grad = None
    # Torch's running_var averages the unbiased variance (n / (n - 1) times
    # Keras's biased one); from the initial 1 the two differ by that factor on
    # the part contributed by batches: 1 * m^k + (n - 1) / n * (torch - m^k).
    mk = keras_momentum ** steps
    close32(bn.moving_mean.value, tbn.running_mean.numpy(), 1e-5)
    close32(bn.moving_variance.value, mk + (n - 1) / n * (tbn.running_var.numpy() - mk), 1e-5)
    # eval mode with the same running statistics
    with torch.no_grad():
        tbn.running_var.copy_(torch.from_numpy(bn.moving_variance.value.astype(np.float64)))
    tbn.eval()
    x = rng.normal(size=(n, c)).astype(np.float32)
    close32(bn(x, training=False), tbn(torch.from_numpy(x.astype(np.float64))).detach().numpy(), 1e-5)


# --------------------------------------------------------------------------
# in a model
# --------------------------------------------------------------------------
def blobs(n=256, n_features=10, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    x = centers[y] + rng.normal(0, 1.0, (n, n_features)) + 5.0   # off-centre features
    return x.astype(np.float32), y


@pytest.mark.parametrize("placement", ["before-activation", "after-activation"])
def test_sequential_with_batchnorm_trains_and_loss_decreases(placement):
    x, y = blobs()
    dc.set_random_seed(0)
    if placement == "before-activation":
        hidden = [Dense(16, use_bias=False), BatchNormalization(), Activation("relu")]
    else:
        hidden = [Dense(16, activation="relu"), BatchNormalization()]
    model = Sequential([Input(shape=(10,)), *hidden, Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    first = model.evaluate(x, y)[0]
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < first
    assert model.evaluate(x, y)[1] > 0.9
    bn = next(layer for layer in model.layers if isinstance(layer, BatchNormalization))
    assert np.abs(bn.moving_mean.value).max() > 0.1          # statistics were tracked
    assert not np.allclose(bn.gamma.value, 1.0)               # gamma was trained


def test_summary_counts_four_parameters_per_feature_two_non_trainable():
    model = Sequential([Input(shape=(20,)), Dense(32, use_bias=False), BatchNormalization(),
                        Activation("relu"), Dense(3)])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    row = next(line for line in lines if "(BatchNormalization)" in line)
    assert "(None, 32)" in row and row.rstrip().endswith(" 128")
    assert "Total params: 867" in text                 # 640 + 128 + 99
    assert "Trainable params: 803" in text
    assert "Non-trainable params: 64" in text


def test_fit_with_a_last_batch_of_one_sample_says_why():
    x, y = blobs(33)
    model = Sequential([Input(shape=(10,)), Dense(4), BatchNormalization(), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="batch of 1 sample"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)


def test_training_variance_is_exact_when_the_first_value_is_an_outlier():
    # A spike as each feature's first value (think of a sparse ReLU feature).
    n = 1 << 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    x[0] = 30 * np.sqrt(n)
    y, mean, inv_std = np.empty_like(x), np.empty(2, np.float32), np.empty(2, np.float32)
    mm, mv = np.zeros(2, np.float32), np.ones(2, np.float32)
    C.batchnorm_forward_train(x.reshape(n, 2, 1), None, None, y.reshape(n, 2, 1), mean, inv_std,
                                           mm, mv, 1e-3, 0.0)
    ref = x.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(mv, ref, rtol=1e-6)


def test_config_round_trip_keeps_regularizers_and_constraints():
    bn = dc.layers.BatchNormalization(gamma_regularizer="l2", beta_regularizer=dc.regularizers.l1(0.1),
                                            gamma_constraint=dc.constraints.MaxNorm(2.0))
    again = dc.layers.BatchNormalization.from_config(bn.get_config())
    assert again.gamma_regularizer.l2 == 0.01 and again.beta_regularizer.l1 == 0.1
    assert again.gamma_constraint.max_value == 2.0 and again.beta_constraint is None
