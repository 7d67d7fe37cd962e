"""Dense kernels (deepcore._core.dense_forward / dense_backward / sgemm) and the
Dense layer, against float64 NumPy and finite differences.

Backward is checked on the scalar L = sum(dy_fixed * act(x W + b)): the
kernel's float32 dx, dW, db are compared with central finite differences of
the float64 reference with respect to x, W and b.
"""


import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore.activations import _CODES
from activation_reference import ref_forward
from finite_differences import central_difference



def act64(name, z, alpha=0.0, beta=1.0):
    """float64 reference of every activation (softmax over the last axis)."""
    return ref_forward(name, z, alpha, beta)


ACTS = [
    pytest.param("linear", 0.0, 1.0, id="linear"),
    pytest.param("sigmoid", 0.0, 1.0, id="sigmoid"),
    pytest.param("tanh", 0.0, 1.0, id="tanh"),
    pytest.param("relu", 0.0, 1.0, id="relu"),
    pytest.param("leaky_relu", 0.1, 1.0, id="leaky_relu-0.1"),
    pytest.param("elu", 0.7, 1.0, id="elu-0.7"),
    pytest.param("selu", 0.0, 1.0, id="selu"),
    pytest.param("gelu", 0.0, 1.0, id="gelu"),
    pytest.param("gelu_tanh", 0.0, 1.0, id="gelu_tanh"),
    pytest.param("swish", 0.0, 1.5, id="swish-1.5"),
    pytest.param("mish", 0.0, 1.0, id="mish"),
    pytest.param("softplus", 0.0, 1.0, id="softplus"),
    pytest.param("softmax", 0.0, 1.0, id="softmax"),
]
KINKED = {"relu", "leaky_relu", "elu", "selu"}

BATCH, N_IN, N_OUT = 5, 7, 4


def problem(seed=0, batch=BATCH, n_in=N_IN, n_out=N_OUT, keep_from_zero=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    w = (rng.normal(size=(n_in, n_out)) * 0.5).astype(np.float32)
    b = rng.normal(size=n_out).astype(np.float32)
    if keep_from_zero:
        # Move b so that no pre-activation lies within 0.05 of a kink at 0.
        for _ in range(100):
            z = x.astype(np.float64) @ w + b
            if np.abs(z).min() > 0.05:
                break
            b = (b + 0.037).astype(np.float32)
        assert np.abs(x.astype(np.float64) @ w + b).min() > 0.05
    return x, w, b


def forward(x, w, b, name, alpha=0.0, beta=1.0):
    z = np.full((x.shape[0], w.shape[1]), np.nan, np.float32)
    y = np.full_like(z, np.nan)
    C.dense_forward(x, w, b, z, y, _CODES[name], alpha, beta)
    return z, y


fd = central_difference


def assert_close32(got, ref, rtol=1e-3):
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-1 * max(1.0, np.abs(ref).max()))


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_dense_forward_matches_float64_affine_then_activation(name, alpha, beta, with_bias):
    x, w, b = problem(1)
    z, y = forward(x, w, b if with_bias else None, name, alpha, beta)
    z64 = x.astype(np.float64) @ w.astype(np.float64) + (b.astype(np.float64) if with_bias else 0.0)
    np.testing.assert_allclose(z, z64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, act64(name, z64, alpha, beta), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["relu", "linear", "sigmoid", "tanh"])
def test_dense_forward_output_may_alias_preactivation(name):
    x, w, b = problem(2)
    zy = np.full((BATCH, N_OUT), np.nan, np.float32)
    C.dense_forward(x, w, b, zy, zy, _CODES[name], 0.0, 1.0)
    z64 = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(zy, act64(name, z64), rtol=1e-5, atol=1e-5)
    if name == "relu":
        assert np.any(z64 < 0) and np.all(zy >= 0)


def test_dense_forward_overwrites_garbage_in_outputs():
    x, w, b = problem(3)
    z, y = forward(x, w, None, "tanh")  # z and y start as NaN
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(y))


