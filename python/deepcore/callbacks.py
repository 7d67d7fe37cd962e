"""Callbacks with Keras's hooks: History, the tqdm progress bar, LambdaCallback."""
from __future__ import annotations

import sys
import time


class Callback:
    """Base class; override any hook. ``self.model`` and ``self.params`` are set by fit."""

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
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass

    # Keras 2 names
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Fans each hook out to the callbacks; skips per-batch dispatch entirely
    when no callback overrides a batch hook (it is on the hot path)."""

    _BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.wants_batch_hooks = any(
            getattr(type(cb), h) is not getattr(Callback, h) for cb in self.callbacks for h in self._BATCH_HOOKS
        ) or any(isinstance(cb, LambdaCallback) for cb in self.callbacks)

    def call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def train_batch_begin(self, batch, logs):
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)
            cb.on_batch_begin(batch, logs)

    def train_batch_end(self, batch, logs):
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)
            cb.on_batch_end(batch, logs)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]``, ``.epoch``, ``.params``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


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
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            bar.update(step - bar.n)

    def on_epoch_end(self, epoch, logs=None):
        text = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            dt = time.perf_counter() - self._t0
            print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {dt:.1f}s - {text}", flush=True)


class LambdaCallback(Callback):
    """Build a callback from functions: on_epoch_begin(epoch, logs), on_epoch_end,
    on_batch_begin(batch, logs), on_batch_end, on_train_begin(logs), on_train_end."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_begin=None, on_batch_end=None,
                 on_train_begin=None, on_train_end=None, **kwargs):
        super().__init__()
        for name, fn in dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                             on_batch_begin=on_batch_begin, on_batch_end=on_batch_end,
                             on_train_begin=on_train_begin, on_train_end=on_train_end, **kwargs).items():
            if fn is not None:
                setattr(self, name, fn)
