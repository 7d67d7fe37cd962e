"""Callbacks: hook order and aliases, LearningRateScheduler, ReduceLROnPlateau,
EarlyStopping, ModelCheckpoint, TerminateOnNaN, CSVLogger, History's "lr".

The monitor-driven callbacks are fed scripted values (through a fake model, or
through a LambdaCallback that overwrites val_loss before them in a real fit),
so each expected outcome is worked out by hand from Keras's documented rules.
Models and data are tiny: the file runs in a few seconds.
"""
import csv
import errno
import math
import os
import tempfile
import warnings

import numpy as np
import pytest

import deepcore
import deepcore.saving
from deepcore import Dense, Input, Sequential, optimizers, schedules
from deepcore.callbacks import (Callback, CallbackList, CSVLogger, EarlyStopping, History, LambdaCallback,
                                LearningRateScheduler, ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN)


def regression_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0]]) + 0.5).astype(np.float32)
    return x, y


def tiny_model(lr=0.05, seed=3, metrics=None):
    deepcore.set_random_seed(seed)
    model = Sequential([Input(shape=(2,)), Dense(1, name="out")])
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse", metrics=metrics)
    return model


def fit(model, callbacks, epochs=3, validation=True, **kwargs):
    x, y = regression_data()
    val = regression_data(8, seed=1) if validation else None
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks, validation_data=val,
                     **kwargs)


def script(values, key="val_loss"):
    """A callback that overwrites logs[key] with values[epoch] (put it first)."""
    return LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__(key, values[epoch]))


class WeightsPerEpoch(Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.get_weights()


class FakeModel:
    """What the monitor callbacks touch: an optimizer, weights, stop_training."""

    def __init__(self, lr=1.0, metrics=()):
        self.optimizer = optimizers.SGD(learning_rate=lr)
        self.compiled_metrics = list(metrics)
        self.stop_training = False
        self.w = np.zeros(1)

    def get_weights(self):
        return [self.w.copy()]

    def set_weights(self, weights):
        self.w = weights[0].copy()


def drive(cb, values, key="val_loss", model=None):
    """Run cb through len(values) epochs whose logs hold values[epoch] and
    whose weights are [epoch]; return (model, lr in effect after each epoch)."""
    model = model or FakeModel()
    cb.set_model(model)
    cb.on_train_begin({})
    lrs = []
    for epoch, v in enumerate(values):
        model.w = np.array([float(epoch)])
        cb.on_epoch_begin(epoch, {})
        cb.on_epoch_end(epoch, {key: v})
        lrs.append(model.optimizer.learning_rate)
        if model.stop_training:
            break
    cb.on_train_end({})
    return model, lrs


# ------------------------------------------------------------- hooks, lists


class Recorder(Callback):
    """Records (hook, batch-or-epoch) for every hook but the Keras 2 aliases."""

    def __init__(self):
        super().__init__()
        self.calls = []


def _recording(name):
    def hook(self, *args):
        self.calls.append((name,) + tuple(a for a in args if not isinstance(a, dict)))
    return hook


for _name in [h for h in dir(Callback) if h.startswith("on_") and h not in ("on_batch_begin", "on_batch_end")]:
    setattr(Recorder, _name, _recording(_name))


def test_fit_calls_every_hook_in_keras_order():
    rec = Recorder()
    x, y = regression_data(16)
    tiny_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[rec],
                     validation_data=regression_data(12, seed=1))
    epoch = lambda e: [("on_epoch_begin", e),
                       ("on_train_batch_begin", 0), ("on_train_batch_end", 0),
                       ("on_train_batch_begin", 1), ("on_train_batch_end", 1),
                       ("on_test_begin",),
                       ("on_test_batch_begin", 0), ("on_test_batch_end", 0),
                       ("on_test_batch_begin", 1), ("on_test_batch_end", 1),
                       ("on_test_end",), ("on_epoch_end", e)]
    assert rec.calls == [("on_train_begin",)] + epoch(0) + epoch(1) + [("on_train_end",)]


