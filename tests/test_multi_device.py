"""Several CUDA devices: "cuda:N", deepcore.cuda.current_device / set_device /
device(n), and a model on a device that is not the current one.

The kernels require their tensors on the current device (a ValueError names
both devices otherwise); a model on "cuda:N" makes N current for each of its
calls and gives the caller's device back after.

The first part runs everywhere, against the CPU-backed double of
deepcore._cuda (fake_cuda.py) with two devices: its kernels refuse tensors of
a device that is not current, as the real module's do, so a model on "cuda:1"
that trains at all made its device current for every kernel; it must train as
the CPU does, bit for bit. The second part runs the real module where it
finds two devices or more, and skips elsewhere with the reason. The CUDA host
emulator emulates two (run_tests.sh sets DEEPCORE_EMU_DEVICES=2), and there a
kernel or GEMM given memory of another device than its own aborts the run.
"""
import threading

import numpy as np
import pytest

import deepcore as dc
from deepcore import backend, cuda
from deepcore.callbacks import ModelCheckpoint
from device_data import STEP_ATOL, STEP_RTOL, assert_steps_agree, blobs
from fake_cuda import FakeCuda

L = dc.layers


def mlp(seed=7, graphs=False):
    dc.set_random_seed(seed)
    model = dc.Sequential([L.Dense(32, activation="relu", kernel_initializer="he_normal", input_shape=[20], name="d1"),
                           L.BatchNormalization(name="bn"), L.Dropout(0.2, name="drop"),
                           L.Dense(16, activation="relu", name="d2"), L.Dense(4, activation="softmax", name="out")],
                          name="mlp")
    model.compile(optimizer=dc.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  cuda_graphs=graphs)
    return model


def devices_of(model):
    """The devices of every weight, gradient, flat buffer and optimizer slot."""
    tensors = [t for v in model.weights for t in (v.value, v.grad)]
    tensors += [model._flat_params, model._flat_grads, *model.optimizer._slots.values()]
    return {backend.device_of(t) for t in tensors if t is not None}


@pytest.fixture
def two_fake(fake_cuda):
    FakeCuda.devices = 2
    return fake_cuda


# --------------------------------------------------------------------------
# the device API, against the fake
# --------------------------------------------------------------------------
def test_device_context_sets_and_restores_the_current_device(two_fake):
    assert cuda.current_device() == 0
    with cuda.device(1):
        assert cuda.current_device() == 1
        with cuda.device("cuda:0"):
            assert cuda.current_device() == 0
        assert cuda.current_device() == 1
        with cuda.device(None), cuda.device("cpu"):  # nothing to do
            assert cuda.current_device() == 1
    assert cuda.current_device() == 0
    with pytest.raises(KeyError):
        with cuda.device("cuda:1"):
            raise KeyError("inside")
    assert cuda.current_device() == 0  # restored on the way out of an exception too
    with cuda.device(0):
        cuda.set_device(1)  # the block changes the device itself: the context still gives the caller's back
    assert cuda.current_device() == 0
    cuda.set_device("cuda:1")
    assert cuda.current_device() == 1
    cuda.set_device(0)
    assert cuda.current_device() == 0


@pytest.mark.parametrize("bad, error, words", [
    (2, ValueError, "device 2 does not exist: 2 CUDA device"),
    ("cuda:2", ValueError, "'cuda:2' does not exist: 2 CUDA device"),
    ("cpu", ValueError, "expected a CUDA device"),
    ("gpu1", ValueError, "'cpu', 'cuda' .* 'cuda:N'"),
    (1.0, TypeError, "an index or 'cuda:N', got float"),
    (True, TypeError, "got bool"),
])
def test_set_device_refuses_what_is_not_a_device(two_fake, bad, error, words):
    with pytest.raises(error, match=words):
        cuda.set_device(bad)
    assert cuda.current_device() == 0


