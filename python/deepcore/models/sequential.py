"""Sequential: a plain stack of layers."""
from __future__ import annotations

from ..layers.base import Layer
from ..layers.core import InputLayer
from .model import Model, _on_model_device


class Sequential(Model):
    """``Sequential([Flatten(input_shape=[28, 28]), Dense(300, activation="relu"), ...])``
    or ``model.add(layer)``. Built as soon as the input shape is known."""

    def __init__(self, layers=None, name=None):
        super().__init__(name or _auto_name())
        self._layers: list[Layer] = []
        self._input_shape = None  # excludes batch
        self._taps = None         # {layer name: last output} while diagnostics run
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self):
        return list(self._layers)

    @property
    def built(self):
        return self._input_shape is not None and all(layer.built for layer in self._layers) and bool(self._layers)

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + self._input_shape

    @property
    def output_shape(self):
        if not self.built:
            return None
        return (None,) + self._layers[-1].output_shape

    @_on_model_device
    def add(self, layer):
        if isinstance(layer, InputLayer):
            if self._layers or self._input_shape is not None:
                raise ValueError("Sequential: an Input can only be the first element")
            self._input_shape = layer.input_shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if any(layer.name == other.name for other in self._layers):
            raise ValueError(f"Sequential: a layer named '{layer.name}' is already in the model")
        self._check_device_support(layer)
        if not self._layers and self._input_shape is None and layer._declared_input_shape is not None:
            self._input_shape = layer._declared_input_shape
        self._layers.append(layer)
        if self._input_shape is not None:
            self._build_layers()
        else:
            self._place_layers()

    def pop(self):
        if not self._layers:
            raise ValueError("Sequential.pop: the model has no layers")
        layer = self._layers.pop()
        self._flat_params = None
        return layer

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named '{name}' in model '{self.name}'; layers: "
                         f"{[layer.name for layer in self._layers]}")

    @_on_model_device
    def build(self, input_shape=None):
        if input_shape is not None:
            shape = tuple(int(d) for d in tuple(input_shape)[1:])
            if self._input_shape is not None and shape != self._input_shape:
                raise ValueError(f"Sequential '{self.name}' expects input shape {self.input_shape}, "
                                 f"got {(None,) + shape}")
            self._input_shape = shape
        if self._input_shape is None:
            raise ValueError(f"Sequential '{self.name}': cannot build without an input shape")
        self._build_layers()

    def _build_layers(self):
        shape = self._input_shape
        for layer in self._layers:
            shape = layer._build_for(shape)
        self._place_layers()
        self._flat_params = None  # repack on next training use

    def _output_layer(self):
        return self._layers[-1]

    def _forward(self, x, training):
        taps = self._taps
        for layer in self._layers:
            x = layer.forward(x, training)
            if taps is not None:  # GradientDiagnostics: references to this batch's outputs
                taps[layer.name] = x
        return x

    def _backward(self, dy, dy_is_dz):
        # Nothing before the first layer with trainable weights needs a
        # gradient: skipping it saves the largest GEMM (dx of the first Dense).
        layers = self._layers
        first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), len(layers))
        last = len(layers) - 1
        for i in range(last, first - 1, -1):
            if i == last and dy_is_dz:
                dy = layers[i].backward(dy, need_dx=i > first, dy_is_dz=True)
            else:
                dy = layers[i].backward(dy, need_dx=i > first)
        return dy


_count = [0]


def _auto_name():
    n = _count[0]
    _count[0] += 1
    return "sequential" if n == 0 else f"sequential_{n}"
