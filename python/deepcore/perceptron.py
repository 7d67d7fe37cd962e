"""Rosenblatt's perceptron: threshold logic units trained with the perceptron
learning rule (one C++ pass per epoch)."""
from __future__ import annotations

import numpy as np

from . import random as _random
from .backend import core, ops


class Perceptron:
    """Threshold logic units ``step(x w + b)`` trained by Rosenblatt's rule
    ``w <- w + eta (y - yhat) x``.

    ``y`` may be binary labels (n,), multi-label 0/1 targets (n, k) (one TLU
    per output), or class labels with more than two values (one TLU per class,
    prediction = the class with the highest score). Defaults as in
    scikit-learn: eta0=1.0, max_iter=1000, shuffle=True; training stops at the
    first epoch without a mistake.
    """

    def __init__(self, eta0=1.0, max_iter=1000, shuffle=True, random_state=None):
        if not eta0 > 0:
            raise ValueError(f"Perceptron: eta0 must be > 0, got {eta0!r}")
        if int(max_iter) < 1:
            raise ValueError(f"Perceptron: max_iter must be >= 1, got {max_iter!r}")
        self.eta0, self.max_iter, self.shuffle, self.random_state = float(eta0), int(max_iter), shuffle, random_state

    def fit(self, X, y):
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"Perceptron.fit: X must be a non-empty 2-D array (samples, features), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("Perceptron.fit: X contains NaN or infinite values")
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"Perceptron.fit: X has {len(X)} samples but y has {len(y)}")
        if y.ndim == 2:
            self.classes_, self._mode = None, "multilabel"
            targets = (y > 0).astype(np.float32)
        else:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError("Perceptron.fit: y needs at least two classes")
            if len(self.classes_) == 2:
                self._mode = "binary"
                targets = (y == self.classes_[1]).astype(np.float32).reshape(-1, 1)
            else:
                self._mode = "multiclass"
                targets = (y[:, None] == self.classes_[None, :]).astype(np.float32)
        targets = np.ascontiguousarray(targets)
        k = targets.shape[1]
        self._w = np.zeros((X.shape[1], k), np.float32)
        self._b = np.zeros(k, np.float32)
        seed, stream = _random.resolve(self.random_state)
        self.n_iter_ = 0
        for epoch in range(self.max_iter):
            order = core.philox_permutation(len(X), seed, stream * 1_000_003 + epoch) if self.shuffle else None
            mistakes = ops(X).perceptron_epoch(X, targets, self._w, self._b, order, self.eta0)
            self.n_iter_ = epoch + 1
            if mistakes == 0:
                break
        return self

    @property
    def coef_(self):
        return self._w.T.copy()

    @property
    def intercept_(self):
        return self._b.copy()

    def decision_function(self, X):
        if not hasattr(self, "_w"):
            raise RuntimeError("Perceptron: call fit(X, y) before predict/decision_function")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self._w.shape[0]:
            raise ValueError(f"Perceptron: expected X of shape (n, {self._w.shape[0]}), got {X.shape}")
        s = X @ self._w + self._b
        return s[:, 0] if self._mode == "binary" else s

    def predict(self, X):
        s = self.decision_function(X)
        if self._mode == "binary":
            return self.classes_[(s >= 0).astype(int)]
        if self._mode == "multiclass":
            return self.classes_[np.argmax(s, axis=1)]
        return (s >= 0).astype(np.int64)

    def score(self, X, y):
        return float(np.mean(self.predict(X) == np.asarray(y)))