def test_a_device_this_build_cannot_run_on_is_refused_with_the_reason(two_fake, monkeypatch):
    why = "device 1 is sm_75, but deepcore._cuda was built for 80;90 (rebuild with -DDEEPCORE_CUDA_ARCHS=...)"
    monkeypatch.setattr(two_fake, "unavailable_reason", lambda device=-1: why if device == 1 else "")
    model = mlp()
    with pytest.raises(RuntimeError, match=r"'cuda:1' cannot run deepcore's kernels: device 1 is sm_75"):
        model.to("cuda:1")
    assert model.device == "cpu" and model.to("cuda:0").device == "cuda:0"


def test_empty_and_to_device_put_tensors_on_the_named_device(two_fake):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = backend.empty((2, 3), device="cuda:1")
    assert a.device == 1 and backend.empty((4,), like=a).device == 1
    b = backend.to_device(x, "cuda:1")
    assert b.device == 1 and backend.to_device(b, "cuda:1") is b
    c = backend.to_device(b, "cuda:0")  # between devices
    assert c.device == 0 and np.array_equal(c.to_numpy(), x) and np.array_equal(b.to_numpy(), x)
    assert backend.device_of(b) == "cuda:1" and cuda.current_device() == 0
    with pytest.raises(ValueError, match="does not exist"):
        two_fake.DeviceBuffer((2,), "float32", 2)


def assert_kernels_need_the_current_device(n):
    """A ReLU on cuda:1 tensors: refused while cuda:0 is current, computed with cuda:1 current."""
    x = backend.to_device(np.linspace(-1, 1, n, dtype=np.float32), "cuda:1")
    y = backend.empty((n,), like=x)
    with pytest.raises(ValueError, match="is on cuda:1 but the current device is cuda:0"):
        backend.ops(x).activation_forward(3, x, y, 0.0, 1.0)
    with cuda.device(1):
        backend.ops(x).activation_forward(3, x, y, 0.0, 1.0)
    np.testing.assert_array_equal(y.to_numpy(), np.maximum(x.to_numpy(), 0))


def test_kernels_refuse_tensors_of_a_device_that_is_not_current(two_fake):
    assert_kernels_need_the_current_device(8)


def test_info_lists_the_devices_and_the_current_one(two_fake, capsys):
    from deepcore.cli import main

    with cuda.device(1):
        assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cuda:0: fake device 0, sm_90, 16 GiB\n" in out and "cuda:1: fake device 1, sm_90, 16 GiB (current)\n" in out


def test_without_cuda_the_device_api_says_why():
    if cuda.is_available():
        pytest.skip("a CUDA device is available")
    for call in (cuda.current_device, lambda: cuda.set_device(0), lambda: cuda.device(0).__enter__()):
        with pytest.raises(RuntimeError, match="CUDA is not available") as e:
            call()
        assert cuda.reason() in str(e.value)
    with cuda.device("cpu"), cuda.device(None):  # nothing to make current
        pass


# --------------------------------------------------------------------------
# a model on cuda:1, against the fake: bit for bit the CPU's
# --------------------------------------------------------------------------
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda_graphs"])
def test_a_model_on_cuda1_trains_like_the_cpu_and_leaves_the_current_device(two_fake, graphs):
    x, y = blobs()
    cpu, dev = mlp(graphs=graphs), mlp(graphs=graphs).to("cuda:1")
    assert dev.device == "cuda:1"
    kwargs = dict(epochs=2, batch_size=32, validation_split=0.2, verbose=0, seed=3)
    h_cpu, h_dev = cpu.fit(x, y, **kwargs), dev.fit(x, y, **kwargs)
    assert cuda.current_device() == 0
    assert h_cpu.history == h_dev.history
    for v, a, b in zip(cpu.weights, cpu.get_weights(), dev.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=v.path)
    sa, sb = cpu.optimizer.get_state(), dev.optimizer.get_state()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert devices_of(dev) == {"cuda:1"}
    if graphs:  # the steps ran as graphs, captured with cuda:1 current
        assert dev._graphs.steps and not dev._graphs.failed and FakeCuda.replays > 0
    assert cpu.train_on_batch(x[:32], y[:32]) == dev.train_on_batch(x[:32], y[:32])
    np.testing.assert_array_equal(cpu.predict(x), dev.predict(x))
    np.testing.assert_array_equal(cpu(x[:5]), dev(x[:5]))
    assert cpu.evaluate(x, y, verbose=0) == dev.evaluate(x, y, verbose=0)
    assert cuda.current_device() == 0


