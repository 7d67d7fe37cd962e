"""Training steps as CUDA graphs (``compile(cuda_graphs=True)``).

Most tests run everywhere, against the CPU-backed double of deepcore._cuda
(fake_cuda.py), whose graphs record kernels during a capture without running
them and run the records on replay, reading the device step state (the
DeviceHyper, the dropout call counters) at that time. Graph training must
then equal eager training, and the CPU, bit for bit: weights, losses,
accuracy and optimizer state. The tests at the end do the same comparisons
on a real GPU with a tolerance and skip with deepcore.cuda.reason() without one.
"""
import warnings

import numpy as np
import pytest

import deepcore as dc
from deepcore.activations import _CODES
from deepcore.backend import to_host
from deepcore.callbacks import Callback, ReduceLROnPlateau, TerminateOnNaN
from deepcore.schedules import ExponentialDecay
from device_data import assert_steps_agree, blobs
from fake_cuda import FakeCuda

L = dc.layers


data = blobs  # 250 samples: the last batch is ragged


def adam_schedule():
    return dc.optimizers.Adam(ExponentialDecay(1e-2, decay_steps=5, decay_rate=0.9))


def sgd_momentum():
    return dc.optimizers.SGD(0.05, momentum=0.9)


def mlp(optimizer=adam_schedule, graphs=True, extra=tuple, loss="sparse_categorical_crossentropy",
        out_activation="softmax", metrics=("accuracy",), seed=7):
    """Dense -> BatchNorm -> Dropout [-> extra()] -> Dense -> Dense, from a fixed seed."""
    dc.set_random_seed(seed)
    model = dc.Sequential([L.Dense(32, activation="relu", kernel_initializer="he_normal", name="d1",
                                   input_shape=[20]),
                           L.BatchNormalization(name="bn"), L.Dropout(0.2, name="drop"), *extra(),
                           L.Dense(16, activation="relu", name="d2"),
                           L.Dense(4, activation=out_activation, name="out")], name="mlp")
    model.compile(optimizer=optimizer(), loss=loss, metrics=list(metrics), cuda_graphs=graphs)
    return model


def assert_same_training(a, b, ha=None, hb=None):
    for v, wa, wb in zip(a.weights, a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb, err_msg=v.path)
    sa, sb = a.optimizer.get_state(), b.optimizer.get_state()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    for layer_a, layer_b in zip(a.layers, b.layers):
        assert getattr(layer_a, "_calls", None) == getattr(layer_b, "_calls", None), layer_a.name
    if ha is not None:
        assert ha.history == hb.history


def train(model, device, callbacks=(), epochs=4, **kwargs):
    if device != "cpu":
        model.to(device)
    x, y = data()
    return model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, seed=3, callbacks=list(callbacks), **kwargs)


# --------------------------------------------------------------------------
# the fake graph API itself
# --------------------------------------------------------------------------
def test_fake_capture_records_kernels_and_replay_runs_them(fake_cuda):
    x = fake_cuda.to_device(np.arange(8, dtype=np.float32) - 4)
    y = fake_cuda.DeviceBuffer((8,))
    g = fake_cuda.Graph()
    with g.capture():
        fake_cuda.activation_forward(_CODES["relu"], x, y, 0.0, 1.0)  # recorded: recorded, not run
    np.testing.assert_array_equal(y.to_numpy(), 0)
    g.replay()
    np.testing.assert_array_equal(y.to_numpy(), np.maximum(np.arange(8) - 4, 0))
    x.copy_from(np.full(8, 2, np.float32))  # inputs by reference: a replay sees the new values
    g.replay()
    np.testing.assert_array_equal(y.to_numpy(), 2)
    assert FakeCuda.captures == 1 and FakeCuda.replays == 2


def test_fake_host_syncing_calls_raise_capture_error_and_abort(fake_cuda):
    x = fake_cuda.DeviceBuffer((4,))
    for call in (x.to_numpy, lambda: x.copy_from(np.zeros(4, np.float32)), lambda: fake_cuda.count_nonfinite(x),
                 lambda: x.__setitem__(Ellipsis, np.ones(4, np.float32))):
        g = fake_cuda.Graph()
        g.capture_begin()
        with pytest.raises(fake_cuda.CaptureError):
            call()
        assert not fake_cuda.is_capturing()
        with pytest.raises(fake_cuda.CaptureError, match="aborted"):
            g.capture_end()
        assert not g.is_captured


