"""The CUDA twins of the conv family (cuda/conv.cu) against the CPU kernels of
deepcore._core, and a small convnet trained on the device against the CPU.

Runs everywhere: the twins have the CPU's names and signatures. The GPU tests
skip with deepcore.cuda.reason() (and the Conv2D ones with
_cuda.blas_reason() when cuBLASLt is missing); under the CUDA host emulator
they run on the CPU (tests/cuda_emulator/README.md).

Tolerances. z = im2col(x) W + b and dW = col^T dz, dcol = dz W^T are GEMMs,
compared against the bound their rounding obeys (test_cuda_dense.py's
assert_within_gemm_bound); col2im then adds the same terms in the CPU's order.
Pooling, zero padding and col2im of the same input have the CPU's bits.
"""
import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore.activations import _CODES
from device_data import assert_steps_agree, dev
from test_conv import conv_grads_ref, conv_ref
from test_cuda_dense import GB, GEMM_REL_FP32, assert_within_gemm_bound, cuda_module  # noqa: F401 (fixture)

TWINS = ["conv2d_output_shape", "conv2d_forward", "conv2d_backward", "pool2d_forward", "pool2d_backward", "pad2d",
         "crop2d"]


@pytest.mark.parametrize("name", TWINS)
def test_conv_twin_has_the_cpu_name_and_signature(name):
    G = cuda_module()
    assert getattr(G, name).__doc__.splitlines()[0] == getattr(C, name).__doc__.splitlines()[0]


# (N, H, W, C), (KH, KW, F), strides, dilation, padding: small (the emulator runs each thread on the CPU)
CASES = [
    pytest.param((2, 7, 6, 3), (3, 3, 4), (1, 1), (1, 1), "same", id="3x3-same"),
    pytest.param((2, 9, 8, 2), (5, 4, 3), (2, 2), (1, 1), "same", id="5x4-s2-same"),
    pytest.param((1, 9, 9, 2), (3, 3, 2), (1, 1), (2, 2), "valid", id="dilated-valid"),
]


def problem(x_shape, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((k[0], k[1], x_shape[3], k[2])).astype(np.float32)
    b = rng.standard_normal(k[2]).astype(np.float32)
    return x, w, b


def cpu_conv(x, w, b, args, act):
    oh, ow, _, _ = C.conv2d_output_shape(x.shape[1], x.shape[2], w.shape[:2], *args[:3])
    col = np.zeros((x.shape[0] * oh * ow, w.shape[0] * w.shape[1] * x.shape[3]), np.float32)
    z = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float32)
    y = np.zeros_like(z)
    C.conv2d_forward(x, w, b, col, z, y, *args, _CODES[act])
    return col, z, y


@pytest.mark.parametrize("x_shape, k, strides, dilation, padding", CASES)
@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_conv2d_forward_and_backward_match_cpu(GB, x_shape, k, strides, dilation, padding, act):  # noqa: F811
    G = GB
    x, w, b = problem(x_shape, k, sum(x_shape))
    args = (strides, dilation, padding)
    col, z, y = cpu_conv(x, w, b, args, act)
    dy = np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)
    dx, dw, db, dz, dcol = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b), np.zeros_like(z), np.zeros_like(col)
    C.conv2d_backward(x, w, col, z, y, dy, dz, dcol, dx, dw, db, *args, _CODES[act])

    xd, wd, bd = dev(G, x), dev(G, w), dev(G, b)
    cold, zd, yd = G.DeviceBuffer(col.shape), G.DeviceBuffer(z.shape), G.DeviceBuffer(z.shape)
    G.conv2d_forward(xd, wd, bd, cold, zd, yd, *args, _CODES[act])
    np.testing.assert_array_equal(cold.to_numpy(), col)  # im2col: copies
    bound = conv_ref(np.abs(x), np.abs(w), np.abs(b), *args)
    assert_within_gemm_bound(zd.to_numpy(), z, bound, GEMM_REL_FP32, "z")
    assert_within_gemm_bound(yd.to_numpy(), y, bound, GEMM_REL_FP32, "y")

    dxd, dwd, dbd = G.DeviceBuffer(x.shape), G.DeviceBuffer(w.shape), G.DeviceBuffer(b.shape)
    G.conv2d_backward(xd, wd, cold, zd, yd, dev(G, dy), G.DeviceBuffer(z.shape), G.DeviceBuffer(col.shape), dxd, dwd,
                      dbd, *args, _CODES[act])
    # Bounds: the sums of |products| of each GEMM (and of col2im over them); |dz| <= |dy| for linear and tanh.
    ax, aw, ady = np.abs(x), np.abs(w), np.abs(dy)
    dx_bound, dw_bound, _ = conv_grads_ref(ax, aw, ady, *args)
    assert_within_gemm_bound(dwd.to_numpy(), dw, 2 * dw_bound, GEMM_REL_FP32, "dw")
    assert_within_gemm_bound(dxd.to_numpy(), dx, 2 * dx_bound, GEMM_REL_FP32, "dx")
    np.testing.assert_allclose(dbd.to_numpy(), db, rtol=1e-5, atol=1e-5)


