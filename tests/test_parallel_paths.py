"""The parallel paths of the CPU kernels (deepcore's thread pool), each run
just above its size threshold at 1 and at 2 threads.

A CPU kernel splits its work across threads only above a threshold
(src/ops/common.h, listed by deepcore._core.parallel_thresholds()); below it
the serial loop runs, so small-input tests never reach the parallel code. Here
every kernel family with a parallel path runs at a size just above its
threshold (read from that dict, never written here), once with 1 thread and
once with 2, and the test asserts

  (i)  the same bits at both thread counts wherever the code computes each
       output from the same operations in the same order at any thread count
       (elementwise kernels, row-wise kernels, the Philox draws: "the same seed
       gives the same masks at any thread count", fixed-order reductions);
       where the summation order legitimately depends on the thread count, a
       tolerance derived from that order, stated at the test;
  (ii) agreement with a float64 NumPy reference at that size (the references
       of the per-family tests, imported from them).

The last test trains the README's remedies model (Dense with an l2 kernel
regularizer, BatchNormalization, ReLU, Dropout, softmax; Nadam with
global_clipnorm=1.0) at 1 and at 2 threads from the same seed.
"""

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore.activations import _CODES
from deepcore.layers.regularization import _SEEDED_STREAM

from activation_reference import _sigmoid, _softmax, ref_forward
from test_activation_layers import prelu64
from test_activations import ACTS, ref_backward, swish_beta_grad64
from test_batchnorm import EPS, bn_ref, close32
from test_conv import avg_pool_grad_ref, conv_grads_ref, conv_ref, pool_ref
from test_dropout import ALPHA_P, alpha_coefficients, call_bits, eff, philox4x32_10, ref_keep, unpack_keep_bits
from test_merge_layers import fold32, repeat_fold32, ref_backward as merge_ref_backward
from test_losses import (BCE, BCE_LOGITS, CCE, CCE_LOGITS, HUBER, MAE, MSE, P_HI, P_LO, assert_grad_close,
                         binary_data, categorical_data, ref_loss, ref_sparse, regression_data, sparse_data)
from test_optimizers import reference as optimizer_reference
from test_optimizers import rel_err, segment_arrays

THRESHOLDS = C.parallel_thresholds()
ELEMENTS = THRESHOLDS["kParallelThreshold"]
F32_EPS = 2.0**-24  # unit roundoff of float32


@pytest.fixture(autouse=True)
def _restore_thread_count():
    before = dc.get_num_threads()
    yield
    dc.set_num_threads(before)


def at_one_and_two_threads(fn):
    """(fn() at 1 thread, fn() at 2 threads)."""
    out = []
    for threads in (1, 2):
        dc.set_num_threads(threads)
        assert dc.get_num_threads() == threads
        out.append(fn())
    return out


