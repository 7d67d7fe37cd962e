"""CUDA graphs: capture and replay of deepcore's stream, the graph's private
memory pool, the device-resident step state (DeviceHyper, SegmentTable,
LossScalars, call counters) and the *_graph kernel variants that read it.

The tests at the top run everywhere (the names and arguments exist, and without
a device every entry point raises a clean exception). The GPU tests skip with
deepcore.cuda.reason() when no usable device exists; they check that a replay
gives, bit for bit, what the eager calls give (same kernels, same order), and
that dropout masks under replay are those of the CPU for the same call.
"""

import re

import numpy as np
import pytest

from deepcore import _core as C
from deepcore import cuda
from deepcore.activations import _CODES
from device_data import dev

# Opt kinds (src/ops/optimizers.h)
SGD, ADAM = 0, 3


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
    "optimizer_step_graph": ["hyper", "params", "grads", "slot0", "slot1", "slot2", "table", "want_norm", "skip",
                             "scalars"],
    "dropout_forward_graph": ["x", "y", "rate", "seed", "stream", "call", "mask"],
    "dropout_backward_graph": ["dy", "dx", "rate", "seed", "stream", "call"],
    "dropout_mask_graph": ["mask", "rate", "seed", "stream", "call"],
    "alpha_dropout_forward_graph": ["x", "y", "rate", "seed", "stream", "call", "mask"],
    "alpha_dropout_backward_graph": ["dy", "dx", "rate", "seed", "stream", "call"],
    "rrelu_forward_graph": ["x", "y", "lower", "upper", "training", "seed", "stream", "call"],
    "rrelu_backward_graph": ["x", "dy", "dx", "lower", "upper", "training", "seed", "stream", "call"],
    "increment_counter": ["counter"],
    "sparse_categorical_crossentropy_graph": ["y_pred", "labels", "grad", "from_logits", "out", "accumulate"],
    "is_capturing": [],
}
CLASS_MEMBERS = {
    "Graph": ["capture_begin", "capture_end", "capture", "__enter__", "__exit__", "replay", "reset", "is_captured",
              "is_capturing", "memory_stats"],
    "DeviceHyper": ["set", "has_value"],
    "SegmentTable": ["read_result", "size", "segments", "penalties"],
    "LossScalars": ["read", "reset", "bad_label_flag"],
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
    assert signature_args(_cuda.DeviceHyper.__init__)[1:] == ["hyper"]
    assert signature_args(_cuda.SegmentTable.__init__)[1:] == ["size", "offsets", "l1", "l2"]
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

    with pytest.raises(_cuda.CudaError, match="DeviceHyper: cudaGetDevice"):
        _cuda.DeviceHyper(C.OptParams())
    with pytest.raises(_cuda.CudaError, match="SegmentTable: cudaGetDevice"):
        _cuda.SegmentTable(10)
    with pytest.raises(_cuda.CudaError, match="LossScalars: cudaGetDevice"):
        _cuda.LossScalars()

    x = np.zeros(8, np.float32)
    call = np.zeros(1, np.int32)
    calls = [
        ("dropout_forward_graph", (x, x, 0.5, 0, 0, call), "x must be a deepcore._cuda.DeviceBuffer"),
        ("dropout_backward_graph", (x, x, 0.5, 0, 0, call), "dy must be a deepcore._cuda.DeviceBuffer"),
        ("dropout_mask_graph", (x, 0.5, 0, 0, call), "mask must be a deepcore._cuda.DeviceBuffer"),
        ("alpha_dropout_forward_graph", (x, x, 0.5, 0, 0, call), "x must be a deepcore._cuda.DeviceBuffer"),
        ("alpha_dropout_backward_graph", (x, x, 0.5, 0, 0, call), "dy must be a deepcore._cuda.DeviceBuffer"),
        ("rrelu_forward_graph", (x, x, 0.1, 0.3, True, 0, 0, call), "x must be a deepcore._cuda.DeviceBuffer"),
        ("rrelu_backward_graph", (x, x, x, 0.1, 0.3, True, 0, 0, call), "x must be a deepcore._cuda.DeviceBuffer"),
        ("increment_counter", (call,), "counter must be a deepcore._cuda.DeviceBuffer of int32"),
        ("sparse_categorical_crossentropy_graph", (x.reshape(2, 4), call, None, True, object()), None),
        ("optimizer_step_graph", (object(), x, x, None, None, None, object()), None),
    ]
    for name, args, message in calls:
        with pytest.raises(TypeError, match=message):
            getattr(_cuda, name)(*args)
    assert _cuda.memory_stats() == {"live_bytes": 0, "cached_bytes": 0, "malloc_calls": 0, "held_bytes": 0}


def test_without_a_device_graph_state_checks_arguments_like_cpu():
    # The checks that come before any device access, so they run here too.
    _cuda = cuda_module()
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device exists")
    x = np.zeros(4, np.float32)
    bad_kind, bad_lr = C.OptParams(), C.OptParams()
    bad_kind.kind, bad_lr.lr = 9, float("nan")
    for hyper in (bad_kind, bad_lr):
        with pytest.raises(ValueError) as cpu_err:
            C.optimizer_step(hyper, x, x, None, None, None, None, None, None)
        with pytest.raises(ValueError) as gpu_err:
            _cuda.DeviceHyper(hyper)
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="DeviceHyper: hyper must be a deepcore._core.OptParams"):
        _cuda.DeviceHyper(object())
    with pytest.raises(ValueError, match="SegmentTable: size must be >= 0"):
        _cuda.SegmentTable(-1)
    with pytest.raises(ValueError, match=r"SegmentTable: offsets must start at 0 and end at params.size = 10, got 0 .. 5"):
        _cuda.SegmentTable(10, np.array([0, 5], np.int64))
    with pytest.raises(ValueError, match="SegmentTable: offsets must be non-decreasing"):
        _cuda.SegmentTable(10, np.array([0, 7, 3, 10], np.int64))
    with pytest.raises(ValueError, match="SegmentTable: per-segment l1/l2 need offsets"):
        _cuda.SegmentTable(10, None, np.zeros(1, np.float32))
    with pytest.raises(ValueError, match=r"SegmentTable: l2 must have shape \(2\)"):
        _cuda.SegmentTable(10, np.array([0, 4, 10], np.int64), None, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="dropout_forward_graph: rate must be in"):
        _cuda.dropout_forward_graph(x, x, 1.0, 0, 0, x)
    with pytest.raises(ValueError, match="rrelu_forward_graph: need finite lower <= upper"):
        _cuda.rrelu_forward_graph(x, x, 0.5, 0.1, True, 0, 0, x)