POOLS = [
    pytest.param((2, 7, 7, 3), (3, 3), (2, 2), "same", id="3x3-s2-same"),
    pytest.param((2, 6, 5, 2), (2, 2), (2, 2), "valid", id="2x2"),
    pytest.param((2, 4, 3, 2), (4, 3), (1, 1), "valid", id="global"),
]


@pytest.mark.parametrize("x_shape, pool, strides, padding", POOLS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_has_the_cpu_bits(G, x_shape, pool, strides, padding, mode):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(np.float32)
    oh, ow, _, _ = C.conv2d_output_shape(x_shape[1], x_shape[2], pool, strides, (1, 1), padding)
    y = np.zeros((x_shape[0], oh, ow, x_shape[3]), np.float32)
    arg = np.zeros(y.shape, np.int32) if mode == "max" else None
    C.pool2d_forward(x, y, arg, pool, strides, padding, mode)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = np.zeros_like(x)
    C.pool2d_backward(dy, arg, dx, pool, strides, padding, mode)

    yd = G.DeviceBuffer(y.shape)
    argd = G.DeviceBuffer(y.shape, "int32") if mode == "max" else None
    G.pool2d_forward(dev(G, x), yd, argd, pool, strides, padding, mode)
    dxd = G.DeviceBuffer(x.shape)
    G.pool2d_backward(dev(G, dy), argd, dxd, pool, strides, padding, mode)
    np.testing.assert_array_equal(yd.to_numpy(), y)
    np.testing.assert_array_equal(dxd.to_numpy(), dx)
    if mode == "max":
        np.testing.assert_array_equal(argd.to_numpy(), arg)


def test_zero_padding_and_crop_have_the_cpu_bits(G):
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 2)).astype(np.float32)
    pads = ((1, 0), (2, 1))
    yd, dxd = G.DeviceBuffer((2, 4, 7, 2)), G.DeviceBuffer(x.shape)
    G.pad2d(dev(G, x), yd, pads)
    np.testing.assert_array_equal(yd.to_numpy(), np.pad(x, ((0, 0),) + pads + ((0, 0),)))
    G.crop2d(yd, dxd, pads)
    np.testing.assert_array_equal(dxd.to_numpy(), x)


def test_conv_twins_refuse_host_arrays_and_bad_windows_with_the_cpu_words(G):
    x, w = G.DeviceBuffer((2, 6, 6, 3)), G.DeviceBuffer((3, 3, 3, 4))
    col, z = G.DeviceBuffer((32, 27)), G.DeviceBuffer((2, 4, 4, 4))
    with pytest.raises(TypeError):
        G.conv2d_forward(np.zeros((2, 6, 6, 3), np.float32), w, None, col, z, z, (1, 1), (1, 1), "valid", 0)
    with pytest.raises(ValueError, match="larger than the input's 6x6 pixels"):
        G.conv2d_forward(x, G.DeviceBuffer((7, 7, 3, 4)), None, col, z, z, (1, 1), (1, 1), "valid", 0)
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        G.pool2d_forward(x, G.DeviceBuffer((2, 3, 3, 3)), None, (2, 2), (2, 2), "full", "avg")
    with pytest.raises(ValueError, match="argmax"):
        G.pool2d_forward(x, G.DeviceBuffer((2, 3, 3, 3)), None, (2, 2), (2, 2), "valid", "max")


def test_a_convnet_trained_on_the_device_agrees_with_the_cpu(GB):  # noqa: F811
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def model():
        dc.set_random_seed(5)
        m = dc.Sequential([dc.Input((8, 8, 1)), dc.Conv2D(3, 3, padding="same", activation="relu"),
                           dc.MaxPooling2D(), dc.ZeroPadding2D(1), dc.Conv2D(4, 3, strides=2, activation="tanh"),
                           dc.AveragePooling2D(padding="same"), dc.GlobalMaxPooling2D(),
                           dc.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return m

    cpu, gpu = model(), model().to("cuda")
    assert_steps_agree(cpu, gpu, x, y, starts=[0, 32], batch=32)
