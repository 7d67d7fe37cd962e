"""Merge layers with Keras's names and semantics (keras.layers.Add, ...,
Concatenate, and the functional forms add, ..., concatenate).

A merge layer takes a list of tensors. The layer protocol for several inputs:
``build(input_shapes)`` and ``compute_output_shape(input_shapes)`` get a list
of per-sample shapes (batch axis excluded); ``forward(xs, training)`` gets a
list of batch tensors and returns one tensor; ``backward(dy, need_dx)``
returns a list with one gradient per input (``None`` entries when need_dx is
False). The math is in C++ (src/ops/merge.h), with CUDA twins:

- Add, Subtract (exactly 2 inputs: x0 - x1), Multiply, Average, Maximum and
  Minimum take inputs of one shape (no broadcasting) and fold them in input
  order. Multiply's gradient for input i is dy times the product of the other
  inputs, computed from prefix and suffix products (no division, so zeros are
  fine). Maximum's and Minimum's gradient goes, whole, to the input that won:
  on ties the first of the tied inputs, and where an input holds NaN (the
  output is then NaN, as np.maximum gives) the first such input.
- Concatenate(axis=-1) joins inputs that agree on every axis but ``axis``
  (counted with the batch axis, as in Keras; the batch axis itself cannot be
  joined).

At most 64 inputs per layer (the CUDA kernels take the input pointers in
their launch arguments).
"""
from __future__ import annotations

import numpy as np

from .. import cuda as _cuda_front
from ..backend import empty, ops, to_device, to_host
from .base import Layer
from .core import _BatchBuffers

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "add", "subtract",
           "multiply", "average", "maximum", "minimum", "concatenate"]

MAX_INPUTS = 64  # kMaxMergeInputs in src/ops/merge.h


def _batched(shapes):
    return [(None,) + tuple(s) for s in shapes]


class _MultiInput(Layer):
    """What the layers with a list of inputs share: the shape checks, the
    per-batch-size buffers (the output and one gradient per input) and the
    eager call on a list of NumPy arrays."""

    supports_device = True
    #: What forward sets and backward reads (a graph engine swaps these per
    #: call, so that one layer may be called twice in a step).
    _per_call = ("_bufs", "_xs", "_cur")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._bufs = _BatchBuffers()
        self._xs = self._cur = None
        self._in_shapes = None  # per-sample input shapes, set by build

    # ------------------------------------------------------------ shapes
    def _shapes(self, input_shapes) -> list:
        """input_shapes as a list of tuples, or ValueError: a merge layer
        takes a list of 2 to MAX_INPUTS inputs."""
        kind = type(self).__name__
        if (not isinstance(input_shapes, (list, tuple)) or not input_shapes
                or not all(isinstance(s, (list, tuple)) for s in input_shapes)):
            raise ValueError(f"{kind} '{self.name}' must be called on a list of inputs, got input shape "
                             f"{input_shapes!r}")
        shapes = [tuple(int(d) for d in s) for s in input_shapes]
        if len(shapes) < 2:
            raise ValueError(f"{kind} '{self.name}' must be called on a list of at least 2 inputs, got "
                             f"{len(shapes)}: input shapes {_batched(shapes)}")
        if len(shapes) > MAX_INPUTS:
            raise ValueError(f"{kind} '{self.name}' takes at most {MAX_INPUTS} inputs, got {len(shapes)}")
        return shapes

    def build(self, input_shapes):
        self._in_shapes = self._shapes(input_shapes)
        self._out_shape = tuple(self.compute_output_shape(self._in_shapes))

    def _check_inputs(self, xs) -> None:
        """The forward's inputs: a list of len(input shapes) batch tensors of
        the shapes the layer was built for, and one batch size."""
        shapes = self._in_shapes
        if not isinstance(xs, (list, tuple)) or len(xs) != len(shapes):
            got = f"{len(xs)} tensors" if isinstance(xs, (list, tuple)) else type(xs).__name__
            raise ValueError(f"{type(self).__name__} '{self.name}' expects a list of {len(shapes)} inputs, got "
                             f"{got}")
        batch = xs[0].shape[0] if len(xs[0].shape) else None
        for x, s in zip(xs, shapes):
            if tuple(x.shape[1:]) != s or x.shape[0] != batch:
                raise ValueError(f"{type(self).__name__} '{self.name}' expected inputs of shapes "
                                 f"{_batched(shapes)} (one batch size), got {[tuple(x.shape) for x in xs]}")

    def _make_buffers(self, batch, like):
        return {"y": empty((batch,) + self._out_shape, like=like),
                "dx": [empty((batch,) + s, like=like) for s in self._in_shapes]}

    # ------------------------------------------------------------ eager call
    # (Layer.__call__ routes a list of arrays here, a symbolic list to the graph engine.)
    def _call_list(self, xs, training=False):
        """Eager call on a list of NumPy arrays: builds if needed and returns
        a fresh NumPy array (the inputs go to the layer's device and the
        result comes back)."""
        xs = [np.ascontiguousarray(x, dtype=np.float32) for x in xs]
        with _cuda_front.device(self._device):  # the layer's device current for its kernels
            self._build_for([x.shape[1:] for x in xs])
            out = self.forward([to_device(x, self._device) for x in xs], training=bool(training))
            return to_host(out, copy=True)