def test_fake_graph_reads_device_counters_and_bakes_in_numbers(fake_cuda):
    """A call word passed as an int repeats on every replay; a device counter
    incremented inside the graph gives the eager sequence of masks."""
    x = fake_cuda.to_device(np.ones(64, np.float32))
    y, mask = fake_cuda.DeviceBuffer((64,)), fake_cuda.DeviceBuffer((2,), "int32")
    eager = []
    for call in range(3):
        fake_cuda.dropout_forward(x, y, 0.5, 1, 2, call, mask)
        eager.append(y.to_numpy())
    counter = fake_cuda.DeviceBuffer((1,), "int32")
    g = fake_cuda.Graph()
    with g.capture():
        fake_cuda.dropout_forward_graph(x, y, 0.5, 1, 2, counter, mask)
        fake_cuda.increment_counter(counter)
    baked = fake_cuda.Graph()
    with baked.capture():
        fake_cuda.dropout_forward(x, y, 0.5, 1, 2, 0, mask)
    for call in range(3):
        g.replay()
        np.testing.assert_array_equal(y.to_numpy(), eager[call])
        baked.replay()
        np.testing.assert_array_equal(y.to_numpy(), eager[0])
    with pytest.raises(TypeError):
        fake_cuda.dropout_forward_graph(x, y, 0.5, 1, 2, 0, mask)  # call must live on the device


def test_fake_device_hyper_is_read_when_the_graph_runs(fake_cuda):
    params = fake_cuda.to_device(np.ones(4, np.float32))
    grads = fake_cuda.to_device(np.ones(4, np.float32))
    h = dc._core.OptParams()
    h.kind, h.lr = 0, 0.5
    hyper, table = fake_cuda.DeviceHyper(h), fake_cuda.SegmentTable(4)
    g = fake_cuda.Graph()
    with g.capture():
        fake_cuda.optimizer_step_graph(hyper, params, grads, None, None, None, table)
    h.lr = 0.25  # the host object changes; the device copy does not until set()
    g.replay()
    np.testing.assert_array_equal(params.to_numpy(), 0.5)
    hyper.set(h)
    g.replay()
    np.testing.assert_array_equal(params.to_numpy(), 0.25)
    h.momentum = 0.9
    with pytest.raises(ValueError):  # the rule's structure is frozen once captured
        hyper.set(h)


# --------------------------------------------------------------------------
# graph training equals eager training and the CPU
# --------------------------------------------------------------------------
def test_graph_training_equals_eager_and_cpu_adam_with_a_schedule(fake_cuda):
    h_cpu = train(cpu := mlp(graphs=True), "cpu")
    h_eager = train(eager := mlp(graphs=False), "cuda")
    before = FakeCuda.captures
    h_graph = train(graph := mlp(graphs=True), "cuda")
    assert FakeCuda.captures - before == 2  # batch sizes 32 and 26: captured once each
    assert FakeCuda.replays > 20
    assert_same_training(eager, graph, h_eager, h_graph)
    assert_same_training(cpu, graph, h_cpu, h_graph)
    assert graph.optimizer.iterations == 4 * 8
    np.testing.assert_array_equal(graph.predict(data()[0]), eager.predict(data()[0]))


def test_device_training_reads_no_output_back_for_sparse_accuracy(fake_cuda, monkeypatch):
    """Accuracy with sparse_categorical_crossentropy takes the loss kernel's
    correct-row count (the graph's LossScalars): fit copies nothing but the
    loss back per step, eagerly or as a graph, and still equals the CPU."""
    from fake_cuda import FakeDeviceBuffer

    h_cpu = train(mlp(graphs=False), "cpu")
    for graphs in (False, True):
        model = mlp(graphs=graphs).to("cuda")
        copies = []
        real = FakeDeviceBuffer.to_numpy
        monkeypatch.setattr(FakeDeviceBuffer, "to_numpy", lambda self: copies.append(self.shape) or real(self))
        h = train(model, "cuda")
        monkeypatch.setattr(FakeDeviceBuffer, "to_numpy", real)
        assert copies == [], graphs
        assert h.history == h_cpu.history
    # A metric that needs the output still gets it (one copy per step, after the graph ran).
    class OnOutput(dc.metrics.SparseCategoricalAccuracy):
        def _values(self, y_true, y_pred):
            return np.argmax(y_pred, axis=-1) == y_true.reshape(-1)

    model = mlp(graphs=True, metrics=(OnOutput(name="on_output"), "accuracy")).to("cuda")
    h = train(model, "cuda")
    assert h.history["accuracy"] == h_cpu.history["accuracy"]
    assert h.history["on_output"] == h_cpu.history["accuracy"]


