"""The chapter's figures from what deepcore records (matplotlib, the ``plot``
extra; imported when a function is first called, never by ``import deepcore``).

    history = model.fit(...)
    history.plot()                                  # = dc.plot.learning_curves(history)
    dc.plot.lr_finder(dc.lr_find(model, X, y))
    dc.plot.gradient_diagnostics(history)           # fit with a GradientDiagnostics callback
    dc.plot.mc_uncertainty(*model.predict_mc(X[:3]))

Each function returns the matplotlib Figure, draws into ``ax`` when given
(gradient_diagnostics takes a figure's worth of axes, so no ``ax``), and
saves to ``path`` when given (PNG, SVG, PDF by the extension). They leave
matplotlib's backend and settings alone: without a display, matplotlib
itself picks a non-interactive backend, or set ``MPLBACKEND=Agg``.
"""
from __future__ import annotations

import numpy as np

from ._optional import require

__all__ = ["learning_curves", "lr_finder", "gradient_diagnostics", "mc_uncertainty"]

# Keys the learning curves leave out by default: the rate has its own scale,
# and GradientDiagnostics' per-layer statistics ("<layer>/<stat>") have
# gradient_diagnostics.
_NOT_CURVES = ("lr", "learning_rate")


def _pyplot(feature):
    return require("matplotlib.pyplot", feature)


def _figure(ax, feature, figsize):
    if ax is not None:
        return ax.figure, ax
    fig, ax = _pyplot(feature).subplots(figsize=figsize)
    return fig, ax