def test_dense_forward_large_batch_matches_reference():
    # Big enough that the activation epilogue takes its parallel path.
    x, w, b = problem(4, batch=4096, n_in=16, n_out=300)
    z, y = forward(x, w, b, "gelu")
    z64 = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(z, z64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, act64("gelu", z64), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
def backward(x, w, b, z, y, dy, name, alpha=0.0, beta=1.0, *, with_dx=True, with_db=True, dy_is_dz=False,
             accumulate=False, dw=None, db=None):
    dz_buf = np.full_like(z, np.nan)
    dx = np.full_like(x, np.nan) if with_dx else None
    dw = np.full_like(w, np.nan) if dw is None else dw
    if with_db and db is None:
        db = np.full(w.shape[1], np.nan, np.float32)
    C.dense_backward(x, w, z, y, dy, dz_buf, dx, dw, db if with_db else None, _CODES[name], alpha, beta,
                     dy_is_dz, accumulate)
    return dx, dw, db


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_dense_backward_matches_finite_differences(name, alpha, beta):
    x, w, b = problem(5, keep_from_zero=name in KINKED)
    dy = np.random.default_rng(6).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, name, alpha, beta)
    dx, dw, db = backward(x, w, b, z, y, dy, name, alpha, beta)

    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))

    def loss(x_, w_, b_):
        return float(np.sum(dy64 * act64(name, x_ @ w_ + b_, alpha, beta)))

    assert_close32(dx, fd(lambda a: loss(a, w64, b64), x64))
    assert_close32(dw, fd(lambda a: loss(x64, a, b64), w64))
    assert_close32(db, fd(lambda a: loss(x64, w64, a), b64))


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_dense_backward_without_dx_and_db(name):
    x, w, b = problem(7, keep_from_zero=True)
    dy = np.random.default_rng(8).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, None, name)
    dx_full, dw_full, _ = backward(x, w, None, z, y, dy, name)
    dx, dw, db = backward(x, w, None, z, y, dy, name, with_dx=False, with_db=False)
    assert dx is None and db is None
    np.testing.assert_array_equal(dw, dw_full)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    ref = fd(lambda a: float(np.sum(dy64 * act64(name, x64 @ a))), w64)
    assert_close32(dw, ref)


@pytest.mark.parametrize("name", ["linear", "sigmoid"])
def test_dense_backward_accumulate_adds_to_existing_gradients(name):
    x, w, b = problem(9)
    rng = np.random.default_rng(10)
    dy = rng.normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, name)
    dx0, dw0, db0 = backward(x, w, b, z, y, dy, name)  # fresh gradients
    dw_prev = rng.normal(size=w.shape).astype(np.float32)
    db_prev = rng.normal(size=b.shape).astype(np.float32)
    dw_acc, db_acc = dw_prev.copy(), db_prev.copy()
    dx1, _, _ = backward(x, w, b, z, y, dy, name, accumulate=True, dw=dw_acc, db=db_acc)
    np.testing.assert_allclose(dw_acc, dw_prev + dw0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db_acc, db_prev + db0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dx1, dx0)  # dx is never accumulated
    # and accumulating twice from zero gives twice the gradient
    dw2, db2 = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        backward(x, w, b, z, y, dy, name, accumulate=True, dw=dw2, db=db2)
    np.testing.assert_allclose(dw2, 2 * dw0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db2, 2 * db0, rtol=1e-6, atol=1e-7)


def test_dense_backward_without_accumulate_overwrites_nan_gradients():
    x, w, b = problem(11)
    dy = np.random.default_rng(12).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, "tanh")
    dx, dw, db = backward(x, w, b, z, y, dy, "tanh")  # dx, dw, db, dz_buf all start as NaN
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dw)) and np.all(np.isfinite(db))


@pytest.mark.parametrize("name", ["sigmoid", "softmax", "relu", "gelu"])
def test_dense_backward_dy_is_dz_skips_activation_derivative(name):
    x, w, b = problem(13)
    dz = np.random.default_rng(14).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, name)
    dx, dw, db = backward(x, w, b, z, y, dz, name, dy_is_dz=True)
    x64, w64, dz64 = (a.astype(np.float64) for a in (x, w, dz))
    np.testing.assert_allclose(dx, dz64 @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, x64.T @ dz64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, dz64.sum(axis=0), rtol=1e-5, atol=1e-5)
    # without the flag the activation derivative is applied, so results differ
    dx2, _, _ = backward(x, w, b, z, y, dz, name)
    assert not np.allclose(dx2, dx, rtol=1e-3, atol=1e-4)


def test_dense_backward_scratch_buffer_may_alias_dy():
    x, w, b = problem(15)
    dy = np.random.default_rng(16).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, "sigmoid")
    dx_ref, dw_ref, db_ref = backward(x, w, b, z, y, dy, "sigmoid")
    buf = dy.copy()
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    C.dense_backward(x, w, z, y, buf, buf, dx, dw, db, _CODES["sigmoid"], 0.0, 1.0, False, False)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, db_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_dense_backward_after_in_place_forward_matches_separate_buffers(name):
    # dense.h: y == z is fine for activations whose derivative depends on y.
    x, w, b = problem(17, keep_from_zero=True)
    dy = np.random.default_rng(18).normal(size=(BATCH, N_OUT)).astype(np.float32)
    z, y = forward(x, w, b, name)
    ref = backward(x, w, b, z, y, dy, name)
    zy = np.empty_like(z)
    C.dense_forward(x, w, b, zy, zy, _CODES[name], 0.0, 1.0)
    got = backward(x, w, b, zy, zy, dy, name)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# sgemm
