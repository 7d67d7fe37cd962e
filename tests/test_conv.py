"""Conv2D, pooling and zero padding: the kernels (deepcore._core.conv2d_*,
pool2d_*, pad2d/crop2d) against float64 NumPy references written
independently of them (zero-padded slices, no im2col), the layers by finite
differences and against PyTorch (when installed), and bad input.

Layouts: NHWC tensors and HWIO kernels, as Keras; PyTorch's NCHW / OIHW are
mapped with transposes. "same" padding follows TensorFlow: the output has
ceil(n / stride) pixels and an odd total padding puts the extra pixel after.
"""
import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore.activations import _CODES
from activation_reference import ref_forward
from finite_differences import central_difference


# ------------------------------------------------------------ references

def axis_geometry(n, k, stride, dilation, padding):
    """(out, pad_before, pad_after) of one axis, TensorFlow's rule."""
    dilated = (k - 1) * dilation + 1
    if padding == "valid":
        return (n - dilated) // stride + 1, 0, 0
    out = -(-n // stride)
    total = max((out - 1) * stride + dilated - n, 0)
    return out, total // 2, total - total // 2


def padded(x, kernel, strides, dilation, padding, fill=0.0):
    """x (N, H, W, C) zero- (or fill-) padded for the window, and (OH, OW)."""
    (oh, t, b), (ow, l, r) = (axis_geometry(x.shape[1], kernel[0], strides[0], dilation[0], padding),
                              axis_geometry(x.shape[2], kernel[1], strides[1], dilation[1], padding))
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill), (oh, ow), (t, l)


def window_slice(i, j, out, strides, dilation):
    """The slices of the padded input that tap (i, j) of every window reads."""
    (oh, ow), (sh, sw), (dh, dw) = out, strides, dilation
    return (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw), slice(None))