def test_history_and_later_callbacks_see_what_earlier_callbacks_write_into_the_epoch_logs():
    """Keras 3's order: the user's callbacks in list order, then History, so
    a value one callback writes into the logs is seen by the next and recorded."""
    seen = []
    writer = LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__("twice_epoch", 2 * epoch))
    reader = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs.get("twice_epoch")))
    history = fit(tiny_model(), [writer, reader], epochs=3)
    assert seen == [0, 2, 4]
    assert history.history["twice_epoch"] == [0, 2, 4]


def test_keras2_batch_hook_names_are_called_once_per_batch():
    class Old(Callback):
        begins, ends = 0, 0

        def on_batch_begin(self, batch, logs=None):
            self.begins += 1

        def on_batch_end(self, batch, logs=None):
            self.ends += 1
            assert "loss" in logs

    old = Old()
    fit(tiny_model(), [old], epochs=2)
    assert (old.begins, old.ends) == (4, 4)


def test_evaluate_and_predict_call_test_and_predict_hooks():
    seen = []
    cb = LambdaCallback(on_test_begin=lambda logs: seen.append("test_begin"),
                        on_test_batch_end=lambda b, logs: seen.append(("test_batch", b, round(logs["loss"], 6))),
                        on_test_end=lambda logs: seen.append(("test_end", round(logs["loss"], 6))),
                        on_predict_begin=lambda logs: seen.append("predict_begin"),
                        on_predict_batch_end=lambda b, logs: seen.append(("predict_batch", b,
                                                                          logs["outputs"].shape)),
                        on_predict_end=lambda logs: seen.append("predict_end"))
    model = tiny_model()
    x, y = regression_data(10)
    loss = model.evaluate(x, y, batch_size=8, callbacks=[cb])
    assert seen[0] == "test_begin" and seen[-1] == ("test_end", round(loss, 6))
    assert [s[1] for s in seen[1:-1]] == [0, 1]
    seen.clear()
    out = model.predict(x, batch_size=4, callbacks=[cb])
    assert seen == ["predict_begin", ("predict_batch", 0, (4, 1)), ("predict_batch", 1, (4, 1)),
                    ("predict_batch", 2, (2, 1)), "predict_end"]
    assert out.shape == (10, 1)


def test_lambda_callback_accepts_every_hook_and_rejects_unknown_names():
    calls = []
    hooks = {name: (lambda *a, name=name: calls.append(name)) for name in
             ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
              "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")}
    fit(tiny_model(), [LambdaCallback(**hooks)], epochs=1)
    assert set(calls) == set(hooks)
    with pytest.raises(TypeError, match="on_epoch_ends"):
        LambdaCallback(on_epoch_ends=print)
    with pytest.raises(TypeError, match="callable"):
        LambdaCallback(on_epoch_end=3)


def test_bad_callbacks_argument_is_a_clear_type_error():
    model = tiny_model()
    with pytest.raises(TypeError, match="list"):
        fit(model, EarlyStopping())
    with pytest.raises(TypeError, match="LambdaCallback"):
        fit(model, [print])
    with pytest.raises(TypeError, match="list"):
        CallbackList(EarlyStopping(), model, {})


def test_callbacks_list_skips_batch_dispatch_when_no_callback_needs_it():
    model = tiny_model()
    assert not CallbackList([History(), EarlyStopping(), CSVLogger(os.devnull)], model, {}).wants_batch_hooks
    assert CallbackList([TerminateOnNaN()], model, {}).wants_batch_hooks
    assert CallbackList([LambdaCallback(on_batch_end=print)], model, {}).wants_batch_hooks
    assert not CallbackList([ModelCheckpoint("x.w", save_weights_only=True)], model, {}).wants_batch_hooks
    assert CallbackList([ModelCheckpoint("x.w", save_weights_only=True, save_freq=3)], model, {}).wants_batch_hooks


# ------------------------------------------------- History, LR scheduling


