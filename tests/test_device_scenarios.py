"""The test double holds to the real deepcore._cuda (cuda/device_buffer.cpp,
interop.cpp, module.cpp, graph_bindings.cpp) where the Python device path
could otherwise lean on a more permissive fake, and scenarios that run every
layer and optimizer through fit, fold, MC prediction, lr_find and device moves
on the fake device."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core
from device_data import blobs
import fake_cuda as fake_cuda_module
from fake_cuda import FakeCuda, FakeDeviceBuffer

L = dc.layers


# ------------------------------------------------------------ buffer contract
def test_indexing_a_1d_buffer_gives_a_0d_view_that_writes_through(fake_cuda):
    b = fake_cuda.to_device(np.arange(4, dtype=np.float32))
    v = b[2]
    assert isinstance(v, FakeDeviceBuffer) and v.shape == () and v.ndim == 0
    v[...] = 9.0
    b[-1][...] = fake_cuda.to_device(np.array(5.0, np.float32))
    np.testing.assert_array_equal(b.to_numpy(), [0, 1, 9, 5])
    with pytest.raises(IndexError):
        v[0]                                # a 0-d view takes only [...]


@pytest.mark.parametrize("how", [pickle.dumps, copy.copy, copy.deepcopy])
def test_device_buffers_cannot_be_pickled_or_copied_by_the_copy_module(fake_cuda, how):
    b = fake_cuda.to_device(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"cannot pickle 'deepcore._cuda.DeviceBuffer' object"):
        how(b)
    assert copy.deepcopy(b, {id(b): "mapped"}) == "mapped"  # a memo entry is what a deep copy must use


def test_no_implicit_numpy_conversion_through_the_array_interface(fake_cuda):
    b = fake_cuda.to_device(np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="to_numpy"):
        b.__array_interface__
    with pytest.raises(TypeError):
        np.asarray(b)


def test_a_number_into_a_0d_target_is_a_host_copy_and_into_a_larger_one_a_fill(fake_cuda):
    b = fake_cuda.DeviceBuffer((3,), "float32")
    g = fake_cuda.Graph()
    with g:
        b[0:2] = 4.0                        # a fill kernel: captured, the value baked in
        b[...] = b.copy()                   # a device copy
    g.replay()
    np.testing.assert_array_equal(b.to_numpy(), [4, 4, 0])
    g2 = fake_cuda.Graph()
    g2.capture_begin()
    with pytest.raises(fake_cuda.CaptureError, match="host memory"):
        b[2] = 1.0                          # np.asarray(1.0) has the 0-d target's shape: an upload
    with pytest.raises(fake_cuda.CaptureError, match="aborted"):
        g2.capture_end()
    b[2] = np.int64(7)                      # outside a capture it is copied (cast on the host)
    np.testing.assert_array_equal(b.to_numpy(), [4, 4, 7])


def test_dtype_names_are_the_three_the_module_knows(fake_cuda):
    for ok in ("float32", "int32", "int64", np.dtype("int64"), np.float32):
        assert fake_cuda.DeviceBuffer((1,), ok).dtype.name in ("float32", "int32", "int64")
    for bad in ("float64", "f4", "float", "int8", np.float64, "bool"):
        with pytest.raises(TypeError, match="dtype must be"):
            fake_cuda.DeviceBuffer((1,), bad)
    with pytest.raises(TypeError):
        fake_cuda.DeviceBuffer(3)           # the shape is a sequence
    with pytest.raises(TypeError):
        fake_cuda.DeviceBuffer((2.0,))


def test_gather_rows_takes_host_int64_indices(fake_cuda):
    src = fake_cuda.to_device(np.arange(12, dtype=np.float32).reshape(4, 3))
    dst = fake_cuda.DeviceBuffer((2, 3))
    fake_cuda.gather_rows(src, np.array([3, 0], np.int64), dst)
    np.testing.assert_array_equal(dst.to_numpy(), [[9, 10, 11], [0, 1, 2]])
    with pytest.raises(TypeError, match="host numpy int64"):
        fake_cuda.gather_rows(src, fake_cuda.to_device(np.array([3, 0], np.int64)), dst)
    with pytest.raises(TypeError, match="host numpy int64"):
        fake_cuda.gather_rows(src, np.array([3, 0], np.int32), dst)


def test_segment_table_wants_typed_arrays_and_reports_nonzero_penalties(fake_cuda):
    off = np.array([0, 4, 6], np.int64)
    zero, some = np.zeros(2, np.float32), np.array([0, 0.1], np.float32)
    assert fake_cuda.SegmentTable(6, off, zero, zero).penalties is False
    assert fake_cuda.SegmentTable(6, off, some, zero).penalties is True
    assert fake_cuda.SegmentTable(6, off, zero, some).segments == 2
    assert fake_cuda.SegmentTable(6).penalties is False
    for bad in (dict(offsets=[0, 4, 6]), dict(offsets=off.astype(np.int32)), dict(offsets=off, l1=[0.0, 0.0]),
                dict(offsets=off, l2=zero.astype(np.float64)), dict(offsets=np.zeros((3, 2), np.int64)[:, 0])):
        with pytest.raises(TypeError):
            fake_cuda.SegmentTable(6, **bad)


def test_module_info_as_the_real_module(fake_cuda):
    assert fake_cuda.device_count() == 1
    assert set(fake_cuda.memory_stats()) >= {"live_bytes", "cached_bytes", "malloc_calls", "held_bytes"}
    assert fake_cuda.blas_available() is True and fake_cuda.blas_reason() == ""
    FakeCuda.blas = False
    assert fake_cuda.blas_available() is False and "cuBLASLt" in fake_cuda.blas_reason()


@pytest.mark.skipif(fake_cuda_module._REAL is None, reason="deepcore was built without CUDA (no deepcore._cuda)")
def test_fake_kernels_run_the_real_argument_parsing(fake_cuda):
    x = fake_cuda.to_device(np.ones((2, 3), np.float32))
    counter = fake_cuda.DeviceBuffer((1,), "int32")
    calls = [
        lambda: fake_cuda.dropout_forward(x, x, 0.1, 1.5, 0, 0),             # a float seed
        lambda: fake_cuda.activation_forward("relu", x, x),                  # the kind is an int
        lambda: fake_cuda.philox_uniform(x, "0", 0),
        lambda: fake_cuda.dropout_forward_graph(x, x, 0.1, -1, 0, counter),  # a negative uint64
        lambda: fake_cuda.rrelu_forward_graph(x, x, 0.1, 0.3, True, 1, 0),  # the call counter is missing
        lambda: fake_cuda.gather_rows(x, np.zeros(1, np.int64)),
        lambda: fake_cuda.increment_counter(),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="incompatible function arguments"):
            call()
    fake_cuda.increment_counter(counter)    # well-formed calls run on the fake
    assert counter.to_numpy()[0] == 1


# ----------------------------------------------------------------- scenarios
ZOO = [
    lambda: [L.PReLU(), L.Dense(24), L.RReLU(seed=3), L.Dense(24), L.Swish()],
    lambda: [L.ELU(), L.AlphaDropout(0.1), L.Dense(24, activation="selu"), L.GELU(), L.LeakyReLU(0.1), L.Mish()],
    lambda: [L.MCDropout(0.3), L.Activation("tanh")],
    lambda: [L.Dense(24), L.BatchNormalization(trainable=False), L.Activation("relu")],
    lambda: [L.Dense(24, use_bias=False), L.BatchNormalization(), L.Activation("relu")],
    lambda: [L.Normalization(mean=0.5, variance=2.0)],
    lambda: [L.Flatten()],
]


def mlp(extra, graphs=False):
    dc.set_random_seed(7)
    m = dc.Sequential([L.Dense(32, activation="relu", input_shape=[20]), L.BatchNormalization(), L.Dropout(0.2),
                       *extra(), L.Dense(16, activation="relu"), L.Dense(4, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], cuda_graphs=graphs)
    return m


def scenario(k, graphs, device):
    """fit, fold, evaluate, MC prediction, lr_find, fit, a round trip to the
    CPU (on a device) and fit again; what each stage returns, as host values."""
    x, y = blobs()
    m = mlp(ZOO[k], graphs).to(device)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["fit"] = m.fit(x, y, epochs=2, verbose=0, seed=1).history["loss"]
        out["weights"] = m.get_weights()
        f = m.fold_batchnorm()              # a deep copy: every device tensor must be in its memo
        out["fold_on_device"] = all(isinstance(w.value, FakeDeviceBuffer) for w in f.weights)
        out["predict"] = m.predict(x)
        out["fold_predict"] = f.predict(x)
        out["fold_evaluate"] = f.evaluate(x, y, verbose=0)
        out["mc"] = m.predict_mc(x[:10], samples=3)
        r = dc.lr_find(m, x, y, steps=5)
        out["lr_find"] = (r.learning_rates, r.losses, r.suggestion)
        out["after_lr_find"] = m.get_weights()
        out["fit_again"] = m.fit(x, y, epochs=1, verbose=0, seed=2).history["loss"]
        if device != "cpu":
            m.to("cpu")
            m.to(device)
        out["fit_after_moves"] = m.fit(x, y, epochs=1, verbose=0, seed=2).history["loss"]
        out["final"] = m.get_weights()
        out["final_on_device"] = all(isinstance(w.value, FakeDeviceBuffer) for w in m.weights)
    return out


def assert_same_values(a, b, what):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (p, q) in enumerate(zip(a, b)):
            assert_same_values(p, q, f"{what}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("k", range(len(ZOO)))
def test_every_layer_through_fit_fold_mc_lr_find_and_moves_on_the_device(fake_cuda, k, graphs):
    """Each stage on the fake device returns what it returns on the CPU, bit
    for bit (the fake's kernels are the CPU's), and each stage does its job:
    training lowers the loss, the folded model predicts what the model does,
    lr_find leaves the weights as they were, the model stays on the device."""
    dev, cpu = scenario(k, graphs, "cuda"), scenario(k, False, "cpu")
    assert dev["fold_on_device"] and dev["final_on_device"]
    for key in ("fit", "weights", "predict", "fold_predict", "fold_evaluate", "mc", "lr_find", "after_lr_find",
                "fit_again", "fit_after_moves", "final"):
        assert_same_values(dev[key], cpu[key], key)
    assert dev["fit"][1] < dev["fit"][0]
    np.testing.assert_allclose(dev["fold_predict"], dev["predict"], rtol=1e-4, atol=1e-5)
    assert_same_values(dev["after_lr_find"], dev["weights"], "lr_find restores the weights")
    assert dev["fit_after_moves"] != dev["fit_again"]  # the moves kept the trained weights: training went on


# Every layer's step is captured: Swish's kernels read its trainable beta from the device, a frozen
# BatchNormalization's backward runs on the device, and Normalization recomputes its scale only when its
# variance is assigned. One epoch of blobs: 7 batches of 32 (the first eager, the second captured, then
# replayed: 6 replays) and a ragged one of 26 (eager: the first step of its size).
@pytest.mark.parametrize("k", range(len(ZOO)))
def test_every_layer_trains_under_cuda_graphs_without_falling_back(fake_cuda, k):
    x, y = blobs()
    m = mlp(ZOO[k], graphs=True).to("cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*training step runs eagerly")
        h = m.fit(x, y, epochs=1, verbose=0, seed=1).history
    assert (FakeCuda.captures, FakeCuda.replays) == (1, 6)
    cpu = mlp(ZOO[k])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h_cpu = cpu.fit(x, y, epochs=1, verbose=0, seed=1).history
    assert h == h_cpu
    for p, q in zip(m.get_weights(), cpu.get_weights()):
        np.testing.assert_array_equal(p, q)


def _penalized(opt, device):
    dc.set_random_seed(1)
    m = dc.Sequential([L.Dense(8, activation="relu", input_shape=[20], kernel_regularizer="l2",
                               kernel_constraint=dc.constraints.MaxNorm(1.0), name="h"),
                       L.Dense(4, activation="softmax", name="out")])
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", cuda_graphs=True)
    return m.to(device)


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw", "ftrl"])
def test_every_optimizer_with_penalties_and_constraints_on_device_graphs(fake_cuda, opt):
    """Replayed graph steps train as the CPU does (bit for bit), MaxNorm(1)
    holds every unit's incoming weights to norm <= 1 (some of the Glorot
    initial ones are above it), and evaluate adds the l2 penalty
    0.01 * sum(w^2) of the kernel to the float64 cross-entropy."""
    x, y = blobs()
    m, cpu = _penalized(opt, "cuda"), _penalized(opt, "cpu")
    assert np.any(np.linalg.norm(m.get_weights()[0], axis=0) > 1.05)  # the constraint has work to do
    replays = FakeCuda.replays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = m.fit(x, y, epochs=2, verbose=0, seed=0).history["loss"]
        h_cpu = cpu.fit(x, y, epochs=2, verbose=0, seed=0).history["loss"]
        loss = m.evaluate(x, y, verbose=0)
    assert FakeCuda.replays > replays
    assert h == h_cpu
    weights = m.get_weights()
    for p, q in zip(weights, cpu.get_weights()):
        np.testing.assert_array_equal(p, q)
    kernel, bias, k2, b2 = (w.astype(np.float64) for w in weights)
    assert np.all(np.linalg.norm(kernel, axis=0) <= 1.0 + 1e-6)
    z = np.maximum(x @ kernel + bias, 0.0) @ k2 + b2
    z -= z.max(1, keepdims=True)
    ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y])
    assert loss == pytest.approx(ce + 0.01 * np.sum(kernel ** 2), rel=1e-5)


def test_a_readapted_normalization_is_recaptured_and_matches_the_cpu(fake_cuda):
    """The graph bakes in Normalization's scale buffer; adapting again bumps the
    variance's version, so the step is captured again with the new scale."""
    x, y = blobs()
    runs = []
    for device, graphs in (("cpu", False), ("cuda", True)):
        dc.set_random_seed(3)
        norm = L.Normalization()
        m = dc.Sequential([L.Input(shape=[20]), norm, L.Dense(16, activation="relu"),
                           L.Dense(4, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graphs=graphs)
        norm.adapt(x)
        m.to(device)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*training step runs eagerly")
            h1 = m.fit(x, y, epochs=1, verbose=0, seed=1).history["loss"]
            captures = FakeCuda.captures
            norm.adapt(x * 3.0 + 1.0)
            h2 = m.fit(x, y, epochs=1, verbose=0, seed=2).history["loss"]
        if graphs:
            assert FakeCuda.captures > captures  # captured again after the re-adapt
        runs.append((h1, h2, [w.numpy() for w in m.weights]))
    (a1, a2, wa), (b1, b2, wb) = runs
    assert a1 == b1 and a2 == b2
    for p, q in zip(wa, wb):
        np.testing.assert_array_equal(p, q)
