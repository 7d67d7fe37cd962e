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

CUDA graphs (``Graph``, ``DeviceHyper``, ``SegmentTable``, ``LossScalars``,
``increment_counter`` and the ``*_graph`` kernel variants) are faked as a GPU
runs them: between ``capture_begin`` and ``capture_end`` a kernel is recorded,
not executed, with its arguments (device tensors by reference, numbers by
value: baked in); ``replay`` runs the records in order. A call that needs the
host (``to_numpy``, ``copy_from``, a copy from a NumPy array, the eager
``optimizer_step``, losses, ``count_nonfinite``, ``gather_rows``,
``DeviceHyper.set``, the read methods) raises
``CaptureError`` during a capture and aborts it, as cuda/graph.h does. The
device step state is read when a replay runs: a step whose learning rate or
dropout call was passed as a Python number during the capture repeats that
number on every replay here, as it would on a GPU.

Where the real module is stricter the fake is too (cuda/device_buffer.cpp,
interop.cpp, module.cpp, graph_bindings.cpp): buf[i] is a view (0-d for a
1-D buffer), a buffer cannot be pickled or copied by the copy module,
``__array_interface__`` raises, slices take step 1, a device copy does not
cast, a value of the target's shape (a number into a 0-d target included)
is an upload (refused during a capture) and a single element a fill,
gather_rows takes host int64 indices, SegmentTable typed host arrays. Every
kernel first runs the real module's pybind argument parsing on its
arguments (``_real_parse``): a call the real module would reject as
"incompatible function arguments" fails here too. ``FakeCuda.devices``
(default 1) is what device_count() says, ``FakeCuda.blas`` (default True)
what blas_available() says; a test may change either.

What it cannot check: anything the GPU computes differently (cuBLASLt GEMMs,
reduction orders, FMA contraction), asynchronous copies and streams, device
memory limits. The GPU tests in test_device_model.py cover those with a
tolerance when a GPU is present.
"""
from __future__ import annotations

import functools
import operator
import sys
import types

import numpy as np
import pytest

from deepcore import _core
try:  # the real module: it imports without a GPU and parses arguments there; absent without a CUDA toolkit
    from deepcore import _cuda as _REAL
except ImportError:
    _REAL = None

_DTYPES = ("float32", "int32", "int64")


def _dtype_name(dtype):
    """cuda/device_buffer.cpp's dtype_name: a str must be one of the three names; anything else goes through
    np.dtype()."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in _DTYPES:
        raise TypeError(f"DeviceBuffer: dtype must be 'float32', 'int32' or 'int64', got '{name}'")
    return name


def _real_parse(name, args, kwargs):
    """Run the real module's pybind argument parsing on these arguments: a TypeError of incompatible arguments
    is re-raised; anything else (the real body refusing a fake tensor, or the missing device) is not ours.
    Nothing to check against where deepcore was built without CUDA."""
    if _REAL is None:
        return
    try:
        getattr(_REAL, name)(*args, **kwargs)
    except TypeError as e:
        if "incompatible function arguments" in str(e):
            raise
    except Exception:
        pass

# The kernels of deepcore._core that deepcore._cuda has (or is getting, with
# the same arguments): every twin. Host-only functions (philox_permutation,
# perceptron_epoch, threads, BLAS info) are deliberately absent.
TWINS = (
    "activation_forward", "activation_backward", "swish_forward", "swish_backward", "swish_beta_grad", "sgemm",
    "dense_forward", "dense_backward", "loss_forward_backward", "sparse_categorical_crossentropy", "philox_uniform",
    "philox_normal", "sgd_update",
    "optimizer_step", "max_norm", "batchnorm_forward_train", "batchnorm_forward_inference", "batchnorm_backward",
    "channel_affine", "dropout_forward", "dropout_backward", "dropout_mask", "alpha_dropout_forward",
    "alpha_dropout_backward", "rrelu_forward", "rrelu_backward", "prelu_forward", "prelu_backward",
    "count_nonfinite", "gather_rows", "merge_forward", "merge_backward", "concatenate_forward",
    "concatenate_backward", "repeat_forward", "repeat_backward",
    "conv2d_forward", "conv2d_backward", "pool2d_forward", "pool2d_backward", "pad2d", "crop2d",
)
# Twins that wait for the device (they return a host value or read host
# memory): refused during a capture, as by ensure_not_capturing in cuda/.
_SYNCING = {"optimizer_step", "sparse_categorical_crossentropy", "loss_forward_backward", "count_nonfinite",
            "gather_rows"}
