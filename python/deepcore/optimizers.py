"""Optimizers. A model keeps its trainable weights in one flat buffer, so an
optimizer step is one fused C++ call over all parameters."""
from __future__ import annotations

import math

import numpy as np

from .backend import empty, ops


def _check_rate(name, value):
    if callable(value):
        return value
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: learning_rate must be a finite number >= 0, got {value!r}")
    return value


class Optimizer:
    """Base: ``build(n)`` creates the slots for n parameters, ``apply(params,
    grads)`` updates them in place and counts the step in ``iterations``."""

    def __init__(self, learning_rate=0.01, name=None):
        self.name = name or type(self).__name__.lower()
        self._learning_rate = _check_rate(type(self).__name__, learning_rate)
        self.iterations = 0
        self._size = None

    @property
    def learning_rate(self) -> float:
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = _check_rate(type(self).__name__, value)

    def build(self, size: int) -> None:
        self._size = int(size)

    def apply(self, params: np.ndarray, grads: np.ndarray) -> None:
        if self._size != params.size:
            self.build(params.size)
        lr = self.learning_rate
        if not math.isfinite(lr):
            raise ValueError(f"{type(self).__name__}: the learning-rate schedule returned {lr!r} "
                             f"at step {self.iterations}")
        self._update(params, grads, lr)
        self.iterations += 1

    def _update(self, params, grads, lr):
        raise NotImplementedError

    def get_config(self) -> dict:
        lr = self._learning_rate
        return {"name": self.name, "learning_rate": lr if not callable(lr) else repr(lr)}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, Keras's
    formulation. Defaults: learning_rate=0.01, momentum=0.0, nesterov=False.

        v <- momentum v - lr g
        w <- w + v                    (momentum)
        w <- w + momentum v - lr g    (nesterov)

    PyTorch's SGD keeps v' = -v/lr (v <- momentum v + g, w <- w - lr v); with a
    constant learning rate the two give the same weights.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None):
        super().__init__(learning_rate, name)
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0 or not math.isfinite(momentum):
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum!r}")
        self.momentum, self.nesterov = momentum, bool(nesterov)
        self.velocity = None

    def build(self, size):
        super().build(size)
        self.velocity = empty((size,)) if self.momentum > 0 else None

    def _update(self, params, grads, lr):
        ops().sgd_update(params, grads, self.velocity, lr, self.momentum, self.nesterov)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(momentum=self.momentum, nesterov=self.nesterov)
        return cfg


_BY_NAME = {"sgd": SGD}


def get(identifier) -> Optimizer:
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown optimizer {identifier!r}; expected an Optimizer or one of: {', '.join(_BY_NAME)}")
