"""Sparse models, the chapter's three routes: l1 penalties
(``kernel_regularizer=regularizers.l1(...)``), the Ftrl optimizer with
``l1_regularization_strength`` (exact zeros during training), and pruning
after training with ``prune``. On a CUDA model the weights are read and
written back through host copies."""
from __future__ import annotations

import math

import numpy as np

from .backend import assign, to_host

__all__ = ["prune", "sparsity"]


def _targets(model, include_bias):
    """Weights that pruning considers: weight matrices and other tensors of
    rank >= 2 that are parameters by design (Dense kernels), plus biases when
    asked. Per-unit vectors that scale or shift a whole channel (BatchNorm's
    gamma/beta, PReLU slopes) and moving statistics are never pruned."""
    return [var for layer in model.layers for var in layer._variables
            if var.trainable and (len(var.value.shape) >= 2 or (include_bias and var.name == "bias"))]


def prune(model, threshold, include_bias=False) -> dict:
    """Zero, in place, every weight with |w| < threshold (kernels and other
    weight tensors of rank >= 2; biases too with include_bias=True). Returns
    {"pruned": count zeroed now, "total": weights considered,
    "fraction": fraction of those that are zero after pruning,
    "per_weight": {path: fraction zero}}."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"prune: threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"prune: threshold must be a finite number >= 0, got {threshold!r}")
    if not model.built:
        raise ValueError("prune: the model is not built yet")
    pruned, total, zeros, per = 0, 0, 0, {}
    for var in _targets(model, include_bias):
        w = to_host(var.value, copy=True)
        small = (np.abs(w) < threshold) & (w != 0)
        pruned += int(small.sum())
        w[small] = 0.0
        assign(var.value, w)
        z = int((w == 0).sum())
        zeros += z
        total += w.size
        per[var.path] = z / w.size if w.size else 0.0
    return {"pruned": pruned, "total": total, "fraction": zeros / total if total else 0.0, "per_weight": per}


def sparsity(model, include_bias=False) -> float:
    """Fraction of exactly-zero weights (same selection as prune)."""
    vs = _targets(model, include_bias)
    total = sum(v.value.size for v in vs)
    return sum(int((to_host(v.value) == 0).sum()) for v in vs) / total if total else 0.0
