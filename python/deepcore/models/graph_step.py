"""The training step of a CUDA model as a CUDA graph (``compile(cuda_graphs=True)``).

Per batch size: the first step runs eagerly (it allocates every buffer the
step uses and shows the step is valid), the second captures the step once
(forward, the loss's graph variant, backward, optimizer_step_graph,
constraints, the dropout call counters' increments) and replays it, every
later step only replays. Before a replay, outside the capture: the host batch
is copied into the graph's fixed input buffers (Model._on_device), the
optimizer's hyperparameters for this step (schedule, bias corrections) go to
a DeviceHyper, and each random layer's device call counter is rewritten when
the host count moved without the graph (an eager step in between). After it:
one read of the LossScalars (the mean loss, and the correct rows that
accuracy takes instead of the output), then the host counters advance as an
eager step advances them (optimizer.iterations, each random layer's call
count), so eager, graph and CPU steps can follow one another and continue
the same sequences.

Everything the graph reads that changes from step to step lives in device
memory; what is baked in (buffers, layer hyperparameters, the optimizer's
rule and slots, the trainable set) is part of the step's signature: when it
changes, the graphs are dropped and captured again.

The eager step runs instead (one warning per reason and model) when the step
cannot be a graph: TerminateOnNaN's guard (it checks each step on the host),
a loss without a graph variant (only sparse_categorical_crossentropy has
one), GradientDiagnostics (it reads every layer's output), or a capture that
failed (a layer or constraint that needs the host during the step, e.g. a
custom device layer that copies a tensor to NumPy). A model on the CPU
ignores the flag.
"""
from __future__ import annotations

import gc
import warnings

import numpy as np

from ..backend import ops
from ..layers.core import _BatchBuffers
from ..layers.regularization import _RandomLayer

_WORD = 0xFFFFFFFF


class _CapturedStep:
    """One captured step: its graph, what it reads and writes, its signature."""

    __slots__ = ("graph", "out", "scalars", "table", "drawn", "signature", "pins")

    def __init__(self, graph, out, scalars, table, drawn, signature, pins):
        self.graph, self.out, self.scalars, self.table = graph, out, scalars, table
        self.drawn, self.signature = drawn, signature
        # (container, key, buffers): the per-batch buffers the graph reads and
        # writes, held here so that their memory stays the graph's while it
        # may replay; a container that no longer holds them means recapture.
        self.pins = pins

    def pinned(self):
        return all(container.get(key) is value for container, key, value in self.pins)


def _structure(h):
    """The optimizer fields that decide what optimizer_step_graph queues (cuda/graph_bindings.cpp)."""
    return (h.kind, h.nesterov, h.amsgrad, h.centered, h.clipnorm > 0, h.global_clipnorm > 0, h.momentum > 0)


def _same(a, b):
    objects_a, values_a = a
    objects_b, values_b = b
    return (values_a == values_b and len(objects_a) == len(objects_b)
            and all(x is y for x, y in zip(objects_a, objects_b)))


