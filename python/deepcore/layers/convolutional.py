"""Conv2D and ZeroPadding2D on NHWC (``channels_last``) image tensors.

Conv2D is im2col + GEMM with Dense's fused epilogue (src/ops/conv.h): the
patch matrix times the kernel in Keras's HWIO layout is the NHWC output."""
from __future__ import annotations

import numbers

import numpy as np

from .. import activations as _activations
from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._native import core as _core
from ..backend import empty, ops
from .base import Layer
from .core import _BatchBuffers, _kernel_bias_config

__all__ = ["Conv2D", "ZeroPadding2D"]


def _pair(value, who, arg):
    """Keras's standardize_tuple: an int n -> (n, n); a sequence of two ints
    as is. Non-positive values are a ValueError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(value)
        except TypeError:
            raise TypeError(f"{who}: {arg} must be an int or a tuple of 2 ints, got {value!r}") from None
        if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
            raise ValueError(f"{who}: {arg} must be an int or a tuple of 2 ints, got {value!r}")
        pair = (int(pair[0]), int(pair[1]))
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f"{who}: {arg} must be positive, got {value!r}")
    return pair


def _padding(value, who):
    padding = str(value).lower() if isinstance(value, str) else value
    if padding not in ("valid", "same"):
        raise ValueError(f"{who}: padding must be 'valid' or 'same', got {value!r}")
    return padding


def _data_format(value, who):
    if value not in (None, "channels_last"):
        raise ValueError(f"{who}: only data_format='channels_last' (NHWC) is supported, got {value!r}")
    return "channels_last"


def _check_image(layer, input_shape):
    """(H, W, C) of a per-sample input shape, or a ValueError naming the layer."""
    if len(input_shape) != 3:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' expects 4-D input (batch, height, width, channels), "
                         f"got shape {(None,) + tuple(input_shape)}")
    if any(d <= 0 for d in input_shape):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': every input dimension must be positive, got "
                         f"{(None,) + tuple(input_shape)}")
    return tuple(input_shape)


def window_output_shape(layer, input_shape, kernel, strides, dilation, padding):
    """(OH, OW) of a 2-D window over an (H, W, C) input (the kernels' rule,
    src/ops/conv.h window_axis), or a ValueError when a "valid" window does
    not fit."""
    h, w, _ = _check_image(layer, input_shape)
    oh, ow, _, _ = _core.conv2d_output_shape(h, w, kernel, strides, dilation, padding)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': the window {kernel} (dilation {dilation}) is larger "
                         f"than the {h}x{w} input with padding='valid'; use padding='same' or a smaller window")
    return oh, ow


class Conv2D(Layer):
    """2-D convolution: ``y = activation(conv(x, kernel) + bias)``.

    x is (batch, height, width, channels) and the kernel
    (kh, kw, in_channels, filters), as in Keras. Defaults as in Keras:
    strides=(1, 1), padding="valid", dilation_rate=(1, 1), activation=None,
    use_bias=True, kernel_initializer="glorot_uniform",
    bias_initializer="zeros". padding="same" pads as TensorFlow does (the
    output has ceil(size / stride) pixels; an odd total padding puts the
    extra pixel at the bottom/right). As in Keras, strides > 1 together with
    dilation_rate > 1 is refused. The bias add and the activation run fused
    in the GEMM's output pass; backward fuses the activation derivative and
    the bias gradient, as Dense does.
    """

    supports_device = True
    needs_gemm = True
    _per_call = ("_bufs", "_x", "_cur")

    _IN_PLACE = frozenset({"linear", "relu", "elu", "selu", "tanh"})

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None, dilation_rate=(1, 1),
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = f"Conv2D '{self.name}'"
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"{who}: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, who, "kernel_size")
        self.strides = _pair(strides, who, "strides")
        self.padding = _padding(padding, who)
        self.data_format = _data_format(data_format, who)
        self.dilation_rate = _pair(dilation_rate, who, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{who}: strides > 1 is not supported in conjunction with dilation_rate > 1 (as in "
                             f"Keras); got strides={self.strides} and dilation_rate={self.dilation_rate}")
        if groups != 1:
            raise ValueError(f"{who}: only groups=1 is supported, got {groups!r}")
        if activity_regularizer is not None:
            raise ValueError(f"{who}: activity_regularizer is not supported")
        self.groups = 1
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self._bufs = _BatchBuffers()
        self._x = self._cur = None

    def build(self, input_shape):
        h, w, c = _check_image(self, input_shape)
        window_output_shape(self, input_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding)
        kh, kw = self.kernel_size
        self.kernel = self.add_weight("kernel", (kh, kw, c, self.filters), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer,
                                     regularizer=self.bias_regularizer, constraint=self.bias_constraint)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        oh, ow = window_output_shape(self, input_shape, self.kernel_size, self.strides, self.dilation_rate,
                                     self.padding)
        return (oh, ow, self.filters)

    def _make_buffers(self, batch, like):
        oh, ow, f = self.output_shape
        kh, kw = self.kernel_size
        col_shape = (batch * oh * ow, kh * kw * self.input_shape[2])
        out_shape = (batch, oh, ow, f)
        z = empty(out_shape, like=like)
        y = z if self.activation.name in self._IN_PLACE else empty(out_shape, like=like)
        return {"col": empty(col_shape, like=like), "dcol": empty(col_shape, like=like), "z": z, "y": y,
                "dz": empty(out_shape, like=like), "dx": empty((batch,) + self.input_shape, like=like)}

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        a = self.activation
        ops(x).conv2d_forward(x, self.kernel.value, self.bias.value if self.bias is not None else None, b["col"],
                              b["z"], b["y"], self.strides, self.dilation_rate, self.padding, a.code, a.alpha,
                              a.beta)
        self._x, self._cur = x, b
        return b["y"]

    def backward(self, dy, need_dx=True):
        b, a = self._cur, self.activation
        ops(dy).conv2d_backward(self._x, self.kernel.value, b["col"], b["z"], b["y"], dy, b["dz"],
                                b["dcol"] if need_dx else None, b["dx"] if need_dx else None, self.kernel.grad,
                                self.bias.grad if self.bias is not None else None, self.strides,
                                self.dilation_rate, self.padding, a.code, a.alpha, a.beta, False, False)
        return b["dx"] if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                   padding=self.padding, data_format=self.data_format, dilation_rate=list(self.dilation_rate),
                   groups=self.groups, **_kernel_bias_config(self))
        return cfg


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around each image.

    ``padding`` as in Keras (default (1, 1)): an int (the same on all four
    sides), a tuple of 2 ints (symmetric height and width padding), or
    ((top, bottom), (left, right))."""

    supports_device = True
    _per_call = ("_bufs", "_cur")

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        who = f"ZeroPadding2D '{self.name}'"
        self.data_format = _data_format(data_format, who)
        self.padding = self._normalize(padding, who)
        self._bufs = _BatchBuffers()
        self._cur = None

    @staticmethod
    def _normalize(padding, who):
        def nonneg_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0

        if nonneg_int(padding):
            p = int(padding)
            return ((p, p), (p, p))
        try:
            parts = tuple(padding)
        except TypeError:
            parts = ()
        if len(parts) == 2 and all(nonneg_int(v) for v in parts):
            return ((int(parts[0]),) * 2, (int(parts[1]),) * 2)
        if len(parts) == 2 and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(nonneg_int(v) for v in p)
                                   for p in parts):
            return tuple((int(p[0]), int(p[1])) for p in parts)
        raise ValueError(f"{who}: padding must be a non-negative int, a tuple of 2 non-negative ints, or "
                         f"((top, bottom), (left, right)); got {padding!r}")

    def compute_output_shape(self, input_shape):
        h, w, c = _check_image(self, input_shape)
        (t, bt), (l, r) = self.padding
        return (h + t + bt, w + l + r, c)

    def build(self, input_shape):
        _check_image(self, input_shape)

    def _make_buffers(self, batch, like):
        return {"y": empty((batch,) + self.output_shape, like=like),
                "dx": empty((batch,) + self.input_shape, like=like)}

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        ops(x).pad2d(x, b["y"], self.padding)
        self._cur = b
        return b["y"]

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        b = self._cur
        ops(dy).crop2d(dy, b["dx"], self.padding)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(padding=[list(p) for p in self.padding], data_format=self.data_format)
        return cfg
