"""Reshape and RepeatVector, with Keras's names and semantics."""
from __future__ import annotations

import math

import numpy as np

from ..backend import empty, ops, reshape
from .base import Layer
from .core import _BatchBuffers

__all__ = ["Reshape", "RepeatVector"]


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (batch axis excluded): a view
    of the input, no copy, on either device; backward is the reverse view of
    the gradient. One entry of ``target_shape`` may be -1: it is inferred from
    the sample's size, as in Keras (``Reshape((-1, 2, 2))`` on samples of 12
    values gives (3, 2, 2))."""

    supports_device = True
    _per_call = ()  # nothing saved between forward and backward

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(target_shape, (int, np.integer)):
            target_shape = (target_shape,)
        try:
            target = tuple(target_shape)
        except TypeError:
            raise TypeError(f"Reshape '{self.name}': target_shape must be a tuple of ints, got "
                            f"{target_shape!r}") from None
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in target):
            raise TypeError(f"Reshape '{self.name}': target_shape must be a tuple of ints, got {target_shape!r}")
        target = tuple(int(d) for d in target)
        if target.count(-1) > 1:
            raise ValueError(f"Reshape '{self.name}': target_shape may contain at most one -1, got {target}")
        if any(d == 0 or d < -1 for d in target):
            raise ValueError(f"Reshape '{self.name}': target_shape entries must be positive (or one -1), got "
                             f"{target}")
        self.target_shape = target

    def compute_output_shape(self, input_shape):
        size = int(math.prod(input_shape))
        known = int(math.prod(d for d in self.target_shape if d != -1))
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"Reshape '{self.name}' cannot reshape samples of shape {tuple(input_shape)} "
                                 f"({size} values) to {self.target_shape}: {size} is not a multiple of {known}")
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if size != known:
            raise ValueError(f"Reshape '{self.name}' cannot reshape samples of shape {tuple(input_shape)} "
                             f"({size} values) to {self.target_shape} ({known} values)")
        return self.target_shape

    def forward(self, x, training=False):
        self._check_input(x)
        return reshape(x, (x.shape[0],) + self.output_shape)

    def backward(self, dy, need_dx=True):
        return reshape(dy, (dy.shape[0],) + self.input_shape) if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        cfg["target_shape"] = list(self.target_shape)
        return cfg


class RepeatVector(Layer):
    """Repeats each sample n times: (batch, features) -> (batch, n, features).
    Backward sums the n gradients of each feature (in repeat order)."""

    supports_device = True
    _per_call = ("_bufs", "_cur")

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"RepeatVector '{self.name}': n must be a positive integer, got {n!r}")
        self.n = int(n)
        self._bufs = _BatchBuffers()
        self._cur = None

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"RepeatVector '{self.name}' expects 2-D input (batch, features), got shape "
                             f"{(None,) + tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        return (self.n,) + tuple(input_shape)

    def _make_buffers(self, batch, like):
        return {"y": empty((batch, self.n) + self.input_shape, like=like),
                "dx": empty((batch,) + self.input_shape, like=like)}

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        ops(x).repeat_forward(x, b["y"])
        self._cur = b
        return b["y"]

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        b = self._cur
        ops(dy).repeat_backward(dy, b["dx"])
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg["n"] = self.n
        return cfg