def assert_same_bits(a, b, what="result"):
    """a and b hold the same bits (NaN payloads and signed zeros included)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    ua = a.reshape(-1).view(f"u{a.itemsize}")
    ub = b.reshape(-1).view(f"u{b.itemsize}")
    bad = np.flatnonzero(ua != ub)
    if bad.size:
        i = bad[0]
        raise AssertionError(f"{what}: {bad.size} of {a.size} elements differ between 1 and 2 threads; first at "
                             f"flat index {i} (of {a.size}): {a.reshape(-1)[i]!r} vs {b.reshape(-1)[i]!r}")


def rows_above(threshold, cols, extra=2):
    """Rows such that rows * cols is just above threshold."""
    return threshold // cols + extra


# --------------------------------------------------------------------------
# the thresholds themselves
# --------------------------------------------------------------------------
def test_parallel_thresholds_lists_every_named_threshold_as_a_positive_int():
    assert set(THRESHOLDS) == {"kParallelThreshold", "kOptimizerParallelThreshold", "kNormalParallelThreshold",
                               "kGatherParallelBytes", "kPreluBackwardParallelChannels",
                               "kWindowParallelThreshold"}
    for name, value in THRESHOLDS.items():
        assert isinstance(value, int) and value > 0, name
    assert C.parallel_thresholds() == THRESHOLDS  # a fresh dict each call, the same values


# --------------------------------------------------------------------------
# activations (elementwise and softmax): every code, forward and backward
# --------------------------------------------------------------------------
# 1021 columns (prime): the threads' chunk boundaries fall inside rows and the
# last chunk is ragged.
ACT_SHAPE = (rows_above(ELEMENTS, 1021), 1021)


def act_inputs(seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 3.0, size=ACT_SHAPE).astype(np.float32),
            rng.normal(size=ACT_SHAPE).astype(np.float32))


def act_forward(name, x, alpha, beta):
    y = np.full_like(x, np.nan)
    C.activation_forward(_CODES[name], x, y, alpha, beta)
    return y


def assert_dx_close(dx, ref, dy):
    """dx = f'(x) dy with f' in float32: the derivative carries an absolute
    error of about 1e-6 in its O(1) terms where they cancel (gelu_tanh's
    1 + tanh for x << 0: 5e-7 at 1M normals), so allow 1e-5 relative plus
    1e-6 per unit of |dy| (test_activations' atol=1e-6, at |dy| up to 5)."""
    err = np.abs(dx.astype(np.float64) - ref)
    bound = 1e-5 * np.abs(ref) + 1e-6 * np.abs(dy.astype(np.float64))
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (f"at flat index {worst}: dx {dx.reshape(-1)[worst]!r}, reference "
                                  f"{ref.reshape(-1)[worst]!r}, dy {dy.reshape(-1)[worst]!r}")


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_activation_forward_is_identical_at_one_and_two_threads_above_the_threshold(name, alpha, beta):
    x, _ = act_inputs(1)
    y1, y2 = at_one_and_two_threads(lambda: act_forward(name, x, alpha, beta))
    assert_same_bits(y1, y2)
    # The float32 accuracy test_activations asks of every activation.
    np.testing.assert_allclose(y2, ref_forward(name, x, alpha, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,alpha,beta", ACTS)
def test_activation_backward_is_identical_at_one_and_two_threads_above_the_threshold(name, alpha, beta):
    x, dy = act_inputs(2)
    y = act_forward(name, x, alpha, beta)

    def run():
        dx = np.full_like(x, np.nan)
        C.activation_backward(_CODES[name], x, y, dy, dx, alpha, beta)
        return dx

    dx1, dx2 = at_one_and_two_threads(run)
    assert_same_bits(dx1, dx2)
    assert_dx_close(dx2, ref_backward(name, x, dy, alpha, beta), dy)


def test_swish_with_beta_in_a_tensor_and_its_beta_gradient_are_identical_at_one_and_two_threads():
    """swish_forward / swish_backward (the elementwise paths) and
    swish_beta_grad (fixed 4096-element blocks summed in block order: the
    same bits at any thread count, as its comment promises)."""
    n = ELEMENTS + 4099  # a partial last block
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    beta = np.array(1.7, np.float32)

    def run():
        y, dx, dbeta = np.full_like(x, np.nan), np.full_like(x, np.nan), np.full((), np.nan, np.float32)
        C.swish_forward(x, y, beta)
        C.swish_backward(x, dy, dx, beta)
        C.swish_beta_grad(x, dy, beta, dbeta)
        return y, dx, dbeta

    (y1, dx1, db1), (y2, dx2, db2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    assert_same_bits(db1, db2, "dbeta")
    np.testing.assert_allclose(y2, ref_forward("swish", x, 0.0, 1.7), rtol=1e-5, atol=1e-6)
    assert_dx_close(dx2, ref_backward("swish", x, dy, 0.0, 1.7), dy)
    want, scale = swish_beta_grad64(x, dy, np.float32(1.7))
    assert abs(float(db2) - want) <= 1e-6 * scale  # test_activations' bound


# PReLU: x (batch, sample...) with alpha of the sample shape (1 at shared
# axes). prelu_backward goes parallel only with at least
# kPreluBackwardParallelChannels alpha entries; each thread owns a range of
# entries and sums each over (batch, shared axes) in order: the same bits at
# any thread count.
PRELU_CHANNELS = THRESHOLDS["kPreluBackwardParallelChannels"]
PRELU_CASES = [
    # one alpha per unit (Q = units): the per-row loop
    pytest.param((16 * PRELU_CHANNELS + 7,), (16 * PRELU_CHANNELS + 7,), id="per-unit"),
    # one alpha per channel shared over the trailing axis (Q == 1): the shared-run loop
    pytest.param((PRELU_CHANNELS + 32, 1100), (PRELU_CHANNELS + 32, 1), id="per-channel"),
    # alpha (3, 1, Q) with 3 * Q entries: the second thread's range starts inside a row of Q
    pytest.param((3, 37, 3 * PRELU_CHANNELS // 4), (3, 1, 3 * PRELU_CHANNELS // 4), id="split-inside-a-row"),
]


@pytest.mark.parametrize("sample,alpha_shape", PRELU_CASES)
def test_prelu_forward_backward_and_alpha_gradient_are_identical_at_one_and_two_threads(sample, alpha_shape):
    assert np.prod(alpha_shape) >= PRELU_CHANNELS
    batch = rows_above(ELEMENTS, int(np.prod(sample)))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(batch,) + sample).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    alpha = rng.uniform(-0.5, 0.8, size=alpha_shape).astype(np.float32)

    def run():
        y, dx, da = np.full_like(x, np.nan), np.full_like(x, np.nan), np.full_like(alpha, np.nan)
        C.prelu_forward(x, alpha, y)
        C.prelu_backward(x, alpha, dy, dx, da)
        return y, dx, da

    (y1, dx1, da1), (y2, dx2, da2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    assert_same_bits(da1, da2, "dalpha")
    np.testing.assert_allclose(y2, prelu64(x, alpha), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dx2, np.where(x > 0, dy, alpha * dy.astype(np.float64)), rtol=1e-6, atol=0)
    shared = tuple(i + 1 for i, d in enumerate(alpha_shape) if d == 1)
    terms = np.where(x > 0, 0.0, dy.astype(np.float64) * x)
    want = terms.sum(axis=(0,) + shared).reshape(alpha_shape)
    # Summed in double, rounded once to float32.
    np.testing.assert_allclose(da2, want, rtol=2 * F32_EPS, atol=1e-12 * np.abs(terms).sum())


# --------------------------------------------------------------------------
# Dense: the fused epilogues around OpenBLAS
# --------------------------------------------------------------------------
DENSE_BATCH = 2048
DENSE_OUT = rows_above(ELEMENTS, DENSE_BATCH, extra=3)  # batch * out just above the threshold
DENSE_IN = 16
DENSE_ACTS = [
    pytest.param("linear", 0.0, 1.0, id="linear"),
    pytest.param("relu", 0.0, 1.0, id="relu"),
    pytest.param("sigmoid", 0.0, 1.0, id="sigmoid"),
    pytest.param("gelu_tanh", 0.0, 1.0, id="gelu_tanh"),
    pytest.param("swish", 0.0, 1.7, id="swish-1.7"),
    pytest.param("softmax", 0.0, 1.0, id="softmax"),
]


def dense_problem(seed):
    """x and w with few significant bits (multiples of 1/4 and 1/8, |x w| sums
    of 16 terms below 2^5): every product and partial sum of x @ w is exact in
    float32, so the GEMM gives the same bits in any summation order and z =
    x @ w + b depends only on the epilogue."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-4, 5, size=(DENSE_BATCH, DENSE_IN)) / 4).astype(np.float32)
    w = (rng.integers(-8, 9, size=(DENSE_IN, DENSE_OUT)) / 8).astype(np.float32)
    b = rng.normal(size=DENSE_OUT).astype(np.float32)
    return x, w, b


def dense_forward(x, w, b, name, alpha, beta):
    z = np.full((x.shape[0], w.shape[1]), np.nan, np.float32)
    y = np.full_like(z, np.nan)
    C.dense_forward(x, w, b, z, y, _CODES[name], alpha, beta)
    return z, y


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name,alpha,beta", DENSE_ACTS)
def test_dense_forward_epilogue_is_identical_at_one_and_two_threads_above_the_threshold(name, alpha, beta,
                                                                                        with_bias):
    x, w, b = dense_problem(5)
    b = b if with_bias else None
    (z1, y1), (z2, y2) = at_one_and_two_threads(lambda: dense_forward(x, w, b, name, alpha, beta))
    assert_same_bits(z1, z2, "z")
    assert_same_bits(y1, y2, "y")
    z64 = x.astype(np.float64) @ w.astype(np.float64) + (0.0 if b is None else b.astype(np.float64))
    np.testing.assert_allclose(z2, z64, rtol=F32_EPS, atol=0)  # one rounding: the bias add
    np.testing.assert_allclose(y2, ref_forward(name, z2, alpha, beta), rtol=1e-5, atol=1e-6)


def gemm_bound(a, b):
    """The float32 error bound of a @ b for any summation order: gamma_k |a| @ |b|."""
    k = a.shape[1]
    gamma = k * F32_EPS / (1 - k * F32_EPS)
    return gamma * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


@pytest.mark.parametrize("name,alpha,beta", DENSE_ACTS)
def test_dense_backward_epilogue_is_identical_and_its_gemms_agree_at_one_and_two_threads(name, alpha, beta):
    """dz = act'(z) dy (elementwise) and db (column sums of dz, in double in
    row order, on the calling thread) are the same bits at any thread count.
    dW = x^T dz and dx = dz W^T are OpenBLAS GEMMs, whose summation order
    OpenBLAS does not keep across thread counts (4096x784x300 differs in
    almost every element between 1 and 2 threads): each is within the standard
    bound gamma_k |a||b| of the exact product, so the two within twice that."""
    x, w, b = dense_problem(6)
    z, y = dense_forward(x, w, b, name, alpha, beta)
    dy = np.random.default_rng(7).normal(size=z.shape).astype(np.float32)

    def run():
        dz, dx = np.full_like(z, np.nan), np.full_like(x, np.nan)
        dw, db = np.full_like(w, np.nan), np.full(w.shape[1], np.nan, np.float32)
        C.dense_backward(x, w, z, y, dy, dz, dx, dw, db, _CODES[name], alpha, beta, False, False)
        return dz, dx, dw, db

    (dz1, dx1, dw1, db1), (dz2, dx2, dw2, db2) = at_one_and_two_threads(run)
    if name == "linear":  # dz is dy itself: the scratch buffer is not written
        dz1 = dz2 = dy
    assert_same_bits(dz1, dz2, "dz")
    assert_same_bits(db1, db2, "db")
    dw_bound, dx_bound = gemm_bound(x.T, dz2), gemm_bound(dz2, w.T)
    assert np.all(np.abs(dw1.astype(np.float64) - dw2) <= 2 * dw_bound)
    assert np.all(np.abs(dx1.astype(np.float64) - dx2) <= 2 * dx_bound)

    assert_dx_close(dz2, ref_backward(name, z, dy, alpha, beta), dy)
    dz64 = dz2.astype(np.float64)
    np.testing.assert_allclose(db2, dz64.sum(axis=0), rtol=2 * F32_EPS, atol=1e-12 * np.abs(dz64).sum())
    assert np.all(np.abs(dw2 - x.astype(np.float64).T @ dz64) <= dw_bound)
    assert np.all(np.abs(dx2 - dz64 @ w.astype(np.float64).T) <= dx_bound)


# --------------------------------------------------------------------------
# losses: values (parallel reductions), gradients (elementwise), hits
# --------------------------------------------------------------------------
ELEMENTWISE_LOSS_SHAPE = (rows_above(ELEMENTS, 1021), 1021)
CLASSES = 10
CATEGORICAL_ROWS = rows_above(ELEMENTS, CLASSES, extra=7)


def ref_loss_grad(kind, p, t, param):
    """d(loss)/d(pred), float64, loss as ref_loss (mean over elements or rows)."""
    p, t = p.astype(np.float64), t.astype(np.float64)
    n, rows = p.size, p.shape[0]
    if kind == MSE:
        return 2.0 * (p - t) / n
    if kind == MAE:
        return np.sign(p - t) / n
    if kind == HUBER:
        e = p - t
        return np.where(np.abs(e) <= param, e, param * np.sign(e)) / n
    if kind == BCE:  # the kernel differentiates the clipped loss through the clip
        pc = np.clip(p, P_LO, P_HI)
        return (pc - t) / (pc * (1.0 - pc)) / n
    if kind == BCE_LOGITS:
        return (_sigmoid(p) - t) / n
    if kind == CCE:
        return -t / np.clip(p, P_LO, P_HI) / rows
    if kind == CCE_LOGITS:
        return (_softmax(p) * t.sum(axis=1, keepdims=True) - t) / rows
    raise AssertionError(kind)


LOSS_CASES = [
    pytest.param(MSE, 1.0, lambda: regression_data(ELEMENTWISE_LOSS_SHAPE, seed=10), id="mse"),
    pytest.param(MAE, 1.0, lambda: regression_data(ELEMENTWISE_LOSS_SHAPE, seed=11), id="mae"),
    pytest.param(HUBER, 1.0, lambda: regression_data(ELEMENTWISE_LOSS_SHAPE, seed=12), id="huber"),
    pytest.param(BCE, 0.0, lambda: binary_data(ELEMENTWISE_LOSS_SHAPE, seed=13), id="bce"),
    pytest.param(BCE_LOGITS, 0.0, lambda: (regression_data(ELEMENTWISE_LOSS_SHAPE, seed=14)[0] * 3,
                                            binary_data(ELEMENTWISE_LOSS_SHAPE, seed=15, soft=True)[1]),
                 id="bce-logits"),
    pytest.param(CCE, 0.0, lambda: categorical_data(CATEGORICAL_ROWS, CLASSES, seed=16, soft=True), id="cce"),
    pytest.param(CCE_LOGITS, 0.0, lambda: categorical_data(CATEGORICAL_ROWS, CLASSES, seed=17, logits=True),
                 id="cce-logits"),
]


@pytest.mark.parametrize("kind,param,data", LOSS_CASES)
def test_loss_value_and_gradient_are_identical_at_one_and_two_threads_above_the_threshold(kind, param, data):
    p, t = data()
    assert p.size >= ELEMENTS

    def run():
        g = np.full_like(p, np.nan)
        return C.loss_forward_backward(kind, p, t, g, param), g

    (v1, g1), (v2, g2) = at_one_and_two_threads(run)
    assert_same_bits(g1, g2, "gradient")  # each element (each row) computed alone
    # Blocks of elements (rows) fixed by the size, summed from 0, added in block order: the same bits.
    assert v2 == v1
    assert v2 == pytest.approx(ref_loss(kind, p, t, param), rel=1e-5, abs=1e-7)  # test_losses' tolerance
    assert_grad_close(g2, ref_loss_grad(kind, p, t, param))


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_sparse_crossentropy_loss_hits_and_gradient_are_identical_at_one_and_two_threads(from_logits):
    p, labels = sparse_data(rows=CATEGORICAL_ROWS, cols=CLASSES, seed=18, logits=from_logits)
    assert p.size >= ELEMENTS

    def run():
        g = np.full_like(p, np.nan)
        loss, hits = C.sparse_categorical_crossentropy(p, labels, g, from_logits)
        return loss, hits, g

    (l1, h1, g1), (l2, h2, g2) = at_one_and_two_threads(run)
    assert h1 == h2 == int((p.argmax(axis=1) == labels).sum())  # an integer sum: exact
    assert_same_bits(g1, g2, "gradient")
    assert l2 == l1  # blocks of rows added in block order, as the other losses: the same bits
    assert l2 == pytest.approx(ref_sparse(p, labels, from_logits), rel=1e-5)
    rows = np.arange(p.shape[0])
    if from_logits:
        want = _softmax(p.astype(np.float64))
        want[rows, labels] -= 1.0
    else:
        want = np.zeros(p.shape)
        want[rows, labels] = -1.0 / np.clip(p[rows, labels].astype(np.float64), P_LO, P_HI)
    assert_grad_close(g2, want / p.shape[0])


def test_count_nonfinite_is_exact_at_one_and_two_threads():
    n = ELEMENTS + 1003
    x = np.random.default_rng(19).normal(size=n).astype(np.float32)
    bad = np.array([0, 5, n // 2 - 1, n // 2, n // 2 + 1, n - 1])
    x[bad[::2]] = np.nan
    x[bad[1::2]] = np.inf
    c1, c2 = at_one_and_two_threads(lambda: C.count_nonfinite(x))
    assert c1 == c2 == bad.size


# --------------------------------------------------------------------------
# conv family: im2col, col2im, pooling, zero padding (kWindowParallelThreshold)
# --------------------------------------------------------------------------

WINDOW = THRESHOLDS["kWindowParallelThreshold"]


def conv_problem(seed):
    """An NHWC x in multiples of 1/4 and, as the kernel, the identity on the
    patch (filters = kh*kw*cin, HWIO): z = im2col(x) exactly and dcol = dz
    exactly, so conv2d_forward's z and conv2d_backward's dx (col2im) depend on
    the threaded copies and adds alone. rows * K is just above the threshold."""
    kh, kw, cin, h, w = 3, 3, 4, 20, 20
    k = kh * kw * cin
    batch = WINDOW // (h * w * k) + 1
    rng = np.random.default_rng(seed)
    x = (rng.integers(-8, 9, size=(batch, h, w, cin)) / 4).astype(np.float32)
    kernel = np.eye(k, dtype=np.float32).reshape(kh, kw, cin, k)
    dy = (rng.integers(-8, 9, size=(batch, h, w, k)) / 4).astype(np.float32)
    return x, kernel, dy


def test_conv2d_im2col_and_col2im_are_identical_at_one_and_two_threads_above_the_threshold():
    x, w, dy = conv_problem(11)
    args = ((1, 1), (1, 1), "same")
    assert dy.shape[0] * dy.shape[1] * dy.shape[2] * dy.shape[3] > WINDOW

    def run():
        col = np.full((dy.shape[0] * dy.shape[1] * dy.shape[2], dy.shape[3]), np.nan, np.float32)
        z = np.full(dy.shape, np.nan, np.float32)
        C.conv2d_forward(x, w, None, col, z, z, *args, _CODES["linear"])
        dx, dw, dcol = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(col, np.nan)
        C.conv2d_backward(x, w, col, z, z, dy, np.empty_like(dy), dcol, dx, dw, None, *args, _CODES["linear"])
        return col, z, dx

    (col1, z1, dx1), (col2, z2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(col1, col2, "col")
    assert_same_bits(z1, z2, "z")
    assert_same_bits(dx1, dx2, "dx")
    np.testing.assert_array_equal(z2, conv_ref(x, w, None, *args))  # exact: sums of quarters
    np.testing.assert_array_equal(dx2, conv_grads_ref(x, w, dy, *args)[0])


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_forward_and_backward_are_identical_at_one_and_two_threads_above_the_threshold(mode):
    pool, strides, padding = (3, 3), (2, 2), "same"  # overlapping windows: backward adds into shared pixels
    batch = WINDOW // (16 * 16 * 9 * 8) + 1
    rng = np.random.default_rng(12)
    x = rng.normal(size=(batch, 32, 32, 8)).astype(np.float32)
    dy = rng.normal(size=(batch, 16, 16, 8)).astype(np.float32)

    def run():
        y = np.full(dy.shape, np.nan, np.float32)
        arg = np.full(dy.shape, -1, np.int32) if mode == "max" else None
        C.pool2d_forward(x, y, arg, pool, strides, padding, mode)
        dx = np.full_like(x, np.nan)
        C.pool2d_backward(dy, arg, dx, pool, strides, padding, mode)
        return y, arg, dx

    (y1, a1, dx1), (y2, a2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    if mode == "max":
        assert_same_bits(a1, a2, "argmax")
    np.testing.assert_allclose(y2, pool_ref(x, pool, strides, padding, mode), rtol=1e-6, atol=1e-6)
    if mode == "avg":
        np.testing.assert_allclose(dx2, avg_pool_grad_ref(x.shape, dy.astype(np.float64), pool, strides, padding),
                                   rtol=1e-5, atol=1e-6)


def test_zero_padding_and_its_crop_are_identical_at_one_and_two_threads_above_the_threshold():
    pads = ((1, 2), (3, 0))
    batch = WINDOW // (33 * 33 * 8) + 1
    x = np.random.default_rng(13).normal(size=(batch, 30, 30, 8)).astype(np.float32)

    def run():
        y = np.full((batch, 33, 33, 8), np.nan, np.float32)
        C.pad2d(x, y, pads)
        dx = np.full_like(x, np.nan)
        C.crop2d(y, dx, pads)
        return y, dx

    (y1, dx1), (y2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    np.testing.assert_array_equal(y2, np.pad(x, ((0, 0),) + pads + ((0, 0),)))
    np.testing.assert_array_equal(dx2, x)


# --------------------------------------------------------------------------
# the optimizer step: update, clipping, penalties, gradient norm
# --------------------------------------------------------------------------
OPT_THRESHOLD = THRESHOLDS["kOptimizerParallelThreshold"]
BLOCK = 4096  # reduce_run in src/cpu/optimizers.cpp sums float blocks of 4096 elements from each run's start
# Just above the threshold, with each thread's chunk (n / 2) a whole number of
# blocks: the threads' float block sums are then the serial ones, and only the
# order in which their double partials are added differs.
OPT_N = (OPT_THRESHOLD // (2 * BLOCK) + 2) * 2 * BLOCK
# (lo, hi, l1, l2): the middle segment spans the two threads' chunks.
OPT_SEGS = [(0, 3 * BLOCK, 0.0, 0.0), (3 * BLOCK, OPT_N // 2 + 5 * BLOCK, 0.01, 0.0),
            (OPT_N // 2 + 5 * BLOCK, OPT_N - BLOCK, 0.0, 0.05), (OPT_N - BLOCK, OPT_N, 0.02, 0.03)]
CLIPS = [pytest.param(None, id="no-clip"), pytest.param(("value", 0.3), id="clipvalue"),
         pytest.param(("norm", 0.5), id="clipnorm"), pytest.param(("global", 1.0), id="global_clipnorm")]
CLIP_ARG = {"value": "clipvalue", "norm": "clipnorm", "global": "global_clipnorm"}


def optimizer_problem(n, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=n).astype(np.float32)
    grads = rng.normal(scale=0.01, size=(3, n))  # with OPT_SEGS' penalties, every norm is above its clip
    return w0, grads


def penalty64(w, segs):
    w = w.astype(np.float64)
    return sum(a * np.abs(w[lo:hi]).sum() + b * np.square(w[lo:hi]).sum() for lo, hi, a, b in segs)


def norms64(w, g, segs):
    """Per-segment and global L2 norms of the penalized gradient, float64."""
    w, g = w.astype(np.float64), g.astype(np.float64).copy()
    for lo, hi, l1, l2 in segs:
        g[lo:hi] += 2 * l2 * w[lo:hi] + l1 * np.sign(w[lo:hi])
    return [np.linalg.norm(g[lo:hi]) for lo, hi, _, _ in segs], np.linalg.norm(g)


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("kind,cfg", [
    pytest.param("sgd", {"learning_rate": 0.05, "momentum": 0.9}, id="sgd-momentum"),
    pytest.param("adam", {"learning_rate": 0.02}, id="adam"),
])
def test_optimizer_step_with_clipping_and_penalties_is_identical_at_one_and_two_threads(kind, cfg, clip):
    """Two steps of the fused update. The penalty and the norms are sums of
    float blocks of 4096 elements counted from each segment's start, added in
    double in block order whatever the thread count: the same bits, hence the
    same clip scales, weights and slots."""
    opt_class = {"sgd": dc.optimizers.SGD, "adam": dc.optimizers.Adam}[kind]
    kw = dict(cfg, **({} if clip is None else {CLIP_ARG[clip[0]]: clip[1]}))
    w0, grads = optimizer_problem(OPT_N, seed=20)
    segments = segment_arrays(OPT_SEGS)

    def run():
        opt, w, pens = opt_class(**kw), w0.copy(), []
        for g in grads[:2]:
            pens.append(opt.apply(w, g.astype(np.float32), segments))
        return w, pens, [np.array(v) for v in opt.get_state().values()]

    (w1, p1, s1), (w2, p2, s2) = at_one_and_two_threads(run)
    assert_same_bits(w1, w2, "weights")
    for a, b in zip(s1, s2):
        assert_same_bits(a, b, "slot")
    assert p2 == p1

    ref = optimizer_reference(kind, cfg, w0, lambda t, w: grads[t - 1], steps=2, segments=OPT_SEGS, clip=clip)
    assert rel_err(w2, ref) < 1e-5  # test_optimizers' tolerance
    assert p2[0] == pytest.approx(penalty64(w0, OPT_SEGS), rel=1e-6)


@pytest.mark.parametrize("clip", CLIPS)
def test_optimizer_step_gradient_norm_and_penalty_are_identical_at_one_and_two_threads(clip):
    """optimizer_step's returned (penalty, gradient norm): the global norm
    after penalties, before clipping; plain SGD, so the weights are checked
    against the float64 step too."""
    w0, grads = optimizer_problem(OPT_N, seed=21)
    g = grads[0].astype(np.float32)
    offsets, l1, l2 = segment_arrays(OPT_SEGS)
    hyper = C.OptParams()
    hyper.kind, hyper.lr = 0, 0.1  # SGD
    if clip is not None:
        setattr(hyper, CLIP_ARG[clip[0]], clip[1])

    def run():
        w = w0.copy()
        penalty, norm = C.optimizer_step(hyper, w, g, None, None, None, offsets, l1, l2, True)
        return w, penalty, norm

    (w1, pen1, n1), (w2, pen2, n2) = at_one_and_two_threads(run)
    assert pen2 == pen1 and n2 == n1  # blocks added in a fixed order: the same bits
    assert_same_bits(w1, w2, "weights")

    seg_norms, total = norms64(w0, g, OPT_SEGS)
    # Float blocks of 4096 squares: relative error far below 1e-6 for these sums.
    assert n2 == pytest.approx(total, rel=1e-6)
    assert pen2 == pytest.approx(penalty64(w0, OPT_SEGS), rel=1e-6)
    if clip is not None and clip[0] == "global":
        assert total > clip[1]  # the clip is active
    if clip is not None and clip[0] == "norm":
        assert all(nrm > clip[1] for nrm in seg_norms)
    ref = optimizer_reference("sgd", {"learning_rate": 0.1}, w0, lambda t, w: g, steps=1, segments=OPT_SEGS,
                              clip=clip)
    assert rel_err(w2, ref) < 1e-5


# --------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------
BN_ROW_BLOCK = 64  # kRowBlock in src/cpu/batchnorm.cpp: features-last rows summed in float per block


def bn_cases():
    # Features last (B == 1): A rows, a multiple of 2 * 64, so that each thread's
    # rows start on a float block boundary of the serial loop.
    c = 300
    a = -(-rows_above(ELEMENTS, c) // (2 * BN_ROW_BLOCK)) * 2 * BN_ROW_BLOCK
    # Spatial (A, C, B): each (row, feature) span is summed on its own, at any split.
    cs, b = 16, 1100
    return [pytest.param((a, c), id="features-last"), pytest.param((rows_above(ELEMENTS, cs * b, 5), cs, b),
                                                                   id="spatial")]


# BatchNorm between 1 and 2 threads: reduce_rows cuts the rows into groups
# fixed by the shape, sums each group from 0 and adds the groups' sums in
# group order, whatever the thread count: the statistics, the parameter
# gradients and the elementwise passes that use them (y, dx) are the same bits.


@pytest.mark.parametrize("shape", bn_cases())
def test_batchnorm_training_forward_is_identical_at_one_and_two_threads_above_the_threshold(shape):
    rng = np.random.default_rng(22)
    c = shape[1]
    x = (rng.normal(size=shape) * 1.5 + 2.0).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, c).astype(np.float32)
    beta = rng.normal(size=c).astype(np.float32)

    def run():
        y = np.full_like(x, np.nan)
        mean, inv_std = np.full(c, np.nan, np.float32), np.full(c, np.nan, np.float32)
        mm, mv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
        C.batchnorm_forward_train(x, gamma, beta, y, mean, inv_std, mm, mv, EPS, 0.9)
        return y, mean, inv_std, mm, mv

    r1, r2 = at_one_and_two_threads(run)
    for name, a, b in zip(["y", "mean", "inv_std", "moving_mean", "moving_var"], r1, r2):
        assert_same_bits(a, b, name)
    y, mean, inv_std, mm, mv = r2
    x3 = x.reshape(shape if len(shape) == 3 else shape + (1,))
    y_ref, mu, var = bn_ref(x3, gamma, beta)
    close32(y.reshape(x3.shape), y_ref, 1e-5)  # test_batchnorm's tolerance at this size
    close32(mean, mu, 1e-6)
    close32(inv_std, 1.0 / np.sqrt(var + EPS), 1e-5)
    close32(mm, 0.9 * 0.5 + 0.1 * mu, 1e-6)
    close32(mv, 0.9 * 2.0 + 0.1 * var, 1e-5)


@pytest.mark.parametrize("shape", bn_cases())
def test_batchnorm_inference_forward_is_identical_at_one_and_two_threads_above_the_threshold(shape):
    rng = np.random.default_rng(23)
    c = shape[1]
    x = rng.normal(size=shape).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2.0, c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    mm, mv = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)

    def run():
        y = np.full_like(x, np.nan)
        C.batchnorm_forward_inference(x, gamma, beta, mm, mv, y, EPS)
        return y

    y1, y2 = at_one_and_two_threads(run)
    assert_same_bits(y1, y2)  # per-feature coefficients, then elementwise
    bshape = (1, c) + (1,) * (len(shape) - 2)
    ref = ((x.astype(np.float64) - mm.reshape(bshape)) * gamma.reshape(bshape)
           / np.sqrt(mv.astype(np.float64).reshape(bshape) + EPS) + beta.reshape(bshape))
    close32(y2, ref, 1e-5)


@pytest.mark.parametrize("shape", bn_cases())
def test_batchnorm_backward_is_identical_at_one_and_two_threads_above_the_threshold(shape):
    rng = np.random.default_rng(24)
    c = shape[1]
    x = (rng.normal(size=shape) + 0.5).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, c).astype(np.float32)
    y = np.empty_like(x)
    mean, inv_std = np.empty(c, np.float32), np.empty(c, np.float32)
    C.batchnorm_forward_train(x, gamma, None, y, mean, inv_std, np.zeros(c, np.float32), np.ones(c, np.float32),
                              EPS, 0.99)

    def run():
        dx, dg, db = np.full_like(x, np.nan), np.full(c, np.nan, np.float32), np.full(c, np.nan, np.float32)
        C.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dg, db)
        return dx, dg, db

    (dx1, dg1, db1), (dx2, dg2, db2) = at_one_and_two_threads(run)
    assert_same_bits(dg1, dg2, "dgamma")
    assert_same_bits(db1, db2, "dbeta")
    assert_same_bits(dx1, dx2, "dx")

    x3 = x.reshape(shape if len(shape) == 3 else shape + (1,)).astype(np.float64)
    dy3 = dy.reshape(x3.shape).astype(np.float64)
    mu, var = x3.mean(axis=(0, 2)), x3.var(axis=(0, 2))
    xhat = (x3 - mu[:, None]) / np.sqrt(var[:, None] + EPS)
    n = x3.shape[0] * x3.shape[2]
    db_ref = dy3.sum(axis=(0, 2))
    dg_ref = (dy3 * xhat).sum(axis=(0, 2))
    dx_ref = gamma[:, None] / np.sqrt(var[:, None] + EPS) * (dy3 - db_ref[:, None] / n - xhat * dg_ref[:, None] / n)
    close32(db2, db_ref, 1e-4)  # test_batchnorm's tolerances
    close32(dg2, dg_ref, 1e-4)
    close32(dx2.reshape(x3.shape), dx_ref, 1e-4)


# --------------------------------------------------------------------------
# the dropout family (Philox draws): the same bits at any thread count
# --------------------------------------------------------------------------
# Not a multiple of the 1024-element tile nor of a 32-bit mask word.
DROP_N = ELEMENTS + 3 * 1024 + 17
DROP_KEY = (0x1234_5678_9ABC, 0x6472_6F70 << 32, 17)  # seed, stream, call
DROP_RATE = 0.3


def drop_inputs(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=DROP_N).astype(np.float32), rng.normal(size=DROP_N).astype(np.float32)


@pytest.mark.parametrize("kind", ["dropout", "alpha_dropout"])
def test_dropout_forward_mask_and_backward_are_identical_at_one_and_two_threads(kind):
    x, dy = drop_inputs(25)
    words = (DROP_N + 31) // 32
    forward, backward = getattr(C, f"{kind}_forward"), getattr(C, f"{kind}_backward")

    def run():
        y, mask = np.full_like(x, np.nan), np.full(words, -1, np.int32)
        forward(x, y, DROP_RATE, *DROP_KEY, mask)
        from_bits, regenerated = np.full_like(dy, np.nan), np.full_like(dy, np.nan)
        backward(dy, from_bits, DROP_RATE, 0, 0, 0, mask)  # the key is not read with a mask
        backward(dy, regenerated, DROP_RATE, *DROP_KEY)
        return y, mask, from_bits, regenerated

    r1, r2 = at_one_and_two_threads(run)
    for name, a, b in zip(["y", "keep bits", "dx from the keep bits", "dx regenerated"], r1, r2):
        assert_same_bits(a, b, name)
    y, mask, from_bits, regenerated = r2
    assert_same_bits(from_bits, regenerated, "dx from bits vs regenerated")
    keep = ref_keep(DROP_N, DROP_RATE, *DROP_KEY)
    np.testing.assert_array_equal(unpack_keep_bits(mask, DROP_N), keep)
    assert not np.unpackbits(mask.view(np.uint8), bitorder="little")[DROP_N:].any()  # padding bits are 0
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    if kind == "dropout":
        scale = 1.0 / (1.0 - eff(DROP_RATE))
        want_y, want_dx = np.where(keep, x64 * scale, 0.0), np.where(keep, dy64 * scale, 0.0)
    else:
        a, b = alpha_coefficients(DROP_RATE)
        want_y, want_dx = np.where(keep, a * x64 + b, a * ALPHA_P + b), np.where(keep, a * dy64, 0.0)
    np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-6)  # test_dropout's tolerances
    np.testing.assert_allclose(from_bits, want_dx, rtol=1e-6, atol=0)


def test_dropout_mask_is_identical_at_one_and_two_threads():
    def run():
        mask = np.full(DROP_N, np.nan, np.float32)
        C.dropout_mask(mask, DROP_RATE, *DROP_KEY)
        return mask

    m1, m2 = at_one_and_two_threads(run)
    assert_same_bits(m1, m2)
    keep = ref_keep(DROP_N, DROP_RATE, *DROP_KEY)
    np.testing.assert_allclose(m2, np.where(keep, 1.0 / (1.0 - eff(DROP_RATE)), 0.0), rtol=1e-7, atol=0)


def test_dropout_layer_with_noise_shape_is_identical_at_one_and_two_threads():
    """noise_shape=(None, 1, F): the mask (batch, 1, F), above the threshold,
    comes from dropout_mask and is broadcast over axis 1."""
    f, seed = 1021, 11
    batch = rows_above(ELEMENTS, f)
    x = np.random.default_rng(26).normal(size=(batch, 3, f)).astype(np.float32)
    dy = np.random.default_rng(27).normal(size=x.shape).astype(np.float32)

    def run():
        layer = dc.Dropout(DROP_RATE, noise_shape=(None, 1, f), seed=seed)  # a fresh layer: call 0
        y = np.array(layer(x, training=True))
        return y, np.array(layer.backward(dy))

    (y1, dx1), (y2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    keep = ref_keep(batch * f, DROP_RATE, seed, _SEEDED_STREAM, 0).reshape(batch, 1, f)
    scale = 1.0 / (1.0 - eff(DROP_RATE))
    np.testing.assert_allclose(y2, np.where(keep, x.astype(np.float64) * scale, 0.0), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dx2, np.where(keep, dy.astype(np.float64) * scale, 0.0), rtol=1e-6, atol=0)


RRELU = (0.1, 0.4)


def test_rrelu_training_forward_and_backward_are_identical_at_one_and_two_threads():
    x, dy = drop_inputs(28)

    def run():
        y, dx = np.full_like(x, np.nan), np.full_like(x, np.nan)
        C.rrelu_forward(x, y, *RRELU, True, *DROP_KEY)
        C.rrelu_backward(x, dy, dx, *RRELU, True, *DROP_KEY)
        return y, dx

    (y1, dx1), (y2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    # The slope of element i: lower + (upper - lower) U, U the 24 high bits of its Philox word.
    u = (call_bits(DROP_N, *DROP_KEY) >> np.uint64(8)).astype(np.float64) / 2.0**24
    slope = RRELU[0] + (RRELU[1] - RRELU[0]) * u
    np.testing.assert_allclose(y2, np.where(x > 0, x, slope * x), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dx2, np.where(x > 0, dy, slope * dy), rtol=1e-6, atol=0)


def test_rrelu_inference_forward_and_backward_are_identical_at_one_and_two_threads():
    x, dy = drop_inputs(29)

    def run():
        y, dx = np.full_like(x, np.nan), np.full_like(x, np.nan)
        C.rrelu_forward(x, y, *RRELU, False)
        C.rrelu_backward(x, dy, dx, *RRELU, False)
        return y, dx

    (y1, dx1), (y2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    slope = 0.5 * (RRELU[0] + RRELU[1])
    np.testing.assert_allclose(y2, np.where(x > 0, x, slope * x.astype(np.float64)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dx2, np.where(x > 0, dy, slope * dy.astype(np.float64)), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------
# gather_rows
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,row", [(np.float32, (64,)), (np.int64, (3,))], ids=["float32x64", "int64x3"])
def test_gather_rows_is_identical_at_one_and_two_threads_above_the_threshold(dtype, row):
    row_bytes = np.dtype(dtype).itemsize * int(np.prod(row))
    n = rows_above(THRESHOLDS["kGatherParallelBytes"], row_bytes, extra=3)
    rng = np.random.default_rng(30)
    src = rng.integers(-2**31, 2**31, size=(2 * n,) + row).astype(dtype)
    idx = rng.integers(0, 2 * n, size=n).astype(np.int64)  # repeats allowed

    def run():
        dst = np.zeros((n,) + row, dtype)
        C.gather_rows(src, idx, dst)
        return dst

    d1, d2 = at_one_and_two_threads(run)
    assert_same_bits(d1, d2)
    np.testing.assert_array_equal(d2, src[idx])


# --------------------------------------------------------------------------
# merge layers' kernels and concatenate
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", range(6), ids=["add", "subtract", "multiply", "average", "maximum", "minimum"])
def test_merge_forward_and_backward_are_identical_at_one_and_two_threads_above_the_threshold(kind):
    n = ELEMENTS + 1000  # not a multiple of the 1024-element tile
    rng = np.random.default_rng(31)
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(2 if kind == 1 else 3)]
    xs[1][:5] = xs[0][:5]  # ties for maximum / minimum
    dy = rng.standard_normal(n).astype(np.float32)

    def run():
        y = np.empty(n, np.float32)
        C.merge_forward(kind, xs, y)
        dxs = [np.empty(n, np.float32) for _ in xs]
        C.merge_backward(kind, xs, dy, dxs)
        return [y] + dxs

    one, two = at_one_and_two_threads(run)
    for i, (a, b) in enumerate(zip(one, two)):
        assert_same_bits(a, b, "y" if i == 0 else f"dx[{i - 1}]")
    assert_same_bits(two[0], fold32(kind, xs), "y against the float32 fold")
    for got, want in zip(two[1:], merge_ref_backward(kind, xs, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [1, 2])
def test_concatenate_forward_and_backward_are_identical_at_one_and_two_threads_above_the_threshold(axis):
    widths = (3, 5)
    per_row = 4 * sum(widths) * 4  # bytes of one row of y: (rows, 4, 8) or (rows, 8, 4) floats
    rows = rows_above(THRESHOLDS["kGatherParallelBytes"], per_row, extra=3)
    rng = np.random.default_rng(32)
    xs = [rng.standard_normal((rows, w, 4) if axis == 1 else (rows, 4, w)).astype(np.float32) for w in widths]
    want = np.concatenate(xs, axis=axis)
    dy = rng.standard_normal(want.shape).astype(np.float32)

    def run():
        y = np.empty(want.shape, np.float32)
        C.concatenate_forward(xs, y, axis)
        dxs = [np.empty(x.shape, np.float32) for x in xs]
        C.concatenate_backward(xs, dy, dxs, axis)
        return [y] + dxs

    one, two = at_one_and_two_threads(run)
    for a, b in zip(one, two):
        assert_same_bits(a, b)
    np.testing.assert_array_equal(two[0], want)
    for d, part in zip(two[1:], np.split(dy, [widths[0]], axis=axis)):
        np.testing.assert_array_equal(d, part)


def test_repeat_forward_and_backward_are_identical_at_one_and_two_threads_above_the_threshold():
    n, cols = 5, 64
    rows = rows_above(ELEMENTS, n * cols, extra=3)
    rng = np.random.default_rng(33)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, n, cols)).astype(np.float32)

    def run():
        y = np.empty((rows, n, cols), np.float32)
        C.repeat_forward(x, y)
        dx = np.empty((rows, cols), np.float32)
        C.repeat_backward(dy, dx)
        return y, dx

    (y1, dx1), (y2, dx2) = at_one_and_two_threads(run)
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")
    np.testing.assert_array_equal(y2, np.repeat(x[:, None, :], n, axis=1))
    assert_same_bits(dx2, repeat_fold32(dy), "dx against the float32 fold")


# --------------------------------------------------------------------------
# Philox fills
# --------------------------------------------------------------------------
MASK32 = np.uint64(0xFFFFFFFF)


def philox_words(n, seed, stream):
    """Element i's 32-bit word: lane i % 4 of block i / 4 (ops/philox.h)."""
    b = np.arange((n + 3) // 4, dtype=np.uint64)
    s = np.uint64(stream)
    words = philox4x32_10(b & MASK32, b >> np.uint64(32), s & MASK32, s >> np.uint64(32), seed & 0xFFFFFFFF, seed >> 32)
    return np.stack(words, axis=1)  # (blocks, 4)


def box_muller64(a, b):
    """Two standard normals from two words, float64 (the kernel's mapping of words to (0, 1])."""
    u1 = ((a >> np.uint64(8)) + np.uint64(1)).astype(np.float64) / 2.0**24
    u2 = (b >> np.uint64(8)).astype(np.float64) / 2.0**24
    rad = np.sqrt(-2.0 * np.log(u1))
    return rad * np.cos(2.0 * np.pi * u2), rad * np.sin(2.0 * np.pi * u2)


def normal64(n, seed, stream):
    w = philox_words(n, seed, stream)
    z0, z1 = box_muller64(w[:, 0], w[:, 1])
    z2, z3 = box_muller64(w[:, 2], w[:, 3])
    return np.stack([z0, z1, z2, z3], axis=1).reshape(-1)[:n]


PHILOX_KEY = (0x0123_4567_89AB_CDEF, 0x0000_0009_0000_0005)  # seed, stream


def test_philox_uniform_is_identical_at_one_and_two_threads_above_the_threshold():
    n, low, high = ELEMENTS + 1003, -1.5, 2.5

    def run():
        out = np.full(n, np.nan, np.float32)
        C.philox_uniform(out, *PHILOX_KEY, low, high)
        return out

    u1, u2 = at_one_and_two_threads(run)
    assert_same_bits(u1, u2)
    unit = (philox_words(n, *PHILOX_KEY).reshape(-1)[:n] >> np.uint64(8)).astype(np.float64) / 2.0**24
    # Two float32 roundings (span * u, then + low) of values below 4 in magnitude.
    np.testing.assert_allclose(u2, low + (high - low) * unit, rtol=0, atol=2 * 4 * F32_EPS * 4)
    assert u2.min() >= low and u2.max() < high


# float32 Box-Muller: log, sqrt, cos and sin within a few ulps, and 2 pi u
# rounded (absolute 2^-22 in the angle, times the radius <= 5.6).
NORMAL_ATOL = 1e-5


def test_philox_normal_is_identical_at_one_and_two_threads_above_its_threshold():
    n, mean, std = THRESHOLDS["kNormalParallelThreshold"] + 1003, 0.5, 2.0

    def run():
        out = np.full(n, np.nan, np.float32)
        C.philox_normal(out, *PHILOX_KEY, mean, std, False)
        return out

    z1, z2 = at_one_and_two_threads(run)
    assert_same_bits(z1, z2)
    np.testing.assert_allclose(z2, mean + std * normal64(n, *PHILOX_KEY), rtol=0, atol=std * NORMAL_ATOL)


def test_philox_truncated_normal_is_identical_at_one_and_two_threads_above_its_threshold():
    """Draws beyond 2 std are redrawn from counters keyed by (element,
    attempt): any thread count redraws the same elements the same way."""
    n = THRESHOLDS["kNormalParallelThreshold"] + 1003
    seed, stream = PHILOX_KEY

    def run():
        plain, trunc = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        C.philox_normal(plain, seed, stream, 0.0, 1.0, False)
        C.philox_normal(trunc, seed, stream, 0.0, 1.0, True)
        return plain, trunc

    (p1, t1), (p2, t2) = at_one_and_two_threads(run)
    assert_same_bits(t1, t2)
    assert np.abs(t2).max() <= 2.0
    inside = np.abs(p2) <= 2.0  # the kernel's own test, in float32
    assert_same_bits(t2[inside], p2[inside], "in-range draws kept")
    # First redraw of each element beyond 2: counter (i, stream ^ (2^31 | 1) << 32), float64.
    i = np.flatnonzero(~inside).astype(np.uint64)
    q = philox4x32_10(i & MASK32, i >> np.uint64(32), np.uint64(stream) & MASK32,
                      (np.uint64(stream) >> np.uint64(32)) ^ np.uint64(0x80000001), seed & 0xFFFFFFFF, seed >> 32)
    r0, r1 = box_muller64(q[0], q[1])
    first = np.where(np.abs(r0) <= 2.0, r0, r1)
    # Compare where the first attempt settles it, away from the float32/float64 boundary at 2.
    far0, far1 = np.abs(np.abs(r0) - 2.0) > 1e-4, np.abs(np.abs(r1) - 2.0) > 1e-4
    settled = far0 & ((np.abs(r0) < 2.0) | (far1 & (np.abs(r1) < 2.0)))
    assert settled.mean() > 0.9
    np.testing.assert_allclose(t2[~inside][settled], first[settled], rtol=0, atol=NORMAL_ATOL)


# --------------------------------------------------------------------------
# a whole fit of the README's remedies model
# --------------------------------------------------------------------------
FIT_BATCH = 1024
FIT_HIDDEN = -(-ELEMENTS // FIT_BATCH)  # batch x hidden >= kParallelThreshold: BN, ReLU, Dropout go parallel
FIT_FEATURES = 128


def remedies_fit(threads, global_clipnorm=1.0):
    dc.set_num_threads(threads)
    dc.set_random_seed(7)
    rng = np.random.default_rng(31)
    x = rng.normal(size=(4 * FIT_BATCH, FIT_FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(FIT_FEATURES, 10)), axis=1).astype(np.int32)
    model = dc.Sequential([
        dc.Input((FIT_FEATURES,)),
        dc.layers.Dense(FIT_HIDDEN, use_bias=False, kernel_initializer="he_normal",
                        kernel_regularizer=dc.regularizers.l2(1e-4)),
        dc.layers.BatchNormalization(),
        dc.layers.Activation("relu"),
        dc.layers.Dropout(0.2),
        dc.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  optimizer=dc.optimizers.Nadam(learning_rate=1e-3, global_clipnorm=global_clipnorm))
    history = model.fit(x, y, batch_size=FIT_BATCH, epochs=2, verbose=0, seed=3)
    return model, history.history


def relative_distance(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(a.astype(np.float64)))


# Per weight tensor, relative (Frobenius) distance allowed between 1 and 2 threads.
FIT_WEIGHT_RTOL = 1e-3


def test_remedies_model_fit_agrees_at_one_and_two_threads():
    """What depends on the thread count in this fit: OpenBLAS's GEMM summation
    order (not kept across thread counts on every shape: 4096x784x300 differs
    in almost every element). Everything else (activations, dropout masks,
    BatchNorm's sums, the loss and its gradient, the batch gather, the
    optimizer's norms, penalty and update) is the same bits at any thread
    count. The GEMMs' differences are float32 rounding (relative ~1e-7);
    Nadam divides by the root of the second moment, so a weight whose gradient
    is near zero can still move by up to lr per step either way: up to 2.3e-5
    relative per tensor after 4 steps of a 784-300 model whose GEMMs differ.
    Allowed: 1e-3 per tensor. Here, on the 2-core x86 machine, the weights
    and the losses came out the same bits, while training without the global
    clip ends 3e-3 to 0.13 away."""
    model1, h1 = remedies_fit(1)
    model2, h2 = remedies_fit(2)
    n_params = sum(v.value.size for v in model1.trainable_weights)
    assert n_params > THRESHOLDS["kOptimizerParallelThreshold"]
    # The loss goes through the GEMMs: rounding-level differences where OpenBLAS sums in another order.
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-6)
    np.testing.assert_allclose(h2["accuracy"], h1["accuracy"], rtol=0, atol=2 / (4 * FIT_BATCH))  # 2 flips
    for w1, w2 in zip(model1.get_weights(), model2.get_weights()):
        assert relative_distance(w1, w2) <= FIT_WEIGHT_RTOL, w1.shape

    # The global clip is active here: without it training ends far from the clipped run.
    unclipped, _ = remedies_fit(1, global_clipnorm=None)
    gaps = [relative_distance(a, b) for a, b in zip(model1.get_weights(), unclipped.get_weights())]
    assert max(gaps) > 10 * FIT_WEIGHT_RTOL


@pytest.mark.parametrize("a,b", [(1.0, 1.0), (0.0, 0.5), (-2.0, 0.25)])
def test_axpby_same_bits_at_one_and_two_threads(a, b):
    rng = np.random.default_rng(11)
    n = ELEMENTS + 37
    x, y = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)

    def run():
        out = y.copy()
        C.axpby(a, x, b, out)
        return out

    one, two = at_one_and_two_threads(run)
    assert_same_bits(one, two, "axpby")
    np.testing.assert_allclose(one, a * x.astype(np.float64) + b * y, rtol=1e-6, atol=1e-6)
