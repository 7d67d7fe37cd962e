"""The CUDA backend's front door.

``deepcore._cuda`` is built when CMake finds a CUDA toolkit
(``DEEPCORE_ENABLE_CUDA=AUTO``, the default). It links the CUDA runtime
statically, and this module imports it lazily, so ``import deepcore`` works on
machines without a GPU, a driver, or the CUDA module itself;
:func:`is_available` answers before anything fails and :func:`reason` says why
not.
"""
from __future__ import annotations

__all__ = ["is_available", "reason", "device_count", "blas_available", "blas_reason"]

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


def blas_available() -> bool:
    """True when CUDA is available and cuBLASLt (the GPU Dense layer's GEMM,
    loaded at run time) could be opened; see blas_reason()."""
    mod = _probe()
    return mod is not None and bool(mod.blas_available())


def blas_reason() -> str:
    """Why the GPU Dense layer cannot run ("" when it can): CUDA itself is
    unavailable, or cuBLASLt was not found where deepcore looked."""
    mod = _probe()
    if mod is None:
        return _reason
    if mod.blas_available():
        return ""
    return (f"{mod.blas_reason()}. Install it with pip install 'deepcore[cuda]' (the nvidia-cublas wheel) or "
            f"set DEEPCORE_CUBLASLT_PATH to libcublasLt.so.13")
