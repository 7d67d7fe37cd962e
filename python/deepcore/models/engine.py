"""The graph engine: every model (Sequential, functional, subclassed) is a
list of layer calls run by one executor.

- A **symbolic tensor** (:class:`KerasTensor`) stands for a batch that does
  not exist yet: ``dc.Input(shape)`` makes one, and calling a layer on one
  records a :class:`Node` (the layer, its input tensors, its output) and
  returns the output's symbolic tensor. ``dc.Model(inputs, outputs)`` orders
  the nodes between them into a plan.
- A **plan** is a list of :class:`Step`: a layer call reading value slots
  and writing one. ``Sequential`` is a linear plan; a functional model's plan
  is its nodes in topological order; a subclassed model's plan is recorded by
  a :class:`Tape` while its ``call`` runs (so Python control flow works).
- :func:`run_forward` runs a plan; :func:`run_backward` runs it in reverse:
  the gradient of a slot that feeds several steps is the sum of what they
  send back, a layer called by several steps (shared weights) keeps one set
  of saved state per call (its ``_per_call`` attributes, swapped in around
  each call) and its weight gradients are summed over its calls. Nothing
  before the first trainable layer computes a gradient it would not use.
"""
from __future__ import annotations

import threading

from ..backend import ops

# ----------------------------------------------------------- symbolic tensors


class KerasTensor:
    """A symbolic batch: its shape ((None,) + the per-sample shape) and the
    node that produces it. Made by ``dc.Input`` and by layer calls on
    symbolic tensors; used to define ``dc.Model(inputs, outputs)``."""

    __slots__ = ("shape", "name", "_node", "_index", "__weakref__")

    def __init__(self, shape, node=None, index=0, name=None):
        self.shape = (None,) + tuple(int(d) for d in shape)
        self._node, self._index, self.name = node, index, name

    @property
    def dtype(self):
        return "float32"

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        who = self._node.layer.name if self._node is not None else "?"
        return f"<KerasTensor shape={self.shape} from layer '{who}'>"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is symbolic: it has no values. Call the model on data (model.predict(x)), or "
                        f"combine symbolic tensors with layers (e.g. dc.layers.Add()([a, b]))")

    def __bool__(self):
        raise TypeError(f"{self!r} is symbolic: its truth value is unknown (no data flows at graph definition)")


class Node:
    """One call of a layer on symbolic tensors."""

    __slots__ = ("layer", "inputs", "outputs", "multi")

    def __init__(self, layer, inputs, multi):
        self.layer, self.inputs, self.multi, self.outputs = layer, inputs, multi, []


def is_symbolic(x) -> bool:
    if isinstance(x, KerasTensor):
        return True
    if isinstance(x, (list, tuple)) and x and any(isinstance(t, KerasTensor) for t in x):
        if not all(isinstance(t, KerasTensor) for t in x):
            raise TypeError("a layer called on a list mixing symbolic tensors and data; pass only symbolic "
                            "tensors (dc.Input(...) or layer outputs)")
        return True
    return False


def symbolic_call(layer, x):
    """Record ``layer(x)`` for symbolic x: build the layer for x's shapes and
    return the output's symbolic tensor."""
    multi = isinstance(x, (list, tuple))
    inputs = list(x) if multi else [x]
    shapes = [t.shape[1:] for t in inputs]
    try:
        out_shape = layer._build_for(list(shapes) if multi else shapes[0])
    except ValueError as e:
        raise ValueError(f"calling layer '{layer.name}' ({type(layer).__name__}) on "
                         f"{[t.shape for t in inputs] if multi else inputs[0].shape} "
                         f"from {[t._node.layer.name for t in inputs]}: {e}") from None
    node = Node(layer, inputs, multi)
    if isinstance(out_shape, list):  # a layer with several outputs (e.g. an RNN with return_state)
        node.outputs.extend(KerasTensor(shape, node, i) for i, shape in enumerate(out_shape))
        layer._inbound_nodes.append(node)
        return list(node.outputs)
    out = KerasTensor(out_shape, node, 0)
    node.outputs.append(out)
    layer._inbound_nodes.append(node)
    return out


# ----------------------------------------------------------------------- plan