def test_history_records_learning_rate_as_lr_and_learning_rate():
    sched = LearningRateScheduler(lambda epoch: 0.1 * 0.5 ** epoch)
    history = fit(tiny_model(), [sched], epochs=3)
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert history.history["learning_rate"] == history.history["lr"]
    assert history.epoch == [0, 1, 2]


def test_history_lr_follows_a_per_step_schedule():
    model = tiny_model()
    model.optimizer.learning_rate = schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    history = fit(model, [], epochs=3)  # 2 steps per epoch: rate at the end of epoch e is 0.1 * 0.5**(e+1)
    assert history.history["lr"] == pytest.approx([0.05, 0.025, 0.0125])


def test_scheduler_passes_current_rate_to_two_argument_functions():
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return lr * 0.1

    history = fit(tiny_model(lr=1.0), [LearningRateScheduler(schedule)], epochs=3)
    assert seen == [(0, pytest.approx(1.0)), (1, pytest.approx(0.1)), (2, pytest.approx(0.01))]
    assert history.history["lr"] == pytest.approx([0.1, 0.01, 0.001])


def test_initial_epoch_resumes_epoch_schedules_with_true_epoch_index():
    seen = []
    sched = LearningRateScheduler(lambda epoch: seen.append(epoch) or 0.1 / (epoch + 1))
    history = fit(tiny_model(), [sched], epochs=5, initial_epoch=3)
    assert seen == [3, 4]
    assert history.epoch == [3, 4]
    assert history.history["lr"] == pytest.approx([0.1 / 4, 0.1 / 5])


def test_scheduler_accepts_a_schedule_object_evaluated_per_epoch():
    sched = LearningRateScheduler(schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5))
    assert fit(tiny_model(), [sched], epochs=3).history["lr"] == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, "0.1", None])
def test_scheduler_returning_a_bad_rate_is_a_value_error(bad):
    model = tiny_model()
    before = model.get_weights()
    with pytest.raises(ValueError, match="epoch 0"):
        fit(model, [LearningRateScheduler(lambda epoch: bad)])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("cb", [LearningRateScheduler(lambda e: 0.1), ReduceLROnPlateau()],
                         ids=["LearningRateScheduler", "ReduceLROnPlateau"])
def test_rate_setting_callbacks_refuse_to_replace_a_per_step_schedule(cb):
    model = tiny_model()
    model.optimizer.learning_rate = schedules.PowerDecay(0.1, 10)
    with pytest.raises(ValueError, match="schedule"):
        fit(model, [cb])


# -------------------------------------------------------- ReduceLROnPlateau


def test_reduce_lr_after_patience_epochs_without_improvement():
    cb = ReduceLROnPlateau(factor=0.5, patience=2)
    _, lrs = drive(cb, [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8])
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25])


def test_reduce_lr_cooldown_pauses_counting_after_a_reduction():
    _, lrs = drive(ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2), [1.0] * 6)
    assert lrs == pytest.approx([1, 0.5, 0.5, 0.25, 0.25, 0.125])
    _, lrs = drive(ReduceLROnPlateau(factor=0.5, patience=1, cooldown=0), [1.0] * 4)
    assert lrs == pytest.approx([1, 0.5, 0.25, 0.125])


def test_reduce_lr_change_below_min_delta_is_no_improvement():
    _, lrs = drive(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.1), [1.0, 0.95])
    assert lrs == pytest.approx([1, 0.5])
    _, lrs = drive(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.01), [1.0, 0.95])
    assert lrs == pytest.approx([1, 1])


def test_reduce_lr_never_goes_below_min_lr():
    _, lrs = drive(ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.05), [1.0] * 5)
    assert lrs == pytest.approx([1, 0.1, 0.05, 0.05, 0.05])


def test_reduce_lr_auto_mode_maximizes_accuracy():
    _, lrs = drive(ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1),
                   [0.5, 0.6, 0.7], key="val_accuracy")
    assert lrs == pytest.approx([1, 1, 1])
    _, lrs = drive(ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1),
                   [0.7, 0.6, 0.5], key="val_accuracy")
    assert lrs == pytest.approx([1, 0.5, 0.25])


