"""Loss kernels (deepcore._core.loss_forward_backward, sparse_categorical_crossentropy)
and the deepcore.losses classes.

Values are compared with float64 NumPy references written here (Keras
"sum_over_batch_size": the mean over all elements for elementwise losses, the
mean over rows for the cross-entropies); gradients with central finite
differences of those references in float64. Where PyTorch is importable,
values and gradients are also compared with torch.nn.functional.
"""

import numpy as np
import pytest

import deepcore  # noqa: F401  (loads OpenBLAS before the extension)
from deepcore import _core as C
from deepcore import losses
from finite_differences import central_difference

MSE, MAE, HUBER, BCE, BCE_LOGITS, CCE, CCE_LOGITS = range(7)

# The kernel clips probabilities in float32, as Keras does: 1 - 1e-7 rounds to
# 1 - 2^-23 in float32.
P_LO = float(np.float32(1e-7))
P_HI = float(np.float32(1.0) - np.float32(1e-7))


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------
def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def ref_loss(kind, p, t, param=1.0):
    p = np.asarray(p, np.float64)
    t = np.asarray(t, np.float64)
    if kind == MSE:
        return np.mean((p - t) ** 2)
    if kind == MAE:
        return np.mean(np.abs(p - t))
    if kind == HUBER:
        e = np.abs(p - t)
        return np.mean(np.where(e <= param, 0.5 * e * e, param * (e - 0.5 * param)))
    if kind == BCE:
        pc = np.clip(p, P_LO, P_HI)
        return np.mean(-(t * np.log(pc) + (1 - t) * np.log(1 - pc)))
    if kind == BCE_LOGITS:
        return np.mean(np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p))))
    if kind == CCE:
        pc = np.clip(_rows(p), P_LO, P_HI)
        return np.mean(-(_rows(t) * np.log(pc)).sum(axis=1))
    if kind == CCE_LOGITS:
        z, tt = _rows(p), _rows(t)
        return np.mean((tt * (_logsumexp(z)[:, None] - z)).sum(axis=1))
    raise AssertionError(kind)


def ref_sparse(p, labels, from_logits):
    p = np.asarray(p, np.float64)
    rows = np.arange(p.shape[0])
    if from_logits:
        return np.mean(_logsumexp(p) - p[rows, labels])
    return np.mean(-np.log(np.clip(p[rows, labels], P_LO, P_HI)))


fd_grad = central_difference


def k_loss(kind, p, t, param=1.0, with_grad=True):
    p = np.ascontiguousarray(p, np.float32)
    t = np.ascontiguousarray(t, np.float32)
    g = np.full_like(p, np.nan) if with_grad else None
    v = C.loss_forward_backward(kind, p, t, g, param)
    return v, g


def assert_grad_close(got, ref, rtol=2e-4):
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-5 * scale)


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------
def regression_data(shape=(6, 4), seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=shape).astype(np.float32)
    e = rng.normal(size=shape) * 1.5
    # Keep |e| away from the kinks of MAE (0) and Huber (delta in {0.5, 1, 2}).
    for k in (0.0, 0.5, 1.0, 2.0):
        e = np.where(np.abs(np.abs(e) - k) < 0.02, e + 0.1, e)
    p = (t + e).astype(np.float32)
    return p, t


def binary_data(shape=(6, 4), seed=1, soft=False):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, size=shape).astype(np.float32)
    t = (rng.uniform(size=shape) if soft else rng.integers(0, 2, size=shape)).astype(np.float32)
    return p, t


def categorical_data(rows=6, cols=5, seed=2, soft=False, logits=False):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(rows, cols))
    if soft:
        t = rng.uniform(size=(rows, cols))
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = np.eye(cols)[rng.integers(0, cols, size=rows)]
    p = z if logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.astype(np.float32), t.astype(np.float32)


