"""Normalization layers: BatchNormalization and Normalization (adapt)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..backend import assign, contiguous, empty, ops, to_host
from .base import Layer
from .core import _BatchBuffers, _io_buffers

__all__ = ["BatchNormalization", "Normalization"]

# Keras's backend.epsilon(): Normalization divides by max(sqrt(variance), this).
_BACKEND_EPSILON = 1e-7


def _kept_axes(axis, input_shape, who):
    """The axes (of the batched rank) that keep their own statistics, sorted.
    ``axis`` is an int, a list/tuple of ints, or None (no axis kept)."""
    rank = len(input_shape) + 1
    if axis is None:
        return []
    axes = [axis] if isinstance(axis, numbers.Integral) else list(axis)
    kept = []
    for a in axes:
        if not isinstance(a, numbers.Integral) or isinstance(a, bool):
            raise TypeError(f"{who}: axis must be an int or a list of ints, got {axis!r}")
        k = int(a) + rank if a < 0 else int(a)
        if not 0 <= k < rank:
            raise ValueError(f"{who}: axis {a} does not exist for input of rank {rank} "
                             f"(shape {(None,) + tuple(input_shape)})")
        if k == 0:
            raise ValueError(f"{who}: axis {a} is the batch axis; statistics are taken over the batch")
        if k in kept:
            raise ValueError(f"{who}: axis {axis!r} names axis {k} twice")
        kept.append(k)
    return sorted(kept)


def _check_axis_arg(axis, who, allow_none):
    if axis is None and allow_none:
        return None
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axis):
        return [int(a) for a in axis]
    raise TypeError(f"{who}: axis must be an int or a non-empty list of ints"
                    f"{' or None' if allow_none else ''}, got {axis!r}")


class _FeatureView:
    """Views a batch of shape (n,) + input_shape as the kernels' (A, C, B):
    the kept axes' C features in the middle, reduced over A and B. Kept axes
    that are adjacent need no copy (a reshape); otherwise the batch is
    transposed so that they come last (B = 1)."""

    def __init__(self, input_shape, kept):
        self.input_shape = tuple(input_shape)
        self.param_shape = tuple(input_shape[a - 1] for a in kept)
        self.C = int(math.prod(self.param_shape))
        self.perm = None
        if not kept:                                   # one mean for everything
            self.a_per_sample, self.B = 1, int(math.prod(input_shape))
        elif kept == list(range(kept[0], kept[-1] + 1)):
            self.a_per_sample = int(math.prod(input_shape[:kept[0] - 1]))
            self.B = int(math.prod(input_shape[kept[-1]:]))
        else:
            rest = [a for a in range(1, len(input_shape) + 1) if a not in kept]
            self.perm = (0, *rest, *kept)
            self.inverse = tuple(int(i) for i in np.argsort(self.perm))
            self.a_per_sample = int(math.prod(input_shape[a - 1] for a in rest))
            self.B = 1

    @property
    def transposed(self):
        return self.perm is not None

    def shape3(self, n):
        return (n * self.a_per_sample, self.C, self.B)

    def _tshape(self, n):
        return (n,) + tuple(self.input_shape[a - 1] for a in self.perm[1:])

    def to3(self, x, buf=None):
        """x as (A, C, B): a view, or (transposed layout, NumPy only) a copy into buf."""
        n = x.shape[0]
        if self.perm is None:
            return contiguous(x).reshape(*self.shape3(n))
        np.copyto(buf.reshape(self._tshape(n)), x.transpose(self.perm))
        return buf.reshape(self.shape3(n))

    def buffers(self, batch, like):
        """Per-batch-size buffers beside like: output y and gradient dx, the
        per-feature (C,) scratch vectors "mean", "inv_std" (batch statistics)
        and "scale", the zero vector "zero" (never written), plus the transposed copies (xt, yt, dyt, dxt) when the
        layout needs them."""
        shape = (batch,) + self.input_shape
        b = _io_buffers(shape, like)
        b.update({k: empty((self.C,), like=like) for k in ("mean", "inv_std", "scale", "zero")})
        if self.transposed:
            flat = (batch * self.a_per_sample * self.C,)
            b.update(xt=empty(flat), yt=empty(flat), dyt=empty(flat), dxt=empty(flat))
        return b

    def from3(self, t3, out):
        """The (A, C, B) result t3 as out, of shape (n,) + input_shape: t3 is
        already a view of out unless the layout is transposed."""
        if self.perm is not None:
            np.copyto(out, t3.reshape(self._tshape(out.shape[0])).transpose(self.inverse))
        return out


def _flat(var):
    """A Variable's value as a flat (C,) view (values are contiguous)."""
    return var.value.reshape(var.value.size)


