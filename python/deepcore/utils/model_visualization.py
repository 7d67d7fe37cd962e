"""A model's graph of layers: as data (``layer_graph``, which the TensorBoard
callback also draws from), as a pydot graph (``model_to_dot``) and as a
picture (``plot_model``, rendered by Graphviz's ``dot``), as in Keras:

    dc.utils.plot_model(model, "model.png", show_shapes=True)
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .._optional import require
from ..models import Sequential

__all__ = ["LayerNode", "layer_graph", "model_to_dot", "plot_model"]


@dataclass(frozen=True)
class LayerNode:
    """One node of the graph: the input or a layer."""
    name: str
    class_name: str
    output_shape: tuple   # with the batch axis as None
    activation: str | None
    params: int


def _shape(shape):
    return (None,) + tuple(int(d) for d in shape)


def layer_graph(model):
    """The model's layers as (nodes, edges): nodes in execution order, the
    input first, and edges as (from, to) node names. A Sequential model is a
    chain; it must be built (its input shape known)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"layer_graph: a Sequential model is expected, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"layer_graph: model '{model.name}' is not built yet; give the first layer an input shape "
                         f"or call model.build(input_shape) first")
    nodes = [LayerNode(f"{model.name}_input", "InputLayer", tuple(model.input_shape), None, 0)]
    for layer in model.layers:
        activation = getattr(getattr(layer, "activation", None), "name", None)
        nodes.append(LayerNode(layer.name, type(layer).__name__, _shape(layer.output_shape), activation,
                               layer.count_params()))
    edges = [(a.name, b.name) for a, b in zip(nodes, nodes[1:])]
    return nodes, edges


def _format_shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def model_to_dot(model, show_shapes=False, show_layer_names=True, rankdir="TB", dpi=96,
                 show_layer_activations=False, show_trainable=False):
    """The graph as a ``pydot.Dot``: one box per layer labelled with its name
    and class (and, on request, its output shape and activation), arrows in
    the direction data flows. Defaults as in Keras: show_shapes=False,
    show_layer_names=True, rankdir="TB", dpi=96."""
    pydot = require("pydot", "deepcore.utils.model_to_dot")
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"model_to_dot: rankdir must be 'TB' or 'LR', got {rankdir!r}")
    nodes, edges = layer_graph(model)
    trainable = {layer.name: layer.trainable for layer in model.layers}
    dot = pydot.Dot(graph_type="digraph", rankdir=rankdir, dpi=str(dpi), concentrate="true")
    dot.set_node_defaults(shape="record", fontname="Helvetica", fontsize="11")
    for node in nodes:
        title = f"{node.name} ({node.class_name})" if show_layer_names else node.class_name
        fields = [title]
        if show_layer_activations and node.activation is not None:
            fields.append(f"activation: {node.activation}")
        if show_shapes:
            fields.append(f"output: {_format_shape(node.output_shape)}")
        if show_trainable and node.name in trainable:
            fields.append(f"trainable: {trainable[node.name]}")
        label = "{" + "|".join(_escape(f) for f in fields) + "}"
        dot.add_node(pydot.Node(_quote(node.name), label=label))
    for a, b in edges:
        dot.add_edge(pydot.Edge(_quote(a), _quote(b)))
    return dot


def _escape(text):
    """Text safe inside a Graphviz record label."""
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


def _quote(name):
    return '"' + name.replace('"', '\\"') + '"'


def plot_model(model, to_file="model.png", show_shapes=False, show_layer_names=True, rankdir="TB", dpi=96,
               show_layer_activations=False, show_trainable=False):
    """Draw the model to ``to_file`` (.png, .svg, .pdf, ... by its extension;
    .dot writes the Graphviz source and needs no Graphviz) and return the
    pydot graph. Rendering needs Graphviz's ``dot`` program (Debian:
    apt-get install graphviz) and pydot (pip install "deepcore[plot]")."""
    dot = model_to_dot(model, show_shapes=show_shapes, show_layer_names=show_layer_names, rankdir=rankdir,
                       dpi=dpi, show_layer_activations=show_layer_activations, show_trainable=show_trainable)
    to_file = os.fspath(to_file)
    extension = os.path.splitext(to_file)[1][1:].lower() or "png"
    if extension == "dot":
        with open(to_file, "w") as f:
            f.write(dot.to_string())
        return dot
    if shutil.which("dot") is None:
        raise ImportError(f"plot_model: rendering {to_file!r} needs Graphviz's 'dot' program, which is not on "
                          f"PATH: install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                          f"graphviz), or write the Graphviz source with to_file='model.dot'")
    dot.write(to_file, format=extension)
    return dot
