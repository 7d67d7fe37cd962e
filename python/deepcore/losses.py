"""Losses with Keras names and the "sum_over_batch_size" reduction.

When the model ends in softmax (sigmoid) and the loss is a categorical (binary)
cross-entropy on probabilities, the model hands the loss the logits instead
and the kernel computes softmax + cross-entropy in one stable pass: the
gradient is simply (p - y) / batch. Keras does the same behind the scenes.
"""
from __future__ import annotations

import numpy as np

from .backend import ops

_MSE, _MAE, _HUBER, _BCE, _BCE_LOGITS, _CCE, _CCE_LOGITS = range(7)


class Loss:
    """Base: ``loss(y_true, y_pred) -> float``."""

    name = "loss"
    #: the output activation this loss can absorb ("softmax", "sigmoid" or None)
    fusable_activation = None
    sparse = False
    #: whether compute_graph exists: the loss can run inside a CUDA graph
    has_graph_variant = False

    def __init__(self, name=None):
        if name is not None:
            self.name = name

    def prepare_targets(self, y, output_shape, where="y"):
        """Validate and convert targets once, before training."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{where}: targets must be numeric, got dtype {y.dtype}")
        y = np.ascontiguousarray(y, dtype=np.float32)
        want = tuple(output_shape)
        if y.ndim == 1 and want == (1,):
            y = y.reshape(-1, 1)
        if y.shape[1:] != want:
            raise ValueError(f"{where}: {self.name} expects targets of shape (batch,) + {want} to match the "
                             f"model output, got {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError(f"{where}: targets contain NaN or infinity")
        return y

    def compute(self, y_pred, y_true, grad=None, from_logits=False) -> float:
        """Mean loss over the batch; fills ``grad`` with dL/dy_pred (or dL/dlogits)."""
        raise NotImplementedError

    def compute_and_count(self, y_pred, y_true, grad=None, from_logits=False):
        """(compute(...), correct): correct is the number of rows whose
        argmax is the label when the loss's kernel counts them on the way
        (sparse categorical cross-entropy), else None."""
        return self.compute(y_pred, y_true, grad, from_logits), None

    def __call__(self, y_true, y_pred) -> float:
        y_pred = np.ascontiguousarray(y_pred, dtype=np.float32)
        y_true = self.prepare_targets(y_true, y_pred.shape[1:])
        return float(self.compute(y_pred, y_true, None, getattr(self, "from_logits", False)))

    def get_config(self):
        return {"name": self.name}


class _Elementwise(Loss):
    _kind = None

    def compute(self, y_pred, y_true, grad=None, from_logits=False):
        return ops(y_pred).loss_forward_backward(self._kind, y_pred, y_true, grad, self._param())

    def _param(self):
        return 1.0


class MeanSquaredError(_Elementwise):
    """mean((y_pred - y_true)^2)"""

    name, _kind = "mean_squared_error", _MSE


class MeanAbsoluteError(_Elementwise):
    """mean(|y_pred - y_true|)"""

    name, _kind = "mean_absolute_error", _MAE


class Huber(_Elementwise):
    """0.5 e^2 where |e| <= delta, else delta (|e| - delta/2). Default delta=1.0."""

    name, _kind = "huber_loss", _HUBER

    def __init__(self, delta=1.0, name=None):
        super().__init__(name)
        if not delta > 0:
            raise ValueError(f"Huber: delta must be > 0, got {delta!r}")
        self.delta = float(delta)

    def _param(self):
        return self.delta

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class BinaryCrossentropy(Loss):
    """-(y log p + (1-y) log(1-p)); from_logits=False (p clipped to [1e-7, 1-1e-7])."""

    name, fusable_activation = "binary_crossentropy", "sigmoid"

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, output_shape, where="y"):
        y = super().prepare_targets(y, output_shape, where)
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"{where}: binary_crossentropy expects targets in [0, 1]")
        return y

    def compute(self, y_pred, y_true, grad=None, from_logits=False):
        kind = _BCE_LOGITS if (from_logits or self.from_logits) else _BCE
        return ops(y_pred).loss_forward_backward(kind, y_pred, y_true, grad, 0.0)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


class CategoricalCrossentropy(Loss):
    """-sum_j y_j log p_j with one-hot (or soft) targets; from_logits=False."""

    name, fusable_activation = "categorical_crossentropy", "softmax"

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def compute(self, y_pred, y_true, grad=None, from_logits=False):
        kind = _CCE_LOGITS if (from_logits or self.from_logits) else _CCE
        return ops(y_pred).loss_forward_backward(kind, y_pred, y_true, grad, 0.0)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
    """-log p_label with integer labels in [0, num_classes); from_logits=False."""

    name, fusable_activation, sparse = "sparse_categorical_crossentropy", "softmax", True

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, output_shape, where="y"):
        y = np.asarray(y)
        output_shape = tuple(output_shape)
        lead = output_shape[:-1]  # positions with one label each: () for (batch, classes)
        if y.ndim == len(output_shape) + 1 and y.shape[-1] == 1:
            y = y[..., 0]
        if y.ndim < 1 or y.shape[1:] != lead:
            want = "(batch,)" if not lead else f"(batch,) + {lead} (one label per position)"
            hint = (" (Dense on N-D input applies to the last axis, as in Keras: add a Flatten() layer before it "
                    "for one prediction per sample)") if lead and y.ndim == 1 else ""
            raise ValueError(f"{where}: sparse_categorical_crossentropy expects integer labels of shape {want} for "
                             f"a model output of shape {(None,) + output_shape}, got {y.shape}{hint}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{where}: labels must be whole numbers, got non-integer values")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{where}: labels must be integers, got dtype {y.dtype}")
        if len(output_shape) < 1:
            raise ValueError(f"{where}: sparse_categorical_crossentropy needs a model output of shape "
                             f"(batch, classes), got {(None,) + output_shape}")
        classes = output_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)][0]
            raise ValueError(f"{where}: label {bad.item()!r} is out of range: the model has {classes} outputs, so "
                             f"labels must be in [0, {classes})")
        return np.ascontiguousarray(y, dtype=np.int32)

    def compute(self, y_pred, y_true, grad=None, from_logits=False):
        return self.compute_and_count(y_pred, y_true, grad, from_logits)[0]

    def compute_and_count(self, y_pred, y_true, grad=None, from_logits=False):
        # The kernel counts the rows whose first largest entry is the label
        # (a NaN entry loses, except in column 0), so accuracy needs no second
        # pass over the output. A sequence output (batch, steps, classes) is
        # (batch * steps) rows: the mean over every position, as in Keras.
        if y_pred.ndim > 2:
            classes = y_pred.shape[-1]
            y_pred = y_pred.reshape(-1, classes)
            y_true = y_true.reshape(-1)
            grad = None if grad is None else grad.reshape(-1, classes)
        return ops(y_pred).sparse_categorical_crossentropy(y_pred, y_true, grad, from_logits or self.from_logits)

    has_graph_variant = True

    def compute_graph(self, y_pred, y_true, grad, out, from_logits=False):
        """compute() for a CUDA graph: queues the loss and grad without waiting;
        the mean loss and the count of correct rows land in ``out`` (a
        deepcore._cuda.LossScalars), read after the replay."""
        ops(y_pred).sparse_categorical_crossentropy_graph(y_pred, y_true, grad, from_logits or self.from_logits, out)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


_BY_NAME = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(f"Unknown loss {identifier!r}; expected a Loss or one of: {', '.join(sorted(_BY_NAME))}")


def mean_squared_error(y_true, y_pred):
    return MeanSquaredError()(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    return MeanAbsoluteError()(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)