def test_set_weights_between_graph_steps_keeps_the_capture_and_matches_the_cpu(fake_cuda):
    """Weights and BatchNorm's moving statistics live in device memory, read at
    replay: assigning them (set_weights, optimizer.set_state) needs no new
    capture, and each replayed step equals the CPU's from the same state."""
    x, y = data()
    cpu, dev = mlp(graphs=False), mlp().to("cuda")
    for step, lo in enumerate([0, 32, 64, 96, 128]):
        dev.set_weights(cpu.get_weights())
        if step:
            dev.optimizer.set_state(cpu.optimizer.get_state())
        a = cpu.train_on_batch(x[lo:lo + 32], y[lo:lo + 32])
        b = dev.train_on_batch(x[lo:lo + 32], y[lo:lo + 32])
        assert a == b
        for wc, wd in zip(cpu.get_weights(), dev.get_weights()):
            np.testing.assert_array_equal(wc, wd)
    assert len(dev._graphs.steps) == 1 and FakeCuda.captures == 1 and FakeCuda.replays == 4


def test_graph_training_follows_reduce_lr_on_plateau(fake_cuda):
    def plateau():
        return ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)

    h_eager = train(eager := mlp(sgd_momentum, graphs=False), "cuda", [plateau()], epochs=5)
    h_graph = train(graph := mlp(sgd_momentum), "cuda", [plateau()], epochs=5)
    lrs = h_graph.history["learning_rate"]
    assert lrs[0] > lrs[-1]  # the rate changed mid-run, the graphs followed it
    assert FakeCuda.captures == 2
    assert_same_training(eager, graph, h_eager, h_graph)


def test_train_on_batch_with_graphs_equals_eager(fake_cuda):
    x, y = data()
    eager, graph = mlp(graphs=False).to("cuda"), mlp().to("cuda")
    for lo in (0, 32, 64, 96, 0, 32):
        a = eager.train_on_batch(x[lo:lo + 32], y[lo:lo + 32])
        b = graph.train_on_batch(x[lo:lo + 32], y[lo:lo + 32])
        assert type(b) is float and a == b
    assert FakeCuda.captures == 1
    assert_same_training(eager, graph)


def test_switching_graphs_off_and_on_and_to_the_cpu_mid_training_continues_exactly(fake_cuda):
    x, y = data()
    ref = mlp(graphs=False).to("cuda")
    model = mlp().to("cuda")
    kw = dict(batch_size=32, verbose=0, seed=3)
    plan = [("graphs", True), ("graphs", False), ("cpu", None), ("cuda", None), ("graphs", True)]
    for epoch, (what, value) in enumerate(plan):
        if what == "graphs":
            model.cuda_graphs = value
        else:
            model.to(what)
        h_ref = ref.fit(x, y, epochs=2 * epoch + 2, initial_epoch=2 * epoch, **kw)
        h = model.fit(x, y, epochs=2 * epoch + 2, initial_epoch=2 * epoch, **kw)
        assert h.history == h_ref.history, (epoch, what, value)
        assert_same_training(ref, model)
    assert FakeCuda.captures == 4  # twice two batch sizes: graphs are dropped when turned off or moved


def test_rrelu_and_alpha_dropout_in_graphs_match_eager(fake_cuda):
    extra = lambda: [L.RReLU(name="rrelu"), L.AlphaDropout(0.1, name="adrop")]  # noqa: E731
    h_eager = train(eager := mlp(graphs=False, extra=extra), "cuda", epochs=3)
    h_graph = train(graph := mlp(extra=extra), "cuda", epochs=3)
    assert FakeCuda.captures == 2
    assert_same_training(eager, graph, h_eager, h_graph)


