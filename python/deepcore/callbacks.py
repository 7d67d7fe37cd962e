"""Training callbacks with Keras's names, hooks and defaults.

``Model.fit`` calls, in order: on_train_begin, then per epoch on_epoch_begin,
per batch on_train_batch_begin/end (the Keras 2 names on_batch_begin/end are
aliases: the base on_train_batch_* calls them), on_test_* around validation,
on_epoch_end, and finally on_train_end. ``evaluate`` calls the on_test_* hooks
and ``predict`` the on_predict_* hooks. Per-batch dispatch is skipped entirely
when no callback overrides a batch hook, since it sits on the hot path.

Where deepcore differs from Keras 3 the docstring says so.
"""
from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import sys
import tempfile
import time
import warnings

from . import plot as _plot

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "LambdaCallback", "LearningRateScheduler",
           "ReduceLROnPlateau", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN", "CSVLogger"]

_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
          "on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end",
          "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
          "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")


class Callback:
    """Base class; override any hook. ``self.model`` and ``self.params`` are
    set by fit/evaluate/predict. Every hook receives a ``logs`` dict (or None)."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass

    # Keras 2 names: aliases of on_train_batch_begin/end, as in Keras 3.
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _overrides(cb, hook) -> bool:
    """Whether cb does something in hook (a method override or, as in
    LambdaCallback, a function set on the instance)."""
    idle = getattr(cb, "_batch_hook_idle", None)
    if idle is not None and idle(hook):
        return False
    return hook in vars(cb) or getattr(type(cb), hook) is not getattr(Callback, hook)


class CallbackList:
    """Fans each hook out to the callbacks in order. ``wants_batch_hooks``
    (training), ``wants_test_batch_hooks`` and ``wants_predict_batch_hooks``
    tell the loops whether building per-batch logs is worth it."""

    def __init__(self, callbacks, model, params):
        if isinstance(callbacks, Callback) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"callbacks must be a list of Callback objects, got {type(callbacks).__name__}")
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback objects (deepcore.callbacks.Callback), got "
                                f"{type(cb).__name__}; wrap a function in LambdaCallback(on_epoch_end=...)")
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.wants_batch_hooks = self._any(("on_train_batch_begin", "on_train_batch_end",
                                            "on_batch_begin", "on_batch_end"))
        self.wants_test_batch_hooks = self._any(("on_test_batch_begin", "on_test_batch_end"))
        self.wants_predict_batch_hooks = self._any(("on_predict_batch_begin", "on_predict_batch_end"))

    def _any(self, hooks):
        return any(_overrides(cb, h) for cb in self.callbacks for h in hooks)

    def call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def train_batch_begin(self, batch, logs):
        self.call("on_train_batch_begin", batch, logs)

    def train_batch_end(self, batch, logs):
        self.call("on_train_batch_end", batch, logs)


def _format_value(v):
    """Keras's progress-bar number format."""
    try:
        return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"
    except (TypeError, ValueError):
        return str(v)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]``, ``.epoch``,
    ``.params``. The rate logged as "learning_rate" (Keras 3's name) is also
    recorded as ``history.history["lr"]`` (Keras 2's name, the chapter's)."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if "learning_rate" in logs and "lr" not in logs:
            self.history.setdefault("lr", []).append(logs["learning_rate"])

    def plot(self, keys=None, path=None, ax=None):
        """The chapter's learning curves: ``deepcore.plot.learning_curves``
        (needs matplotlib: pip install "deepcore[plot]")."""
        return _plot.learning_curves(self, keys=keys, path=path, ax=ax)


class ProgbarLogger(Callback):
    """A tqdm bar per epoch showing the running loss and metrics
    (verbose=1), or one line per epoch (verbose=2)."""

    def __init__(self, verbose=1, refresh_seconds=0.2):
        super().__init__()
        self.verbose = verbose
        self.refresh_seconds = refresh_seconds
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.params.get("steps"), desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}",
                             unit="step", leave=True, file=sys.stdout, dynamic_ncols=True, mininterval=0.2)
            self._last = 0.0

    def update(self, step, logs):
        """Called by fit after each batch (cheap unless a refresh is due)."""
        bar = self._bar
        if bar is None:
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh_seconds or step == self.params.get("steps"):
            self._last = now
            bar.set_postfix({k: _format_value(v) for k, v in logs.items()}, refresh=False)
            bar.update(step - bar.n)

    def on_epoch_end(self, epoch, logs=None):
        text = " - ".join(f"{k}: {_format_value(v)}" for k, v in (logs or {}).items())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            dt = time.perf_counter() - self._t0
            print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {dt:.1f}s - {text}", flush=True)