CASES = [
    pytest.param(MSE, 1.0, regression_data, id="mse"),
    pytest.param(MAE, 1.0, regression_data, id="mae"),
    pytest.param(HUBER, 1.0, regression_data, id="huber-1.0"),
    pytest.param(HUBER, 0.5, regression_data, id="huber-0.5"),
    pytest.param(HUBER, 2.0, regression_data, id="huber-2.0"),
    pytest.param(BCE, 0.0, binary_data, id="bce"),
    pytest.param(BCE, 0.0, lambda: binary_data(soft=True), id="bce-soft-targets"),
    pytest.param(BCE_LOGITS, 0.0, lambda: (regression_data()[0] * 3, binary_data()[1]), id="bce-logits"),
    pytest.param(BCE_LOGITS, 0.0, lambda: (regression_data()[0], binary_data(soft=True)[1]),
                 id="bce-logits-soft-targets"),
    pytest.param(CCE, 0.0, categorical_data, id="cce"),
    pytest.param(CCE, 0.0, lambda: categorical_data(soft=True), id="cce-soft-targets"),
    pytest.param(CCE_LOGITS, 0.0, lambda: categorical_data(logits=True), id="cce-logits"),
    pytest.param(CCE_LOGITS, 0.0, lambda: categorical_data(logits=True, soft=True), id="cce-logits-soft-targets"),
    # targets whose rows do not sum to 1: the logits gradient is softmax * sum(t) - t
    pytest.param(CCE_LOGITS, 0.0, lambda: (categorical_data(logits=True)[0], binary_data((6, 5), soft=True)[1]),
                 id="cce-logits-unnormalized-targets"),
]


# --------------------------------------------------------------------------
# loss_forward_backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind,param,data", CASES)
def test_loss_value_matches_float64_reference(kind, param, data):
    p, t = data()
    v, _ = k_loss(kind, p, t, param)
    assert isinstance(v, float)
    assert v == pytest.approx(ref_loss(kind, p, t, param), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind,param,data", CASES)
def test_loss_gradient_matches_finite_differences_of_reference(kind, param, data):
    p, t = data()
    _, g = k_loss(kind, p, t, param)
    t64 = t.astype(np.float64)
    fd = fd_grad(lambda q: ref_loss(kind, q, t64, param), p)
    assert np.all(np.isfinite(g))
    assert_grad_close(g, fd)


@pytest.mark.parametrize("kind,param,data", CASES)
def test_loss_value_is_the_same_without_a_gradient_buffer(kind, param, data):
    p, t = data()
    v_with, _ = k_loss(kind, p, t, param)
    v_without, g = k_loss(kind, p, t, param, with_grad=False)
    assert g is None
    assert v_with == v_without


@pytest.mark.parametrize("kind,data", [
    pytest.param(MSE, lambda: regression_data((2, 3, 4)), id="mse"),
    pytest.param(HUBER, lambda: regression_data((2, 3, 4)), id="huber"),
    pytest.param(BCE_LOGITS, lambda: (regression_data((2, 3, 4))[0], binary_data((2, 3, 4))[1]), id="bce-logits"),
    pytest.param(CCE_LOGITS, lambda: tuple(a.reshape(2, 3, 5) for a in categorical_data(logits=True)),
                 id="cce-logits"),
    pytest.param(CCE, lambda: tuple(a.reshape(3, 2, 5) for a in categorical_data()), id="cce"),
])
def test_loss_of_3d_input_reduces_over_all_rows(kind, data):
    p, t = data()
    v, g = k_loss(kind, p, t, 1.0)
    assert v == pytest.approx(ref_loss(kind, p, t, 1.0), rel=1e-5)
    fd = fd_grad(lambda q: ref_loss(kind, q, t.astype(np.float64), 1.0), p)
    assert g.shape == p.shape
    assert_grad_close(g, fd)


def test_mse_of_1d_input_is_mean_over_elements():
    p = np.array([1.0, 2.0, 4.0], np.float32)
    t = np.array([0.0, 2.0, 1.0], np.float32)
    v, g = k_loss(MSE, p, t)
    assert v == pytest.approx(10.0 / 3.0, rel=1e-7)
    np.testing.assert_allclose(g, [2.0 / 3.0, 0.0, 2.0], rtol=1e-6)


def test_mae_gradient_is_zero_where_prediction_equals_target():
    p = np.array([[1.0, 2.0, 3.0, -1.0]], np.float32)
    t = np.array([[1.0, 0.0, 5.0, -1.0]], np.float32)
    v, g = k_loss(MAE, p, t)
    assert v == pytest.approx(1.0)
    np.testing.assert_allclose(g, [[0.0, 0.25, -0.25, 0.0]], rtol=1e-7)


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    delta = 1.5
    t = np.zeros((1, 4), np.float32)
    p = np.array([[0.5, -1.0, 3.0, -10.0]], np.float32)
    v, g = k_loss(HUBER, p, t, delta)
    expected = np.array([0.125, 0.5, delta * (3.0 - 0.75), delta * (10.0 - 0.75)])
    assert v == pytest.approx(expected.mean(), rel=1e-6)
    np.testing.assert_allclose(g, [[0.5 / 4, -1.0 / 4, delta / 4, -delta / 4]], rtol=1e-6)


def test_bce_clips_probabilities_to_keep_the_loss_finite():
    p = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
    t = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
    v, g = k_loss(BCE, p, t)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    expected = (-np.log(P_LO) - np.log(1 - P_HI) - np.log(1 - P_LO) - np.log(P_HI)) / 4
    assert v == pytest.approx(expected, rel=1e-5)
    assert v == pytest.approx(ref_loss(BCE, p, t), rel=1e-6)


def test_cce_clips_zero_probabilities():
    p = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    v, g = k_loss(CCE, p, t)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    assert v == pytest.approx((-np.log(P_LO) - np.log(0.5)) / 2, rel=1e-5)


@pytest.mark.parametrize("kind", [BCE_LOGITS, CCE_LOGITS])
def test_logit_losses_are_stable_for_huge_logits(kind):
    z = np.array([[1000.0, -1000.0, 90.0, -90.0], [50.0, 0.0, -3e38, 3e38]], np.float32)
    t = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]], np.float32)
    v, g = k_loss(kind, z, t)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    if kind == BCE_LOGITS:  # elementwise references; the 3e38 terms are huge but finite in float64
        assert v == pytest.approx(ref_loss(kind, z, t), rel=1e-6)
    else:
        assert v == pytest.approx(ref_loss(kind, z[:1], t[:1]) / 2 + 0.0, rel=1e-6)


