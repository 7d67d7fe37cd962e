from .engine import KerasTensor
from .functional import Functional
from .model import Model
from .sequential import Sequential
from .serialization import load_model, model_from_json, register_serializable

__all__ = ["Model", "Sequential", "Functional", "KerasTensor", "load_model", "model_from_json",
           "register_serializable", "clone_model"]


def clone_model(model, input_tensors=None):
    """A new model with the same architecture and fresh weights (Keras's
    clone_model): layers are made again from their configs, so nothing is
    shared with ``model``."""
    if input_tensors is not None:
        raise NotImplementedError("clone_model(input_tensors=...) is not supported yet")
    from .serialization import model_config, model_from_config
    return model_from_config(model_config(model))
