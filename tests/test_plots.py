"""deepcore.plot, History.plot, LRFinderResult.plot and deepcore.utils.plot_model:
figures drawn without a display (Agg), checked by what they contain."""
import os
import shutil
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib", reason="the plots need matplotlib (deepcore[plot])")
matplotlib.use("Agg")  # this test process only: no display
import matplotlib.container  # noqa: E402
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import deepcore as dc  # noqa: E402
from deepcore.diagnostics import GradientDiagnostics  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    dc.set_random_seed(0)
    model = dc.Sequential([dc.layers.Input(shape=(4,)), dc.layers.Dense(8, activation="relu", name="hidden"),
                           dc.layers.MCDropout(0.3, name="mc"), dc.layers.Dense(3, activation="softmax", name="out")],
                          name="net")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=4, batch_size=20, validation_split=0.25, verbose=0,
                        callbacks=[GradientDiagnostics(every=1)])
    return model, history, x, y


def _png_has_content(path):
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image.std() > 0.01  # not a blank canvas


def test_history_plot_draws_the_learning_curves(trained, tmp_path):
    _, history, _, _ = trained
    fig = history.plot(path=tmp_path / "curves.png")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["loss", "accuracy", "val_loss", "val_accuracy"]  # no rate, no per-layer statistics
    assert lines["loss"].get_linestyle() == "--" and lines["val_loss"].get_linestyle() == "-"
    assert lines["loss"].get_color() == lines["val_loss"].get_color() != lines["accuracy"].get_color()
    np.testing.assert_array_equal(lines["loss"].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(lines["val_accuracy"].get_ydata(), history.history["val_accuracy"])
    assert ax.get_xlabel() == "Epoch"
    _png_has_content(tmp_path / "curves.png")


def test_learning_curves_takes_keys_and_a_dict(trained):
    _, history, _, _ = trained
    fig = dc.plot.learning_curves(history.history, keys=["loss", "val_loss"])
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss", "val_loss"]
    with pytest.raises(KeyError, match="mae"):
        dc.plot.learning_curves(history, keys=["mae"])


def test_lr_finder_plot_has_log_rates_and_the_suggestion(trained, tmp_path):
    model, _, x, y = trained
    result = dc.lr_find(model, x, y, steps=30, batch_size=20)
    fig = result.plot(tmp_path / "lr.png")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["batch loss", "smoothed"] and labels[2].startswith("suggestion")
    assert ax.get_lines()[2].get_xdata()[0] == pytest.approx(result.suggestion)
    assert dc.plot.lr_finder(result) is not fig
    _png_has_content(tmp_path / "lr.png")


def test_gradient_diagnostics_one_panel_per_statistic_one_line_per_layer(trained, tmp_path):
    _, history, _, _ = trained
    fig = dc.plot.gradient_diagnostics(history, path=tmp_path / "diag.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["weight-gradient norm (log scale)", "activation mean", "activation standard deviation",
                      "fraction of dead ReLU units"]
    grad = fig.axes[0]
    assert grad.get_yscale() == "log"
    assert [line.get_label() for line in grad.get_lines()] == ["hidden", "out"]  # layers with weights
    np.testing.assert_allclose(grad.get_lines()[0].get_ydata(), history.history["hidden/gradient_norm"])
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["hidden", "mc", "out"]
    _png_has_content(tmp_path / "diag.png")
    with pytest.raises(ValueError, match="GradientDiagnostics"):
        dc.plot.gradient_diagnostics({"loss": [1.0]})


def test_mc_uncertainty_bars_with_error_bars_per_class(trained, tmp_path):
    model, _, x, y = trained
    mean, std = model.predict_mc(x[:3], samples=20)
    fig = dc.plot.mc_uncertainty(mean, std, y_true=y[:3], class_names=["a", "b", "c"], path=tmp_path / "mc.png")
    (ax,) = fig.axes
    assert len(ax.patches) == 3 * 3  # 3 samples x 3 classes
    heights = np.array([p.get_height() for p in ax.patches]).reshape(3, 3)
    np.testing.assert_allclose(heights, mean, rtol=1e-6)
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]
    assert len(bars) == 3 and all(c.errorbar is not None for c in bars)
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in bars[0].errorbar.lines[2][0].get_segments()],
                               2 * std[0], rtol=1e-5)  # one std either side
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.patches[3 * 0 + int(y[0])].get_linewidth() == 1.5  # the true class outlined
    _png_has_content(tmp_path / "mc.png")


def test_mc_uncertainty_regression_band():
    mean = np.linspace(0, 1, 10)
    fig = dc.plot.mc_uncertainty(mean, np.full(10, 0.1), y_true=mean + 0.05)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["MC mean", "true"]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(-0.2) and band[:, 1].max() == pytest.approx(1.2)


def test_plot_model_graph_has_layers_shapes_and_edges(trained, tmp_path):
    pytest.importorskip("pydot", reason="plot_model needs pydot (deepcore[plot])")
    model = trained[0]
    dot = dc.utils.model_to_dot(model, show_shapes=True, show_layer_activations=True)
    labels = {n.get_name().strip('"'): n.get("label") for n in dot.get_nodes() if n.get("label")}
    assert list(labels) == ["net_input", "hidden", "mc", "out"]
    assert "hidden (Dense)" in labels["hidden"] and "activation: relu" in labels["hidden"]
    assert "output: (None, 8)" in labels["hidden"] and "output: (None, 3)" in labels["out"]
    edges = [(e.get_source().strip('"'), e.get_destination().strip('"')) for e in dot.get_edges()]
    assert edges == [("net_input", "hidden"), ("hidden", "mc"), ("mc", "out")]
    dc.utils.plot_model(model, tmp_path / "model.dot")
    assert "hidden (Dense)" in (tmp_path / "model.dot").read_text()


def test_plot_model_without_graphviz_says_how_to_get_it(trained, tmp_path, monkeypatch):
    pytest.importorskip("pydot", reason="plot_model needs pydot (deepcore[plot])")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    with pytest.raises(ImportError, match="apt-get install graphviz"):
        dc.utils.plot_model(trained[0], tmp_path / "model.png")


def test_plot_model_renders_a_png(trained, tmp_path):
    pytest.importorskip("pydot", reason="plot_model needs pydot (deepcore[plot])")
    if shutil.which("dot") is None:
        if os.environ.get("DEEPCORE_GRAPHVIZ_REQUIRED"):  # CI (.ci/run) installs it: there a skip would hide
            pytest.fail("Graphviz's dot is not on PATH (DEEPCORE_GRAPHVIZ_REQUIRED is set)")
        pytest.skip("rendering needs Graphviz's dot (apt-get install graphviz)")
    dc.utils.plot_model(trained[0], tmp_path / "model.png", show_shapes=True)
    _png_has_content(tmp_path / "model.png")
    image = matplotlib.image.imread(str(tmp_path / "model.png"))
    assert image.shape[0] > image.shape[1]  # rankdir="TB": four boxes stacked


def test_missing_extra_is_an_import_error_naming_it(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match=r"deepcore\[plot\]"):
        trained[1].plot()
