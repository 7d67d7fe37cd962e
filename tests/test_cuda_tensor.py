"""deepcore._cuda.DeviceBuffer as a device tensor: views that share memory
(reshape, int/slice/... indexing along axis 0), assignment from NumPy, scalars
and other buffers, copies, non-blocking uploads through pinned staging memory,
deepcore's own stream, and zero-copy exchange with other libraries through
DLPack and __cuda_array_interface__.

The tests at the top run everywhere: the module's API exists with the
documented signatures, and a machine without a driver gets clean exceptions.
The GPU tests skip with deepcore.cuda.reason() when no usable device exists;
the PyTorch ones also skip when PyTorch has no CUDA.
"""

import gc
import subprocess
import sys

import numpy as np
import pytest

from deepcore import _core as C
from deepcore import cuda
from deepcore.activations import _CODES


def cuda_module():
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    return _cuda


# --------------------------------------------------------------------------
# runs everywhere: the API exists; without a driver, clean exceptions
# --------------------------------------------------------------------------
def test_import_deepcore_works_and_says_whether_cuda_is_available():
    code = "import deepcore, deepcore.cuda as c; print(c.is_available() or bool(c.reason()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_device_buffer_has_the_tensor_api():
    G = cuda_module()
    B = G.DeviceBuffer
    for name in ("reshape", "copy", "to_numpy", "numpy", "copy_from", "__getitem__", "__setitem__", "__len__",
                 "__dlpack__", "__dlpack_device__", "__repr__"):
        assert callable(getattr(B, name)), name
    for name in ("shape", "dtype", "size", "ndim", "nbytes", "device", "data_ptr", "__cuda_array_interface__"):
        prop = getattr(B, name)
        assert isinstance(prop, property) and prop.fset is None, f"{name} must be a read-only property"
    # NumPy conversion is explicit (to_numpy), as for PyTorch's CUDA tensors.
    assert not hasattr(B, "__array__")
    for name in ("to_device", "from_dlpack", "current_stream", "synchronize"):
        assert callable(getattr(G, name)), name


def test_device_buffer_signatures_are_documented():
    G = cuda_module()
    B = G.DeviceBuffer
    assert "dtype: object = 'float32'" in B.__init__.__doc__
    assert "*args" in B.reshape.__doc__
    assert "non_blocking: bool = False" in B.copy_from.__doc__
    assert "non_blocking: bool = False" in G.to_device.__doc__
    doc = B.__dlpack__.__doc__
    for arg in ("stream: object = None", "max_version: object = None", "dl_device: object = None",
                "copy: object = None"):
        assert arg in doc, arg
    assert G.from_dlpack.__doc__.startswith("from_dlpack(obj: object)")
    assert G.current_stream.__doc__.startswith("current_stream() -> int")


def test_without_a_driver_the_tensor_api_raises_clean_exceptions():
    G = cuda_module()
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device exists")
    with pytest.raises(G.CudaError, match="DeviceBuffer: cudaGetDevice"):
        G.DeviceBuffer((2, 3))
    with pytest.raises(G.CudaError, match="DeviceBuffer: cudaGetDevice"):
        G.DeviceBuffer((2, 3), np.int64)
    with pytest.raises(G.CudaError):
        G.to_device(np.zeros(3, np.float32), non_blocking=True)
    with pytest.raises(G.CudaError, match="current_stream"):
        G.current_stream()
    with pytest.raises(G.CudaError, match="DeviceBuffer: cudaGetDevice"):
        G.DeviceBuffer((2,), "float32", 0)
    for call in (G.current_device, lambda: G.set_device(0), lambda: G.to_device(np.zeros(2, np.float32), device=0)):
        with pytest.raises(G.CudaError):
            call()
    with pytest.raises(G.CudaError):
        G.synchronize()
    # Checks that need no device come first and work here.
    with pytest.raises(TypeError, match="dtype must be 'float32', 'int32' or 'int64', got 'float64'"):
        G.DeviceBuffer((3,), np.float64)
    with pytest.raises(ValueError, match="negative dimension"):
        G.DeviceBuffer((2, -1))
    with pytest.raises(TypeError, match="to_device: dtype must be 'float32', 'int32' or 'int64', got 'float64'"):
        G.to_device(np.zeros((4, 4))[:, ::2])
    with pytest.raises(TypeError, match="to_device: expected a numpy array, got <class 'list'>"):
        G.to_device([1.0])
    with pytest.raises(TypeError, match="host memory; copy host arrays with to_device"):
        G.from_dlpack(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="__dlpack__ or __cuda_array_interface__"):
        G.from_dlpack([1.0, 2.0])