def test_cce_logits_gradient_rows_sum_to_zero_for_one_hot_targets():
    z, t = categorical_data(rows=8, cols=6, logits=True, seed=5)
    _, g = k_loss(CCE_LOGITS, z, t)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-7)
    # and equals (softmax - onehot) / rows
    sm = np.exp(z - z.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    np.testing.assert_allclose(g, (sm - t) / 8, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------
# sparse_categorical_crossentropy
# --------------------------------------------------------------------------
def sparse_data(rows=7, cols=5, seed=3, logits=True):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(rows, cols))
    labels = rng.integers(0, cols, size=rows).astype(np.int32)
    p = z if logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.astype(np.float32), labels


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_cce_value_and_accuracy_match_reference(from_logits):
    p, labels = sparse_data(logits=from_logits)
    g = np.full_like(p, np.nan)
    loss, n_correct = C.sparse_categorical_crossentropy(p, labels, g, from_logits)
    assert loss == pytest.approx(ref_sparse(p, labels, from_logits), rel=1e-5)
    assert isinstance(n_correct, int)
    assert n_correct == int((p.argmax(axis=1) == labels).sum())


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_cce_gradient_matches_finite_differences_of_reference(from_logits):
    p, labels = sparse_data(logits=from_logits, seed=4)
    g = np.full_like(p, np.nan)
    C.sparse_categorical_crossentropy(p, labels, g, from_logits)
    fd = fd_grad(lambda q: ref_sparse(q, labels, from_logits), p)
    assert_grad_close(g, fd)
    if not from_logits:  # only the label column is nonzero
        mask = np.zeros(p.shape, bool)
        mask[np.arange(p.shape[0]), labels] = True
        assert np.all(g[~mask] == 0.0)


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_cce_equals_dense_cce_with_one_hot_targets(from_logits):
    p, labels = sparse_data(rows=9, cols=4, seed=6, logits=from_logits)
    onehot = np.eye(4, dtype=np.float32)[labels]
    gs = np.empty_like(p)
    gd = np.empty_like(p)
    loss_s, _ = C.sparse_categorical_crossentropy(p, labels, gs, from_logits)
    loss_d = C.loss_forward_backward(CCE_LOGITS if from_logits else CCE, p, onehot, gd, 0.0)
    assert loss_s == pytest.approx(loss_d, rel=1e-6)
    np.testing.assert_allclose(gs, gd, rtol=1e-5, atol=1e-8)


def test_sparse_cce_counts_correct_rows_exactly():
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]], np.float32)
    labels = np.array([1, 2, 2, 0], np.int32)
    loss, n_correct = C.sparse_categorical_crossentropy(p, labels, None, False)
    assert n_correct == 2
    assert loss == pytest.approx(-np.mean(np.log([0.7, 0.2, 0.6, 0.3])), rel=1e-6)


