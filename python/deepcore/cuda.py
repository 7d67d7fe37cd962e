"""The CUDA backend's front door.

``deepcore._cuda`` is built when CMake finds a CUDA toolkit
(``DEEPCORE_ENABLE_CUDA=AUTO``, the default). It links the CUDA runtime
statically, and this module imports it lazily, so ``import deepcore`` works on
machines without a GPU, a driver, or the CUDA module itself;
:func:`is_available` answers before anything fails and :func:`reason` says why
not.
"""
from __future__ import annotations

__all__ = ["is_available", "reason", "device_count", "current_device", "set_device", "device", "blas_available",
           "blas_reason"]

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


def _require():
    """The CUDA module, or RuntimeError saying why it cannot be used."""
    mod = _probe()
    if mod is None:
        raise RuntimeError(f"CUDA is not available: {_reason}")
    return mod


def _index(dev) -> int:
    """A device index from an int, "cuda" (the current device) or "cuda:N"."""
    if isinstance(dev, str):
        from .backend import parse_device  # (backend imports this module)

        name = parse_device(dev)
        if name == "cpu":
            raise ValueError(f"expected a CUDA device ('cuda', 'cuda:N' or an index), got {dev!r}")
        return int(name[5:])
    if isinstance(dev, bool) or not isinstance(dev, int):
        raise TypeError(f"a CUDA device is an index or 'cuda:N', got {type(dev).__name__} {dev!r}")
    return dev


def current_device() -> int:
    """The index of this thread's current CUDA device: where new device
    tensors are allocated and kernels run (RuntimeError without CUDA)."""
    return int(_require().current_device())


def set_device(dev) -> None:
    """Make ``dev`` (an index, "cuda" or "cuda:N") this thread's current CUDA
    device, as torch.cuda.set_device. A model on "cuda:N" makes its device
    current by itself for each call (fit, predict, ...): this is for
    deepcore.backend calls on device tensors made outside a model."""
    _require().set_device(_index(dev))


class device:
    """Context manager: ``dev`` (an index, "cuda" or "cuda:N") is the current
    CUDA device inside the block, and the previous one again after it, as
    torch.cuda.device. None and "cpu" do nothing."""

    __slots__ = ("_index", "_previous")

    def __init__(self, dev):
        self._index = None if dev is None or dev == "cpu" else _index(dev)
        self._previous = []

    def __enter__(self):
        if self._index is not None:
            mod = _require()
            previous = int(mod.current_device())
            if previous != self._index:
                mod.set_device(self._index)
            self._previous.append(previous)
        return self

    def __exit__(self, *exc):
        if self._index is not None:  # always: the block may have changed the device itself
            _module.set_device(self._previous.pop())
        return False


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