# --------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------
def adam(lr, t, clipnorm=0.0, b1=0.9, b2=0.999):
    """The OptParams the Python Adam hands the kernels at step t (1-based)."""
    h = C.OptParams()
    h.kind, h.lr, h.beta1, h.beta2, h.clipnorm = ADAM, lr, b1, b2, clipnorm
    h.c1 = lr * np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
    return h


def sgd(lr, momentum=0.0):
    h = C.OptParams()
    h.kind, h.lr, h.momentum = SGD, lr, momentum
    return h


def test_replayed_step_matches_eager_step_with_changing_lr(G):
    rng = np.random.default_rng(0)
    n = 3 * 8192 + 17  # several runs, one crossing segments
    offsets = np.array([0, 1000, 20000, n], np.int64)
    l1 = np.array([0.0, 1e-4, 0.0], np.float32)
    l2 = np.array([1e-3, 0.0, 0.0], np.float32)
    w0 = rng.normal(size=n).astype(np.float32)
    xs = [rng.normal(size=n).astype(np.float32) for _ in range(6)]
    lrs = [1e-3, 5e-4, 2e-3, 1e-4, 3e-3, 1e-3]
    tanh = _CODES["tanh"]

    # eager reference buffers, and the graph's own
    xe, we, ge, me, ve = dev(G, xs[0]), dev(G, w0), G.DeviceBuffer((n,)), G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
    xg, wg, gg, mg, vg = dev(G, xs[0]), dev(G, w0), G.DeviceBuffer((n,)), G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
    hyper = G.DeviceHyper(adam(lrs[0], 1, clipnorm=5.0))
    table = G.SegmentTable(n, offsets, l1, l2)

    def graph_step():
        G.activation_forward(tanh, xg, gg)  # a stand-in for the backward pass: grads = tanh(x)
        G.optimizer_step_graph(hyper, wg, gg, mg, vg, None, table, want_norm=True)

    def eager_step(t):
        G.activation_forward(tanh, xe, ge)
        return G.optimizer_step(adam(lrs[t - 1], t, clipnorm=5.0), we, ge, me, ve, None, offsets, l1, l2, True)

    # step 1 eagerly on both (the warm-up before the capture)
    graph_step()
    pen, norm = eager_step(1)
    assert table.read_result() == (pen, norm)
    g = G.Graph()
    with g.capture():
        graph_step()
    assert g.is_captured and not G.is_capturing()
    np.testing.assert_array_equal(wg.to_numpy(), we.to_numpy())  # the capture ran nothing
    for t in range(2, 7):
        xg.copy_from(xs[t - 1], non_blocking=True)
        xe.copy_from(xs[t - 1])
        hyper.set(adam(lrs[t - 1], t, clipnorm=5.0))
        g.replay()
        pen, norm = eager_step(t)
        np.testing.assert_array_equal(wg.to_numpy(), we.to_numpy(), err_msg=f"params at step {t}")
        np.testing.assert_array_equal(mg.to_numpy(), me.to_numpy(), err_msg=f"m at step {t}")
        np.testing.assert_array_equal(vg.to_numpy(), ve.to_numpy(), err_msg=f"v at step {t}")
        assert table.read_result() == (pen, norm)