def test_sparse_cce_is_stable_for_huge_logits():
    z = np.array([[1000.0, -1000.0, 0.0], [-3e38, 3e38, 0.0]], np.float32)
    labels = np.array([1, 1], np.int32)
    g = np.empty_like(z)
    loss, n_correct = C.sparse_categorical_crossentropy(z, labels, g, True)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert loss == pytest.approx(1000.0, rel=1e-6)  # row 0: 2000, row 1: 0
    assert n_correct == 1
    np.testing.assert_allclose(g, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)


@pytest.mark.parametrize("bad", [5, -1, 1000])
def test_sparse_cce_label_out_of_range_raises_value_error_and_leaves_grad(bad):
    p, labels = sparse_data(rows=4, cols=5)
    labels[2] = bad
    g = np.full_like(p, 7.0)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 5\)") as ei:
        C.sparse_categorical_crossentropy(p, labels, g, True)
    assert str(bad) in str(ei.value)
    np.testing.assert_array_equal(g, 7.0)  # validated before touching anything


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty_input_raises_value_error(shape):
    p = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="empty"):
        C.loss_forward_backward(MSE, p, p.copy(), None, 1.0)
    with pytest.raises(ValueError, match="empty"):
        C.sparse_categorical_crossentropy(p, np.zeros(shape[0], np.int32), None, True)


def test_empty_1d_input_raises_value_error():
    p = np.zeros(0, np.float32)
    for kind in range(7):
        with pytest.raises(ValueError, match="empty"):
            C.loss_forward_backward(kind, p, p.copy(), None, 1.0)


# --------------------------------------------------------------------------
# deepcore.losses classes
# --------------------------------------------------------------------------
def test_loss_classes_match_references():
    p, t = regression_data(seed=10)
    assert losses.MeanSquaredError()(t, p) == pytest.approx(ref_loss(MSE, p, t), rel=1e-6)
    assert losses.MeanAbsoluteError()(t, p) == pytest.approx(ref_loss(MAE, p, t), rel=1e-6)
    assert losses.Huber()(t, p) == pytest.approx(ref_loss(HUBER, p, t, 1.0), rel=1e-6)
    assert losses.Huber(delta=0.5)(t, p) == pytest.approx(ref_loss(HUBER, p, t, 0.5), rel=1e-6)
    assert losses.mean_squared_error(t, p) == pytest.approx(ref_loss(MSE, p, t), rel=1e-6)
    assert losses.mean_absolute_error(t, p) == pytest.approx(ref_loss(MAE, p, t), rel=1e-6)

    pb, tb = binary_data(seed=11)
    assert losses.BinaryCrossentropy()(tb, pb) == pytest.approx(ref_loss(BCE, pb, tb), rel=1e-6)
    assert losses.BinaryCrossentropy(from_logits=True)(tb, p) == pytest.approx(ref_loss(BCE_LOGITS, p, tb), rel=1e-6)

    pc, tc = categorical_data(seed=12)
    zc, _ = categorical_data(seed=12, logits=True)
    assert losses.CategoricalCrossentropy()(tc, pc) == pytest.approx(ref_loss(CCE, pc, tc), rel=1e-5)
    assert losses.CategoricalCrossentropy(from_logits=True)(tc, zc) == pytest.approx(
        ref_loss(CCE_LOGITS, zc, tc), rel=1e-5)

    labels = tc.argmax(axis=1)
    assert losses.SparseCategoricalCrossentropy()(labels, pc) == pytest.approx(
        ref_sparse(pc, labels, False), rel=1e-5)
    assert losses.SparseCategoricalCrossentropy(from_logits=True)(labels, zc) == pytest.approx(
        ref_sparse(zc, labels, True), rel=1e-5)
    assert losses.sparse_categorical_crossentropy(labels.astype(np.int64), zc, from_logits=True) == pytest.approx(
        ref_sparse(zc, labels, True), rel=1e-5)


