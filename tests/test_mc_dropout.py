"""Monte Carlo dropout: MCDropout layers and Model.predict_mc (which turns every dropout layer on)."""

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


class RecordInputs(Layer):
    """A Python identity layer that keeps a copy of every input it sees."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inputs = []

    def forward(self, x, training=False):
        self.inputs.append(np.array(x, dtype=np.float64))
        return x

    def backward(self, dy, need_dx=True):
        return dy


def _softmax64(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _bn_dropout_model(rate=0.4, seed=5):
    """Dense(relu) -> BatchNorm (non-trivial moving statistics) -> Dropout -> record -> Dense(softmax)."""
    rng = np.random.default_rng(1)
    dc.set_random_seed(4)
    dense1, bn, drop, record = dc.Dense(16, activation="relu"), dc.BatchNormalization(), dc.Dropout(rate, seed=seed), \
        RecordInputs()
    model = dc.Sequential([dc.Input(shape=[6]), dense1, bn, drop, record, dc.Dense(3, activation="softmax")])
    bn.set_weights([rng.uniform(0.5, 2, 16), rng.normal(size=16), rng.normal(size=16) * 0.5,
                    rng.uniform(0.2, 3, 16)])  # gamma, beta, moving mean, moving variance
    return model, dense1, bn, record


def test_predict_mc_turns_on_plain_dropout_layers():
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    model, _, _, _ = _bn_dropout_model()
    mean, std = model.predict_mc(x, samples=50)
    assert (std > 1e-3).all()  # not the ~1e-8 of a model whose Dropout stayed off
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-5)
    # Afterwards the Dropout layer is off again: predict is deterministic.
    np.testing.assert_array_equal(model.predict(x), model.predict(x))


def test_predict_mc_mean_and_std_match_a_float64_forward_over_the_same_masks():
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    rate, samples = 0.4, 300
    model, dense1, bn, record = _bn_dropout_model(rate)
    mean, std = model.predict_mc(x, samples=samples, batch_size=len(x))
    seen = np.concatenate(record.inputs).reshape(samples, len(x), 16)  # one batch: the tiles in sample order
    # float64 reference of everything but the masks, BatchNorm on its moving statistics.
    w1, b1 = (v.astype(np.float64) for v in dense1.get_weights())
    gamma, beta, mm, mv = (v.astype(np.float64) for v in bn.get_weights())
    h = gamma * (np.maximum(x @ w1 + b1, 0) - mm) / np.sqrt(mv + bn.epsilon) + beta
    keep = seen != 0
    assert abs(keep.mean() - (1 - rate)) < 0.02
    assert not (keep == keep[:1]).all(axis=0).all()  # the masks differ between samples
    np.testing.assert_allclose(seen[keep], np.broadcast_to(h / (1 - rate), seen.shape)[keep], rtol=2e-5, atol=1e-6)
    w2, b2 = (v.astype(np.float64) for v in model.layers[-1].get_weights())
    outs = _softmax64((h * keep / (1 - rate)) @ w2 + b2)
    np.testing.assert_allclose(mean, outs.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, outs.std(axis=0), rtol=1e-4, atol=1e-6)


def test_predict_mc_leaves_batchnorm_moving_statistics_untouched_with_plain_dropout():
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    model, _, bn, _ = _bn_dropout_model()
    before = [w.copy() for w in bn.get_weights()]
    model.predict_mc(x, samples=20, batch_size=16)
    for a, b in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_mc_is_reproducible_under_the_same_seed_and_advances_the_masks():
    x = np.random.default_rng(0).normal(size=(9, 6)).astype(np.float32)

    def make():
        dc.set_random_seed(11)
        return dc.Sequential([dc.Input(shape=[6]), dc.Dense(12, activation="relu"), dc.Dropout(0.3),
                              dc.AlphaDropout(0.1), dc.Dense(3, activation="softmax")])

    a, b = make(), make()
    mean_a, std_a = a.predict_mc(x, samples=40, batch_size=4)
    mean_b, std_b = b.predict_mc(x, samples=40, batch_size=4)
    np.testing.assert_array_equal(mean_a, mean_b)
    np.testing.assert_array_equal(std_a, std_b)
    mean_again, _ = a.predict_mc(x, samples=40, batch_size=4)  # the next masks of the layers' streams
    assert not np.array_equal(mean_again, mean_a)


def test_predict_mc_turns_on_alpha_dropout_but_keeps_rrelu_at_its_mean_slope():
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    dc.set_random_seed(2)
    rrelu, after_rrelu, drop = dc.RReLU(), RecordInputs(), dc.AlphaDropout(0.2, seed=1)
    model = dc.Sequential([dc.Input(shape=[6]), rrelu, after_rrelu, drop, dc.Dense(3)])
    _, std = model.predict_mc(x, samples=30)
    assert (std > 0).all()
    slope = (rrelu.lower + rrelu.upper) / 2
    for seen in after_rrelu.inputs:  # every tile: the inference slope, no random one
        np.testing.assert_allclose(seen.reshape(-1, *x.shape), np.broadcast_to(np.where(x >= 0, x, slope * x),
                                   (len(seen) // len(x),) + x.shape), rtol=1e-6)


def test_predict_mc_raises_when_the_model_has_no_dropout_layer():
    model = dc.Sequential([dc.Input(shape=[4]), dc.Dense(8, activation="relu"), dc.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="no dropout layer"):
        model.predict_mc(np.zeros((2, 4), np.float32), samples=10)


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
