"""Layers with Keras names. Each module lists its public layers in __all__."""
from . import activation_layers, convolutional, core, merge, normalization, pooling, regularization, reshaping
from .activation_layers import *  # noqa: F401,F403
from .base import Layer, Variable
from .convolutional import *  # noqa: F401,F403
from .core import *  # noqa: F401,F403
from .merge import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .regularization import *  # noqa: F401,F403
from .reshaping import *  # noqa: F401,F403

__all__ = ["Layer", "Variable"] + core.__all__ + convolutional.__all__ + pooling.__all__ + normalization.__all__ \
    + regularization.__all__ + activation_layers.__all__ + merge.__all__ + reshaping.__all__