def test_loss_classes_accept_float_and_column_labels():
    pc, tc = categorical_data(seed=13)
    labels = tc.argmax(axis=1)
    expected = ref_sparse(pc, labels, False)
    scce = losses.SparseCategoricalCrossentropy()
    assert scce(labels.astype(np.float64), pc) == pytest.approx(expected, rel=1e-5)
    assert scce(labels.reshape(-1, 1), pc) == pytest.approx(expected, rel=1e-5)


def test_sparse_loss_class_rejects_labels_out_of_range():
    pc, _ = categorical_data(rows=3, cols=5)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 5, 1]), pc)
    with pytest.raises(ValueError, match="whole numbers"):
        losses.SparseCategoricalCrossentropy()(np.array([0.0, 1.5, 1.0]), pc)


def test_loss_classes_validate_arguments():
    with pytest.raises(ValueError, match="delta"):
        losses.Huber(delta=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.BinaryCrossentropy()(np.array([[2.0]]), np.array([[0.5]]))
    with pytest.raises(ValueError, match="mse"):
        losses.get("nope")
    assert isinstance(losses.get("mse"), losses.MeanSquaredError)
    assert isinstance(losses.get("huber"), losses.Huber)


# --------------------------------------------------------------------------
# PyTorch cross-checks (skipped without torch)
# --------------------------------------------------------------------------
def _torch_value_and_grad(fn, p, *args, **kwargs):
    torch = pytest.importorskip("torch")
    pt = torch.tensor(p.astype(np.float64), requires_grad=True)
    out = fn(pt, *args, **kwargs)
    out.backward()
    return float(out.detach()), pt.grad.numpy()


def test_sparse_softmax_crossentropy_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z, labels = sparse_data(rows=16, cols=10, seed=20)
    g = np.empty_like(z)
    loss, _ = C.sparse_categorical_crossentropy(z, labels, g, True)
    tv, tg = _torch_value_and_grad(F.cross_entropy, z, torch.tensor(labels.astype(np.int64)))
    assert loss == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-8)


def test_categorical_crossentropy_from_logits_matches_torch_soft_targets():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z, t = categorical_data(rows=12, cols=7, seed=21, logits=True, soft=True)
    v, g = k_loss(CCE_LOGITS, z, t)
    tv, tg = _torch_value_and_grad(F.cross_entropy, z, torch.tensor(t.astype(np.float64)))
    assert v == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-8)


def test_bce_with_logits_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(22)
    z = (rng.normal(size=(8, 3)) * 4).astype(np.float32)
    t = rng.uniform(size=(8, 3)).astype(np.float32)
    v, g = k_loss(BCE_LOGITS, z, t)
    tv, tg = _torch_value_and_grad(F.binary_cross_entropy_with_logits, z, torch.tensor(t.astype(np.float64)))
    assert v == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-8)


def test_bce_on_probabilities_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, t = binary_data((8, 3), seed=23, soft=True)
    v, g = k_loss(BCE, p, t)
    tv, tg = _torch_value_and_grad(F.binary_cross_entropy, p, torch.tensor(t.astype(np.float64)))
    assert v == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_matches_torch(delta):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, t = regression_data((9, 4), seed=24)
    v, g = k_loss(HUBER, p, t, delta)
    tv, tg = _torch_value_and_grad(F.huber_loss, p, torch.tensor(t.astype(np.float64)), delta=delta)
    assert v == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind,name", [(MSE, "mse_loss"), (MAE, "l1_loss")])
def test_mse_and_mae_match_torch(kind, name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, t = regression_data((5, 6), seed=25)
    v, g = k_loss(kind, p, t)
    tv, tg = _torch_value_and_grad(getattr(F, name), p, torch.tensor(t.astype(np.float64)))
    assert v == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-8)