def test_penalty_comes_back_with_the_loss_in_one_read(G):
    """optimizer_step_graph(..., scalars=s) leaves the step's penalty in s, so
    one s.read() returns loss and penalty (what fit's replayed step reads);
    the table then holds no result, and an overwriting loss call zeroes it."""
    rng = np.random.default_rng(1)
    rows, cols = 16, 5
    n = rows * cols
    offsets = np.array([0, 30, n], np.int64)
    l1, l2 = np.array([1e-3, 0.0], np.float32), np.array([2e-3, 5e-4], np.float32)
    pred = dev(G, rng.normal(size=(rows, cols)).astype(np.float32))
    labels = dev(G, rng.integers(0, cols, rows).astype(np.int32))
    w0 = rng.normal(size=n).astype(np.float32)
    wg, we = dev(G, w0), dev(G, w0)
    grad_g, grad_e = G.DeviceBuffer((rows, cols)), G.DeviceBuffer((rows, cols))
    hyper, table, out = G.DeviceHyper(sgd(0.1)), G.SegmentTable(n, offsets, l1, l2), G.LossScalars()

    def step():
        G.sparse_categorical_crossentropy_graph(pred, labels, grad_g, True, out)
        G.optimizer_step_graph(hyper, wg, grad_g.reshape(-1), None, None, None, table, scalars=out)

    g = G.Graph()
    step()  # warm-up
    with g.capture():
        step()
    for t in range(3):
        if t:
            g.replay()
        loss, correct = G.sparse_categorical_crossentropy(pred, labels, grad_e, True)
        pen, _ = G.optimizer_step(sgd(0.1), we, grad_e.reshape(-1), None, None, None, offsets, l1, l2)
        assert pen > 0.0
        assert out.read() == (loss, correct, rows, pen)
        np.testing.assert_array_equal(wg.to_numpy(), we.to_numpy())
    assert table.read_result() == (0.0, None)  # the reduction went to out
    G.sparse_categorical_crossentropy_graph(pred, labels, None, True, out)
    assert out.read()[3] == 0.0
    with pytest.raises(TypeError):
        G.optimizer_step_graph(hyper, wg, grad_g.reshape(-1), None, None, None, table, scalars=table)
    with pytest.raises(ValueError, match="want_norm=True with scalars"):
        G.optimizer_step_graph(hyper, wg, grad_g.reshape(-1), None, None, None, table, True, scalars=out)
    # a table that held a result holds none once the reduction goes to a LossScalars
    G.optimizer_step_graph(hyper, wg, grad_g.reshape(-1), None, None, None, table, want_norm=True)
    assert table.read_result()[1] is not None
    G.optimizer_step_graph(hyper, wg, grad_g.reshape(-1), None, None, None, table, scalars=out)
    assert table.read_result() == (0.0, None)


