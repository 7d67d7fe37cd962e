"""The one place that picks a backend for a tensor.

A tensor is a NumPy array (host memory, kernels in ``deepcore._core``) or a
CUDA device tensor (``deepcore._cuda.DeviceBuffer``, kernels of the same names
and arguments in ``deepcore._cuda``). Layers, losses and optimizers call
``ops(x)`` for the kernel module that fits ``x`` and ``empty(..., like=x)``
for buffers beside it, and never branch on the device themselves.

Devices are named "cpu", "cuda" (the current CUDA device) or "cuda:N";
:func:`parse_device` is the one function that reads those names.
"""
from __future__ import annotations

import re
import sys

import numpy as np

from . import cuda as _cuda_front
from ._native import core

__all__ = ["ops", "empty", "parse_device", "device_of", "is_device_tensor", "to_host", "to_device", "assign",
           "reshape", "contiguous", "set_num_threads", "get_num_threads"]

_ndarray = np.ndarray
# The CUDA module and its tensor type, set on first use (the module is
# imported lazily: `import deepcore` never loads it).
_device_ops = None
_device_type = None

_ACCEPTED = "'cpu', 'cuda' (the current CUDA device) or 'cuda:N' (N a device index, e.g. 'cuda:0')"
_CUDA_NAME = re.compile(r"cuda(?::([0-9]+))?")


def _cuda_module():
    """The CUDA kernel module, or RuntimeError saying why it cannot be used."""
    global _device_ops, _device_type
    mod = _cuda_front._probe()
    if mod is None:
        raise RuntimeError(f"CUDA is not available: {_cuda_front.reason()}")
    if mod is not _device_ops:
        _device_ops, _device_type = mod, mod.DeviceBuffer
    return mod


def is_device_tensor(x) -> bool:
    """True for a CUDA device tensor (a deepcore._cuda.DeviceBuffer)."""
    t = type(x)
    if t is _device_type:
        return True
    if t is _ndarray or _device_type is not None:
        return False
    # A DeviceBuffer made before anything here asked for CUDA.
    mod = sys.modules.get("deepcore._cuda")
    if mod is not None and isinstance(x, getattr(mod, "DeviceBuffer", ())):
        _cuda_module()
        return type(x) is _device_type
    return False


def ops(x=None, *more):
    """The kernel module for these tensors: deepcore._core for NumPy arrays,
    deepcore._cuda for CUDA device tensors. None entries are skipped; tensors
    on different devices are a ValueError. With no tensor: deepcore._core
    (for calls that take no tensor, kept for compatibility)."""
    # The hot path, one tensor: a type check (this signature avoids packing
    # the arguments into a tuple, measured 100 ns a call cheaper).
    t = type(x)
    if not more:
        if t is _ndarray:
            return core
        if t is _device_type:
            return _device_ops
    return _ops_slow((x,) + more)


def _ops_slow(tensors):
    found = {}
    for x in tensors:
        if x is None:
            continue
        if isinstance(x, _ndarray):
            found.setdefault("cpu (NumPy array)", core)
        elif is_device_tensor(x):
            found.setdefault(f"cuda:{x.device} (DeviceBuffer)", _device_ops)
        else:
            raise TypeError(f"expected a NumPy array or a CUDA device tensor (deepcore._cuda.DeviceBuffer), got "
                            f"{type(x).__module__}.{type(x).__qualname__}")
    if len(found) > 1:
        raise ValueError(f"tensors on different devices: {', '.join(found)}; move them to one device first "
                         f"(model.to(...), deepcore.backend.to_device / to_host)")
    return next(iter(found.values()), core)


def _current_cuda_device(mod) -> int:
    current = getattr(mod, "current_device", None)
    if current is not None:
        return int(current())
    return int(mod.DeviceBuffer((0,), "float32").device)  # allocated where kernels run now


def parse_device(device) -> str:
    """The canonical name of a device: "cpu" or "cuda:N". Accepts "cpu",
    "cuda" and "cuda:N". A bad name is a ValueError listing those forms; CUDA
    when it is unavailable is a RuntimeError with deepcore.cuda.reason(), and
    an index with no device a ValueError saying how many there are."""
    if isinstance(device, str):
        if device == "cpu":
            return "cpu"
        match = _CUDA_NAME.fullmatch(device)
        if match is not None:
            mod = _cuda_module()
            current = _current_cuda_device(mod)
            if match.group(1) is None:
                return f"cuda:{current}"
            index = int(match.group(1))
            if index == current:
                return f"cuda:{index}"
            count = int(mod.device_count())
            if index >= count:
                raise ValueError(f"device {device!r} does not exist: {count} CUDA device(s), cuda:0 .. "
                                 f"cuda:{count - 1}")
            why = mod.unavailable_reason(index)  # (is_available() checked the current device only)
            if why:
                raise RuntimeError(f"device {device!r} cannot run deepcore's kernels: {why}")
            return f"cuda:{index}"
        raise ValueError(f"unknown device {device!r}; expected {_ACCEPTED}")
    raise TypeError(f"device must be a string, {_ACCEPTED}; got {type(device).__name__} {device!r}")


