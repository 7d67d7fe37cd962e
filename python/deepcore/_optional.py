"""Optional dependencies: one place that imports them and, when one is
missing, says which extra installs it.

deepcore's core needs only NumPy, OpenBLAS and tqdm. The ecosystem pieces
build on the libraries people already use, each behind an extra:

    tune         optuna                      deepcore.tuner
    sklearn      scikit-learn                deepcore.wrappers
    tensorboard  tensorboardX, tensorboard   deepcore.callbacks.TensorBoard
    plot         matplotlib, pydot           deepcore.plot, History.plot, deepcore.utils.plot_model

They are imported when a feature is first used, never by ``import deepcore``.
"""
from __future__ import annotations

import importlib

#: module -> (extra, the package pip installs)
_EXTRAS = {
    "optuna": ("tune", "optuna"),
    "sklearn": ("sklearn", "scikit-learn"),
    "tensorboardX": ("tensorboard", "tensorboardX"),
    "matplotlib": ("plot", "matplotlib"),
    "pydot": ("plot", "pydot"),
}


def require(module: str, feature: str):
    """Import ``module`` for ``feature``, or raise an ImportError naming the
    extra to install (``pip install "deepcore[tune]"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra, package = _EXTRAS[module.split(".")[0]]
        raise ImportError(f"{feature} needs {package}, which is not installed: pip install \"deepcore[{extra}]\" "
                          f"(or pip install {package})") from e
