"""GradientDiagnostics and the vanishing-gradients example."""
import importlib.util
import pathlib

import numpy as np
import pytest

import deepcore as dc
from deepcore.diagnostics import GradientDiagnostics, layer_statistics

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_statistics_match_numpy_for_the_batch_just_trained():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = dc.Sequential([dc.Input((6,)), dc.Dense(5, activation="relu", name="h"),
                           dc.Dense(3, activation="softmax", name="out")])
    model.compile(optimizer=dc.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    W = model.layers[0].kernel.value
    W[:, 0] = -np.abs(W[:, 0]) - 10  # unit 0 is dead for positive-shifted inputs
    x = np.abs(x)
    model._taps = {}
    model.train_on_batch(x, y)
    stats = layer_statistics(model)
    h = np.maximum(x.astype(np.float64) @ W + model.layers[0].bias.value, 0)
    assert stats["h"]["activation_mean"] == pytest.approx(h.mean(), rel=1e-5)
    assert stats["h"]["activation_std"] == pytest.approx(h.std(), rel=1e-5)
    assert stats["h"]["dead_fraction"] == pytest.approx(np.mean(~(h > 0).any(0)))
    assert stats["h"]["dead_fraction"] >= 0.2
    # The kernels' gradients of the mean cross-entropy, by hand in float64.
    W2, b2 = (v.astype(np.float64) for v in model.layers[1].get_weights())
    z1 = x.astype(np.float64) @ W + model.layers[0].bias.value
    z2 = np.maximum(z1, 0) @ W2 + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz2 = (p - np.eye(3)[y]) / len(y)
    dW2 = np.maximum(z1, 0).T @ dz2
    dW1 = x.astype(np.float64).T @ ((dz2 @ W2.T) * (z1 > 0))
    assert stats["h"]["gradient_norm"] == pytest.approx(np.linalg.norm(dW1), rel=1e-5)
    assert stats["out"]["gradient_norm"] == pytest.approx(np.linalg.norm(dW2), rel=1e-5)
    assert "dead_fraction" not in stats["out"]


def test_callback_writes_epoch_averages_into_history():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
    model = dc.Sequential([dc.Input((4,)), dc.Dense(8, activation="relu", name="a"),
                           dc.Dense(2, activation="softmax", name="b")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    diag = GradientDiagnostics(every=2)
    hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[diag]).history
    for key in ("a/activation_mean", "a/activation_std", "a/gradient_norm", "a/dead_fraction", "b/gradient_norm"):
        assert len(hist[key]) == 3
    assert len(diag.records) == 3 * 4  # 8 batches per epoch, every 2nd
    first_epoch = [r[2]["a"]["gradient_norm"] for r in diag.records if r[0] == 0]
    assert hist["a/gradient_norm"][0] == pytest.approx(np.mean(first_epoch))
    assert model._taps is None  # nothing kept after training
    with pytest.raises(ValueError, match="every must be >= 1"):
        GradientDiagnostics(every=0)


def _example():
    spec = importlib.util.spec_from_file_location("vanishing_gradients", ROOT / "examples" / "vanishing_gradients.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_shows_vanishing_gradients_in_sigmoid_nets_and_not_with_he_relu():
    ex = _example()
    res = ex.run(samples=1500, epochs=1, every=5)
    table = ex.table(res)
    assert "hidden1 / output" in table
    small = res["sigmoid + U(+-1/sqrt(n))"]["grad"]
    normal = res["sigmoid + N(0,1)"]["grad"]
    relu = res["ReLU + He"]["grad"]
    # Standard small init: the gradient shrinks layer after layer going down.
    assert small[0] / small[-1] < 1e-4
    assert all(a < b for a, b in zip(small[:9], small[1:10]))
    # N(0,1): saturated sigmoids; hidden gradients far below the output's and the ReLU net's.
    assert max(normal[:10]) < normal[-1] / 3
    assert np.median(normal[:10]) < np.median(relu[:10]) / 5
    # He + ReLU: no vanishing, the first layer gets at least as much as the output layer.
    assert relu[0] / relu[-1] > 0.5
    assert min(relu[:10]) > 0.2 * max(relu[:10])


# Two epochs on 600 Fashion-MNIST images (validation: the next 120) from the same He-initialized
# 784-300-100-10 MLP, whose loss before training is about 2.5: the last epoch's mean
# training loss each optimizer stays below and the validation accuracy it exceeds
# (chance is at most 0.17 on these labels), with margins of about 10% around what
# it reaches.
# Keras's FTRL solves for the weights in closed form around 0, which erases the
# initial weights: the ReLU net collapses to near-uniform outputs, loss near ln 10.
EXPECTED = {  # name: (loss below, validation accuracy above): about 1.1x and -0.1 of what it reaches
    "SGD": (2.05, 0.35),
    "Momentum": (1.13, 0.58),
    "Nesterov": (1.06, 0.58),
    "Adagrad": (1.46, 0.5),
    "RMSprop": (0.97, 0.5),
    "Adam": (0.88, 0.58),
    "AdamW": (0.88, 0.58),
    "Adamax": (0.96, 0.52),
    "Nadam": (0.87, 0.62),
}


def _initial_loss64(x, y):
    """The loss of the example's model before any step, by a float64 forward
    of its initial weights."""
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input((784,)), dc.Dense(300, activation="relu", kernel_initializer="he_normal"),
                           dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
                           dc.Dense(10, activation="softmax")])
    w = [a.astype(np.float64) for a in model.get_weights()]
    h = np.maximum(np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3], 0)
    z = h @ w[4] + w[5]
    z -= z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def test_optimizer_comparison_example_trains_with_every_optimizer():
    spec = importlib.util.spec_from_file_location("optimizer_comparison",
                                                  ROOT / "examples" / "optimizer_comparison.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    res = ex.run(samples=600, epochs=2, target=0.5)
    assert list(res) == list(ex.OPTIMIZERS) == list(EXPECTED) + ["Ftrl"]
    (x, y), _ = ex.load(600)
    if x.shape[1] != 784:
        pytest.skip("Fashion-MNIST not installed (the bounds are for it): apt-get install dataset-fashion-mnist")
    initial = _initial_loss64(x, y)
    assert initial > 2.4
    text = ex.table(res, 0.5)
    failures = []
    for name, r in res.items():
        assert name in text
        assert len(r["loss"]) == len(r["val_accuracy"]) == 2
        if name == "Ftrl":
            ok = abs(r["loss"][-1] - np.log(10)) < 0.05 and r["loss"][-1] < initial - 0.15
        else:
            loss_below, acc_above = EXPECTED[name]
            assert loss_below < initial - 0.35  # every bound is far below the untrained loss
            ok = r["loss"][-1] < loss_below and r["final"] > acc_above and r["loss"][1] < r["loss"][0]
        if not ok:
            failures.append(f"{name}: loss {r['loss']}, val accuracy {r['val_accuracy']}")
    assert not failures, failures