@pytest.mark.parametrize("trainable", [True, False], ids=["learned-beta", "frozen-beta"])
def test_swish_trains_as_a_graph_exactly_as_eager_and_on_the_cpu(fake_cuda, trainable):
    """Swish's kernels read beta from the device and write its gradient there:
    the step is captured, and each replay reads the beta the previous step's
    update left (a beta baked into the graph would diverge from eager here)."""
    extra = lambda: [L.Swish(beta=1.5, trainable=trainable, name="swish")]  # noqa: E731
    h_cpu = train(cpu := mlp(extra=extra), "cpu", epochs=3)
    h_eager = train(eager := mlp(graphs=False, extra=extra), "cuda", epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the eager step
        h_graph = train(graph := mlp(extra=extra), "cuda", epochs=3)
    assert FakeCuda.captures == 2 and FakeCuda.replays > 10
    assert_same_training(eager, graph, h_eager, h_graph)
    assert_same_training(cpu, graph, h_cpu, h_graph)
    beta = graph.get_layer("swish").beta.numpy()
    assert (beta != np.float32(1.5)) == trainable
    assert graph.get_layer("swish").get_config()["beta"] == float(beta)


def test_a_changed_trainable_set_recaptures(fake_cuda):
    x, y = data()
    eager, graph = mlp(graphs=False).to("cuda"), mlp().to("cuda")
    for m in (eager, graph):
        m.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=3)
        m.get_layer("d1").trainable = False
        m.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=4)
    assert FakeCuda.captures == 4
    assert_same_training(eager, graph)


# --------------------------------------------------------------------------
# fallbacks
# --------------------------------------------------------------------------
def test_terminate_on_nan_runs_the_eager_step_with_one_warning(fake_cuda):
    h_eager = train(eager := mlp(graphs=False), "cuda", [TerminateOnNaN()], epochs=2)
    with pytest.warns(RuntimeWarning, match="TerminateOnNaN") as record:
        h_graph = train(graph := mlp(), "cuda", [TerminateOnNaN()], epochs=2)
    assert len([w for w in record if "TerminateOnNaN" in str(w.message)]) == 1
    assert FakeCuda.captures == 0
    assert_same_training(eager, graph, h_eager, h_graph)


def test_a_loss_without_a_graph_variant_runs_eagerly_with_one_warning(fake_cuda):
    kw = dict(loss="mse", out_activation="linear", metrics=("mae",))
    x, y = data()
    yy = np.eye(4, dtype=np.float32)[y]
    eager, graph = mlp(graphs=False, **kw).to("cuda"), mlp(**kw).to("cuda")
    h_eager = eager.fit(x, yy, batch_size=32, epochs=2, verbose=0, seed=3)
    with pytest.warns(RuntimeWarning, match="mean_squared_error"):
        h_graph = graph.fit(x, yy, batch_size=32, epochs=2, verbose=0, seed=3)
    assert FakeCuda.captures == 0
    assert_same_training(eager, graph, h_eager, h_graph)


class TanhReadingTheHost(L.Activation):
    """tanh that also copies a device tensor to the host in each forward (as
    Swish did with its beta before its kernels read it on the device): a step
    with it cannot be captured."""

    def __init__(self, **kwargs):
        super().__init__("tanh", **kwargs)

    def forward(self, x, training=False):
        to_host(x[0])
        return super().forward(x, training)


def test_a_layer_that_needs_the_host_falls_back_once_per_batch_size(fake_cuda):
    extra = lambda: [TanhReadingTheHost(name="host")]  # noqa: E731
    h_eager = train(eager := mlp(graphs=False, extra=extra), "cuda", epochs=3)
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        h_graph = train(graph := mlp(extra=extra), "cuda", epochs=3)
    assert FakeCuda.captures == 0
    assert_same_training(eager, graph, h_eager, h_graph)


def test_graphs_on_the_cpu_are_ignored_silently(fake_cuda):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h_a = train(a := mlp(), "cpu", epochs=2)
    h_b = train(b := mlp(graphs=False), "cpu", epochs=2)
    assert FakeCuda.captures == 0
    assert_same_training(a, b, h_a, h_b)


def test_cuda_graphs_must_be_a_bool(fake_cuda):
    model = mlp()
    with pytest.raises(TypeError):
        model.cuda_graphs = "yes"