def test_a_model_on_cuda1_called_while_cuda1_is_current_keeps_it(two_fake):
    x, y = blobs()
    dev = mlp().to("cuda:1")
    with cuda.device(1):
        dev.fit(x, y, epochs=1, verbose=0)
        assert cuda.current_device() == 1
    cuda.set_device(1)
    other = mlp().to("cuda:0")  # and a model on cuda:0 while cuda:1 is current
    other.fit(x, y, epochs=1, verbose=0)
    assert cuda.current_device() == 1 and devices_of(other) == {"cuda:0"}


def test_to_cuda_means_the_callers_current_device(two_fake):
    model = mlp().to("cuda:1")
    assert model.to("cuda").device == "cuda:0"  # the caller's current device, not the model's
    with cuda.device(1):
        assert mlp().to("cuda").device == "cuda:1"
        assert model.to("cuda").device == "cuda:1"
    assert cuda.current_device() == 0


def test_weights_assign_across_devices(two_fake):
    x, y = blobs()
    a, b = mlp(seed=1).to("cuda:0"), mlp(seed=2).to("cuda:1")
    a.fit(x, y, epochs=1, verbose=0, seed=1)
    b.set_weights([v.value for v in a.weights])  # device tensors of cuda:0 into a model on cuda:1
    for v, wa, wb in zip(a.weights, a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb, err_msg=v.path)
    assert devices_of(b) == {"cuda:1"}
    backend.assign(b.weights[0].value, backend.to_device(np.ones(b.weights[0].shape, np.float32), "cuda:0"))
    assert np.all(b.get_weights()[0] == 1)


