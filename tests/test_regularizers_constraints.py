"""l1/l2 weight penalties (fused into the optimizer step) and MaxNorm."""
import numpy as np
import pytest

import deepcore as dc
from deepcore import constraints, regularizers


def _softmax_ce(z, y):
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y]).mean(), p


def _data(n=16, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n).astype(np.int32)


@pytest.mark.parametrize("reg", [regularizers.l2(0.05), regularizers.l1(0.02), regularizers.l1_l2(0.01, 0.03)])
def test_penalty_in_loss_and_gradient(reg):
    x, y = _data()
    model = dc.Sequential([dc.Input((5,)), dc.Dense(3, activation="softmax", kernel_regularizer=reg,
                                                    bias_regularizer=regularizers.l2(0.1))])
    model.compile(optimizer=dc.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    W = model.layers[0].kernel.value.astype(np.float64).copy()
    W += np.random.default_rng(1).normal(scale=0.5, size=W.shape)  # non-trivial weights
    b = np.linspace(-0.3, 0.4, 3)
    model.layers[0].set_weights([W.astype(np.float32), b.astype(np.float32)])
    W, b = model.layers[0].kernel.value.astype(np.float64), model.layers[0].bias.value.astype(np.float64)

    data_loss, p = _softmax_ce(x.astype(np.float64) @ W + b, y)
    penalty = reg.l1 * np.abs(W).sum() + reg.l2 * (W ** 2).sum() + 0.1 * (b ** 2).sum()
    assert model.evaluate(x, y, verbose=0) == pytest.approx(data_loss + penalty, rel=1e-5)

    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    dW = x.T.astype(np.float64) @ dz + reg.l1 * np.sign(W) + 2 * reg.l2 * W
    db = dz.sum(0) + 2 * 0.1 * b
    loss = model.train_on_batch(x, y)
    assert loss == pytest.approx(data_loss + penalty, rel=1e-5)
    np.testing.assert_allclose(model.layers[0].kernel.value, W - 0.5 * dW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].bias.value, b - 0.5 * db, rtol=1e-5, atol=1e-6)


def test_l1_drives_weights_to_zero_more_than_no_penalty():
    x, y = _data(n=256, d=20)
    y = (x[:, 0] > 0).astype(np.int32)  # only feature 0 matters

    def train(reg):
        dc.set_random_seed(0)
        m = dc.Sequential([dc.Input((20,)), dc.Dense(2, activation="softmax", kernel_regularizer=reg)])
        m.compile(optimizer=dc.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        m.fit(x, y, epochs=30, verbose=0, seed=0)
        return np.abs(m.layers[0].kernel.value[1:]).mean()

    assert train(regularizers.l1(0.01)) < 0.5 * train(None)


def test_regularizer_lookup_and_validation():
    assert isinstance(regularizers.get("l2"), regularizers.L2)
    assert regularizers.get("l1_l2").l1 == 0.01 and regularizers.get("l1_l2").l2 == 0.01
    assert regularizers.L1L2().l1 == 0.0  # Keras's class defaults
    with pytest.raises(ValueError, match="Unknown regularizer"):
        dc.Dense(3, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        regularizers.l2(-1.0)
    with pytest.raises(ValueError, match="Unknown regularizer"):
        dc.Dense(3, kernel_regularizer=lambda w: 0.0)


# ------------------------------------------------------------------ MaxNorm
def _ref_max_norm(w, axes, r):
    w = w.astype(np.float64)
    n = np.sqrt((w ** 2).sum(axis=tuple(axes), keepdims=True))
    return np.where(n > r, w * r / np.where(n > 0, n, 1), w)


@pytest.mark.parametrize("shape,axis", [((30, 7), 0), ((30, 7), 1), ((7,), 0), ((3, 4, 5, 6), [0, 1, 2]),
                                        ((4, 5, 6), [1, 2]), ((5, 6), -1)])
def test_max_norm_matches_reference(shape, axis):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    c = constraints.MaxNorm(1.5, axis=axis)
    axes = [a % len(shape) for a in (axis if isinstance(axis, list) else [axis])]
    ref = _ref_max_norm(w, axes, 1.5)
    out = w.copy()
    c.apply(out)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    assert not np.allclose(out, w)  # the limit was hit somewhere


def test_max_norm_applied_after_every_update():
    x, y = _data(n=128, d=10)
    m = dc.Sequential([dc.Input((10,)),
                       dc.Dense(16, activation="relu", kernel_constraint=constraints.MaxNorm(0.5)),
                       dc.Dense(3, activation="softmax")])
    m.compile(optimizer=dc.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    seen = []
    cb = dc.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
        np.linalg.norm(m.layers[0].kernel.value, axis=0).max()))
    m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    assert len(seen) == 24 and max(seen) <= 0.5 * (1 + 1e-6)
    assert np.linalg.norm(m.layers[1].kernel.value, axis=0).max() > 0.5  # unconstrained layer is free


def test_max_norm_bad_input():
    with pytest.raises(ValueError, match="max_value must be a finite number >= 0"):
        constraints.MaxNorm(-1)
    with pytest.raises(ValueError, match="axis 2 does not exist"):
        dc.Sequential([dc.Input((4,)), dc.Dense(3, kernel_constraint=constraints.MaxNorm(1, axis=2))])
    with pytest.raises(ValueError, match="consecutive"):
        constraints.MaxNorm(1, axis=[0, 2])(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="Unknown constraint"):
        dc.Dense(3, kernel_constraint="unit_norm")
    with pytest.raises(TypeError, match="float32"):
        dc.backend.ops().max_norm(np.ones((3, 3)), 0, 0, 1.0)
    with pytest.raises(ValueError, match="do not exist"):
        dc.backend.ops().max_norm(np.ones((3, 3), np.float32), 0, 2, 1.0)


def test_regularizer_and_constraint_configs_round_trip():
    d = dc.Dense(4, kernel_regularizer=regularizers.l1_l2(0.01, 0.02), bias_regularizer=regularizers.l2(0.05),
                 kernel_constraint=constraints.MaxNorm(3, axis=0))
    again = dc.Dense.from_config(d.get_config())
    assert (again.kernel_regularizer.l1, again.kernel_regularizer.l2) == (0.01, 0.02)
    assert isinstance(again.bias_regularizer, regularizers.L2) and again.bias_regularizer.l2 == 0.05
    assert isinstance(again.kernel_constraint, constraints.MaxNorm) and again.kernel_constraint.max_value == 3
    assert regularizers.get(regularizers.serialize(regularizers.l1(0.3))).l1 == 0.3