def _integer_epochs(ax):
    ax.xaxis.set_major_locator(require("matplotlib.ticker", "deepcore.plot").MaxNLocator(integer=True))


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _history_dict(history):
    """(epochs, {key: values}) from a History or its ``.history`` dict."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError(f"expected a History (model.fit's return value) or its .history dict with at least one "
                         f"key, got {type(history).__name__}")
    n = max(len(v) for v in logs.values())
    epochs = list(getattr(history, "epoch", None) or range(n))
    return np.asarray(epochs[:n]), logs


def learning_curves(history, keys=None, path=None, ax=None):
    """Loss and metrics per epoch, training and validation (the chapter's
    learning-curve figure): one colour per quantity, training dashed,
    validation solid, on a grid with "Epoch" on the x axis.

    ``keys`` picks the curves (default: every key of the history except the
    learning rate and GradientDiagnostics' per-layer statistics); a "val_"
    key shares the colour of its training key."""
    epochs, logs = _history_dict(history)
    if keys is None:
        keys = [k for k in logs if k not in _NOT_CURVES and "/" not in k]
    else:
        keys = list(keys)
        missing = [k for k in keys if k not in logs]
        if missing:
            raise KeyError(f"learning_curves: {missing} not in the history; its keys: {sorted(logs)}")
    if not keys:
        raise ValueError(f"learning_curves: nothing to plot; the history's keys: {sorted(logs)}")
    fig, ax = _figure(ax, "deepcore.plot.learning_curves", (8, 5))
    bases = []
    for k in keys:
        base = k[4:] if k.startswith("val_") else k
        if base not in bases:
            bases.append(base)
    colors = {base: f"C{i}" for i, base in enumerate(bases)}
    for k in keys:
        values = np.asarray(logs[k], dtype=np.float64)
        validation = k.startswith("val_")
        base = k[4:] if validation else k
        ax.plot(epochs[:len(values)], values, "-" if validation else "--", color=colors[base],
                marker="." if validation else None, label=k)
    ax.set_xlabel("Epoch")
    _integer_epochs(ax)
    ax.grid(True)
    ax.legend()
    return _finish(fig, path)


def lr_finder(result, path=None, ax=None):
    """The learning-rate finder's curve: batch loss and smoothed loss
    against the rate (log axis), with the suggested rate marked."""
    fig, ax = _figure(ax, "deepcore.plot.lr_finder", (6, 4))
    ax.plot(result.learning_rates, result.losses, alpha=0.3, label="batch loss")
    ax.plot(result.learning_rates, result.smoothed_losses, label="smoothed")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggestion {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    finite = result.smoothed_losses[np.isfinite(result.smoothed_losses)]
    if finite.size:
        ax.set_ylim(finite.min() * 0.9, min(finite.max(), finite[0] * 2) * 1.1)
    ax.legend()
    return _finish(fig, path)


_STAT_TITLES = {
    "gradient_norm": "weight-gradient norm (log scale)",
    "activation_mean": "activation mean",
    "activation_std": "activation standard deviation",
    "dead_fraction": "fraction of dead ReLU units",
}


def gradient_diagnostics(history, stats=None, path=None):
    """What ``GradientDiagnostics`` recorded, one panel per statistic and
    one line per layer over the epochs: the gradient norm on a log scale
    (vanishing gradients shrink layer after layer towards the input), the
    activations' mean and standard deviation, the fraction of dead units."""
    epochs, logs = _history_dict(history)
    layers, found = [], []
    for key in logs:
        if "/" not in key:
            continue
        layer, stat = key.rsplit("/", 1)
        if layer not in layers:
            layers.append(layer)
        if stat not in found:
            found.append(stat)
    if not found:
        raise ValueError("gradient_diagnostics: the history has no per-layer statistics; fit with "
                         "callbacks=[deepcore.diagnostics.GradientDiagnostics()]")
    stats = [s for s in _STAT_TITLES if s in found] + [s for s in found if s not in _STAT_TITLES] \
        if stats is None else list(stats)
    plt = _pyplot("deepcore.plot.gradient_diagnostics")
    fig, axes = plt.subplots(1, len(stats), figsize=(4.5 * len(stats), 4), squeeze=False)
    for ax, stat in zip(axes[0], stats):
        for i, layer in enumerate(layers):
            values = logs.get(f"{layer}/{stat}")
            if values is not None:
                ax.plot(epochs[:len(values)], np.asarray(values, dtype=np.float64), marker=".", label=layer,
                        color=f"C{i % 10}")
        if stat == "gradient_norm":
            ax.set_yscale("log")
        ax.set_title(_STAT_TITLES.get(stat, stat))
        ax.set_xlabel("Epoch")
        _integer_epochs(ax)
        ax.grid(True)
    axes[0][0].legend(fontsize="small")
    return _finish(fig, path)


def mc_uncertainty(mean, std, y_true=None, class_names=None, max_samples=5, path=None, ax=None):
    """Monte Carlo dropout predictions with their spread (``predict_mc``'s
    mean and std).

    Class probabilities (mean of shape (n, classes), classes > 1): one bar
    group per sample (the first ``max_samples``), a bar per class with an
    error bar of one standard deviation; the true class, when ``y_true`` is
    given, is outlined. Regression (one output): the mean per sample with
    a band of two standard deviations, and the true values as points."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mean.shape != std.shape:
        raise ValueError(f"mc_uncertainty: mean {mean.shape} and std {std.shape} differ in shape")
    if mean.ndim == 1:
        mean, std = mean[:, None], std[:, None]
    fig, ax = _figure(ax, "deepcore.plot.mc_uncertainty", (8, 4))
    if mean.shape[1] == 1:
        x = np.arange(len(mean))
        ax.plot(x, mean[:, 0], color="C0", label="MC mean")
        ax.fill_between(x, mean[:, 0] - 2 * std[:, 0], mean[:, 0] + 2 * std[:, 0], color="C0", alpha=0.25,
                        label="±2 std")
        if y_true is not None:
            ax.plot(x, np.asarray(y_true, dtype=np.float64).reshape(-1), "k.", label="true")
        ax.set_xlabel("sample")
        ax.set_ylabel("prediction")
    else:
        n, k = min(len(mean), int(max_samples)), mean.shape[1]
        names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
        width = 0.8 / n
        x = np.arange(k)
        for i in range(n):
            bars = ax.bar(x + (i - (n - 1) / 2) * width, mean[i], width, yerr=std[i], capsize=2, color=f"C{i % 10}",
                          label=f"sample {i}")
            if y_true is not None:
                bars[int(np.asarray(y_true)[i])].set_edgecolor("black")
                bars[int(np.asarray(y_true)[i])].set_linewidth(1.5)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45 if max(len(s) for s in names) > 3 else 0, ha="right")
        ax.set_ylim(0, 1)
        ax.set_xlabel("class")
        ax.set_ylabel("probability (MC mean ± std)")
    ax.legend(fontsize="small")
    return _finish(fig, path)