class _Merge(_MultiInput):
    """An elementwise merge of inputs of one shape (kernel code `_kind`)."""

    _kind = -1

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError(f"{type(self).__name__} '{self.name}' needs inputs of one shape, got input shapes "
                             f"{_batched(shapes)}")
        return shapes[0]

    def forward(self, xs, training=False):
        self._check_inputs(xs)
        b = self._bufs.get(xs[0].shape[0], self._make_buffers, xs[0])
        ops(xs[0]).merge_forward(self._kind, xs, b["y"])
        self._xs, self._cur = xs, b
        return b["y"]

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return [None] * len(self._in_shapes)
        b = self._cur
        ops(dy).merge_backward(self._kind, self._xs, dy, b["dx"])
        return list(b["dx"])


class Add(_Merge):
    """Adds a list of inputs of one shape: ``Add()([x1, x2])`` is x1 + x2."""

    _kind = 0


class Subtract(_Merge):
    """Subtracts two inputs of one shape: ``Subtract()([x1, x2])`` is x1 - x2."""

    _kind = 1

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        if len(shapes) != 2:
            raise ValueError(f"Subtract '{self.name}' must be called on exactly 2 inputs, got {len(shapes)}: "
                             f"input shapes {_batched(shapes)}")
        return super().compute_output_shape(shapes)


class Multiply(_Merge):
    """Multiplies a list of inputs of one shape elementwise."""

    _kind = 2


class Average(_Merge):
    """The elementwise mean of a list of inputs of one shape (their sum divided by their count)."""

    _kind = 3


class Maximum(_Merge):
    """The elementwise maximum of a list of inputs of one shape. The gradient
    goes to the first input holding the maximum (the first NaN where there is one)."""

    _kind = 4


class Minimum(_Merge):
    """The elementwise minimum of a list of inputs of one shape. The gradient
    goes to the first input holding the minimum (the first NaN where there is one)."""

    _kind = 5


class Concatenate(_MultiInput):
    """Joins a list of inputs along ``axis`` (default -1, the last). The axis
    counts the batch axis, as in Keras: on inputs of shape (batch, 3, 4),
    axis=1 or -2 joins the 3s and axis=2 or -1 the 4s; the inputs must agree
    on every other axis."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Concatenate '{self.name}': axis must be an int, got {axis!r}")
        self.axis = int(axis)
        self._axis = None  # the axis as a positive index of the batch tensors, set by build

    def _sample_axis(self, shapes) -> int:
        """The concatenation axis as an index of the per-sample shapes."""
        rank = len(shapes[0]) + 1  # batch axis included
        if not -rank <= self.axis < rank:
            raise ValueError(f"Concatenate '{self.name}': axis {self.axis} is out of range for inputs of "
                             f"{rank} dimensions (batch included), input shapes {_batched(shapes)}")
        axis = self.axis % rank
        if axis == 0:
            raise ValueError(f"Concatenate '{self.name}': axis {self.axis} is the batch axis; the inputs can be "
                             f"joined on the axes of one sample only (input shapes {_batched(shapes)})")
        return axis - 1

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        if any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
            raise ValueError(f"Concatenate '{self.name}' needs inputs of one rank (at least 2, batch included), "
                             f"got input shapes {_batched(shapes)}")
        a = self._sample_axis(shapes)
        if any(s[:a] + s[a + 1:] != shapes[0][:a] + shapes[0][a + 1:] for s in shapes):
            raise ValueError(f"Concatenate '{self.name}' needs inputs that match on every axis but axis "
                             f"{self.axis}, got input shapes {_batched(shapes)}")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out)

    def build(self, input_shapes):
        super().build(input_shapes)
        self._axis = self._sample_axis(self._in_shapes) + 1

    def forward(self, xs, training=False):
        self._check_inputs(xs)
        b = self._bufs.get(xs[0].shape[0], self._make_buffers, xs[0])
        ops(xs[0]).concatenate_forward(xs, b["y"], self._axis)
        self._xs, self._cur = xs, b
        return b["y"]

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return [None] * len(self._in_shapes)
        b = self._cur
        ops(dy).concatenate_backward(self._xs, dy, b["dx"], self._axis)
        return list(b["dx"])

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg


# ---------------------------------------------------------------- functional forms
def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``: the sum of a list of inputs."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``: inputs[0] - inputs[1]."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``: the elementwise product of a list of inputs."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``: the elementwise mean of a list of inputs."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``: the elementwise maximum of a list of inputs."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``: the elementwise minimum of a list of inputs."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis, **kwargs)(inputs)``: the inputs joined along axis."""
    return Concatenate(axis=axis, **kwargs)(inputs)
