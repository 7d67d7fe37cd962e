"""Monte Carlo dropout: MCDropout layers and Model.predict_mc."""

import numpy as np
import pytest

import deepcore as dc
from deepcore.layers import Layer


class RecordTraining(Layer):
    """A Python layer (identity) that records the training flag it is called with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flags = []

    def forward(self, x, training=False):
        self.flags.append(training)
        return x

    def backward(self, dy, need_dx=True):
        return dy


@pytest.fixture(scope="module")
def fashion_model():
    """A small MLP with MC dropout trained for 2 epochs on 3000 Fashion-MNIST images."""
    try:
        (X, y), (X_test, y_test) = dc.datasets.load_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not found")
    X = (X[:3000] / 255.0).astype(np.float32)
    X_test = (X_test[:1000] / 255.0).astype(np.float32)
    dc.set_random_seed(42)
    record = RecordTraining()
    model = dc.Sequential([
        dc.Flatten(input_shape=[28, 28]),
        dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.MCDropout(0.3),
        record,
        dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.MCDropout(0.3),
        dc.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True), metrics=["accuracy"])
    model.fit(X, y[:3000], epochs=2, batch_size=32, verbose=0)
    return model, record, X_test, y_test[:1000]


def test_predict_mc_returns_probabilities_with_positive_spread(fashion_model):
    model, record, X_test, y_test = fashion_model
    record.flags.clear()
    mean, std = model.predict_mc(X_test, samples=30)
    assert mean.shape == std.shape == (1000, 10) and mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-5)
    assert (mean >= 0).all() and (std >= 0).all() and (std.sum(axis=1) > 0).all()
    assert np.mean(mean.argmax(1) == y_test) > 0.6  # it learned something
    # Everything but MCDropout ran in inference mode.
    assert record.flags and not any(record.flags)


def test_predict_mc_std_is_larger_on_uncertain_samples(fashion_model):
    model, _, X_test, _ = fashion_model
    mean, std = model.predict_mc(X_test, samples=30, batch_size=100)
    top = mean.max(axis=1)
    spread = std.sum(axis=1)  # total spread of the predicted distribution
    order = np.argsort(top)
    # The 20% least and most confident predictions (mean top probability
    # about 0.33 and 0.93 for this model).
    uncertain, confident = spread[order[:200]].mean(), spread[order[-200:]].mean()
    assert uncertain > 1.3 * confident


def test_predict_mc_agrees_with_repeated_stochastic_calls():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    dc.set_random_seed(3)
    model = dc.Sequential([dc.Input(shape=[6]), dc.Dense(16, activation="relu"), dc.MCDropout(0.5),
                           dc.Dense(3, activation="softmax")])
    samples = 2000
    mean, std = model.predict_mc(x, samples=samples, batch_size=2)  # several tiles and a partial batch
    calls = np.stack([model(x) for _ in range(samples)]).astype(np.float64)
    ref_mean, ref_std = calls.mean(0), calls.std(0)
    # Two independent Monte Carlo estimates: agree within ~6 standard errors.
    np.testing.assert_array_less(np.abs(mean - ref_mean), 6 * np.sqrt(2 / samples) * ref_std + 1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=0.15, atol=1e-6)
    assert (std > 0).all()


def test_predict_mc_without_mc_dropout_has_zero_spread():
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    model = dc.Sequential([dc.Input(shape=[4]), dc.Dense(8, activation="relu"), dc.Dropout(0.5),
                           dc.Dense(3, activation="softmax")])
    mean, std = model.predict_mc(x, samples=10)
    np.testing.assert_allclose(mean, model.predict(x), rtol=1e-6)
    assert (std == 0).all()


def test_predict_mc_with_one_sample_has_zero_spread():
    x = np.ones((3, 4), np.float32)
    model = dc.Sequential([dc.Input(shape=[4]), dc.MCDropout(0.5, seed=1), dc.Dense(2, activation="softmax")])
    mean, std = model.predict_mc(x, samples=1)
    assert (std == 0).all()
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("samples", [0, -3, 1.5, True, "10", None])
def test_predict_mc_rejects_samples_below_one_or_not_an_int(samples):
    model = dc.Sequential([dc.Input(shape=[4]), dc.MCDropout(0.5), dc.Dense(2)])
    with pytest.raises(ValueError, match="samples"):
        model.predict_mc(np.zeros((2, 4), np.float32), samples=samples)


def test_predict_mc_rejects_bad_inputs():
    model = dc.Sequential([dc.Input(shape=[4]), dc.MCDropout(0.5), dc.Dense(2)])
    with pytest.raises(ValueError, match="expects input"):
        model.predict_mc(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.predict_mc(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict_mc(np.zeros((2, 4), np.float32), batch_size=0)


def test_predict_mc_keeps_batchnorm_in_inference_mode():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    dc.set_random_seed(1)
    bn = dc.BatchNormalization()
    model = dc.Sequential([dc.Input(shape=[6]), dc.Dense(16, activation="relu"), bn, dc.MCDropout(0.3),
                           dc.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.SGD(0.05))
    model.fit(x, y, epochs=2, verbose=0)
    stats = [v.numpy() for v in bn.non_trainable_weights]
    assert stats and any(np.any(s != 0) for s in stats)
    # A training-mode BatchNorm would update its moving statistics (and
    # normalize the tiled copies of one row with their own statistics).
    mean, std = model.predict_mc(x[:1], samples=50, batch_size=1)
    for before, v in zip(stats, bn.non_trainable_weights):
        np.testing.assert_array_equal(v.value, before)
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-5)
    assert (std > 0).all()


def test_predict_mc_with_a_batch_shared_mask_still_varies_across_samples():
    import deepcore as _dc

    _dc.set_random_seed(0)
    m = _dc.Sequential([_dc.Input((16,)), _dc.MCDropout(0.5, noise_shape=(1, 16)), _dc.Dense(4)])
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    _, std = m.predict_mc(x, samples=50)
    assert std.mean() > 0.1


def test_predict_mc_releases_its_tiled_buffers():
    import deepcore as _dc

    _dc.set_random_seed(0)
    m = _dc.Sequential([_dc.Input((16,)), _dc.Dense(32, activation="relu"), _dc.MCDropout(0.3), _dc.Dense(4)])
    x = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    m.predict(x)
    before = {layer.name: set(layer._bufs._by_batch) for layer in m.layers if hasattr(layer, "_bufs")}
    m.predict_mc(x, samples=20)
    after = {layer.name: set(layer._bufs._by_batch) for layer in m.layers if hasattr(layer, "_bufs")}
    for name in before:
        assert after[name] - before[name] <= {10}  # only the untiled size may remain