class Step:
    """One layer call of a plan: reads slots ``ins`` (a list for a
    multi-input layer when ``multi``), writes slot ``out`` (a tuple of slots
    for a layer with several outputs: ``multi_out``). ``key`` names the
    call's saved state when the layer is called more than once per step."""

    __slots__ = ("layer", "ins", "out", "multi", "key", "need", "run", "weights", "fused", "logit_of", "multi_out")

    def __init__(self, layer, ins, out, multi=False, key=None):
        self.layer, self.ins, self.multi, self.key = layer, tuple(ins), multi, key
        self.multi_out = isinstance(out, (tuple, list))
        self.out = tuple(out) if self.multi_out else out
        self.need = self.run = True   # need dx / run backward at all (set by prepare_backward)
        self.weights = False          # has trainable weights
        self.fused = False            # its output's loss took the logits (dy is dL/dz)
        self.logit_of = -1            # index of the model output whose logits this step gives


def out_slots_of(st):
    """The slots a step writes (a tuple)."""
    return st.out if st.multi_out else (st.out,)


def producer_step(plan, slot):
    """The step that writes ``slot`` (None for a model input)."""
    return next((st for st in plan.steps if slot in out_slots_of(st)), None)


def _makes_masks(layer) -> bool:
    """Whether a layer's class defines compute_mask (beyond the base Layer's):
    a plan with such a layer tracks masks (an Embedding with mask_zero, a
    Masking layer, an RNN that passes them on)."""
    from ..layers.base import Layer

    for cls in type(layer).__mro__:
        if cls is Layer or cls is object:
            return False
        if "compute_mask" in cls.__dict__:
            return True
    return False


def _out_mask(layer, x, mask):
    """The mask of a layer call's output(s), from its input mask (Keras's
    compute_mask; a layer that does not support masking drops it)."""
    f = getattr(layer, "compute_mask", None)
    if f is None:
        return mask if getattr(layer, "supports_masking", False) else None
    return f(x, mask)


class Plan:
    """Steps plus the slots of the model's inputs and outputs. ``masked``:
    some layer may make a mask (Keras masking: a float32 (batch, timesteps)
    array of 1.0 kept / 0.0 padded steps, on the data's device), so the
    executor carries masks from slot to slot and hands them to the layers
    that consume them (``_consumes_mask``: ``forward(x, training, mask=m)``)."""

    __slots__ = ("steps", "n_slots", "in_slots", "out_slots", "fan_out", "prepared", "masked")

    def __init__(self, steps, n_slots, in_slots, out_slots):
        self.steps, self.n_slots, self.in_slots, self.out_slots = steps, n_slots, list(in_slots), list(out_slots)
        self.fan_out = [0] * n_slots
        for st in steps:
            for i in st.ins:
                self.fan_out[i] += 1
        for s in out_slots:
            self.fan_out[s] += 1
        self.prepared = None
        self.masked = any(_makes_masks(st.layer) for st in steps)
        _assign_call_keys(steps)


def _assign_call_keys(steps):
    """Key the calls of layers called more than once: (id(layer), k)."""
    count = {}
    for st in steps:
        count[id(st.layer)] = count.get(id(st.layer), 0) + 1
    seen = {}
    for st in steps:
        lid = id(st.layer)
        if count[lid] > 1:
            if st.layer._per_call is None:
                raise ValueError(f"layer '{st.layer.name}' ({type(st.layer).__name__}) is called {count[lid]} "
                                 f"times in one step, but it does not declare the state a call saves for its "
                                 f"backward (its class attribute _per_call); declare it to share the layer")
            k = seen.get(lid, 0)
            seen[lid] = k + 1
            st.key = (lid, k)


def linear_plan(layers):
    """Sequential's plan: layer i reads slot i and writes slot i + 1."""
    return Plan([Step(layer, [i], i + 1) for i, layer in enumerate(layers)], len(layers) + 1, [0], [len(layers)])


