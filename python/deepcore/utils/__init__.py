"""Keras's ``keras.utils`` names that deepcore has: ``plot_model`` and
``model_to_dot`` (pydot and Graphviz, the ``plot`` extra)."""
from __future__ import annotations

from .model_visualization import layer_graph, model_to_dot, plot_model

__all__ = ["layer_graph", "model_to_dot", "plot_model"]
