"""Layers with Keras names."""
from .base import Layer, Variable
from .core import Activation, Dense, Flatten, Input, InputLayer

__all__ = ["Layer", "Variable", "Input", "InputLayer", "Dense", "Flatten", "Activation"]
