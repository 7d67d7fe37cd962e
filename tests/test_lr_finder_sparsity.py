"""lr_find on Fashion-MNIST, and the routes to sparse models."""
import functools

import numpy as np
import pytest

import deepcore as dc
from deepcore import sparsity


@functools.lru_cache(maxsize=1)
def _train_images():
    try:
        (x, y), _ = dc.datasets.load_fashion_mnist()
    except dc.datasets.DatasetNotFoundError:
        return None
    return x, y


def _fashion(n):
    data = _train_images()
    if data is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    x, y = data
    return (x[:n].reshape(n, -1) / np.float32(255)).astype(np.float32), y[:n].astype(np.int32)


def _mlp(opt):
    dc.set_random_seed(0)
    m = dc.Sequential([dc.Input((784,)), dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
                       dc.Dense(10, activation="softmax")])
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    return m


@pytest.mark.parametrize("opt", [lambda: dc.optimizers.SGD(momentum=0.9), lambda: dc.optimizers.Nadam()])
def test_lr_find_suggests_a_finite_rate_and_restores_the_model(opt):
    x, y = _fashion(4000)
    model = _mlp(opt())
    model.fit(x[:512], y[:512], epochs=1, verbose=0)  # the optimizer has state to protect
    weights = model.get_weights()
    state = model.optimizer.get_state()
    config = model.optimizer.get_config()
    result = dc.lr_find(model, x, y, min_lr=1e-5, max_lr=10, steps=200)
    assert np.isfinite(result.suggestion) and 1e-5 <= result.suggestion <= 10
    assert result.min_loss_lr > 1e-4  # the loss keeps improving well past the smallest rates
    # The loss fell, then rose: the curve has the shape the finder relies on.
    sm = result.smoothed_losses
    assert sm.min() < sm[0] - 0.05
    assert sm[-1] > 1.5 * sm.min()
    assert result.suggestion < result.min_loss_lr
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    after = model.optimizer.get_state()
    assert sorted(after) == sorted(state)
    for k in state:
        np.testing.assert_array_equal(state[k], after[k])
    assert model.optimizer.get_config() == config


def test_lr_find_on_a_fresh_optimizer_leaves_it_fresh():
    x, y = _fashion(1000)
    model = _mlp(dc.optimizers.Adam())
    dc.lr_find(model, x, y, steps=30)
    assert model.optimizer.iterations == 0
    assert all(not s.any() for s in model.optimizer._slots.values())