# --------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------
@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    return torch


def arange(G, *shape, dtype=np.float32):
    return G.to_device(np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape))


def test_new_buffer_is_zero_filled_and_describes_itself(G):
    b = G.DeviceBuffer((4, 6))
    assert b.shape == (4, 6) and b.size == 24 and b.ndim == 2 and b.nbytes == 96 and len(b) == 4
    assert isinstance(b.dtype, np.dtype) and b.dtype == np.float32 and b.dtype == "float32"
    assert isinstance(b.device, int) and isinstance(b.data_ptr, int) and b.data_ptr != 0
    np.testing.assert_array_equal(b.to_numpy(), np.zeros((4, 6), np.float32))
    assert G.DeviceBuffer((3,), np.int64).dtype == np.int64
    assert G.DeviceBuffer((3,), b.dtype).dtype == np.float32  # a dtype object is accepted back
    scalar = G.DeviceBuffer(())
    assert scalar.shape == () and scalar.ndim == 0 and scalar.size == 1
    with pytest.raises(TypeError, match="0-d"):
        len(scalar)


def test_reshape_returns_a_view_sharing_memory(G):
    b = arange(G, 4, 6)
    r = b.reshape(3, 8)
    assert r.shape == (3, 8) and r.data_ptr == b.data_ptr
    assert b.reshape((2, -1)).shape == (2, 12) and b.reshape(-1).shape == (24,)
    assert b.reshape([2, 3, 4]).shape == (2, 3, 4)
    assert b.reshape(np.array([2, 12])).shape == (2, 12) and b.reshape(np.int64(24)).shape == (24,)
    assert G.DeviceBuffer((1,)).reshape().shape == ()
    r[1] = 0.0  # writes through the view
    expect = np.arange(24, dtype=np.float32)
    expect[8:16] = 0
    np.testing.assert_array_equal(b.to_numpy().ravel(), expect)


def test_reshape_errors_name_both_shapes(G):
    b = G.DeviceBuffer((4, 6))
    with pytest.raises(ValueError, match=r"shape \(4, 6\).*into shape \(5, 5\)"):
        b.reshape(5, 5)
    with pytest.raises(ValueError, match=r"shape \(4, 6\).*into shape \(-1, 7\)"):
        b.reshape(-1, 7)
    with pytest.raises(ValueError, match="only one dimension can be -1"):
        b.reshape(-1, -1)
    with pytest.raises(ValueError, match="negative dimension"):
        b.reshape(-2, -12)
    with pytest.raises(TypeError, match="dimensions must be ints"):
        b.reshape(4, 6.0)
    with pytest.raises(ValueError, match=r"into shape \(-1, 0\)"):
        G.DeviceBuffer((0, 3)).reshape(-1, 0)


def test_indexing_along_the_first_axis_gives_views(G):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    b = G.to_device(x)
    for key in (0, 3, -1, -4, np.int64(2), slice(1, 3), slice(None, -1), slice(-2, None), slice(None), slice(5, 2),
                slice(-100, 100), Ellipsis):
        v = b[key]
        want = x[key]
        assert v.shape == want.shape, key
        np.testing.assert_array_equal(v.to_numpy(), want, err_msg=str(key))
        if want.size:
            first = x.ravel().tolist().index(want.ravel()[0])
            assert v.data_ptr == b.data_ptr + 4 * first, key
    assert b[1][2:4].to_numpy().tolist() == [8.0, 9.0]
    assert b.reshape(2, 2, 6)[1][0].to_numpy().tolist() == x[2].tolist()
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 0 with size 4"):
        b[4]
    with pytest.raises(IndexError, match="index -5 is out of bounds"):
        b[-5]
    with pytest.raises(IndexError, match="0-d"):
        G.DeviceBuffer(())[0]
    assert G.DeviceBuffer(())[...].shape == ()


@pytest.mark.parametrize("key", [slice(None, None, 2), (0, 1), [0, 1], np.array([0, 1]), True, 1.5, None, "a"],
                         ids=str)
