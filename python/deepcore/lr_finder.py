"""The learning-rate finder: train briefly while growing the rate
exponentially, watch the loss, then put everything back.

    result = deepcore.lr_find(model, x, y)
    model.optimizer.learning_rate = result.suggestion

The suggestion follows the chapter's rule of thumb: about ten times lower than
the rate at which the (smoothed) loss was lowest, i.e. safely before it starts
to climb. ``result.steepest`` is the rate where the loss fell fastest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import cuda as _cuda_front
from . import plot as _plot
from . import random as _random
from .backend import core

__all__ = ["lr_find", "LRFinderResult"]


@dataclass
class LRFinderResult:
    learning_rates: np.ndarray
    losses: np.ndarray           # raw batch losses
    smoothed_losses: np.ndarray  # exponentially smoothed, bias-corrected
    suggestion: float
    steepest: float
    min_loss_lr: float
    stopped_early: bool = False
    figure: object = field(default=None, repr=False)

    def plot(self, path=None, ax=None):
        """Loss against rate (log axis) with the suggestion marked
        (``deepcore.plot.lr_finder``); saved to path when given. Needs
        matplotlib: pip install "deepcore[plot]"."""
        self.figure = _plot.lr_finder(self, path=path, ax=ax)
        return self.figure


def _snapshot_optimizer(opt, size):
    if not opt.built or opt._pending_state is not None:
        opt.build(size)  # applies a state set before the first step, so the snapshot holds it
    scalars = {k: v for k, v in vars(opt).items()
               if isinstance(v, (int, float, bool, str, type(None))) or callable(v)}
    layout = list(opt._layout) if opt._layout is not None else None
    return scalars, layout, opt.get_state()


def _restore_optimizer(opt, snapshot):
    scalars, layout, state = snapshot
    for k, v in scalars.items():
        setattr(opt, k, v)
    opt._pending_state = None
    opt.build(scalars["_size"])
    opt._layout = layout
    opt.set_state(state)


def _snapshot_randomness(model):
    """The global stream counter and each layer's call counter (dropout-family
    layers draw their masks from (seed, stream, call))."""
    return dict(_random._state), [(layer, layer._calls) for layer in model.layers if hasattr(layer, "_calls")]


def _restore_randomness(snapshot):
    state, calls = snapshot
    with _random._lock:
        _random._state.update(state)
    for layer, n in calls:
        layer._calls = n


def lr_find(model, x, y, min_lr=1e-5, max_lr=10.0, steps=500, batch_size=32, smoothing=0.98, stop_factor=4.0,
            seed=None, plot_to=None) -> LRFinderResult:
    """Grow the learning rate exponentially from min_lr to max_lr over
    ``steps`` training steps (cycling through shuffled batches of x, y),
    record the loss, stop early once the smoothed loss exceeds stop_factor x
    its minimum (or is not finite), then restore the model's weights and the
    optimizer's state, step count and hyperparameters, and the random
    streams (dropout masks, shuffles) as they were. Returns an
    LRFinderResult; with plot_to set and matplotlib installed, also saves the
    plot there."""
    with _cuda_front.device(model.device):  # a model on "cuda:N" runs its steps there
        return _lr_find(model, x, y, min_lr, max_lr, steps, batch_size, smoothing, stop_factor, seed, plot_to)


def _lr_find(model, x, y, min_lr, max_lr, steps, batch_size, smoothing, stop_factor, seed, plot_to):
    model._require_compiled("lr_find")
    min_lr, max_lr = float(min_lr), float(max_lr)
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise ValueError(f"lr_find: need 0 < min_lr < max_lr (finite), got min_lr={min_lr}, max_lr={max_lr}")
    steps, batch_size = int(steps), int(batch_size)
    if steps < 2:
        raise ValueError(f"lr_find: steps must be >= 2, got {steps}")
    if batch_size < 1:
        raise ValueError(f"lr_find: batch_size must be >= 1, got {batch_size}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"lr_find: smoothing must be in [0, 1), got {smoothing}")
    x, y = model._prepare_xy(x, y, "lr_find")
    model._ensure_packed()
    model._fused = model._fusion()
    opt = model.optimizer
    weights = model.get_weights()
    opt_snapshot = _snapshot_optimizer(opt, model._flat_params.size)
    rng_snapshot = _snapshot_randomness(model)
    saved_rate = opt._learning_rate

    rates = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))
    seed, stream = _random.resolve(seed)
    n = len(x)
    losses, smooth = [], []
    avg, best, stopped = 0.0, math.inf, False
    order, pos, epoch = None, n, 0
    try:
        for k, lr in enumerate(rates):
            if pos + batch_size > n:  # reshuffle (drop the ragged tail so batches are uniform)
                order = core.philox_permutation(n, seed, stream * 1_000_003 + epoch)
                pos, epoch = 0, epoch + 1
            idx = order[pos:pos + min(batch_size, n)]
            pos += batch_size
            opt.learning_rate = float(lr)
            xb, yb = x[idx], y[idx]  # host batches, copied to the model's device
            loss = model._train_step(model._on_device(xb, ("x", len(xb))), model._on_device(yb, ("y", len(yb))))[0]
            loss = float(loss)
            losses.append(loss)
            avg = smoothing * avg + (1 - smoothing) * loss
            s = avg / (1 - smoothing ** (k + 1))
            smooth.append(s)
            if not math.isfinite(s) or (k > 10 and s > stop_factor * best):
                stopped = True
                break
            best = min(best, s)
    finally:
        model.set_weights(weights)
        opt._learning_rate = saved_rate
        _restore_optimizer(opt, opt_snapshot)
        _restore_randomness(rng_snapshot)

    rates = rates[:len(losses)]
    losses, smooth = np.array(losses), np.array(smooth)
    finite = np.isfinite(smooth)
    if not finite.any():
        raise ValueError("lr_find: the loss was not finite even at min_lr; lower min_lr or check the data")
    i_min = int(np.nanargmin(np.where(finite, smooth, np.nan)))
    min_loss_lr = float(rates[i_min])
    logs = np.log(rates)
    slope = np.gradient(np.where(finite, smooth, np.nan), logs) if len(rates) > 2 else np.zeros(len(rates))
    upto = slope[: i_min + 1]
    steepest = float(rates[int(np.nanargmin(upto))]) if np.isfinite(upto).any() else min_loss_lr
    suggestion = max(min_loss_lr / 10.0, float(rates[0]))
    result = LRFinderResult(rates, losses, smooth, suggestion, steepest, min_loss_lr, stopped)
    if plot_to is not None:
        try:
            result.plot(plot_to)
        except ImportError:
            pass
    return result
