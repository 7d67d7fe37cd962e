"""MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D and
GlobalMaxPooling2D on NHWC (``channels_last``) image tensors.

One kernel pair serves all four (src/ops/conv.h pool2d_forward/backward): a
global pooling is a pooling whose window is the whole image. Max pooling
keeps each output's winning pixel index for its backward."""
from __future__ import annotations

from ..backend import empty, ops, reshape
from .base import Layer
from .convolutional import _check_image, _data_format, _pair, _padding, window_output_shape
from .core import _BatchBuffers

__all__ = ["MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"]


class _Pooling2D(Layer):
    """A pooling over (pool_size) windows moved by strides; subclasses fix the
    mode ("max" or "avg") and, for global pooling, the window."""

    supports_device = True
    _per_call = ("_bufs", "_cur")
    _mode = "max"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        who = f"{type(self).__name__} '{self.name}'"
        self.pool_size = _pair(pool_size, who, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, who, "strides")
        self.padding = _padding(padding, who)
        self.data_format = _data_format(data_format, who)
        self._bufs = _BatchBuffers()
        self._cur = None

    def _window(self):
        return self.pool_size, self.strides, self.padding

    def _pooled_shape(self, input_shape):
        pool, strides, padding = self._window()
        oh, ow = window_output_shape(self, input_shape, pool, strides, (1, 1), padding)
        return (oh, ow, input_shape[2])

    def build(self, input_shape):
        self._pooled_shape(input_shape)

    def compute_output_shape(self, input_shape):
        return self._pooled_shape(input_shape)

    def _make_buffers(self, batch, like):
        pooled = (batch,) + self._pooled_shape(self.input_shape)
        return {"y": empty(pooled, like=like), "dx": empty((batch,) + self.input_shape, like=like),
                "argmax": empty(pooled, "int32", like=like) if self._mode == "max" else None}

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        pool, strides, padding = self._window()
        ops(x).pool2d_forward(x, b["y"], b["argmax"], pool, strides, padding, self._mode)
        self._cur = b
        return self._output_view(b["y"])

    def _output_view(self, y):
        return y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        b = self._cur
        pool, strides, padding = self._window()
        ops(dy).pool2d_backward(reshape(dy, b["y"].shape), b["argmax"], b["dx"], pool, strides, padding, self._mode)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding,
                   data_format=self.data_format)
        return cfg


class MaxPooling2D(_Pooling2D):
    """Max over pool_size windows. Defaults as in Keras: pool_size=(2, 2),
    strides=None (= pool_size), padding="valid"."""

    _mode = "max"


class AveragePooling2D(_Pooling2D):
    """Mean over pool_size windows. Defaults as in Keras: pool_size=(2, 2),
    strides=None (= pool_size), padding="valid". With padding="same" the
    padded pixels are not counted (TensorFlow's rule, which Keras follows)."""

    _mode = "avg"


class _GlobalPooling2D(_Pooling2D):
    """Pooling over the whole image: (batch, H, W, C) -> (batch, C), or
    (batch, 1, 1, C) with keepdims=True (Keras's defaults)."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(pool_size=1, strides=1, padding="valid", data_format=data_format, **kwargs)
        self.keepdims = bool(keepdims)

    def _window(self):
        h, w, _ = self.input_shape
        return (h, w), (1, 1), "valid"

    def _pooled_shape(self, input_shape):
        _check_image(self, input_shape)
        return (1, 1, input_shape[2])

    def compute_output_shape(self, input_shape):
        c = _check_image(self, input_shape)[2]
        return (1, 1, c) if self.keepdims else (c,)

    def _output_view(self, y):
        return y if self.keepdims else reshape(y, (y.shape[0], y.shape[3]))

    def get_config(self):
        cfg = Layer.get_config(self)
        cfg.update(data_format=self.data_format, keepdims=self.keepdims)
        return cfg


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over each image's pixels, per channel."""

    _mode = "avg"


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over each image's pixels, per channel."""

    _mode = "max"