def test_swish_kernels_are_captured_and_each_replay_reads_beta(G):
    """swish_forward, swish_beta_grad and swish_backward queue no host work:
    they capture, and a replay after beta changed on the device gives what
    eager calls with that beta give, bit for bit (and the CPU's, to 1e-5)."""
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 3.0, size=(64, 300)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    xd, dyd, beta = dev(G, x), dev(G, dy), dev(G, np.ones((), np.float32))
    yg, dxg, dbeta_g = G.DeviceBuffer(x.shape), G.DeviceBuffer(x.shape), G.DeviceBuffer(())
    ye, dxe, dbeta_e = G.DeviceBuffer(x.shape), G.DeviceBuffer(x.shape), G.DeviceBuffer(())

    def step(y, dx, dbeta):
        G.swish_forward(xd, y, beta)
        G.swish_beta_grad(xd, dyd, beta, dbeta)
        G.swish_backward(xd, dyd, dx, beta)

    step(yg, dxg, dbeta_g)  # warm-up
    g = G.Graph()
    with g.capture():
        step(yg, dxg, dbeta_g)
    for value in (1.5, 0.25, -0.7):
        beta.copy_from(np.full((), value, np.float32))
        g.replay()
        step(ye, dxe, dbeta_e)
        np.testing.assert_array_equal(yg.to_numpy(), ye.to_numpy())
        np.testing.assert_array_equal(dxg.to_numpy(), dxe.to_numpy())
        assert dbeta_g.to_numpy() == dbeta_e.to_numpy()
        b = np.full((), value, np.float32)
        y_cpu, dbeta_cpu = np.empty_like(x), np.zeros((), np.float32)
        C.swish_forward(x, y_cpu, b)
        C.swish_beta_grad(x, dy, b, dbeta_cpu)
        np.testing.assert_allclose(yg.to_numpy(), y_cpu, rtol=1e-5, atol=1e-6)
        scale = float(np.sum(np.abs(dy.astype(np.float64)) * x.astype(np.float64) ** 2))
        assert abs(float(dbeta_g.to_numpy()) - float(dbeta_cpu)) <= 1e-5 * scale


def test_replayed_step_matches_the_cpu(G):
    rng = np.random.default_rng(1)
    n = 5000
    w, x = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    v = np.zeros(n, np.float32)
    wd, xd, gd, vd = dev(G, w), dev(G, x), G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
    hyper, table = G.DeviceHyper(sgd(0.1, 0.9)), G.SegmentTable(n)
    relu = _CODES["relu"]
    G.activation_forward(relu, xd, gd)  # warm-up
    g = G.Graph()
    with g.capture():
        G.activation_forward(relu, xd, gd)
        G.optimizer_step_graph(hyper, wd, gd, vd, None, None, table)
    for lr in (0.1, 0.05, 0.2):
        hyper.set(sgd(lr, 0.9))
        g.replay()
        C.optimizer_step(sgd(lr, 0.9), w, np.maximum(x, 0), v, None, None, None, None, None)
    np.testing.assert_allclose(wd.to_numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vd.to_numpy(), v, rtol=1e-5, atol=1e-6)


def test_device_hyper_keeps_the_structure_of_the_captured_step(G):
    n = 100
    w, gr, m, v = (G.DeviceBuffer((n,)) for _ in range(4))
    hyper, table = G.DeviceHyper(adam(1e-3, 1)), G.SegmentTable(n)
    G.optimizer_step_graph(hyper, w, gr, m, v, None, table)
    hyper.set(adam(5e-4, 2))  # values may change
    with pytest.raises(ValueError, match="between replays only the values may change"):
        hyper.set(sgd(0.1))
    with pytest.raises(ValueError, match="between replays only the values may change"):
        hyper.set(adam(1e-3, 2, clipnorm=1.0))
    with pytest.raises(ValueError, match="holds no hyperparameters yet"):
        G.optimizer_step_graph(G.DeviceHyper(), w, gr, m, v, None, table)
    with pytest.raises(ValueError, match="SegmentTable was made for 99"):
        G.optimizer_step_graph(hyper, w, gr, m, v, None, G.SegmentTable(99))
    with pytest.raises(ValueError, match="Adam needs the v"):
        G.optimizer_step_graph(hyper, w, gr, m, None, None, table)