def test_a_callback_changing_the_rate_each_batch_is_followed(fake_cuda):
    class Halve(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch % 3 == 0:
                self.model.optimizer.learning_rate = self.model.optimizer.learning_rate * 0.5

    h_eager = train(eager := mlp(sgd_momentum, graphs=False), "cuda", [Halve()], epochs=2)
    h_graph = train(graph := mlp(sgd_momentum), "cuda", [Halve()], epochs=2)
    assert FakeCuda.captures == 2
    assert_same_training(eager, graph, h_eager, h_graph)


# --------------------------------------------------------------------------
# real GPU: the same comparisons with a tolerance
# --------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [adam_schedule, sgd_momentum])
def test_gpu_graph_training_agrees_with_eager(gpu, optimizer):
    """Graph and eager training on the GPU run the same kernels in the same
    order: they agree to a tolerance (bit for bit in practice) over epochs."""
    callbacks = (lambda: [ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)]) \
        if optimizer is sgd_momentum else (lambda: [])
    h_eager = train(eager := mlp(optimizer, graphs=False), "cuda", callbacks(), epochs=3)
    h_graph = train(graph := mlp(optimizer), "cuda", callbacks(), epochs=3)
    assert graph._graphs is not None and len(graph._graphs.steps) == 2
    for k in h_eager.history:
        np.testing.assert_allclose(h_graph.history[k], h_eager.history[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for v, we, wg in zip(eager.weights, eager.get_weights(), graph.get_weights()):
        np.testing.assert_allclose(wg, we, rtol=1e-4, atol=1e-5, err_msg=v.path)
    assert graph.optimizer.iterations == eager.optimizer.iterations


def test_gpu_graph_steps_agree_with_cpu_steps(gpu):
    """From identical weights and state, replayed steps agree with the CPU's to 1e-5."""
    x, y = data()
    cpu, dev = mlp(graphs=False), mlp().to("cuda")
    assert_steps_agree(cpu, dev, x, y, [0, 32, 64, 96, 128, 160])
    assert len(dev._graphs.steps) == 1


@pytest.mark.parametrize("bs", [32, 4096])
def test_bench_gpu_mlp_rows_time_the_eager_and_the_graph_step(fake_cuda, bs):
    from deepcore.bench_worker import gpu_mlp_deepcore

    t_eager, t_graph = gpu_mlp_deepcore(fake_cuda, bs, 0.005)
    assert t_eager > 0 and t_graph is not None and t_graph > 0  # None: the step did not capture
    assert FakeCuda.captures == 1 and FakeCuda.replays > 4


def test_released_layer_buffers_or_replaced_weights_mean_a_new_capture(fake_cuda):
    x, y = data()
    eager, graph = mlp(graphs=False).to("cuda"), mlp().to("cuda")
    for m in (eager, graph):
        for _ in range(3):
            m.train_on_batch(x[:32], y[:32])
        m.get_layer("d2")._bufs.release([32])  # e.g. MC dropout's one-off batch sizes
        for _ in range(3):
            m.train_on_batch(x[32:64], y[32:64])
    assert FakeCuda.captures == 2
    assert_same_training(eager, graph)


@pytest.mark.parametrize("optimizer", [
    lambda: dc.optimizers.Nadam(2e-3),
    lambda: dc.optimizers.RMSprop(1e-3, momentum=0.5, centered=True),
    lambda: dc.optimizers.AdamW(1e-3, amsgrad=True, clipnorm=0.5),
    lambda: dc.optimizers.Adagrad(1e-2, global_clipnorm=1.0),
    lambda: dc.optimizers.Ftrl(1e-2, l1_regularization_strength=1e-3),
    lambda: dc.optimizers.SGD(0.05, momentum=0.9, nesterov=True, clipvalue=0.1),
], ids=["nadam", "rmsprop-centered", "adamw-amsgrad-clipnorm", "adagrad-global-clipnorm", "ftrl", "sgd-nesterov"])
def test_every_optimizer_with_penalties_and_max_norm_trains_identically_as_a_graph(fake_cuda, optimizer):
    extra = lambda: [L.Dense(24, activation="elu", kernel_regularizer=dc.regularizers.l2(1e-3),  # noqa: E731
                             kernel_constraint=dc.constraints.MaxNorm(1.0), name="reg")]
    h_eager = train(eager := mlp(optimizer, graphs=False, extra=extra), "cuda", epochs=3)
    reads = FakeCuda.calls.get("LossScalars.read", 0)
    h_graph = train(graph := mlp(optimizer, extra=extra), "cuda", epochs=3)
    assert FakeCuda.captures == 2
    # one host read per replayed step: the penalty comes back with the loss
    assert FakeCuda.calls.get("LossScalars.read", 0) - reads == FakeCuda.replays > 0
    assert FakeCuda.calls.get("SegmentTable.read_result", 0) == 0
    assert_same_training(eager, graph, h_eager, h_graph)


def test_gradient_diagnostics_run_the_eager_step(fake_cuda):
    from deepcore.diagnostics import GradientDiagnostics

    with pytest.warns(RuntimeWarning, match="GradientDiagnostics"):
        train(mlp(), "cuda", [GradientDiagnostics()], epochs=1)
    assert FakeCuda.captures == 0


def test_changed_baked_in_settings_mean_a_new_capture(fake_cuda):
    """Clipping by norm turned on (another optimizer_step_graph structure) and
    a new dropout rate (a number baked into the graph) both recapture."""
    x, y = data()
    eager, graph = mlp(sgd_momentum, graphs=False).to("cuda"), mlp(sgd_momentum).to("cuda")
    for m in (eager, graph):
        m.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=3)
        m.optimizer.clipnorm = 0.5
        m.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=4)
        m.get_layer("drop").rate = 0.4
        m.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=5)
    assert FakeCuda.captures == 6
    assert_same_training(eager, graph)


