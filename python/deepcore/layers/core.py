"""Input, Dense, Flatten and Activation."""
from __future__ import annotations

import math

import numpy as np

from .. import activations as _activations
from .. import constraints as _constraints
from .. import regularizers as _regularizers
from .. import initializers as _initializers
from ..backend import empty, ops, reshape
from .base import Layer

__all__ = ["Input", "InputLayer", "Dense", "Flatten", "Activation"]


class InputLayer(Layer):
    """Declares the shape of one sample (batch axis excluded)."""

    _per_call = ()

    supports_device = True

    def __init__(self, shape=None, batch_size=None, name=None, input_shape=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input: a shape is required, e.g. Input(shape=[28, 28])")
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise ValueError(f"Input: every dimension must be positive, got {shape}")
        super().__init__(name=name, input_shape=shape, **kwargs)
        self.batch_size = batch_size
        self._build_for(shape)

    def forward(self, x, training=False):
        return x

    def backward(self, dy, need_dx=True):
        return dy

    def get_config(self):
        return {"name": self.name, "shape": list(self.input_shape)}


def Input(shape=None, batch_size=None, name=None, **kwargs):
    """Keras's ``Input(shape)``: a symbolic tensor (a KerasTensor) of shape
    (None,) + shape, the start of a functional model
    (``dc.Model(inputs, outputs)``) or the first element of a Sequential."""
    from ..models.engine import KerasTensor, Node

    layer = InputLayer(shape=shape, batch_size=batch_size, name=name, **kwargs)
    node = Node(layer, [], False)
    out = KerasTensor(layer.input_shape, node, 0, name=layer.name)
    node.outputs.append(out)
    layer._inbound_nodes.append(node)
    return out


def _io_buffers(shape, like):
    """A layer's output "y" and input gradient "dx" of this shape, beside like."""
    return {"y": empty(shape, like=like), "dx": empty(shape, like=like)}


class _BatchBuffers:
    """Output/gradient buffers of one layer, allocated once per batch size so
    that a steady-state training step allocates nothing."""

    def __init__(self):
        self._by_batch = {}

    def get(self, batch, make, like):
        """The buffers for this batch size, made by make(batch, like) (on
        like's device) the first time."""
        bufs = self._by_batch.get(batch)
        if bufs is None:
            bufs = self._by_batch[batch] = make(batch, like)
        return bufs

    def clear(self) -> None:
        """Drop every buffer (the layer moved to another device)."""
        self._by_batch.clear()

    def release(self, batches) -> None:
        """Drop the buffers of these batch sizes (one-off sizes such as MC
        dropout's tiled batches)."""
        for batch in batches:
            self._by_batch.pop(batch, None)


def _kernel_bias_config(layer):
    """The config entries of a layer with a kernel and a bias (Dense, Conv2D)."""
    return dict(activation=layer.activation.name, use_bias=layer.use_bias,
                kernel_initializer=_initializers.serialize(layer.kernel_initializer),
                bias_initializer=_initializers.serialize(layer.bias_initializer),
                kernel_regularizer=_regularizers.serialize(layer.kernel_regularizer),
                bias_regularizer=_regularizers.serialize(layer.bias_regularizer),
                kernel_constraint=_constraints.serialize(layer.kernel_constraint),
                bias_constraint=_constraints.serialize(layer.bias_constraint))


class Dense(Layer):
    """``y = activation(x W + b)`` with W of shape (input_dim, units).

    Defaults as in Keras: activation=None (linear), use_bias=True,
    kernel_initializer="glorot_uniform", bias_initializer="zeros". The bias
    add and the activation run fused after the GEMM; backward fuses the
    activation derivative and the bias gradient.
    """

    _per_call = ("_bufs", "_x", "_z", "_y", "_cur")

    supports_device = True
    needs_gemm = True

    # Activations whose backward needs only the output (or its sign), so the
    # output may overwrite the pre-activation buffer.
    _IN_PLACE = frozenset({"linear", "relu", "elu", "selu", "tanh"})

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense '{self.name}': units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self._bufs = _BatchBuffers()
        self._x = self._z = self._y = None

    def build(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Dense '{self.name}' expects input of shape (batch, ..., features), got shape "
                             f"{(None,) + tuple(input_shape)}")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = (self.add_weight("bias", (self.units,), self.bias_initializer,
                                     regularizer=self.bias_regularizer, constraint=self.bias_constraint)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def _make_buffers(self, rows, like):
        z = empty((rows, self.units), like=like)
        y = z if self.activation.name in self._IN_PLACE else empty((rows, self.units), like=like)
        return {"z": z, "y": y, "dz": empty((rows, self.units), like=like),
                "dx": empty((rows, self.input_shape[-1]), like=like)}

    def forward(self, x, training=False):
        # On (batch, ..., features): applied to the last axis, as a GEMM over
        # batch x ... rows (views in and out, no copy).
        self._check_input(x)
        nd = len(self.input_shape) > 1
        if nd:
            x = reshape(x, (x.shape[0] * math.prod(self.input_shape[:-1]), self.input_shape[-1]))
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        a = self.activation
        ops(x).dense_forward(x, self.kernel.value, self.bias.value if self.bias is not None else None,
                            b["z"], b["y"], a.code, a.alpha, a.beta)
        self._x, self._z, self._y, self._cur = x, b["z"], b["y"], b
        if nd:
            return reshape(b["y"], (x.shape[0] // math.prod(self.input_shape[:-1]),) + self.output_shape)
        return b["y"]

    @property
    def logits(self):
        """The pre-activation output of the last forward pass (for fused losses)."""
        return self._z

    def backward(self, dy, need_dx=True, dy_is_dz=False):
        b, a = self._cur, self.activation
        nd = len(self.input_shape) > 1
        if nd:
            dy = reshape(dy, (self._x.shape[0], self.units))
        ops(dy).dense_backward(self._x, self.kernel.value, self._z, self._y, dy, b["dz"],
                             b["dx"] if need_dx else None, self.kernel.grad,
                             self.bias.grad if self.bias is not None else None,
                             a.code, a.alpha, a.beta, dy_is_dz, False)
        if not need_dx:
            return None
        if nd:
            return reshape(b["dx"], (self._x.shape[0] // math.prod(self.input_shape[:-1]),) + self.input_shape)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, **_kernel_bias_config(self))
        return cfg


class Flatten(Layer):
    """Reshapes (batch, d1, d2, ...) to (batch, d1*d2*...) without copying."""

    _per_call = ()

    supports_device = True

    def compute_output_shape(self, input_shape):
        return (int(math.prod(input_shape)),)

    def forward(self, x, training=False):
        self._check_input(x)
        return x.reshape(x.shape[0], self.output_shape[0])

    def backward(self, dy, need_dx=True):
        return dy.reshape(dy.shape[0], *self.input_shape) if need_dx else None


class Activation(Layer):
    """Applies an activation by name: ``Activation("relu")``."""

    _per_call = ("_bufs", "_x", "_cur")

    supports_device = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.get(activation)
        self._bufs = _BatchBuffers()
        self._x = None  # so `logits` exists (and the loss fusion is decided) before the first forward

    def _make_buffers(self, batch, like):
        return _io_buffers((batch,) + self.input_shape, like)

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        a = self.activation
        ops(x).activation_forward(a.code, x, b["y"], a.alpha, a.beta)
        self._x, self._cur = x, b
        return b["y"]

    @property
    def logits(self):
        return self._x

    def backward(self, dy, need_dx=True, dy_is_dz=False):
        if not need_dx:
            return None
        if dy_is_dz:  # the loss already differentiated through this activation
            return dy
        b, a = self._cur, self.activation
        ops(dy).activation_backward(a.code, self._x, b["y"], dy, b["dx"], a.alpha, a.beta)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = self.activation.name
        return cfg
