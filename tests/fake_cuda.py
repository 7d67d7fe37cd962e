"""A CPU-backed test double of deepcore._cuda, so that device dispatch
(``model.to("cuda")``, backend.ops, staging batches, host copies) is tested on
machines without a GPU.

``FakeDeviceBuffer`` implements the DeviceBuffer contract on a NumPy array it
keeps private, and refuses every implicit host conversion (``__array__``
raises TypeError, NumPy ufuncs are refused), so a code path that does NumPy
math on a device tensor fails here as it would on a GPU. The fake module's
kernels have the names and arguments of deepcore._core's; each unwraps its
FakeDeviceBuffer arguments, rejects NumPy arrays where the real module wants
device tensors (only optimizer_step's offsets, l1 and l2 stay on the host, as
in cuda/module.cpp), and calls the _core kernel. Results are therefore bit
for bit those of the CPU: a fit on the fake device must equal the same fit
on the CPU exactly.

What it cannot check: anything the GPU computes differently (cuBLASLt GEMMs,
reduction orders, FMA contraction), asynchronous copies and streams, device
memory limits. The GPU tests in test_device_model.py cover those with a
tolerance when a GPU is present.
"""
from __future__ import annotations

import operator
import sys
import types

import numpy as np
import pytest

from deepcore import _core

_DTYPES = ("float32", "int32", "int64")

# The kernels of deepcore._core that deepcore._cuda has (or is getting, with
# the same arguments): every twin. Host-only functions (philox_permutation,
# perceptron_epoch, threads, BLAS info) are deliberately absent.
TWINS = (
    "activation_forward", "activation_backward", "swish_beta_grad", "sgemm", "dense_forward", "dense_backward",
    "loss_forward_backward", "sparse_categorical_crossentropy", "philox_uniform", "philox_normal", "sgd_update",
    "optimizer_step", "max_norm", "batchnorm_forward_train", "batchnorm_forward_inference", "batchnorm_backward",
    "channel_affine", "dropout_forward", "dropout_backward", "dropout_mask", "alpha_dropout_forward",
    "alpha_dropout_backward", "rrelu_forward", "rrelu_backward", "prelu_forward", "prelu_backward",
    "count_nonfinite", "gather_rows",
)
# Arguments that stay NumPy arrays on the host (by position and by name).
_HOST_ARGS = {"optimizer_step": ({6, 7, 8}, {"offsets", "l1", "l2"})}


class FakeCudaError(RuntimeError):
    pass


class FakeDeviceBuffer:
    """A device tensor of the DeviceBuffer contract, held in host memory."""

    __slots__ = ("_a", "_device", "__weakref__")
    __array_ufunc__ = None  # NumPy operators refuse it: `devbuf * 2` is a TypeError

    def __init__(self, shape, dtype="float32"):
        dtype = np.dtype(dtype)
        if dtype.name not in _DTYPES:
            raise TypeError(f"DeviceBuffer: dtype must be 'float32', 'int32' or 'int64', got '{dtype}'")
        shape = tuple(operator.index(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError("DeviceBuffer: negative dimension in shape")
        self._a = np.zeros(shape, dtype)
        self._device = FakeCuda.current

    @classmethod
    def _view(cls, array, device):
        buf = object.__new__(cls)
        buf._a, buf._device = array, device
        return buf

    # ---------------------------------------------------------- properties
    shape = property(lambda self: tuple(self._a.shape))
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: int(self._a.size))
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: int(self._a.nbytes))
    device = property(lambda self: self._device)
    data_ptr = property(lambda self: int(self._a.ctypes.data))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of a 0-d DeviceBuffer")
        return self._a.shape[0]

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self._a.dtype.str, "data": (self.data_ptr, False),
                "strides": None, "version": 3, "stream": 1}

    def __dlpack__(self, stream=None):  # the fake's memory is host memory: a CPU capsule
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return (2, self._device)

    # --------------------------------------------------------- no host math
    def __array__(self, *args, **kwargs):
        raise TypeError("DeviceBuffer: no implicit conversion to a NumPy array; copy it explicitly with "
                        ".to_numpy() (deepcore.backend.to_host)")

    def __float__(self):
        raise TypeError("DeviceBuffer: float() of a device tensor; copy it with .to_numpy() first")

    __int__ = __index__ = __float__

    def __bool__(self):
        raise TypeError("DeviceBuffer: the truth value of a device tensor is not defined")

    def __iter__(self):
        raise TypeError("DeviceBuffer: not iterable; copy it with .to_numpy() first")

    def __eq__(self, other):
        raise TypeError("DeviceBuffer: comparison of device tensors is not defined")

    __hash__ = object.__hash__

    # ---------------------------------------------------------------- views
    def reshape(self, *shape):
        if any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) for d in shape):
            raise TypeError(f"DeviceBuffer.reshape(*shape): dimensions must be ints, got {shape!r}")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape) or int(np.prod(shape)) != self.size:
            raise ValueError(f"DeviceBuffer.reshape: cannot view {self.shape} as {shape}")
        return FakeDeviceBuffer._view(self._a.reshape(shape), self._device)

    def _select(self, key):
        """The NumPy view for buf[key]: an int, a slice of step 1 along axis 0, or ..."""
        if key is Ellipsis:
            return self._a[...]
        if self._a.ndim == 0:
            raise IndexError("DeviceBuffer: a 0-d tensor takes only [...]")
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError("DeviceBuffer: slices must have step 1 (views are contiguous)")
            return self._a[key]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = self._a.shape[0]
            if not -n <= key < n:
                raise IndexError(f"DeviceBuffer: index {key} out of range for axis 0 of size {n}")
            return self._a[key]
        raise TypeError(f"DeviceBuffer: index with an int, a slice along axis 0 or ..., got {type(key).__name__}")

    def __getitem__(self, key):
        return FakeDeviceBuffer._view(self._select(key), self._device)

    def __setitem__(self, key, value):
        dst = self._select(key)
        if isinstance(value, FakeDeviceBuffer):
            if value._device != self._device:
                raise ValueError(f"DeviceBuffer: source on cuda:{value._device}, destination on cuda:{self._device}")
            if value.dtype != dst.dtype or value.shape != dst.shape:
                raise ValueError(f"DeviceBuffer: device copy needs the same dtype and shape, got {value.dtype} "
                                 f"{value.shape} into {dst.dtype} {dst.shape}")
            dst[...] = value._a
        elif isinstance(value, np.ndarray):
            if value.shape != dst.shape and value.ndim != 0:
                raise ValueError(f"DeviceBuffer: expected an array of shape {dst.shape} (or a scalar), got "
                                 f"{value.shape}")
            dst[...] = value.astype(dst.dtype, copy=False)
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            dst[...] = value
        else:
            raise TypeError(f"DeviceBuffer: cannot assign a {type(value).__name__}; give a NumPy array, a "
                            f"DeviceBuffer or a number")

    # ---------------------------------------------------------------- copies
    def copy(self):
        return FakeDeviceBuffer._view(self._a.copy(), self._device)

    def to_numpy(self):
        return np.array(self._a, copy=True)

    numpy = to_numpy

    def copy_from(self, array, non_blocking=False):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"DeviceBuffer.copy_from: expected a numpy array, got {type(array).__name__}")
        if array.dtype != self._a.dtype:
            raise TypeError(f"DeviceBuffer.copy_from: expected dtype {self._a.dtype}, got {array.dtype}")
        if not array.flags.c_contiguous:
            raise ValueError("DeviceBuffer.copy_from: the array must be C-contiguous (use np.ascontiguousarray)")
        if array.shape != self._a.shape:
            raise ValueError(f"DeviceBuffer.copy_from: expected shape {self.shape}, got {array.shape}")
        self._a[...] = array  # copied now: the caller may reuse its array at once

    def __repr__(self):
        return f"DeviceBuffer(shape={self.shape}, dtype={self._a.dtype}, device=cuda:{self._device}) [fake]"


