"""deepcore: train deep neural networks with a Keras-style API on fused C++ kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _native  # noqa: F401  (loads OpenBLAS and the kernels first)
from .threads import register_threadpoolctl_controller

register_threadpoolctl_controller(__version__)  # threadpoolctl then lists and limits deepcore's pool
from . import (activations, callbacks, constraints, cuda, datasets, diagnostics, initializers, layers, losses,
               metrics, optimizers, regularizers, schedules, sparsity)
from .lr_finder import lr_find
from .backend import get_num_threads, set_num_threads
from .layers import *  # noqa: F401,F403
from .models import Model, Sequential
from .perceptron import Perceptron
from .random import set_random_seed

__all__ = [
    "activations", "callbacks", "constraints", "cuda", "datasets", "diagnostics", "initializers", "layers", "losses", "metrics",
    "optimizers", "regularizers", "schedules", "sparsity", "lr_find", "Sequential", "Model", "Perceptron",
    "set_random_seed", "set_num_threads", "get_num_threads", "__version__",
] + [name for name in layers.__all__ if name not in ("Layer", "Variable")]

# Submodules built on optional dependencies, imported on first use so that
# `import deepcore` never imports optuna, scikit-learn, tensorboardX or
# matplotlib; without its extra, such a module raises an ImportError that
# names the extra (deepcore._optional).
_LAZY = ("plot", "tuner", "utils", "wrappers")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