def test_dropout_masks_under_replay_equal_eager_and_cpu_masks(G):
    rng = np.random.default_rng(2)
    n, rate, seed, stream = 1003, 0.3, 42, 7
    words = (n + 31) // 32
    x, dy = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    xd, dyd = dev(G, x), dev(G, dy)
    yd, dxd, md, ad, rd = (G.DeviceBuffer((n,)) for _ in range(5))
    bits = G.DeviceBuffer((words,), "int32")
    counter = G.DeviceBuffer((1,), "int32")

    def step(call):
        G.dropout_forward_graph(xd, yd, rate, seed, stream, call, bits)
        G.dropout_backward_graph(dyd, dxd, rate, seed, stream, call)
        G.dropout_mask_graph(md, rate, seed, stream, call)
        G.alpha_dropout_forward_graph(xd, ad, rate, seed, stream + 1, call)
        G.rrelu_forward_graph(xd, rd, 0.1, 0.3, True, seed, stream + 2, call)
        G.increment_counter(call)

    step(G.DeviceBuffer((1,), "int32"))  # warm-up on a throwaway counter
    g = G.Graph()
    with g.capture():
        step(counter)
    assert counter.to_numpy()[0] == 0
    for t in range(4):
        g.replay()
        assert counter.to_numpy()[0] == t + 1
        y, b, dx, m = np.empty_like(x), np.empty(words, np.int32), np.empty_like(x), np.empty_like(x)
        C.dropout_forward(x, y, rate, seed, stream, t, b)
        C.dropout_backward(dy, dx, rate, seed, stream, t)
        C.dropout_mask(m, rate, seed, stream, t)
        np.testing.assert_array_equal(yd.to_numpy(), y, err_msg=f"call {t}")
        np.testing.assert_array_equal(bits.to_numpy(), b, err_msg=f"call {t}")
        np.testing.assert_array_equal(dxd.to_numpy(), dx, err_msg=f"call {t}")
        np.testing.assert_array_equal(md.to_numpy(), m, err_msg=f"call {t}")
        # alpha dropout and RReLU: bit for bit against the eager GPU kernels (the CPU agrees up to FMA)
        ea, er = G.DeviceBuffer((n,)), G.DeviceBuffer((n,))
        G.alpha_dropout_forward(xd, ea, rate, seed, stream + 1, t)
        G.rrelu_forward(xd, er, 0.1, 0.3, True, seed, stream + 2, t)
        np.testing.assert_array_equal(ad.to_numpy(), ea.to_numpy(), err_msg=f"call {t}")
        np.testing.assert_array_equal(rd.to_numpy(), er.to_numpy(), err_msg=f"call {t}")
        cpu_r = np.empty_like(x)
        C.rrelu_forward(x, cpu_r, 0.1, 0.3, True, seed, stream + 2, t)
        np.testing.assert_array_max_ulp(rd.to_numpy(), cpu_r, maxulp=1)


def test_increment_counter_wraps_like_uint32(G):
    c = dev(G, np.array([-1, 0, 2**31 - 1], np.int32))
    G.increment_counter(c)
    np.testing.assert_array_equal(c.to_numpy(), np.array([0, 1, -(2**31)], np.int32))


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
    ("optimizer_step", lambda G, s: G.optimizer_step(sgd(0.1), s["x"], s["y"], None, None, None, None, None, None)),
    ("DeviceHyper.set", lambda G, s: s["hyper"].set(sgd(0.1))),
    ("DeviceHyper", lambda G, s: G.DeviceHyper(sgd(0.1))),
    ("SegmentTable", lambda G, s: G.SegmentTable(64)),
    ("LossScalars.read", lambda G, s: s["loss"].read()),
    ("SegmentTable.read_result", lambda G, s: s["table"].read_result()),
]


@pytest.mark.parametrize("name,call", SYNC_CALLS, ids=[f"{i}-{c[0]}" for i, c in enumerate(SYNC_CALLS)])
def test_host_sync_inside_capture_raises_and_leaves_the_stream_usable(G, name, call):
    x = np.linspace(-1, 1, 64).astype(np.float32)
    s = {"x": dev(G, x), "y": G.DeviceBuffer((64,)), "labels": G.DeviceBuffer((8,), "int32"),
         "hyper": G.DeviceHyper(sgd(0.1)), "loss": G.LossScalars(), "table": G.SegmentTable(64)}
    G.optimizer_step_graph(s["hyper"], s["x"], s["y"], None, None, None, s["table"], want_norm=True)
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


