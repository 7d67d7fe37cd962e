"""Normalization layers: BatchNormalization and Normalization (adapt)."""
from __future__ import annotations

__all__: list[str] = []