def test_reduce_lr_in_fit_logs_the_rate_each_epoch_ran_with():
    # lr so small that the loss moves by far less than min_delta: a plateau
    history = fit(tiny_model(lr=1e-12), [ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0)], epochs=4)
    assert history.history["lr"] == pytest.approx([1e-12, 1e-12, 5e-13, 2.5e-13])


@pytest.mark.parametrize("kwargs, arg", [({"factor": 1.0}, "factor"), ({"factor": 0.0}, "factor"),
                                         ({"factor": float("nan")}, "factor"), ({"patience": -1}, "patience"),
                                         ({"min_lr": -1e-3}, "min_lr"), ({"mode": "best"}, "mode"),
                                         ({"cooldown": 1.5}, "cooldown")])
def test_reduce_lr_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ReduceLROnPlateau(**kwargs)


@pytest.mark.parametrize("make", [lambda: ReduceLROnPlateau(monitor="val_wobble"),
                                  lambda: EarlyStopping(monitor="val_wobble"),
                                  lambda: ModelCheckpoint("w.w", monitor="val_wobble", save_best_only=True,
                                                          save_weights_only=True)],
                         ids=["ReduceLROnPlateau", "EarlyStopping", "ModelCheckpoint"])
def test_monitor_whose_direction_is_unknown_asks_for_mode_before_training(make):
    model = tiny_model()
    with pytest.raises(ValueError, match="mode="):
        fit(model, [make()])
    assert model.optimizer.iterations == 0


def test_monitor_direction_from_mode_or_compiled_metric():
    _, lrs = drive(ReduceLROnPlateau(monitor="val_wobble", mode="max", patience=0, factor=0.5), [1.0, 0.5],
                   key="val_wobble")
    assert lrs == pytest.approx([1, 0.5])
    # an accuracy metric compiled under a custom name is maximized
    custom = FakeModel(metrics=[deepcore.metrics.BinaryAccuracy(name="hits")])
    _, lrs = drive(ReduceLROnPlateau(monitor="val_hits", patience=0, factor=0.5), [0.5, 0.6, 0.55],
                   key="val_hits", model=custom)
    assert lrs == pytest.approx([1, 1, 0.5])


# ------------------------------------------------------------ EarlyStopping


def test_early_stopping_stops_after_patience_epochs_like_the_keras_example():
    # Keras's docstring: monitor='loss', patience=3, a loss that never improves -> 4 epochs run
    history = fit(tiny_model(lr=0.0), [EarlyStopping(monitor="loss", patience=3)], epochs=10)
    assert len(history.history["loss"]) == 4


def test_early_stopping_patience_counts_epochs_since_the_best():
    model, _ = drive(EarlyStopping(patience=2), [1.0, 0.8, 0.9, 0.7, 0.75, 0.72, 0.71])
    assert model.w[0] == 5 and model.stop_training  # stopped at epoch 5 (best 0.7 at epoch 3)


def test_early_stopping_min_delta():
    model, _ = drive(EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.5])
    assert model.stop_training and model.w[0] == 1


def test_early_stopping_mode_max():
    model, _ = drive(EarlyStopping(monitor="val_accuracy", patience=0), [0.5, 0.6, 0.55], key="val_accuracy")
    assert model.stop_training and model.w[0] == 2
    model, _ = drive(EarlyStopping(monitor="val_accuracy", patience=0, mode="min"), [0.5, 0.6],
                     key="val_accuracy")
    assert model.stop_training and model.w[0] == 1


def test_early_stopping_baseline_must_be_beaten_to_reset_patience():
    values = [0.9, 0.8, 0.7, 0.75]
    model, _ = drive(EarlyStopping(patience=2, baseline=0.5), values)
    assert model.stop_training and model.w[0] == 3
    model, _ = drive(EarlyStopping(patience=2), values)
    assert not model.stop_training


