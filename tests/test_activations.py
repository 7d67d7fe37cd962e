"""Activation kernels (deepcore._core.activation_forward / activation_backward,
and swish_forward / swish_backward / swish_beta_grad with beta in a tensor)
and the public deepcore.activations functions.

Every kernel result is compared with a float64 NumPy reference written here,
independently of src/ops/activations.h:
  * forward against the reference function;
  * backward (dx from dy, x and y = forward(x)) against central finite
    differences of the float64 reference AND against a float64 analytic
    derivative;
  * backward against finite differences of the float32 kernel's own forward
    (a self-consistency check that needs no reference at all).
"""

import math

import numpy as np
import pytest

import deepcore
from deepcore import _core as C
from deepcore import activations
from deepcore.activations import _CODES

from activation_reference import (
    GELU_COEF, SELU_ALPHA, SELU_SCALE, SQRT_2_OVER_PI, _erfc, _sigmoid, _softmax, _softplus, ref_forward,
)
from finite_differences import central_difference


def ref_derivative(name, x, alpha, beta):
    """f'(x) for the elementwise activations; at a kink the left derivative
    (x > 0 is false at 0), the convention of TensorFlow and the kernel."""
    x = np.asarray(x, dtype=np.float64)
    neg = np.minimum(x, 0.0)
    if name == "linear":
        return np.ones_like(x)
    if name == "sigmoid":
        s = _sigmoid(x)
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if name == "relu":
        return (x > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, alpha)
    if name == "elu":
        return np.where(x > 0, 1.0, alpha * np.exp(neg))
    if name == "selu":
        return SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(neg))
    if name == "gelu":
        cdf = 0.5 * _erfc(-x / math.sqrt(2.0))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return cdf + x * pdf
    if name == "gelu_tanh":
        t = np.tanh(SQRT_2_OVER_PI * (x + GELU_COEF * x**3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEF * x * x)
    if name == "swish":
        s = _sigmoid(beta * x)
        return s + beta * x * s * (1.0 - s)
    if name == "mish":
        t = np.tanh(_softplus(x))
        return t + x * (1.0 - t * t) * _sigmoid(x)
    if name == "softplus":
        return _sigmoid(x)
    raise AssertionError(name)


def ref_backward(name, x, dy, alpha, beta):
    """dL/dx for L = sum(dy * f(x)), analytic, float64."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if name == "softmax":
        y = _softmax(x)
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    return dy * ref_derivative(name, x, alpha, beta)


def fd_backward(f, x, dy, h):
    """Central finite differences of L(x) = sum(dy * f(x)), in float64.

    Perturbs one element at a time, so it is valid for row functions
    (softmax) as well as elementwise ones."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    g = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), g.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        fp = f(x)
        flat_x[i] = old - h
        fm = f(x)
        flat_x[i] = old
        # Difference before summing: unperturbed outputs cancel exactly, so
        # large outputs elsewhere (f(90) = 90) add no rounding noise.
        flat_g[i] = float(np.sum(dy * (fp - fm))) / (2.0 * h)
    return g


# --------------------------------------------------------------------------
# kernel wrappers
# --------------------------------------------------------------------------
def k_forward(name, x, alpha=0.0, beta=1.0):
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    C.activation_forward(_CODES[name], x, y, alpha, beta)
    return y


def k_backward(name, x, dy, alpha=0.0, beta=1.0):
    x = np.ascontiguousarray(x, dtype=np.float32)
    dy = np.ascontiguousarray(dy, dtype=np.float32)
    y = k_forward(name, x, alpha, beta)
    dx = np.full_like(x, np.nan)
    C.activation_backward(_CODES[name], x, y, dy, dx, alpha, beta)
    return dx


# (name, alpha, beta): every code, with non-default parameters where they exist.
ACTS = [
    pytest.param("linear", 0.0, 1.0, id="linear"),
    pytest.param("sigmoid", 0.0, 1.0, id="sigmoid"),
    pytest.param("tanh", 0.0, 1.0, id="tanh"),
    pytest.param("relu", 0.0, 1.0, id="relu"),
    pytest.param("leaky_relu", 0.2, 1.0, id="leaky_relu-0.2"),
    pytest.param("leaky_relu", 0.01, 1.0, id="leaky_relu-0.01"),
    pytest.param("elu", 1.0, 1.0, id="elu-1.0"),
    pytest.param("elu", 0.5, 1.0, id="elu-0.5"),
    pytest.param("selu", 0.0, 1.0, id="selu"),
    pytest.param("gelu", 0.0, 1.0, id="gelu"),
    pytest.param("gelu_tanh", 0.0, 1.0, id="gelu_tanh"),
    pytest.param("swish", 0.0, 1.0, id="swish-1.0"),
    pytest.param("swish", 0.0, 1.7, id="swish-1.7"),
    pytest.param("swish", 0.0, 0.5, id="swish-0.5"),
    pytest.param("mish", 0.0, 1.0, id="mish"),
    pytest.param("softplus", 0.0, 1.0, id="softplus"),
    pytest.param("softmax", 0.0, 1.0, id="softmax"),
]
ELEMENTWISE_ACTS = [p for p in ACTS if p.values[0] != "softmax"]
# Activations with a kink at 0 (finite differences straddling 0 are meaningless).
KINKED = {"relu", "leaky_relu", "elu", "selu"}

SPECIAL = [-90.0, -30.0, -10.0, -5.0, -2.0, -1.0, -0.5, -0.1, -1e-3, 0.0,
           1e-3, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 90.0, 3.7]


def make_inputs(seed=0):
    """(4, 10) float32: the special values (negatives, zero, +-30, +-90) and
    random normals with std 3."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.array(SPECIAL), rng.normal(0.0, 3.0, size=20)])
    return x.astype(np.float32).reshape(4, 10)


def test_codes_cover_every_activation():
    assert sorted(_CODES.values()) == list(range(13))
    assert {p.values[0] for p in ACTS} == set(_CODES)


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_forward_matches_float64_reference(name, alpha, beta):
    x = make_inputs()
    y = k_forward(name, x, alpha, beta)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.isfinite(y)), "overflow for inputs up to |x| = 90"
    np.testing.assert_allclose(y, ref_forward(name, x, alpha, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_forward_in_place_equals_out_of_place(name, alpha, beta):
    x = make_inputs(1)
    expected = k_forward(name, x, alpha, beta)
    buf = x.copy()
    C.activation_forward(_CODES[name], buf, buf, alpha, beta)  # x == y is allowed
    np.testing.assert_array_equal(buf, expected)


@pytest.mark.parametrize("name,alpha,beta", ELEMENTWISE_ACTS)
def test_forward_is_shape_agnostic_for_elementwise(name, alpha, beta):
    x = make_inputs(2)
    y2 = k_forward(name, x, alpha, beta)
    y1 = k_forward(name, x.reshape(-1), alpha, beta)
    y3 = k_forward(name, x.reshape(2, 5, 4), alpha, beta)
    np.testing.assert_array_equal(y1, y2.reshape(-1))
    np.testing.assert_array_equal(y3, y2.reshape(2, 5, 4))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_nan_input_propagates_to_nan_output(name):
    x = np.array([[1.0, np.nan, -2.0, 0.0], [np.nan, 3.0, np.nan, -90.0]], np.float32)
    y = k_forward(name, x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    ok = ~np.isnan(x)
    np.testing.assert_allclose(y[ok], ref_forward(name, x[ok], 0.0, 1.0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "name,expected",
    [("sigmoid", [1.0, 0.0]), ("tanh", [1.0, -1.0]), ("relu", [np.inf, 0.0]), ("softplus", [np.inf, 0.0])],
)
def test_infinite_input_gives_the_limit(name, expected):
    y = k_forward(name, np.array([np.inf, -np.inf], np.float32))
    np.testing.assert_array_equal(y, np.array(expected, np.float32))


def test_sigmoid_and_tanh_saturate_exactly_without_overflow():
    x = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32)
    np.testing.assert_array_equal(k_forward("sigmoid", x), [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(k_forward("tanh", x), [-1.0, -1.0, 1.0, 1.0])


def test_softmax_rows_sum_to_one_and_are_nonnegative():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(64, 17)) * 10).astype(np.float32)
    y = k_forward("softmax", x)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    # argmax is preserved by softmax
    np.testing.assert_array_equal(y.argmax(axis=1), x.argmax(axis=1))


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 999.0, -1000.0, 998.0],
                  [1e30, 1e30, 1e30, 1e30],
                  [-1e30, 0.0, -1e30, -1e30],
                  [88.0, 89.0, 90.0, 91.0],
                  [-3e38, 3e38, 0.0, 1.0]], np.float32)
    y = k_forward("softmax", x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y, ref_forward("softmax", x, 0, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y[1], 0.25, rtol=1e-6)
    np.testing.assert_array_equal(y[2], [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y[4], [0.0, 1.0, 0.0, 0.0])


def test_softmax_is_invariant_to_row_shifts():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    shift = np.float32(50.0)
    np.testing.assert_allclose(k_forward("softmax", x + shift), k_forward("softmax", x), rtol=1e-5, atol=1e-7)


def test_softmax_works_over_last_axis_of_3d_input():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    y = k_forward("softmax", x)
    np.testing.assert_allclose(y, ref_forward("softmax", x.reshape(6, 5), 0, 1).reshape(2, 3, 5),
                               rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
def _fd_mask(name, x):
    """Points where central differences with a small h are valid."""
    if name in KINKED:
        return np.abs(x.astype(np.float64)) > 1e-4
    return np.ones(x.shape, bool)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_backward_matches_finite_differences_of_float64_reference(name, alpha, beta):
    x = make_inputs(6)
    rng = np.random.default_rng(7)
    dy = rng.normal(size=x.shape).astype(np.float32)
    dx = k_backward(name, x, dy, alpha, beta)
    fd = fd_backward(lambda v: ref_forward(name, v, alpha, beta), x, dy, h=1e-6)
    m = _fd_mask(name, x)
    # FD in float64 has ~1e-9 absolute error; the kernel works in float32.
    np.testing.assert_allclose(dx[m], fd[m], rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_backward_matches_float64_analytic_derivative(name, alpha, beta):
    x = make_inputs(8)  # includes x == 0 exactly: the kink convention is checked too
    rng = np.random.default_rng(9)
    dy = rng.normal(size=x.shape).astype(np.float32)
    dx = k_backward(name, x, dy, alpha, beta)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx, ref_backward(name, x, dy, alpha, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,alpha,beta", ELEMENTWISE_ACTS)
def test_analytic_reference_derivative_agrees_with_its_finite_differences(name, alpha, beta):
    # Guards the test itself: the two float64 references must agree.
    x = make_inputs(10).astype(np.float64)
    dy = np.ones_like(x)
    m = _fd_mask(name, x)
    fd = fd_backward(lambda v: ref_forward(name, v, alpha, beta), x, dy, h=1e-6)
    np.testing.assert_allclose(ref_backward(name, x, dy, alpha, beta)[m], fd[m], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_float32_backward_consistent_with_finite_differences_of_float32_forward(name, alpha, beta):
    rng = np.random.default_rng(11)
    x = rng.uniform(-6.0, 6.0, size=(3, 8)).astype(np.float32)
    if name in KINKED:  # keep x +- eps on one side of the kink
        x = np.where(np.abs(x) < 0.05, np.float32(0.5), x)
    dy = rng.normal(size=x.shape).astype(np.float32)
    dx = k_backward(name, x, dy, alpha, beta)
    eps = np.float32(1e-2)
    fd = np.zeros(x.shape)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += eps
        xm.flat[i] -= eps
        lp = np.sum(dy.astype(np.float64) * k_forward(name, xp, alpha, beta))
        lm = np.sum(dy.astype(np.float64) * k_forward(name, xm, alpha, beta))
        fd.flat[i] = (lp - lm) / (float(xp.flat[i]) - float(xm.flat[i]))
    np.testing.assert_allclose(dx, fd, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize(
    "name,alpha,expected",
    [("relu", 0.0, 0.0), ("leaky_relu", 0.2, 0.2), ("elu", 0.5, 0.5), ("selu", 0.0, SELU_SCALE * SELU_ALPHA)],
)
def test_backward_at_zero_uses_left_derivative(name, alpha, expected):
    x = np.zeros(4, np.float32)
    dx = k_backward(name, x, np.ones(4, np.float32), alpha, 1.0)
    np.testing.assert_allclose(dx, expected, rtol=1e-6)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_backward_in_place_dx_aliasing_dy(name, alpha, beta):
    x = make_inputs(12)
    rng = np.random.default_rng(13)
    dy = rng.normal(size=x.shape).astype(np.float32)
    expected = k_backward(name, x, dy, alpha, beta)
    y = k_forward(name, x, alpha, beta)
    buf = dy.copy()
    C.activation_backward(_CODES[name], x, y, buf, buf, alpha, beta)  # dx == dy is allowed
    np.testing.assert_array_equal(buf, expected)


def test_softmax_backward_is_orthogonal_to_ones():
    # The softmax Jacobian maps any dy to a vector whose row sums are zero.
    rng = np.random.default_rng(14)
    x = rng.normal(size=(6, 9)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    dx = k_backward("softmax", x, dy)
    np.testing.assert_allclose(dx.sum(axis=1), 0.0, atol=1e-6)
    # and a dy constant along a row gives dx = 0
    dx_const = k_backward("softmax", x, np.repeat(dy[:, :1], 9, axis=1))
    np.testing.assert_allclose(dx_const, 0.0, atol=1e-6)


@pytest.mark.parametrize("name,alpha,beta", [
    pytest.param("gelu", 0.0, 1.0, id="gelu"),
    pytest.param("swish", 0.0, 1.7, id="swish-1.7"),
    pytest.param("softmax", 0.0, 1.0, id="softmax"),
])
def test_large_tensor_parallel_path_matches_reference(name, alpha, beta):
    # > kParallelThreshold (2^20) elements takes the OpenMP path.
    rng = np.random.default_rng(15)
    x = rng.normal(0.0, 4.0, size=(1100, 1000)).astype(np.float32)
    old = deepcore.get_num_threads()
    try:
        deepcore.set_num_threads(2)
        y2 = k_forward(name, x, alpha, beta)
        deepcore.set_num_threads(1)
        y1 = k_forward(name, x, alpha, beta)
    finally:
        deepcore.set_num_threads(old)
    np.testing.assert_array_equal(y1, y2)
    sl = slice(None, None, 97)  # spot check a strided sample against float64
    np.testing.assert_allclose(y2[sl], ref_forward(name, x[sl], alpha, beta), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Swish with beta in a tensor: swish_forward, swish_backward, swish_beta_grad
# --------------------------------------------------------------------------
def scalar(value, shape=()):
    """beta (or dbeta) as the kernels take it: a float32 tensor of shape () or (1,)."""
    return np.full(shape, value, np.float32)


def swish_inputs(seed, n=60):
    """Normals with std 3 and the special values (0, +-30, +-90)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 3.0, size=n), [0.0, -30.0, 30.0, 90.0, -90.0]]).astype(np.float32)
    return x, rng.normal(size=x.shape).astype(np.float32)