# Arguments that stay NumPy arrays on the host (by position and by name).
_HOST_ARGS = {"optimizer_step": ({6, 7, 8}, {"offsets", "l1", "l2"}), "gather_rows": ({1}, {"indices"})}


class FakeCudaError(RuntimeError):
    pass


class FakeCaptureError(FakeCudaError):
    pass


def _refuse_during_capture(fn, why):
    """CaptureError when a capture runs, after aborting it (cuda/graph.h's ensure_not_capturing)."""
    graph = FakeCuda.capture
    if graph is not None:
        message = f"{fn} cannot run inside a CUDA graph capture: {why}"
        graph._abort(message)
        raise FakeCaptureError(message)


def _queue(work):
    """Run work now, or record it (not run) while a capture is under way."""
    graph = FakeCuda.capture
    if graph is None:
        work()
    else:
        graph._records.append(work)


def _checked_device(device, fn):
    """cuda/device_buffer.cpp's checked_device: an existing index, or the current device for None."""
    if device is None:
        return FakeCuda.current
    if isinstance(device, bool) or not isinstance(device, int):
        raise TypeError(f"{fn}: device must be an int (a CUDA device index) or None (the current device), "
                        f"got {type(device).__name__}")
    if not 0 <= device < FakeCuda.devices:
        raise ValueError(f"{fn}: device {device} does not exist: {FakeCuda.devices} CUDA device(s), "
                         f"0 .. {FakeCuda.devices - 1}")
    return device