def test_moving_between_devices_mid_training_continues_exactly(two_fake):
    x, y = blobs()
    cpu, dev = mlp(), mlp().to("cuda:0")
    for seed in (1, 2, 3):
        cpu.fit(x, y, epochs=1, verbose=0, seed=seed)
    dev.fit(x, y, epochs=1, verbose=0, seed=1)
    dev.to("cuda:1")
    assert devices_of(dev) == {"cuda:1"}
    dev.fit(x, y, epochs=1, verbose=0, seed=2)
    dev.to("cpu").fit(x, y, epochs=1, verbose=0, seed=3)
    for a, b in zip(cpu.get_weights(), dev.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert cuda.current_device() == 0


def test_the_model_helpers_run_on_cuda1(two_fake, tmp_path):
    """save/load, checkpoints, lr_find, predict_mc, fold_batchnorm and a
    layer's own call, each on a model or layer on cuda:1: as on the CPU."""
    x, y = blobs()
    cpu, dev = mlp(), mlp().to("cuda:1")
    for m, name in ((cpu, "cpu"), (dev, "dev")):
        m.fit(x, y, epochs=1, verbose=0, seed=1,
              callbacks=[ModelCheckpoint(str(tmp_path / f"{name}.weights.safetensors"), save_weights_only=True)])
    back = mlp().to("cuda:1")
    back.load_weights(str(tmp_path / "dev.weights.safetensors"))
    for a, b in zip(cpu.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    r_cpu, r_dev = dc.lr_find(cpu, x, y, steps=20, seed=4), dc.lr_find(dev, x, y, steps=20, seed=4)
    np.testing.assert_array_equal(r_cpu.losses, r_dev.losses)
    assert r_cpu.suggestion == r_dev.suggestion
    m_cpu, s_cpu = cpu.predict_mc(x[:40], samples=4)
    m_dev, s_dev = dev.predict_mc(x[:40], samples=4)
    np.testing.assert_array_equal(m_cpu, m_dev)
    np.testing.assert_array_equal(s_cpu, s_dev)
    cpu.fold_batchnorm(), dev.fold_batchnorm()
    np.testing.assert_array_equal(cpu.predict(x), dev.predict(x))
    layer = dev.get_layer("d1")
    np.testing.assert_array_equal(cpu.get_layer("d1")(x[:3]), layer(x[:3]))
    assert cuda.current_device() == 0


# --------------------------------------------------------------------------
# the real module with two devices or more (the host emulator has two)
# --------------------------------------------------------------------------
@pytest.fixture
def gpu2(gpu):
    n = gpu.device_count()
    if n < 2:
        pytest.skip(f"needs two CUDA devices; this machine has {n}")
    return gpu


def test_gpu_device_api_and_tensors_on_cuda1(gpu2):
    from deepcore import _cuda as G

    assert G.current_device() == 0
    b = G.DeviceBuffer((3, 2), "float32", 1)
    assert b.device == 1 and G.current_device() == 0 and b.__dlpack_device__() == (2, 1)
    np.testing.assert_array_equal(b.to_numpy(), np.zeros((3, 2), np.float32))
    b[...] = np.arange(6, dtype=np.float32).reshape(3, 2)  # a copy into cuda:1 memory while cuda:0 is current
    c = backend.to_device(b, "cuda:0")
    assert c.device == 0 and np.array_equal(c.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match="the value is on cuda:1, the target on cuda:0"):
        c[...] = b
    with pytest.raises(ValueError, match="does not exist"):
        G.DeviceBuffer((2,), "float32", gpu2.device_count())
    with pytest.raises(TypeError, match="device must be an int"):
        G.to_device(np.zeros(2, np.float32), device="1")

    class Interface:  # another library's tensor in cuda:1 memory, through __cuda_array_interface__
        __cuda_array_interface__ = b.__cuda_array_interface__

    class DLPack:  # ... and through DLPack
        def __dlpack__(self, **kwargs):
            return b.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return b.__dlpack_device__()

    for foreign in (Interface(), DLPack()):  # imported on the tensor's own device, with cuda:0 current
        imported = G.from_dlpack(foreign)
        assert imported.device == 1 and imported.data_ptr == b.data_ptr and G.current_device() == 0
        np.testing.assert_array_equal(imported.to_numpy(), b.to_numpy())
    with cuda.device(1):
        fresh = G.DeviceBuffer((2,))
    assert fresh.device == 1 and G.current_device() == 0


def test_gpu_kernels_refuse_tensors_of_another_device(gpu2):
    assert_kernels_need_the_current_device(64)


def test_gpu_the_current_device_belongs_to_each_thread(gpu2):
    seen = []

    def other():
        cuda.set_device(1)
        seen.append(cuda.current_device())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [1] and cuda.current_device() == 0


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a step that cannot be captured warns, then runs eagerly
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda_graphs"])
def test_gpu_a_model_on_cuda1_agrees_with_the_cpu(gpu2, graphs):
    x, y = blobs()
    cpu, dev = mlp(graphs=graphs), mlp(graphs=graphs).to("cuda:1")
    assert_steps_agree(cpu, dev, x, y, range(0, 224, 32))
    h = dev.fit(x, y, epochs=2, verbose=0, validation_split=0.2)
    assert all(np.isfinite(h.history["loss"])) and devices_of(dev) == {"cuda:1"}
    if graphs:  # batch sizes 32 and 8, each captured on cuda:1 and replayed
        assert sorted(dev._graphs.steps) == [8, 32] and not dev._graphs.failed
    cpu.set_weights(dev.get_weights())
    np.testing.assert_allclose(dev.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-5)
    assert G_current() == 0


def test_gpu_moving_a_model_between_devices_keeps_its_state(gpu2):
    x, y = blobs()
    model, ref = mlp().to("cuda:0"), mlp().to("cuda:0")
    model.fit(x, y, epochs=1, verbose=0, seed=1)
    ref.fit(x, y, epochs=1, verbose=0, seed=1)
    weights, state = model.get_weights(), model.optimizer.get_state()
    model.to("cuda:1")
    assert devices_of(model) == {"cuda:1"}
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    moved = model.optimizer.get_state()
    for k in state:
        np.testing.assert_array_equal(state[k], moved[k], err_msg=k)
    loss = model.train_on_batch(x[:32], y[:32])
    assert np.isfinite(loss)
    assert ref.train_on_batch(x[:32], y[:32]) == pytest.approx(loss, rel=STEP_RTOL, abs=STEP_ATOL)
    assert G_current() == 0


def G_current():
    from deepcore import _cuda as G

    return G.current_device()
