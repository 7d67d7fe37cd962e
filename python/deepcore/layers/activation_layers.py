"""Activation layers with parameters or state, with Keras names and defaults:
LeakyReLU, PReLU, RReLU, ELU, Swish, GELU, Mish.

LeakyReLU, ELU, GELU and Mish run the activation kernels of
``deepcore.activations``; PReLU and RReLU have their own fused kernels
(src/ops/dropout.h); Swish has its own kernels (swish_forward, swish_backward,
swish_beta_grad) that read its learnable beta from the beta tensor.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..activations import ActivationSpec
from ..backend import ops, to_host
from .base import Layer
from .core import Activation, _BatchBuffers, _io_buffers
from .regularization import _RandomLayer

__all__ = ["LeakyReLU", "PReLU", "RReLU", "ELU", "Swish", "GELU", "Mish"]


def _real(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{type(layer).__name__}: {name} must be a finite number, got {value!r}")
    return float(value)


class _FixedActivation(Activation):
    """An Activation layer whose activation is set by the subclass's arguments."""

    def get_config(self):
        cfg = super().get_config()
        del cfg["activation"]
        return cfg


class LeakyReLU(_FixedActivation):
    """``y = x`` for x > 0, ``negative_slope * x`` otherwise (Maas et al., 2013).
    Defaults as in Keras: negative_slope=0.3 (must be >= 0)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        slope = _real(self, "negative_slope", negative_slope)
        if slope < 0:
            raise ValueError(f"LeakyReLU: negative_slope must be >= 0, got {negative_slope!r}")
        super().__init__(ActivationSpec("leaky_relu", alpha=slope), **kwargs)
        self.negative_slope = slope

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(_FixedActivation):
    """``y = x`` for x > 0, ``alpha (e^x - 1)`` otherwise (Clevert et al., 2015). Default alpha=1.0."""

    def __init__(self, alpha=1.0, **kwargs):
        alpha = _real(self, "alpha", alpha)
        super().__init__(ActivationSpec("elu", alpha=alpha), **kwargs)
        self.alpha = alpha

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class GELU(_FixedActivation):
    """``y = x Phi(x)`` (Hendrycks & Gimpel, 2016); ``approximate=True`` uses
    the tanh approximation. Default approximate=False, as in Keras."""

    def __init__(self, approximate=False, **kwargs):
        super().__init__(ActivationSpec("gelu_tanh" if approximate else "gelu"), **kwargs)
        self.approximate = bool(approximate)

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


class Mish(_FixedActivation):
    """``y = x tanh(softplus(x))`` (Misra, 2019)."""

    def __init__(self, **kwargs):
        super().__init__(ActivationSpec("mish"), **kwargs)


class Swish(Activation):
    """``y = x sigmoid(beta x)`` (Ramachandran et al., 2017) with a learnable
    scalar ``beta`` (weight "beta"), trained unless ``trainable=False``.
    Default beta=1.0 (SiLU). dL/dbeta = sum dy x^2 s (1 - s), s = sigmoid(beta x)."""

    def __init__(self, beta=1.0, trainable=True, **kwargs):
        beta = _real(self, "beta", beta)
        super().__init__(ActivationSpec("swish", beta=beta), trainable=trainable, **kwargs)
        self.initial_beta = beta

    def build(self, input_shape):
        self.beta = self.add_weight("beta", (), _initializers.Constant(self.initial_beta))

    # The kernels read beta from its tensor (device memory on CUDA) when they
    # run and write dL/dbeta into beta.grad: the step never reads beta on the
    # host, so it can be captured as a CUDA graph that sees each step's beta.
    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        ops(x).swish_forward(x, b["y"], self.beta.value)
        self._x, self._cur = x, b
        return b["y"]

    def backward(self, dy, need_dx=True, dy_is_dz=False):
        if self.trainable:
            ops(dy).swish_beta_grad(self._x, dy, self.beta.value, self.beta.grad)
        if not need_dx:
            return None
        b = self._cur
        ops(dy).swish_backward(self._x, dy, b["dx"], self.beta.value)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        del cfg["activation"]
        cfg["beta"] = float(to_host(self.beta.value)) if self.built else self.initial_beta
        return cfg


class PReLU(Layer):
    """Parametric ReLU (He et al., 2015): ``y = x`` for x > 0, ``alpha x``
    otherwise, with one learnable slope per unit (weight "alpha", of the
    input's per-sample shape). ``shared_axes`` lists axes (1 = the first axis
    after the batch) along which one slope is shared, e.g. ``[1, 2]`` for
    (batch, height, width, channels) gives one slope per channel; the shared
    axes other than leading ones must be contiguous. Defaults as in Keras:
    alpha_initializer="zeros", no regularizer or constraint, shared_axes=None.
    """

    _per_call = ("_bufs", "_x", "_cur")

    supports_device = True

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = _initializers.get(alpha_initializer)
        self.alpha_regularizer = _regularizers.get(alpha_regularizer)
        self.alpha_constraint = _constraints.get(alpha_constraint)
        if shared_axes is None:
            self.shared_axes = None
        else:
            axes = [shared_axes] if isinstance(shared_axes, (int, np.integer)) else list(shared_axes)
            self.shared_axes = [int(a) for a in axes]
        self._bufs = _BatchBuffers()

    def build(self, input_shape):
        shape = list(input_shape)
        for ax in self.shared_axes or []:
            if not 1 <= ax <= len(shape):
                raise ValueError(f"PReLU '{self.name}': shared axis {ax} is out of range for input shape "
                                 f"{(None,) + tuple(input_shape)} (axes 1..{len(shape)}; 0 is the batch)")
            shape[ax - 1] = 1
        self.alpha = self.add_weight("alpha", shape, self.alpha_initializer, regularizer=self.alpha_regularizer,
                                     constraint=self.alpha_constraint)
        try:  # the kernel's own check of the sharing pattern, on one zero sample (on the host)
            probe = np.zeros((1,) + tuple(input_shape), np.float32)
            ops(probe).prelu_forward(probe, np.zeros(self.alpha.shape, np.float32), probe)
        except ValueError as e:
            raise ValueError(f"PReLU '{self.name}': shared_axes={self.shared_axes} not supported: {e}") from None

    def _make_buffers(self, batch, like):
        return _io_buffers((batch,) + self.input_shape, like)

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._bufs.get(x.shape[0], self._make_buffers, x)
        ops(x).prelu_forward(x, self.alpha.value, b["y"])
        self._x, self._cur = x, b
        return b["y"]

    def backward(self, dy, need_dx=True):
        b = self._cur
        ops(dy).prelu_backward(self._x, self.alpha.value, dy, b["dx"] if need_dx else None, self.alpha.grad)
        return b["dx"] if need_dx else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(alpha_initializer=_initializers.serialize(self.alpha_initializer), shared_axes=self.shared_axes,
                   alpha_regularizer=_regularizers.serialize(self.alpha_regularizer),
                   alpha_constraint=_constraints.serialize(self.alpha_constraint))
        return cfg


class RReLU(_RandomLayer):
    """Randomized leaky ReLU (Xu et al., 2015), PyTorch's semantics: ``y = x``
    for x >= 0, else ``a x`` with ``a ~ U[lower, upper)`` drawn per element in
    training (from the layer's Philox stream, like dropout masks) and
    ``a = (lower + upper) / 2`` at inference. Defaults lower=1/8, upper=1/3.
    """

    _per_call = ("_bufs", "_x", "_cur", "_training", "_call", "_graph_call")

    def __init__(self, lower=1.0 / 8.0, upper=1.0 / 3.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.lower, self.upper = _real(self, "lower", lower), _real(self, "upper", upper)
        if self.lower > self.upper:
            raise ValueError(f"RReLU: lower must be <= upper, got lower={lower!r}, upper={upper!r}")

    def forward(self, x, training=False):
        self._check_input(x)
        b = self._buffers(x, keep_bits=False)
        self._training = bool(training)
        self._call = self._next_call() if self._training else 0
        forward, call = self._keyed(x, "rrelu_forward", draws=self._training)
        forward(x, b["y"], self.lower, self.upper, self._training, self._key_seed, self._stream, call)
        self._x, self._cur = x, b
        return b["y"]

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        b = self._cur
        backward, call = self._keyed(dy, "rrelu_backward", draws=self._training)
        backward(self._x, dy, b["dx"], self.lower, self.upper, self._training, self._key_seed, self._stream, call)
        return b["dx"]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(lower=self.lower, upper=self.upper, seed=self.seed)
        return cfg
