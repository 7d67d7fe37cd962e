"""deepcore: train deep neural networks with a Keras-style API on fused C++ kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _native  # noqa: F401  (loads OpenBLAS and the kernels first)
from . import activations, callbacks, datasets, initializers, layers, losses, metrics, optimizers
from .backend import get_num_threads, set_num_threads
from .layers import Activation, Dense, Flatten, Input, InputLayer
from .models import Model, Sequential
from .perceptron import Perceptron
from .random import set_random_seed

__all__ = [
    "activations", "callbacks", "datasets", "initializers", "layers", "losses", "metrics", "optimizers",
    "Sequential", "Model", "Dense", "Flatten", "Activation", "Input", "InputLayer", "Perceptron",
    "set_random_seed", "set_num_threads", "get_num_threads", "__version__",
]
