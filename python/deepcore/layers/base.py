"""Layer and Variable: what every layer shares."""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from .. import cuda as _cuda_front
from ..backend import assign, empty, is_device_tensor, to_device, to_host


def _snake(name: str) -> str:
    """Keras's to_snake_case: BatchNormalization -> batch_normalization,
    PReLU -> p_re_lu, MCDropout -> mc_dropout."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _batched(shape):
    """A per-sample shape (or a list of them) with the batch axis shown as None."""
    if isinstance(shape, list):
        return [(None,) + tuple(s) for s in shape]
    return (None,) + tuple(shape)


class Variable:
    """A named parameter with its gradient buffer. ``value`` may be a view into
    the model's flat parameter buffer (see Model._pack_parameters)."""

    __slots__ = ("name", "path", "value", "grad", "trainable", "regularizer", "constraint", "version", "owner")

    def __init__(self, name, path, value, trainable=True, regularizer=None, constraint=None):
        self.name, self.path, self.value, self.trainable = name, path, value, trainable
        # Counts assign() calls, so that what a layer derives from a value it
        # does not train (Normalization's scale) is recomputed only when the
        # value was assigned, never read back from the device every step.
        self.version = 0
        # A weak reference to the model whose flat buffers value and grad are
        # views into (None: standalone; weak, so copying a layer never copies a model). A layer shared by two models moves into the flat
        # buffers of whichever trains, and the other repacks before its next step.
        self.owner = None
        self.grad = empty(value.shape, like=value)
        self.regularizer, self.constraint = regularizer, constraint

    @property
    def shape(self):
        return self.value.shape

    def numpy(self):
        """A NumPy copy of the value (from the device when the value lives there)."""
        return to_host(self.value, copy=True)

    def assign(self, value):
        """Copy value (a NumPy array, or a tensor on any device) into this variable."""
        if not is_device_tensor(value):
            value = np.asarray(value)
        if tuple(value.shape) != tuple(self.value.shape):
            raise ValueError(f"{self.path}: expected a value of shape {self.value.shape}, got {tuple(value.shape)}")
        assign(self.value, value)
        self.version += 1

    def __repr__(self):
        return f"<Variable {self.path} shape={self.value.shape} trainable={self.trainable}>"


def _to_host_outputs(out):
    """Fresh NumPy copies of a forward's output (a list for several outputs)."""
    if isinstance(out, (list, tuple)):
        return [to_host(o, copy=True) for o in out]
    return to_host(out, copy=True)


