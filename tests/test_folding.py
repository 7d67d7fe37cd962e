"""model.fold_batchnorm(): BatchNormalization folded into the Dense before it
(W' = gamma W / sigma, b' = gamma (b - mu) / sigma + beta) gives the same
predictions with fewer layers, and leaves the original model alone."""
import numpy as np
import pytest

import deepcore as dc
from deepcore import Activation, BatchNormalization, Dense, Flatten, Input, Model, Sequential, optimizers


def blobs(n=300, n_features=12, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    x = centers[y] + rng.normal(0, 1.0, (n, n_features)) * rng.uniform(0.5, 5, n_features) + 4.0
    return x.astype(np.float32), y


def trained(layers, epochs=3, seed=0, loss="sparse_categorical_crossentropy"):
    """A model trained for a few steps, so the BN statistics are far from their
    initial zeros and ones."""
    x, y = blobs(seed=seed)
    dc.set_random_seed(seed)
    model = Sequential([Input(shape=(x.shape[1],)), *layers])
    model.compile(optimizer=optimizers.SGD(0.02, momentum=0.9), loss=loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    for bn in (layer for layer in model.layers if isinstance(layer, BatchNormalization)):
        moved = np.abs(bn.moving_mean.value).max() + np.abs(bn.moving_variance.value - 1).max()
        assert moved > 0.1, bn.name
    return model, x, y


def types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_fold_batchnorm_gives_the_same_predictions_with_fewer_layers():
    model, x, y = trained([Dense(32, use_bias=False), BatchNormalization(), Activation("relu"),
                           Dense(16), BatchNormalization(), Activation("tanh"),
                           Dense(3, use_bias=False), BatchNormalization(momentum=0.5), Activation("softmax")])
    folded = model.fold_batchnorm()
    assert types(model) == ["Dense", "BatchNormalization", "Activation"] * 3
    assert types(folded) == ["Dense", "Dense", "Dense"]
    assert [layer.activation.name for layer in folded.layers] == ["relu", "tanh", "softmax"]
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-5, atol=1e-5)
    assert folded.count_params() < model.count_params()


def test_fold_batchnorm_without_a_following_activation_matches_raw_outputs():
    # Linear output: compares unsquashed values, where an error cannot hide.
    x, _ = blobs(seed=1)
    target = (x @ np.random.default_rng(2).normal(size=(x.shape[1], 2))).astype(np.float32)
    dc.set_random_seed(1)
    model = Sequential([Input(shape=(x.shape[1],)), Dense(20), BatchNormalization(center=False),
                        Activation("relu"), Dense(2, use_bias=False), BatchNormalization(scale=False)])
    model.compile(optimizer=optimizers.SGD(1e-3), loss="mse")
    model.fit(x, target, epochs=2, batch_size=16, verbose=0)
    folded = model.fold_batchnorm()
    assert types(folded) == ["Dense", "Dense"]
    ref = model.predict(x)
    np.testing.assert_allclose(folded.predict(x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_fold_batchnorm_keeps_batchnorm_that_cannot_be_folded():
    # BN after a ReLU Dense, first in the model, and after Flatten: all kept.
    x, y = blobs()
    dc.set_random_seed(3)
    model = Sequential([Input(shape=(3, 4)), Flatten(), BatchNormalization(), Dense(8, activation="relu"),
                        BatchNormalization(), Dense(8), Activation("relu"), BatchNormalization(),
                        Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x.reshape(-1, 3, 4), y, epochs=2, batch_size=16, verbose=0)
    folded = model.fold_batchnorm()
    assert types(folded) == types(model)
    np.testing.assert_allclose(folded.predict(x.reshape(-1, 3, 4)), model.predict(x.reshape(-1, 3, 4)),
                               rtol=1e-6, atol=1e-6)


def test_fold_batchnorm_leaves_the_original_model_untouched():
    model, x, y = trained([Dense(16), BatchNormalization(), Activation("relu"), Dense(3, activation="softmax")])
    weights = model.get_weights()
    pred = model.predict(x)
    folded = model.fold_batchnorm()
    assert types(model) == ["Dense", "BatchNormalization", "Activation", "Dense"]
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # the copies are independent: changing the folded model changes nothing in the original
    for v in folded.weights:
        v.value[...] = 0
    np.testing.assert_array_equal(model.predict(x), pred)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # and the original still trains


def test_fold_batchnorm_model_is_compiled_like_the_original():
    model, x, y = trained([Dense(16, use_bias=False), BatchNormalization(), Activation("relu"),
                           Dense(3, activation="softmax")])
    loss, acc = model.evaluate(x, y)
    folded = model.fold_batchnorm()
    f_loss, f_acc = folded.evaluate(x, y)
    assert f_loss == pytest.approx(loss, rel=1e-5) and f_acc == acc
    assert type(folded.optimizer) is type(model.optimizer) and folded.optimizer is not model.optimizer
    assert folded.optimizer.get_config() == model.optimizer.get_config()


def test_fold_batchnorm_requires_a_built_sequential():
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(3), BatchNormalization()]).fold_batchnorm()

    class Other(Model):
        pass

    from deepcore.models.folding import fold_batchnorm
    with pytest.raises(TypeError, match="Sequential"):
        fold_batchnorm(Other())
