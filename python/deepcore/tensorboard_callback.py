"""``deepcore.callbacks.TensorBoard``: training logs as TensorBoard event
files, written by tensorboardX (the ``tensorboard`` extra).

    model.fit(..., callbacks=[dc.callbacks.TensorBoard("logs/run1", histogram_freq=1)])
    # then: tensorboard --logdir logs

Laid out as Keras lays it out, so the two runs overlay in TensorBoard:
``<log_dir>/train`` holds ``epoch_<key>`` for every training log key
(``epoch_loss``, ``epoch_accuracy``, ``epoch_learning_rate``, and the
per-layer statistics that ``GradientDiagnostics`` adds to the logs), and
``<log_dir>/validation`` holds the ``val_`` keys under the same names
(``epoch_loss``), one point per epoch. With ``update_freq=N`` (or "batch",
N=1) the train run also gets ``batch_<key>`` every N batches, at the
optimizer's step count. With ``histogram_freq=N`` every N epochs it writes a
histogram of each weight (``<layer>/<weight>``) and of its gradient from the
epoch's last batch (``<layer>/<weight>/gradient``). ``write_graph=True``
writes the graph of layers (one node per layer, with its output shape) that
TensorBoard's Graphs tab draws.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from ._optional import require
from .backend import to_host
from .callbacks import Callback
from .models import Sequential
from .utils.model_visualization import layer_graph

_tbx = require("tensorboardX", "deepcore.callbacks.TensorBoard")
from tensorboardX.proto import (attr_value_pb2, event_pb2, graph_pb2, node_def_pb2,  # noqa: E402
                                tensor_shape_pb2, versions_pb2)

__all__ = ["TensorBoard"]


class TensorBoard(Callback):
    """Write scalars, histograms and the layer graph for TensorBoard.

    Defaults as in Keras: log_dir="logs", histogram_freq=0 (no histograms),
    write_graph=True, update_freq="epoch" (no per-batch scalars).
    An epoch's scalars are written and flushed when the next epoch begins
    (so that they include what callbacks after this one add to the logs)
    and the files are closed at the end of fit."""

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, update_freq="epoch"):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, numbers.Integral) or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be an integer >= 0, got {histogram_freq!r}")
        if update_freq not in ("epoch", "batch") and (isinstance(update_freq, bool) or not isinstance(
                update_freq, numbers.Integral) or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a number of batches >= 1, "
                             f"got {update_freq!r}")
        self.histogram_freq = int(histogram_freq)
        self.write_graph = bool(write_graph)
        self.update_freq = update_freq
        self._batch_every = None if update_freq == "epoch" else (1 if update_freq == "batch" else int(update_freq))
        self._writers = {}
        self._batches = 0
        self._pending = None  # (epoch, logs) not yet written

    def _writer(self, run):
        """The SummaryWriter of run ("train" or "validation"), opened on first use."""
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writers[run] = _tbx.SummaryWriter(os.path.join(self.log_dir, run))
        return writer

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs=None):
        os.makedirs(self.log_dir, exist_ok=True)
        self._batches = 0
        self._pending = None
        if self.write_graph:
            self._write_graph()

    def _batch_hook_idle(self, hook):
        # Per-epoch logging needs no batch hook: let fit skip per-batch dispatch.
        return self._batch_every is None and getattr(type(self), hook) is getattr(TensorBoard, hook)

    def on_train_batch_end(self, batch, logs=None):
        if self._batch_every is None:
            return
        self._batches += 1
        if self._batches % self._batch_every == 0:
            step = self.model.optimizer.iterations
            writer = self._writer("train")
            for key, value in _scalars(logs):
                writer.add_scalar(f"batch_{key}", value, step)

    def on_epoch_begin(self, epoch, logs=None):
        self._write_epoch()

    def on_epoch_end(self, epoch, logs=None):
        # The scalars are written when the next epoch begins (or training
        # ends): callbacks after this one may still add to this epoch's logs
        # (GradientDiagnostics adds its per-layer statistics).
        self._pending = (epoch, logs)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._write_histograms(epoch)

    def on_train_end(self, logs=None):
        self._write_epoch()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _write_epoch(self):
        if self._pending is None:
            return
        epoch, logs = self._pending
        self._pending = None
        for key, value in _scalars(logs):
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(run).add_scalar(f"epoch_{name}", value, epoch)
        for writer in self._writers.values():
            writer.flush()

    # --------------------------------------------------------------- content
    def _write_histograms(self, epoch):
        writer = self._writer("train")
        for v in self.model.weights:
            writer.add_histogram(v.path, np.asarray(v.numpy(), dtype=np.float64), epoch)
        for v in self.model.trainable_weights:
            writer.add_histogram(f"{v.path}/gradient", np.asarray(to_host(v.grad), dtype=np.float64), epoch)

    def _write_graph(self):
        if not isinstance(self.model, Sequential):
            return  # layer_graph draws Sequential models
        nodes, edges = layer_graph(self.model)
        inputs = {}
        for a, b in edges:
            inputs.setdefault(b, []).append(a)
        graph = graph_pb2.GraphDef(versions=versions_pb2.VersionDef(producer=22))
        for node in nodes:
            shape = tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else int(d))
                     for d in node.output_shape])
            attr = {"_output_shapes": attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(shape=[shape]))}
            if node.activation is not None:
                attr["activation"] = attr_value_pb2.AttrValue(s=node.activation.encode())
            graph.node.append(node_def_pb2.NodeDef(name=node.name, op=node.class_name, input=inputs.get(node.name, []),
                                                   attr=attr))
        self._writer("train").file_writer.add_event(event_pb2.Event(graph_def=graph.SerializeToString()))

    def get_config(self):
        return {"log_dir": self.log_dir, "histogram_freq": self.histogram_freq, "write_graph": self.write_graph,
                "update_freq": self.update_freq}


def _scalars(logs):
    """(key, float) for each numeric log entry."""
    for key, value in (logs or {}).items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield key, float(value)
        elif isinstance(value, np.ndarray) and value.size == 1:
            yield key, float(value)