def _flat_grad(var):
    """A Variable's gradient as a flat (C,) view."""
    return var.grad.reshape(var.grad.size)


def _transposed_blocker(layer):
    view = getattr(layer, "_view", None)
    if view is not None and view.transposed:
        return (f"{type(layer).__name__} '{layer.name}' with axis={layer.axis} on input "
                f"{(None,) + tuple(layer.input_shape)} (kept axes that are not adjacent are transposed with NumPy)")
    return Layer._device_blocker(layer)


class BatchNormalization(Layer):
    """Batch normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167).

    Training (``training=True`` and the layer trainable): normalize each
    feature with the batch mean and the biased batch variance,
    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``, and update
    ``moving = moving * momentum + batch * (1 - momentum)`` for the mean and the
    (biased) variance. Inference, or a frozen layer (``trainable=False``, as in
    Keras for fine-tuning): the moving statistics, one fused scale-shift pass.

    Defaults as in Keras: axis=-1, momentum=0.99, epsilon=1e-3, center=True
    (beta), scale=True (gamma), beta/moving_mean initialized to zeros,
    gamma/moving_variance to ones. ``axis`` may be a list: on (N, H, W, C),
    ``axis=[1, 2]`` keeps (H, W) statistics and reduces over N and C.
    gamma and beta are trainable; moving_mean and moving_variance are not.
    """

    _per_call = ("_bufs", "_x3", "_cur", "_batch_stats")

    supports_device = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = f"BatchNormalization '{self.name}'"
        self.axis = _check_axis_arg(axis, who, allow_none=False)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{who}: momentum must be a number in [0, 1], got {momentum!r}")
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon)
                or epsilon <= 0 or np.float32(epsilon) <= 0):
            raise ValueError(f"{who}: epsilon must be a positive number, got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.beta_constraint = _constraints.get(beta_constraint)
        self.gamma_constraint = _constraints.get(gamma_constraint)
        self.gamma = self.beta = None
        self._bufs = _BatchBuffers()
        self._cur = None

    def build(self, input_shape):
        who = f"BatchNormalization '{self.name}'"
        self._view = _FeatureView(input_shape, _kept_axes(self.axis, input_shape, who))
        shape = self._view.param_shape
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer,
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, self.moving_variance_initializer,
                                               trainable=False)
    def _device_blocker(self):
        return _transposed_blocker(self)

    def forward(self, x, training=False):
        self._check_input(x)
        n, view = x.shape[0], self._view
        b = self._bufs.get(n, view.buffers, x)
        x3 = view.to3(x, b.get("xt"))
        y3 = (b["yt"] if view.transposed else b["y"]).reshape(*x3.shape)
        gamma = _flat(self.gamma) if self.gamma is not None else None
        beta = _flat(self.beta) if self.beta is not None else None
        self._batch_stats = bool(training) and self.trainable
        if self._batch_stats:
            if x3.shape[0] * x3.shape[2] < 2:
                raise ValueError(f"BatchNormalization '{self.name}': training needs more than one value per "
                                 f"feature to compute batch statistics, got a batch of {n} sample(s) of shape "
                                 f"{(None,) + self.input_shape}; use batch_size >= 2 or training=False (in fit, "
                                 f"the last batch has one sample when len(x) % batch_size == 1: pick a batch_size "
                                 f"that leaves a larger last batch)")
            # b["mean"], b["inv_std"]: this batch's statistics, for backward.
            ops(x3).batchnorm_forward_train(x3, gamma, beta, y3, b["mean"], b["inv_std"],
                                          _flat(self.moving_mean), _flat(self.moving_variance),
                                          self.epsilon, self.momentum)
        else:
            ops(x3).batchnorm_forward_inference(x3, gamma, beta, _flat(self.moving_mean),
                                              _flat(self.moving_variance), y3, self.epsilon)
        self._x3, self._cur = x3, b
        return view.from3(y3, b["y"])

    def backward(self, dy, need_dx=True):
        b, view = self._cur, self._view
        dy3 = view.to3(dy, b.get("dyt"))
        dx3 = (b["dxt"] if view.transposed else b["dx"]).reshape(*dy3.shape) if need_dx else None
        gamma = _flat(self.gamma) if self.gamma is not None else None
        train_g = self.gamma is not None and self.gamma.trainable and self.trainable
        train_b = self.beta is not None and self.beta.trainable and self.trainable
        if self._batch_stats:
            ops(dy3).batchnorm_backward(self._x3, dy3, gamma, b["mean"], b["inv_std"], dx3,
                                        _flat_grad(self.gamma) if train_g else None,
                                        _flat_grad(self.beta) if train_b else None)
        else:
            # Moving statistics are constants: y = x * s + const with
            # s = gamma / sqrt(moving_variance + epsilon), so dx = dy * s: the
            # inference kernel applied to dy with a zero mean and no beta (on
            # the tensors' device, no host round trip: a CUDA graph captures it).
            # The gamma/beta gradients of this rare case (a trainable layer's
            # backward after an inference forward) are computed on the host.
            if need_dx:
                ops(dy3).batchnorm_forward_inference(dy3, gamma, None, b["zero"], _flat(self.moving_variance), dx3,
                                                     self.epsilon)
            if train_g or train_b:
                dy64 = to_host(dy3).astype(np.float64)
                if train_b:
                    assign(_flat_grad(self.beta), dy64.sum(axis=(0, 2)).astype(np.float32))
                if train_g:
                    mv = to_host(_flat(self.moving_variance))[:, None].astype(np.float64)
                    xhat = (to_host(self._x3) - to_host(_flat(self.moving_mean))[:, None]) / np.sqrt(mv + self.epsilon)
                    assign(_flat_grad(self.gamma), (dy64 * xhat).sum(axis=(0, 2)).astype(np.float32))
        return view.from3(dx3, b["dx"]) if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                   scale=self.scale,
                   beta_initializer=_initializers.serialize(self.beta_initializer),
                   gamma_initializer=_initializers.serialize(self.gamma_initializer),
                   moving_mean_initializer=_initializers.serialize(self.moving_mean_initializer),
                   moving_variance_initializer=_initializers.serialize(self.moving_variance_initializer),
                   beta_regularizer=_regularizers.serialize(self.beta_regularizer),
                   gamma_regularizer=_regularizers.serialize(self.gamma_regularizer),
                   beta_constraint=_constraints.serialize(self.beta_constraint),
                   gamma_constraint=_constraints.serialize(self.gamma_constraint))
        return cfg