def graph_plan(inputs, outputs, model_name="model"):
    """A functional model's plan: the nodes between ``inputs`` and
    ``outputs`` (symbolic tensors) in topological order, and its layers."""
    for what, ts in (("inputs", inputs), ("outputs", outputs)):
        for t in ts:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model '{model_name}': {what} must be symbolic tensors (from dc.Input(...) or "
                                f"layer calls), got {type(t).__name__}")
    from ..layers.core import InputLayer

    for t in inputs:
        if not isinstance(t._node.layer, InputLayer):
            raise ValueError(f"Model '{model_name}': every input must come straight from dc.Input(...); "
                             f"{t!r} is the output of layer '{t._node.layer.name}'")
    if len({id(t) for t in inputs}) != len(inputs):
        raise ValueError(f"Model '{model_name}': the same Input is listed twice in inputs")
    slot = {id(t): i for i, t in enumerate(inputs)}
    input_ids = set(slot)
    order, state = [], {}   # node ids: 1 visiting, 2 done

    def visit(t, path):
        if id(t) in input_ids:
            return
        node = t._node
        if isinstance(node.layer, InputLayer):
            raise ValueError(f"Model '{model_name}': output depends on Input '{node.layer.name}', which is not "
                             f"in the model's inputs {[i._node.layer.name for i in inputs]} (a disconnected "
                             f"input); path: {' <- '.join(path + [node.layer.name])}")
        s = state.get(id(node))
        if s == 2:
            return
        if s == 1:
            raise ValueError(f"Model '{model_name}': the graph has a cycle through layer '{node.layer.name}' "
                             f"(path: {' <- '.join(path + [node.layer.name])})")
        state[id(node)] = 1
        for x in node.inputs:
            visit(x, path + [node.layer.name])
        state[id(node)] = 2
        order.append(node)

    for t in outputs:
        visit(t, [])
    steps = []
    n = len(inputs)
    for node in order:
        ins = [slot[id(x)] for x in node.inputs]
        outs = []
        for out in node.outputs:
            slot[id(out)] = n
            outs.append(n)
            n += 1
        multi_out = len(node.outputs) > 1 or isinstance(node.layer.output_shape, list)
        steps.append(Step(node.layer, ins, tuple(outs) if multi_out else outs[0], node.multi))
    consumed = {id(x) for node in order for x in node.inputs} | {id(o) for o in outputs}
    for t in inputs:  # an input that no output depends on
        if id(t) not in consumed:
            raise ValueError(f"Model '{model_name}': input '{t._node.layer.name}' is not connected to any output")
    layers, names = [t._node.layer for t in inputs], {}
    seen = {id(layer) for layer in layers}
    for node in order:
        if id(node.layer) not in seen:
            seen.add(id(node.layer))
            layers.append(node.layer)
    for layer in layers:
        other = names.get(layer.name)
        if other is not None and other is not layer:
            raise ValueError(f"Model '{model_name}': two different layers are named '{layer.name}' "
                             f"({type(other).__name__} and {type(layer).__name__}); layer names must be unique "
                             f"in a model")
        names[layer.name] = layer
    return Plan(steps, n, range(len(inputs)), [slot[id(t)] for t in outputs]), layers


# ------------------------------------------------------------------ executor

def _fresh_state(layer):
    from ..layers.core import _BatchBuffers

    return {a: (_BatchBuffers() if isinstance(getattr(layer, a, None), _BatchBuffers) else None)
            for a in layer._per_call}


def _load(layer, states, key):
    st = states.get(key)
    if st is None:
        st = states[key] = _fresh_state(layer)
    layer.__dict__.update(st)


def _save(layer, states, key):
    d = layer.__dict__
    states[key] = {a: d.get(a) for a in layer._per_call}


def run_forward(model, plan, xs, training, logits=None):
    """Run ``plan`` on the input values ``xs`` (a list); returns the output
    values (a list). ``logits[k]`` receives output k's pre-activation when
    the plan marks it (fused loss)."""
    vals = [None] * plan.n_slots
    for s, x in zip(plan.in_slots, xs):
        vals[s] = x
    states, taps = model._call_states, model._taps
    masks = [None] * plan.n_slots if plan.masked else None
    for st in plan.steps:
        layer = st.layer
        key = st.key
        if key is not None:
            _load(layer, states, key)
        x = [vals[i] for i in st.ins] if st.multi else vals[st.ins[0]]
        if masks is None:
            y = layer.forward(x, training)
        else:
            y = _forward_masked(layer, x, training, masks[st.ins[0]], masks, out_slots_of(st))
        if key is not None:
            _save(layer, states, key)
        if st.multi_out:
            for s, v in zip(st.out, y):
                vals[s] = v
        else:
            vals[st.out] = y
            if taps is not None:  # GradientDiagnostics: references to this batch's outputs
                taps[layer.name] = y
        if st.logit_of >= 0 and logits is not None:
            logits[st.logit_of] = layer.logits
    return [vals[s] for s in plan.out_slots]


