"""The one place that picks a backend for a tensor.

Layers call ``ops()`` and ``empty()`` and never branch on the device. Today
only the CPU backend exists; the CUDA backend plugs in here.
"""
from __future__ import annotations

import numpy as np

from ._native import core

_DEVICE = "cpu"


def ops():
    """The kernel module for the current device."""
    return core


def empty(shape, dtype="float32") -> np.ndarray:
    """A zero-filled, 64-byte aligned array owned by the kernel library."""
    return np.asarray(core.Buffer([int(s) for s in shape], dtype))


def set_num_threads(n: int) -> None:
    """Threads used by OpenMP kernels and by OpenBLAS."""
    core.set_num_threads(int(n))


def get_num_threads() -> int:
    return core.get_num_threads()


def device() -> str:
    return _DEVICE
