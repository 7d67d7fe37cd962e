"""Metrics as running means over the batches of an epoch, with Keras names."""
from __future__ import annotations

import math

import numpy as np


class Metric:
    name = "metric"

    def __init__(self, name=None):
        if name is not None:
            self.name = name
        self.reset_state()

    def reset_state(self):
        self._total = 0.0
        self._count = 0

    def update_state(self, y_true, y_pred):
        values = self._values(y_true, y_pred)
        self._total += float(np.sum(values, dtype=np.float64))
        self._count += values.size

    def result(self) -> float:
        return self._total / self._count if self._count else 0.0

    def counts_from_loss(self, loss) -> bool:
        """Whether update_count can take the correct-row count that ``loss``
        computes on the way (Loss.compute_and_count) instead of the output."""
        return False

    def update_count(self, correct, count):
        """Add ``correct`` hits out of ``count`` rows (see counts_from_loss)."""
        self._total += int(correct)
        self._count += int(count)

    def _values(self, y_true, y_pred):
        raise NotImplementedError


class SparseCategoricalAccuracy(Metric):
    """Fraction of rows whose largest output (the first, on ties) is the label.
    With sparse_categorical_crossentropy the loss kernel counts these rows on
    the way (over the logits when it absorbs the softmax, which has the same
    argmax), so training and evaluation read no output back for it."""

    name = "sparse_categorical_accuracy"

    def _values(self, y_true, y_pred):
        pred = np.argmax(y_pred, axis=-1)
        return pred == y_true.reshape(pred.shape)

    def counts_from_loss(self, loss):
        # A subclass that redefines the values computes them itself.
        return getattr(loss, "sparse", False) and type(self)._values is SparseCategoricalAccuracy._values


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def _values(self, y_true, y_pred):
        return np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)


class BinaryAccuracy(Metric):
    """Fraction of outputs where (y_pred > threshold) equals y_true. Default threshold 0.5."""

    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def _values(self, y_true, y_pred):
        return ((y_pred > self.threshold) == (y_true > 0.5)).reshape(-1)


class MeanAbsoluteError(Metric):
    name = "mean_absolute_error"

    def _values(self, y_true, y_pred):
        return np.abs(y_pred - y_true.reshape(y_pred.shape)).mean(axis=-1)


class MeanSquaredError(Metric):
    name = "mean_squared_error"

    def _values(self, y_true, y_pred):
        return np.square(y_pred - y_true.reshape(y_pred.shape)).mean(axis=-1)


class RootMeanSquaredError(MeanSquaredError):
    name = "root_mean_squared_error"

    def result(self):
        return math.sqrt(super().result())


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError,
    "RootMeanSquaredError": RootMeanSquaredError,
}


def get(identifier, loss=None) -> Metric:
    """Resolve a metric. "accuracy"/"acc" follows the loss, as in Keras:
    sparse categorical for sparse_categorical_crossentropy, categorical for
    categorical_crossentropy, binary otherwise; the metric keeps the name given."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if identifier in ("accuracy", "acc"):
        lname = getattr(loss, "name", "")
        cls = (SparseCategoricalAccuracy if lname == "sparse_categorical_crossentropy"
               else CategoricalAccuracy if lname == "categorical_crossentropy" else BinaryAccuracy)
        return cls(name=identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        cls = _BY_NAME[identifier]
        # Short names keep the name given ("mae"); a class name logs as Keras does.
        return cls(name=None if identifier == cls.__name__ else identifier)
    raise ValueError(f"Unknown metric {identifier!r}; expected a Metric or one of: "
                     f"accuracy, {', '.join(sorted(_BY_NAME))}")