def _forward_masked(layer, x, training, mask, masks, outs):
    """forward with Keras masking: the input's mask goes to a layer that
    consumes it, and the output's mask(s) into ``masks``."""
    if mask is not None and getattr(layer, "_consumes_mask", False):
        y = layer.forward(x, training, mask=mask)
    else:
        y = layer.forward(x, training)
    m = _out_mask(layer, x, mask)
    if len(outs) > 1:
        ms = list(m) if isinstance(m, (list, tuple)) else [m] + [None] * (len(outs) - 1)
        for s, mk in zip(outs, ms):
            masks[s] = mk
    else:
        masks[outs[0]] = m[0] if isinstance(m, (list, tuple)) else m
    return y


def prepare_backward(plan):
    """Which steps need dx and which run backward at all, from the layers'
    trainable weights now (recomputed when the trainable set changes)."""
    requires = [False] * plan.n_slots
    for st in plan.steps:
        st.weights = bool(st.layer.trainable_weights)
        st.need = any(requires[i] for i in st.ins)
        st.run = st.need or st.weights
        for s in out_slots_of(st):
            requires[s] = st.run
    plan.prepared = True
    return plan


def mark_fused(plan, fused):
    """Flag the steps whose output's loss takes the logits (fused[k] for output k)."""
    for st in plan.steps:
        st.fused, st.logit_of = False, -1
    for k, (slot, f) in enumerate(zip(plan.out_slots, fused)):
        if not f:
            continue
        st = producer_step(plan, slot)
        st.fused, st.logit_of = True, k


def fusable_output(plan, k):
    """Whether output k may hand its loss the logits: its step is the only
    consumer of its value (no other step reads it) and is not shared."""
    slot = plan.out_slots[k]
    if plan.fan_out[slot] != 1:
        return None
    st = producer_step(plan, slot)
    if st is None or st.key is not None or st.multi_out:
        return None
    return st.layer


def run_backward(model, plan, dys):
    """Backpropagate the output gradients ``dys`` (one per output; None for
    an output without loss) through the last forward of ``plan``."""
    if plan.prepared is None:
        prepare_backward(plan)
    grads = [None] * plan.n_slots
    owned = set()
    for s, dy in zip(plan.out_slots, dys):
        if dy is not None:
            _accumulate(model, grads, owned, s, dy)
    states = model._call_states
    done = set()
    for st in reversed(plan.steps):
        if not st.run:
            continue
        if st.multi_out:  # one gradient per output; None where nothing flows back
            dy = [grads[s] for s in st.out]
            if all(d is None for d in dy):
                continue
        else:
            dy = grads[st.out]
            if dy is None:
                continue
        layer = st.layer
        key = st.key
        saved = None
        if key is not None:
            _load(layer, states, key)
            if st.weights and id(layer) in done:  # shared weights: sum the gradients of its calls
                saved = [(v, _copy(model, ("wgrad", id(v)), v.grad)) for v in layer.trainable_weights]
            done.add(id(layer))
        if st.fused:
            dx = layer.backward(dy, need_dx=st.need, dy_is_dz=True)
        else:
            dx = layer.backward(dy, need_dx=st.need)
        if saved is not None:
            for v, g in saved:
                ops(v.grad).axpby(1.0, g, 1.0, v.grad)
        if key is not None:
            _save(layer, states, key)
        if st.need:
            if st.multi:
                for i, d in zip(st.ins, dx):
                    if d is not None:
                        _accumulate(model, grads, owned, i, d)
            else:
                _accumulate(model, grads, owned, st.ins[0], dx)


def _copy(model, key, x):
    buf = model._batch_buffer(key, tuple(x.shape), "float32")
    buf[...] = x
    return buf


def _accumulate(model, grads, owned, slot, d):
    g = grads[slot]
    if g is None:
        grads[slot] = d
        return
    if slot not in owned:  # sum into a buffer of our own, never into a layer's
        g = grads[slot] = _copy(model, ("gsum", slot), g)
        owned.add(slot)
    if tuple(g.shape) != tuple(d.shape):
        d = d.reshape(tuple(g.shape))
    ops(g).axpby(1.0, d, 1.0, g)


