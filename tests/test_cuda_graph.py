"""CUDA graphs: capture and replay of deepcore's stream, the graph's private
memory pool, and the refusal of host synchronizations during a capture.

The tests at the top run everywhere (the names and arguments exist, and without
a device every entry point raises a clean exception). The GPU tests skip with
deepcore.cuda.reason() when no usable device exists.
"""

import re

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


def signature_args(fn):
    """Argument names from the first line of a pybind11 docstring: name(a: T, b: T = ...) -> R."""
    first = fn.__doc__.splitlines()[0]
    return re.findall(r"[(,]\s*(\w+)\s*:", first)


# --------------------------------------------------------------------------
# runs everywhere
# --------------------------------------------------------------------------
GRAPH_FUNCTIONS = {
    "is_capturing": [],
}
CLASS_MEMBERS = {
    "Graph": ["capture_begin", "capture_end", "capture", "__enter__", "__exit__", "replay", "reset", "is_captured",
              "is_capturing", "memory_stats"],
}


def test_graph_entry_points_exist_with_documented_arguments():
    _cuda = cuda_module()
    for name, args in GRAPH_FUNCTIONS.items():
        fn = getattr(_cuda, name)
        assert signature_args(fn) == args, name
        assert len(fn.__doc__.splitlines()) > 1 or name == "is_capturing", f"{name} has no description"
    for cls, members in CLASS_MEMBERS.items():
        assert getattr(_cuda, cls).__doc__.strip(), cls
        for member in members:
            assert hasattr(getattr(_cuda, cls), member), f"{cls}.{member}"
    assert issubclass(_cuda.CaptureError, _cuda.CudaError)
    assert issubclass(_cuda.CaptureError, RuntimeError)


def test_without_a_device_graph_entry_points_raise_clean_exceptions():
    _cuda = cuda_module()
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device exists")
    assert _cuda.is_capturing() is False
    g = _cuda.Graph()
    assert not g.is_captured and not g.is_capturing
    with pytest.raises(_cuda.CudaError, match="Graph.capture_begin: cudaGetDevice"):
        g.capture_begin()
    with pytest.raises(_cuda.CudaError, match="Graph.capture_begin: cudaGetDevice"):
        with g.capture():
            pass
    with pytest.raises(_cuda.CaptureError, match="Graph.replay: nothing was captured"):
        g.replay()
    with pytest.raises(_cuda.CaptureError, match=r"Graph.capture_end: capture_begin\(\) was not called"):
        g.capture_end()
    g.reset()
    assert g.memory_stats() == {"live_bytes": 0, "held_bytes": 0}

    assert _cuda.memory_stats() == {"live_bytes": 0, "cached_bytes": 0, "malloc_calls": 0, "held_bytes": 0}


# --------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def G():
    if not cuda.is_available():
        pytest.skip(cuda.reason())
    from deepcore import _cuda
    return _cuda


def dev(G, a):
    return G.to_device(np.ascontiguousarray(a))


def test_memory_freed_during_capture_stays_reserved_until_reset(G):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 32)).astype(np.float32)
    a = np.full(32, 0.2, np.float32)
    dy = rng.normal(size=(64, 32)).astype(np.float32)
    xd, alpha, dyd, dxd, dad = dev(G, x), dev(G, a), dev(G, dy), G.DeviceBuffer(x.shape), G.DeviceBuffer((32,))
    G.empty_cache()  # only prelu's scratch block will be cached
    G.prelu_backward(xd, alpha, dyd, dxd, dad)  # warm-up: its scratch block is now cached
    mallocs = G.memory_stats()["malloc_calls"]
    g = G.Graph()
    with g.capture():
        G.prelu_backward(xd, alpha, dyd, dxd, dad)  # takes the cached scratch block and frees it
    assert G.memory_stats()["malloc_calls"] == mallocs
    held = g.memory_stats()["held_bytes"]
    assert held > 0 and G.memory_stats()["held_bytes"] >= held
    # eager code cannot get the graph's block: a new one is allocated
    G.prelu_backward(xd, alpha, dyd, dxd, dad)
    assert G.memory_stats()["malloc_calls"] == mallocs + 1
    eager_dx, eager_da = dxd.to_numpy(), dad.to_numpy()
    dxd[...] = 0.0
    g.replay()
    np.testing.assert_array_equal(dxd.to_numpy(), eager_dx)
    np.testing.assert_array_equal(dad.to_numpy(), eager_da)
    cached = G.memory_stats()["cached_bytes"]
    g.reset()
    assert g.memory_stats() == {"live_bytes": 0, "held_bytes": 0}
    assert G.memory_stats()["cached_bytes"] == cached + held
    G.prelu_backward(xd, alpha, dyd, dxd, dad)
    G.prelu_backward(xd, alpha, dyd, dxd, dad)
    assert G.memory_stats()["malloc_calls"] == mallocs + 1