class GraphTrainer:
    """The captured steps of one model (dropped by Model.to and compile)."""

    def __init__(self, model):
        self.model = model
        self.steps = {}       # batch size -> _CapturedStep
        self.warmed = {}      # batch size -> the signature its eager warm-up step ran with
        self.failed = {}      # batch size -> signature whose capture failed
        self.counters = {}    # random layer -> [device counter, the value it holds (None: unknown)]
        self.hyper = None     # the DeviceHyper shared by the captured steps
        self.hyper_structure = None
        self.warned = set()

    # ------------------------------------------------------------- policy
    def _blocker(self):
        """Why this step cannot run as a graph now, or None."""
        m = self.model
        if m._skip_nonfinite_updates:
            return "TerminateOnNaN checks every step's loss, gradients and weights on the host"
        if not getattr(m.loss, "has_graph_variant", False):
            return (f"the loss {m.loss.name!r} has no CUDA-graph variant (only sparse_categorical_crossentropy "
                    f"has one)")
        if getattr(m, "_taps", None) is not None:
            return "GradientDiagnostics reads every layer's output"
        return None

    def _warn(self, reason):
        if reason not in self.warned:
            self.warned.add(reason)
            warnings.warn(f"Model '{self.model.name}': cuda_graphs=True, but the training step runs eagerly: "
                          f"{reason}", RuntimeWarning, stacklevel=5)

    def _signature(self, xb, yb, h):
        """What a captured step bakes in: objects compared by identity, values by equality."""
        m, opt = self.model, self.model.optimizer
        layers = m.layers
        objects = (m._flat_params, m._flat_grads, *opt._slot_args(), opt, m.loss, m._segments, xb, yb, *layers,
                   *(v.constraint for v in m._constrained), *(v.value for v in m.non_trainable_weights))
        values = (m._fused, _structure(h), getattr(ops(xb), "get_tf32", bool)(),
                  tuple(layer._graph_baked_state() for layer in layers),  # e.g. a re-adapted Normalization
                  tuple((layer.trainable, getattr(layer, "rate", None), getattr(layer, "momentum", None),
                         getattr(layer, "epsilon", None)) for layer in layers))
        return objects, values

    # --------------------------------------------------------------- step
    def train_step(self, xb, yb, n):
        """(loss, output buffer, correct rows) of one step run as a graph, or
        None: run the eager step."""
        reason = self._blocker()
        if reason is not None:
            self._warn(reason)
            return None
        m = self.model
        step = self.steps.get(n)
        if step is None and m.optimizer._size != m._flat_params.size:
            return None  # the eager step builds the optimizer's slots first
        h = m.optimizer._step_hyper()
        sig = self._signature(xb, yb, h)
        if step is not None and not (_same(step.signature, sig) and step.pinned()):
            self.drop()  # something baked in changed: this step warms up, the next captures again
            step = None
        if step is None:
            # A capture follows an eager warm-up of the very same signature:
            # it creates the per-batch buffers and cuBLASLt's plans, which are
            # keyed by pointer alignment and cannot be made during a capture.
            warmed = self.warmed.get(n)
            if warmed is None or not _same(warmed, sig):
                return None  # the eager step runs, then eager_step_done records its signature
            failed = self.failed.get(n)
            if failed is not None and _same(failed, sig):
                return None
            step = self._capture(xb, yb, n, h, sig)
            if step is None:
                return None
        return self._replay(step, h)

    def eager_step_done(self, xb, yb, n):
        """Record what an eager step of batch size n ran with: the next step
        with the same signature may be captured."""
        m = self.model
        if m.optimizer._size == m._flat_params.size:
            self.warmed[n] = self._signature(xb, yb, m.optimizer._step_hyper())

    def drop(self):
        """Forget every captured step (their memory goes back to the cache)."""
        for step in self.steps.values():
            step.graph.reset()
        self.steps, self.warmed, self.failed = {}, {}, {}

    def _counter(self, mod, layer):
        entry = self.counters.get(layer)
        if entry is None:
            entry = self.counters[layer] = [mod.DeviceBuffer((1,), "int32"), None]
        return entry

    def _capture(self, xb, yb, n, h, sig):
        m = self.model
        opt = m.optimizer
        mod = ops(xb)
        if self.hyper is None or self.hyper_structure != _structure(h):
            self.hyper, self.hyper_structure = mod.DeviceHyper(h), _structure(h)
            for step in self.steps.values():  # they read the previous DeviceHyper
                step.graph.reset()
            self.steps = {}
        offsets, l1, l2 = m._segments
        table = mod.SegmentTable(m._flat_params.size, offsets, l1, l2)
        scalars = mod.LossScalars()
        randoms = [layer for layer in m.layers if isinstance(layer, _RandomLayer)]
        # A capture runs nothing: the host state it advances is put back after.
        saved = [(layer, layer._calls, layer._call) for layer in randoms]
        for layer in randoms:
            layer._graph_call = self._counter(mod, layer)[0]
        graph = mod.Graph()
        # Memory freed during a capture stays with that graph: keep the
        # garbage collector from freeing another (dead) model's buffers now.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            with graph.capture():
                out = m._forward(xb, True)
                grad = m._batch_buffer(("grad", out.shape), out.shape, "float32")
                pred = m._output_layer().logits if m._fused else out
                m.loss.compute_graph(pred, yb, grad, scalars, from_logits=m._fused)
                m._backward(grad, m._fused)
                mod.optimizer_step_graph(self.hyper, m._flat_params, m._flat_grads, *opt._slot_args(), table,
                                         skip=scalars.bad_label_flag, scalars=scalars)
                for var in m._constrained:
                    var.constraint.apply(var.value)
                drawn = [layer for layer, calls, _ in saved if layer._calls != calls]
                for layer in drawn:
                    mod.increment_counter(self.counters[layer][0])
        except Exception as e:  # noqa: BLE001 - any failure: the eager step runs (and raises a real error)
            self.failed[n] = sig
            self._warn(f"the step could not be captured ({type(e).__name__}: {e})")
            return None
        finally:
            if gc_was_enabled:
                gc.enable()
            for layer, calls, call in saved:
                layer._calls, layer._call, layer._graph_call = calls, call, None
        pins = [(m._batch_buffers, ("grad", out.shape), grad)]
        for layer in m.layers:
            for value in vars(layer).values():
                if isinstance(value, _BatchBuffers) and n in value._by_batch:
                    pins.append((value._by_batch, n, value._by_batch[n]))
        step = self.steps[n] = _CapturedStep(graph, out, scalars, table, drawn, sig, pins)
        return step

    def _replay(self, step, h):
        m = self.model
        self.hyper.set(h)
        counters = self.counters
        for layer in step.drawn:  # the device counter follows the host count (eager steps in between)
            entry = counters[layer]
            word = layer._calls & _WORD
            if entry[1] != word:
                entry[0].copy_from(np.array([word], np.uint32).view(np.int32))
                entry[1] = word
        step.graph.replay()
        # The replay advanced the device counters: the host counts follow
        # before the loss is read (a bad label raises there, after the
        # forward drew its masks, as in the eager step).
        for layer in step.drawn:
            layer._call = layer._calls & _WORD
            layer._calls += 1
            counters[layer][1] = layer._calls & _WORD
        loss, correct, _, penalty = step.scalars.read()  # one host copy: the penalty came with the loss
        m.optimizer._step_done()
        if step.table.penalties:  # (else the reduction ran for clipping only: no penalty, as eagerly)
            loss += penalty
        return loss, step.out, correct
