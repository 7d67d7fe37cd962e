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
    assert stats["h"]["gradient_norm"] == pytest.approx(np.linalg.norm(model.layers[0].kernel.grad), rel=1e-6)
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


def test_optimizer_comparison_example_runs_every_optimizer():
    spec = importlib.util.spec_from_file_location("optimizer_comparison",
                                                  ROOT / "examples" / "optimizer_comparison.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    res = ex.run(samples=600, epochs=1, target=0.5)
    assert list(res) == list(ex.OPTIMIZERS)
    text = ex.table(res, 0.5)
    for name, r in res.items():
        assert name in text
        assert 0.0 <= r["final"] <= 1.0 and np.isfinite(r["loss"][-1])
    assert res["Adam"]["final"] > 0.5  # it learns something in one short epoch