def test_buffer_made_during_capture_is_claimed_by_the_graph(G):
    g = G.Graph()
    with g.capture():
        b = G.DeviceBuffer((1000,))  # its zero fill is captured
    assert g.memory_stats()["live_bytes"] >= 4000
    ptr = b.data_ptr
    del b
    assert g.memory_stats()["held_bytes"] >= 4000
    c = G.DeviceBuffer((1000,))
    assert c.data_ptr != ptr
    g.reset()
    assert g.memory_stats() == {"live_bytes": 0, "held_bytes": 0}


SYNC_CALLS = [
    ("DeviceBuffer.to_numpy", lambda G, s: s["x"].to_numpy()),
    ("DeviceBuffer.copy_from", lambda G, s: s["x"].copy_from(np.zeros(64, np.float32))),
    ("DeviceBuffer.copy_from", lambda G, s: s["x"].copy_from(np.zeros(64, np.float32), non_blocking=True)),
    ("DeviceBuffer.__setitem__", lambda G, s: s["x"].__setitem__(slice(0, 2), np.ones(2, np.float32))),
    ("synchronize", lambda G, s: G.synchronize()),
    ("empty_cache", lambda G, s: G.empty_cache()),
    ("sparse_categorical_crossentropy",
     lambda G, s: G.sparse_categorical_crossentropy(s["x"].reshape(8, 8), s["labels"], None, True)),
    ("optimizer_step", lambda G, s: G.optimizer_step(C.OptParams(), s["x"], s["y"], None, None, None, None, None,
                                                     None)),
]


@pytest.mark.parametrize("name,call", SYNC_CALLS, ids=[f"{i}-{c[0]}" for i, c in enumerate(SYNC_CALLS)])
def test_host_sync_inside_capture_raises_and_leaves_the_stream_usable(G, name, call):
    x = np.linspace(-1, 1, 64).astype(np.float32)
    s = {"x": dev(G, x), "y": G.DeviceBuffer((64,)), "labels": G.DeviceBuffer((8,), "int32")}
    relu = _CODES["relu"]
    g = G.Graph()
    with pytest.raises(G.CaptureError, match=re.escape(name) + r" cannot run inside a CUDA graph capture.*aborted"):
        with g.capture():
            G.activation_forward(relu, s["x"], s["y"])
            call(G, s)
    assert not G.is_capturing()
    assert not g.is_capturing and not g.is_captured
    # the stream works eagerly, and the graph can capture again
    s["x"].copy_from(x)
    G.activation_forward(relu, s["x"], s["y"])
    np.testing.assert_array_equal(s["y"].to_numpy(), np.maximum(x, 0))
    s["y"][...] = 0.0
    with g.capture():
        G.activation_forward(relu, s["x"], s["y"])
    g.replay()
    np.testing.assert_array_equal(s["y"].to_numpy(), np.maximum(x, 0))


def test_capture_end_reports_an_abort_that_the_block_swallowed(G):
    x = G.DeviceBuffer((16,))
    g = G.Graph()
    with pytest.raises(G.CaptureError, match="Graph.capture_end: nothing was captured, the capture was aborted: "
                                             "DeviceBuffer.to_numpy cannot run"):
        with g.capture():
            try:
                x.to_numpy()
            except G.CaptureError:
                pass
            G.activation_forward(_CODES["relu"], x, x)  # runs eagerly now
    assert not G.is_capturing()


def test_an_exception_inside_the_capture_block_discards_the_capture(G):
    x, y = G.DeviceBuffer((16,)), G.DeviceBuffer((17,))
    g = G.Graph()
    with pytest.raises(ValueError, match="y must have the shape of x"):
        with g.capture():
            G.activation_forward(_CODES["relu"], x, y)
    assert not G.is_capturing() and not g.is_captured
    assert g.memory_stats() == {"live_bytes": 0, "held_bytes": 0}


def test_graph_misuse_raises(G):
    x = G.DeviceBuffer((16,))
    g, h = G.Graph(), G.Graph()
    with pytest.raises(G.CaptureError, match="nothing was captured"):
        g.replay()
    g.capture_begin()
    assert G.is_capturing() and g.is_capturing
    with pytest.raises(G.CaptureError, match="already capturing"):
        g.capture_begin()
    with pytest.raises(G.CaptureError, match="another deepcore graph is capturing"):
        h.capture_begin()
    with pytest.raises(G.CaptureError, match="still capturing"):
        g.replay()
    G.activation_forward(_CODES["relu"], x, x)
    g.capture_end()
    with pytest.raises(G.CaptureError, match="already holds a capture"):
        g.capture_begin()
    with pytest.raises(G.CaptureError, match="Graph.capture_end: nothing was captured.*Graph.replay cannot run"):
        with h.capture():
            with pytest.raises(G.CaptureError, match="Graph.replay cannot run inside a CUDA graph capture"):
                g.replay()  # a replay may not be captured into another graph
    assert not G.is_capturing()
    g.replay()
    g.reset()
    assert not g.is_captured
    G.synchronize()
