"""The CUDA backend: CPU-vs-CUDA agreement for every twin kernel, Philox
identical on both devices, bad input raising clean exceptions, the caching
allocator. Every GPU test skips with deepcore.cuda.reason() when no usable
device exists; the tests at the top run everywhere and check that a machine
without a GPU (or without the CUDA module) imports deepcore and says why.

Tolerances: fp32 results agree to 1e-5 relative. The absolute floor (atol)
covers values near zero, where a different fused multiply-add contraction
(nvcc fuses a*b+c; the CPU's baseline x86-64 path does not) moves the last
bit of an O(1) intermediate. Philox uniforms, dropout masks, keep bits and the
dropout family's outputs are compared bit for bit.
"""

import subprocess
import sys

import numpy as np
import pytest

import deepcore
from deepcore import _core as C
from deepcore import cuda
from deepcore.activations import _CODES
from device_data import dev

RTOL = 1e-5
ATOL = 1e-6


# --------------------------------------------------------------------------
# runs everywhere: import and availability
# --------------------------------------------------------------------------
def test_import_deepcore_does_not_load_the_cuda_module():
    code = "import sys, deepcore; print('deepcore._cuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_is_available_agrees_with_reason():
    if cuda.is_available():
        assert cuda.reason() == ""
        assert cuda.device_count() >= 1
    else:
        assert isinstance(cuda.reason(), str) and cuda.reason().strip(), "unavailable without a reason"


def test_without_the_cuda_module_is_available_is_false_with_a_reason():
    # sys.modules[name] = None makes `from . import _cuda` raise ImportError,
    # as on a build without a CUDA toolkit.
    code = ("import sys; sys.modules['deepcore._cuda'] = None\n"
            "import deepcore.cuda as c\n"
            "print(c.is_available()); print(c.device_count()); print(c.reason())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    available, count, reason = out.stdout.strip().split("\n", 2)
    assert (available, count) == ("False", "0")
    assert "without the CUDA backend" in reason


def test_built_module_without_a_device_reports_driver_or_device():
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    if cuda.is_available():
        pytest.skip("a CUDA device is available")
    assert _cuda.unavailable_reason() == cuda.reason()
    assert any(w in cuda.reason() for w in ("driver", "device", "sm_")), cuda.reason()


def test_built_module_without_a_device_raises_clean_exceptions():
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device exists")
    assert issubclass(_cuda.CudaError, RuntimeError)
    assert issubclass(_cuda.CudaOutOfMemoryError, MemoryError)
    with pytest.raises(_cuda.CudaError, match="DeviceBuffer: cudaGetDevice"):
        _cuda.DeviceBuffer((3,))
    with pytest.raises(TypeError, match="dtype must be"):
        _cuda.to_device(np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="x must be a deepcore._cuda.DeviceBuffer"):
        _cuda.activation_forward(_CODES["relu"], np.zeros(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="does not exist"):
        _cuda.device_properties(0)
    assert _cuda.memory_stats() == {"live_bytes": 0, "cached_bytes": 0, "malloc_calls": 0, "held_bytes": 0}


def test_built_module_without_a_device_checks_hyperparameters_like_cpu():
    # The checks that come before any device access, so they run here too.
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device exists")
    x = np.zeros((4, 3), np.float32)
    bad_kind, bad_lr = C.OptParams(), C.OptParams()
    bad_kind.kind, bad_lr.lr = 9, float("inf")
    calls = [
        ("optimizer_step", (bad_kind, x, x, None, None, None, None, None, None)),
        ("optimizer_step", (bad_lr, x, x, None, None, None, None, None, None)),
        ("batchnorm_forward_train", (x, None, None, x, x, x, x, x, -1.0, 0.9)),
        ("batchnorm_forward_train", (x, None, None, x, x, x, x, x, 1e-3, 2.0)),
        ("batchnorm_forward_inference", (x, None, None, x, x, x, float("nan"))),
        ("dropout_forward", (x, x, 1.0, 0, 0, 0)),
        ("dropout_backward", (x, x, float("nan"), 0, 0, 0)),
        ("dropout_mask", (x, -0.5, 0, 0, 0)),
        ("alpha_dropout_forward", (x, x, 1.5, 0, 0, 0)),
        ("alpha_dropout_backward", (x, x, -1e-3, 0, 0, 0)),
        ("rrelu_forward", (x, x, 0.5, 0.1, True)),
        ("rrelu_backward", (x, x, x, 0.1, float("inf"), True)),
    ]
    for name, args in calls:
        with pytest.raises(ValueError) as cpu_err:
            getattr(C, name)(*args)
        with pytest.raises(ValueError) as gpu_err:
            getattr(_cuda, name)(*args)
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="hyper must be a deepcore._core.OptParams"):
        _cuda.optimizer_step(object(), x, x, None, None, None, None, None, None)


# --------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------
def activation_inputs(rows, cols, seed):
    """Special values (zero, tiny, +-30, +-90) followed by normals with std 3."""
    special = np.array([-90, -30, -10, -5, -2, -1, -0.5, -0.1, -1e-3, 0, 1e-3, 0.1, 0.5, 1, 2, 5, 10, 30, 90, 3.7])
    x = np.random.default_rng(seed).normal(0.0, 3.0, size=rows * cols)
    x[: special.size] = special[: rows * cols]
    return x.astype(np.float32).reshape(rows, cols)


ACTS = [("linear", 0.0, 1.0), ("sigmoid", 0.0, 1.0), ("tanh", 0.0, 1.0), ("relu", 0.0, 1.0),
        ("leaky_relu", 0.2, 1.0), ("elu", 0.5, 1.0), ("selu", 0.0, 1.0), ("gelu", 0.0, 1.0),
        ("gelu_tanh", 0.0, 1.0), ("swish", 0.0, 1.7), ("mish", 0.0, 1.0), ("softplus", 0.0, 1.0),
        ("softmax", 0.0, 1.0)]
# Row shapes: a warp's worth of columns and less, a long row, rows not a multiple of 8.
SHAPES = [(4, 10), (37, 1000), (1025, 33)]


@pytest.mark.parametrize("name,alpha,beta", ACTS, ids=[a[0] for a in ACTS])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activation_forward_and_backward_match_cpu(G, name, alpha, beta, shape):
    x = activation_inputs(*shape, seed=1)
    dy = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    code = _CODES[name]
    y_cpu, dx_cpu = np.empty_like(x), np.empty_like(x)
    C.activation_forward(code, x, y_cpu, alpha, beta)
    C.activation_backward(code, x, y_cpu, dy, dx_cpu, alpha, beta)

    xd, yd, dyd, dxd = dev(G, x), G.DeviceBuffer(shape), dev(G, dy), G.DeviceBuffer(shape)
    G.activation_forward(code, xd, yd, alpha, beta)
    G.activation_backward(code, xd, yd, dyd, dxd, alpha, beta)
    np.testing.assert_allclose(yd.to_numpy(), y_cpu, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dxd.to_numpy(), dx_cpu, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("beta", [1.7, 1.0, -0.6])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swish_forward_and_backward_with_beta_on_the_device_match_cpu(G, beta, shape):
    """beta read from a device scalar: the CPU's results, and on the device
    those of activation_forward / activation_backward with beta as a number."""
    x = activation_inputs(*shape, seed=4)
    dy = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    b = np.full((), beta, np.float32)
    y_cpu, dx_cpu = np.empty_like(x), np.empty_like(x)
    C.swish_forward(x, y_cpu, b)
    C.swish_backward(x, dy, dx_cpu, b)
    xd, dyd, bd = dev(G, x), dev(G, dy), dev(G, b)
    yd, dxd = G.DeviceBuffer(shape), G.DeviceBuffer(shape)
    G.swish_forward(xd, yd, bd)
    G.swish_backward(xd, dyd, dxd, bd)
    np.testing.assert_allclose(yd.to_numpy(), y_cpu, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dxd.to_numpy(), dx_cpu, rtol=RTOL, atol=ATOL)
    ya, dxa = G.DeviceBuffer(shape), G.DeviceBuffer(shape)
    G.activation_forward(_CODES["swish"], xd, ya, 0.0, beta)
    G.activation_backward(_CODES["swish"], xd, ya, dyd, dxa, 0.0, beta)
    np.testing.assert_allclose(yd.to_numpy(), ya.to_numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dxd.to_numpy(), dxa.to_numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["relu", "gelu", "softmax"])
def test_activation_in_place_matches_out_of_place(G, name):
    x = activation_inputs(37, 100, seed=3)
    out, inplace = G.DeviceBuffer(x.shape), dev(G, x)
    G.activation_forward(_CODES[name], dev(G, x), out)
    G.activation_forward(_CODES[name], inplace, inplace)
    np.testing.assert_array_equal(inplace.to_numpy(), out.to_numpy())


def test_activation_nan_propagates_like_cpu(G):
    x = np.array([[np.nan, 1.0, -1.0, 0.0]], np.float32)
    for name in ("relu", "sigmoid", "tanh", "gelu", "mish", "softplus"):
        y_cpu = np.empty_like(x)
        C.activation_forward(_CODES[name], x, y_cpu)
        y = G.DeviceBuffer(x.shape)
        G.activation_forward(_CODES[name], dev(G, x), y)
        assert np.isnan(y.to_numpy()[0, 0]), name
        np.testing.assert_allclose(y.to_numpy()[0, 1:], y_cpu[0, 1:], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------- Philox
SEEDS = [(0, 0), (42, 7), (0xDEADBEEFCAFEF00D, 0x123456789ABCDEF0)]


@pytest.mark.parametrize("seed,stream", SEEDS)
@pytest.mark.parametrize("n", [1, 4, 1003, 1 << 20])
@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-0.05, 0.05), (-3.0, 1e-3)])
def test_philox_uniform_is_bit_identical_on_cpu_and_gpu(G, seed, stream, n, low, high):
    cpu = np.empty(n, np.float32)
    C.philox_uniform(cpu, seed, stream, low, high)
    gpu = G.DeviceBuffer((n,))
    G.philox_uniform(gpu, seed, stream, low, high)
    np.testing.assert_array_equal(gpu.to_numpy().view(np.uint32), cpu.view(np.uint32))