def device_of(x) -> str:
    """ "cpu" for a NumPy array, "cuda:N" for a device tensor on device N."""
    if isinstance(x, _ndarray):
        return "cpu"
    if is_device_tensor(x):
        return f"cuda:{x.device}"
    raise TypeError(f"device_of: expected a NumPy array or a CUDA device tensor, got {type(x).__name__}")


def empty(shape, dtype="float32", like=None, device=None):
    """A zero-filled tensor: on like's device when like is given, else on
    ``device`` (default "cpu"). On the CPU a 64-byte aligned NumPy array
    owned by the kernel library; on CUDA a DeviceBuffer."""
    if like is not None:
        if device is not None:
            raise ValueError("empty: give like= or device=, not both")
        t = type(like)
        if t is _ndarray or isinstance(like, _ndarray):
            return np.asarray(core.Buffer([int(s) for s in shape], dtype))
        if t is _device_type or is_device_tensor(like):
            return _device_type([int(s) for s in shape], dtype, like.device)
        raise TypeError(f"empty: like must be a NumPy array or a CUDA device tensor, got {t.__name__}")
    name = "cpu" if device is None or device == "cpu" else parse_device(device)
    if name == "cpu":
        return np.asarray(core.Buffer([int(s) for s in shape], dtype))
    return _device_type([int(s) for s in shape], dtype, int(name[5:]))


def to_host(x, copy=False) -> np.ndarray:
    """x as a NumPy array: a device tensor is copied to the host
    (synchronizing); a NumPy array is returned as is (a copy with copy=True);
    anything else goes through np.asarray. Treat the result as read-only
    unless copy=True."""
    if type(x) is _ndarray:
        return np.array(x, copy=True) if copy else x
    if is_device_tensor(x):
        return x.to_numpy()
    return np.array(x, copy=True) if copy else np.asarray(x)


def to_device(x, device):
    """x on ``device`` ("cpu", "cuda", "cuda:N"): x itself when it is already
    there, else a copy (a NumPy array for "cpu", a DeviceBuffer for CUDA)."""
    dev = device if device == "cpu" else parse_device(device)
    if dev == "cpu":
        if not is_device_tensor(x):
            return np.asarray(x)
        host = empty(x.shape, np.dtype(x.dtype).name)  # aligned, as the kernel library allocates
        host[...] = x.to_numpy()
        return host
    index = int(dev[5:])
    if is_device_tensor(x):
        if x.device == index:
            return x
        return _device_ops.to_device(x.to_numpy(), device=index)  # between devices: through the host
    return _device_ops.to_device(np.require(x, requirements="C"), device=index)  # keeps 0-d (ascontiguousarray: (1,))


def assign(dst, src) -> None:
    """dst[...] = src, whatever the devices of dst and src: a NumPy source is
    cast to dst's dtype; a device source goes to a NumPy dst, or a tensor on
    another CUDA device, through the host."""
    if isinstance(dst, _ndarray):
        dst[...] = to_host(src)
    elif is_device_tensor(src):
        dst[...] = src if src.device == dst.device else src.to_numpy()
    else:
        dst[...] = np.require(src, dtype=dst.dtype, requirements="C")


def reshape(x, shape):
    """A view of x with this shape (0-d included), on either device."""
    shape = tuple(int(s) for s in shape)
    if isinstance(x, _ndarray):
        return x.reshape(shape)
    return x.reshape(*shape)


def contiguous(x):
    """x as a C-contiguous tensor: NumPy arrays through np.ascontiguousarray;
    device tensors are always contiguous."""
    return np.ascontiguousarray(x) if isinstance(x, _ndarray) else x


def set_num_threads(n: int) -> None:
    """Threads used by deepcore's own pool (its CPU kernels) and by its OpenBLAS
    (the scipy_openblas32 library it loads; never NumPy's or PyTorch's)."""
    core.set_num_threads(int(n))


def get_num_threads() -> int:
    return core.get_num_threads()