def test_lr_find_bad_input():
    x, y = _fashion(100)
    model = _mlp("sgd")
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        dc.lr_find(model, x, y, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        dc.lr_find(model, x, y, steps=1)
    with pytest.raises(RuntimeError, match="compile"):
        dc.lr_find(dc.Sequential([dc.Input((784,)), dc.Dense(2)]), x, y)


def _zero_fraction(*arrays):
    """Fraction of exact zeros over the given arrays, counted here."""
    return sum(int(np.count_nonzero(a == 0)) for a in arrays) / sum(a.size for a in arrays)


def test_prune_zeroes_small_weights_and_reports_the_fraction():
    model = _mlp("sgd")
    k0 = model.layers[0].kernel.value.copy()
    k1 = model.layers[1].kernel.value.copy()
    k1[:3] = 0.0  # already zero: counted as zero, not as pruned now
    model.layers[1].kernel.assign(k1)
    b1 = model.layers[1].bias.value
    b1[...] = 1e-4  # tiny biases are kept unless include_bias
    thr = float(np.quantile(np.abs(k0), 0.3))
    report = sparsity.prune(model, thr)
    want0 = np.where(np.abs(k0) < thr, 0, k0)
    want1 = np.where(np.abs(k1) < thr, 0, k1)
    np.testing.assert_array_equal(model.layers[0].kernel.value, want0)
    np.testing.assert_array_equal(model.layers[1].kernel.value, want1)
    newly = int(np.count_nonzero((np.abs(k0) < thr) & (k0 != 0)) + np.count_nonzero((np.abs(k1) < thr) & (k1 != 0)))
    assert report["pruned"] == newly
    assert report["total"] == k0.size + k1.size
    assert report["fraction"] == pytest.approx(_zero_fraction(want0, want1), rel=1e-12)
    assert report["per_weight"] == {model.layers[0].kernel.path: pytest.approx(_zero_fraction(want0), rel=1e-12),
                                    model.layers[1].kernel.path: pytest.approx(_zero_fraction(want1), rel=1e-12)}
    assert 0.25 < report["per_weight"][model.layers[0].kernel.path] < 0.35
    assert sparsity.sparsity(model) == pytest.approx(_zero_fraction(want0, want1), rel=1e-12)
    assert sparsity.sparsity(model, include_bias=True) == pytest.approx(
        _zero_fraction(want0, want1, model.layers[0].bias.value, b1), rel=1e-12)
    assert np.all(b1 == np.float32(1e-4))
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        sparsity.prune(model, -1)


def test_ftrl_with_l1_trains_a_sparse_model():
    x, y = _fashion(2000)
    dense = _mlp(dc.optimizers.Ftrl(learning_rate=0.1))
    sparse = _mlp(dc.optimizers.Ftrl(learning_rate=0.1, l1_regularization_strength=0.01))
    for m in (dense, sparse):
        m.fit(x, y, epochs=2, verbose=0, seed=0)
    kernels = lambda m: [m.layers[0].kernel.numpy(), m.layers[1].kernel.numpy()]  # noqa: E731
    assert sparsity.sparsity(sparse) == pytest.approx(_zero_fraction(*kernels(sparse)), rel=1e-12)
    assert _zero_fraction(*kernels(sparse)) > 0.5
    assert _zero_fraction(*kernels(sparse)) > _zero_fraction(*kernels(dense)) + 0.3  # (dense: inputs always 0)
    acc = (sparse.predict(x).argmax(1) == y).mean()
    assert acc > 0.6  # still a working classifier


def _small(dropout_seed=None):
    dc.set_random_seed(1)
    layers = [dc.Input((20,)), dc.Dense(16, activation="relu", name="base")]
    if dropout_seed is not None:
        layers.append(dc.Dropout(0.3, seed=dropout_seed))
    layers.append(dc.Dense(3, activation="softmax", name="head"))
    return dc.Sequential(layers)


def _xy(n=128):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 20)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_lr_find_after_unfreezing_a_layer():
    x, y = _xy()
    m = _small()
    m.layers[0].trainable = False
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    m.layers[0].trainable = True
    result = dc.lr_find(m, x, y, steps=20)
    assert np.isfinite(result.suggestion)
    assert m.optimizer.iterations == 4


def test_lr_find_keeps_state_set_before_the_first_step():
    x, y = _xy()
    trained = _small()
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(x, y, epochs=1, verbose=0)
    state = trained.optimizer.get_state()

    def resumed(with_finder):
        m = _small()
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.set_weights(trained.get_weights())
        m.optimizer.set_state(state)
        if with_finder:
            dc.lr_find(m, x, y, steps=20)
        m.fit(x, y, epochs=1, verbose=0, shuffle=False)
        return m.get_weights()

    for a, b in zip(resumed(False), resumed(True)):
        np.testing.assert_array_equal(a, b)


def test_lr_find_restores_the_random_streams():
    x, y = _xy()

    def run(with_finder):
        m = _small(dropout_seed=7)
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        if with_finder:
            dc.lr_find(m, x, y, steps=20)
        m.fit(x, y, epochs=1, verbose=0)  # shuffled with the global stream
        return m.get_weights()

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


def test_prune_leaves_batchnorm_and_per_unit_parameters_alone():
    dc.set_random_seed(0)
    m = dc.Sequential([dc.Input((10,)), dc.Dense(8, use_bias=False), dc.BatchNormalization(),
                       dc.Activation("relu"), dc.Dense(2)])
    bn = m.layers[1]
    gamma_before = bn.gamma.value.copy()
    report = sparsity.prune(m, 10.0)  # larger than every weight
    assert report["fraction"] == 1.0  # all kernel entries pruned
    np.testing.assert_array_equal(bn.gamma.value, gamma_before)
    assert set(report["per_weight"]) == {m.layers[0].kernel.path, m.layers[3].kernel.path}