@pytest.mark.parametrize("seed,stream", SEEDS)
@pytest.mark.parametrize("truncated", [False, True])
def test_philox_normal_matches_cpu(G, seed, stream, truncated):
    # The uniforms are identical; log/sin/cos are CUDA's vs glibc's (a few ulp apart).
    n = 100_003
    cpu = np.empty(n, np.float32)
    C.philox_normal(cpu, seed, stream, 0.5, 2.0, truncated)
    gpu = G.DeviceBuffer((n,))
    G.philox_normal(gpu, seed, stream, 0.5, 2.0, truncated)
    g = gpu.to_numpy()
    np.testing.assert_allclose(g, cpu, rtol=RTOL, atol=ATOL)
    if truncated:
        assert np.all(np.abs(g - 0.5) <= 4.0)


# ------------------------------------------------------------- axpby
@pytest.mark.parametrize("a,b", [(1.0, 1.0), (0.0, 0.7), (-0.5, 2.0)])
def test_axpby_matches_cpu_and_float64(G, a, b):
    """y <- a x + b y (the graph engine's gradient sums and loss weights)."""
    rng = np.random.default_rng(9)
    n = 70_001
    x, y = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    want = a * x.astype(np.float64) + b * y.astype(np.float64)
    yc = y.copy()
    C.axpby(a, x, b, yc)
    yd = dev(G, y)
    G.axpby(a, dev(G, x), b, yd)
    np.testing.assert_allclose(yc, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(yd.to_numpy(), yc, rtol=RTOL, atol=ATOL)


def test_axpby_rejects_a_shape_mismatch(G):
    with pytest.raises(ValueError, match="axpby"):
        G.axpby(1.0, G.DeviceBuffer((5,)), 1.0, G.DeviceBuffer((6,)))


# ------------------------------------------------------------- optimizers
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_update_matches_cpu(G, momentum, nesterov):
    rng = np.random.default_rng(4)
    n = 100_003
    w = rng.normal(size=n).astype(np.float32)
    v = rng.normal(scale=0.1, size=n).astype(np.float32)
    wd, vd = dev(G, w), dev(G, v)
    for step in range(3):
        g = rng.normal(size=n).astype(np.float32)
        C.sgd_update(w, g, v if momentum else None, 0.05, momentum, nesterov)
        G.sgd_update(wd, dev(G, g), vd if momentum else None, 0.05, momentum, nesterov)
    np.testing.assert_allclose(wd.to_numpy(), w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(vd.to_numpy(), v, rtol=RTOL, atol=ATOL)


def test_sgd_flushes_denormal_velocity_like_cpu(G):
    w = np.ones(8, np.float32)
    g = np.zeros(8, np.float32)
    v = np.full(8, 1.2e-38, np.float32)  # normal; 0.9 v = 1.08e-38 is denormal
    wd, vd = dev(G, w), dev(G, v)
    C.sgd_update(w, g, v, 0.1, 0.9, False)
    G.sgd_update(wd, dev(G, g), vd, 0.1, 0.9, False)
    assert np.all(v == 0.0)
    np.testing.assert_array_equal(vd.to_numpy(), v)
    np.testing.assert_array_equal(wd.to_numpy(), w)


# ----------------------------------------------------- fused optimizer step
# Segments: a tiny one, an empty one, one longer than a GPU run (8192) and not
# a multiple of it, a 3-element one, a long tail.
SEG_SIZES = [10, 0, 2 * 8192 + 5, 3, 50_000]
SEG_L1 = [0.0, 1e-3, 0.0, 0.0, 2e-4]
SEG_L2 = [1e-3, 0.0, 0.0, 5e-3, 1e-4]

# (id, kind, fields of OptParams, slots the rule uses)
OPT_CASES = [
    ("sgd", 0, {}, 0),
    ("sgd_momentum", 0, dict(momentum=0.9), 1),
    ("sgd_nesterov", 0, dict(momentum=0.9, nesterov=True), 1),
    ("adagrad", 1, {}, 1),
    ("rmsprop", 2, dict(beta2=0.9), 1),
    ("rmsprop_momentum", 2, dict(beta2=0.9, momentum=0.5), 2),
    ("rmsprop_centered", 2, dict(beta2=0.9, centered=True), 3),
    ("rmsprop_centered_momentum", 2, dict(beta2=0.9, centered=True, momentum=0.5), 3),
    ("adam", 3, {}, 2),
    ("adam_amsgrad", 3, dict(amsgrad=True), 3),
    ("adamax", 4, {}, 2),
    ("nadam", 5, dict(c2=0.05, c3=1.2), 2),
    ("ftrl", 6, {}, 2),
    ("ftrl_general", 6, dict(lr_power=-0.7, l1=1e-3, l2=1e-3, l2_shrinkage=1e-3, ftrl_beta=0.1), 2),
]
CLIP_MODES = [("none", {}), ("clipvalue", dict(clipvalue=0.5)), ("clipnorm", dict(clipnorm=1.0)),
              ("global_clipnorm", dict(global_clipnorm=1.0)), ("weight_decay", dict(weight_decay=0.01))]


def opt_params(kind, fields):
    h = C.OptParams()
    h.kind, h.lr, h.c1 = kind, 0.01, 0.3
    for k, v in fields.items():
        setattr(h, k, v)
    return h


def opt_slots(kind, nslots, n, rng):
    """Slot values the rule can start from: positive accumulators (Adagrad, Ftrl),
    and a centered RMSprop whose average gradient is small next to its velocity
    (so v - c^2 + eps stays well away from 0, where fp32 rounding decides)."""
    slots = [np.abs(rng.normal(size=n)).astype(np.float32) * 0.1 for _ in range(nslots)]
    if kind in (1, 6):
        slots[0] += np.float32(0.1)
    if kind == 2:
        slots[0] += np.float32(1.0)
        if nslots == 3:
            slots[2] *= np.float32(0.1)
    return slots + [None] * (3 - nslots)


def segments(sizes=SEG_SIZES, l1=SEG_L1, l2=SEG_L2):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return offsets, np.array(l1, np.float32), np.array(l2, np.float32)


@pytest.mark.parametrize("clip", [c[1] for c in CLIP_MODES], ids=[c[0] for c in CLIP_MODES])
@pytest.mark.parametrize("kind,fields,nslots", [c[1:] for c in OPT_CASES], ids=[c[0] for c in OPT_CASES])
def test_optimizer_step_with_penalties_and_clipping_matches_cpu(G, kind, fields, nslots, clip):
    rng = np.random.default_rng(6)
    offsets, l1, l2 = segments()
    n = int(offsets[-1])
    h = opt_params(kind, {**fields, **clip})
    w = rng.normal(size=n).astype(np.float32)
    slots = opt_slots(kind, nslots, n, rng)
    wd = dev(G, w)
    sd = [None if s is None else dev(G, s) for s in slots]
    # FTRL's linear slot adds (a'^-p - a^-p) / lr * w, a difference of two
    # nearly equal powers divided by lr: its rounding error is that of
    # a'^-p / lr * |w| (plus |z| and |g|), not of the small difference. The
    # slot is compared within RTOL of those magnitudes, summed over the steps
    # (as a GEMM is compared within a bound on the sum of |products|).
    linear_scale = np.zeros(n)
    for step in range(3):
        g = rng.normal(size=n).astype(np.float32)
        if kind == 6:
            w_prev, z_prev = w.astype(np.float64), slots[1].astype(np.float64)
        pen_cpu, norm_cpu = C.optimizer_step(h, w, g, *slots, offsets, l1, l2, True)
        pen, norm = G.optimizer_step(h, wd, dev(G, g), *sd, offsets, l1, l2, True)
        assert pen == pytest.approx(pen_cpu, rel=1e-5), f"penalty at step {step}"
        assert norm == pytest.approx(norm_cpu, rel=1e-5), f"gradient norm at step {step}"
        if kind == 6:
            power = slots[0].astype(np.float64) ** -h.lr_power
            linear_scale += np.abs(z_prev) + np.abs(g) + power / h.lr * np.abs(w_prev)
    np.testing.assert_allclose(wd.to_numpy(), w, rtol=RTOL, atol=ATOL)
    for i, (s, d) in enumerate(zip(slots, sd)):
        if s is None:
            continue
        if kind == 6 and i == 1:
            err = np.abs(d.to_numpy().astype(np.float64) - s)
            bad = err > RTOL * linear_scale + ATOL
            assert not bad.any(), f"FTRL linear slot: {bad.sum()} beyond the bound, worst {err.max():.3g}"
        else:
            np.testing.assert_allclose(d.to_numpy(), s, rtol=RTOL, atol=ATOL, err_msg=f"slot{i}")


@pytest.mark.parametrize("clip", [c[1] for c in CLIP_MODES], ids=[c[0] for c in CLIP_MODES])
def test_optimizer_step_without_segments_matches_cpu(G, clip):
    rng = np.random.default_rng(7)
    n = 3 * 8192 + 77
    h = opt_params(3, clip)
    w = rng.normal(size=n).astype(np.float32)
    m, v = (np.zeros(n, np.float32) for _ in range(2))
    g = rng.normal(size=n).astype(np.float32)
    wd, md, vd = dev(G, w), dev(G, m), dev(G, v)
    assert C.optimizer_step(h, w, g, m, v, None, None, None, None) == (0.0, None)
    assert G.optimizer_step(h, wd, dev(G, g), md, vd, None, None, None, None) == (0.0, None)
    np.testing.assert_allclose(wd.to_numpy(), w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(vd.to_numpy(), v, rtol=RTOL, atol=ATOL)


def test_optimizer_step_is_deterministic(G):
    rng = np.random.default_rng(8)
    offsets, l1, l2 = segments()
    n = int(offsets[-1])
    h = opt_params(3, dict(global_clipnorm=1.0))
    w, g = (rng.normal(size=n).astype(np.float32) for _ in range(2))
    results = []
    for _ in range(2):
        wd, md, vd = dev(G, w), G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
        pen, norm = G.optimizer_step(h, wd, dev(G, g), md, vd, None, offsets, l1, l2, True)
        results.append((pen, norm, wd.to_numpy()))
    assert results[0][:2] == results[1][:2]
    np.testing.assert_array_equal(results[0][2], results[1][2])


def test_optimizer_step_nan_gradient_with_global_clipnorm_poisons_every_segment_like_cpu(G):
    offsets, l1, l2 = segments()
    n = int(offsets[-1])
    h = opt_params(0, dict(global_clipnorm=1.0))
    w, g = np.ones(n, np.float32), np.zeros(n, np.float32)
    g[5] = np.nan
    wd = dev(G, w)
    _, norm_cpu = C.optimizer_step(h, w, g, None, None, None, offsets, l1, l2, True)
    _, norm = G.optimizer_step(h, wd, dev(G, g), None, None, None, offsets, l1, l2, True)
    assert np.isnan(norm) and np.isnan(norm_cpu)
    assert np.all(np.isnan(w))
    assert np.all(np.isnan(wd.to_numpy()))


def test_optimizer_step_empty_params_match_cpu(G):
    h = opt_params(0, dict(clipnorm=1.0))
    offsets = np.zeros(3, np.int64)
    cpu = C.optimizer_step(h, np.zeros(0, np.float32), np.zeros(0, np.float32), None, None, None, offsets, None,
                           None, True)
    gpu = G.optimizer_step(h, G.DeviceBuffer((0,)), G.DeviceBuffer((0,)), None, None, None, offsets, None, None,
                           True)
    assert gpu == cpu == (0.0, 0.0)


def test_optimizer_step_bad_input_raises_like_cpu(G):
    n = 10
    w, offsets = np.zeros(n, np.float32), np.array([0, 4, n], np.int64)
    wd = G.DeviceBuffer((n,))
    adam = opt_params(3, {})
    # the same complaint as the CPU, word for word
    cases = [
        (adam, (None, None, None, None, None, None), ValueError),          # Adam without m
        (opt_params(9, {}), (None, None, None, None, None, None), ValueError),  # unknown kind
        (opt_params(0, dict(lr=-1.0)), (None, None, None, None, None, None), ValueError),
        (opt_params(0, {}), (None, None, None, np.array([0, 4], np.int64), None, None), ValueError),
        (opt_params(0, {}), (None, None, None, np.array([0, 7, 4, n], np.int64), None, None), ValueError),
        (opt_params(0, {}), (None, None, None, offsets, np.zeros(3, np.float32), None), ValueError),
        (opt_params(0, {}), (None, None, None, None, np.zeros(2, np.float32), None), ValueError),
        (opt_params(0, {}), (None, None, None, offsets.astype(np.int32), None, None), TypeError),
    ]
    for h, rest, exc in cases:
        with pytest.raises(exc) as cpu_err:
            C.optimizer_step(h, w, w, *rest)
        with pytest.raises(exc) as gpu_err:
            G.optimizer_step(h, wd, wd, *rest)
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="params must be a deepcore._cuda.DeviceBuffer"):
        G.optimizer_step(adam, w, wd, wd, wd, None, None, None, None)
    with pytest.raises(ValueError, match="slot0 must have the shape of params"):
        G.optimizer_step(adam, wd, wd, G.DeviceBuffer((n + 1,)), wd, None, None, None, None)
    with pytest.raises(TypeError, match="offsets must be a numpy int64 array"):
        G.optimizer_step(adam, wd, wd, wd, wd, None, dev(G, offsets), None, None)
    with pytest.raises(TypeError, match="hyper must be a deepcore._core.OptParams"):
        G.optimizer_step(object(), wd, wd, wd, wd, None, None, None, None)


# ---------------------------------------------------------------- max_norm
@pytest.mark.parametrize("shape,first,last", [((784, 300), 0, 0), ((300, 17), 1, 1), ((3, 3, 16, 32), 0, 2),
                                               ((5, 40, 7), 1, 1)], ids=str)
def test_max_norm_matches_cpu(G, shape, first, last):
    w = np.random.default_rng(9).normal(size=shape).astype(np.float32)
    wd = dev(G, w)
    C.max_norm(w, first, last, 2.0)
    G.max_norm(wd, first, last, 2.0)
    np.testing.assert_allclose(wd.to_numpy(), w, rtol=RTOL, atol=ATOL)


def test_max_norm_bad_input_raises_like_cpu(G):
    w = np.zeros((3, 4), np.float32)
    for args in [(0, 2, 1.0), (1, 0, 1.0), (0, 0, -1.0), (0, 0, float("nan"))]:
        with pytest.raises(ValueError) as cpu_err:
            C.max_norm(w, *args)
        with pytest.raises(ValueError) as gpu_err:
            G.max_norm(dev(G, w), *args)
        assert str(gpu_err.value) == str(cpu_err.value)


# --------------------------------------------------------------- batchnorm
# (A, C) and (A, C, B) views: features last, a channel axis with spatial
# values after it, few features over many values (the reduction is split),
# one feature, and data far from zero (the shifted sums must not cancel).
BN_SHAPES = [(256, 300), (20000, 8), (64, 16, 49), (4, 3, 5000), (7, 1, 3), (2, 33)]


def bn_inputs(shape, seed, loc=0.0):
    rng = np.random.default_rng(seed)
    x = (loc + rng.normal(scale=2.0, size=shape)).astype(np.float32)
    C_ = shape[1]
    gamma = rng.normal(1.0, 0.3, C_).astype(np.float32)
    beta = rng.normal(0.0, 0.3, C_).astype(np.float32)
    mm = rng.normal(size=C_).astype(np.float32)
    mv = (1.0 + np.abs(rng.normal(size=C_))).astype(np.float32)
    return x, gamma, beta, mm, mv


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("loc", [0.0, 1000.0], ids=["centered", "offset1000"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_train_forward_and_backward_match_cpu(G, shape, loc, affine):
    x, gamma, beta, mm, mv = bn_inputs(shape, 10, loc)
    if not affine:
        gamma = beta = None
    C_ = shape[1]
    dy = np.random.default_rng(11).normal(size=shape).astype(np.float32)
    y, mean, inv_std = np.empty_like(x), np.empty(C_, np.float32), np.empty(C_, np.float32)
    mm_d, mv_d = dev(G, mm), dev(G, mv)
    C.batchnorm_forward_train(x, gamma, beta, y, mean, inv_std, mm, mv, 1e-3, 0.99)
    xd = dev(G, x)
    gd = None if gamma is None else dev(G, gamma)
    bd = None if beta is None else dev(G, beta)
    yd, meand, isd = G.DeviceBuffer(shape), G.DeviceBuffer((C_,)), G.DeviceBuffer((C_,))
    G.batchnorm_forward_train(xd, gd, bd, yd, meand, isd, mm_d, mv_d, 1e-3, 0.99)
    np.testing.assert_allclose(meand.to_numpy(), mean, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(isd.to_numpy(), inv_std, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(mm_d.to_numpy(), mm, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(mv_d.to_numpy(), mv, rtol=RTOL, atol=ATOL)
    # y = (x - mean) inv_std gamma + beta: x - mean loses what |x| ~ 1000 holds beyond fp32
    atol_y = ATOL if loc == 0.0 else 1e-4
    np.testing.assert_allclose(yd.to_numpy(), y, rtol=RTOL, atol=atol_y)

    # backward from the CPU's saved statistics on both sides, so it is checked on its own
    dx, dgamma, dbeta = np.empty_like(x), np.empty(C_, np.float32), np.empty(C_, np.float32)
    C.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dgamma, dbeta)
    dxd, dgd, dbd = G.DeviceBuffer(shape), G.DeviceBuffer((C_,)), G.DeviceBuffer((C_,))
    G.batchnorm_backward(xd, dev(G, dy), gd, dev(G, mean), dev(G, inv_std), dxd, dgd, dbd)
    n = x.size // C_
    np.testing.assert_allclose(dbd.to_numpy(), dbeta, rtol=RTOL, atol=ATOL * n)
    np.testing.assert_allclose(dgd.to_numpy(), dgamma, rtol=RTOL, atol=ATOL * n)
    np.testing.assert_allclose(dxd.to_numpy(), dx, rtol=RTOL, atol=atol_y)


def test_batchnorm_in_place_and_optional_outputs_match_out_of_place(G):
    shape = (64, 16, 49)
    x, gamma, beta, mm, mv = bn_inputs(shape, 12)
    dy = np.random.default_rng(13).normal(size=shape).astype(np.float32)
    C_ = shape[1]
    out = [G.DeviceBuffer(s) for s in (shape, (C_,), (C_,))]
    G.batchnorm_forward_train(dev(G, x), dev(G, gamma), dev(G, beta), out[0], out[1], out[2], dev(G, mm),
                              dev(G, mv), 1e-3, 0.9)
    xd = dev(G, x)
    mean, inv_std = G.DeviceBuffer((C_,)), G.DeviceBuffer((C_,))
    G.batchnorm_forward_train(xd, dev(G, gamma), dev(G, beta), xd, mean, inv_std, dev(G, mm), dev(G, mv), 1e-3, 0.9)
    np.testing.assert_array_equal(xd.to_numpy(), out[0].to_numpy())
    # dx == dy in place, and only the parameter gradients
    dx = G.DeviceBuffer(shape)
    G.batchnorm_backward(dev(G, x), dev(G, dy), dev(G, gamma), mean, inv_std, dx, None, None)
    dyd = dev(G, dy)
    G.batchnorm_backward(dev(G, x), dyd, dev(G, gamma), mean, inv_std, dyd, None, None)
    np.testing.assert_array_equal(dyd.to_numpy(), dx.to_numpy())
    dg, db = G.DeviceBuffer((C_,)), G.DeviceBuffer((C_,))
    G.batchnorm_backward(dev(G, x), dev(G, dy), dev(G, gamma), mean, inv_std, None, dg, db)
    dg2, db2 = G.DeviceBuffer((C_,)), G.DeviceBuffer((C_,))
    G.batchnorm_backward(dev(G, x), dev(G, dy), dev(G, gamma), mean, inv_std, G.DeviceBuffer(shape), dg2, db2)
    np.testing.assert_array_equal(dg.to_numpy(), dg2.to_numpy())
    np.testing.assert_array_equal(db.to_numpy(), db2.to_numpy())


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_inference_and_channel_affine_match_cpu(G, shape, affine):
    x, gamma, beta, mm, mv = bn_inputs(shape, 14)
    if not affine:
        gamma = beta = None
    y = np.empty_like(x)
    C.batchnorm_forward_inference(x, gamma, beta, mm, mv, y, 1e-3)
    yd = G.DeviceBuffer(shape)
    G.batchnorm_forward_inference(dev(G, x), None if gamma is None else dev(G, gamma),
                                  None if beta is None else dev(G, beta), dev(G, mm), dev(G, mv), yd, 1e-3)
    np.testing.assert_allclose(yd.to_numpy(), y, rtol=RTOL, atol=ATOL)
    scale = mv  # any positive per-feature vector
    for center, offset in [(mm, None), (None, mm), (None, None), (mm, mv)]:
        C.channel_affine(x, center, scale, offset, y)
        G.channel_affine(dev(G, x), None if center is None else dev(G, center), dev(G, scale),
                         None if offset is None else dev(G, offset), yd)
        np.testing.assert_allclose(yd.to_numpy(), y, rtol=RTOL, atol=ATOL)


def test_batchnorm_bad_input_raises_like_cpu(G):
    x, gamma, beta, mm, mv = bn_inputs((8, 4), 15)
    C_ = 4
    y, mean, inv_std = np.empty_like(x), np.empty(C_, np.float32), np.empty(C_, np.float32)
    one = x[:1].copy()

    def both(fn_name, host_args, eps_mom):
        """Calls the CPU and the GPU twin with the same arguments (arrays copied to the device)."""
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            getattr(C, fn_name)(*host_args, *eps_mom)
        dev_args = [None if a is None else dev(G, a) for a in host_args]
        with pytest.raises(cpu_err.type) as gpu_err:
            getattr(G, fn_name)(*dev_args, *eps_mom)
        assert str(gpu_err.value) == str(cpu_err.value)

    both("batchnorm_forward_train", (x, gamma, beta, y, mean, inv_std, mm, mv), (0.0, 0.9))       # epsilon
    both("batchnorm_forward_train", (x, gamma, beta, y, mean, inv_std, mm, mv), (1e-3, 1.5))      # momentum
    both("batchnorm_forward_train", (one, gamma, beta, one.copy(), mean, inv_std, mm, mv), (1e-3, 0.9))  # n = 1
    both("batchnorm_forward_train", (x, gamma[:3].copy(), beta, y, mean, inv_std, mm, mv), (1e-3, 0.9))
    both("batchnorm_forward_train", (x.reshape(-1), gamma, beta, y.reshape(-1), mean, inv_std, mm, mv), (1e-3, 0.9))
    both("batchnorm_forward_train", (x, gamma, beta, y[:, :3].copy(), mean, inv_std, mm, mv), (1e-3, 0.9))
    both("batchnorm_forward_inference", (x, gamma, beta, mm, mv[:2].copy(), y), (1e-3,))
    both("batchnorm_backward", (x, x[:4].copy(), gamma, mean, inv_std, None, None, None), ())
    both("batchnorm_backward", (one, one.copy(), gamma, mean, inv_std, None, None, None), ())
    both("channel_affine", (x, None, mv[:3].copy(), None, y), ())
    with pytest.raises(TypeError, match="x must be a deepcore._cuda.DeviceBuffer"):
        G.channel_affine(x, None, dev(G, mv), None, G.DeviceBuffer((8, 4)))
    with pytest.raises(TypeError, match="scale must have dtype float32"):
        G.channel_affine(dev(G, x), None, G.DeviceBuffer((4,), "int32"), None, G.DeviceBuffer((8, 4)))


# ---------------------------------------------------------- dropout family
# The same (seed, stream, call) must give the same masks on both devices
# (ops/dropout.h's keying), so masks, keep bits and dropout outputs are
# compared bit for bit (as uint32, so -0.0 and 0.0 differ). Sizes cover one
# element, partial Philox blocks (8 dropout / 4 RReLU elements per block),
# partial keep words (32 elements) and a grid-stride loop.
DROPOUT_KEYS = [(0, 0, 0), (42, 7, 3), (2**64 - 1, 2**63 + 5, 2**32 - 1), (0x1234_5678_9ABC, 0x6472_6F70 << 32, 17)]
DROPOUT_SIZES = [1, 7, 8, 31, 33, 1000, 4099, (1 << 20) + 3]
RATES = [0.0, 0.1, 0.5, 0.9, 0.99999]  # the last keeps about one unit in 65536


def bits_of(a):
    return np.ascontiguousarray(a).view(np.uint32)


def assert_bit_identical(gpu, cpu, what=""):
    np.testing.assert_array_equal(bits_of(gpu), bits_of(cpu), err_msg=what)


def dropout_input(n, seed):
    """Normals with some exact zeros and negative zeros (their sign survives x * 0)."""
    x = np.random.default_rng(seed).normal(size=n).astype(np.float32)
    x[::17] = 0.0
    x[5::23] = -0.0
    return x


def cpu_has_fma():
    # The CPU's alpha dropout and RReLU slope are a * x + b, which GCC contracts
    # to one FMA in the AVX2 / AVX-512 clones (the GPU kernels use __fmaf_rn);
    # the baseline clone rounds twice and may differ in the last bit.
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " fma" in flags and " avx2" in flags


def assert_fma_identical(gpu, cpu, what=""):
    if cpu_has_fma():
        assert_bit_identical(gpu, cpu, what)
    else:
        np.testing.assert_array_max_ulp(gpu, cpu, maxulp=1)


@pytest.mark.parametrize("n", DROPOUT_SIZES)
@pytest.mark.parametrize("key", DROPOUT_KEYS, ids=str)
def test_dropout_masks_outputs_and_keep_bits_are_bit_identical_on_cpu_and_gpu(G, n, key):
    seed, stream, call = key
    x, dy = dropout_input(n, 1), dropout_input(n, 2)
    xd, dyd = dev(G, x), dev(G, dy)
    words = (n + 31) // 32
    for rate in RATES:
        y, bits = np.empty_like(x), np.full(words, -1, np.int32)
        C.dropout_forward(x, y, rate, seed, stream, call, bits)
        yd, bitsd = G.DeviceBuffer((n,)), G.to_device(np.full(words, -1, np.int32))
        G.dropout_forward(xd, yd, rate, seed, stream, call, bitsd)
        assert_bit_identical(yd.to_numpy(), y, f"forward rate={rate}")
        np.testing.assert_array_equal(bitsd.to_numpy(), bits, err_msg=f"keep bits rate={rate}")
        # forward without a mask: the same output
        yd2 = G.DeviceBuffer((n,))
        G.dropout_forward(xd, yd2, rate, seed, stream, call)
        assert_bit_identical(yd2.to_numpy(), y, f"forward without mask rate={rate}")
        # backward, regenerated and from the keep bits
        dx = np.empty_like(dy)
        C.dropout_backward(dy, dx, rate, seed, stream, call)
        dxd = G.DeviceBuffer((n,))
        G.dropout_backward(dyd, dxd, rate, seed, stream, call)
        assert_bit_identical(dxd.to_numpy(), dx, f"backward rate={rate}")
        dxd = G.DeviceBuffer((n,))
        G.dropout_backward(dyd, dxd, rate, 0, 0, 0, bitsd)  # the key is ignored with a mask
        assert_bit_identical(dxd.to_numpy(), dx, f"backward from keep bits rate={rate}")
        # the scaled mask
        mask = np.empty(n, np.float32)
        C.dropout_mask(mask, rate, seed, stream, call)
        maskd = G.DeviceBuffer((n,))
        G.dropout_mask(maskd, rate, seed, stream, call)
        assert_bit_identical(maskd.to_numpy(), mask, f"mask rate={rate}")


@pytest.mark.parametrize("n", DROPOUT_SIZES)
@pytest.mark.parametrize("key", DROPOUT_KEYS[:3], ids=str)
def test_alpha_dropout_outputs_and_keep_bits_match_cpu(G, n, key):
    seed, stream, call = key
    x, dy = dropout_input(n, 3), dropout_input(n, 4)
    xd, dyd = dev(G, x), dev(G, dy)
    words = (n + 31) // 32
    for rate in RATES:
        y, bits = np.empty_like(x), np.full(words, -1, np.int32)
        C.alpha_dropout_forward(x, y, rate, seed, stream, call, bits)
        yd, bitsd = G.DeviceBuffer((n,)), G.to_device(np.full(words, -1, np.int32))
        G.alpha_dropout_forward(xd, yd, rate, seed, stream, call, bitsd)
        np.testing.assert_array_equal(bitsd.to_numpy(), bits, err_msg=f"keep bits rate={rate}")
        assert_fma_identical(yd.to_numpy(), y, f"forward rate={rate}")
        dx = np.empty_like(dy)
        C.alpha_dropout_backward(dy, dx, rate, seed, stream, call)
        dxd = G.DeviceBuffer((n,))
        G.alpha_dropout_backward(dyd, dxd, rate, seed, stream, call)
        assert_bit_identical(dxd.to_numpy(), dx, f"backward rate={rate}")
        dxd = G.DeviceBuffer((n,))
        G.alpha_dropout_backward(dyd, dxd, rate, 0, 0, 0, bitsd)
        assert_bit_identical(dxd.to_numpy(), dx, f"backward from keep bits rate={rate}")


def test_dropout_calls_give_different_masks_on_the_gpu_too(G):
    n = 4096
    masks = []
    for call in (0, 1):
        m = G.DeviceBuffer((n,))
        G.dropout_mask(m, 0.5, 5, 9, call)
        masks.append(m.to_numpy())
    assert not np.array_equal(masks[0], masks[1])


def test_dropout_in_place_and_nan_match_cpu(G):
    n = 1001
    x = dropout_input(n, 5)
    x[[0, 10, 500]] = [np.nan, np.inf, -np.inf]
    for kind in ("dropout", "alpha_dropout"):
        y = x.copy()
        getattr(C, f"{kind}_forward")(y, y, 0.3, 8, 2, 1)
        yd = dev(G, x)
        getattr(G, f"{kind}_forward")(yd, yd, 0.3, 8, 2, 1)
        out = yd.to_numpy()
        np.testing.assert_array_equal(np.isnan(out), np.isnan(y), err_msg=kind)  # NaN payloads may differ
        finite = ~np.isnan(y)
        if kind == "dropout":
            assert_bit_identical(out[finite], y[finite], kind)
        else:
            assert_fma_identical(out[finite], y[finite], kind)


@pytest.mark.parametrize("n", DROPOUT_SIZES)
@pytest.mark.parametrize("key", DROPOUT_KEYS[:3], ids=str)
@pytest.mark.parametrize("lower,upper", [(1 / 8, 1 / 3), (0.1, 0.3), (-0.5, 0.75), (0.25, 0.25)])
def test_rrelu_forward_and_backward_match_cpu(G, n, key, lower, upper):
    seed, stream, call = key
    x, dy = dropout_input(n, 6), dropout_input(n, 7)
    xd, dyd = dev(G, x), dev(G, dy)
    for training in (True, False):
        y, dx = np.empty_like(x), np.empty_like(x)
        C.rrelu_forward(x, y, lower, upper, training, seed, stream, call)
        C.rrelu_backward(x, dy, dx, lower, upper, training, seed, stream, call)
        yd, dxd = G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
        G.rrelu_forward(xd, yd, lower, upper, training, seed, stream, call)
        G.rrelu_backward(xd, dyd, dxd, lower, upper, training, seed, stream, call)
        assert_fma_identical(yd.to_numpy(), y, f"forward training={training}")
        assert_fma_identical(dxd.to_numpy(), dx, f"backward training={training}")


def test_rrelu_in_place_matches_cpu(G):
    x = dropout_input(777, 8)
    y = x.copy()
    C.rrelu_forward(y, y, 0.1, 0.3, True, 3, 4, 5)
    yd = dev(G, x)
    G.rrelu_forward(yd, yd, 0.1, 0.3, True, 3, 4, 5)
    assert_fma_identical(yd.to_numpy(), y)


# x shape, alpha shape: features last (Dense), channels-first maps (alpha
# shared over the spatial axes: Q == 1), channels-last maps (spatial axes
# shared, merged into the batch), P, S and Q all > 1, one alpha for all, one
# alpha per element of a 3-d sample, more columns than one tile of 32, an
# empty batch, and maps large enough that the dalpha reduction is split.
PRELU_SHAPES = [((256, 300), (300,)), ((8, 16, 5, 5), (16, 1, 1)), ((4, 6, 6, 16), (1, 1, 16)),
                ((3, 5, 7, 4), (5, 1, 4)), ((1000, 3), (1,)), ((2, 3, 4, 5), (3, 4, 5)), ((5, 70), (70,)),
                ((0, 4), (4,)), ((64, 16, 16, 8), (1, 1, 8)), ((32, 4, 30, 30), (4, 1, 1))]


@pytest.mark.parametrize("xshape,ashape", PRELU_SHAPES, ids=str)
def test_prelu_forward_and_backward_match_cpu(G, xshape, ashape):
    rng = np.random.default_rng(10)
    x = rng.normal(size=xshape).astype(np.float32)
    x.reshape(-1)[::13] = 0.0  # x == 0 takes the alpha branch
    alpha = rng.uniform(0.0, 0.5, size=ashape).astype(np.float32)
    dy = rng.normal(size=xshape).astype(np.float32)
    y, dx, da = np.empty_like(x), np.empty_like(x), np.empty_like(alpha)
    C.prelu_forward(x, alpha, y)
    C.prelu_backward(x, alpha, dy, dx, da)
    xd, ad, dyd = dev(G, x), dev(G, alpha), dev(G, dy)
    yd, dxd, dad = G.DeviceBuffer(xshape), G.DeviceBuffer(xshape), G.to_device(np.full(ashape, 7.0, np.float32))
    G.prelu_forward(xd, ad, yd)
    G.prelu_backward(xd, ad, dyd, dxd, dad)
    assert_bit_identical(yd.to_numpy(), y, "y")
    assert_bit_identical(dxd.to_numpy(), dx, "dx")
    np.testing.assert_allclose(dad.to_numpy(), da, rtol=RTOL, atol=ATOL)
    # dalpha without dx, and deterministic
    dad2 = G.DeviceBuffer(ashape)
    G.prelu_backward(xd, ad, dyd, None, dad2)
    assert_bit_identical(dad2.to_numpy(), dad.to_numpy(), "dalpha without dx")


def test_prelu_backward_in_place_on_dy_matches_out_of_place(G):
    rng = np.random.default_rng(11)
    x, dy = rng.normal(size=(64, 40)).astype(np.float32), rng.normal(size=(64, 40)).astype(np.float32)
    alpha = rng.uniform(0.0, 0.5, size=(40,)).astype(np.float32)
    xd, ad = dev(G, x), dev(G, alpha)
    dxd, dad = G.DeviceBuffer((64, 40)), G.DeviceBuffer((40,))
    G.prelu_backward(xd, ad, dev(G, dy), dxd, dad)
    dyd, dad2 = dev(G, dy), G.DeviceBuffer((40,))
    G.prelu_backward(xd, ad, dyd, dyd, dad2)
    assert_bit_identical(dyd.to_numpy(), dxd.to_numpy(), "dx")
    assert_bit_identical(dad2.to_numpy(), dad.to_numpy(), "dalpha")


def test_dropout_family_bad_input_raises_like_cpu(G):
    x = np.zeros((4, 10), np.float32)
    alpha = np.zeros((10,), np.float32)

    def both(fn_name, *host_args):
        """The CPU and the GPU twin (arrays copied to the device) raise the same words."""
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            getattr(C, fn_name)(*host_args)
        dev_args = [dev(G, a) if isinstance(a, np.ndarray) else a for a in host_args]
        with pytest.raises(cpu_err.type) as gpu_err:
            getattr(G, fn_name)(*dev_args)
        assert str(gpu_err.value) == str(cpu_err.value)

    for kind in ("dropout", "alpha_dropout"):
        both(f"{kind}_forward", x, x, 1.0, 0, 0, 0)                                    # rate
        both(f"{kind}_forward", x, x, float("nan"), 0, 0, 0)
        both(f"{kind}_forward", x, x, 0.9999995, 0, 0, 0)                              # above 1 - 2^-17
        both(f"{kind}_forward", x, x[:, :9].copy(), 0.5, 0, 0, 0)                     # y shape
        both(f"{kind}_forward", x, x, 0.5, 0, 0, 0, np.zeros(1, np.int32))            # mask words
        both(f"{kind}_forward", x, x, 0.5, 0, 0, 0, np.zeros((2, 1), np.int32))
        both(f"{kind}_backward", x, x, -0.5, 0, 0, 0)
        both(f"{kind}_backward", x, x, 0.5, 0, 0, 0, np.zeros(3, np.int32))
        both(f"{kind}_backward", x, x.reshape(40), 0.5, 0, 0, 0)
    both("dropout_mask", x, 1.5, 0, 0, 0)
    both("rrelu_forward", x, x, 0.5, 0.1, True)                                        # lower > upper
    both("rrelu_forward", x, x, 0.1, float("inf"), True)
    both("rrelu_backward", x, x, x[:3].copy(), 0.1, 0.3, True)
    both("rrelu_backward", x, x[:3].copy(), x, 0.1, 0.3, True)
    both("prelu_forward", x.reshape(40), alpha, x.reshape(40))                         # no batch axis
    both("prelu_forward", x, alpha[:9].copy(), x)                                      # alpha shape
    both("prelu_forward", x, alpha.reshape(1, 10), x)                                  # alpha rank
    both("prelu_forward", np.zeros((2, 3, 4, 5, 6), np.float32), np.zeros((3, 1, 5, 1), np.float32),
         np.zeros((2, 3, 4, 5, 6), np.float32))                                        # two shared groups
    both("prelu_backward", x, alpha, x, None, alpha[:5].copy())                        # dalpha shape
    both("prelu_backward", x, alpha, x[:2].copy(), None, alpha)                        # dy shape
    both("prelu_backward", x, alpha, x, x[:2].copy(), alpha)                           # dx shape
    xd = dev(G, x)
    with pytest.raises(TypeError, match="x must be a deepcore._cuda.DeviceBuffer"):
        G.dropout_forward(x, xd, 0.5, 0, 0, 0)
    with pytest.raises(TypeError, match="mask must have dtype int32, got float32"):
        G.dropout_forward(xd, xd, 0.5, 0, 0, 0, G.DeviceBuffer((2,)))
    with pytest.raises(TypeError, match="mask must be a deepcore._cuda.DeviceBuffer"):
        G.dropout_backward(xd, xd, 0.5, 0, 0, 0, np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="alpha must have dtype float32"):
        G.prelu_forward(xd, G.DeviceBuffer((10,), "int32"), xd)


# ----------------------------------------------------------------- losses
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("rows,cols", [(1000, 10), (37, 1000), (5, 1)])
def test_sparse_categorical_crossentropy_matches_cpu(G, from_logits, rows, cols):
    rng = np.random.default_rng(5)
    z = rng.normal(scale=3.0, size=(rows, cols)).astype(np.float32)
    if not from_logits:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        z = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        z[0, 0] = 0.0  # clipped to eps
    labels = rng.integers(0, cols, size=rows).astype(np.int32)
    g_cpu = np.empty_like(z)
    loss_cpu, hits_cpu = C.sparse_categorical_crossentropy(z, labels, g_cpu, from_logits)
    gd = G.DeviceBuffer(z.shape)
    loss, hits = G.sparse_categorical_crossentropy(dev(G, z), dev(G, labels), gd, from_logits)
    assert hits == hits_cpu
    assert loss == pytest.approx(loss_cpu, rel=1e-9)
    np.testing.assert_allclose(gd.to_numpy(), g_cpu, rtol=RTOL, atol=ATOL / rows)
    # without a gradient buffer: the same loss
    loss2, hits2 = G.sparse_categorical_crossentropy(dev(G, z), dev(G, labels), None, from_logits)
    assert (loss2, hits2) == (loss, hits)


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_ce_gradient_may_overwrite_the_prediction_like_cpu(G, from_logits):
    # Every lane of a row's warp reads z[label] before the lane that owns it
    # writes the gradient there (the kernel's __syncwarp).
    rng = np.random.default_rng(18)
    z = rng.normal(scale=3.0, size=(67, 45)).astype(np.float32)
    if not from_logits:
        z = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, 45, size=67).astype(np.int32)
    g_cpu = z.copy()
    loss_cpu, hits_cpu = C.sparse_categorical_crossentropy(g_cpu, labels, g_cpu, from_logits)
    zd = dev(G, z)
    loss, hits = G.sparse_categorical_crossentropy(zd, dev(G, labels), zd, from_logits)
    assert hits == hits_cpu
    assert loss == pytest.approx(loss_cpu, rel=1e-9)
    np.testing.assert_allclose(zd.to_numpy(), g_cpu, rtol=RTOL, atol=ATOL / 67)


def test_sparse_ce_argmax_ties_and_nan_match_cpu(G):
    z = np.array([[0, 0, 0], [1, 3, 3], [np.nan, 5, 1], [2, np.nan, 7], [-np.inf, -np.inf, -np.inf]], np.float32)
    for labels in ([0, 1, 0, 2, 0], [1, 2, 1, 0, 2]):
        lab = np.array(labels, np.int32)
        _, hits_cpu = C.sparse_categorical_crossentropy(z, lab, None, True)
        _, hits = G.sparse_categorical_crossentropy(dev(G, z), dev(G, lab), None, True)
        assert hits == hits_cpu


def test_sparse_ce_bad_label_raises_like_cpu_and_writes_nothing(G):
    z = np.zeros((4, 10), np.float32)
    labels = np.array([1, 2, 10, -1], np.int32)
    with pytest.raises(ValueError) as cpu_err:
        C.sparse_categorical_crossentropy(z, labels, None, True)
    gd = dev(G, np.full_like(z, 7.0))
    with pytest.raises(ValueError) as gpu_err:
        G.sparse_categorical_crossentropy(dev(G, z), dev(G, labels), gd, True)
    assert str(gpu_err.value) == str(cpu_err.value)
    assert "label 10 at row 2" in str(gpu_err.value)
    np.testing.assert_array_equal(gd.to_numpy(), 7.0)


# -------------------------------------------------------------- bad input
def test_bad_input_raises_clean_exceptions(G):
    x = G.DeviceBuffer((4, 10))
    with pytest.raises(TypeError, match="DeviceBuffer"):
        G.activation_forward(_CODES["relu"], np.zeros((4, 10), np.float32), x)
    with pytest.raises(TypeError, match="float32"):
        G.activation_forward(_CODES["relu"], G.DeviceBuffer((4, 10), "int32"), x)
    with pytest.raises(ValueError, match=r"y must have the shape of x \(4, 10\), got \(4, 11\)"):
        G.activation_forward(_CODES["relu"], x, G.DeviceBuffer((4, 11)))
    with pytest.raises(ValueError, match="unknown activation code 99"):
        G.activation_forward(99, x, x)
    with pytest.raises(ValueError, match="labels must have shape"):
        G.sparse_categorical_crossentropy(x, G.DeviceBuffer((5,), "int32"), None, True)
    with pytest.raises(TypeError, match="labels must have dtype int32"):
        G.sparse_categorical_crossentropy(x, G.DeviceBuffer((4,), "int64"), None, True)
    with pytest.raises(ValueError, match="velocity must have the shape of params"):
        G.sgd_update(x, x, G.DeviceBuffer((3,)), 0.1, 0.9, False)
    with pytest.raises(TypeError, match="dtype must be"):
        G.DeviceBuffer((3,), "float64")
    with pytest.raises(TypeError):
        G.to_device(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="expected shape"):
        x.copy_from(np.zeros((4, 11), np.float32))


def test_out_of_memory_says_how_much_was_asked_and_what_is_free(G):
    with pytest.raises(MemoryError) as err:
        G.DeviceBuffer((1 << 50,))  # 4 PiB
    msg = str(err.value)
    assert isinstance(err.value, G.CudaOutOfMemoryError)
    assert "tried to allocate 4194304.00 GiB" in msg and "free of" in msg, msg
    # not sticky: the device still works
    y = G.DeviceBuffer((3,))
    G.philox_uniform(y, 1, 2)
    assert y.to_numpy().shape == (3,)


# -------------------------------------------------------------- allocator
def test_steady_state_allocates_nothing(G):
    def step():
        bufs = [G.DeviceBuffer((256, 784)), G.DeviceBuffer((256, 10)), G.DeviceBuffer((1000,), "int32")]
        G.philox_uniform(bufs[0], 0, 0)
        del bufs

    step()
    before = G.memory_stats()["malloc_calls"]
    for _ in range(10):
        step()
    assert G.memory_stats()["malloc_calls"] == before


def test_cuda_array_interface_describes_the_buffer(G):
    b = G.to_device(np.arange(12, dtype=np.float32).reshape(3, 4))
    cai = b.__cuda_array_interface__
    assert cai["shape"] == (3, 4) and cai["typestr"] == "<f4" and cai["version"] == 3
    assert cai["data"][0] != 0 and cai["data"][1] is False and cai["strides"] is None
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA: zero-copy view not checked")
    t = torch.as_tensor(b, device="cuda")
    assert t.data_ptr() == cai["data"][0]
    np.testing.assert_array_equal(t.cpu().numpy(), b.to_numpy())
