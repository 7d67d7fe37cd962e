"""The CUDA backend's front door.

``deepcore._cuda`` is built when CMake finds a CUDA toolkit
(``DEEPCORE_ENABLE_CUDA=AUTO``, the default). It links the CUDA runtime
statically, and this module imports it lazily, so ``import deepcore`` works on
machines without a GPU, a driver, or the CUDA module itself;
:func:`is_available` answers before anything fails and :func:`reason` says why
not.
"""
from __future__ import annotations

__all__ = ["is_available", "reason", "device_count"]

_probed = False
_module = None
_reason = ""


def _probe():
    """Import deepcore._cuda and ask it for a usable device, once. Never raises."""
    global _probed, _module, _reason
    if _probed:
        return _module
    _probed = True
    try:
        from . import _cuda
    except ModuleNotFoundError as e:
        _reason = f"deepcore was built without the CUDA backend ({e})"
        return None
    except Exception as e:  # a broken build must not break `import deepcore`
        _reason = f"deepcore._cuda failed to load ({type(e).__name__}: {e})"
        return None
    try:
        why = _cuda.unavailable_reason()
    except Exception as e:
        why = f"the CUDA runtime failed to initialize ({type(e).__name__}: {e})"
    if why:
        _reason = why
        return None
    _module = _cuda
    return _module


def is_available() -> bool:
    """True when the CUDA backend is built and device 0 can run its kernels; see reason()."""
    return _probe() is not None


def reason() -> str:
    """Why CUDA is unavailable ("" when it is available)."""
    _probe()
    return _reason


def device_count() -> int:
    """Number of CUDA devices the driver reports (0 without the backend, a driver or a device)."""
    try:
        from . import _cuda
    except Exception:
        return 0
    try:
        return int(_cuda.device_count())
    except Exception:
        return 0
