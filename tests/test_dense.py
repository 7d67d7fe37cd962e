"""Dense forward/backward and sgemm against float64 NumPy and finite differences."""
import numpy as np
import pytest

import deepcore as dc
from deepcore._native import core
from deepcore.activations import _CODES

rng = np.random.default_rng(1)


def _act64(name, z):
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "softplus":
        return np.logaddexp(0, z)
    if name == "softmax":
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    raise AssertionError(name)


def _problem(batch=5, n_in=7, n_out=4):
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32) * 0.5
    b = rng.standard_normal(n_out).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "sigmoid", "softplus", "softmax"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_forward_matches_float64_reference(name, with_bias):
    x, w, b = _problem()
    z = np.empty((5, 4), np.float32)
    y = np.empty((5, 4), np.float32)
    core.dense_forward(x, w, b if with_bias else None, z, y, _CODES[name])
    z64 = x.astype(np.float64) @ w + (b if with_bias else 0)
    np.testing.assert_allclose(z, z64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, _act64(name, z64), rtol=1e-5, atol=1e-5)


def test_dense_forward_in_place_when_output_aliases_preactivation():
    x, w, b = _problem()
    z = np.empty((5, 4), np.float32)
    core.dense_forward(x, w, b, z, z, _CODES["relu"])
    np.testing.assert_allclose(z, np.maximum(x.astype(np.float64) @ w + b, 0), rtol=1e-5, atol=1e-5)


def _fd(f, a, h=1e-6):
    a = a.astype(np.float64)
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        p, m = a.copy(), a.copy()
        p[i] += h
        m[i] -= h
        g[i] = (f(p) - f(m)) / (2 * h)
    return g


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "sigmoid", "softplus", "softmax"])
def test_dense_backward_matches_finite_differences(name):
    x, w, b = _problem()
    if name == "relu":  # keep pre-activations away from the kink
        z0 = x.astype(np.float64) @ w + b
        b = (b + np.where(np.abs(z0).min(0) < 0.05, 0.3, 0)).astype(np.float32)
    dy = rng.standard_normal((5, 4)).astype(np.float32)

    def loss(x_, w_, b_):
        return float(np.sum(dy * _act64(name, x_ @ w_ + b_)))

    z = np.empty((5, 4), np.float32)
    y = np.empty((5, 4), np.float32)
    core.dense_forward(x, w, b, z, y, _CODES[name])
    dz, dx, dw, db = np.empty_like(z), np.empty_like(x), np.empty_like(w), np.empty_like(b)
    core.dense_backward(x, w, z, y, dy, dz, dx, dw, db, _CODES[name])
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(dx, _fd(lambda a: loss(a, w64, b64), x64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dw, _fd(lambda a: loss(x64, a, b64), w64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(db, _fd(lambda a: loss(x64, w64, a), b64), rtol=1e-3, atol=1e-4)


def test_dense_backward_without_dx_and_db_and_with_accumulate():
    x, w, b = _problem()
    z = np.empty((5, 4), np.float32)
    core.dense_forward(x, w, None, z, z, _CODES["linear"])
    dy = rng.standard_normal((5, 4)).astype(np.float32)
    dw = np.ones_like(w)
    db = np.ones(4, np.float32)
    core.dense_backward(x, w, z, z, dy, np.empty_like(z), None, dw, db, _CODES["linear"], accumulate=True)
    np.testing.assert_allclose(dw, 1 + x.astype(np.float64).T @ dy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, 1 + dy.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)
    dw2 = np.empty_like(w)
    core.dense_backward(x, w, z, z, dy, np.empty_like(z), None, dw2, None, _CODES["linear"])
    np.testing.assert_allclose(dw2, x.astype(np.float64).T @ dy, rtol=1e-5, atol=1e-5)


def test_dense_backward_dy_is_dz_skips_the_activation_derivative():
    x, w, b = _problem()
    z = np.empty((5, 4), np.float32)
    y = np.empty((5, 4), np.float32)
    core.dense_forward(x, w, b, z, y, _CODES["softmax"])
    dz = rng.standard_normal((5, 4)).astype(np.float32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    core.dense_backward(x, w, z, y, dz, np.empty_like(z), dx, dw, db, _CODES["softmax"], dy_is_dz=True)
    np.testing.assert_allclose(dx, dz.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, x.astype(np.float64).T @ dz, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_sgemm_matches_numpy_for_all_transposes(ta, tb):
    m, k, n = 6, 9, 5
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    want = 2.0 * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b)) + 0.5 * c
    core.sgemm(a, b, c, ta, tb, 2.0, 0.5)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


def test_sgemm_rejects_mismatched_inner_dimensions():
    with pytest.raises(ValueError, match="inner dimensions"):
        core.sgemm(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32), np.zeros((2, 5), np.float32))


def test_dense_layer_eager_call_matches_numpy():
    layer = dc.Dense(7, activation="tanh")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = layer(x)
    want = np.tanh(x.astype(np.float64) @ layer.kernel.value + layer.bias.value)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert layer.kernel.value.shape == (4, 7) and layer.count_params() == 35
