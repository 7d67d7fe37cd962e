"""Regularization layers: Dropout, AlphaDropout, MCDropout.

Masks come from Philox streams (src/ops/dropout.h): each layer owns a stream,
and each training forward pass uses the next call counter of that stream, so a
seeded layer gives the same sequence of masks on any machine and thread count.
The forward also stores the keep mask as one bit per element (n / 8 bytes):
backward then streams dy once instead of running Philox a second time, which
measured about 3x faster on 10M floats.

Buffers: the model path (``forward``) writes into an output buffer kept per
batch size and returns it, so a steady-state training step allocates nothing;
the next forward overwrites it, which the model's executor expects. An eager
call (``layer(x, training=True)``) returns a fresh array, as every layer's
eager call does (a later call never changes an earlier result): the kernel
writes straight into that array, with no intermediate buffer and no copy, and
only the keep bits (and, at the first backward, the input gradient) are kept
per batch size.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import random as _random
from ..backend import empty, ops
from .base import Layer
from .core import _BatchBuffers, _io_buffers

__all__ = ["Dropout", "AlphaDropout", "MCDropout"]

# Layers given an explicit seed draw from this stream ("drop"), so their masks
# never reuse the draws of a seeded initializer (streams 1, 2, ...) of the same seed.
_SEEDED_STREAM = 0x64726F70 << 32


_MAX_RATE = 1.0 - 2.0 ** -17  # masks use 16-bit draws (src/ops/dropout.h)


def _check_rate(layer, rate):
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': rate must be a number in [0, 1), got {rate!r}")
    if float(np.float32(rate)) > _MAX_RATE:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': rate {rate!r} is too close to 1 (at most "
                         f"1 - 2^-17 = {_MAX_RATE:.7f}; every unit would be dropped)")
    return float(rate)


class _RandomLayer(Layer):
    """A layer drawing from its own Philox stream, one call counter per draw."""

    supports_device = True
    #: Set (on the dropout layers) only while Model.predict_mc samples: the
    #: layer then drops as in training although the model runs in inference
    #: mode (models/mc.py).
    _mc_sampling = False

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
            raise ValueError(f"{type(self).__name__} '{self.name}': seed must be an int in [0, 2^64) or None, "
                             f"got {seed!r}")
        self.seed = seed
        self._key_seed, self._stream = _random.next_stream() if seed is None else (seed, _SEEDED_STREAM)
        self._calls = 0
        self._call = None  # the key of the last random forward pass, None if it drew nothing
        # Set by the model only while it captures a CUDA graph: a device int32
        # counter holding the call word, read by the *_graph kernels when the
        # graph runs (a Python int would be baked into the graph).
        self._graph_call = None
        self._bufs = _BatchBuffers()

    def _next_call(self) -> int:
        call = self._calls & 0xFFFFFFFF
        self._calls += 1
        return call

    def _keyed(self, x, kernel, draws=True):
        """(kernel function, call argument) for a keyed Philox kernel on x's
        device: the eager kernel with the host call word, or, while the model
        captures a CUDA graph and this call draws, its ``*_graph`` twin with
        the device counter."""
        if self._graph_call is None or not draws:
            return getattr(ops(x), kernel), self._call
        return getattr(ops(x), kernel + "_graph"), self._graph_call

    def _buffers(self, x, keep_bits=True, io=True):
        """This batch size's buffers beside x: y and dx (``io``), plus a keep
        bitmask (one bit per element) for the dropout layers, each made the
        first time it is asked for."""
        b = self._bufs.get(x.shape[0], lambda _, like: {}, x)
        shape = (x.shape[0],) + self.input_shape
        if io and "y" not in b:
            b.update(_io_buffers(shape, x))
        if keep_bits and "mask" not in b:
            b["mask"] = empty(((int(np.prod(shape)) + 31) // 32,), "int32", like=x)
        return b

    def _dx(self, b, dy):
        """The input-gradient buffer of this batch (made at the first backward after an eager call)."""
        if "dx" not in b:
            b["dx"] = empty(dy.shape, like=dy)
        return b["dx"]

    def __call__(self, x, training=None):
        """Eager call on a NumPy array, returning a fresh array. On the CPU a
        layer with a ``_forward_into`` writes its output straight into that
        array (no copy of a kept buffer); elsewhere as Layer.__call__."""
        from ..models import engine

        forward_into = getattr(self, "_forward_into", None)
        if (forward_into is None or self._device != "cpu" or engine.is_symbolic(x)
                or engine.active_tape() is not None or isinstance(x, (list, tuple))):
            return super().__call__(x, training)
        training = bool(training)
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._build_for(x.shape[1:])
        self._check_input(x)
        out = np.empty_like(x)
        y = forward_into(x, training, out)
        if y is not out:  # inactive: the identity, returned as a copy like any eager call
            np.copyto(out, y)
        return out


class Dropout(_RandomLayer):
    """Inverted dropout (Srivastava et al., 2014): in training each unit is
    zeroed with probability ``rate`` and the kept ones are scaled by
    ``1 / (1 - rate)``, so the expected output equals the input; at inference
    the layer is the identity.

    Args:
        rate: fraction of units to drop, in [0, 1).
        noise_shape: shape of the mask, broadcast against the input (batch
            axis included, ``None`` entries take the input's extent), e.g.
            ``(None, 1, features)`` drops whole features for all time steps.
            Defaults to None (one draw per element).
        seed: an int for reproducible masks; None draws a stream from the
            global generator (``deepcore.set_random_seed``).
    """

    _per_call = ("_bufs", "_cur", "_call", "_mask", "_graph_call")

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _check_rate(self, rate)
        self.noise_shape = None if noise_shape is None else tuple(None if d is None else int(d) for d in noise_shape)
        self._mask = None

    def _active(self, training) -> bool:
        return (bool(training) or self._mc_sampling) and self.rate > 0.0

    def _device_blocker(self):
        if self.noise_shape is not None:
            return (f"{type(self).__name__} '{self.name}' with noise_shape={self.noise_shape} (its broadcast mask "
                    f"is applied with NumPy)")
        return super()._device_blocker()

    def _resolved_noise_shape(self, x):
        """The mask shape for x, or None when it is x's own shape."""
        if self.noise_shape is None:
            return None
        if len(self.noise_shape) != x.ndim:
            raise ValueError(f"{type(self).__name__} '{self.name}': noise_shape {self.noise_shape} must have "
                             f"{x.ndim} entries (batch axis included) for input of shape {tuple(x.shape)}")
        shape = tuple(x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
        if any(d != 1 and d != n for d, n in zip(shape, x.shape)):
            raise ValueError(f"{type(self).__name__} '{self.name}': noise_shape {self.noise_shape} does not "
                             f"broadcast against input of shape {tuple(x.shape)} (each entry 1, None or equal)")
        return None if shape == tuple(x.shape) else shape

    def forward(self, x, training=False):
        self._check_input(x)
        return self._forward_into(x, training, None)

    def _forward_into(self, x, training, out):
        """The forward pass into out (an eager call's fresh array), or into
        this batch size's kept output buffer when out is None (the model path).
        Returns x itself when inactive."""
        if not self._active(training):
            self._call = None
            return x
        b = self._buffers(x, io=out is None)
        y = b["y"] if out is None else out
        self._call = self._next_call()
        noise = self._resolved_noise_shape(x)
        if noise is None:
            self._mask = None
            forward, call = self._keyed(x, "dropout_forward")
            forward(x, y, self.rate, self._key_seed, self._stream, call, b["mask"])
        else:
            self._mask = np.empty(noise, np.float32)
            ops(self._mask).dropout_mask(self._mask, self.rate, self._key_seed, self._stream, self._call)
            np.multiply(x, self._mask, out=y)
        self._cur = b
        return y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        if self._call is None:
            return dy
        b = self._cur
        dx = self._dx(b, dy)
        if self._mask is not None:
            np.multiply(dy, self._mask, out=dx)
        else:
            # From the forward's keep bits: the call word is not read, so this
            # kernel also serves a CUDA graph (no mask regenerated).
            ops(dy).dropout_backward(dy, dx, self.rate, self._key_seed, self._stream, self._call, b["mask"])
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=None if self.noise_shape is None else list(self.noise_shape),
                   seed=self.seed)
        return cfg


class MCDropout(Dropout):
    """Monte Carlo dropout (Gal & Ghahramani, 2016): a Dropout that stays
    active at inference (``predict``, ``model(x)``, an eager call), so
    repeated predictions sample an approximate posterior. For the mean and
    spread of the predictions, ``Model.predict_mc(x, samples)`` works with
    this layer and with plain Dropout and AlphaDropout alike (it turns every
    dropout layer on while it samples). Same arguments as Dropout."""

    def _active(self, training) -> bool:
        return self.rate > 0.0


class AlphaDropout(_RandomLayer):
    """Alpha dropout (Klambauer et al., 2017) for self-normalizing (SELU)
    networks: dropped units are set to SELU's negative saturation
    ``alpha' = -1.7580993408473766`` and the result is mapped to
    ``a * x + b`` with ``a = ((1 - rate)(1 + rate alpha'^2))^(-1/2)`` and
    ``b = -a alpha' rate``, which keeps a zero-mean, unit-variance input at
    zero mean and unit variance. Identity at inference. Keras's formula.

    Args:
        rate: fraction of units to drop, in [0, 1).
        seed: an int for reproducible masks, or None (global generator).
    """

    _per_call = ("_bufs", "_cur", "_call", "_graph_call")

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _check_rate(self, rate)

    def forward(self, x, training=False):
        self._check_input(x)
        return self._forward_into(x, training, None)

    def _forward_into(self, x, training, out):
        """As Dropout._forward_into."""
        if not ((training or self._mc_sampling) and self.rate > 0.0):
            self._call = None
            return x
        b = self._buffers(x, io=out is None)
        y = b["y"] if out is None else out
        self._call = self._next_call()
        forward, call = self._keyed(x, "alpha_dropout_forward")
        forward(x, y, self.rate, self._key_seed, self._stream, call, b["mask"])
        self._cur = b
        return y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        if self._call is None:
            return dy
        b = self._cur
        dx = self._dx(b, dy)
        # From the forward's keep bits (the call word is not read; also a CUDA graph's kernel).
        ops(dy).alpha_dropout_backward(dy, dx, self.rate, self._key_seed, self._stream, self._call, b["mask"])
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, seed=self.seed)
        return cfg
