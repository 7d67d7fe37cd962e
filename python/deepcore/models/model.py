"""The training engine shared by every model: compile, fit, evaluate, predict,
summary and weights I/O. Subclasses provide the graph: ``_build_graph``,
``_forward(x, training)`` and ``_backward(dy, dy_is_dz)``."""
from __future__ import annotations

import functools
import json
import math
import os
import warnings
import weakref

import numpy as np

from .. import callbacks as _callbacks
from .. import losses as _losses
from .. import metrics as _metrics
from .. import optimizers as _optimizers
from .. import random as _random
from .. import backend as _backend
from .. import cuda as _cuda_front
from ..backend import core, empty, is_device_tensor, ops, reshape, to_device, to_host
from ..saving import load_safetensors, save_safetensors


_OPT_PREFIX = "optimizer/"


def _snake_model(name):
    from ..layers.base import _snake
    return _snake(name)


def _on_model_device(method):
    """The method run with the model's CUDA device current (kernels require
    their tensors on the current device), the caller's restored after it; on
    the CPU a plain call."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if self._device == "cpu":
            return method(self, *args, **kwargs)
        with _cuda_front.device(int(self._device[5:])):
            return method(self, *args, **kwargs)

    return run


def _whole_model(method):
    """The method sees the whole model even inside a fit that trains on
    cached frozen outputs (a callback's predict or evaluate)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        saved = self._fit_plan
        if saved is None:
            return method(self, *args, **kwargs)
        self._fit_plan = None
        try:
            return method(self, *args, **kwargs)
        finally:
            self._fit_plan = saved

    return run


class Model:
    """A model: a plan of layer calls (models/engine.py) with compile, fit,
    evaluate, predict, summary and weights I/O.

    - ``dc.Model(inputs, outputs)``: a functional model between symbolic
      tensors (``dc.Input``) and layer outputs (a tensor, list or dict each);
    - ``dc.Sequential([...])``: a linear stack (a linear plan, same executor);
    - a subclass with ``call(self, inputs, training=None)``: the layers it
      calls are recorded as it runs (Python control flow included); layers
      assigned as attributes are the model's layers.
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            from .functional import Functional
            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, *args, name=None, **kwargs):
        if args or kwargs:
            raise TypeError(f"Model(): unexpected arguments {list(args) + sorted(kwargs)}; use "
                            f"dc.Model(inputs, outputs, name=...) or subclass dc.Model and call "
                            f"super().__init__(name=...)")
        object.__setattr__(self, "_tracked", [])
        self._weak_self = weakref.ref(self)
        self.name = name or _snake_model(type(self).__name__)
        self.optimizer = None
        self.loss = None
        self.compiled_metrics = []
        self.history = None
        self.stop_training = False
        self._flat_params = None
        self._flat_grads = None
        self._fused = False
        self._batch_buffers = {}
        self._device = "cpu"
        # Set by callbacks.TerminateOnNaN: a step whose loss, gradients or
        # resulting weights are non-finite leaves the weights untouched.
        self._skip_nonfinite_updates = False
        self._nonfinite_update_skipped = False
        self._cuda_graphs = False
        self._graphs = None  # graph_step.GraphTrainer while cuda_graphs is on and the model is on CUDA
        self._taps = None    # {layer name: last output} while diagnostics run
        self._call_states = {}         # saved per-call state of layers called more than once per step
        self._multi_call_layers = set()
        self._plan = None
        self._fit_plan = None   # during a fit with cached frozen outputs: the plan of the layers after them
        self._last_plan = None  # the plan of the last forward (what backward runs through)
        self._cache_said = False
        self._losses = self._loss_weights = self._out_metrics = None
        self._fused_list = [False]
        self._logits = [None]
        self._sub_shapes = None  # subclassed: (input shapes, output shapes) once built

    def __setattr__(self, name, value):
        # A subclassed model's layers are the Layer attributes it sets (in order).
        from ..layers.base import Layer
        if isinstance(value, Layer) or (isinstance(value, (list, tuple)) and value
                                        and all(isinstance(v, Layer) for v in value)):
            tracked = self.__dict__.get("_tracked")
            if tracked is not None and not name.startswith("_"):
                for v in (value if isinstance(value, (list, tuple)) else [value]):
                    if all(v is not t for t in tracked):
                        tracked.append(v)
        object.__setattr__(self, name, value)

    # --------------------------------------------------------- graph (subclass)
    def call(self, inputs, training=None):
        """A subclassed model's forward pass: call layers on ``inputs`` and
        return the output (or a list of outputs)."""
        raise NotImplementedError(f"{type(self).__name__}: a subclassed Model must define call(self, inputs, "
                                  f"training=None)")

    @property
    def layers(self):
        return list(self._tracked)

    @property
    def built(self) -> bool:
        return self._sub_shapes is not None

    def get_layer(self, name=None, index=None):
        """A layer of this model by name or by index in ``layers``."""
        layers = self.layers
        if index is not None:
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named '{name}' in model '{self.name}'; layers: {[la.name for la in layers]}")

    @property
    def _n_inputs(self):
        return len(self._input_shapes())

    @property
    def _n_outputs(self):
        return len(self._output_shapes())

    def _input_shapes(self):
        """Per-sample shapes of the inputs (a list)."""
        if self._sub_shapes is None:
            return [None]
        return self._sub_shapes[0]

    def _output_shapes(self):
        if self._sub_shapes is None:
            return [None]
        return self._sub_shapes[1]

    @property
    def input_names(self):
        return [f"input_{i + 1}" for i in range(self._n_inputs)] if self._n_inputs > 1 else ["input_1"]

    @property
    def output_names(self):
        if self._n_outputs == 1:
            return ["output_1"]
        return [f"output_{i + 1}" for i in range(self._n_outputs)]

    @property
    def input_shape(self):
        shapes = self._input_shapes()
        if shapes == [None]:
            return None
        return (None,) + tuple(shapes[0]) if len(shapes) == 1 else [(None,) + tuple(s) for s in shapes]

    @property
    def output_shape(self):
        shapes = self._output_shapes()
        if shapes == [None] or not self.built:
            return None
        return (None,) + tuple(shapes[0]) if len(shapes) == 1 else [(None,) + tuple(s) for s in shapes]

    def build(self, input_shape=None):
        """Subclassed: build by running ``call`` once on a zero batch of one
        sample per input, in inference mode (weights are created then)."""
        if input_shape is None:
            raise ValueError(f"Model '{self.name}': build needs the input shape, e.g. build((None, 784)), or "
                             f"call fit/predict on data")
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        self._build_from([tuple(int(d) for d in tuple(s)[1:]) for s in shapes])

    def _build_from(self, shapes):
        from ..backend import to_device
        xs = [to_device(np.zeros((1,) + tuple(s), np.float32), self._device) for s in shapes]
        self._sub_shapes = ([tuple(s) for s in shapes], None)
        outs = self._run(xs, False)
        self._sub_shapes = ([tuple(s) for s in shapes], [tuple(o.shape[1:]) for o in outs])
        self._flat_params = None

    def _adopt_layer(self, layer, input_shape):
        """A layer first met inside call (subclassed): build it for its input
        on the model's device and track it."""
        if all(layer is not t for t in self._tracked):
            self._tracked.append(layer)
        if layer._device != self._device:
            self._place_layers()
        if not layer.built:
            layer._build_for(list(input_shape) if isinstance(input_shape, list) else input_shape)
            self._place_layers()
            self._flat_params = None

    def _run(self, xs, training):
        """The forward pass on input values xs (a list): output values (a list)."""
        from . import engine
        tape = engine.Tape(self, xs, training)
        with tape:
            outs = self.call(xs[0] if len(xs) == 1 else list(xs), training=training)
        multi = isinstance(outs, (list, tuple))
        outs = list(outs) if multi else [outs]
        plan = tape.plan(outs)
        self._plan = self._last_plan = plan
        if any(self._fused_list):  # the plan is new each call: mark the fused outputs, take their logits
            engine.mark_fused(plan, self._fused_list)
            self._logits = [engine.fusable_output(plan, k).logits if f else None
                            for k, f in enumerate(self._fused_list)]
        return outs

    def _plan_forward(self, xs, training):
        """_run for models with a fixed plan (Sequential, functional)."""
        from . import engine
        plan = self._fit_plan or self._plan
        self._last_plan = plan
        return engine.run_forward(self, plan, xs, training, self._logits)

    def _backprop(self, dys):
        from . import engine
        engine.run_backward(self, self._last_plan, dys)

    def _forward(self, x, training):
        """One input, one output (the CUDA-graph step, MC dropout, lr_find)."""
        return self._run([x], training)[0]

    def _backward(self, dy, dy_is_dz):
        plan = self._last_plan
        step = plan.steps[-1] if plan.steps else None
        if step is not None and not step.multi_out and step.out == plan.out_slots[0] and step.fused != bool(dy_is_dz):
            from . import engine
            engine.mark_fused(plan, [bool(dy_is_dz)])
        self._backprop([dy])

    def _output_layer(self):
        """The layer that produces output 0 (its logits feed a fused loss)."""
        from . import engine
        plan = self._plan
        return engine.producer_step(plan, plan.out_slots[0]).layer

    # --------------------------------------------------------------- weights
    @property
    def weights(self):
        return [v for layer in self.layers for v in layer.weights]

    @property
    def trainable(self):
        """Whether the model trains (Keras: setting it sets every layer's
        ``trainable``, so freezing a model used inside another freezes its
        layers there too; it takes effect at the next compile/fit)."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value):
        value = bool(value)
        self.__dict__["_trainable"] = value
        for layer in self.layers:
            layer.trainable = value

    @property
    def trainable_weights(self):
        return [v for layer in self.layers for v in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [v for layer in self.layers for v in layer.non_trainable_weights]

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    @_on_model_device
    def get_weights(self):
        """NumPy copies of all weights (copied from the device on a CUDA model)."""
        return [to_host(v.value, copy=True) for v in self.weights]

    @_on_model_device
    def set_weights(self, weights):
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f"Model '{self.name}' has {len(variables)} weight arrays, got {len(weights)}")
        for var, w in zip(variables, weights):
            var.assign(w)

    def _pack_parameters(self):
        """Move every trainable weight and its gradient into two flat buffers
        on the model's device (each weight becomes a view), so the optimizer
        updates all of them in one call. Values are preserved."""
        variables = self.trainable_weights
        total = sum(v.value.size for v in variables)
        params, grads = empty((total,), device=self._device), empty((total,), device=self._device)
        offset = 0
        for v in variables:
            n = v.value.size
            params[offset:offset + n] = reshape(v.value, (n,))
            offset += n
        self._flat_params, self._flat_grads = params, grads
        self._bind_views(variables)
        self._packed_ids = [id(v) for v in variables]
        # One segment per variable: the optimizer clips per tensor and adds each
        # variable's l1/l2 penalty gradient inside its fused pass.
        sizes = [v.value.size for v in variables]
        offsets = np.zeros(len(variables) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(sizes, dtype=np.int64)
        l1 = np.array([v.regularizer.l1 if v.regularizer is not None else 0.0 for v in variables], np.float32)
        l2 = np.array([v.regularizer.l2 if v.regularizer is not None else 0.0 for v in variables], np.float32)
        has_penalty = bool(l1.any() or l2.any())
        self._segments = (offsets, l1 if has_penalty else None, l2 if has_penalty else None)
        self._constrained = [v for v in variables if v.constraint is not None]
        self._layout = [(v.path, int(v.value.size)) for v in variables]
        if self._plan is not None:
            self._plan.prepared = None  # which steps need a gradient follows the trainable set

    def _bind_views(self, variables):
        """Make each variable's value and grad views into the flat buffers, in order."""
        offset = 0
        for v in variables:
            n, shape = v.value.size, tuple(v.value.shape)
            v.value = reshape(self._flat_params[offset:offset + n], shape)
            v.grad = reshape(self._flat_grads[offset:offset + n], shape)
            v.owner = self._weak_self
            offset += n

    def _regularization_penalty(self) -> float:
        """l1/l2 penalty of the trainable weights now (added to evaluate's loss;
        computed on the host, from copies on a CUDA model)."""
        return float(sum(v.regularizer(to_host(v.value)) for v in self.trainable_weights
                         if v.regularizer is not None))

    def _ensure_packed(self):
        variables = self.trainable_weights
        if (self._flat_params is None or self._packed_ids != [id(v) for v in variables]
                or any(v.owner is not self._weak_self for v in variables)):  # (a shared layer packed by another model)
            self._pack_parameters()
        opt = self.optimizer
        if opt is not None:
            if opt._device != self._device:
                opt._place(self._device)
            if opt._layout != self._layout:
                opt.set_layout(self._layout)  # slots follow their variables when the trainable set changes

    # ---------------------------------------------------------------- device
    @property
    def device(self) -> str:
        """Where the weights live and the kernels run: "cpu" or "cuda:N"."""
        return self._device

    def to(self, device):
        """Move the model to ``device`` ("cpu", "cuda" or "cuda:N") and return
        it, as in PyTorch: every weight (trainable or not, e.g. BatchNorm's
        moving statistics) and gradient, the flat parameter and gradient
        buffers (weights stay views into them) and the optimizer's slots move;
        per-batch buffers are dropped and re-created on the device. Random
        streams are untouched, so training continues with the same dropout
        masks and shuffles. Before the model is built, the device is recorded
        and the model builds there. Data stays NumPy: fit, evaluate and
        predict copy each batch to the device, and get_weights, predict and
        the losses return host values. "cuda" is the caller's current device;
        every copy names its device, so no device is made current here."""
        dev = _backend.parse_device(device)
        if dev != "cpu":
            blockers = [b for layer in self.layers if (b := layer._device_blocker()) is not None]
            if blockers:
                raise NotImplementedError(f"model.to({device!r}): not supported on a CUDA device yet: "
                                          f"{'; '.join(blockers)}. The model stays on the {self._device}.")
            gemm = [layer.name for layer in self.layers if layer.needs_gemm]
            if gemm and not _cuda_front.blas_available():
                raise RuntimeError(f"model.to({device!r}): {', '.join(gemm)} need cuBLASLt on the GPU, which is "
                                   f"unavailable: {_cuda_front.blas_reason()}. The model stays on the "
                                   f"{self._device}.")
        if dev == self._device:
            return self
        packed = (self._flat_params is not None and self._packed_ids == [id(v) for v in self.trainable_weights]
                  and all(v.owner is self._weak_self for v in self.trainable_weights))
        moved = set()
        if packed:  # two transfers for all trainable weights; the weights stay views
            self._flat_params = to_device(self._flat_params, dev)
            self._flat_grads = to_device(self._flat_grads, dev)
            self._bind_views(self.trainable_weights)
            moved = set(self._packed_ids)
        else:
            self._flat_params = self._flat_grads = None  # packed again on the next training use
        self._device = dev
        self._place_layers(moved)
        self._batch_buffers = {}
        self._call_states = {}  # shared layers' per-call buffers follow on first use
        self._drop_graphs()
        if self.optimizer is not None:
            self.optimizer._place(dev)
        return self

    def _place_layers(self, skip=()):
        """Put every layer (and each variable not in skip, by id) on the
        model's device, dropping per-batch buffers of layers that move."""
        from ..layers.core import _BatchBuffers

        dev = self._device
        for layer in self.layers:
            self._check_device_support(layer)
            if layer._device != dev:
                layer._device = dev
                for value in vars(layer).values():
                    if isinstance(value, _BatchBuffers):
                        value.clear()
            for v in layer._variables:
                if id(v) not in skip:
                    v.value = to_device(v.value, dev)
                    v.grad = to_device(v.grad, dev)

    def _check_device_support(self, layer):
        if self._device != "cpu":
            blocker = layer._device_blocker()
            if blocker is not None:
                raise NotImplementedError(f"Model '{self.name}' is on {self._device}, but {blocker} cannot run "
                                          f"there yet; move the model to the CPU first (model.to('cpu'))")

    def _on_device(self, host, key):
        """A host batch (NumPy) as model input: the array itself on the CPU;
        on CUDA a non-blocking copy into a reused device buffer for this key
        and shape (the host array may be reused at once)."""
        if self._device == "cpu":
            return host
        buf = self._batch_buffer(key, host.shape, host.dtype.name)
        buf.copy_from(host, non_blocking=True)
        return buf

    @_on_model_device
    def save(self, filepath, overwrite=True):
        """Write the whole model (architecture, weights, compile and optimizer
        state) to one ``.deepcore`` file, atomically: see
        ``deepcore.models.load_model`` and models/serialization.py."""
        from .serialization import save_model
        save_model(self, filepath, overwrite)

    def get_config(self):
        """The architecture as a dict (Sequential and functional models; a
        subclassed model returns its constructor arguments: override it)."""
        if type(self)._run is Model._run:
            return {}
        from .serialization import model_config
        return model_config(self)["config"]

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new model from ``get_config()`` (fresh weights)."""
        from .serialization import model_from_config
        if cls is Model or cls.__name__ in ("Functional", "Sequential"):
            name = "Sequential" if cls.__name__ == "Sequential" else "Functional"
            return model_from_config({"class_name": name, "config": config}, custom_objects)
        return cls(**config)

    def to_json(self, **kwargs):
        """The architecture as JSON (``deepcore.models.model_from_json`` reads it)."""
        from .serialization import model_config
        return json.dumps(model_config(self), **kwargs)

    @_on_model_device
    def save_weights(self, filepath, overwrite=True):
        """Write all weights to a safetensors file (atomically: on failure the
        previous file is left intact). Names are "<layer>/<weight>"."""
        self._require_built("save_weights")
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"save_weights: {filepath} exists and overwrite=False")
        save_safetensors(filepath, *self._weight_tensors())

    def _weight_tensors(self):
        """({name: host array}, metadata) of the weights and, once the
        optimizer has stepped, its state (what save_weights and save write)."""
        tensors = {v.path: to_host(v.value) for v in self.weights}
        metadata = {"format": "deepcore-weights", "model": self.name}
        opt = self.optimizer
        if opt is not None and opt.built and self._flat_params is not None:
            # The optimizer's slots are flat, in the order of the packed
            # parameters: record that layout so a load can check it.
            for key, value in opt.get_state().items():
                tensors[_OPT_PREFIX + key] = value
            metadata["optimizer"] = json.dumps({"class": type(opt).__name__, "layout": self._layout})
        return tensors, metadata

    @_on_model_device
    def load_weights(self, filepath):
        """Load weights saved by save_weights; names and shapes must match."""
        self._require_built("load_weights")
        self._load_weight_tensors(*load_safetensors(filepath), filepath)

    def _load_weight_tensors(self, tensors, metadata, filepath):
        """Check {name: array} against the weights (names, shapes, float32),
        restore the optimizer's state when it fits, assign the weights."""
        tensors = dict(tensors)
        opt_state = {k[len(_OPT_PREFIX):]: tensors.pop(k) for k in list(tensors) if k.startswith(_OPT_PREFIX)}
        variables = {v.path: v for v in self.weights}
        missing = sorted(set(variables) - set(tensors))
        unexpected = sorted(set(tensors) - set(variables))
        if missing or unexpected:
            raise ValueError(f"{filepath}: weights do not match model '{self.name}': "
                             f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        for path, var in variables.items():
            t = tensors[path]
            if t.shape != var.value.shape:
                raise ValueError(f"{filepath}: weight {path!r} has shape {t.shape}, "
                                 f"the model expects {var.value.shape}")
            if t.dtype != np.float32:
                raise ValueError(f"{filepath}: weight {path!r} has dtype {t.dtype}, expected float32")
        opt_info = json.loads(metadata.get("optimizer", "null") or "null")
        if opt_state and self.optimizer is not None and opt_info is not None:
            self._restore_optimizer_state(filepath, opt_info, opt_state)
        for path, var in variables.items():
            var.assign(tensors[path])

    def _restore_optimizer_state(self, filepath, info, state):
        """Restore the saved slots and step count when they fit this model's
        optimizer; otherwise keep the loaded weights and warn (as Keras does),
        saying why the optimizer starts afresh."""
        opt = self.optimizer
        self._ensure_packed()
        layout = [tuple(item) for item in info.get("layout", [])]
        reason = None
        if info.get("class") != type(opt).__name__:
            reason = (f"the file holds {info.get('class')} state but the model is compiled with "
                      f"{type(opt).__name__}")
        elif layout != self._layout:
            reason = (f"the state was saved for trainable weights {[p for p, _ in layout]}, the model now "
                      f"trains {[p for p, _ in self._layout]}")
        if reason is not None:
            warnings.warn(f"{filepath}: weights loaded, optimizer state skipped: {reason}. Compile with the "
                          f"same optimizer and trainable layers to resume exactly.", stacklevel=3)
            return
        if not opt.built:
            opt.build(self._flat_params.size)
        opt.set_state(state)
    # --------------------------------------------------------------- compile
    @_on_model_device
    def compile(self, optimizer="sgd", loss=None, metrics=None, cuda_graphs=False, loss_weights=None):
        """Configure training. ``optimizer``, ``loss`` and ``metrics`` accept
        Keras strings ("sgd", "sparse_categorical_crossentropy", "accuracy")
        or objects.

        Several outputs: ``loss`` is one loss for every output, a list (one
        per output) or a dict by output name (an output left out has no loss);
        ``loss_weights`` a list or dict of floats (default 1.0 each): the loss
        minimized is the weighted sum. ``metrics``: a list (for every output),
        a list of lists, or a dict by output name. History then has ``loss``,
        ``<output>_loss`` and ``<output>_<metric>`` (with ``val_`` versions).

        ``cuda_graphs=True`` (opt-in; default False): on a CUDA device, fit
        and train_on_batch run the steady-state training step as a CUDA
        graph, captured once per batch size after one eager step and
        replayed; results equal the eager step's. Where a step cannot be a
        graph (TerminateOnNaN, a loss other than
        sparse_categorical_crossentropy, a layer that needs the host, several
        inputs or outputs, a layer called twice per step) it runs eagerly,
        with one RuntimeWarning per reason. Ignored on the CPU.
        ``model.cuda_graphs`` turns it off or on between steps."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _optimizers.get(optimizer)
        self.optimizer._place(self._device)
        self._compile_args = (loss, metrics, loss_weights)
        self._losses = None
        if self.built:
            self._resolve_compile()
        else:  # a subclassed model before its first call: resolved once the outputs are known
            self.loss = _losses.get(loss) if not isinstance(loss, (list, tuple, dict)) else None
            self.compiled_metrics = []
        self.cuda_graphs = cuda_graphs

    def _resolve_compile(self):
        """Per-output losses, weights and metrics from compile's arguments."""
        loss, metrics, loss_weights = self._compile_args
        names, k = self.output_names, self._n_outputs
        losses = _per_output(loss, names, "loss", _losses.get)
        if all(x is None for x in losses):
            raise ValueError(f"compile: no output of model '{self.name}' has a loss (outputs: {names})")
        weights = _per_output(1.0 if loss_weights is None else loss_weights, names, "loss_weights", float,
                              default=1.0)
        if metrics is None:
            per = [[] for _ in range(k)]
        elif isinstance(metrics, dict):
            unknown = sorted(set(metrics) - set(names))
            if unknown:
                raise ValueError(f"compile: metrics names unknown output(s) {unknown}; outputs: {names}")
            per = [list(_as_list(metrics.get(n, []))) for n in names]
        elif k > 1 and isinstance(metrics, (list, tuple)) and len(metrics) == k and \
                all(isinstance(m, (list, tuple)) or m is None for m in metrics):
            per = [list(m or []) for m in metrics]
        else:
            per = [list(_as_list(metrics)) for _ in range(k)]
        self._losses = losses
        self._loss_weights = weights
        self._out_metrics = [[_metrics.get(m, lo) for m in ms] if lo is not None else [] for ms, lo in
                             zip(per, losses)]
        self.loss = losses[0] if k == 1 else next(x for x in losses if x is not None)
        self.compiled_metrics = [m for ms in self._out_metrics for m in ms]

    def _compiled(self):
        if self._losses is None:
            self._resolve_compile()

    @property
    def cuda_graphs(self) -> bool:
        """Whether training steps on a CUDA device run as CUDA graphs (see compile)."""
        return self._cuda_graphs

    @cuda_graphs.setter
    def cuda_graphs(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"cuda_graphs must be True or False, got {value!r}")
        self._cuda_graphs = bool(value)
        self._drop_graphs()

    def _drop_graphs(self):
        if self._graphs is not None:
            self._graphs.drop()
            self._graphs = None

    def _graphable(self):
        """Why this model's step cannot be a CUDA graph whatever the step, or None."""
        if self._n_inputs != 1 or self._n_outputs != 1:
            return "the model has several inputs or outputs"
        if self._multi_call_layers or any(st.key is not None for st in (self._plan.steps if self._plan else [])):
            return "a layer is called more than once per step (shared weights)"
        if type(self)._run is Model._run:
            return "a subclassed model's call is recorded at every step"
        if self._plan is not None and (self._plan.masked or any(st.multi_out for st in self._plan.steps)):
            return "the model carries masks or has a layer with several outputs"
        return None

    def _device_train_step(self, xhs, yhs):
        """One training step of a CUDA model on a host batch: copied into the
        device batch buffers, then replayed as a CUDA graph (cuda_graphs) or
        run eagerly."""
        n = len(xhs[0])
        xbs = [self._on_device(xh, ("x", i, n)) for i, xh in enumerate(xhs)]
        ybs = [None if yh is None else self._on_device(yh, ("y", i, n)) for i, yh in enumerate(yhs)]
        if self._cuda_graphs:
            why = self._graphable()
            if why is None:
                if self._graphs is None:
                    from .graph_step import GraphTrainer
                    self._graphs = GraphTrainer(self)
                result = self._graphs.train_step(xbs[0], ybs[0], n)
                if result is not None:
                    loss, out, correct = result
                    return loss, [loss], [out], [correct]
                result = self._train_step(xbs, ybs)
                if self._graphs is not None:
                    self._graphs.eager_step_done(xbs[0], ybs[0], n)
                return result
            if why not in self._graph_warned:
                self._graph_warned.add(why)
                warnings.warn(f"Model '{self.name}': cuda_graphs=True, but the training step runs eagerly: {why}",
                              RuntimeWarning, stacklevel=4)
        return self._train_step(xbs, ybs)

    @property
    def _graph_warned(self):
        w = self.__dict__.get("_graph_warned_set")
        if w is None:
            w = self.__dict__["_graph_warned_set"] = set()
        return w

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: model '{self.name}' is not built yet; give the first layer an input "
                             f"shape (Input(shape=...) or input_shape=...) or call build()/fit() first")

    def _require_compiled(self, what):
        if self.optimizer is None:
            raise RuntimeError(f"{what}: compile the model first (model.compile(loss=..., optimizer=...))")

    def _fusion_flags(self):
        """Per output: whether its loss absorbs the output activation
        (softmax + CE, sigmoid + BCE): the loss then takes the logits."""
        from . import engine
        flags = []
        for k, lo in enumerate(self._losses):
            layer = engine.fusable_output(self._plan, k) if self._plan is not None else None
            act = getattr(getattr(layer, "activation", None), "name", None)
            flags.append(lo is not None and act is not None and act == lo.fusable_activation
                         and len(self._output_shapes()[k]) == 1
                         and not getattr(lo, "from_logits", False) and hasattr(layer, "logits"))
        return flags

    def _set_fusion(self):
        from . import engine
        self._fused_list = self._fusion_flags()
        self._logits = [None] * len(self._fused_list)
        if self._plan is not None and type(self)._run is not Model._run:
            engine.mark_fused(self._plan, self._fused_list)
        self._fused = self._fused_list[0] if len(self._fused_list) == 1 else False

    def _fusion(self):
        """Single-output models (lr_find): whether output 0's loss is fused."""
        self._compiled()
        self._set_fusion()
        return self._fused_list[0]

    # ------------------------------------------------------------ input checks
    def _structure(self, data, names, what, where):
        """data (an array, a list or a dict by name) as a list in ``names``' order."""
        k = len(names)
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(names))
            if unknown:
                raise ValueError(f"{where}: {what} has unknown name(s) {unknown}; model '{self.name}' has "
                                 f"{what}s {names}")
            return [data.get(n) for n in names]
        if isinstance(data, (list, tuple)) and k > 1:
            if len(data) != k:
                raise ValueError(f"{where}: model '{self.name}' has {k} {what}s {names}, got a list of {len(data)}")
            return list(data)
        if k > 1:
            raise ValueError(f"{where}: model '{self.name}' has {k} {what}s {names}; pass a list or a dict of "
                             f"arrays")
        if isinstance(data, (list, tuple)) and len(data) == 1 and isinstance(data[0], np.ndarray):
            return [data[0]]
        return [data]

    def _prepare_inputs(self, x, where):
        if x is None:
            raise ValueError(f"{where}: x is required")
        if not self.built and type(self)._run is Model._run:
            xs0 = x if isinstance(x, (list, tuple)) else [x]
            if isinstance(x, dict):
                raise ValueError(f"{where}: a subclassed model's inputs are positional; pass an array or a list")
            shapes = [np.asarray(a).shape[1:] for a in xs0]
            with _cuda_front.device(self._device if self._device != "cpu" else None):
                self._build_from(shapes)
        xs = self._structure(x, self.input_names, "input", where)
        out = []
        for i, a in enumerate(xs):
            label = where if len(xs) == 1 else f"{where}: input '{self.input_names[i]}'"
            out.append(self._prepare_one_x(a, label, i))
        n = {len(a) for a in out}
        if len(n) > 1:
            raise ValueError(f"{where}: the inputs have different numbers of samples "
                             f"{dict(zip(self.input_names, [len(a) for a in out]))}")
        return out

    def _prepare_one_x(self, x, where, i=0):
        if x is None:
            raise ValueError(f"{where}: x is required")
        if is_device_tensor(x):
            raise TypeError(f"{where}: x is a CUDA device tensor; pass a NumPy array (the model keeps data on the "
                            f"host and copies each batch to its device, {self._device})")
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{where}: x must be numeric, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError(f"{where}: x must be an array of samples (batch, ...), got a scalar")
        if x.shape[0] == 0:
            raise ValueError(f"{where}: x is empty (0 samples)")
        if not self.built:
            self.build((None,) + x.shape[1:])
        want = tuple(self._input_shapes()[i])
        if x.shape[1:] != want:
            raise ValueError(f"{where}: model '{self.name}' expects input of shape (batch,) + {want}, "
                             f"got {x.shape}")
        # One conversion for the whole array (kernels themselves never copy).
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = core.count_nonfinite(x)
        if bad:
            raise ValueError(f"{where}: x contains {bad} NaN or infinite values")
        return x

    def _prepare_targets(self, y, n, where):
        if y is None:
            raise ValueError(f"{where}: y is required")
        names = self.output_names
        ys = self._structure(y, names, "output", where)
        out = []
        for i, (a, lo, shape) in enumerate(zip(ys, self._losses, self._output_shapes())):
            label = f"{where}: y" if len(names) == 1 else f"{where}: y['{names[i]}']"
            if lo is None:
                out.append(None)
                continue
            if a is None:
                raise ValueError(f"{label} is missing (output '{names[i]}' has the loss {lo.name})")
            a = lo.prepare_targets(a, shape, where=label)
            if len(a) != n:
                raise ValueError(f"{where}: x has {n} samples but {label[len(where) + 2:]} has {len(a)}")
            out.append(a)
        return out

    def _prepare_xsys(self, x, y, where):
        xs = self._prepare_inputs(x, where)
        self._compiled()
        return xs, self._prepare_targets(y, len(xs[0]), where)

    # Single-input, single-output forms (lr_find, predict_mc).
    def _prepare_x(self, x, where):
        xs = self._prepare_inputs(x, where)
        if len(xs) != 1:
            raise ValueError(f"{where}: model '{self.name}' has several inputs")
        return xs[0]

    def _prepare_xy(self, x, y, where):
        xs, ys = self._prepare_xsys(x, y, where)
        if len(xs) != 1 or len(ys) != 1:
            raise ValueError(f"{where}: needs a model with one input and one output")
        return xs[0], ys[0]

    # ------------------------------------------------------------------ train
    def _batch_buffer(self, key, shape, dtype, host=False):
        """A buffer kept for reuse under key, on the model's device (on the
        host with host=True)."""
        buf = self._batch_buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = self._batch_buffers[key] = empty(shape, dtype, device="cpu" if host else self._device)
        return buf

    @_on_model_device
    def train_on_batch(self, x, y):
        """One optimizer step on (x, y) (NumPy; lists or dicts for several
        inputs or outputs); returns the batch loss (the weighted total)."""
        self._require_compiled("train_on_batch")
        xs, ys = self._prepare_xsys(x, y, "train_on_batch")
        self._ensure_packed()
        self._set_fusion()
        if self._device == "cpu":
            return self._train_step(xs, ys)[0]
        return self._device_train_step(xs, ys)[0]

    def _train_step(self, xbs, ybs):
        """(total loss, per-output losses, outputs, correct counts); single
        tensors are taken for a one-input, one-output model."""
        if not isinstance(xbs, list):
            xbs, ybs = [xbs], [ybs]
            loss, _, outs, corrects = self._train_step(xbs, ybs)
            return loss, outs[0], corrects[0]
        # guard (TerminateOnNaN): the last finite weights survive a bad step.
        guard = self._skip_nonfinite_updates
        if guard:
            self._nonfinite_update_skipped = False
            state = self._forward_state_copy()
        outs = self._run(xbs, True)
        losses, corrects, dys = [], [], []
        total = 0.0
        for k, (out, yb, lo) in enumerate(zip(outs, ybs, self._losses)):
            if lo is None:
                losses.append(None), corrects.append(None), dys.append(None)
                continue
            grad = self._batch_buffer(("grad", k, out.shape), out.shape, "float32")
            if self._fused_list[k]:
                loss, correct = lo.compute_and_count(self._logits[k], yb, grad, from_logits=True)
            else:
                loss, correct = lo.compute_and_count(out, yb, grad)
            w = self._loss_weights[k]
            if w != 1.0:
                ops(grad).axpby(0.0, grad, float(w), grad)
            total += w * loss
            losses.append(loss), corrects.append(correct), dys.append(grad)
        if guard and not math.isfinite(total):
            return self._reject_step(state, total, losses, outs, corrects)
        self._backprop(dys)
        if guard:
            if ops(self._flat_grads).count_nonfinite(self._flat_grads):
                return self._reject_step(state, total, losses, outs, corrects)
            backup = self._batch_buffer(("params_backup",), self._flat_params.shape, "float32")
            backup[...] = self._flat_params
        penalty = self.optimizer.apply(self._flat_params, self._flat_grads, self._segments)
        if guard and ops(self._flat_params).count_nonfinite(self._flat_params):
            self._flat_params[...] = backup
            return self._reject_step(state, total + penalty, losses, outs, corrects)
        for var in self._constrained:
            var.constraint.apply(var.value)
        return total + penalty, losses, outs, corrects

    def _forward_state_copy(self):
        """Copies of what a training forward updates besides the trainable
        weights: the non-trainable weights of trainable layers (e.g.
        BatchNorm's moving statistics). Frozen layers are left out."""
        return [(v, v.value.copy()) for layer in self.layers if layer.trainable for v in layer.non_trainable_weights]

    def _reject_step(self, state, loss, losses, outs, corrects):
        """Undo a non-finite step (TerminateOnNaN): the weights are already
        untouched or restored; put back the forward-updated state. The
        optimizer's slots and iteration count are not rolled back."""
        self._nonfinite_update_skipped = True
        for v, value in state:
            v.assign(value)
        return loss, losses, outs, corrects

    def _log_names(self):
        """History keys per output: (loss key or None, [metric keys])."""
        names = self.output_names
        if len(names) == 1:
            return [("loss_1", [m.name for m in self._out_metrics[0]])]
        return [(f"{n}_loss" if lo is not None else None, [f"{n}_{m.name}" for m in ms])
                for n, lo, ms in zip(names, self._losses, self._out_metrics)]

    def _logs(self, total, sums, seen):
        logs = {"loss": total / max(seen, 1)}
        multi = len(self._losses) > 1
        for (lkey, mkeys), s, ms in zip(self._log_names(), sums, self._out_metrics):
            if multi and lkey is not None:
                logs[lkey] = s / max(seen, 1)
            for key, m in zip(mkeys, ms):
                logs[key] = m.result()
        return logs

    @_on_model_device
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, seed=None,
            cache_frozen="auto"):
        """Train for ``epochs`` epochs; returns a History. Keras defaults:
        batch_size=32, shuffle=True, verbose=1 (tqdm bar per epoch). x and y:
        arrays, or lists or dicts (by input and output name) of arrays.

        ``cache_frozen`` ("auto", True or False): when a Sequential model
        starts with layers that have nothing to train and give the same
        output in training as in inference (frozen layers, BatchNormalization
        frozen, activations, Flatten; not dropout or other random layers),
        their outputs are computed once for the whole training (and
        validation) data and the rest of the model trains on them: the same
        weights as without the cache, each epoch without the frozen layers'
        cost. "auto" caches when the cached arrays take at most
        ``CACHE_FROZEN_BUDGET`` bytes (1 GiB) and says so once (with
        verbose); True caches whatever the size (ValueError if nothing can be
        cached); False never. Callbacks that call predict or evaluate during
        fit see the whole model."""
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ValueError(f"fit: initial_epoch must be an integer >= 0, got {initial_epoch!r}")
        xs, ys = self._prepare_xsys(x, y, "fit")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        n_all = len(xs[0])
        if validation_data is None and validation_split > 0:
            # Keras takes the last fraction, before shuffling.
            n_val = int(n_all * validation_split)
            if n_val == 0 or n_val == n_all:
                raise ValueError(f"fit: validation_split={validation_split} leaves an empty training or "
                                 f"validation set for {n_all} samples")
            xv, yv = [a[-n_val:] for a in xs], [None if a is None else a[-n_val:] for a in ys]
            xs, ys = [a[:-n_val] for a in xs], [None if a is None else a[:-n_val] for a in ys]
            validation = True
        elif validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            xv, yv = self._prepare_xsys(validation_data[0], validation_data[1], "fit: validation_data")
            validation = True
        else:
            validation = False
        self._ensure_packed()
        self._set_fusion()
        if cache_frozen not in ("auto", True, False):
            raise ValueError(f"fit: cache_frozen must be 'auto', True or False, got {cache_frozen!r}")
        if cache_frozen:
            cached = self._cache_frozen(xs, xv if validation else None, batch_size, cache_frozen, verbose)
            if cached is not None:
                xs, xv_cached = cached
                if validation:
                    xv = xv_cached
        try:
            return self._fit_loop(xs, ys, xv if validation else None, yv if validation else None, batch_size,
                                  epochs, verbose, callbacks, shuffle, initial_epoch, seed)
        finally:
            self._fit_plan = None

    CACHE_FROZEN_BUDGET = 1 << 30

    def _frozen_prefix(self):
        """(k, why): the first k layers of a Sequential can be cached (none: k = 0, why says)."""
        from ..layers.core import Activation, Flatten
        from ..layers.regularization import _RandomLayer
        from .sequential import Sequential
        if not isinstance(self, Sequential):
            return 0, "only a Sequential model's leading frozen layers are cached"
        k = 0
        for layer in self._layers:
            if layer.trainable_weights or isinstance(layer, _RandomLayer):
                break
            # A layer left trainable counts only if it is one of deepcore's own
            # stateless layers (a custom layer may act on every call; a
            # trainable BatchNormalization uses batch statistics in training).
            if layer.trainable and not (isinstance(layer, (Flatten, Activation))
                                        and type(layer).__module__.startswith("deepcore.")):
                break
            k += 1
        if k == len(self._layers):
            k -= 1  # something must train
        if k > 0 and not any(layer._variables for layer in self._layers[:k]):
            return 0, "no frozen layer with weights leads the model (nothing worth computing once)"
        return (k, None) if k > 0 else (0, "the model's first layer trains, is random or is not frozen")

    def _cache_frozen(self, xs, xv, batch_size, mode, verbose):
        """Cached outputs of the frozen prefix for xs (and xv), with the rest of
        the plan installed for the fit; None when nothing is cached."""
        from . import engine
        k, why = self._frozen_prefix()
        if k == 0:
            if mode is True:
                raise ValueError(f"fit(cache_frozen=True): nothing to cache: {why}")
            return None
        shape = tuple(self._layers[k - 1].output_shape)
        nbytes = 4 * int(np.prod(shape)) * (len(xs[0]) + (len(xv[0]) if xv is not None else 0))
        if mode == "auto" and nbytes > self.CACHE_FROZEN_BUDGET:
            return None
        prefix = engine.linear_plan(self._layers[:k])
        saved_plan = self._plan

        def outputs(x):
            out = np.empty((len(x),) + shape, np.float32)
            for lo in range(0, len(x), max(batch_size, 256)):
                xb = self._on_device(x[lo:lo + max(batch_size, 256)], ("cache", 0, min(len(x) - lo, max(batch_size, 256))))
                out[lo:lo + len(xb)] = to_host(engine.run_forward(self, prefix, [xb], False)[0])
            return out

        try:
            self._plan = prefix
            cx = [outputs(xs[0])]
            cv = [outputs(xv[0])] if xv is not None else None
        finally:
            self._plan = saved_plan
        rest = engine.linear_plan(self._layers[k:])
        engine.mark_fused(rest, self._fused_list)
        self._fit_plan = rest
        if verbose and not self._cache_said:
            self._cache_said = True
            print(f"fit: the first {k} layer(s) ({', '.join(la.name for la in self._layers[:k])}) are frozen and "
                  f"deterministic: their outputs are computed once ({nbytes / 2**20:.1f} MiB) and the rest of the "
                  f"model trains on them (cache_frozen=False turns this off)")
        return cx, cv

    def _fit_loop(self, xs, ys, xv, yv, batch_size, epochs, verbose, callbacks, shuffle, initial_epoch, seed):
        validation = xv is not None
        n = len(xs[0])
        steps = math.ceil(n / batch_size)
        verbose = 1 if verbose == "auto" else int(verbose)
        history = _callbacks.History()
        progbar = _callbacks.ProgbarLogger(verbose) if verbose else None
        # Keras 3's order: the user's callbacks, then History and the progress
        # bar, so these see what the user's callbacks add to the logs.
        cbs = _user_callbacks(callbacks, "fit") + [history] + ([progbar] if progbar else [])
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": n, "verbose": verbose}
        cb = _callbacks.CallbackList(cbs, self, params)
        history.params = params
        self.history = history
        self.stop_training = False
        self._skip_nonfinite_updates = False  # TerminateOnNaN turns it on for this fit
        seed, stream = _random.resolve(seed)
        out_metrics = self._out_metrics
        counted = [[m.counts_from_loss(lo) for m in ms] for ms, lo in zip(out_metrics, self._losses)]
        on_host = self._device == "cpu"  # else each batch is copied to the device
        k_out = len(ys)

        cb.call("on_train_begin", {})
        logs = None  # stays None when no epoch runs (initial_epoch >= epochs), as in Keras
        for epoch in range(initial_epoch, epochs):
            for ms in out_metrics:
                for m in ms:
                    m.reset_state()
            cb.call("on_epoch_begin", epoch, {})
            # Batches are gathered on the host in the same (Philox) order on
            # every device, then copied to the model's device (_on_device).
            order = core.philox_permutation(n, seed, stream * 1_000_003 + epoch) if shuffle else None
            loss_sum, seen = 0.0, 0
            out_sums = [0.0] * k_out
            logs = {}
            for step in range(steps):
                lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                if order is None:
                    xhs = [a[lo:hi] for a in xs]
                    yhs = [None if a is None else a[lo:hi] for a in ys]
                else:
                    idx = order[lo:hi]
                    xhs = [self._gather(a, idx, ("xh", i, hi - lo)) for i, a in enumerate(xs)]
                    yhs = [None if a is None else self._gather(a, idx, ("yh", i, hi - lo)) for i, a in enumerate(ys)]
                if cb.wants_batch_hooks:
                    cb.train_batch_begin(step, {})
                if on_host:
                    loss, losses, outs, corrects = self._train_step(xhs, yhs)
                else:
                    loss, losses, outs, corrects = self._device_train_step(xhs, yhs)
                loss_sum += loss * (hi - lo)
                seen += hi - lo
                for k in range(k_out):
                    if losses[k] is not None:
                        out_sums[k] += losses[k] * (hi - lo)
                    if out_metrics[k]:
                        _update_metrics(out_metrics[k], counted[k], corrects[k], yhs[k], outs[k])
                if cb.wants_batch_hooks or progbar is not None:
                    logs = self._logs(loss_sum, out_sums, seen)
                    if cb.wants_batch_hooks:
                        cb.train_batch_end(step, logs)
                    if progbar is not None:
                        progbar.update(step + 1, logs)
                if self.stop_training:
                    break
            logs = self._logs(loss_sum, out_sums, seen)
            if validation:
                val = self._evaluate_arrays(xv, yv, batch_size, cb)
                logs.update({"val_" + k: v for k, v in val.items()})
            # The rate at the end of the epoch (a per-step schedule evaluated
            # at optimizer.iterations), before callbacks such as
            # ReduceLROnPlateau change it; History also records it as "lr".
            logs["learning_rate"] = self.optimizer.learning_rate
            cb.call("on_epoch_end", epoch, logs)
            if self.stop_training:
                break
        cb.call("on_train_end", logs)
        return history

    def _gather(self, a, idx, key):
        buf = self._batch_buffer(key, (len(idx),) + a.shape[1:], "int32" if a.dtype == np.int32 else "float32",
                                 host=True)
        core.gather_rows(a, idx, buf)
        return buf

    # -------------------------------------------------------------- inference
    def _evaluate_arrays(self, xs, ys, batch_size, cb=None):
        """Loss and metrics over (xs, ys); cb (a CallbackList) gets the test hooks."""
        if not isinstance(xs, list):
            xs, ys = [xs], [ys]
        out_metrics = self._out_metrics
        counted = [[m.counts_from_loss(lo) for m in ms] for ms, lo in zip(out_metrics, self._losses)]
        for ms in out_metrics:
            for m in ms:
                m.reset_state()
        self._set_fusion()
        total, sums = 0.0, [0.0] * len(ys)
        penalty = self._regularization_penalty()
        batch_hooks = cb is not None and cb.wants_test_batch_hooks
        if cb is not None:
            cb.call("on_test_begin", {})
        n_all = len(xs[0])
        for step, lo in enumerate(range(0, n_all, batch_size)):
            xhs = [a[lo:lo + batch_size] for a in xs]
            n = len(xhs[0])
            if batch_hooks:
                cb.call("on_test_batch_begin", step, {})
            outs = self._run([self._on_device(xh, ("x", i, n)) for i, xh in enumerate(xhs)], False)
            for k, (out, a, loss_fn) in enumerate(zip(outs, ys, self._losses)):
                if loss_fn is None:
                    continue
                yh = a[lo:lo + batch_size]
                yb = self._on_device(yh, ("y", k, n))
                if self._fused_list[k]:
                    loss, correct = loss_fn.compute_and_count(self._logits[k], yb, None, from_logits=True)
                else:
                    loss, correct = loss_fn.compute_and_count(out, yb, None)
                sums[k] += loss * n
                total += self._loss_weights[k] * loss * n
                if out_metrics[k]:
                    _update_metrics(out_metrics[k], counted[k], correct, yh, out)
            if batch_hooks:
                seen = min(lo + batch_size, n_all)
                logs = self._logs(total, sums, seen)
                logs["loss"] += penalty
                cb.call("on_test_batch_end", step, logs)
        logs = self._logs(total, sums, n_all)
        logs["loss"] += penalty
        if cb is not None:
            cb.call("on_test_end", dict(logs))
        return logs

    @_whole_model
    @_on_model_device
    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None):
        """Loss and metrics on (x, y). Returns a scalar loss when there are no
        metrics, else [loss, *metrics] (or a dict with return_dict=True).
        ``callbacks`` get the on_test_* hooks."""
        self._require_compiled("evaluate")
        xs, ys = self._prepare_xsys(x, y, "evaluate")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
        cb = None
        if callbacks:
            params = {"steps": math.ceil(len(xs[0]) / batch_size), "batch_size": batch_size,
                      "samples": len(xs[0]), "verbose": verbose}
            cb = _callbacks.CallbackList(_user_callbacks(callbacks, "evaluate"), self, params)
        logs = self._evaluate_arrays(xs, ys, batch_size, cb)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    @_whole_model
    @_on_model_device
    def predict(self, x, batch_size=None, verbose=0, callbacks=None):
        """Model outputs for x (NumPy in, NumPy out, on any device), batch by
        batch (batch_size default 32); a list of arrays for several outputs.
        ``callbacks`` get the on_predict_* hooks; a batch's logs hold its
        outputs as {"outputs": array}, as in Keras."""
        xs = self._prepare_inputs(x, "predict")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
        n_all = len(xs[0])
        cb = None
        if callbacks:
            params = {"steps": math.ceil(n_all / batch_size), "batch_size": batch_size, "samples": n_all,
                      "verbose": verbose}
            cb = _callbacks.CallbackList(_user_callbacks(callbacks, "predict"), self, params)
            cb.call("on_predict_begin", {})
        batch_hooks = cb is not None and cb.wants_predict_batch_hooks
        results = [np.empty((n_all,) + tuple(shape), dtype=np.float32) for shape in self._output_shapes()]
        for step, lo in enumerate(range(0, n_all, batch_size)):
            if batch_hooks:
                cb.call("on_predict_batch_begin", step, {})
            xhs = [a[lo:lo + batch_size] for a in xs]
            outs = self._run([self._on_device(xh, ("x", i, len(xh))) for i, xh in enumerate(xhs)], False)
            for r, o in zip(results, outs):
                r[lo:lo + batch_size] = to_host(o)
            if batch_hooks:
                cb.call("on_predict_batch_end", step, {"outputs": results[0][lo:lo + batch_size] if len(results) == 1
                                                       else [r[lo:lo + batch_size] for r in results]})
        if cb is not None:
            cb.call("on_predict_end", {})
        return results[0] if len(results) == 1 else results

    @_whole_model
    @_on_model_device
    def predict_mc(self, x, samples=100, batch_size=None):
        """Monte Carlo dropout: (mean, std) of the outputs over ``samples``
        passes with every dropout layer active (Dropout, AlphaDropout,
        MCDropout: fresh masks per sample) and everything else in inference
        mode (BatchNorm uses its moving statistics). A model without a dropout
        layer is a ValueError (the std would be zero). See models/mc.py."""
        from .mc import predict_mc

        return predict_mc(self, x, samples, batch_size)

    @_whole_model
    @_on_model_device
    def __call__(self, x, training=None):
        """On data (NumPy, or a list/dict of arrays): the outputs as new NumPy
        arrays. On symbolic tensors, or inside a subclassed model's ``call``:
        the model used as a layer of another. Its layers are called in turn
        on the inputs (they share their weights with this model, as in
        Keras), so the outer model's ``layers`` lists them one by one rather
        than this model as one entry."""
        from . import engine
        if (engine.is_symbolic(x) or (isinstance(x, dict) and any(engine.is_symbolic(v) for v in x.values()))
                or engine.active_tape() is not None):
            return self._call_inline(x, training)
        xs = self._prepare_inputs(x, "call")
        outs = self._run([self._on_device(a, ("x", i, len(a))) for i, a in enumerate(xs)], bool(training))
        outs = [to_host(o, copy=True) for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def _call_inline(self, x, training):
        """This model as a layer: its ``call`` on symbolic tensors or inside
        another model's call (each layer call records itself there)."""
        return self.call(x, training=training)

    @_on_model_device
    def fold_batchnorm(self):
        """A new model for inference with each BatchNormalization that follows
        a linear Dense folded into its weights (see models/folding.py)."""
        from .folding import fold_batchnorm
        return fold_batchnorm(self)

    # ---------------------------------------------------------------- summary
    def summary(self, print_fn=None, line_length=None):
        """Print layer names, output shapes and parameter counts, as Keras
        does; a functional model also shows each call's inbound layers
        ("Connected to"), one row per call of a shared layer."""
        self._require_built("summary")
        print_fn = print_fn or print
        inbound = self._inbound() if hasattr(self, "_inbound") else None
        line_length = line_length or (106 if inbound is not None else 80)
        widths = [34, 28, 12] if inbound is None else [34, 28, 12, line_length - 74]
        if inbound is None:
            widths[2] = line_length - 62
        rule = "_" * line_length

        def row(cells):
            if inbound is None:
                return "".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths)))
            return "".join(str(c).ljust(w) if i != 2 else str(c).rjust(w) + "  "
                           for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        def shape_of(shape):
            if isinstance(shape, list):  # a layer with several outputs
                return "[" + ", ".join(shape_of(s) for s in shape) + "]"
            return "(None, " + ", ".join(str(d) for d in shape) + ")"

        head = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if inbound is not None else [])
        lines = [f'Model: "{self.name}"', rule, row(head), "=" * line_length]
        if inbound is None:
            for layer in self.layers:
                lines.append(row([f"{layer.name} ({type(layer).__name__})", shape_of(layer.output_shape),
                                  f"{layer.count_params():,}"]))
        else:
            for t in self.inputs:
                layer = t._node.layer
                lines.append(row([f"{layer.name} ({type(layer).__name__})", shape_of(layer.output_shape), "0", "-"]))
            counted = set()
            for st, sources in inbound:
                layer = st.layer
                params = 0 if id(layer) in counted else layer.count_params()
                counted.add(id(layer))
                out_shape = layer.output_shape
                lines.append(row([f"{layer.name} ({type(layer).__name__})", shape_of(out_shape), f"{params:,}",
                                  ", ".join(sources)]))
        trainable = sum(v.value.size for v in self.trainable_weights)
        non_trainable = sum(v.value.size for v in self.non_trainable_weights)
        lines += ["=" * line_length, f"Total params: {trainable + non_trainable:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {non_trainable:,}", rule]
        for line in lines:
            print_fn(line)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _per_output(value, names, what, convert, default=None):
    """compile's argument as one value per output: one value for all, a list
    (one per output) or a dict by output name (missing: default)."""
    k = len(names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile: {what} names unknown output(s) {unknown}; outputs: {names}")
        return [None if value.get(n, default) is None else convert(value.get(n, default)) for n in names]
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ValueError(f"compile: {what} has {len(value)} entries but the model has {k} output(s) {names}")
        return [None if v is None else convert(v) for v in value]
    return [convert(value) for _ in range(k)]


def _user_callbacks(callbacks, where):
    """callbacks= as a list, with a clear TypeError for a bare callback or a non-list."""
    if callbacks is None:
        return []
    if isinstance(callbacks, _callbacks.Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"{where}: callbacks must be a list of Callback objects, got {type(callbacks).__name__}"
                        + ("; wrap it in a list: callbacks=[...]" if isinstance(callbacks, _callbacks.Callback)
                           else ""))
    return list(callbacks)


def _update_metrics(metrics, counted, correct, y_host, out):
    """Add one batch to the metrics: those that counted[i] marks take the loss
    kernel's correct-row count (when it gave one); the rest compute on the
    output, copied to the host once if it lives on a device."""
    out_host = None
    for m, by_count in zip(metrics, counted):
        if by_count and correct is not None:
            m.update_count(correct, y_host.size)  # one label per row (per position for a sequence)
        else:
            if out_host is None:
                out_host = to_host(out)
            m.update_state(y_host, out_host)