def test_gpu_switching_graphs_mid_training_and_fallbacks(gpu):
    x, y = data()
    ref, model = mlp(graphs=False).to("cuda"), mlp().to("cuda")
    kw = dict(batch_size=32, verbose=0, seed=3)
    for epoch, graphs in enumerate([True, False, True]):
        model.cuda_graphs = graphs
        h_ref = ref.fit(x, y, epochs=2 * epoch + 2, initial_epoch=2 * epoch, **kw)
        h = model.fit(x, y, epochs=2 * epoch + 2, initial_epoch=2 * epoch, **kw)
        np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-4)
    for v, wr, wm in zip(ref.weights, ref.get_weights(), model.get_weights()):
        np.testing.assert_allclose(wm, wr, rtol=1e-4, atol=1e-5, err_msg=v.path)
    assert [layer._calls for layer in model.layers if hasattr(layer, "_calls")] == \
        [layer._calls for layer in ref.layers if hasattr(layer, "_calls")]
    with pytest.warns(RuntimeWarning, match="TerminateOnNaN"):
        model.fit(x, y, epochs=1, callbacks=[TerminateOnNaN()], **kw)
    mse = mlp(loss="mse", out_activation="linear", metrics=()).to("cuda")
    with pytest.warns(RuntimeWarning, match="mean_squared_error"):
        mse.fit(x, np.eye(4, dtype=np.float32)[y], epochs=1, **kw)


def test_fold_batchnorm_keeps_the_cuda_graphs_setting(fake_cuda):
    model = mlp().to("cuda")
    model.fit(*data(), batch_size=32, epochs=1, verbose=0)
    assert model.fold_batchnorm().cuda_graphs is True
    model.cuda_graphs = False
    assert model.fold_batchnorm().cuda_graphs is False


def test_the_fake_graph_api_has_the_real_modules_names_and_arguments(fake_cuda):
    import inspect

    from test_cuda_graph import CLASS_MEMBERS, GRAPH_FUNCTIONS

    for name, args in GRAPH_FUNCTIONS.items():
        assert list(inspect.signature(getattr(fake_cuda, name)).parameters) == args, name
    for cls, members in CLASS_MEMBERS.items():
        for member in members:
            assert hasattr(getattr(fake_cuda, cls), member), f"{cls}.{member}"
    assert list(inspect.signature(fake_cuda.SegmentTable).parameters) == ["size", "offsets", "l1", "l2"]
    assert list(inspect.signature(fake_cuda.DeviceHyper).parameters) == ["hyper"]
    assert issubclass(fake_cuda.CaptureError, fake_cuda.CudaError)


def test_bench_gpu_adam_row_times_a_copy_and_a_step(fake_cuda):
    from deepcore.bench_worker import gpu_adam_deepcore

    t_copy, t_adam = gpu_adam_deepcore(fake_cuda, 4096, 0.005)
    assert t_copy > 0 and t_adam > 0