def test_loss_under_replay_equals_eager_loss(G):
    rng = np.random.default_rng(4)
    rows, cols = 37, 10
    logits = rng.normal(size=(rows, cols)).astype(np.float32)
    labels = [rng.integers(0, cols, rows).astype(np.int32) for _ in range(3)]
    pd, ld, grad_g, grad_e = dev(G, logits), dev(G, labels[0]), G.DeviceBuffer((rows, cols)), G.DeviceBuffer((rows, cols))
    out = G.LossScalars()
    G.sparse_categorical_crossentropy_graph(pd, ld, grad_g, True, out)  # warm-up
    g = G.Graph()
    with g.capture():
        G.sparse_categorical_crossentropy_graph(pd, ld, grad_g, True, out)
    for lab in labels:
        ld.copy_from(lab)
        g.replay()
        loss, correct = G.sparse_categorical_crossentropy(pd, ld, grad_e, True)
        assert out.read() == (loss, correct, rows, 0.0)
        np.testing.assert_array_equal(grad_g.to_numpy(), grad_e.to_numpy())
        assert out.bad_label_flag.to_numpy()[0] == 0

    # accumulating over replays
    acc = G.LossScalars()
    h = G.Graph()
    with h.capture():
        G.sparse_categorical_crossentropy_graph(pd, ld, None, True, acc, accumulate=True)
    losses, hits = [], 0
    for lab in labels:
        ld.copy_from(lab)
        h.replay()
        loss, correct = G.sparse_categorical_crossentropy(pd, ld, None, True)
        losses.append(loss)
        hits += correct
    mean, correct, n, penalty = acc.read()
    assert penalty == 0.0
    assert (correct, n) == (hits, 3 * rows)
    assert mean == pytest.approx(np.mean(losses), rel=1e-12)
    acc.reset()
    assert acc.read()[1:] == (0, 0, 0.0)


def test_bad_label_under_replay_raises_like_eager_and_skips_the_update(G):
    rows, cols = 8, 5
    logits = np.random.default_rng(5).normal(size=(rows, cols)).astype(np.float32)
    good = np.arange(rows, dtype=np.int32) % cols
    bad = good.copy()
    bad[3] = 7
    pd, ld, grad = dev(G, logits), dev(G, good), G.DeviceBuffer((rows, cols))
    out, hyper, table = G.LossScalars(), G.DeviceHyper(sgd(0.5)), G.SegmentTable(rows * cols)

    def step():
        G.sparse_categorical_crossentropy_graph(pd, ld, grad, True, out)
        G.optimizer_step_graph(hyper, pd.reshape(-1), grad.reshape(-1), None, None, None, table,
                               skip=out.bad_label_flag)

    step()  # warm-up: one real update
    g = G.Graph()
    with g.capture():
        step()
    g.replay()
    out.read()
    before = pd.to_numpy()
    ld.copy_from(bad)
    g.replay()
    with pytest.raises(ValueError) as eager_err:
        G.sparse_categorical_crossentropy(pd, ld, None, True)
    with pytest.raises(ValueError) as graph_err:
        out.read()
    assert str(graph_err.value) == str(eager_err.value) == \
        "label 7 at row 3 is out of range: expected an integer in [0, 5)"
    assert out.bad_label_flag.to_numpy()[0] == 1
    np.testing.assert_array_equal(pd.to_numpy(), before)  # the step was skipped
    ld.copy_from(good)
    g.replay()
    out.read()  # overwritten: no error
    assert not np.array_equal(pd.to_numpy(), before)


def test_dense_forward_needs_an_eager_run_before_capture_and_then_replays(G):
    """cuBLASLt's handle, workspace and plan cannot be made inside a capture:
    a first GEMM of a new shape inside one raises CaptureError (and aborts it);
    after one eager call with the same shapes, the captured GEMM replays."""
    if not G.blas_available():
        pytest.skip(f"cuBLASLt unavailable: {G.blas_reason()}")
    rng = np.random.default_rng(3)
    # a shape no other test uses, so no plan exists yet
    x, w = rng.normal(size=(11, 37)).astype(np.float32), rng.normal(size=(37, 29)).astype(np.float32)
    b = rng.normal(size=29).astype(np.float32)
    xd, wd, bd, zd = dev(G, x), dev(G, w), dev(G, b), G.DeviceBuffer((11, 29))
    linear = _CODES["linear"]
    g = G.Graph()
    with pytest.raises(G.CaptureError, match="dense_forward cannot run inside a CUDA graph capture.*eagerly once"):
        with g.capture():
            G.dense_forward(xd, wd, bd, zd, zd, linear, 0.0, 1.0)
    assert not G.is_capturing()
    G.dense_forward(xd, wd, bd, zd, zd, linear, 0.0, 1.0)  # the eager warm-up
    want = zd.to_numpy()
    zd[...] = 0.0
    with g.capture():
        G.dense_forward(xd, wd, bd, zd, zd, linear, 0.0, 1.0)
    g.replay()
    np.testing.assert_array_equal(zd.to_numpy(), want)
