"""Weight penalties (Keras): ``kernel_regularizer=regularizers.l2(0.01)``.

The penalty ``l1 * sum|w| + l2 * sum w^2`` is added to the reported loss, and
its gradient ``l1 * sign(w) + 2 * l2 * w`` is added to the weight gradient
inside the fused optimizer step (before clipping, as Keras does by adding the
penalty to the loss). Only L1/L2 penalties exist: they are what the fused
kernel computes.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import to_host

__all__ = ["Regularizer", "L1L2", "L1", "L2", "l1", "l2", "l1_l2", "get", "serialize"]


class Regularizer:
    """Base class: ``l1`` and ``l2`` strengths; calling it on an array returns
    the penalty value."""

    l1 = 0.0
    l2 = 0.0

    def __call__(self, w) -> float:
        w = np.asarray(to_host(w), dtype=np.float64)  # a device tensor is copied to the host
        return float(self.l1 * np.abs(w).sum() + self.l2 * np.square(w).sum())

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"{type(self).__name__}(l1={self.l1}, l2={self.l2})"


def _strength(owner, name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return v


class L1L2(Regularizer):
    """Both penalties; Keras's class defaults are l1=0.0, l2=0.0."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _strength(type(self).__name__, "l1", l1)
        self.l2 = _strength(type(self).__name__, "l2", l2)


class L1(L1L2):
    """l1 * sum|w| (Keras default l1=0.01)."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1, l2=0.0)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """l2 * sum w^2 (Keras default l2=0.01; no 1/2 factor)."""

    def __init__(self, l2=0.01):
        super().__init__(l1=0.0, l2=l2)

    def get_config(self):
        return {"l2": self.l2}


l1 = L1
l2 = L2


def l1_l2(l1=0.01, l2=0.01):
    """Both penalties with Keras's function defaults (0.01 each)."""
    return L1L2(l1=l1, l2=l2)


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": L1L2}


def get(identifier):
    """None, a Regularizer, a Keras name ("l1", "l2", "l1_l2") or a config dict."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict):
        if "class_name" in identifier:  # the serialize() form
            name, cfg = identifier["class_name"], identifier.get("config", {})
            classes = {"L1": L1, "L2": L2, "L1L2": L1L2}
            if name not in classes:
                raise ValueError(f"Unknown regularizer class {name!r}; expected one of {sorted(classes)}")
            return classes[name](**cfg)
        return L1L2(identifier.get("l1", 0.0), identifier.get("l2", 0.0))
    raise ValueError(f"Unknown regularizer {identifier!r}; expected None, regularizers.l1(...), l2(...), "
                     f"l1_l2(...) or one of the names {sorted(_BY_NAME)} (only L1/L2 penalties are fused into "
                     f"the optimizer step)")


def serialize(reg):
    return None if reg is None else {"class_name": type(reg).__name__, "config": reg.get_config()}
