"""Functional models: ``dc.Model(inputs, outputs)`` over a graph of layer calls."""
from __future__ import annotations

from . import engine
from .model import Model

_count = [0]


def _flatten(struct, what):
    """(list of tensors, keys or None, whether it was a single tensor)."""
    if isinstance(struct, dict):
        return list(struct.values()), list(struct.keys()), False
    if isinstance(struct, (list, tuple)):
        if not struct:
            raise ValueError(f"Model: {what} is empty")
        return list(struct), None, False
    return [struct], None, True


class Functional(Model):
    """``dc.Model(inputs, outputs, name=None)``: inputs are ``dc.Input``
    tensors, outputs layer outputs (each a tensor, a list or a dict by name).
    Layers may be called several times (shared weights) and a tensor may feed
    several layers; the model trains through the same executor as
    Sequential. Output names are the dict keys, else the names of the layers
    that produce them; input names are the Input layers' names."""

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"Model(): unexpected keyword argument(s) {sorted(kwargs)}")
        if inputs is None or outputs is None:
            raise TypeError("Model(inputs, outputs): both are required")
        if name is None:
            n = _count[0]
            _count[0] += 1
            name = "functional" if n == 0 else f"functional_{n}"
        super().__init__(name=name)
        ins, in_keys, _ = _flatten(inputs, "inputs")
        outs, out_keys, _ = _flatten(outputs, "outputs")
        plan, layers = engine.graph_plan(ins, outs, self.name)
        self._plan = plan
        self._layers = layers
        self._inputs, self._outputs = ins, outs
        self._in_names = in_keys or [t._node.layer.name for t in ins]
        if out_keys is not None:
            self._out_names = [str(k) for k in out_keys]
        else:
            names, seen = [], {}
            for t in outs:
                base = t._node.layer.name
                seen[base] = seen.get(base, 0) + 1
                names.append(base if seen[base] == 1 else f"{base}_{seen[base] - 1}")
            self._out_names = names
        self._fused_list = [False] * len(outs)
        self._logits = [None] * len(outs)
        self._place_layers()

    @property
    def layers(self):
        return list(self._layers)

    @property
    def built(self):
        return True

    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    def _input_shapes(self):
        return [tuple(t.shape[1:]) for t in self._inputs]

    def _output_shapes(self):
        return [tuple(t.shape[1:]) for t in self._outputs]

    @property
    def input_names(self):
        return list(self._in_names)

    @property
    def output_names(self):
        return list(self._out_names)

    def build(self, input_shape=None):
        return None  # built at construction

    def _run(self, xs, training):
        return self._plan_forward(xs, training)

    def _call_inline(self, x, training):
        """Replay this model's layer calls on ``x`` (symbolic tensors, or
        values inside a subclassed model's call): a list or dict by input
        name, or one tensor for a one-input model."""
        if isinstance(x, dict):
            missing = [n for n in self._in_names if n not in x]
            if missing:
                raise ValueError(f"Model '{self.name}' called with inputs {sorted(x)}; missing {missing}")
            xs = [x[n] for n in self._in_names]
        else:
            xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self._inputs):
            raise ValueError(f"Model '{self.name}' takes {len(self._inputs)} input(s) {self._in_names}, got "
                             f"{len(xs)}")
        plan = self._plan
        vals = dict(zip(plan.in_slots, xs))
        for st in plan.steps:
            args = [vals[i] for i in st.ins] if st.multi else vals[st.ins[0]]
            y = st.layer(args, training=training)
            if st.multi_out:
                vals.update(zip(st.out, y))
            else:
                vals[st.out] = y
        outs = [vals[s] for s in plan.out_slots]
        return outs[0] if len(outs) == 1 else outs

    def _inbound(self):
        """{id(step): [names of the layers whose outputs it reads]}."""
        producer = {s: self._inputs[i]._node.layer.name for i, s in enumerate(self._plan.in_slots)}
        for st in self._plan.steps:
            for k, s in enumerate(engine.out_slots_of(st)):
                producer[s] = st.layer.name if not st.multi_out else f"{st.layer.name}[{k}]"
        return [(st, [producer[i] for i in st.ins]) for st in self._plan.steps]
