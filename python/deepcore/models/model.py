"""The training engine shared by every model: compile, fit, evaluate, predict,
summary and weights I/O. Subclasses provide the graph: ``_build_graph``,
``_forward(x, training)`` and ``_backward(dy, dy_is_dz)``."""
from __future__ import annotations

import functools
import json
import math
import os
import warnings

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


class Model:
    def __init__(self, name=None):
        self.name = name or "model"
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

    # --------------------------------------------------------- graph (subclass)
    @property
    def layers(self):
        raise NotImplementedError

    @property
    def built(self) -> bool:
        raise NotImplementedError

    @property
    def input_shape(self):
        raise NotImplementedError

    @property
    def output_shape(self):
        raise NotImplementedError

    def build(self, input_shape=None):
        raise NotImplementedError

    def _forward(self, x, training):
        raise NotImplementedError

    def _backward(self, dy, dy_is_dz):
        raise NotImplementedError

    def _output_layer(self):
        raise NotImplementedError

    # --------------------------------------------------------------- weights
    @property
    def weights(self):
        return [v for layer in self.layers for v in layer.weights]

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

    def _bind_views(self, variables):
        """Make each variable's value and grad views into the flat buffers, in order."""
        offset = 0
        for v in variables:
            n, shape = v.value.size, tuple(v.value.shape)
            v.value = reshape(self._flat_params[offset:offset + n], shape)
            v.grad = reshape(self._flat_grads[offset:offset + n], shape)
            offset += n

    def _regularization_penalty(self) -> float:
        """l1/l2 penalty of the trainable weights now (added to evaluate's loss;
        computed on the host, from copies on a CUDA model)."""
        return float(sum(v.regularizer(to_host(v.value)) for v in self.trainable_weights
                         if v.regularizer is not None))

    def _ensure_packed(self):
        if self._flat_params is None or self._packed_ids != [id(v) for v in self.trainable_weights]:
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
        packed = self._flat_params is not None and self._packed_ids == [id(v) for v in self.trainable_weights]
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
    def save_weights(self, filepath, overwrite=True):
        """Write all weights to a safetensors file (atomically: on failure the
        previous file is left intact). Names are "<layer>/<weight>"."""
        self._require_built("save_weights")
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"save_weights: {filepath} exists and overwrite=False")
        tensors = {v.path: to_host(v.value) for v in self.weights}
        metadata = {"format": "deepcore-weights", "model": self.name}
        opt = self.optimizer
        if opt is not None and opt.built and self._flat_params is not None:
            # The optimizer's slots are flat, in the order of the packed
            # parameters: record that layout so a load can check it.
            for key, value in opt.get_state().items():
                tensors[_OPT_PREFIX + key] = value
            metadata["optimizer"] = json.dumps({"class": type(opt).__name__, "layout": self._layout})
        save_safetensors(filepath, tensors, metadata)

    @_on_model_device
    def load_weights(self, filepath):
        """Load weights saved by save_weights; names and shapes must match."""
        self._require_built("load_weights")
        tensors, metadata = load_safetensors(filepath)
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
    def compile(self, optimizer="sgd", loss=None, metrics=None, cuda_graphs=False):
        """Configure training. ``optimizer``, ``loss`` and ``metrics`` accept
        Keras strings ("sgd", "sparse_categorical_crossentropy", "accuracy")
        or objects.

        ``cuda_graphs=True`` (opt-in; default False): on a CUDA device, fit
        and train_on_batch run the steady-state training step as a CUDA
        graph, captured once per batch size after one eager step and
        replayed; results equal the eager step's. Where a step cannot be a
        graph (TerminateOnNaN, a loss other than
        sparse_categorical_crossentropy, a layer that needs the host) it
        runs eagerly, with one RuntimeWarning per reason. Ignored on the
        CPU. ``model.cuda_graphs`` turns it off or on between steps."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _optimizers.get(optimizer)
        self.optimizer._place(self._device)
        self.loss = _losses.get(loss)
        self.compiled_metrics = [_metrics.get(m, self.loss) for m in (metrics or [])]
        self.cuda_graphs = cuda_graphs

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

    def _device_train_step(self, xh, yh):
        """One training step of a CUDA model on a host batch: copied into the
        device batch buffers, then replayed as a CUDA graph (cuda_graphs) or
        run eagerly."""
        n = len(xh)
        xb, yb = self._on_device(xh, ("x", n)), self._on_device(yh, ("y", n))
        if self._cuda_graphs:
            if self._graphs is None:
                from .graph_step import GraphTrainer
                self._graphs = GraphTrainer(self)
            result = self._graphs.train_step(xb, yb, n)
            if result is not None:
                return result
            result = self._train_step(xb, yb)
            if self._graphs is not None:
                self._graphs.eager_step_done(xb, yb, n)
            return result
        return self._train_step(xb, yb)

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: model '{self.name}' is not built yet; give the first layer an input "
                             f"shape (Input(shape=...) or input_shape=...) or call build()/fit() first")

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: compile the model first (model.compile(loss=..., optimizer=...))")

    def _fusion(self):
        """Whether the loss absorbs the output activation (softmax + CE, sigmoid + BCE)."""
        out = self._output_layer()
        act = getattr(getattr(out, "activation", None), "name", None)
        return (act is not None and act == self.loss.fusable_activation
                and not getattr(self.loss, "from_logits", False) and hasattr(out, "logits"))

    # ------------------------------------------------------------ input checks
    def _prepare_x(self, x, where):
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
        want = tuple(self.input_shape[1:])
        if x.shape[1:] != want:
            raise ValueError(f"{where}: model '{self.name}' expects input of shape (batch,) + {want}, "
                             f"got {x.shape}")
        # One conversion for the whole array (kernels themselves never copy).
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = core.count_nonfinite(x)
        if bad:
            raise ValueError(f"{where}: x contains {bad} NaN or infinite values")
        return x

    def _prepare_xy(self, x, y, where):
        x = self._prepare_x(x, where)
        if y is None:
            raise ValueError(f"{where}: y is required")
        y = self.loss.prepare_targets(y, self.output_shape[1:], where=f"{where}: y")
        if len(y) != len(x):
            raise ValueError(f"{where}: x has {len(x)} samples but y has {len(y)}")
        return x, y

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
        """One optimizer step on (x, y) (NumPy); returns the batch loss."""
        self._require_compiled("train_on_batch")
        x, y = self._prepare_xy(x, y, "train_on_batch")
        self._ensure_packed()
        self._fused = self._fusion()
        if self._device == "cpu":
            return self._train_step(x, y)[0]
        return self._device_train_step(x, y)[0]

    def _train_step(self, xb, yb):
        # guard (TerminateOnNaN): the last finite weights survive a bad step.
        guard = self._skip_nonfinite_updates
        if guard:
            self._nonfinite_update_skipped = False
            state = self._forward_state_copy()
        out = self._forward(xb, True)
        grad = self._batch_buffer(("grad", out.shape), out.shape, "float32")
        if self._fused:
            loss, correct = self.loss.compute_and_count(self._output_layer().logits, yb, grad, from_logits=True)
        else:
            loss, correct = self.loss.compute_and_count(out, yb, grad)
        if guard and not math.isfinite(loss):
            return self._reject_step(state, loss, out, correct)
        self._backward(grad, self._fused)
        if guard:
            if ops(self._flat_grads).count_nonfinite(self._flat_grads):
                return self._reject_step(state, loss, out, correct)
            backup = self._batch_buffer(("params_backup",), self._flat_params.shape, "float32")
            backup[...] = self._flat_params
        penalty = self.optimizer.apply(self._flat_params, self._flat_grads, self._segments)
        if guard and ops(self._flat_params).count_nonfinite(self._flat_params):
            self._flat_params[...] = backup
            return self._reject_step(state, loss + penalty, out, correct)
        for var in self._constrained:
            var.constraint.apply(var.value)
        return loss + penalty, out, correct

    def _forward_state_copy(self):
        """Copies of what a training forward updates besides the trainable
        weights: the non-trainable weights of trainable layers (e.g.
        BatchNorm's moving statistics). Frozen layers are left out."""
        return [(v, v.value.copy()) for layer in self.layers if layer.trainable for v in layer.non_trainable_weights]

    def _reject_step(self, state, loss, out, correct):
        """Undo a non-finite step (TerminateOnNaN): the weights are already
        untouched or restored; put back the forward-updated state. The
        optimizer's slots and iteration count are not rolled back."""
        self._nonfinite_update_skipped = True
        for v, value in state:
            v.assign(value)
        return loss, out, correct

    @_on_model_device
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, seed=None):
        """Train for ``epochs`` epochs; returns a History. Keras defaults:
        batch_size=32, shuffle=True, verbose=1 (tqdm bar per epoch)."""
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ValueError(f"fit: initial_epoch must be an integer >= 0, got {initial_epoch!r}")
        x, y = self._prepare_xy(x, y, "fit")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        if validation_data is None and validation_split > 0:
            # Keras takes the last fraction, before shuffling.
            n_val = int(len(x) * validation_split)
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves an empty training or "
                                 f"validation set for {len(x)} samples")
            x, y, validation_data = x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            xv, yv = self._prepare_xy(validation_data[0], validation_data[1], "fit: validation_data")
        self._ensure_packed()
        self._fused = self._fusion()

        n = len(x)
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
        metrics = self.compiled_metrics
        counted = [m.counts_from_loss(self.loss) for m in metrics]
        on_host = self._device == "cpu"  # else each batch is copied to the device

        cb.call("on_train_begin", {})
        logs = None  # stays None when no epoch runs (initial_epoch >= epochs), as in Keras
        for epoch in range(initial_epoch, epochs):
            for m in metrics:
                m.reset_state()
            cb.call("on_epoch_begin", epoch, {})
            # Batches are gathered on the host in the same (Philox) order on
            # every device, then copied to the model's device (_on_device).
            order = core.philox_permutation(n, seed, stream * 1_000_003 + epoch) if shuffle else None
            loss_sum, seen = 0.0, 0
            logs = {}
            for step in range(steps):
                lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                if order is None:
                    xh, yh = x[lo:hi], y[lo:hi]
                else:
                    idx = order[lo:hi]
                    xh = self._batch_buffer(("xh", hi - lo), (hi - lo,) + x.shape[1:], "float32", host=True)
                    yh = self._batch_buffer(("yh", hi - lo), (hi - lo,) + y.shape[1:],
                                            "int32" if y.dtype == np.int32 else "float32", host=True)
                    core.gather_rows(x, idx, xh)
                    core.gather_rows(y, idx, yh)
                if cb.wants_batch_hooks:
                    cb.train_batch_begin(step, {})
                if on_host:
                    loss, out, correct = self._train_step(xh, yh)
                else:
                    loss, out, correct = self._device_train_step(xh, yh)
                loss_sum += loss * (hi - lo)
                seen += hi - lo
                if metrics:
                    _update_metrics(metrics, counted, correct, yh, out)
                if cb.wants_batch_hooks or progbar is not None:
                    logs = {"loss": loss_sum / seen, **{m.name: m.result() for m in metrics}}
                    if cb.wants_batch_hooks:
                        cb.train_batch_end(step, logs)
                    if progbar is not None:
                        progbar.update(step + 1, logs)
                if self.stop_training:
                    break
            logs = {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in metrics}}
            if validation_data is not None:
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

    # -------------------------------------------------------------- inference
    def _evaluate_arrays(self, x, y, batch_size, cb=None):
        """Loss and metrics over (x, y); cb (a CallbackList) gets the test hooks."""
        metrics = self.compiled_metrics
        counted = [m.counts_from_loss(self.loss) for m in metrics]
        for m in metrics:
            m.reset_state()
        total = 0.0
        fused = self._fusion()
        penalty = self._regularization_penalty()
        batch_hooks = cb is not None and cb.wants_test_batch_hooks
        if cb is not None:
            cb.call("on_test_begin", {})
        for step, lo in enumerate(range(0, len(x), batch_size)):
            xh, yh = x[lo:lo + batch_size], y[lo:lo + batch_size]
            n = len(xh)
            if batch_hooks:
                cb.call("on_test_batch_begin", step, {})
            out = self._forward(self._on_device(xh, ("x", n)), False)
            yb = self._on_device(yh, ("y", n))
            if fused:
                loss, correct = self.loss.compute_and_count(self._output_layer().logits, yb, None, from_logits=True)
            else:
                loss, correct = self.loss.compute_and_count(out, yb, None)
            total += loss * n
            if metrics:
                _update_metrics(metrics, counted, correct, yh, out)
            if batch_hooks:
                seen = min(lo + batch_size, len(x))
                cb.call("on_test_batch_end", step, {"loss": total / seen + penalty,
                                                    **{m.name: m.result() for m in metrics}})
        logs = {"loss": total / len(x) + penalty, **{m.name: m.result() for m in metrics}}
        if cb is not None:
            cb.call("on_test_end", dict(logs))
        return logs

    @_on_model_device
    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None):
        """Loss and metrics on (x, y). Returns a scalar loss when there are no
        metrics, else [loss, *metrics] (or a dict with return_dict=True).
        ``callbacks`` get the on_test_* hooks."""
        self._require_compiled("evaluate")
        x, y = self._prepare_xy(x, y, "evaluate")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
        cb = None
        if callbacks:
            params = {"steps": math.ceil(len(x) / batch_size), "batch_size": batch_size, "samples": len(x),
                      "verbose": verbose}
            cb = _callbacks.CallbackList(_user_callbacks(callbacks, "evaluate"), self, params)
        logs = self._evaluate_arrays(x, y, batch_size, cb)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    @_on_model_device
    def predict(self, x, batch_size=None, verbose=0, callbacks=None):
        """Model outputs for x (NumPy in, NumPy out, on any device), batch by
        batch (batch_size default 32).
        ``callbacks`` get the on_predict_* hooks; a batch's logs hold its
        outputs as {"outputs": array}, as in Keras."""
        x = self._prepare_x(x, "predict")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
        cb = None
        if callbacks:
            params = {"steps": math.ceil(len(x) / batch_size), "batch_size": batch_size, "samples": len(x),
                      "verbose": verbose}
            cb = _callbacks.CallbackList(_user_callbacks(callbacks, "predict"), self, params)
            cb.call("on_predict_begin", {})
        batch_hooks = cb is not None and cb.wants_predict_batch_hooks
        out = np.empty((len(x),) + tuple(self.output_shape[1:]), dtype=np.float32)
        for step, lo in enumerate(range(0, len(x), batch_size)):
            if batch_hooks:
                cb.call("on_predict_batch_begin", step, {})
            xh = x[lo:lo + batch_size]
            out[lo:lo + batch_size] = to_host(self._forward(self._on_device(xh, ("x", len(xh))), False))
            if batch_hooks:
                cb.call("on_predict_batch_end", step, {"outputs": out[lo:lo + batch_size]})
        if cb is not None:
            cb.call("on_predict_end", {})
        return out

    @_on_model_device
    def predict_mc(self, x, samples=100, batch_size=None):
        """Monte Carlo dropout: (mean, std) of the outputs over ``samples``
        passes with MCDropout layers active and the rest in inference mode."""
        from .mc import predict_mc

        return predict_mc(self, x, samples, batch_size)

    @_on_model_device
    def __call__(self, x, training=False):
        """The outputs for x (NumPy) as a new NumPy array."""
        x = self._prepare_x(x, "call")
        return to_host(self._forward(self._on_device(x, ("x", len(x))), training), copy=True)

    @_on_model_device
    def fold_batchnorm(self):
        """A new model for inference with each BatchNormalization that follows
        a linear Dense folded into its weights (see models/folding.py)."""
        from .folding import fold_batchnorm
        return fold_batchnorm(self)

    # ---------------------------------------------------------------- summary
    def summary(self, print_fn=None, line_length=80):
        """Print layer names, output shapes and parameter counts, as Keras does."""
        self._require_built("summary")
        print_fn = print_fn or print
        widths = [34, 28, line_length - 62]
        rule = "_" * line_length

        def row(cells):
            return "".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        lines = [f'Model: "{self.name}"', rule, row(["Layer (type)", "Output Shape", "Param #"]), "=" * line_length]
        for layer in self.layers:
            shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
            lines.append(row([f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"]))
        trainable = sum(v.value.size for v in self.trainable_weights)
        non_trainable = sum(v.value.size for v in self.non_trainable_weights)
        lines += ["=" * line_length, f"Total params: {trainable + non_trainable:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {non_trainable:,}", rule]
        for line in lines:
            print_fn(line)


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
            m.update_count(correct, len(y_host))
        else:
            if out_host is None:
                out_host = to_host(out)
            m.update_state(y_host, out_host)