def test_early_stopping_ignores_epochs_before_start_from_epoch():
    model, _ = drive(EarlyStopping(patience=0, start_from_epoch=3), [1.0, 2.0, 3.0, 4.0, 0.5, 0.4])
    assert not model.stop_training
    model, _ = drive(EarlyStopping(patience=0), [1.0, 2.0, 3.0, 4.0, 0.5, 0.4])
    assert model.stop_training and model.w[0] == 1


def test_restore_best_weights_after_early_stop_gives_the_best_epochs_weights():
    snap = WeightsPerEpoch()
    model = tiny_model(lr=0.05)
    history = fit(model, [script([3.0, 1.0, 2.0, 2.5, 0.5, 0.1]), snap,
                          EarlyStopping(patience=2, restore_best_weights=True)], epochs=6)
    assert history.epoch == [0, 1, 2, 3]
    for got, want in zip(model.get_weights(), snap.weights[1]):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(snap.weights[1][0], snap.weights[3][0])  # the weights did move


def test_restore_best_weights_also_when_training_runs_to_the_end():
    snap = WeightsPerEpoch()
    model = tiny_model(lr=0.05)
    fit(model, [script([3.0, 1.0, 2.0]), snap, EarlyStopping(patience=10, restore_best_weights=True)], epochs=3)
    for got, want in zip(model.get_weights(), snap.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_early_stopping_on_a_missing_metric_warns_with_the_available_keys():
    model = tiny_model()
    with pytest.warns(RuntimeWarning, match=r"val_loss.*available: learning_rate, loss.*validation_data"):
        history = fit(model, [EarlyStopping(patience=0)], epochs=3, validation=False)
    assert len(history.epoch) == 3


def test_restore_best_weights_with_a_missing_metric_says_what_to_change():
    model = tiny_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [EarlyStopping(restore_best_weights=True)], epochs=2, validation=False)
    messages = [str(w.message) for w in caught]
    assert any("restored nothing" in m and "monitor=" in m for m in messages), messages


# ---------------------------------------------------------- ModelCheckpoint