class FakeDeviceBuffer:
    """A device tensor of the DeviceBuffer contract, held in host memory."""

    __slots__ = ("_a", "_device", "__weakref__")
    __array_ufunc__ = None  # NumPy operators refuse it: `devbuf * 2` is a TypeError

    def __init__(self, shape, dtype="float32", device=None):
        dtype = np.dtype(_dtype_name(dtype))
        device = _checked_device(device, "DeviceBuffer")
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") or any(
                isinstance(d, (float, np.floating)) for d in shape):
            raise TypeError(f"DeviceBuffer(): incompatible constructor arguments: shape must be a sequence of "
                            f"ints, got {shape!r}")
        shape = tuple(operator.index(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError("DeviceBuffer: negative dimension in shape")
        self._a = np.zeros(shape, dtype)
        self._device = device

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

    @property
    def __array_interface__(self):  # as the real one: np.asarray(buf) fails instead of walking it as a sequence
        raise TypeError(f"a DeviceBuffer lives on cuda:{self._device}; convert it to NumPy explicitly with "
                        f".to_numpy()")

    # A device tensor cannot be pickled or copied by the copy module (pybind's default); deepcopy of a model
    # must map every one in its memo.
    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle 'deepcore._cuda.DeviceBuffer' object")

    def __reduce__(self):
        raise TypeError("cannot pickle 'deepcore._cuda.DeviceBuffer' object")

    def __copy__(self):
        raise TypeError("cannot pickle 'deepcore._cuda.DeviceBuffer' object")

    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'deepcore._cuda.DeviceBuffer' object")

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
        """reshape(*shape) or reshape(shape); one dimension may be -1 (DeviceBuffer::reshape)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) for d in shape):
            raise TypeError(f"DeviceBuffer.reshape: dimensions must be ints, got {shape!r}")
        shape = [int(d) for d in shape]
        if shape.count(-1) > 1:
            raise ValueError("DeviceBuffer.reshape: only one dimension can be -1")
        if any(d < -1 for d in shape):
            raise ValueError(f"DeviceBuffer.reshape: negative dimension in {tuple(shape)}")
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            if known == 0 or self.size % known:
                raise ValueError(f"DeviceBuffer.reshape: cannot reshape {self.shape} into {tuple(shape)}")
            shape[shape.index(-1)] = self.size // known
        if int(np.prod(shape)) != self.size:
            raise ValueError(f"DeviceBuffer.reshape: cannot reshape {self.shape} into {tuple(shape)}")
        return FakeDeviceBuffer._view(self._a.reshape(shape), self._device)

    def _select(self, key):
        """The NumPy view for buf[key]: an int, a slice of step 1 along axis 0, or ..."""
        if key is Ellipsis:
            return self._a[...]
        if self._a.ndim == 0:
            raise IndexError("DeviceBuffer: a 0-d tensor takes only [...]")
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise TypeError("DeviceBuffer: only slices with step 1 give a contiguous view")
            return self._a[key]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = self._a.shape[0]
            if not -n <= key < n:
                raise IndexError(f"DeviceBuffer: index {key} out of range for axis 0 of size {n}")
            return self._a[key, ...]  # a view, 0-d for a 1-D buffer (a[key] would be a detached scalar)
        raise TypeError(f"DeviceBuffer: index with an int, a slice along axis 0 or ..., got {type(key).__name__}")

    def __getitem__(self, key):
        return FakeDeviceBuffer._view(self._select(key), self._device)

    def __setitem__(self, key, value):
        dst = self._select(key)
        if isinstance(value, FakeDeviceBuffer):
            if value._device != self._device:
                raise ValueError(f"DeviceBuffer: source on cuda:{value._device}, destination on cuda:{self._device}")
            if value.dtype != dst.dtype:
                raise TypeError(f"DeviceBuffer.__setitem__: expected a DeviceBuffer of dtype {dst.dtype}, got "
                                f"dtype {value.dtype} (a DeviceBuffer is copied without a cast)")
            if value.shape != dst.shape:
                raise ValueError(f"DeviceBuffer.__setitem__: expected a DeviceBuffer of shape {dst.shape}, got "
                                 f"shape {value.shape}")
            src = value._a
            _queue(lambda: dst.__setitem__(Ellipsis, src))  # a device copy: captured
            return
        if not isinstance(value, (int, float, np.ndarray, np.generic)):
            raise TypeError(f"DeviceBuffer.__setitem__: the value must be a NumPy array, a DeviceBuffer or a Python "
                            f"int/float, got {type(value).__name__}")
        host = np.asarray(value, dtype=dst.dtype, order="C")  # cast on the host, as NumPy would assign
        if host.shape == dst.shape:
            # An upload (a number into a 0-d target included): a host copy, which a replay would not redo.
            _refuse_during_capture("DeviceBuffer.__setitem__", "it copies from host memory, which a replay would "
                                   "not copy again")
            dst[...] = host
        elif host.size == 1 and host.ndim <= dst.ndim:
            fill = host.reshape(())[()]
            _queue(lambda: dst.__setitem__(Ellipsis, fill))  # a fill kernel: captured, the value baked in
        else:
            raise ValueError(f"DeviceBuffer.__setitem__: expected a value of shape {dst.shape} (or a single "
                             f"element), got shape {host.shape}")

    # ---------------------------------------------------------------- copies
    def copy(self):
        out = FakeDeviceBuffer._view(np.zeros_like(self._a), self._device)
        src, dst = self._a, out._a
        _queue(lambda: dst.__setitem__(Ellipsis, src))
        return out

    def to_numpy(self):
        _refuse_during_capture("DeviceBuffer.to_numpy", "it copies results to the host and waits for them")
        return np.array(self._a, copy=True)

    numpy = to_numpy

    def copy_from(self, array, non_blocking=False):
        _refuse_during_capture("DeviceBuffer.copy_from", "it copies from host memory, which a replay would not "
                               "copy again")
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


def _parsed(name, impl):
    """impl, called only after the real module's parsing accepted the arguments (Python's own binding of impl's
    parameters would otherwise answer a bad call first, with another message)."""
    @functools.wraps(impl)  # keeps impl's signature for inspect
    def fn(*args, **kwargs):
        _real_parse(name, args, kwargs)
        return impl(*args, **kwargs)

    fn.__name__ = name
    return fn


def _unwrap(value, fn, where, host_ok):
    if isinstance(value, (list, tuple)):  # the merge kernels' lists of tensors (None entries kept)
        return [_unwrap(v, fn, f"{where}[{i}]", host_ok) for i, v in enumerate(value)]
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

    syncing = name in _SYNCING

    def twin(*args, **kwargs):
        _real_parse(name, args, kwargs)
        FakeCuda.calls[name] = FakeCuda.calls.get(name, 0) + 1
        if name == "gather_rows":
            indices = args[1] if len(args) > 1 else kwargs.get("indices")
            if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
                raise TypeError(f"gather_rows: indices must be a host numpy int64 array (the CUDA twin checks them "
                                f"on the host and uploads them), got {type(indices).__name__}")
        if syncing:
            _refuse_during_capture(name, "it waits for the device (a host result or host memory)")
        a = [_unwrap(v, name, f"argument {i}", i in host_pos) for i, v in enumerate(args)]
        k = {key: _unwrap(v, name, key, key in host_names) for key, v in kwargs.items()}
        if FakeCuda.capture is not None:
            FakeCuda.capture._records.append(lambda: kernel(*a, **k))  # recorded, run by replay
            return None
        return kernel(*a, **k)

    twin.__name__ = name
    twin.__doc__ = f"Fake CUDA twin of deepcore._core.{name} (runs the CPU kernel)."
    return twin


class FakeCuda:
    """State shared by the fake module: the current device, call counts, the
    capturing graph, how many captures ended and how many replays ran."""

    current = 0
    devices = 1     # what device_count() says (a test may set 2 to have a real but not current "cuda:1")
    blas = True     # whether cuBLASLt loaded: blas_available() (a test may set False)
    blas_why = "cuBLASLt could not be loaded (libcublasLt.so not found) [fake]"
    calls: dict = {}
    capture = None
    captures = 0
    replays = 0


# ------------------------------------------------------------------ graphs
class FakeGraph:
    """_cuda.Graph: records the queued work during a capture, replays it."""

    def __init__(self):
        self._records = None   # the work recorded by the capture under way or held
        self._state = "empty"  # "capturing", "captured"
        self._aborted = None   # why the last capture was aborted

    def capture_begin(self):
        if self._state != "empty":
            raise FakeCaptureError("Graph.capture_begin: this graph is capturing or holds a capture; reset() it first")
        if FakeCuda.capture is not None:
            raise FakeCaptureError("Graph.capture_begin: deepcore's stream is already being captured")
        self._records, self._state, self._aborted = [], "capturing", None
        FakeCuda.capture = self

    def _abort(self, why):
        FakeCuda.capture = None
        self._records, self._state, self._aborted = None, "empty", why

    def capture_end(self):
        if self._aborted is not None:
            why, self._aborted = self._aborted, None
            raise FakeCaptureError(f"Graph.capture_end: the capture was aborted: {why}")
        if self._state != "capturing":
            raise FakeCaptureError("Graph.capture_end: no capture under way")
        FakeCuda.capture = None
        self._state = "captured"
        FakeCuda.captures += 1

    def capture_abort(self):
        if self._state == "capturing":
            FakeCuda.capture = None
            self._records, self._state = None, "empty"
        self._aborted = None

    def capture(self):
        return self

    def __enter__(self):
        self.capture_begin()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.capture_end()
        else:
            self.capture_abort()
        return False

    def replay(self):
        _refuse_during_capture("Graph.replay", "it launches a graph")
        if self._state != "captured":
            raise FakeCaptureError("Graph.replay: nothing captured")
        FakeCuda.replays += 1
        for work in self._records:
            work()

    def reset(self):
        if FakeCuda.capture is self:
            FakeCuda.capture = None
        self._records, self._state = None, "empty"

    is_captured = property(lambda self: self._state == "captured")
    is_capturing = property(lambda self: self._state == "capturing")

    def memory_stats(self):
        return {"live_bytes": 0, "held_bytes": 0}


_HYPER_FIELDS = ("kind", "lr", "momentum", "beta1", "beta2", "epsilon", "nesterov", "amsgrad", "centered", "c1",
                 "c2", "c3", "weight_decay", "clipvalue", "clipnorm", "global_clipnorm", "lr_power", "l1", "l2",
                 "l2_shrinkage", "ftrl_beta")


def _structure(h):
    return (h.kind, h.nesterov, h.amsgrad, h.centered, h.clipnorm > 0, h.global_clipnorm > 0, h.momentum > 0)


class FakeDeviceHyper:
    """_cuda.DeviceHyper: a copy of an OptParams in "device memory", taken by
    set() (outside captures) and read by optimizer_step_graph when it runs."""

    def __init__(self, hyper=None):
        _refuse_during_capture("DeviceHyper", "it allocates pinned host memory (make it before the capture)")
        self._value = None
        self._frozen = None
        if hyper is not None:
            self.set(hyper)

    def set(self, hyper):
        if not isinstance(hyper, _core.OptParams):
            raise TypeError(f"DeviceHyper.set: expected a deepcore._core.OptParams, got {type(hyper).__name__}")
        if self._frozen is not None and _structure(hyper) != self._frozen:
            raise ValueError("DeviceHyper.set: between replays only the values may change; use a new DeviceHyper "
                             "and capture again for another rule")
        _refuse_during_capture("DeviceHyper.set", "it copies the hyperparameters from host memory")
        value = _core.OptParams()
        for f in _HYPER_FIELDS:
            setattr(value, f, getattr(hyper, f))
        self._value = value

    has_value = property(lambda self: self._value is not None)


class FakeSegmentTable:
    """_cuda.SegmentTable: the segment tables (copied once) and the last step's (penalty, norm)."""

    def __init__(self, size, offsets=None, l1=None, l2=None):
        for what, v, dt in (("offsets", offsets, np.int64), ("l1", l1, np.float32), ("l2", l2, np.float32)):
            if v is not None and (not isinstance(v, np.ndarray) or v.dtype != dt or not v.flags.c_contiguous):
                raise TypeError(f"SegmentTable: {what} must be a C-contiguous numpy {np.dtype(dt).name} array, got "
                                f"{type(v).__name__}" + (f" of dtype {v.dtype}" if isinstance(v, np.ndarray) else ""))
        _refuse_during_capture("SegmentTable", "it uploads the tables from host memory (build it before the capture)")
        self._size = int(size)
        self._offsets = None if offsets is None else offsets.copy()
        self._l1 = None if l1 is None else l1.copy()
        self._l2 = None if l2 is None else l2.copy()
        self._result = None

    size = property(lambda self: self._size)
    segments = property(lambda self: 1 if self._offsets is None else len(self._offsets) - 1)
    # True iff some penalty is nonzero (the real table skips the penalty pass otherwise).
    penalties = property(lambda self: bool((self._l1 is not None and self._l1.any())
                                           or (self._l2 is not None and self._l2.any())))

    def read_result(self):
        _refuse_during_capture("SegmentTable.read_result", "it copies results to the host")
        FakeCuda.calls["SegmentTable.read_result"] = FakeCuda.calls.get("SegmentTable.read_result", 0) + 1
        return (0.0, None) if self._result is None else self._result


class FakeLossScalars:
    """_cuda.LossScalars: what sparse_categorical_crossentropy_graph leaves on the device."""

    def __init__(self):
        self._parts = []    # (mean loss, hits, rows) of each call since the last overwrite
        self._error = None  # the eager ValueError of a bad label
        self._penalty = 0.0  # what an optimizer_step_graph given this as scalars left
        self._bad = FakeDeviceBuffer((1,), "int32")

    bad_label_flag = property(lambda self: self._bad)

    def reset(self):
        def work():
            self._parts, self._error, self._penalty = [], None, 0.0
            self._bad._a[...] = 0
        _queue(work)

    def read(self):
        _refuse_during_capture("LossScalars.read", "it copies results to the host")
        if self._error is not None:
            raise ValueError(str(self._error))
        FakeCuda.calls["LossScalars.read"] = FakeCuda.calls.get("LossScalars.read", 0) + 1
        if not self._parts:
            return float("nan"), 0, 0, self._penalty
        if len(self._parts) == 1:
            return (*self._parts[0], self._penalty)
        rows = sum(r for _, _, r in self._parts)
        return (sum(loss * r for loss, _, r in self._parts) / rows, sum(h for _, h, _ in self._parts), rows,
                self._penalty)


def _call_word(call, fn):
    if not isinstance(call, FakeDeviceBuffer) or call.dtype != np.int32 or call.size != 1:
        raise TypeError(f"{fn}: call must be an int32 DeviceBuffer of one element (the call counter), got "
                        f"{call!r}")
    return call._a.reshape(-1).view(np.uint32)


def _graph_functions(mod):
    def keep_mask_forward(name):
        kernel = getattr(_core, name)

        def fn(x, y, rate, seed, stream, call, mask=None):
            word = _call_word(call, name + "_graph")
            a = [_unwrap(v, name + "_graph", "tensor", False) for v in (x, y, mask)]
            _queue(lambda: kernel(a[0], a[1], rate, seed, stream, int(word[0]), a[2]))
        return fn

    def keep_mask_backward(name):
        kernel = getattr(_core, name)

        def fn(dy, dx, rate, seed, stream, call):
            word = _call_word(call, name + "_graph")
            a = [_unwrap(v, name + "_graph", "tensor", False) for v in (dy, dx)]
            _queue(lambda: kernel(a[0], a[1], rate, seed, stream, int(word[0]), None))  # mask regenerated
        return fn

    for name in ("dropout_forward", "alpha_dropout_forward"):
        setattr(mod, name + "_graph", _parsed(name + "_graph", keep_mask_forward(name)))
    for name in ("dropout_backward", "alpha_dropout_backward"):
        setattr(mod, name + "_graph", _parsed(name + "_graph", keep_mask_backward(name)))

    def dropout_mask_graph(mask, rate, seed, stream, call):
        word, m = _call_word(call, "dropout_mask_graph"), _unwrap(mask, "dropout_mask_graph", "mask", False)
        _queue(lambda: _core.dropout_mask(m, rate, seed, stream, int(word[0])))

    def rrelu_forward_graph(x, y, lower, upper, training, seed, stream, call):
        word = _call_word(call, "rrelu_forward_graph")
        a = [_unwrap(v, "rrelu_forward_graph", "tensor", False) for v in (x, y)]
        _queue(lambda: _core.rrelu_forward(a[0], a[1], lower, upper, training, seed, stream, int(word[0])))

    def rrelu_backward_graph(x, dy, dx, lower, upper, training, seed, stream, call):
        word = _call_word(call, "rrelu_backward_graph")
        a = [_unwrap(v, "rrelu_backward_graph", "tensor", False) for v in (x, dy, dx)]
        _queue(lambda: _core.rrelu_backward(a[0], a[1], a[2], lower, upper, training, seed, stream, int(word[0])))

    def increment_counter(counter):
        if not isinstance(counter, FakeDeviceBuffer) or counter.dtype != np.int32:
            raise TypeError("increment_counter: counter must be an int32 DeviceBuffer")
        words = counter._a.reshape(-1).view(np.uint32)
        _queue(lambda: np.add(words, np.uint32(1), out=words))

    def optimizer_step_graph(hyper, params, grads, slot0, slot1, slot2, table, want_norm=False, skip=None,
                             scalars=None):
        fn = "optimizer_step_graph"
        FakeCuda.calls[fn] = FakeCuda.calls.get(fn, 0) + 1
        if not isinstance(hyper, FakeDeviceHyper) or not isinstance(table, FakeSegmentTable):
            raise TypeError(f"{fn}: hyper must be a DeviceHyper and table a SegmentTable")
        if scalars is not None and not isinstance(scalars, FakeLossScalars):
            raise TypeError(f"{fn}: scalars must be a LossScalars or None")
        if scalars is not None and want_norm:
            raise ValueError(f"{fn}: want_norm=True with scalars: LossScalars.read() returns the penalty, not the "
                             f"norm (leave scalars None and use table.read_result())")
        if not hyper.has_value:
            raise ValueError(f"{fn}: the DeviceHyper holds no hyperparameters yet (call set(hyper))")
        if params.size != table.size:
            raise ValueError(f"{fn}: params has {params.size} elements but the SegmentTable was made for "
                             f"{table.size}")
        if hyper._frozen is None:
            hyper._frozen = _structure(hyper._value)
        a = [_unwrap(v, fn, "tensor", False) for v in (params, grads, slot0, slot1, slot2)]
        flag = None if skip is None else _unwrap(skip, fn, "skip", False)

        def work():
            if flag is not None and flag.reshape(-1)[0] != 0:
                return
            result = _core.optimizer_step(hyper._value, *a, table._offsets, table._l1, table._l2, want_norm)
            if scalars is None:
                table._result = result
            else:
                scalars._penalty = result[0]
                table._result = None
        _queue(work)

    def sparse_categorical_crossentropy_graph(y_pred, labels, grad, from_logits, out, accumulate=False):
        fn = "sparse_categorical_crossentropy_graph"
        FakeCuda.calls[fn] = FakeCuda.calls.get(fn, 0) + 1
        if not isinstance(out, FakeLossScalars):
            raise TypeError(f"{fn}: out must be a LossScalars")
        p, lab, g = (_unwrap(v, fn, "tensor", False) for v in (y_pred, labels, grad))

        def work():
            if not accumulate:
                out._parts, out._error, out._penalty = [], None, 0.0
                out._bad._a[...] = 0
            try:
                loss, hits = _core.sparse_categorical_crossentropy(p, lab, g, from_logits)
            except ValueError as e:
                out._error = e
                out._bad._a[...] = 1
                return
            out._parts.append((loss, hits, len(lab)))
        _queue(work)

    mod.Graph = FakeGraph
    mod.DeviceHyper = FakeDeviceHyper
    mod.SegmentTable = FakeSegmentTable
    mod.LossScalars = FakeLossScalars
    mod.is_capturing = lambda: FakeCuda.capture is not None
    # optimizer_step_graph and sparse_categorical_crossentropy_graph take the real DeviceHyper, SegmentTable and
    # LossScalars types, which the fake ones are not: their arguments cannot go through the real parsing.
    for f in (dropout_mask_graph, rrelu_forward_graph, rrelu_backward_graph, increment_counter):
        setattr(mod, f.__name__, _parsed(f.__name__, f))
    for f in (optimizer_step_graph, sparse_categorical_crossentropy_graph):
        setattr(mod, f.__name__, f)


def make_module() -> types.ModuleType:
    mod = types.ModuleType("deepcore._cuda", "fake deepcore._cuda for tests (runs deepcore._core kernels)")
    mod.DeviceBuffer = FakeDeviceBuffer
    mod.CudaError = FakeCudaError
    mod.CaptureError = FakeCaptureError
    mod.CudaOutOfMemoryError = type("CudaOutOfMemoryError", (MemoryError,), {})

    def to_device(array, non_blocking=False, device=None):
        if not isinstance(array, np.ndarray):
            _real_parse("to_device", (array,), {"non_blocking": non_blocking, "device": device})
        _refuse_during_capture("to_device", "it copies from host memory")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"to_device: expected a numpy array, got {type(array)}")
        buf = FakeDeviceBuffer(array.shape, array.dtype, _checked_device(device, "to_device"))
        buf.copy_from(np.require(array, requirements="C"))
        return buf

    def from_dlpack(obj):
        if isinstance(obj, FakeDeviceBuffer):
            return FakeDeviceBuffer._view(obj._a, obj._device)
        raise TypeError(f"from_dlpack: expected a CUDA tensor, got {type(obj).__name__}")

    mod.to_device = to_device
    mod.from_dlpack = from_dlpack
    mod.synchronize = lambda: _refuse_during_capture("synchronize", "it waits for the device")
    mod.device_count = lambda: FakeCuda.devices
    mod.current_device = lambda: FakeCuda.current
    mod.device_properties = lambda device=0: {"name": f"fake device {_checked_device(device, 'device_properties')}",
                                              "compute_capability": (9, 0), "total_memory": 16 << 30}

    def set_device(device):
        FakeCuda.current = _checked_device(device, "set_device")

    mod.set_device = set_device
    mod.unavailable_reason = lambda device=-1: ""
    mod.blas_available = lambda: FakeCuda.blas
    mod.blas_reason = lambda: "" if FakeCuda.blas else FakeCuda.blas_why
    mod.memory_stats = lambda: {"live_bytes": 0, "held_bytes": 0, "cached_bytes": 0, "malloc_calls": 0}
    mod.empty_cache = lambda: _refuse_during_capture("empty_cache", "cudaFree is not allowed during a capture")
    for name in TWINS:
        setattr(mod, name, _twin(name))
    _graph_functions(mod)
    return mod


@pytest.fixture
def fake_cuda(monkeypatch):
    """Install the fake as deepcore._cuda: deepcore.cuda.is_available() is
    True and "cuda" names it, for the duration of one test."""
    import deepcore
    from deepcore import backend, cuda

    mod = make_module()
    FakeCuda.current, FakeCuda.devices, FakeCuda.blas, FakeCuda.calls = 0, 1, True, {}
    FakeCuda.capture, FakeCuda.captures, FakeCuda.replays = None, 0, 0
    monkeypatch.setitem(sys.modules, "deepcore._cuda", mod)
    monkeypatch.setattr(deepcore, "_cuda", mod, raising=False)
    monkeypatch.setattr(cuda, "_probed", True)
    monkeypatch.setattr(cuda, "_module", mod)
    monkeypatch.setattr(cuda, "_reason", "")
    monkeypatch.setattr(backend, "_device_ops", None)
    monkeypatch.setattr(backend, "_device_type", None)
    return mod