# --------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
def test_sgemm_matches_numpy_for_all_transposes(trans_a, trans_b):
    rng = np.random.default_rng(19)
    m, k, n = 6, 9, 5
    a = rng.normal(size=(k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.normal(size=(n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.normal(size=(m, n)).astype(np.float32)
    opa = (a.T if trans_a else a).astype(np.float64)
    opb = (b.T if trans_b else b).astype(np.float64)
    want = 2.0 * opa @ opb + 0.5 * c.astype(np.float64)
    C.sgemm(a, b, c, trans_a, trans_b, 2.0, 0.5)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
def test_sgemm_defaults_overwrite_c_even_if_nan(trans_a, trans_b):
    rng = np.random.default_rng(20)
    m, k, n = 3, 4, 7
    a = rng.normal(size=(k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.normal(size=(n, k) if trans_b else (k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    C.sgemm(a, b, c, trans_a, trans_b)  # alpha=1, beta=0: c is not read
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


def test_sgemm_rejects_mismatched_inner_dimensions():
    with pytest.raises(ValueError, match="inner dimensions"):
        C.sgemm(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"c must have shape \(2, 5\), got \(5, 2\)"):
        C.sgemm(np.zeros((2, 3), np.float32), np.zeros((3, 5), np.float32), np.zeros((5, 2), np.float32))


def test_sgemm_with_empty_inner_dimension_scales_c_by_beta():
    c = np.full((3, 4), 5.0, np.float32)
    C.sgemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), c, False, False, 1.0, 2.0)
    np.testing.assert_array_equal(c, 10.0)


# --------------------------------------------------------------------------
# Dense layer
# --------------------------------------------------------------------------
def test_dense_layer_eager_call_matches_numpy():
    layer = dc.Dense(7, activation="tanh")
    x = np.random.default_rng(21).normal(size=(3, 4)).astype(np.float32)
    y = layer(x)
    assert y.shape == (3, 7) and y.dtype == np.float32
    assert layer.kernel.value.shape == (4, 7) and layer.bias.value.shape == (7,)
    assert layer.count_params() == 35
    # Give the bias nonzero values so that it is exercised too.
    layer.bias.value[...] = np.linspace(-1, 1, 7, dtype=np.float32)
    y = layer(x)
    want = np.tanh(x.astype(np.float64) @ layer.kernel.value.astype(np.float64) + layer.bias.value)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    # eager calls return fresh arrays: a later call does not change an earlier result
    y_before = y.copy()
    layer(-x)
    np.testing.assert_array_equal(y, y_before)


def test_dense_layer_without_bias_and_linear_activation():
    layer = dc.Dense(3, use_bias=False)
    x = np.random.default_rng(22).normal(size=(5, 6)).astype(np.float32)
    y = layer(x)
    assert layer.bias is None
    np.testing.assert_allclose(y, x.astype(np.float64) @ layer.kernel.value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "elu", "selu", "tanh", "linear", "sigmoid", "gelu"])
def test_dense_layer_backward_matches_finite_differences(name):
    # Dense writes the output over z for some activations (Dense._IN_PLACE);
    # the gradients must still be right.
    rng = np.random.default_rng(23)
    layer = dc.Dense(4, activation=name)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    layer(x)  # build (random glorot init), then set deterministic weights
    layer.kernel.value[...] = (rng.normal(size=(6, 4)) * 0.5).astype(np.float32)
    layer.bias.value[...] = rng.normal(size=4).astype(np.float32)
    spec = layer.activation
    x64 = x.astype(np.float64)
    for _ in range(100):  # keep pre-activations away from the kinks at 0
        if np.abs(x64 @ layer.kernel.value + layer.bias.value).min() > 0.05:
            break
        layer.bias.value[...] += np.float32(0.037)
    w64, b64 = layer.kernel.value.astype(np.float64), layer.bias.value.astype(np.float64)
    assert np.abs(x64 @ w64 + b64).min() > 0.05
    dy = rng.normal(size=(5, 4)).astype(np.float32)
    layer.forward(x)
    dx = np.array(layer.backward(dy, need_dx=True))
    dy64 = dy.astype(np.float64)

    def loss(x_, w_, b_):
        return float(np.sum(dy64 * act64(name, x_ @ w_ + b_, spec.alpha, spec.beta)))

    assert_close32(dx, fd(lambda a: loss(a, w64, b64), x64))
    assert_close32(layer.kernel.grad, fd(lambda a: loss(x64, a, b64), w64))
    assert_close32(layer.bias.grad, fd(lambda a: loss(x64, w64, a), b64))
