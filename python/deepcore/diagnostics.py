"""Gradient diagnostics: the chapter's unstable-gradients problem made visible.

``GradientDiagnostics`` is a callback that, every ``every`` training batches,
reads each layer's output and its weights' gradients from the batch just
trained, and at the end of each epoch writes per-layer averages into the logs
(so into ``history.history``):

    "<layer>/activation_mean", "<layer>/activation_std"   of the layer's output
    "<layer>/gradient_norm"    L2 norm of the layer's kernel (first weight) gradient
    "<layer>/dead_fraction"    ReLU-family layers only: fraction of units whose
                               output is 0 for every sample of the batch

Works with Sequential models (it asks the model to keep references to each
layer's output buffer for the current batch; nothing is copied).
"""
from __future__ import annotations

import numpy as np

from .backend import to_host
from .callbacks import Callback

__all__ = ["GradientDiagnostics", "layer_statistics"]

_RELU_LIKE = {"relu"}


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    return getattr(act, "name", None)


def layer_statistics(model):
    """Statistics of the last batch for each layer with an output tap:
    {layer_name: {stat: value}}. Call right after a training step."""
    taps = getattr(model, "_taps", None)
    if taps is None:
        raise ValueError("layer_statistics: the model has no recorded outputs; train with a "
                         "GradientDiagnostics callback (or set model._taps = {} before a step)")
    out = {}
    for layer in model.layers:
        y = taps.get(layer.name)
        if y is None:
            continue
        stats = {}
        y = to_host(y)  # copied from the device on a CUDA model
        y64 = np.asarray(y, dtype=np.float64)
        stats["activation_mean"] = float(y64.mean())
        stats["activation_std"] = float(y64.std())
        trainable = layer.trainable_weights
        if trainable:
            stats["gradient_norm"] = float(np.linalg.norm(np.asarray(to_host(trainable[0].grad), dtype=np.float64)))
        if _activation_name(layer) in _RELU_LIKE:
            flat = y.reshape(y.shape[0], -1)
            stats["dead_fraction"] = float(np.mean(~(flat > 0).any(axis=0)))
        out[layer.name] = stats
    return out


class GradientDiagnostics(Callback):
    """Record per-layer activation and gradient statistics every ``every``
    batches; epoch averages go into the logs / history. ``self.records`` keeps
    every sample as (epoch, batch, {layer: stats})."""

    def __init__(self, every=10):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"GradientDiagnostics: every must be >= 1, got {every}")
        self.every = int(every)
        self.records = []
        self._epoch = 0
        self._sums = {}
        self._counts = {}

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "_taps"):
            raise TypeError(f"GradientDiagnostics supports Sequential models, got {type(self.model).__name__}")
        self.model._taps = {}

    def on_train_end(self, logs=None):
        self.model._taps = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._sums, self._counts = {}, {}

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every:
            return
        stats = layer_statistics(self.model)
        self.records.append((self._epoch, batch, stats))
        for name, layer_stats in stats.items():
            for k, v in layer_stats.items():
                key = f"{name}/{k}"
                self._sums[key] = self._sums.get(key, 0.0) + v
                self._counts[key] = self._counts.get(key, 0) + 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for key, total in self._sums.items():
                logs[key] = total / self._counts[key]