# ----------------------------------------------------------------------- tape
_local = threading.local()


def active_tape():
    return getattr(_local, "tape", None)


class Tape:
    """Records the layer calls of a subclassed model's ``call`` as a plan."""

    def __init__(self, model, xs, training):
        self.model, self.training = model, training
        self.steps = []
        self.slot = {}
        self.values = []  # keeps every value alive: ids stay unique during the step
        self.calls = {}
        self.masks = None  # slot -> mask, once a layer that makes masks ran
        self.tracked = {id(t) for t in model._tracked}
        self.in_slots = [self._new(x) for x in xs]

    def _new(self, value):
        s = len(self.values)
        self.values.append(value)
        self.slot[id(value)] = s
        return s

    def _slot_of(self, layer, x):
        s = self.slot.get(id(x))
        if s is None:
            raise TypeError(f"Model '{self.model.name}'.call: layer '{layer.name}' got a {type(x).__name__} that "
                            f"neither the model's inputs nor a layer of this call produced; computations between "
                            f"layers must be layers too (e.g. dc.layers.Add, Multiply, Concatenate), so that "
                            f"their gradients exist")
        return s

    def call(self, layer, x, training):
        multi = isinstance(x, (list, tuple))
        ins = [self._slot_of(layer, v) for v in x] if multi else [self._slot_of(layer, x)]
        model = self.model
        training = self.training if training is None else bool(training)
        if not layer.built or layer._device != model._device or id(layer) not in self.tracked:
            # first met here (e.g. a layer of a model called inside call): built, placed and tracked
            model._adopt_layer(layer, [tuple(v.shape[1:]) for v in x] if multi else tuple(x.shape[1:]))
            self.tracked.add(id(layer))
        lid = id(layer)
        k = self.calls.get(lid, 0)
        self.calls[lid] = k + 1
        key = None
        multi_call = model._multi_call_layers
        if k == 1 and lid not in multi_call:  # found out now: this layer is shared
            if layer._per_call is None:
                raise ValueError(f"layer '{layer.name}' ({type(layer).__name__}) is called twice in one step, but "
                                 f"it does not declare the state a call saves for its backward (its class "
                                 f"attribute _per_call); declare it to share the layer")
            multi_call.add(lid)
            _save(layer, model._call_states, (lid, 0))
            first = next(st for st in self.steps if st.layer is layer)
            first.key = (lid, 0)
        if lid in multi_call:
            key = (lid, k)
            _load(layer, model._call_states, key)
        x = [self.values[i] for i in ins] if multi else self.values[ins[0]]
        multi_out = isinstance(layer.output_shape, list)
        if self.masks is None and _makes_masks(layer):
            self.masks = {}
        if self.masks is None:
            y = layer.forward(x, training)
            outs_masks = None
        else:
            n_out = len(layer.output_shape) if multi_out else 1
            got = [None] * n_out
            y = _forward_masked(layer, x, training, self.masks.get(ins[0]), got, list(range(n_out)))
            outs_masks = got
        if key is not None:
            _save(layer, model._call_states, key)
        if multi_out:
            y = list(y)
            out = tuple(self._new(v) for v in y)
        else:
            if model._taps is not None:
                model._taps[layer.name] = y
            out = self._new(y)
        if outs_masks is not None:
            for s, m in zip(out if multi_out else (out,), outs_masks):
                if m is not None:
                    self.masks[s] = m
        self.steps.append(Step(layer, ins, out, multi, key))
        return y

    def __enter__(self):
        if active_tape() is not None:
            raise RuntimeError("a subclassed model's call ran inside another model's call; call the inner "
                               "model's layers directly, or use it as a functional model")
        _local.tape = self
        return self

    def __exit__(self, *exc):
        _local.tape = None
        return False

    def plan(self, outputs):
        outs = []
        for y in outputs:
            s = self.slot.get(id(y))
            if s is None:
                raise TypeError(f"Model '{self.model.name}'.call returned a {type(y).__name__} that no layer "
                                f"produced; return layer outputs")
            outs.append(s)
        return Plan(self.steps, len(self.values), self.in_slots, outs)
