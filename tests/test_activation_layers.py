"""Activation layers with parameters or state: PReLU and RReLU (their own
kernels), Swish with a learnable beta, LeakyReLU, ELU, GELU, Mish, and SELU
with LeCun initialization.

References are float64 NumPy written here (RReLU's slopes from the NumPy
Philox of test_dropout, keyed as src/ops/dropout.h documents); gradients are
checked against central finite differences of the float64 reference; PyTorch
is a second reference when installed.
"""

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from activation_reference import ref_forward
from finite_differences import central_difference
from test_dropout import call_bits


def away_from_zero(shape, seed=0, margin=0.05):
    """Normal samples with |x| >= margin, so kinks at 0 do not spoil finite differences."""
    x = np.random.default_rng(seed).normal(size=shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin * 2, x).astype(np.float32)


# --------------------------------------------------------------------------
# PReLU
# --------------------------------------------------------------------------
def prelu64(x, alpha):
    x, alpha = np.asarray(x, np.float64), np.asarray(alpha, np.float64)
    return np.where(x > 0, x, alpha * x)


def alpha_shape(sample_shape, shared_axes):
    shape = list(sample_shape)
    for ax in shared_axes or []:
        shape[ax - 1] = 1
    return tuple(shape)


PRELU_CASES = [
    pytest.param((7,), None, id="dense"),
    pytest.param((4, 5), [1], id="shared-leading"),
    pytest.param((3, 4, 5), [1, 2], id="per-channel"),
    pytest.param((3, 4, 5), [2], id="shared-middle"),
    pytest.param((3, 4, 5), [2, 3], id="shared-trailing"),
    pytest.param((3, 4, 5), [1, 2, 3], id="scalar"),
    pytest.param((2, 3, 4, 5), [1, 3], id="leading-and-middle"),
    pytest.param((3, 1, 5), [1], id="size-1-axis"),
]


@pytest.mark.parametrize("sample_shape,shared_axes", PRELU_CASES)
def test_prelu_forward_and_backward_match_float64_reference_and_finite_differences(sample_shape, shared_axes):
    rng = np.random.default_rng(1)
    x = away_from_zero((3,) + sample_shape, seed=2)
    alpha = rng.uniform(-0.5, 0.8, size=alpha_shape(sample_shape, shared_axes)).astype(np.float32)
    w = rng.normal(size=x.shape)
    y = np.full_like(x, np.nan)
    C.prelu_forward(x, alpha, y)
    np.testing.assert_allclose(y, prelu64(x, alpha), rtol=1e-6, atol=0)

    dx, dalpha = np.full_like(x, np.nan), np.full_like(alpha, np.nan)
    C.prelu_backward(x, alpha, w.astype(np.float32), dx, dalpha)
    fd_x = central_difference(lambda v: np.sum(w * prelu64(v, alpha)), x)
    fd_a = central_difference(lambda a: np.sum(w * prelu64(x, a)), alpha)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dalpha, fd_a, rtol=1e-5, atol=1e-5)

    dalpha2 = np.full_like(alpha, np.nan)
    C.prelu_backward(x, alpha, w.astype(np.float32), None, dalpha2)  # dx not needed
    np.testing.assert_array_equal(dalpha2, dalpha)


def test_prelu_alpha_gradient_is_identical_for_one_and_two_threads():
    x = np.random.default_rng(0).normal(size=(2048, 1024)).astype(np.float32)  # 2M > parallel threshold
    dy = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    alpha = np.full(1024, 0.1, np.float32)
    before = dc.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            dc.set_num_threads(threads)
            dx, da = np.empty_like(x), np.empty_like(alpha)
            C.prelu_backward(x, alpha, dy, dx, da)
            out.append((dx, da))
    finally:
        dc.set_num_threads(before)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    ref = np.sum(np.where(x > 0, 0.0, dy.astype(np.float64) * x), axis=0)
    np.testing.assert_allclose(out[0][1], ref, rtol=1e-6, atol=1e-6)


def test_prelu_layer_learns_one_slope_per_unit():
    layer = dc.PReLU(alpha_initializer=dc.initializers.Constant(0.25))
    x = np.array([[-2.0, 3.0, -1.0], [1.0, -4.0, -0.5]], np.float32)
    y = layer(x)
    np.testing.assert_allclose(y, prelu64(x, 0.25), rtol=1e-7)
    assert [v.name for v in layer.trainable_weights] == ["alpha"]
    assert layer.alpha.shape == (3,)
    dy = np.ones_like(x)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, np.where(x > 0, 1.0, 0.25))
    np.testing.assert_allclose(layer.alpha.grad, [-2.0, -4.0, -1.5])


