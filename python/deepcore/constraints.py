"""Weight constraints, applied in place after every optimizer update
(``kernel_constraint=constraints.MaxNorm(3)``)."""
from __future__ import annotations

import math

import numpy as np

from .backend import is_device_tensor, ops, to_host

__all__ = ["Constraint", "MaxNorm", "max_norm", "get", "serialize"]


class Constraint:
    """Base class: ``apply(w)`` projects the array w in place."""

    def apply(self, w: np.ndarray) -> None:
        raise NotImplementedError

    def __call__(self, w):
        """The projection of w as a new NumPy array (w itself is not changed)."""
        w = np.array(to_host(w) if is_device_tensor(w) else w, dtype=np.float32, copy=True)
        self.apply(w)
        return w

    def get_config(self) -> dict:
        return {}


class MaxNorm(Constraint):
    """Max-norm regularization: each weight vector along ``axis`` whose L2 norm
    exceeds ``max_value`` is rescaled to norm ``max_value`` (w <- w r / ||w||),
    in one fused pass. Keras defaults: max_value=2, axis=0 (for a Dense kernel
    of shape (inputs, units), the incoming weights of each unit). ``axis`` may
    be a list of consecutive axes, e.g. [0, 1, 2] for a conv kernel.

    Keras scales every vector by clip(n, 0, r)/(n + 1e-7), which also shrinks
    vectors under the limit by a factor n/(n+1e-7); here they are left exact.
    """

    def __init__(self, max_value=2, axis=0):
        try:
            v = float(max_value)
        except (TypeError, ValueError):
            raise TypeError(f"MaxNorm: max_value must be a number, got {max_value!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"MaxNorm: max_value must be a finite number >= 0, got {max_value!r}")
        axes = [int(a) for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
        if not axes:
            raise ValueError("MaxNorm: axis must name at least one axis")
        self.max_value, self.axis = v, axis
        self._axes = axes

    def _span(self, ndim):
        axes = sorted(a + ndim if a < 0 else a for a in self._axes)
        if axes[0] < 0 or axes[-1] >= ndim:
            raise ValueError(f"MaxNorm: axis {self.axis} does not exist for a weight of rank {ndim}")
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise ValueError(f"MaxNorm: axis must be consecutive axes, got {self.axis}")
        return axes[0], axes[-1]

    def apply(self, w):
        first, last = self._span(w.ndim)
        ops(w).max_norm(w, first, last, self.max_value)

    def check(self, shape, where):
        """Raise now (at build time) if the axis does not fit a weight of this shape."""
        try:
            self._span(len(shape))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}

    def __repr__(self):
        return f"MaxNorm(max_value={self.max_value}, axis={self.axis})"


max_norm = MaxNorm

_BY_NAME = {"max_norm": MaxNorm, "maxnorm": MaxNorm}


def serialize(constraint):
    return None if constraint is None else {"class_name": type(constraint).__name__,
                                            "config": constraint.get_config()}


def get(identifier):
    """None, a Constraint, a Keras name ("max_norm") or a serialize() dict."""
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in ("MaxNorm", "max_norm"):
        return MaxNorm(**identifier.get("config", {}))
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown constraint {identifier!r}; expected None, a Constraint such as "
                     f"constraints.MaxNorm(3), or 'max_norm'")