def _unwrap(value, fn, where, host_ok):
    if isinstance(value, FakeDeviceBuffer):
        if value._device != FakeCuda.current:
            raise ValueError(f"{fn}: {where} is on cuda:{value._device} but the current device is "
                             f"cuda:{FakeCuda.current}")
        return value._a
    if isinstance(value, np.ndarray) and not host_ok:
        raise TypeError(f"{fn}: {where} must be a deepcore._cuda.DeviceBuffer (deepcore._cuda.to_device(array) "
                        f"makes one), got <class 'numpy.ndarray'>")
    return value


def _twin(name):
    kernel = getattr(_core, name)
    host_pos, host_names = _HOST_ARGS.get(name, ((), ()))

    def twin(*args, **kwargs):
        FakeCuda.calls[name] = FakeCuda.calls.get(name, 0) + 1
        a = [_unwrap(v, name, f"argument {i}", i in host_pos) for i, v in enumerate(args)]
        k = {key: _unwrap(v, name, key, key in host_names) for key, v in kwargs.items()}
        return kernel(*a, **k)

    twin.__name__ = name
    twin.__doc__ = f"Fake CUDA twin of deepcore._core.{name} (runs the CPU kernel)."
    return twin


class FakeCuda:
    """State shared by the fake module: the current device, call counts."""

    current = 0
    calls: dict = {}


def make_module() -> types.ModuleType:
    mod = types.ModuleType("deepcore._cuda", "fake deepcore._cuda for tests (runs deepcore._core kernels)")
    mod.DeviceBuffer = FakeDeviceBuffer
    mod.CudaError = FakeCudaError
    mod.CudaOutOfMemoryError = type("CudaOutOfMemoryError", (MemoryError,), {})

    def to_device(array, non_blocking=False):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"to_device: expected a numpy array, got {type(array)}")
        buf = FakeDeviceBuffer(array.shape, array.dtype)
        buf.copy_from(np.require(array, requirements="C"))
        return buf

    def from_dlpack(obj):
        if isinstance(obj, FakeDeviceBuffer):
            return FakeDeviceBuffer._view(obj._a, obj._device)
        raise TypeError(f"from_dlpack: expected a CUDA tensor, got {type(obj).__name__}")

    mod.to_device = to_device
    mod.from_dlpack = from_dlpack
    mod.synchronize = lambda: None
    mod.device_count = lambda: 2  # two devices, so that "cuda:1" is a real but not current device
    mod.unavailable_reason = lambda: ""
    mod.memory_stats = lambda: {"live_bytes": 0, "cached_bytes": 0, "malloc_calls": 0}
    mod.empty_cache = lambda: None
    for name in TWINS:
        setattr(mod, name, _twin(name))
    return mod


@pytest.fixture
def fake_cuda(monkeypatch):
    """Install the fake as deepcore._cuda: deepcore.cuda.is_available() is
    True and "cuda" names it, for the duration of one test."""
    import deepcore
    from deepcore import backend, cuda

    mod = make_module()
    FakeCuda.current, FakeCuda.calls = 0, {}
    monkeypatch.setitem(sys.modules, "deepcore._cuda", mod)
    monkeypatch.setattr(deepcore, "_cuda", mod, raising=False)
    monkeypatch.setattr(cuda, "_probed", True)
    monkeypatch.setattr(cuda, "_module", mod)
    monkeypatch.setattr(cuda, "_reason", "")
    monkeypatch.setattr(backend, "_device_ops", None)
    monkeypatch.setattr(backend, "_device_type", None)
    return mod