def test_prelu_layer_shares_axes_like_keras():
    layer = dc.PReLU(shared_axes=[1, 2])
    layer(np.zeros((2, 4, 4, 3), np.float32))
    assert layer.alpha.shape == (1, 1, 3)
    assert np.all(layer.alpha.value == 0)  # alpha_initializer="zeros"


def test_prelu_in_a_model_trains_alpha():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.int64)
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input(shape=[8]), dc.Dense(16), dc.PReLU(), dc.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.SGD(0.1))
    model.fit(x, y, epochs=3, verbose=0)
    assert np.any(model.layers[1].alpha.value != 0)


def test_prelu_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    alpha = rng.uniform(0, 0.5, size=6).astype(np.float32)
    dy = rng.normal(size=(16, 6)).astype(np.float32)
    m = torch.nn.PReLU(num_parameters=6)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(alpha))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = m(tx)
    ty.backward(torch.from_numpy(dy))
    y, dx, da = np.empty_like(x), np.empty_like(x), np.empty_like(alpha)
    C.prelu_forward(x, alpha, y)
    C.prelu_backward(x, alpha, dy, dx, da)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(da, m.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_prelu_rejects_bad_alpha_shapes_and_unsupported_sharing():
    x = np.zeros((2, 3, 4), np.float32)
    for alpha in (np.zeros((4,), np.float32), np.zeros((3, 5), np.float32), np.zeros((2, 3, 4), np.float32)):
        with pytest.raises(ValueError, match="alpha"):
            C.prelu_forward(x, alpha, np.empty_like(x))
    with pytest.raises(TypeError, match="float32"):
        C.prelu_forward(x, np.zeros((3, 4)), np.empty_like(x))
    with pytest.raises(ValueError, match="shape"):
        C.prelu_backward(x, np.zeros((3, 4), np.float32), np.zeros((2, 3, 5), np.float32), None,
                         np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        dc.PReLU(shared_axes=[2, 4])(np.zeros((2, 2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        dc.PReLU(shared_axes=[0])(np.zeros((2, 3), np.float32))


# --------------------------------------------------------------------------
# RReLU
# --------------------------------------------------------------------------
def rrelu_slopes64(n, lower, upper, seed, stream, call):
    """Each element's slope: lower + (upper - lower) * U, U = (32 random bits >> 8) / 2^24."""
    u = (call_bits(n, seed, stream, call) >> np.uint64(8)).astype(np.float64) / 2.0**24
    return np.float32(lower) + (np.float32(upper) - np.float32(lower)) * u


@pytest.mark.parametrize("lower,upper", [(1 / 8, 1 / 3), (0.0, 1.0), (0.2, 0.2), (-0.5, 0.5)])
@pytest.mark.parametrize("n", [3, 1000, 4099])
def test_rrelu_training_forward_and_backward_match_float64_reference(lower, upper, n):
    key = (99, 5, 4)
    rng = np.random.default_rng(n)
    x, dy = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    a = rrelu_slopes64(n, lower, upper, *key)
    y, dx = np.full_like(x, np.nan), np.full_like(x, np.nan)
    C.rrelu_forward(x, y, lower, upper, True, *key)
    C.rrelu_backward(x, dy, dx, lower, upper, True, *key)
    np.testing.assert_allclose(y, np.where(x > 0, x, a * x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, np.where(x > 0, dy, a * dy), rtol=1e-6, atol=1e-7)


def test_rrelu_backward_matches_finite_differences_of_its_forward():
    key, lower, upper = (1, 2, 3), 0.1, 0.4
    x = away_from_zero(50)
    w = np.random.default_rng(1).normal(size=50)

    def loss(v):
        y = np.empty(50, np.float32)
        C.rrelu_forward(v.astype(np.float32), y, lower, upper, True, *key)
        return float(np.sum(w * y))

    dx = np.empty(50, np.float32)
    C.rrelu_backward(x, w.astype(np.float32), dx, lower, upper, True, *key)
    np.testing.assert_allclose(dx, central_difference(loss, x, h=1e-2), rtol=1e-4, atol=1e-4)


def test_rrelu_slopes_are_uniform_in_range_and_identical_for_any_thread_count():
    n = 3 * (1 << 20) + 5
    x = -np.ones(n, np.float32)
    before = dc.get_num_threads()
    ys = []
    try:
        for threads in (1, 2):
            dc.set_num_threads(threads)
            y = np.empty_like(x)
            C.rrelu_forward(x, y, 0.125, 1 / 3, True, 4, 5, 6)
            ys.append(y)
    finally:
        dc.set_num_threads(before)
    np.testing.assert_array_equal(ys[0], ys[1])
    a = -ys[0].astype(np.float64)
    assert a.min() >= 0.125 and a.max() < 1 / 3 + 1e-7
    width = 1 / 3 - 0.125
    assert abs(a.mean() - (0.125 + 1 / 3) / 2) < 6 * width / np.sqrt(12 * n)
    assert abs(a.var() - width**2 / 12) < 6 * width**2 / np.sqrt(180 * n) * 2


def test_rrelu_inference_uses_the_mean_slope():
    x = np.array([-2.0, -0.5, 0.0, 1.5], np.float32)
    layer = dc.RReLU(lower=0.1, upper=0.3)
    np.testing.assert_allclose(layer(x[None]), [[-0.4, -0.1, 0.0, 1.5]], rtol=1e-6)
    dx = layer.backward(np.ones((1, 4), np.float32))
    np.testing.assert_allclose(dx, [[0.2, 0.2, 0.2, 1.0]], rtol=1e-6)  # PyTorch: the slope applies at 0


def test_rrelu_layer_draws_new_slopes_each_training_step():
    x = -np.ones((4, 100), np.float32)
    layer = dc.RReLU(seed=3)
    y0, y1 = layer(x, training=True), layer(x, training=True)
    assert not np.array_equal(y0, y1)
    np.testing.assert_array_equal(dc.RReLU(seed=3)(x, training=True), y0)


def test_rrelu_matches_pytorch_in_eval_mode():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(8, 9)).astype(np.float32)
    dy = np.random.default_rng(1).normal(size=(8, 9)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = torch.nn.functional.rrelu(tx, lower=0.1, upper=0.3, training=False)
    ty.backward(torch.from_numpy(dy))
    layer = dc.RReLU(0.1, 0.3)
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-6)


def test_rrelu_rejects_bad_bounds():
    with pytest.raises(ValueError, match="lower"):
        dc.RReLU(lower=0.5, upper=0.1)
    with pytest.raises(ValueError, match="finite"):
        dc.RReLU(lower=float("nan"))
    x = np.zeros(4, np.float32)
    for lo, hi in [(0.5, 0.1), (float("nan"), 0.2), (0.1, float("inf"))]:
        with pytest.raises(ValueError, match="lower"):
            C.rrelu_forward(x, np.empty_like(x), lo, hi, True)
        with pytest.raises(ValueError, match="lower"):
            C.rrelu_backward(x, x, np.empty_like(x), lo, hi, True)
    with pytest.raises(TypeError, match="float32"):
        C.rrelu_forward(x.astype(np.float64), np.empty_like(x), 0.1, 0.2, True)
    with pytest.raises(ValueError, match="shape"):
        C.rrelu_backward(x, np.zeros(5, np.float32), np.empty_like(x), 0.1, 0.2, True)


# --------------------------------------------------------------------------
# Swish with a learnable beta
# --------------------------------------------------------------------------
def swish64(x, beta):
    return np.asarray(x, np.float64) / (1.0 + np.exp(-beta * np.asarray(x, np.float64)))


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_swish_layer_forward_dx_and_dbeta_match_finite_differences(beta):
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32) * 2
    w = np.random.default_rng(1).normal(size=(5, 6))
    layer = dc.Swish(beta=beta)
    np.testing.assert_allclose(layer(x), swish64(x, beta), rtol=1e-5, atol=1e-6)
    dx = layer.backward(w.astype(np.float32))
    np.testing.assert_allclose(dx, central_difference(lambda v: np.sum(w * swish64(v, beta)), x),
                               rtol=1e-4, atol=1e-5)
    dbeta = central_difference(lambda b: np.sum(w * swish64(x, b[0])), np.array([beta]))[0]
    np.testing.assert_allclose(float(layer.beta.grad), dbeta, rtol=1e-4)


def test_swish_beta_is_trained_unless_frozen():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    for trainable in (True, False):
        dc.set_random_seed(0)
        act = dc.Swish(trainable=trainable)
        model = dc.Sequential([dc.Input(shape=[4]), dc.Dense(8), act, dc.Dense(2, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.SGD(0.1))
        model.fit(x, y, epochs=2, verbose=0)
        assert (float(act.beta.value) != 1.0) == trainable
        assert [v.name for v in act.trainable_weights] == (["beta"] if trainable else [])


# --------------------------------------------------------------------------
# Fixed activations as layers, and SELU
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layer,name,alpha", [
    (lambda: dc.LeakyReLU(), "leaky_relu", 0.3),
    (lambda: dc.LeakyReLU(negative_slope=0.05), "leaky_relu", 0.05),
    (lambda: dc.ELU(), "elu", 1.0),
    (lambda: dc.ELU(alpha=0.5), "elu", 0.5),
    (lambda: dc.GELU(), "gelu", 0.0),
    (lambda: dc.GELU(approximate=True), "gelu_tanh", 0.0),
    (lambda: dc.Mish(), "mish", 0.0),
], ids=["leaky-default", "leaky-0.05", "elu-default", "elu-0.5", "gelu", "gelu-tanh", "mish"])
def test_activation_layers_match_float64_reference_and_finite_differences(layer, name, alpha):
    x = away_from_zero((6, 7))
    w = np.random.default_rng(1).normal(size=(6, 7))
    lay = layer()
    np.testing.assert_allclose(lay(x), ref_forward(name, x, alpha, 1.0), rtol=2e-5, atol=2e-6)
    fd = central_difference(lambda v: np.sum(w * ref_forward(name, v, alpha, 1.0)), x)
    np.testing.assert_allclose(lay.backward(w.astype(np.float32)), fd, rtol=2e-4, atol=2e-5)


def test_activation_layers_reject_bad_parameters():
    with pytest.raises(ValueError, match="negative_slope"):
        dc.LeakyReLU(negative_slope=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        dc.ELU(alpha=float("nan"))
    with pytest.raises(ValueError, match="beta"):
        dc.Swish(beta="1")


def test_activation_layers_round_trip_through_get_config():
    layers = [dc.LeakyReLU(0.1), dc.ELU(0.7), dc.GELU(approximate=True), dc.Mish(), dc.Swish(beta=1.5),
              dc.RReLU(0.2, 0.3, seed=4), dc.PReLU(alpha_initializer="ones", shared_axes=[1])]
    for layer in layers:
        cfg = layer.get_config()
        cfg["name"] = cfg["name"] + "_copy"
        clone = type(layer).from_config(cfg)
        strip = lambda c: {k: v for k, v in c.items() if k != "name"}  # noqa: E731
        assert strip(clone.get_config()) == strip(layer.get_config()), type(layer).__name__


def test_selu_with_lecun_normal_keeps_activations_standardized_through_depth():
    # Self-normalization (Klambauer et al., 2017): with LeCun-normal weights a
    # deep SELU stack keeps standardized inputs near mean 0 and std 1.
    x = np.random.default_rng(0).normal(size=(1000, 100)).astype(np.float32)
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input(shape=[100])] + [
        dc.Dense(100, activation="selu", kernel_initializer="lecun_normal") for _ in range(30)])
    out = model.predict(x, batch_size=1000)
    assert abs(out.mean()) < 0.15 and 0.8 < out.std() < 1.2
    # ... which the same stack with ReLU and LeCun init does not do (the test can fail).
    dc.set_random_seed(0)
    relu = dc.Sequential([dc.Input(shape=[100])] + [
        dc.Dense(100, activation="relu", kernel_initializer="lecun_normal") for _ in range(30)])
    assert relu.predict(x, batch_size=1000).std() < 0.1


def test_swish_beta_survives_save_and_load(tmp_path):
    dc.set_random_seed(0)

    def make():
        return dc.Sequential([dc.Input((3,)), dc.Dense(4, name="d"), dc.Swish(name="sw"), dc.Dense(2, name="o")])

    m = make()
    m.layers[1].beta.assign(np.float32(1.7))
    m.save_weights(tmp_path / "w.safetensors")
    again = make()
    again.load_weights(tmp_path / "w.safetensors")
    assert again.layers[1].beta.value.shape == () and float(again.layers[1].beta.value) == pytest.approx(1.7)


def test_prelu_config_keeps_regularizer_and_constraint():
    layer = dc.PReLU(alpha_regularizer="l2", alpha_constraint=dc.constraints.MaxNorm(1.0))
    again = dc.PReLU.from_config(layer.get_config())
    assert again.alpha_regularizer.l2 == 0.01 and again.alpha_constraint.max_value == 1.0


def test_softmax_activation_layer_is_fused_with_the_loss_from_the_first_fit():
    # With saturated logits the unfused softmax backward loses the gradient.
    dc.set_random_seed(0)
    m = dc.Sequential([dc.Input((2,)), dc.Dense(2), dc.Activation("softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert m._fusion()