class Layer:
    """Base layer. Subclasses implement ``build``, ``compute_output_shape``,
    ``forward(x, training)`` and ``backward(dy, need_dx)``; forward caches
    what backward needs. Shapes exclude the batch axis unless said otherwise."""

    _name_counts: defaultdict = defaultdict(int)

    #: Whether forward/backward work on CUDA device tensors, i.e. compute only
    #: through ``backend.ops(x)`` kernels and ``backend.empty(..., like=x)``
    #: buffers. A custom layer doing NumPy math stays on the CPU unless it
    #: sets this; ``Model.to("cuda")`` refuses it with NotImplementedError.
    supports_device = False
    #: True for layers whose GPU kernels are GEMMs (cuBLASLt, opened at run
    #: time): Model.to("cuda") refuses them when it could not be opened.
    needs_gemm = False
    #: Where this layer's weights live ("cpu" or "cuda:N"); set by Model.to.
    _device = "cpu"
    #: The attributes that forward sets and backward reads (what one call
    #: saves for its backward, its per-batch buffers included). A model that
    #: calls this layer more than once in a step (shared weights) keeps one
    #: set of them per call and swaps them in around each call's forward and
    #: backward (models/engine.py). None: undeclared, so the layer can be
    #: called only once per step.
    _per_call = None

    def __init__(self, name=None, trainable=True, input_shape=None, input_dim=None, dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        if name is None:
            base = _snake(type(self).__name__)
            n = Layer._name_counts[base]
            Layer._name_counts[base] += 1
            name = base if n == 0 else f"{base}_{n}"
        self.name = name
        self.trainable = trainable
        self.built = False
        self._variables: list[Variable] = []
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        self._declared_input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.input_shape = None   # excludes batch
        self.output_shape = None  # excludes batch
        self._inbound_nodes = []  # one per symbolic call (models/engine.py Node)

    # ------------------------------------------------------------ weights
    def add_weight(self, name, shape, initializer, trainable=True, regularizer=None, constraint=None):
        from .. import constraints as _constraints
        from .. import regularizers as _regularizers

        regularizer = _regularizers.get(regularizer)
        constraint = _constraints.get(constraint)
        shape = tuple(int(s) for s in shape)
        if constraint is not None and hasattr(constraint, "check"):
            constraint.check(shape, f"Layer '{self.name}' weight '{name}'")
        value = to_device(initializer(shape), self._device)
        var = Variable(name, f"{self.name}/{name}", value, trainable, regularizer, constraint)
        self._variables.append(var)
        return var

    @property
    def weights(self) -> list[Variable]:
        return self.trainable_weights + self.non_trainable_weights

    @property
    def trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables if v.trainable and self.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables if not (v.trainable and self.trainable)]

    def get_weights(self) -> list[np.ndarray]:
        """NumPy copies of the weights, wherever they live."""
        return [to_host(v.value, copy=True) for v in self.weights]

    def set_weights(self, weights) -> None:
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f"Layer '{self.name}' expects {len(variables)} weight arrays, got {len(weights)}")
        for var, w in zip(variables, weights):
            var.assign(w)

    def count_params(self) -> int:
        return int(sum(v.value.size for v in self._variables))

    def _graph_baked_state(self):
        """What a captured CUDA-graph step bakes in from this layer's host-side
        state, as a value compared between steps (models/graph_step.py): a
        change means the step is captured again. Weights themselves live in
        device memory and are read at replay; the default is nothing."""
        return None

    # ------------------------------------------------------------ building
    def build(self, input_shape) -> None:
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _build_for(self, input_shape) -> tuple:
        """Build (once) for input_shape and return the output shape. A layer
        called on a list of tensors (a merge layer) gets a list of shapes."""
        if isinstance(input_shape, list):
            input_shape = [tuple(int(d) for d in shape) for shape in input_shape]
        else:
            input_shape = tuple(input_shape)
        if not self.built:
            self.build(input_shape)
            self.built = True
            self.input_shape = input_shape
            out = self.compute_output_shape(input_shape)
            # a list: one shape per output (a layer with several outputs, e.g. an RNN with return_state)
            self.output_shape = [tuple(o) for o in out] if isinstance(out, list) else tuple(out)
        elif self.input_shape != input_shape:
            raise ValueError(f"Layer '{self.name}' was built for input shape {_batched(self.input_shape)}, "
                             f"got {_batched(input_shape)}")
        return self.output_shape

    def _check_input(self, x) -> None:
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"Layer '{self.name}' ({type(self).__name__}) expected input shape "
                             f"{(None,) + self.input_shape}, got {tuple(x.shape)}")

    def _device_blocker(self):
        """Why this layer, as configured, cannot run on a CUDA device (None: it can)."""
        if not self.supports_device:
            return (f"{type(self).__name__} '{self.name}' (a layer that does not declare supports_device = True; "
                    f"its forward/backward may compute with NumPy)")
        return None

    # ------------------------------------------------------------ compute
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        raise NotImplementedError

    def __call__(self, x, training=None):
        """On a symbolic tensor (``dc.Input(...)`` or another layer call's
        output): records the call as a node of a graph and returns the
        symbolic output (the functional API). Inside a subclassed model's
        ``call``: runs the layer and records it for the model's backward.
        On a NumPy array (a list of arrays for a merge layer): an eager call
        that builds if needed and returns a fresh NumPy array (x goes to the
        layer's device and the result comes back)."""
        from ..models import engine

        if engine.is_symbolic(x):
            return engine.symbolic_call(self, x)
        tape = engine.active_tape()
        if tape is not None:
            return tape.call(self, x, training)
        training = bool(training)
        if isinstance(x, (list, tuple)):
            return self._call_list(list(x), training)
        x = np.ascontiguousarray(x, dtype=np.float32)
        with _cuda_front.device(self._device):  # the layer's device current for its kernels
            self._build_for(x.shape[1:])
            return _to_host_outputs(self.forward(to_device(x, self._device), training=training))

    def _call_list(self, xs, training=False):
        """Eager call on a list of NumPy arrays (a layer with several inputs)."""
        xs = [np.ascontiguousarray(x, dtype=np.float32) for x in xs]
        with _cuda_front.device(self._device):
            self._build_for([x.shape[1:] for x in xs])
            out = self.forward([to_device(x, self._device) for x in xs], training=training)
            return _to_host_outputs(out)

    @property
    def input(self):
        """The symbolic input of this layer's first call (functional API)."""
        return self._node_attr("input", 0)

    @property
    def output(self):
        """The symbolic output of this layer's first call (functional API)."""
        return self._node_attr("output", 0)

    def _node_attr(self, what, index):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer '{self.name}' has never been called on a symbolic tensor, so it has no "
                                 f"{what}")
        node = self._inbound_nodes[index]
        if what == "input":
            return node.inputs if node.multi else node.inputs[0]
        return list(node.outputs) if isinstance(self.output_shape, list) else node.outputs[0]

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"