def test_other_indices_raise_type_error_saying_what_is_supported(G, key):
    b = G.DeviceBuffer((4, 6))
    with pytest.raises(TypeError, match="step 1"):
        b[key]
    with pytest.raises(TypeError, match="step 1"):
        b[key] = 0.0


def test_views_keep_the_storage_alive_and_free_it_with_the_last_one(G):
    gc.collect()
    before = G.memory_stats()["live_bytes"]
    x = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    view = G.to_device(x)[10:20].reshape(-1)  # the buffer itself is gone
    gc.collect()
    np.testing.assert_array_equal(view.to_numpy(), x[10:20].ravel())
    assert G.memory_stats()["live_bytes"] > before
    inner = view[3:5]
    del view
    gc.collect()
    np.testing.assert_array_equal(inner.to_numpy(), x[10:20].ravel()[3:5])
    del inner
    gc.collect()
    assert G.memory_stats()["live_bytes"] == before


def test_setitem_from_numpy_casts_on_the_host(G):
    b = G.DeviceBuffer((4, 6))
    b[1] = np.arange(6)  # int64 -> float32
    b[2:4] = np.full((2, 6), 0.25, np.float64)
    b[0] = np.float64(2.5)  # a NumPy scalar fills
    want = np.zeros((4, 6), np.float32)
    want[1], want[2:4], want[0] = np.arange(6), 0.25, 2.5
    np.testing.assert_array_equal(b.to_numpy(), want)
    b[...] = np.ones((1, 1), np.float32)  # a single element broadcasts
    np.testing.assert_array_equal(b.to_numpy(), np.ones((4, 6), np.float32))
    i = G.DeviceBuffer((5,), "int32")
    i[...] = np.array([1.9, -1.9, 3.0, 4.5, 2**20])  # NumPy's float -> int cast: truncation
    np.testing.assert_array_equal(i.to_numpy(), np.array([1, -1, 3, 4, 2**20], np.int32))
    s = G.DeviceBuffer(())
    s[...] = np.array(3.5)
    assert s.to_numpy() == 3.5


def test_setitem_from_numpy_with_the_wrong_shape_names_both_shapes(G):
    b = G.DeviceBuffer((4, 6))
    with pytest.raises(ValueError, match=r"expected a value of shape \(2, 6\).*got shape \(6,\)"):
        b[1:3] = np.zeros(6)
    with pytest.raises(ValueError, match=r"expected a value of shape \(6,\).*got shape \(1, 1\)"):
        b[0] = np.zeros((1, 1))  # more dimensions than the target: no broadcast
    with pytest.raises(TypeError, match="NumPy array, a DeviceBuffer or a Python int/float"):
        b[0] = [1.0] * 6
    with pytest.raises(OverflowError):
        G.DeviceBuffer((2,), "int32")[0] = 2**31


def test_setitem_with_a_scalar_fills(G):
    b = G.DeviceBuffer((4, 6))
    b[1:3] = 7.5
    b[3] = -0.0
    want = np.zeros((4, 6), np.float32)
    want[1:3], want[3] = 7.5, -0.0
    np.testing.assert_array_equal(b.to_numpy().view(np.uint32), want.view(np.uint32))
    i64 = G.DeviceBuffer((5,), np.int64)
    i64[...] = -1
    i64[1:2] = 2**40
    np.testing.assert_array_equal(i64.to_numpy(), np.array([-1, 2**40, -1, -1, -1]))
    i32 = G.DeviceBuffer((3,), "int32")
    i32[...] = True
    i32[0] = 2.9
    np.testing.assert_array_equal(i32.to_numpy(), np.array([2, 1, 1], np.int32))
    G.DeviceBuffer((0, 3))[...] = 1.0  # nothing to fill


def test_setitem_from_a_device_buffer_copies_on_the_device(G):
    x = np.arange(10, dtype=np.float32)
    src, dst = G.to_device(x), G.DeviceBuffer((10,))
    dst[...] = src
    np.testing.assert_array_equal(dst.to_numpy(), x)
    dst[2:5] = src[5:8]
    want = x.copy()
    want[2:5] = x[5:8]
    np.testing.assert_array_equal(dst.to_numpy(), want)
    with pytest.raises(TypeError, match="dtype float32, got dtype int32"):
        dst[...] = G.DeviceBuffer((10,), "int32")
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(4,\)"):
        dst[0:3] = src[0:4]