class Normalization(Layer):
    """Feature-wise standardization with statistics from data, as Keras's
    ``Normalization``: ``y = (x - mean) / max(sqrt(variance), 1e-7)`` (1e-7 is
    Keras's backend epsilon), or with ``invert=True`` the inverse
    ``x * max(sqrt(variance), 1e-7) + mean``.

    ``axis`` (default -1) names the axes that keep their own mean and variance
    (an int, a list, or None for one scalar mean and variance). Give ``mean``
    and ``variance`` (broadcast to that shape) or call ``adapt(data)``, which
    computes the per-feature mean and biased variance of the data in float64,
    chunk by chunk. Not trainable (mean and variance are non-trainable
    weights, saved with the model). Backward passes gradients through,
    ``dx = dy / std``, so the layer may sit first in a trained model.
    """

    _per_call = ("_bufs", "_cur")

    supports_device = True

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        who = f"Normalization '{self.name}'"
        self.axis = _check_axis_arg(axis, who, allow_none=True)
        if (mean is None) != (variance is None):
            raise ValueError(f"{who}: give both mean and variance, or neither (and call adapt())")
        self._given = None
        if mean is not None:
            m, v = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
                raise ValueError(f"{who}: mean and variance must be finite")
            if np.any(v < 0):
                raise ValueError(f"{who}: variance must be >= 0, got min {v.min()}")
            self._given = (m, v)
        self.invert = bool(invert)
        self._bufs = _BatchBuffers()
        self._cur = None

    @property
    def is_adapted(self):
        return getattr(self, "_adapted", False) or self._given is not None

    def build(self, input_shape):
        who = f"Normalization '{self.name}'"
        self._view = _FeatureView(input_shape, _kept_axes(self.axis, input_shape, who))
        shape = self._view.param_shape
        self.mean = self.add_weight("mean", shape, _initializers.Zeros(), trainable=False)
        self.variance = self.add_weight("variance", shape, _initializers.Ones(), trainable=False)
        if self._given is not None:
            for var, val, name in ((self.mean, self._given[0], "mean"), (self.variance, self._given[1], "variance")):
                try:
                    var.assign(np.broadcast_to(val, shape))
                except ValueError:
                    raise ValueError(f"{who}: {name} of shape {val.shape} does not broadcast to the "
                                     f"per-feature shape {shape} of input {(None,) + tuple(input_shape)}") from None

    def _device_blocker(self):
        return _transposed_blocker(self)

    def adapt(self, data, batch_size=4096):
        """Set mean and variance to the per-feature mean and (biased) variance
        of ``data`` (samples along the first axis), accumulated in float64 over
        chunks of ``batch_size`` samples (Chan et al.'s pairwise update)."""
        who = f"Normalization '{self.name}'"
        if self._given is not None:
            raise ValueError(f"{who}: was created with mean and variance; it cannot be adapted")
        data = np.asarray(data)
        if data.dtype.kind not in "fiub":
            raise TypeError(f"{who}.adapt: data must be numeric, got dtype {data.dtype}")
        if data.ndim < 1 or data.shape[0] == 0:
            raise ValueError(f"{who}.adapt: data must be a non-empty array of samples, got shape {data.shape}")
        if data.ndim == 1:
            data = data[:, None]
        if not self.built:
            self._build_for(data.shape[1:])
        elif data.shape[1:] != self.input_shape:
            raise ValueError(f"{who}.adapt: layer was built for input shape {(None,) + self.input_shape}, "
                             f"got data of shape {data.shape}")
        view, count = self._view, 0
        mean = np.zeros(view.C)
        m2 = np.zeros(view.C)
        if view.a_per_sample * view.B == 0:
            raise ValueError(f"{who}.adapt: data of shape {data.shape} has no values to average over for each "
                             f"feature (a reduced axis has size 0)")
        bs = max(1, int(batch_size))
        for lo in range(0, data.shape[0], bs):
            chunk = np.asarray(data[lo:lo + bs], np.float64)
            if not np.all(np.isfinite(chunk)):
                raise ValueError(f"{who}.adapt: data contains NaN or infinite values")
            if view.transposed:
                chunk = chunk.transpose(view.perm)
            c3 = np.ascontiguousarray(chunk).reshape(chunk.shape[0] * view.a_per_sample, view.C, view.B)
            k = c3.shape[0] * c3.shape[2]
            cm = c3.mean(axis=(0, 2))
            cm2 = ((c3 - cm[:, None]) ** 2).sum(axis=(0, 2))
            delta, total = cm - mean, count + k
            mean += delta * (k / total)
            m2 += cm2 + delta ** 2 * (count * k / total)
            count = total
        self.mean.assign(mean.reshape(view.param_shape).astype(np.float32))
        self.variance.assign((m2 / count).reshape(view.param_shape).astype(np.float32))
        self._adapted = True

    def _scale(self, b):
        """b["scale"]: max(sqrt(variance), 1e-7) (invert) or its reciprocal,
        float32 (C,). Computed on the host when the variance was assigned
        (adapt, set_weights, load_weights) or moved since b["scale"] was last
        set, so a steady-state step reads nothing back from a GPU (and a CUDA
        graph can capture the layer)."""
        key = (self.variance.version, self.variance.value)
        if b.get("scale_of") is None or b["scale_of"][0] != key[0] or b["scale_of"][1] is not key[1]:
            std = np.maximum(np.sqrt(to_host(_flat(self.variance)).astype(np.float64)), _BACKEND_EPSILON)
            assign(b["scale"], (std if self.invert else 1.0 / std).astype(np.float32))
            b["scale_of"] = key
        return b["scale"]

    def _graph_baked_state(self):
        # The scale buffer is recomputed on the host when the variance is
        # assigned: a captured step would keep reading the old one.
        return self.variance.version

    def forward(self, x, training=False):
        self._check_input(x)
        view = self._view
        b = self._bufs.get(x.shape[0], view.buffers, x)
        x3 = view.to3(x, b.get("xt"))
        y3 = (b["yt"] if view.transposed else b["y"]).reshape(*x3.shape)
        if self.invert:   # y = x * std + mean
            ops(x3).channel_affine(x3, None, self._scale(b), _flat(self.mean), y3)
        else:             # y = (x - mean) / std
            ops(x3).channel_affine(x3, _flat(self.mean), self._scale(b), None, y3)
        self._cur = b
        return view.from3(y3, b["y"])

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        b, view = self._cur, self._view
        dy3 = view.to3(dy, b.get("dyt"))
        dx3 = (b["dxt"] if view.transposed else b["dx"]).reshape(*dy3.shape)
        ops(dy3).channel_affine(dy3, None, self._scale(b), None, dx3)  # dx = dy / std (dy * std if inverted)
        return view.from3(dx3, b["dx"])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, invert=self.invert)
        if self._given is not None:
            cfg.update(mean=self._given[0].tolist(), variance=self._given[1].tolist())
        return cfg