def conv_ref(x, w, b, strides, dilation, padding):
    """z = conv(x, w) + b in float64, one kernel tap at a time."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp, out, _ = padded(x, w.shape[:2], strides, dilation, padding)
    z = np.zeros((x.shape[0],) + out + (w.shape[3],))
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            z += xp[window_slice(i, j, out, strides, dilation)] @ w[i, j]
    return z if b is None else z + np.asarray(b, np.float64)


def conv_grads_ref(x, w, dz, strides, dilation, padding):
    """(dx, dw, db) of sum(dz * conv(x, w)) in float64."""
    x, w, dz = (np.asarray(a, np.float64) for a in (x, w, dz))
    xp, out, (t, l) = padded(x, w.shape[:2], strides, dilation, padding)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            s = window_slice(i, j, out, strides, dilation)
            dxp[s] += dz @ w[i, j].T
            dw[i, j] = np.einsum("nhwc,nhwf->cf", xp[s], dz)
    dx = dxp[:, t:t + x.shape[1], l:l + x.shape[2], :]
    return dx, dw, dz.sum(axis=(0, 1, 2))


def pool_ref(x, pool, strides, padding, mode):
    """Max or average pooling in float64; padding ignored (TensorFlow)."""
    x = np.asarray(x, np.float64)
    xp, out, _ = padded(x, pool, strides, (1, 1), padding, fill=np.nan)
    taps = np.stack([xp[window_slice(i, j, out, strides, (1, 1))]
                     for i in range(pool[0]) for j in range(pool[1])])
    return np.nanmax(taps, axis=0) if mode == "max" else np.nanmean(taps, axis=0)


def avg_pool_grad_ref(x_shape, dy, pool, strides, padding):
    """dx of sum(dy * avg_pool(x)) in float64 (linear in x: spread dy / count)."""
    ones = np.ones(x_shape)
    xp, out, (t, l) = padded(ones, pool, strides, (1, 1), padding)
    count = sum(xp[window_slice(i, j, out, strides, (1, 1))] for i in range(pool[0]) for j in range(pool[1]))
    dxp = np.zeros_like(xp)
    for i in range(pool[0]):
        for j in range(pool[1]):
            dxp[window_slice(i, j, out, strides, (1, 1))] += dy / count
    return dxp[:, t:t + x_shape[1], l:l + x_shape[2], :]


# ------------------------------------------------------------ kernel calls

def run_conv(x, w, b, strides, dilation, padding, act="linear", alpha=0.0, beta=1.0):
    """(col, z, y) from deepcore._core.conv2d_forward."""
    oh, ow, _, _ = C.conv2d_output_shape(x.shape[1], x.shape[2], w.shape[:2], strides, dilation, padding)
    n, f = x.shape[0], w.shape[3]
    col = np.zeros((n * oh * ow, w.shape[0] * w.shape[1] * x.shape[3]), np.float32)
    z = np.zeros((n, oh, ow, f), np.float32)
    y = np.zeros_like(z)
    C.conv2d_forward(x, w, b, col, z, y, strides, dilation, padding, _CODES[act], alpha, beta)
    return col, z, y


def run_conv_backward(x, w, col, z, y, dy, strides, dilation, padding, act="linear", use_bias=True):
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    db = np.zeros(w.shape[3], np.float32) if use_bias else None
    C.conv2d_backward(x, w, col, z, y, dy, np.zeros_like(dy), np.zeros_like(col), dx, dw, db, strides, dilation,
                      padding, _CODES[act])
    return dx, dw, db


def data(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# (N, H, W, C), (KH, KW, F), strides, dilation, padding
CONV_CASES = [
    pytest.param((2, 7, 7, 3), (3, 3, 4), (1, 1), (1, 1), "valid", id="3x3-valid"),
    pytest.param((2, 7, 7, 3), (3, 3, 4), (1, 1), (1, 1), "same", id="3x3-same"),
    pytest.param((2, 8, 9, 2), (5, 5, 3), (2, 2), (1, 1), "same", id="5x5-s2-same-odd-width"),
    pytest.param((1, 9, 8, 2), (4, 4, 3), (2, 2), (1, 1), "same", id="4x4-s2-same-even-kernel"),
    pytest.param((2, 9, 7, 2), (2, 3, 5), (3, 2), (1, 1), "valid", id="2x3-s3x2-valid"),
    pytest.param((2, 9, 10, 2), (3, 3, 2), (1, 1), (2, 3), "valid", id="dilated-2x3-valid"),
    pytest.param((1, 8, 8, 3), (3, 2, 2), (1, 1), (2, 2), "same", id="dilated-same"),
    pytest.param((3, 5, 5, 1), (1, 1, 6), (1, 1), (1, 1), "valid", id="1x1"),
    pytest.param((2, 4, 4, 2), (5, 5, 3), (1, 1), (1, 1), "same", id="kernel-larger-than-image-same"),
    pytest.param((2, 28, 28, 1), (5, 5, 6), (1, 1), (1, 1), "same", id="ladder-1"),
]


@pytest.mark.parametrize("x_shape, k, strides, dilation, padding", CONV_CASES)
def test_conv2d_output_shape_follows_tensorflow(x_shape, k, strides, dilation, padding):
    gh = axis_geometry(x_shape[1], k[0], strides[0], dilation[0], padding)
    gw = axis_geometry(x_shape[2], k[1], strides[1], dilation[1], padding)
    assert C.conv2d_output_shape(x_shape[1], x_shape[2], k[:2], strides, dilation, padding) == (gh[0], gw[0], gh[1],
                                                                                                  gw[1])


@pytest.mark.parametrize("x_shape, k, strides, dilation, padding", CONV_CASES)
@pytest.mark.parametrize("act", ["linear", "relu", "tanh"])
def test_conv2d_forward_matches_float64_reference(x_shape, k, strides, dilation, padding, act):
    rng = np.random.default_rng(0)
    x, w, b = data(rng, *x_shape), data(rng, k[0], k[1], x_shape[3], k[2]), data(rng, k[2])
    _, z, y = run_conv(x, w, b, strides, dilation, padding, act)
    z64 = conv_ref(x, w, b, strides, dilation, padding)
    scale = np.abs(x).max() * np.abs(w).sum(axis=(0, 1, 2)).max()
    np.testing.assert_allclose(z, z64, atol=2e-6 * scale, rtol=0)
    np.testing.assert_allclose(y, ref_forward(act, z64, 0.0, 1.0), atol=2e-6 * scale, rtol=0)


@pytest.mark.parametrize("x_shape, k, strides, dilation, padding", CONV_CASES)
@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid"])
def test_conv2d_backward_matches_float64_reference(x_shape, k, strides, dilation, padding, act):
    rng = np.random.default_rng(1)
    x, w, b = data(rng, *x_shape), data(rng, k[0], k[1], x_shape[3], k[2]), data(rng, k[2])
    col, z, y = run_conv(x, w, b, strides, dilation, padding, act)
    dy = data(rng, *z.shape)
    dx, dw, db = run_conv_backward(x, w, col, z, y, dy, strides, dilation, padding, act)
    z64 = conv_ref(x, w, b, strides, dilation, padding)
    if act == "relu":
        dz = dy * (z64 > 0)
    elif act == "sigmoid":
        s = 1 / (1 + np.exp(-z64))
        dz = dy * s * (1 - s)
    else:
        dz = dy.astype(np.float64)
    dx64, dw64, db64 = conv_grads_ref(x, w, dz, strides, dilation, padding)
    for got, want, name in ((dx, dx64, "dx"), (dw, dw64, "dw"), (db, db64, "db")):
        np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()), rtol=1e-4, err_msg=name)


def test_conv2d_backward_without_dx_or_bias_leaves_them_alone_and_accumulates_dw():
    rng = np.random.default_rng(2)
    x, w = data(rng, 2, 6, 6, 2), data(rng, 3, 3, 2, 3)
    col, z, y = run_conv(x, w, None, (1, 1), (1, 1), "same")
    dy = data(rng, *z.shape)
    dw = np.ones_like(w)
    C.conv2d_backward(x, w, col, z, y, dy, np.zeros_like(dy), None, None, dw, None, (1, 1), (1, 1), "same", 0,
                      accumulate=True)
    _, dw64, _ = conv_grads_ref(x, w, dy, (1, 1), (1, 1), "same")
    np.testing.assert_allclose(dw, dw64 + 1, atol=1e-4)


POOL_CASES = [
    pytest.param((2, 6, 6, 3), (2, 2), (2, 2), "valid", id="2x2"),
    pytest.param((2, 7, 7, 3), (2, 2), (2, 2), "valid", id="2x2-odd-image"),
    pytest.param((2, 7, 7, 3), (2, 2), (2, 2), "same", id="2x2-same-odd-image"),
    pytest.param((1, 7, 8, 2), (3, 3), (2, 2), "same", id="3x3-s2-overlapping-same"),
    pytest.param((2, 9, 6, 4), (3, 2), (1, 2), "valid", id="3x2-s1x2"),
    pytest.param((2, 5, 4, 3), (5, 4), (1, 1), "valid", id="global"),
]


@pytest.mark.parametrize("x_shape, pool, strides, padding", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool2d_forward_and_backward_match_float64_reference(x_shape, pool, strides, padding, mode):
    rng = np.random.default_rng(3)
    x = data(rng, *x_shape)
    oh, ow, _, _ = C.conv2d_output_shape(x_shape[1], x_shape[2], pool, strides, (1, 1), padding)
    y = np.zeros((x_shape[0], oh, ow, x_shape[3]), np.float32)
    arg = np.zeros(y.shape, np.int32) if mode == "max" else None
    C.pool2d_forward(x, y, arg, pool, strides, padding, mode)
    y64 = pool_ref(x, pool, strides, padding, mode)
    np.testing.assert_allclose(y, y64, atol=1e-6, rtol=1e-6)
    dy = data(rng, *y.shape)
    dx = np.full_like(x, np.nan)  # overwritten everywhere
    C.pool2d_backward(dy, arg, dx, pool, strides, padding, mode)
    if mode == "avg":
        dx64 = avg_pool_grad_ref(x.shape, dy.astype(np.float64), pool, strides, padding)
    else:  # the gradient flows to each window's maximum (ties have probability 0 with normal data)
        dx64 = central_difference(lambda a: float((pool_ref(a, pool, strides, padding, "max") * dy).sum()), x)
    np.testing.assert_allclose(dx, dx64, atol=1e-5, rtol=1e-5)


def test_max_pooling_keeps_the_first_maximum_on_ties_and_propagates_nan():
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 1, 1, 1] = np.nan
    y, arg = np.zeros((1, 1, 1, 2), np.float32), np.zeros((1, 1, 1, 2), np.int32)
    C.pool2d_forward(x, y, arg, (2, 2), (2, 2), "valid", "max")
    assert y[0, 0, 0, 0] == 0 and arg[0, 0, 0, 0] == 0
    assert np.isnan(y[0, 0, 0, 1]) and arg[0, 0, 0, 1] == 3


def test_pad2d_and_crop2d_are_zero_padding_and_its_adjoint():
    rng = np.random.default_rng(4)
    x = data(rng, 2, 3, 4, 3)
    pads = ((1, 2), (0, 3))
    y = np.full((2, 6, 7, 3), np.nan, np.float32)
    C.pad2d(x, y, pads)
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0),) + pads + ((0, 0),)))
    dx = np.zeros_like(x)
    C.crop2d(y, dx, pads)
    np.testing.assert_array_equal(dx, x)


# ------------------------------------------------------------ layers

def layer_grads_by_finite_differences(layer, x, dy, weights):
    """Finite differences of sum(dy * layer(x)) in float64 with respect to x and each weight.

    The layer runs in float32; the step is large enough for float32 rounding
    (h = 1e-2 on a loss that is linear where it matters) and the tolerance
    below says how close that gets."""
    def loss_x(a):
        return float((layer(a.astype(np.float32)).astype(np.float64) * dy).sum())

    grads = [central_difference(loss_x, x, h=1e-2)]
    for var in weights:
        base = var.numpy()

        def loss_w(a, var=var):
            var.assign(a.astype(np.float32))
            return float((layer(x).astype(np.float64) * dy).sum())

        grads.append(central_difference(loss_w, base, h=1e-2))
        var.assign(base)
    return grads


def layer_backward(layer, x, dy):
    layer(x)  # builds and runs forward once on the host
    y = layer.forward(x, training=True)
    dx = layer.backward(dy.astype(np.float32).reshape(y.shape), need_dx=True)
    return [np.array(dx)] + [v.grad.copy() for v in layer.trainable_weights]


LAYER_CASES = [
    pytest.param(dict(filters=3, kernel_size=3, padding="same", activation="tanh"), (2, 5, 6, 2), id="3x3-same-tanh"),
    pytest.param(dict(filters=2, kernel_size=(4, 3), strides=2, padding="same"), (2, 7, 6, 2), id="4x3-s2-same"),
    pytest.param(dict(filters=2, kernel_size=3, dilation_rate=2, activation="sigmoid"), (1, 7, 7, 2),
                 id="dilated-valid-sigmoid"),
    pytest.param(dict(filters=2, kernel_size=2, strides=(1, 2), use_bias=False), (2, 5, 5, 1), id="no-bias"),
]


@pytest.mark.parametrize("kwargs, x_shape", LAYER_CASES)
def test_conv2d_layer_gradients_match_finite_differences(kwargs, x_shape):
    rng = np.random.default_rng(5)
    layer = dc.layers.Conv2D(**kwargs)
    x = data(rng, *x_shape)
    layer(x)
    dy = rng.standard_normal((x_shape[0],) + layer.output_shape)
    got = layer_backward(layer, x, dy)
    want = layer_grads_by_finite_differences(layer, x, dy, layer.trainable_weights)
    for g, w, name in zip(got, want, ["dx"] + [v.name for v in layer.trainable_weights]):
        np.testing.assert_allclose(g, w, atol=3e-3 * max(1.0, np.abs(w).max()), rtol=1e-2, err_msg=name)


@pytest.mark.parametrize("layer_fn, x_shape", [
    pytest.param(lambda: dc.layers.AveragePooling2D(3, strides=2, padding="same"), (2, 7, 6, 2), id="avg-same"),
    pytest.param(lambda: dc.layers.GlobalAveragePooling2D(), (2, 4, 3, 3), id="global-avg"),
    pytest.param(lambda: dc.layers.MaxPooling2D(padding="same"), (2, 5, 5, 2), id="max-same"),
    pytest.param(lambda: dc.layers.GlobalMaxPooling2D(keepdims=True), (2, 4, 3, 3), id="global-max-keepdims"),
    pytest.param(lambda: dc.layers.ZeroPadding2D(((1, 0), (2, 1))), (2, 3, 3, 2), id="zero-padding"),
])
def test_pooling_and_padding_layer_gradients_match_finite_differences(layer_fn, x_shape):
    rng = np.random.default_rng(6)
    layer = layer_fn()
    x = data(rng, *x_shape)
    layer(x)
    dy = rng.standard_normal((x_shape[0],) + layer.output_shape)
    got = layer_backward(layer, x, dy)[0]
    want = layer_grads_by_finite_differences(layer, x, dy, [])[0]
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)


def test_layers_compute_keras_output_shapes():
    def out(layer, shape):
        return layer.compute_output_shape(shape)

    assert out(dc.layers.Conv2D(6, 5, padding="same"), (28, 28, 1)) == (28, 28, 6)
    assert out(dc.layers.Conv2D(12, 5, strides=2, padding="same"), (28, 28, 6)) == (14, 14, 12)
    assert out(dc.layers.Conv2D(24, 4, strides=2, padding="same"), (14, 14, 12)) == (7, 7, 24)
    assert out(dc.layers.Conv2D(8, 3), (28, 28, 1)) == (26, 26, 8)
    assert out(dc.layers.Conv2D(8, 3, dilation_rate=2), (28, 28, 1)) == (24, 24, 8)
    assert out(dc.layers.MaxPooling2D(), (7, 7, 3)) == (3, 3, 3)
    assert out(dc.layers.MaxPooling2D(padding="same"), (7, 7, 3)) == (4, 4, 3)
    assert out(dc.layers.AveragePooling2D(3, strides=1), (7, 7, 3)) == (5, 5, 3)
    assert out(dc.layers.GlobalAveragePooling2D(), (7, 5, 3)) == (3,)
    assert out(dc.layers.ZeroPadding2D(), (7, 5, 3)) == (9, 7, 3)
    assert out(dc.layers.ZeroPadding2D((1, 2)), (7, 5, 3)) == (9, 9, 3)
    assert out(dc.layers.Flatten(), (7, 5, 3)) == (105,)


def test_conv_layers_round_trip_through_get_config():
    for layer in [dc.layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu", use_bias=False),
                  dc.layers.MaxPooling2D(3, 2, "same"), dc.layers.AveragePooling2D(),
                  dc.layers.GlobalMaxPooling2D(keepdims=True), dc.layers.ZeroPadding2D(((1, 2), (3, 4)))]:
        cfg = layer.get_config()
        cfg.pop("name")
        again = type(layer).from_config(cfg).get_config()
        again.pop("name")
        assert again == cfg


def test_a_small_convnet_learns_in_sequential_and_is_exported_at_top_level():
    rng = np.random.default_rng(7)
    # A horizontal (class 0) or vertical (class 1) bar at a random place, in noise.
    y = rng.integers(0, 2, 256).astype(np.int32)
    x = 0.3 * rng.standard_normal((256, 8, 8, 1)).astype(np.float32)
    for n, (label, at) in enumerate(zip(y, rng.integers(1, 7, 256))):
        if label:
            x[n, 1:7, at] += 1
        else:
            x[n, at, 1:7] += 1
    model = dc.Sequential([dc.Input((8, 8, 1)), dc.Conv2D(4, 3, padding="same", activation="relu"),
                           dc.MaxPooling2D(), dc.ZeroPadding2D(1), dc.Conv2D(4, 3, activation="relu"),
                           dc.GlobalAveragePooling2D(), dc.Dense(2, activation="softmax")])
    model.compile(optimizer=dc.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert hist.history["accuracy"][-1] > 0.85
    assert hist.history["loss"][-1] < hist.history["loss"][0]


# ------------------------------------------------------------ PyTorch parity

@pytest.mark.parametrize("x_shape, k, strides, dilation, padding", [c for c in CONV_CASES if c.id in (
    "3x3-valid", "5x5-s2-same-odd-width", "2x3-s3x2-valid", "dilated-2x3-valid")])
def test_conv2d_forward_and_gradients_match_pytorch(x_shape, k, strides, dilation, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x, w, b = data(rng, *x_shape), data(rng, k[0], k[1], x_shape[3], k[2]), data(rng, k[2])
    col, z, y = run_conv(x, w, b, strides, dilation, padding)
    dy = data(rng, *z.shape)
    dx, dw, db = run_conv_backward(x, w, col, z, y, dy, strides, dilation, padding)
    # NHWC -> NCHW, HWIO -> OIHW; TensorFlow's "same" as explicit (possibly asymmetric) padding.
    _, _, (t, l) = padded(x, k[:2], strides, dilation, padding)
    (_, _, bt), (_, _, r) = (axis_geometry(x_shape[1], k[0], strides[0], dilation[0], padding),
                             axis_geometry(x_shape[2], k[1], strides[1], dilation[1], padding))
    tx = torch.tensor(x).permute(0, 3, 1, 2).double().requires_grad_()
    tw = torch.tensor(w).permute(3, 2, 0, 1).double().requires_grad_()
    tb = torch.tensor(b).double().requires_grad_()
    out = F.conv2d(F.pad(tx, (l, r, t, bt)), tw, tb, stride=strides, dilation=dilation)
    out.backward(torch.tensor(dy).permute(0, 3, 1, 2).double())
    np.testing.assert_allclose(z, out.detach().permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(dx, tx.grad.permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(dw, tw.grad.permute(2, 3, 1, 0).numpy(), atol=1e-4)
    np.testing.assert_allclose(db, tb.grad.numpy(), atol=1e-4)


def test_max_and_average_pooling_match_pytorch_for_valid_windows():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = data(rng, 2, 7, 8, 3)
    tx = torch.tensor(x).permute(0, 3, 1, 2)
    for layer, fn in ((dc.layers.MaxPooling2D(3, 2), torch.nn.functional.max_pool2d),
                      (dc.layers.AveragePooling2D(3, 2), torch.nn.functional.avg_pool2d)):
        np.testing.assert_allclose(layer(x), fn(tx, 3, 2).permute(0, 2, 3, 1).numpy(), atol=1e-6)


# ------------------------------------------------------------ bad input

def test_conv_layers_reject_bad_arguments_with_value_errors():
    with pytest.raises(ValueError, match="filters"):
        dc.layers.Conv2D(0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        dc.layers.Conv2D(4, 0)
    with pytest.raises(ValueError, match="strides"):
        dc.layers.Conv2D(4, 3, strides=(1, -1))
    with pytest.raises(ValueError, match="padding"):
        dc.layers.Conv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match="dilation_rate > 1"):
        dc.layers.Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="channels_last"):
        dc.layers.Conv2D(4, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="pool_size"):
        dc.layers.MaxPooling2D(0)
    with pytest.raises(ValueError, match="padding"):
        dc.layers.ZeroPadding2D(-1)


def test_conv_layers_reject_bad_input_shapes_with_value_errors():
    x = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="4-D input"):
        dc.layers.Conv2D(4, 3)(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="larger than the 8x8 input"):
        dc.layers.Conv2D(4, 9)(x)
    with pytest.raises(ValueError, match="larger than the 8x8 input"):
        dc.layers.Conv2D(4, 3, dilation_rate=4)(x)
    with pytest.raises(ValueError, match="larger than"):
        dc.layers.MaxPooling2D(9)(x)
    with pytest.raises(ValueError, match="4-D input"):
        dc.layers.GlobalMaxPooling2D()(np.zeros((2, 8), np.float32))
    conv = dc.layers.Conv2D(4, 3)
    conv(x)
    with pytest.raises(ValueError, match="built for input shape"):  # channels differ from the built ones
        conv(np.zeros((2, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="expected input shape"):
        conv.forward(np.zeros((2, 8, 8, 2), np.float32))


def test_conv_kernels_reject_bad_arrays_at_the_boundary():
    x, w = np.zeros((2, 6, 6, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32)
    col, z = np.zeros((2 * 16, 27), np.float32), np.zeros((2, 4, 4, 4), np.float32)
    args = ((1, 1), (1, 1), "valid", 0)
    C.conv2d_forward(x, w, None, col, z, z, *args)  # the well-formed call
    with pytest.raises(TypeError, match="float32"):
        C.conv2d_forward(x.astype(np.float64), w, None, col, z, z, *args)
    with pytest.raises(ValueError, match="C-contiguous"):
        C.conv2d_forward(np.zeros((2, 6, 6, 6), np.float32)[..., ::2], w, None, col, z, z, *args)
    with pytest.raises(ValueError, match="4-D"):
        C.conv2d_forward(x[0], w, None, col, z, z, *args)
    with pytest.raises(ValueError, match="w must have shape"):
        C.conv2d_forward(x, np.zeros((3, 3, 2, 4), np.float32), None, col, z, z, *args)
    with pytest.raises(ValueError, match="col must have shape"):
        C.conv2d_forward(x, w, None, col[:-1], z, z, *args)
    with pytest.raises(ValueError, match="larger than"):
        C.conv2d_forward(x, np.zeros((7, 7, 3, 4), np.float32), None, col, z, z, *args)
    with pytest.raises(ValueError, match="strides must be positive"):
        C.conv2d_forward(x, w, None, col, z, z, (0, 1), (1, 1), "valid", 0)
    with pytest.raises(ValueError, match="padding"):
        C.conv2d_forward(x, w, None, col, z, z, (1, 1), (1, 1), "full", 0)
    with pytest.raises(ValueError, match="dcol"):
        C.conv2d_backward(x, w, col, z, z, z, z.copy(), None, np.zeros_like(x), np.zeros_like(w), None, *args)
    y = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="argmax"):
        C.pool2d_forward(x, y, None, (2, 2), (2, 2), "valid", "max")
    with pytest.raises(TypeError, match="int32"):
        C.pool2d_forward(x, y, np.zeros(y.shape, np.int64), (2, 2), (2, 2), "valid", "max")
    with pytest.raises(ValueError, match="mode"):
        C.pool2d_forward(x, y, None, (2, 2), (2, 2), "valid", "min")
    with pytest.raises(ValueError, match="non-negative"):
        C.pad2d(x, x, ((0, -1), (0, 0)))


def test_an_empty_batch_is_a_no_op():
    x, w = np.zeros((0, 6, 6, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32)
    col, z = np.zeros((0, 27), np.float32), np.zeros((0, 4, 4, 4), np.float32)
    C.conv2d_forward(x, w, None, col, z, z, (1, 1), (1, 1), "valid", 0)
    C.pool2d_forward(x, np.zeros((0, 3, 3, 3), np.float32), None, (2, 2), (2, 2), "valid", "avg")