def swish_beta_grad64(x, dy, beta):
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    s = _sigmoid(beta * x64)
    return np.sum(dy64 * x64 * x64 * s * (1 - s)), np.sum(np.abs(dy64 * x64 * x64 * s * (1 - s)))


SWISH_BETAS = [1.0, 1.7, 0.5, -0.8]


@pytest.mark.parametrize("beta", SWISH_BETAS)
@pytest.mark.parametrize("shape", [(), (1,)], ids=["0d", "1"])
def test_swish_forward_and_backward_match_float64_reference_and_finite_differences(beta, shape):
    x, dy = swish_inputs(20)
    y, dx = np.empty_like(x), np.empty_like(x)
    C.swish_forward(x, y, scalar(beta, shape))
    C.swish_backward(x, dy, dx, scalar(beta, shape))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, ref_forward("swish", x64, 0.0, beta), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, dy * ref_derivative("swish", x64, 0.0, beta), rtol=1e-5, atol=1e-6)
    fd = central_difference(lambda v: np.sum(dy * ref_forward("swish", v, 0.0, beta)), x64)
    np.testing.assert_allclose(dx, fd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta", SWISH_BETAS)
@pytest.mark.parametrize("n", [7, (1 << 20) + 3], ids=["small", "parallel"])
def test_swish_forward_and_backward_match_float64_on_every_path_and_in_place(beta, n):
    """Beta in a tensor, serial and multi-threaded sizes, out of place and in
    place (y over x, dx over dy), each against the float64 reference."""
    rng = np.random.default_rng(21)
    x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    want_y = ref_forward("swish", x64, 0.0, beta)
    want_dx = dy64 * ref_derivative("swish", x64, 0.0, beta)
    y, dx = np.empty_like(x), np.empty_like(x)
    C.swish_forward(x, y, scalar(beta))
    C.swish_backward(x, dy, dx, scalar(beta))
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-6)
    C.swish_backward(x, dy, dy, scalar(beta, (1,)))  # dx over dy (reads x only)
    np.testing.assert_allclose(dy, want_dx, rtol=1e-5, atol=1e-6)
    C.swish_forward(x, x, scalar(beta))  # y over x
    np.testing.assert_allclose(x, want_y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", SWISH_BETAS)
def test_swish_beta_grad_matches_finite_differences_in_beta(beta):
    x, dy = swish_inputs(16)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    dbeta = scalar(np.nan)
    C.swish_beta_grad(x, dy, scalar(beta), dbeta)
    assert dbeta.dtype == np.float32 and dbeta.shape == ()
    analytic, scale = swish_beta_grad64(x, dy, beta)
    fd = central_difference(lambda b: np.sum(dy64 * x64 * _sigmoid(b[0] * x64)), [beta])[0]
    assert abs(fd - analytic) <= 1e-6 * scale  # the references agree
    assert abs(float(dbeta) - fd) <= 1e-5 * scale + 1e-9


@pytest.mark.parametrize("n", [65, 4095, 4096, 4097, 3 * 4096 + 5, (1 << 20) + 3],
                         ids=["small", "block-1", "block", "block+1", "3-blocks+5", "parallel"])
def test_swish_beta_grad_matches_a_float64_sum_and_is_deterministic(n):
    """Terms in float, summed in double in 4096-element blocks (the partial
    block included) and the blocks in order, rounded to float32 at the end."""
    rng = np.random.default_rng(22)
    x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    dbeta = scalar(0.0, (1,))
    C.swish_beta_grad(x, dy, scalar(1.3), dbeta)
    want, scale = swish_beta_grad64(x, dy, 1.3)
    assert abs(float(dbeta[0]) - want) <= 1e-6 * scale
    again = scalar(0.0)
    C.swish_beta_grad(x, dy, scalar(1.3), again)
    assert again == dbeta[0]


@pytest.mark.parametrize("n", [4096 * 3 + 1, (1 << 20) + 3, 3 * (1 << 20) + 4097], ids=["serial", "parallel", "parallel-uneven"])
def test_swish_beta_grad_is_the_same_for_any_thread_count(n):
    """Fixed blocks summed in block order: 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(24)
    x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    got = {}
    old = deepcore.get_num_threads()
    try:
        for threads in (1, 2):
            deepcore.set_num_threads(threads)
            got[threads] = scalar(np.nan)
            C.swish_beta_grad(x, dy, scalar(-0.7), got[threads])
    finally:
        deepcore.set_num_threads(old)
    assert got[1].tobytes() == got[2].tobytes()
    want, scale = swish_beta_grad64(x, dy, np.float32(-0.7))
    assert abs(float(got[1]) - want) <= 1e-6 * scale


@pytest.mark.parametrize("beta", [1.0, -1.7])
def test_swish_beta_grad_is_accurate_where_the_sigmoid_saturates(beta):
    """|beta x| in [6, 20]: s (1 - s) is tiny and 1 - s from a float s would
    keep few digits; the kernel's terms stay close to the float64 ones."""
    rng = np.random.default_rng(25)
    mag = rng.uniform(6.0, 20.0, size=5000) / abs(beta)
    x = (mag * rng.choice([-1.0, 1.0], size=mag.size)).astype(np.float32)
    dy = rng.normal(size=x.size).astype(np.float32)
    dbeta = scalar(np.nan)
    C.swish_beta_grad(x, dy, scalar(beta), dbeta)
    want, scale = swish_beta_grad64(x, dy, np.float32(beta))
    assert abs(float(dbeta) - want) <= 1e-6 * scale


def test_swish_beta_grad_of_2d_input_is_sum_over_all_elements_and_overwrites():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    dy = rng.normal(size=(5, 7)).astype(np.float32)
    whole, part = scalar(123.0), scalar(0.0)
    C.swish_beta_grad(x, dy, scalar(1.3), whole)
    parts = 0.0
    for i in range(5):
        C.swish_beta_grad(x[i].copy(), dy[i].copy(), scalar(1.3), part)
        parts += float(part)
    assert float(whole) == pytest.approx(parts, rel=1e-6)
    assert float(whole) != 0.0


def test_swish_kernels_read_beta_when_they_run():
    """The value in the tensor at the call is the one used (nothing cached)."""
    x, dy = swish_inputs(23)
    beta, y, dbeta = scalar(1.0), np.empty_like(x), scalar(0.0)
    for value in (0.5, 2.0):
        beta[...] = value
        C.swish_forward(x, y, beta)
        np.testing.assert_array_equal(y, k_forward("swish", x, 0.0, value))
        C.swish_beta_grad(x, dy, beta, dbeta)
        assert float(dbeta) == pytest.approx(swish_beta_grad64(x, dy, value)[0], rel=1e-5, abs=1e-9)


# --------------------------------------------------------------------------
# public Python API
# --------------------------------------------------------------------------
DEFAULT_PARAMS = {"leaky_relu": (0.2, 1.0), "elu": (1.0, 1.0)}


@pytest.mark.parametrize("name", sorted(_CODES))
def test_public_function_matches_reference_with_keras_defaults(name):
    x = make_inputs(18)
    fn = getattr(activations, name)
    y = fn(x.astype(np.float64).tolist())  # lists and float64 are converted once
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    alpha, beta = DEFAULT_PARAMS.get(name, (0.0, 1.0))
    np.testing.assert_allclose(y, ref_forward(name, x, alpha, beta), rtol=1e-5, atol=1e-6)


def test_public_functions_accept_parameters():
    x = make_inputs(19)
    np.testing.assert_allclose(activations.leaky_relu(x, alpha=0.05), ref_forward("leaky_relu", x, 0.05, 1),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(activations.leaky_relu(x, negative_slope=0.3), ref_forward("leaky_relu", x, 0.3, 1),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(activations.elu(x, alpha=0.5), ref_forward("elu", x, 0.5, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(activations.swish(x, beta=2.0), ref_forward("swish", x, 0, 2.0),
                               rtol=1e-5, atol=1e-6)


def test_relu_public_function_on_small_example():
    np.testing.assert_array_equal(activations.relu([[-1.0, 0.0, 2.5]]), np.array([[0.0, 0.0, 2.5]], np.float32))


def test_get_unknown_activation_raises_value_error_listing_names():
    with pytest.raises(ValueError) as ei:
        activations.get("unknown")
    msg = str(ei.value)
    assert "unknown" in msg
    for name in _CODES:
        assert name in msg, f"{name!r} not listed in: {msg}"


@pytest.mark.parametrize("bad", ["Relu", "", 3, 1.5])
def test_get_rejects_other_bad_identifiers(bad):
    with pytest.raises(ValueError, match="relu"):
        activations.get(bad)


def test_get_resolves_aliases_specs_and_functions():
    assert activations.get(None).name == "linear"
    assert activations.get("silu").name == "swish"
    assert activations.get("gelu_approximate").name == "gelu_tanh"
    assert activations.get(activations.relu).name == "relu"
    spec = activations.get("leaky_relu")
    assert spec.alpha == pytest.approx(0.2) and spec.code == _CODES["leaky_relu"]
    assert activations.get(spec) is spec
    assert activations.get("elu").alpha == 1.0