@pytest.mark.parametrize("dst,src", [(slice(1, 10), slice(0, 9)), (slice(0, 9), slice(1, 10)),
                                     (slice(0, 6), slice(4, 10)), (slice(None), slice(None))], ids=str)
def test_setitem_between_overlapping_views_behaves_like_numpy(G, dst, src):
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    b = G.to_device(x)
    b[dst] = b[src]
    want = x.copy()
    want[dst] = x[src]  # NumPy copies as if through a temporary
    np.testing.assert_array_equal(b.to_numpy(), want)


def test_copy_is_a_new_buffer_with_the_same_contents(G):
    b = arange(G, 3, 4)
    c = b[1:].copy()
    assert c.shape == (2, 4) and c.data_ptr != b[1:].data_ptr
    b[...] = 0.0
    np.testing.assert_array_equal(c.to_numpy(), np.arange(4, 12, dtype=np.float32).reshape(2, 4))


def test_numpy_conversion_is_explicit(G):
    b = arange(G, 2, 3)
    np.testing.assert_array_equal(b.numpy(), b.to_numpy())
    with pytest.raises(TypeError, match="to_numpy"):
        np.asarray(b)
    with pytest.raises(TypeError):
        np.array(b)


def test_copy_from_checks_its_input(G):
    b = G.DeviceBuffer((2, 3))
    with pytest.raises(TypeError, match="expected dtype float32, got float64"):
        b.copy_from(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        b.copy_from(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        b.copy_from(np.zeros((3, 2), np.float32).T)
    with pytest.raises(TypeError, match="expected a NumPy array, got list"):
        b.copy_from([[0.0] * 3] * 2)


@pytest.mark.parametrize("non_blocking", [False, True])
def test_copy_from_lets_the_caller_overwrite_its_array_at_once(G, non_blocking):
    # Sizes grow and shrink so that the staging slots are reused and regrown.
    rng = np.random.default_rng(0)
    sizes = [10, 1 << 20, 3, (1 << 20) + 7, 1 << 16, 5, 1 << 21]
    host = np.empty(max(sizes), np.float32)
    bufs, want = [], []
    for n in sizes * 3:
        host[:n] = rng.normal(size=n)
        want.append(host[:n].copy())
        b = G.DeviceBuffer((n,))
        b.copy_from(host[:n], non_blocking=non_blocking)
        host[:n] = np.nan  # overwritten before the device copy may have run
        bufs.append(b)
    bufs.append(G.to_device(want[0], non_blocking=non_blocking))
    want.append(want[0])
    for b, w in zip(bufs, want):
        np.testing.assert_array_equal(b.to_numpy(), w)


@pytest.mark.parametrize("non_blocking", [False, True])
def test_to_device_copies_strided_and_0d_arrays(G, non_blocking):
    x = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    d = G.to_device(x, non_blocking=non_blocking)
    assert d.shape == (4, 3) and d.dtype == np.int32
    np.testing.assert_array_equal(d.to_numpy(), x)
    s = G.to_device(np.array(2.5, np.float32), non_blocking=non_blocking)
    assert s.shape == () and s.to_numpy() == 2.5


def test_non_blocking_copy_into_a_view(G):
    b = G.DeviceBuffer((4, 5), "int64")
    row = np.arange(5, dtype=np.int64)
    b[2].copy_from(row, non_blocking=True)
    row[:] = -7
    b[0].copy_from(row, non_blocking=True)
    want = np.zeros((4, 5), np.int64)
    want[2], want[0] = np.arange(5), -7
    np.testing.assert_array_equal(b.to_numpy(), want)


def test_deepcore_queues_its_work_on_its_own_stream(G):
    s = G.current_stream()
    assert isinstance(s, int) and s not in (0, 1, 2)  # not a default stream
    assert G.current_stream() == s
    b = arange(G, 2, 3)[1]
    cai = b.__cuda_array_interface__
    assert cai["stream"] == s
    assert cai["data"] == (b.data_ptr, False) and cai["shape"] == (3,) and cai["typestr"] == "<f4"
    assert cai["version"] == 3 and cai["strides"] is None
    G.synchronize()


def test_kernels_take_views(G):
    x = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    xd, yd = G.to_device(x), G.DeviceBuffer((8, 5))
    G.activation_forward(_CODES["relu"], xd[2:6], yd[2:6])
    want = np.zeros_like(x)
    want[2:6] = np.maximum(x[2:6], 0)
    np.testing.assert_array_equal(yd.to_numpy(), want)

    flat = G.DeviceBuffer((20,))
    G.philox_uniform(flat.reshape(4, 5)[1:3].reshape(-1)[3:10], 7, 1)
    cpu = np.empty(7, np.float32)
    C.philox_uniform(cpu, 7, 1, 0.0, 1.0)
    got = flat.to_numpy()
    np.testing.assert_array_equal(got[8:15].view(np.uint32), cpu.view(np.uint32))
    assert not got[:8].any() and not got[15:].any()

    w, g = G.to_device(np.ones(10, np.float32)), G.to_device(np.full(10, 2.0, np.float32))
    G.sgd_update(w[5:], g[:5], None, 0.5, 0.0, False)
    np.testing.assert_array_equal(w.to_numpy(), np.array([1] * 5 + [0] * 5, np.float32))


def test_kernels_reject_views_of_the_wrong_shape_with_the_usual_words(G):
    x = G.DeviceBuffer((8, 5))
    with pytest.raises(ValueError, match=r"y must have the shape of x \(2, 5\), got \(3, 5\)"):
        G.activation_forward(_CODES["relu"], x[0:2], x[2:5])
    with pytest.raises(TypeError, match="x must be a deepcore._cuda.DeviceBuffer .*to_device"):
        G.activation_forward(_CODES["relu"], np.zeros(3, np.float32), x)


# ------------------------------------------------------------------ DLPack
class Producer:
    """Another library's tensor, seen through the DLPack protocol only."""

    def __init__(self, buf, versioned=True):
        self.buf, self.versioned, self.calls = buf, versioned, []

    def __dlpack__(self, stream=None, max_version=None, **kwargs):
        self.calls.append((stream, max_version))
        if not self.versioned and max_version is not None:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        return self.buf.__dlpack__(stream=stream, max_version=max_version)

    def __dlpack_device__(self):
        return self.buf.__dlpack_device__()


class ArrayInterfaceOnly:
    def __init__(self, iface):
        self.__cuda_array_interface__ = iface


def test_dlpack_device_and_capsules(G):
    b = arange(G, 2, 3)
    assert b.__dlpack_device__() == (2, b.device)
    assert '"dltensor"' in repr(b.__dlpack__())
    assert '"dltensor"' in repr(b.__dlpack__(max_version=(0, 8)))
    assert '"dltensor_versioned"' in repr(b.__dlpack__(max_version=(1, 0)))
    assert '"dltensor_versioned"' in repr(b.__dlpack__(stream=-1, max_version=(1, 2), dl_device=(2, b.device),
                                                       copy=False))
    with pytest.raises(BufferError, match="cannot export to DLPack device"):
        b.__dlpack__(dl_device=(1, 0))
    with pytest.raises(ValueError, match="stream must be"):
        b.__dlpack__(stream=0)


def test_unconsumed_capsules_free_their_tensor_once(G):
    gc.collect()
    before = G.memory_stats()["live_bytes"]
    b = G.DeviceBuffer((1000,))
    caps = [b.__dlpack__(), b.__dlpack__(max_version=(1, 0)), b[5:].__dlpack__(copy=True)]
    del b
    gc.collect()
    assert G.memory_stats()["live_bytes"] > before
    del caps
    gc.collect()
    assert G.memory_stats()["live_bytes"] == before


@pytest.mark.parametrize("versioned", [True, False])
def test_from_dlpack_roundtrip_is_zero_copy(G, versioned):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = G.to_device(x)
    assert G.from_dlpack(b).data_ptr == b.data_ptr  # our own: a view
    p = Producer(b[1:], versioned)
    d = G.from_dlpack(p)
    assert p.calls[0] == (G.current_stream(), (1, 0))  # asked with our stream and max_version
    assert d.shape == (2, 4) and d.dtype == np.float32 and d.data_ptr == b[1:].data_ptr
    d[0] = -1.0  # shared memory
    want = x.copy()
    want[1] = -1
    np.testing.assert_array_equal(b.to_numpy(), want)
    del b, p
    gc.collect()
    np.testing.assert_array_equal(d.to_numpy(), want[1:])  # the capsule keeps the memory alive


def test_from_dlpack_releases_the_producer_with_the_last_view(G):
    gc.collect()
    before = G.memory_stats()["live_bytes"]
    d = G.from_dlpack(Producer(G.DeviceBuffer((1000,), "int32")))
    view = d[10:20]
    del d
    gc.collect()
    assert G.memory_stats()["live_bytes"] > before
    del view
    gc.collect()
    assert G.memory_stats()["live_bytes"] == before


class CopyingProducer(Producer):
    """Exports with copy=True."""

    def __dlpack__(self, stream=None, max_version=None, **kwargs):
        return self.buf.__dlpack__(stream=stream, max_version=max_version, copy=True)


def test_copy_true_exports_a_copy(G):
    b = arange(G, 4)
    c = G.from_dlpack(CopyingProducer(b))
    assert c.data_ptr != b.data_ptr
    b[...] = 0.0
    np.testing.assert_array_equal(c.to_numpy(), np.arange(4, dtype=np.float32))


def test_from_cuda_array_interface_is_zero_copy_and_keeps_the_owner(G):
    b = arange(G, 3, 2)
    owner = ArrayInterfaceOnly(b[1:].__cuda_array_interface__)
    owner.keep = b  # the owner keeps its memory alive, as a real producer does
    refs = sys.getrefcount(owner)
    d = G.from_dlpack(owner)
    assert sys.getrefcount(owner) == refs + 1
    assert d.shape == (2, 2) and d.data_ptr == b[1:].data_ptr
    del b
    gc.collect()
    np.testing.assert_array_equal(d.to_numpy(), np.arange(2, 6, dtype=np.float32).reshape(2, 2))
    del d
    gc.collect()
    assert sys.getrefcount(owner) == refs


def test_from_dlpack_rejects_what_it_cannot_hold(G):
    b = arange(G, 3, 4)
    iface = dict(b.__cuda_array_interface__)
    bad = [
        (TypeError, "typestr '<f4', '<i4' or '<i8'", dict(iface, typestr="<f8")),
        (ValueError, "read-only", dict(iface, data=(b.data_ptr, True))),
        (ValueError, r"C-contiguous tensor \(strides \(12, 4\) in bytes for shape \(4, 3\)\), got strides \(4, 16\)",
         dict(iface, shape=(4, 3), strides=(4, 16))),
        (ValueError, "mask", dict(iface, mask=object())),
        (ValueError, "no 'shape'", {k: v for k, v in iface.items() if k != "shape"}),
    ]
    for err, words, d in bad:
        with pytest.raises(err, match=words):
            G.from_dlpack(ArrayInterfaceOnly(d))
    # Size-1 axes may have any stride.
    ok = G.from_dlpack(ArrayInterfaceOnly(dict(iface, shape=(1, 12), strides=(999, 4))))
    assert ok.shape == (1, 12)
    with pytest.raises(TypeError, match="host memory"):
        G.from_dlpack(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="__dlpack__ or __cuda_array_interface__"):
        G.from_dlpack(object())


class ForeignStream:
    """Another library's stream, made with the CUDA runtime's C API through
    ctypes: under the host emulator the runtime the module exports, on a GPU
    libcudart (streams belong to the driver, shared by every runtime)."""

    D2H = 2

    def __init__(self, G):
        import ctypes

        from cuda_toolkit import cudart_candidates

        rt = None
        # the emulated module exports the runtime API; the real one links it statically and hidden
        names = [G.__file__] if G.built_archs == "host-emulator" else cudart_candidates()
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                lib.cudaStreamCreateWithFlags  # noqa: B018 - raises AttributeError when absent
            except (OSError, AttributeError):
                continue
            rt = lib
            break
        if rt is None:
            pytest.skip("no CUDA runtime reachable through ctypes to make another library's stream with")
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        rt.cudaStreamCreateWithFlags.argtypes = [ctypes.POINTER(vp), ctypes.c_uint]
        rt.cudaMemcpyAsync.argtypes = [vp, vp, sz, ctypes.c_int, vp]
        rt.cudaMemsetAsync.argtypes = [vp, ctypes.c_int, sz, vp]
        rt.cudaStreamSynchronize.argtypes = [vp]
        rt.cudaStreamDestroy.argtypes = [vp]
        self.rt, self.vp, self.handle = rt, vp, vp()
        err = rt.cudaStreamCreateWithFlags(ctypes.byref(self.handle), 1)  # cudaStreamNonBlocking
        if err != 0:
            pytest.skip(f"{name}: cudaStreamCreateWithFlags returned error {err}")
        self.value = self.handle.value

    def read(self, buf, dtype=np.float32):
        """buf's contents, copied on this stream into pageable memory."""
        out = np.empty(buf.shape, dtype)
        assert self.rt.cudaMemcpyAsync(self.vp(out.ctypes.data), self.vp(buf.data_ptr), out.nbytes, self.D2H,
                                       self.handle) == 0
        assert self.rt.cudaStreamSynchronize(self.handle) == 0
        return out

    def zero(self, buf):
        """Queues a memset of buf's bytes on this stream (returns at once)."""
        assert self.rt.cudaMemsetAsync(self.vp(buf.data_ptr), 0, buf.nbytes, self.handle) == 0

    def close(self):
        self.rt.cudaStreamSynchronize(self.handle)
        self.rt.cudaStreamDestroy(self.handle)


@pytest.fixture
def foreign_stream(G):
    s = ForeignStream(G)
    yield s
    s.close()


def test_dlpack_export_makes_the_consumer_stream_wait_for_our_work(G, foreign_stream):
    """__dlpack__(stream=theirs): their stream waits for the work we queued on
    ours (here, a fill not yet run), so what they read on it is the result.
    (Under the emulator, work runs only when waited for: without the wait,
    their copy would read memory nothing had written yet.)"""
    b = G.DeviceBuffer((1 << 16,))
    b[...] = 3.0  # queued on deepcore's stream
    capsule = b.__dlpack__(stream=foreign_stream.value)
    np.testing.assert_array_equal(foreign_stream.read(b), np.full(1 << 16, 3.0, np.float32))
    del capsule


def test_cuda_array_interface_import_waits_for_the_producers_stream(G, foreign_stream):
    """A __cuda_array_interface__ (v3) naming the producer's stream: our
    stream waits for the work pending there (their memset) before ours reads."""
    b = arange(G, 1 << 16)
    G.synchronize()
    foreign_stream.zero(b)  # queued on their stream
    owner = ArrayInterfaceOnly(dict(b.__cuda_array_interface__, stream=foreign_stream.value))
    owner.keep = b
    np.testing.assert_array_equal(G.from_dlpack(owner).to_numpy(), np.zeros(1 << 16, np.float32))


def test_dlpack_roundtrip_with_torch(G, torch_cuda):
    torch = torch_cuda
    b = arange(G, 3, 4)
    t = torch.from_dlpack(b[1:])
    assert t.shape == (2, 4) and t.dtype == torch.float32 and t.data_ptr() == b[1:].data_ptr
    t.mul_(-1)  # on torch's stream, which waited for ours
    torch.cuda.synchronize()
    np.testing.assert_array_equal(b.to_numpy()[1:], -np.arange(4, 12, dtype=np.float32).reshape(2, 4))

    src = torch.arange(20, device="cuda", dtype=torch.float32).reshape(5, 4)
    d = G.from_dlpack(src[1:3])
    assert d.shape == (2, 4) and d.data_ptr == src[1:3].data_ptr()
    np.testing.assert_array_equal(d.to_numpy(), src[1:3].cpu().numpy())
    i = G.from_dlpack(torch.arange(6, device="cuda"))
    assert i.dtype == np.int64
    del src
    torch.cuda.empty_cache()
    np.testing.assert_array_equal(d.to_numpy(), np.arange(4, 12, dtype=np.float32).reshape(2, 4))
    ones = torch.ones(3, device="cuda")
    owner = ArrayInterfaceOnly(ones.__cuda_array_interface__)
    owner.keep = ones
    via_cai = G.from_dlpack(owner)
    del owner, ones
    assert via_cai.data_ptr != 0
    np.testing.assert_array_equal(via_cai.to_numpy(), np.ones(3, np.float32))


def test_from_dlpack_rejects_torch_tensors_it_cannot_hold(G, torch_cuda):
    torch = torch_cuda
    with pytest.raises(ValueError, match="C-contiguous"):
        G.from_dlpack(torch.zeros(3, 4, device="cuda").T)
    with pytest.raises(TypeError, match="expected dtype float32, int32 or int64, got float64"):
        G.from_dlpack(torch.zeros(3, device="cuda", dtype=torch.float64))
    with pytest.raises(TypeError, match="host memory"):
        G.from_dlpack(torch.zeros(3))
