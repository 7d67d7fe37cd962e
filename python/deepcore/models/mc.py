"""Monte Carlo dropout predictions (Gal & Ghahramani, 2016, "Dropout as a
Bayesian approximation"): run the model ``samples`` times with every dropout
layer active (Dropout, AlphaDropout, MCDropout, each drawing fresh masks) and
everything else in inference mode (BatchNorm normalizes with its moving
statistics and leaves them untouched; RReLU uses its mean slope), and return
the mean and standard deviation of the outputs.

The samples of a batch run as one forward pass over the batch tiled
``samples`` times (in groups of at most ``_MAX_ROWS`` rows): every MCDropout
element draws its own mask, and the GEMMs get taller, which is faster than
``samples`` small passes.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..backend import to_host

_MAX_ROWS = 4096
_MAX_BYTES = 64 << 20  # per tiled forward, counting the widest layer's output


def _release_buffers(model, batches):
    from ..layers.core import _BatchBuffers

    for layer in model.layers:
        for value in vars(layer).values():
            if isinstance(value, _BatchBuffers):
                value.release(batches)
    for n in batches:
        model._batch_buffers.pop(("mc", n), None)
        model._batch_buffers.pop(("mc_device", n), None)


def _shares_mask_across_batch(model):
    """A random layer whose noise_shape shares one mask across the batch:
    samples tiled into one batch would then share it too."""
    return any(getattr(layer, "noise_shape", None) is not None and layer.noise_shape[0] == 1
               for layer in model.layers)


def _dropout_layers(model):
    """The model's dropout-family layers: what predict_mc turns on."""
    from ..layers.regularization import AlphaDropout, Dropout  # MCDropout is a Dropout

    return [layer for layer in model.layers if isinstance(layer, (Dropout, AlphaDropout))]


def predict_mc(model, x, samples=100, batch_size=None):
    """(mean, std) over ``samples`` stochastic forward passes, each of shape
    (len(x),) + output shape, float32. std is the population standard
    deviation (``np.std(outputs, axis=0)``).

    Every dropout layer samples: Dropout, AlphaDropout and MCDropout alike
    draw a fresh mask per sample (the chapter's MC dropout recipe, which
    calls the model with ``training=True``, minus its side effects). The
    other layers run in inference mode: BatchNormalization normalizes with its
    moving statistics and does not update them, and RReLU uses its mean slope
    ``(lower + upper) / 2`` (its random slopes are a training-time
    regularizer, not a dropout mask, so they are not sampled).

    Masks come from each layer's Philox stream and call counter, so a model
    built after the same ``deepcore.set_random_seed`` (or with seeded dropout
    layers) gives the same result; each call advances the counters, as a
    training step does.

    Raises ValueError when the model has no dropout layer: every sample would
    be the same prediction.
    """
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"predict_mc: samples must be an int >= 1, got {samples!r}")
    samples = int(samples)
    dropout = _dropout_layers(model)
    if not dropout:
        raise ValueError(f"predict_mc: model '{model.name}' has no dropout layer (Dropout, AlphaDropout or "
                         f"MCDropout), so its {samples} samples would all be the same prediction; add one, "
                         f"or use predict()")
    x = model._prepare_x(x, "predict_mc")
    batch_size = 32 if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"predict_mc: batch_size must be >= 1, got {batch_size}")
    out_shape = tuple(model.output_shape[1:])
    mean = np.empty((len(x),) + out_shape, np.float32)
    std = np.empty_like(mean)
    widest = max([int(np.prod(layer.output_shape)) for layer in model.layers] + [int(np.prod(x.shape[1:]))])
    shared = _shares_mask_across_batch(model)
    used = set()
    try:
        for layer in dropout:
            layer._mc_sampling = True
        _predict_groups(model, x, samples, batch_size, out_shape, widest, shared, mean, std, used)
    finally:
        for layer in dropout:
            layer._mc_sampling = False
        _release_buffers(model, used)
    return mean, std


def _predict_groups(model, x, samples, batch_size, out_shape, widest, shared, mean, std, used):
    for lo in range(0, len(x), batch_size):
        xb = x[lo:lo + batch_size]
        m = len(xb)
        group = 1 if shared else max(1, min(samples, _MAX_ROWS // m, _MAX_BYTES // (4 * m * widest)))
        # Moments of (output - first sample's output) in float64: the shift
        # keeps the variance free of cancellation (exactly 0 if nothing varies).
        shift = s1 = s2 = None
        for s0 in range(0, samples, group):
            g = min(group, samples - s0)
            if g > 1:
                used.add(g * m)
            # Tiled on the host, then copied to the model's device (if not the CPU).
            tiled = model._batch_buffer(("mc", g * m), (g * m,) + xb.shape[1:], "float32", host=True)
            tiled.reshape((g,) + xb.shape)[...] = xb
            out = model._forward(model._on_device(tiled, ("mc_device", g * m)), False)
            out = np.asarray(to_host(out), np.float64).reshape((g, m) + out_shape)
            if shift is None:
                shift = out[0].copy()
                s1, s2 = np.zeros_like(shift), np.zeros_like(shift)
            d = out - shift
            s1 += d.sum(axis=0)
            s2 += (d * d).sum(axis=0)
        mu = s1 / samples
        mean[lo:lo + m] = shift + mu
        std[lo:lo + m] = np.sqrt(np.maximum(s2 / samples - mu * mu, 0.0))
