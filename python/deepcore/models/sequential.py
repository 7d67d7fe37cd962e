"""Sequential: a plain stack of layers."""
from __future__ import annotations

from ..layers.base import Layer
from ..layers.core import InputLayer
from . import engine
from .model import Model, _on_model_device


class Sequential(Model):
    """``Sequential([Flatten(input_shape=[28, 28]), Dense(300, activation="relu"), ...])``
    or ``model.add(layer)``. Built as soon as the input shape is known.
    A linear plan (layer i reads what layer i - 1 wrote) run by the same
    executor as functional models (models/engine.py)."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name or _auto_name())
        self._layers: list[Layer] = []
        self._input_shape = None  # excludes batch
        for layer in layers or []:
            self.add(layer)

    def _input_shapes(self):
        return [self._input_shape]

    def _output_shapes(self):
        return [self._layers[-1].output_shape if self._layers else None]

    def _run(self, xs, training):
        return self._plan_forward(xs, training)

    def _call_inline(self, x, training):
        for layer in self._layers:
            x = layer(x, training=training)
        return x

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
        if isinstance(layer, engine.KerasTensor):  # dc.Input(...)
            if not isinstance(layer._node.layer, InputLayer):
                raise TypeError(f"Sequential.add: expected a Layer or dc.Input(...), got {layer!r}")
            layer = layer._node.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_shape is not None:
                raise ValueError("Sequential: an Input can only be the first element")
            self._input_shape = layer.input_shape
            return
        if isinstance(layer, Model):
            self._add_model(layer)
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

    def _add_model(self, model):
        """A model in a Sequential: its layers are added in turn (shared with
        it, as Keras shares a nested model's weights). Only a plain stack can
        be: a Sequential, or a functional model whose calls form a chain."""
        from .functional import Functional

        if isinstance(model, Sequential):
            chain = model.layers
        elif isinstance(model, Functional):
            plan = model._plan
            chain, slot = [], plan.in_slots[0] if len(plan.in_slots) == 1 else None
            for st in plan.steps:
                if st.multi or st.multi_out or slot is None or st.ins[0] != slot:
                    chain = None
                    break
                chain.append(st.layer)
                slot = st.out
            if chain is None or len(plan.out_slots) != 1 or plan.out_slots[0] != slot:
                raise TypeError(f"Sequential.add: model '{model.name}' is not a plain stack (several inputs or "
                                f"outputs, or branches); use the functional API: y = model(x)")
        else:
            raise TypeError(f"Sequential.add: a subclassed model ('{model.name}') cannot be a layer of a "
                            f"Sequential; call it inside a functional or subclassed model instead")
        if not self._layers and self._input_shape is None and model.built and model._input_shapes()[0]:
            self._input_shape = tuple(model._input_shapes()[0])
        for layer in chain:
            self.add(layer)

    def pop(self):
        if not self._layers:
            raise ValueError("Sequential.pop: the model has no layers")
        layer = self._layers.pop()
        self._flat_params = None
        self._plan = engine.linear_plan(self._layers) if self._layers else None
        return layer

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
        self._plan = engine.linear_plan(self._layers)
        self._call_states = {}


_count = [0]


def _auto_name():
    n = _count[0]
    _count[0] += 1
    return "sequential" if n == 0 else f"sequential_{n}"