class LambdaCallback(Callback):
    """A callback from plain functions, one per hook, with Keras's signatures:
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``, ``on_batch_begin(batch,
    logs)`` / ``on_train_batch_begin(batch, logs)`` (and *_end), and likewise
    the test and predict hooks. An unknown hook name is a TypeError (Keras
    silently ignores it, so a typo would never run)."""

    def __init__(self, **hooks):
        super().__init__()
        unknown = sorted(set(hooks) - set(_HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hook(s) {unknown}; known hooks: {', '.join(_HOOKS)}")
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {type(fn).__name__}")
            setattr(self, name, fn)

    def get_config(self):
        raise TypeError("LambdaCallback holds Python functions, which cannot be serialized")


# ------------------------------------------------------------------ helpers


def _check_number(owner, name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return value


def _check_count(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{owner}: {name} must be an integer >= 0, got {value!r}")
    return int(value)


def _require_constant_rate(owner, model):
    """A callback that sets optimizer.learning_rate would silently replace a
    per-step schedule with a constant; refuse that up front."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise ValueError(f"{owner}: the model has no optimizer with a learning_rate; compile the model first")
    if callable(getattr(opt, "_learning_rate", None)):
        raise ValueError(f"{owner} sets the optimizer's learning rate each epoch, but the optimizer's "
                         f"learning_rate is a schedule ({type(opt._learning_rate).__name__}) that would be "
                         f"replaced; use a constant learning_rate with {owner}, or drop the callback")


_MIN_NAMES = ("loss", "mae", "mse", "rmse", "crossentropy", "error")


def _infer_mode(owner, monitor, model):
    """"min" or "max" for mode="auto": loss -> min; a compiled metric by its
    kind (accuracy -> max, errors -> min); else by name, as Keras 2 did
    ("acc" -> max). Like Keras 3, an unknown name is a ValueError asking for
    mode=."""
    from . import metrics as _metrics

    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name == "loss":
        return "min"
    for m in getattr(model, "compiled_metrics", None) or []:
        if getattr(m, "name", None) == name:
            direction = getattr(m, "direction", None) or getattr(m, "_direction", None)
            if direction in ("up", "down"):
                return "max" if direction == "up" else "min"
            if isinstance(m, (_metrics.SparseCategoricalAccuracy, _metrics.CategoricalAccuracy,
                              _metrics.BinaryAccuracy)):
                return "max"
            if isinstance(m, (_metrics.MeanAbsoluteError, _metrics.MeanSquaredError)):
                return "min"
    if name in ("acc", "accuracy") or name.endswith(("_acc", "_accuracy")):
        return "max"
    if name.endswith(_MIN_NAMES):
        return "min"
    raise ValueError(f"{owner}: cannot tell whether monitor={monitor!r} should be minimized or maximized; "
                     f"pass mode='min' or mode='max'")


class _MonitorCallback(Callback):
    """Shared by ReduceLROnPlateau, EarlyStopping and ModelCheckpoint: which
    value to watch and what counts as an improvement (by more than min_delta)."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        owner = type(self).__name__
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"{owner}: monitor must be a log key such as 'val_loss', got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(_check_number(owner, "min_delta", min_delta))
        self._direction = None  # resolved lazily, once the model's metrics are known

    def _resolve_direction(self, again=False):
        """"min" or "max"; a ValueError if mode="auto" cannot tell (asked at
        on_train_begin, so the error comes before any training)."""
        if again:
            self._direction = None
        if self._direction is None:
            self._direction = self.mode if self.mode != "auto" else _infer_mode(
                type(self).__name__, self.monitor, self.model)
        return self._direction

    def _is_improvement(self, current, reference):
        """current beats reference by more than min_delta (None: anything does; NaN never does)."""
        if reference is None:
            return not math.isnan(current)
        if self._resolve_direction() == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def _missing_monitor(self, logs, what):
        available = ", ".join(sorted(logs or {})) or "none"
        hint = ("pass validation_data= or validation_split= to fit() to get val_ metrics, or "
                if self.monitor.startswith("val_") else "")
        warnings.warn(f"{type(self).__name__}: {what} is conditioned on monitor={self.monitor!r}, which is not "
                      f"in the logs (available: {available}); {hint}set monitor= to one of the available keys",
                      RuntimeWarning, stacklevel=3)


# ------------------------------------------------------------ rate control


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate at the beginning of every epoch to
    ``schedule(epoch, lr)`` (when the function takes two positional
    arguments, lr being the current rate) or ``schedule(epoch)``. ``epoch``
    is the true 0-based index, so fit(initial_epoch=k) resumes the schedule.
    A schedule that returns a non-number, NaN, inf or a negative rate is a
    ValueError. Defaults: verbose=0. A ``LearningRateSchedule`` object works
    as ``schedule`` too (called with the epoch instead of the step).
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}")
        self.schedule, self.verbose = schedule, verbose
        arity = _positional_arity(schedule)
        # None: the signature does not say (*args wrappers, builtins); try
        # (epoch, lr) and fall back to (epoch) on TypeError, as Keras does.
        self._takes_lr = None if arity is None else arity >= 2

    def on_train_begin(self, logs=None):
        _require_constant_rate("LearningRateScheduler", self.model)

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if self._takes_lr is None:
            try:
                lr = self.schedule(epoch, float(opt.learning_rate))
            except TypeError:
                lr = self.schedule(epoch)
        else:
            lr = self.schedule(epoch, float(opt.learning_rate)) if self._takes_lr else self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned {lr!r} for epoch {epoch}; "
                             f"it must return a finite float >= 0")
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)

    def get_config(self):
        from . import schedules

        if not isinstance(self.schedule, schedules.LearningRateSchedule):
            raise TypeError("LearningRateScheduler holds a Python function, which cannot be serialized")
        return {"schedule": schedules.serialize(self.schedule), "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        from . import schedules

        return cls(schedules.deserialize(config["schedule"]), config.get("verbose", 0))


def _positional_arity(fn):
    """How many positional arguments fn accepts; None when the signature
    cannot tell (*args, or no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class ReduceLROnPlateau(_MonitorCallback):
    """Multiplies the learning rate by ``factor`` once ``monitor`` has not
    improved (by more than ``min_delta``) for ``patience`` epochs, then waits
    ``cooldown`` epochs before counting again; never goes below ``min_lr``.
    As Keras: new_lr = max(lr * factor, min_lr), applied only while
    lr > min_lr. Defaults: monitor="val_loss", factor=0.1, patience=10,
    verbose=0, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0.
    factor must be in (0, 1).
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        _check_number("ReduceLROnPlateau", "factor", factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1) (it multiplies the learning rate), "
                             f"got factor={factor!r}")
        self.factor = float(factor)
        self.patience = _check_count("ReduceLROnPlateau", "patience", patience)
        self.cooldown = _check_count("ReduceLROnPlateau", "cooldown", cooldown)
        self.min_lr = float(_check_number("ReduceLROnPlateau", "min_lr", min_lr, 0.0))
        self.verbose = verbose
        self._reset()

    def _reset(self):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()
        _require_constant_rate("ReduceLROnPlateau", self.model)
        self._resolve_direction(again=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = float(opt.learning_rate)  # the rate this epoch ran with
        current = logs.get(self.monitor)
        if current is None:
            self._missing_monitor(logs, "learning-rate reduction")
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = float(opt.learning_rate)
                if old_lr > self.min_lr:
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    opt.learning_rate = new_lr
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def get_config(self):
        return {"monitor": self.monitor, "factor": self.factor, "patience": self.patience,
                "verbose": self.verbose, "mode": self.mode, "min_delta": self.min_delta,
                "cooldown": self.cooldown, "min_lr": self.min_lr}


# ---------------------------------------------------------------- stopping


class EarlyStopping(_MonitorCallback):
    """Stops training once ``monitor`` has not improved (by more than
    ``min_delta``) for ``patience`` epochs, as Keras 3:

    - an epoch before ``start_from_epoch`` is not monitored (warm-up);
    - with ``baseline``, the wait is only reset by a value that also beats
      the baseline, so training stops after ``patience`` epochs that fail to;
    - with ``restore_best_weights=True`` the model ends with the weights of
      the best epoch, whether training stopped early or ran to the end.

    A monitor that never appears in the logs gives a RuntimeWarning naming
    the keys that do; nothing is then stopped or restored. Defaults:
    monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
    baseline=None, restore_best_weights=False, start_from_epoch=0.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = _check_count("EarlyStopping", "patience", patience)
        self.start_from_epoch = _check_count("EarlyStopping", "start_from_epoch", start_from_epoch)
        self.baseline = None if baseline is None else float(_check_number("EarlyStopping", "baseline", baseline))
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self._reset()

    def on_train_begin(self, logs=None):
        self._reset()
        self._resolve_direction(again=True)

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._seen_monitor = False
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        current = logs.get(self.monitor)
        if current is None:
            if not self._warned:
                self._warned = True
                self._missing_monitor(logs, "early stopping")
            return
        self._seen_monitor = True
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # the first monitored epoch is the best so far
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if not self.restore_best_weights:
            return
        if self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
        elif not self._seen_monitor:
            warnings.warn(f"EarlyStopping(restore_best_weights=True) restored nothing: monitor={self.monitor!r} "
                          f"was never logged, so the model keeps its last weights; pass validation data to fit() "
                          f"or set monitor= to a key that fit logs (e.g. 'loss')", RuntimeWarning, stacklevel=2)

    def get_config(self):
        return {"monitor": self.monitor, "min_delta": self.min_delta, "patience": self.patience,
                "verbose": self.verbose, "mode": self.mode, "baseline": self.baseline,
                "restore_best_weights": self.restore_best_weights, "start_from_epoch": self.start_from_epoch}


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and
    keeps the last finite weights: while this callback is in fit, the model
    skips the optimizer update of a batch whose loss or gradients are
    non-finite (and undoes one that would leave a non-finite weight), so the
    bad step never touches the weights, nor the state a training forward
    updates (BatchNorm's moving statistics). The optimizer's slots and step
    count are not rolled back: to train on, recompile or load a checkpoint.
    The epoch's logged loss is NaN/inf.
    """

    def on_train_begin(self, logs=None):
        self.model._skip_nonfinite_updates = True

    def on_train_end(self, logs=None):
        self.model._skip_nonfinite_updates = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        bad = (loss is not None and not math.isfinite(loss)) or getattr(self.model, "_nonfinite_update_skipped",
                                                                           False)
        if bad:
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


# ------------------------------------------------------------------- files


def _check_directory(owner, what, path):
    """Raise a clear OSError unless path's directory exists and takes new files."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(directory):
        raise FileNotFoundError(f"{owner}: the directory {directory!r} for {what} {path!r} does not exist; "
                                f"create it first (os.makedirs) or choose a path in an existing directory")
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{owner}: {directory!r} in {what} {path!r} is not a directory; choose a path "
                                 f"whose parent is a directory")
    try:  # a real probe: os.access says yes to root even on a read-only filesystem
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise PermissionError(f"{owner}: cannot create files in {directory!r} for {what} {path!r} ({e}); "
                              f"choose a writable directory") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"{owner}: {what} {path!r} is an existing directory; give a file name, e.g. "
                                f"{os.path.join(path, 'checkpoint.weights')!r}")


class ModelCheckpoint(_MonitorCallback):
    """Saves the weights after every epoch (``save_freq="epoch"``) or every
    ``save_freq`` batches, with ``model.save_weights`` (safetensors, atomic:
    a failed write leaves the previous file intact and the error propagates).
    The file holds what save_weights writes: the weights and, once the
    optimizer has stepped, its state, so ``load_weights`` resumes training.

    ``filepath`` may hold format fields filled from the epoch (1-based, as in
    Keras), the batch (1-based, for integer save_freq) and the logs, e.g.
    ``"ckpt/{epoch:02d}-{val_loss:.2f}.weights"``. With ``save_best_only``
    a file is written only when ``monitor`` improves (if the monitor is not
    logged, Keras 3 saves anyway with a warning; so do we). Its directory must
    exist and be writable: this is checked at on_train_begin (Keras creates
    missing directories; deepcore refuses, so a typo does not scatter files).

    ``save_weights_only=False`` (the Keras default) asks for full-model files.
    deepcore writes them with ``model.save`` when the model has one; a model
    without ``save`` is a NotImplementedError at on_train_begin rather than a
    weights file passed off as a model. Defaults: monitor="val_loss",
    verbose=0, save_best_only=False, save_weights_only=False, mode="auto",
    save_freq="epoch", initial_value_threshold=None.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, 0.0)
        self.filepath = os.fspath(filepath)
        if not self.filepath:
            raise ValueError("ModelCheckpoint: filepath is empty")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral)
                                     or save_freq < 1):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or a positive number of batches, "
                             f"got {save_freq!r}")
        self.save_freq = save_freq
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.initial_value_threshold = (None if initial_value_threshold is None else
                                        float(_check_number("ModelCheckpoint", "initial_value_threshold",
                                                            initial_value_threshold)))
        self.best = self.initial_value_threshold
        self._current_epoch = 0
        self._batches_since_save = 0

    def on_train_begin(self, logs=None):
        if not self.save_weights_only and not callable(getattr(self.model, "save", None)):
            raise NotImplementedError(
                "ModelCheckpoint(save_weights_only=False) asks for full-model files, which this deepcore model "
                "cannot write (it has no save()); pass save_weights_only=True to checkpoint the weights, and "
                "rebuild the model in code before model.load_weights(path)")
        if "{" not in os.path.dirname(self.filepath):  # else checked once the name is filled in
            _check_directory("ModelCheckpoint", "filepath", self.filepath)
        if self.save_best_only:
            self._resolve_direction(again=True)
        self._batches_since_save = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def _batch_hook_idle(self, hook):
        # With save_freq="epoch" ModelCheckpoint's own batch hook does nothing:
        # let fit skip per-batch dispatch (a subclass override still counts).
        return self.save_freq == "epoch" and getattr(type(self), hook) is getattr(ModelCheckpoint, hook)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs or {})
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f"ModelCheckpoint: cannot fill filepath {self.filepath!r} ({e!r}); available fields: "
                           f"{', '.join(sorted(fields))}") from None

    def _should_save(self, epoch, logs, path):
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {path}")
            return True
        current = (logs or {}).get(self.monitor)
        if current is None:
            self._missing_monitor(logs, "save_best_only (saving anyway, as Keras 3 does)")
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save(self, epoch, batch, logs):
        path = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, path):
            return
        if "{" in os.path.dirname(self.filepath):
            _check_directory("ModelCheckpoint", "filepath", path)
        try:
            if self.save_weights_only:
                self.model.save_weights(path, overwrite=True)
            else:
                self.model.save(path)
        except OSError as e:
            e.add_note(f"ModelCheckpoint: writing {path!r} failed; the previous file at that path, if any, "
                       f"is unchanged (writes are atomic)")
            raise

    def get_config(self):
        return {"filepath": self.filepath, "monitor": self.monitor, "verbose": self.verbose,
                "save_best_only": self.save_best_only, "save_weights_only": self.save_weights_only,
                "mode": self.mode, "save_freq": self.save_freq,
                "initial_value_threshold": self.initial_value_threshold}


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` (0-based, as Keras) then the
    log keys in sorted order. ``append=True`` continues an existing file,
    reusing its header's columns (resumed training lines up). Unlike Keras 3,
    no empty val_ columns are added when there is no validation: deepcore
    validates every epoch or never. Defaults: separator=",", append=False.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.sep = separator
        self.append = bool(append)
        self.keys = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs=None):
        _check_directory("CSVLogger", "filename", self.filename)
        self.keys, header_present = None, False
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if header:
                header_present = True
                self.keys = header[1:]
        self._close()
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None
        self._write_header = not header_present

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.writer(self._file, delimiter=self.sep, lineterminator="\n")
            if self._write_header:
                self._writer.writerow(["epoch"] + self.keys)
        self._writer.writerow([epoch] + [logs.get(k, "NA") for k in self.keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._file = None

    def get_config(self):
        return {"filename": self.filename, "separator": self.sep, "append": self.append}


def __getattr__(name):
    # TensorBoard lives in deepcore.tensorboard_callback: it needs tensorboardX
    # (the tensorboard extra), imported when the name is first used.
    if name == "TensorBoard":
        from .tensorboard_callback import TensorBoard

        return TensorBoard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