def test_checkpoint_every_epoch_with_formatted_names(tmp_path):
    snap = WeightsPerEpoch()
    model = tiny_model()
    path = str(tmp_path / "w-{epoch:02d}-{val_loss:.2f}.safetensors")
    history = fit(model, [snap, ModelCheckpoint(path, save_weights_only=True)], epochs=3)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"w-{e + 1:02d}-{v:.2f}.safetensors" for e, v in enumerate(history.history["val_loss"])]
    other = tiny_model(seed=9)
    other.load_weights(str(tmp_path / names[1]))
    for got, want in zip(other.get_weights(), snap.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_save_best_only_writes_on_improvement(tmp_path):
    path = str(tmp_path / "best-{epoch}.w")
    fit(tiny_model(), [script([1.0, 0.5, 0.7, 0.4, 0.45]),
                       ModelCheckpoint(path, save_best_only=True, save_weights_only=True)], epochs=5)
    assert sorted(os.listdir(tmp_path)) == ["best-1.w", "best-2.w", "best-4.w"]


def test_checkpoint_save_best_only_keeps_the_best_weights_in_one_file(tmp_path):
    snap = WeightsPerEpoch()
    path = str(tmp_path / "best.w")
    fit(tiny_model(), [script([1.0, 0.5, 0.7, 0.6]), snap,
                       ModelCheckpoint(path, save_best_only=True, save_weights_only=True)], epochs=4)
    other = tiny_model(seed=9)
    other.load_weights(path)
    for got, want in zip(other.get_weights(), snap.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_save_best_only_max_mode_and_initial_threshold(tmp_path):
    path = str(tmp_path / "acc-{epoch}.w")
    fit(tiny_model(), [script([0.5, 0.7, 0.6, 0.9], key="val_acc"),
                       ModelCheckpoint(path, monitor="val_acc", save_best_only=True, save_weights_only=True,
                                       initial_value_threshold=0.65)], epochs=4)
    assert sorted(os.listdir(tmp_path)) == ["acc-2.w", "acc-4.w"]


def test_checkpoint_every_n_batches(tmp_path):
    path = str(tmp_path / "e{epoch}-b{batch}.w")
    fit(tiny_model(), [ModelCheckpoint(path, save_weights_only=True, save_freq=3)], epochs=3)  # 6 batches
    assert sorted(os.listdir(tmp_path)) == ["e2-b1.w", "e3-b2.w"]


def test_checkpoint_unknown_format_field_names_the_available_ones(tmp_path):
    with pytest.raises(KeyError, match="val_loss"):
        fit(tiny_model(), [ModelCheckpoint(str(tmp_path / "{val_los:.2f}.w"), save_weights_only=True)])


def test_checkpoint_in_a_missing_directory_fails_before_training(tmp_path):
    model = tiny_model()
    before = model.get_weights()
    with pytest.raises(FileNotFoundError, match="does not exist.*create it"):
        fit(model, [ModelCheckpoint(str(tmp_path / "nope" / "w-{epoch}.w"), save_weights_only=True)])
    assert model.optimizer.iterations == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_checkpoint_under_a_file_or_at_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        fit(tiny_model(), [ModelCheckpoint(str(tmp_path / "file" / "w.w"), save_weights_only=True)])
    with pytest.raises(IsADirectoryError, match="give a file name"):
        fit(tiny_model(), [ModelCheckpoint(str(tmp_path), save_weights_only=True)])


def _unwritable_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError:
        return str(d)
    for candidate in ("/sys", "/proc"):  # root ignores permissions; these refuse new files
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no unwritable directory available")


def test_checkpoint_in_an_unwritable_directory_fails_before_training(tmp_path):
    directory = _unwritable_directory(tmp_path)
    model = tiny_model()
    try:
        with pytest.raises(PermissionError, match="writable directory"):
            fit(model, [ModelCheckpoint(os.path.join(directory, "w.w"), save_weights_only=True)])
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert model.optimizer.iterations == 0


def test_failed_checkpoint_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.w"
    model = tiny_model()
    fit(model, [ModelCheckpoint(str(path), save_weights_only=True)], epochs=1)
    good = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deepcore.saving.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space") as info:
        fit(model, [ModelCheckpoint(str(path), save_weights_only=True)], epochs=1)
    assert any("unchanged" in note for note in getattr(info.value, "__notes__", []))
    assert model.optimizer.iterations == 4  # the second fit did train before the write failed
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["ckpt.w"]  # no temp file left behind


def test_full_model_checkpoint_writes_model_files_that_load(tmp_path):
    from deepcore.models import load_model

    model = tiny_model()
    cb = ModelCheckpoint(str(tmp_path / "m-{epoch}.deepcore"))  # save_weights_only=False, the Keras default
    fit(model, [cb], epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["m-1.deepcore", "m-2.deepcore"]
    loaded = load_model(tmp_path / "m-2.deepcore")
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.optimizer.iterations == model.optimizer.iterations


def test_full_model_checkpoint_calls_the_models_save_with_each_epochs_path(tmp_path):
    class Saving(Sequential):
        def save(self, filepath):
            calls.append((filepath, self.optimizer.iterations))

    calls = []
    deepcore.set_random_seed(3)
    model = Saving([Input(shape=(2,)), Dense(1)])
    model.compile(optimizer=optimizers.SGD(0.05), loss="mse")
    pattern = str(tmp_path / "m-{epoch}.keras")
    fit(model, [ModelCheckpoint(pattern)], epochs=2)  # 2 batches per epoch
    assert calls == [(str(tmp_path / "m-1.keras"), 2), (str(tmp_path / "m-2.keras"), 4)]
    assert os.listdir(tmp_path) == []  # the full-model path never falls back to save_weights


@pytest.mark.parametrize("save_freq", [0, -2, "batch", 1.5, True])
def test_checkpoint_bad_save_freq(save_freq):
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint("w.w", save_freq=save_freq)


# ------------------------------------------------------------ TerminateOnNaN


class WeightsPerBatch(Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(self.model.get_weights())


def diverging_fit(callbacks, lr=1e8):
    model = tiny_model(lr=lr)
    x, y = regression_data(64)
    history = model.fit(x * 100, y * 100, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
    return model, history


def test_diverging_training_without_terminate_on_nan_ends_with_nonfinite_weights():
    model, history = diverging_fit([])
    assert len(history.epoch) == 3
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_terminate_on_nan_stops_and_keeps_the_last_finite_weights(capsys):
    snap = WeightsPerBatch()
    model, history = diverging_fit([snap, TerminateOnNaN()])
    assert len(history.epoch) == 1 and len(snap.weights) < 8   # stopped inside the first epoch
    assert not math.isfinite(history.history["loss"][0])
    final = model.get_weights()
    assert all(np.isfinite(w).all() for w in final)
    last_good = snap.weights[-2]    # weights after the batch before the bad one
    for got, want in zip(final, last_good):
        np.testing.assert_array_equal(got, want)
    assert "Invalid loss, terminating training" in capsys.readouterr().out
    assert not model._skip_nonfinite_updates  # the guard is off again after fit


def test_terminate_on_nan_undoes_an_update_that_overflows_the_weights():
    # lr * gradient overflows float32 on the very first step while the loss is still finite
    model = tiny_model(lr=1e38)
    before = model.get_weights()
    x, y = regression_data(16)
    history = model.fit(x * 100, y * 100, batch_size=8, epochs=2, verbose=0, callbacks=[TerminateOnNaN()])
    assert len(history.epoch) == 1
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- CSVLogger


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    history = fit(tiny_model(), [CSVLogger(str(path))], epochs=3)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "learning_rate", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for r, loss, val in zip(rows[1:], history.history["loss"], history.history["val_loss"]):
        assert float(r[2]) == pytest.approx(loss) and float(r[3]) == pytest.approx(val)


def test_csv_logger_append_continues_without_a_second_header(tmp_path):
    path = tmp_path / "log.csv"
    model = tiny_model()
    fit(model, [CSVLogger(str(path), separator=";")], epochs=2)
    fit(model, [CSVLogger(str(path), separator=";", append=True)], epochs=4, initial_epoch=2)
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch;learning_rate;loss;val_loss"
    assert [line.split(";")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    fit(model, [CSVLogger(str(path))], epochs=1)  # append=False overwrites
    assert len(path.read_text().splitlines()) == 2


def test_csv_logger_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(tiny_model(), [CSVLogger(str(tmp_path / "no" / "log.csv"))])


# ------------------------------------------------------------------- config


@pytest.mark.parametrize("cb", [
    ReduceLROnPlateau(monitor="loss", factor=0.5, patience=3, cooldown=1, min_lr=1e-5),
    EarlyStopping(monitor="val_accuracy", patience=4, baseline=0.8, restore_best_weights=True),
    ModelCheckpoint("ck-{epoch}.w", save_best_only=True, save_weights_only=True, save_freq=10),
    CSVLogger("log.csv", separator=";", append=True),
    LearningRateScheduler(schedules.ExponentialDecay(0.1, 5, 0.5), verbose=1),
], ids=lambda cb: type(cb).__name__)
def test_callback_round_trips_through_get_config(cb):
    again = type(cb).from_config(cb.get_config())
    assert again.get_config() == cb.get_config()


def test_callbacks_holding_functions_refuse_to_serialize():
    with pytest.raises(TypeError, match="function"):
        LearningRateScheduler(lambda e: 0.1).get_config()
    with pytest.raises(TypeError, match="function"):
        LambdaCallback(on_epoch_end=print).get_config()


class RunningMean(deepcore.layers.Layer):
    """Identity whose forward (training) updates a non-trainable running mean
    of its input, the way BatchNorm updates its moving statistics."""

    def build(self, input_shape):
        self.mean = self.add_weight("mean", (), lambda shape: np.zeros(shape, np.float32), trainable=False)

    def forward(self, x, training=False):
        if training:
            with np.errstate(all="ignore"):  # diverging inputs overflow the mean, as they would BatchNorm's
                self.mean.value[...] = 0.5 * self.mean.value + 0.5 * np.float32(np.mean(x))
        return x

    def backward(self, dy, need_dx=True):
        return dy


def test_terminate_on_nan_also_restores_state_that_forward_updates():
    deepcore.set_random_seed(3)
    tracker = RunningMean(name="tracker")
    model = Sequential([Input(shape=(2,)), Dense(1, name="out"), tracker])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e8), loss="mse")
    states = []
    record = LambdaCallback(on_train_batch_end=lambda b, logs: states.append(float(tracker.mean.value)))
    x, y = regression_data(64)
    model.fit(x * 100, y * 100, batch_size=8, epochs=1, verbose=0, callbacks=[record, TerminateOnNaN()])
    assert len(states) >= 2
    assert float(tracker.mean.value) == states[-2]  # the bad batch's update was undone
    assert states[-1] == states[-2]


@pytest.mark.parametrize("guarded", [False, True])
def test_terminate_on_nan_keeps_batchnorm_statistics_finite(guarded):
    deepcore.set_random_seed(3)
    bn = deepcore.BatchNormalization(name="bn")
    model = Sequential([Input(shape=(2,)), Dense(4, name="h"), bn, Dense(1, name="out")])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e8), loss="mse")
    states = []
    record = LambdaCallback(on_train_batch_end=lambda b, logs: states.append(
        [v.value.copy() for v in bn.non_trainable_weights]))
    x, y = regression_data(64)
    model.fit(x * 100, y * 100, batch_size=8, epochs=2, verbose=0,
              callbacks=[record] + ([TerminateOnNaN()] if guarded else []))
    finite = all(np.isfinite(w).all() for w in model.get_weights())
    if not guarded:  # the divergence this test relies on does poison the weights
        assert not finite and len(states) == 16
        return
    assert finite and len(states) < 8
    for v, want in zip(bn.non_trainable_weights, states[-2]):
        np.testing.assert_array_equal(v.value, want)


# ------------------------------------------------------------------ review fixes
def _tiny_model():
    m = deepcore.Sequential([deepcore.Input((3,)), deepcore.Dense(2, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return m


@pytest.mark.parametrize("epochs,initial_epoch", [(0, 0), (2, 2), (2, 3)])
def test_fit_with_no_epoch_to_run_returns_an_empty_history(epochs, initial_epoch):
    m = _tiny_model()
    seen = []
    cb = deepcore.callbacks.LambdaCallback(on_train_begin=lambda logs: seen.append("begin"),
                                     on_train_end=lambda logs: seen.append("end"))
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
    hist = m.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[cb])
    assert hist.history == {} and seen == ["begin", "end"]


def test_checkpoint_subclass_batch_hook_runs_whatever_the_save_freq(tmp_path):
    calls = []

    class Counting(deepcore.callbacks.ModelCheckpoint):
        def on_train_batch_end(self, batch, logs=None):
            calls.append(batch)
            super().on_train_batch_end(batch, logs)

    x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int32)
    for freq in (2, "epoch"):
        calls.clear()
        m = _tiny_model()
        path = str(tmp_path / f"w-{freq}-{{epoch}}.weights")
        m.fit(x, y, batch_size=2, epochs=1, verbose=0,
              callbacks=[Counting(path, save_freq=freq, save_weights_only=True, monitor="loss")])
        assert calls == [0, 1, 2, 3]


def test_scheduler_with_an_opaque_signature_falls_back_to_one_argument():
    def wrap(fn):
        def inner(*args):
            return fn(*args)
        return inner

    @wrap
    def sched(epoch):
        return 0.1 / (epoch + 1)

    m = _tiny_model()
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
    hist = m.fit(x, y, epochs=3, verbose=0, callbacks=[deepcore.callbacks.LearningRateScheduler(sched)])
    assert hist.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
