"""The CUDA backend's front door. ``deepcore._cuda`` is built only when CMake
finds a CUDA toolkit (and DEEPCORE_ENABLE_CUDA=ON); it is imported lazily, so
``import deepcore`` works on machines without a GPU or driver."""
from __future__ import annotations

_REASON = None


def _probe():
    global _REASON
    try:
        from . import _cuda  # noqa: F401
    except ImportError as e:
        _REASON = f"deepcore was built without the CUDA backend ({e})"
        return None
    n = _cuda.device_count()
    if n == 0:
        _REASON = "the CUDA backend is built but no CUDA device or driver was found"
        return None
    return _cuda


def is_available() -> bool:
    """True when the CUDA backend is built and a device is usable; see reason()."""
    return _probe() is not None


def reason() -> str:
    """Why CUDA is unavailable ("" when it is available)."""
    return "" if _probe() is not None else _REASON
