"""deepcore.callbacks.TensorBoard: event files that TensorBoard itself reads back."""
import numpy as np
import pytest

pytest.importorskip("tensorboardX", reason="the TensorBoard callback writes with tensorboardX (deepcore[tensorboard])")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the test reads the files with tensorboard's EventAccumulator")

import deepcore as dc  # noqa: E402
from deepcore.diagnostics import GradientDiagnostics  # noqa: E402


def _read(path):
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _fit(log_dir, epochs=3, **options):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    dc.set_random_seed(0)
    model = dc.Sequential([dc.layers.Input(shape=(4,)), dc.layers.Dense(8, activation="relu", name="hidden"),
                           dc.layers.Dense(2, activation="softmax", name="output")], name="net")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    tb = dc.callbacks.TensorBoard(log_dir, **options)
    # TensorBoard first: GradientDiagnostics adds its statistics to the logs after it
    history = model.fit(x, y, epochs=epochs, batch_size=20, validation_split=0.2, verbose=0,
                        callbacks=[tb, GradientDiagnostics(every=1)])
    return model, history


def test_epoch_scalars_of_every_history_key_in_train_and_validation_runs(tmp_path):
    _, history = _fit(tmp_path, epochs=3)
    train, validation = _read(tmp_path / "train"), _read(tmp_path / "validation")
    train_tags = set(train.Tags()["scalars"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_hidden/gradient_norm",
            "epoch_hidden/dead_fraction"} <= train_tags
    assert not any(tag.startswith("batch_") for tag in train_tags)  # update_freq="epoch"
    assert set(validation.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy"}
    loss = train.Scalars("epoch_loss")
    assert [e.step for e in loss] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in loss], history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in validation.Scalars("epoch_loss")], history.history["val_loss"],
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_hidden/gradient_norm")],
                               history.history["hidden/gradient_norm"], rtol=1e-6)


def test_batch_scalars_every_update_freq_batches_at_the_optimizer_step(tmp_path):
    model, _ = _fit(tmp_path, epochs=2, update_freq=3)  # 80 training samples / 20 = 4 batches per epoch
    steps = [e.step for e in _read(tmp_path / "train").Scalars("batch_loss")]
    assert steps == [3, 6]
    assert model.optimizer.iterations == 8


def test_histograms_of_weights_and_gradients_every_histogram_freq_epochs(tmp_path):
    model, _ = _fit(tmp_path, epochs=3, histogram_freq=2)
    train = _read(tmp_path / "train")
    tags = set(train.Tags()["histograms"])
    assert {"hidden/kernel", "hidden/bias", "output/kernel", "hidden/kernel/gradient", "output/bias/gradient"} <= tags
    kernel = train.Histograms("hidden/kernel")
    assert [h.step for h in kernel] == [0, 2]
    last = kernel[-1].histogram_value
    w = model.get_layer("hidden").weights[0].numpy()
    assert last.num == w.size
    assert last.min == pytest.approx(w.min(), rel=1e-6) and last.max == pytest.approx(w.max(), rel=1e-6)


def test_graph_of_layers_with_output_shapes(tmp_path):
    _fit(tmp_path, epochs=1)
    graph = _read(tmp_path / "train").Graph()
    nodes = {n.name: n for n in graph.node}
    assert [n.op for n in graph.node] == ["InputLayer", "Dense", "Dense"]
    assert list(nodes["output"].input) == ["hidden"]
    assert list(nodes["hidden"].input) == ["net_input"]
    dims = [d.size for d in nodes["hidden"].attr["_output_shapes"].list.shape[0].dim]
    assert dims == [-1, 8]


def test_no_graph_and_validated_arguments(tmp_path):
    _fit(tmp_path, epochs=1, write_graph=False)
    assert not _read(tmp_path / "train").Tags()["graph"]
    with pytest.raises(ValueError, match="update_freq"):
        dc.callbacks.TensorBoard(tmp_path, update_freq=0)
    with pytest.raises(ValueError, match="histogram_freq"):
        dc.callbacks.TensorBoard(tmp_path, histogram_freq=-1)
