"""Activation functions by name, as Keras spells them.

An activation is resolved to a kernel code plus its parameters (``alpha`` for
leaky ReLU / ELU, ``beta`` for Swish); Dense fuses it into its epilogue, the
``Activation`` layer runs it standalone. Each name is also a function on
arrays: ``deepcore.activations.relu(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import empty, is_device_tensor, ops

_CODES = {
    "linear": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "elu": 5, "selu": 6,
    "gelu": 7, "gelu_tanh": 8, "swish": 9, "mish": 10, "softplus": 11, "softmax": 12,
}
_ALIASES = {None: "linear", "silu": "swish", "gelu_approximate": "gelu_tanh"}


@dataclass(frozen=True)
class ActivationSpec:
    """A resolved activation: its Keras name, kernel code and parameters."""

    name: str
    alpha: float = 0.0
    beta: float = 1.0

    @property
    def code(self) -> int:
        return _CODES[self.name]

    # The derivative of these is a function of the output alone, so Dense may
    # write the output over the pre-activation buffer.
    @property
    def backward_from_output(self) -> bool:
        return self.name in ("linear", "sigmoid", "tanh", "softmax")

    def __call__(self, x):
        """The activation of x as a new tensor on x's device (a NumPy array for host input)."""
        if not is_device_tensor(x):
            x = np.ascontiguousarray(x, dtype=np.float32)
        y = empty(x.shape, like=x)
        ops(x).activation_forward(self.code, x, y, self.alpha, self.beta)
        return y

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta}


# Keras defaults: leaky_relu negative_slope=0.2, elu alpha=1.0, swish beta=1.
_DEFAULT_PARAMS = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 1.0}}


def get(identifier) -> ActivationSpec:
    """Resolve a name, None, an ActivationSpec or one of this module's
    functions to an ActivationSpec. Raises ValueError listing the known names."""
    if isinstance(identifier, ActivationSpec):
        return identifier
    if callable(identifier) and getattr(identifier, "_deepcore_activation", None):
        return identifier._deepcore_activation
    if identifier is None or isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name in _CODES:
            return ActivationSpec(name, **_DEFAULT_PARAMS.get(name, {}))
    known = ", ".join(sorted(set(_CODES) | {k for k in _ALIASES if k}))
    raise ValueError(f"Unknown activation {identifier!r}; expected one of: {known}")


def _make(name):
    spec = get(name)

    def fn(x, **params):
        s = ActivationSpec(spec.name, params.get("alpha", params.get("negative_slope", spec.alpha)),
                           params.get("beta", spec.beta)) if params else spec
        return s(x)

    fn.__name__ = name
    fn.__doc__ = f"Apply the {name} activation elementwise (softmax: over the last axis)."
    fn._deepcore_activation = spec
    return fn


linear = _make("linear")
sigmoid = _make("sigmoid")
tanh = _make("tanh")
relu = _make("relu")
leaky_relu = _make("leaky_relu")
elu = _make("elu")
selu = _make("selu")
gelu = _make("gelu")
gelu_tanh = _make("gelu_tanh")
swish = _make("swish")
silu = swish
mish = _make("mish")
softplus = _make("softplus")
softmax = _make("softmax")
