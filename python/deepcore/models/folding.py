"""Folding BatchNormalization into the Dense layer before it, for inference.

At inference a BatchNormalization layer is an affine map per feature with the
moving statistics, so after ``z = x W + b`` it can be absorbed into W and b:

    sigma = sqrt(moving_var + epsilon)
    W'    = W * gamma / sigma                   (each output column scaled)
    b'    = (b - moving_mean) * gamma / sigma + beta

which removes one pass over the activations per folded layer. Only a Dense
with a linear activation can absorb the BN that follows it (BN after ReLU is
not affine in z); an Activation layer right after the folded BN becomes the
Dense's fused activation, so ``Dense(use_bias=False) -> BN -> Activation``
turns into one Dense.

The arithmetic runs on the host (from copies of a CUDA model's weights); the
folded model is put on the original's device.
"""
from __future__ import annotations

import copy

import numpy as np

from ..backend import is_device_tensor, to_host
from ..layers.core import Activation, Dense, Input, _BatchBuffers
from ..layers.normalization import BatchNormalization


def _foldable(dense, bn) -> bool:
    view = getattr(bn, "_view", None)
    return (type(dense) is Dense and type(bn) is BatchNormalization and dense.activation.name == "linear"
            and view is not None and not view.transposed and view.a_per_sample == 1 and view.B == 1
            and view.C == dense.units)


def _folded_dense(dense, bn, activation) -> Dense:
    """A Dense computing activation(bn(dense(x))) with bn at inference, in one layer."""
    def host64(var):  # the arithmetic runs on the host, in float64
        return to_host(var.value).astype(np.float64)

    mm = host64(bn.moving_mean).reshape(-1)
    mv = host64(bn.moving_variance).reshape(-1)
    gamma = host64(bn.gamma).reshape(-1) if bn.gamma is not None else 1.0
    beta = host64(bn.beta).reshape(-1) if bn.beta is not None else 0.0
    k = gamma / np.sqrt(mv + bn.epsilon)
    w = host64(dense.kernel) * k
    b = host64(dense.bias) if dense.bias is not None else 0.0
    b = (b - mm) * k + beta
    # Zeros initializers: building draws nothing from the global random streams.
    folded = Dense(dense.units, activation=activation, use_bias=True, kernel_initializer="zeros",
                   bias_initializer="zeros", name=dense.name, trainable=dense.trainable)
    folded._build_for(dense.input_shape)
    folded.kernel.assign(w.astype(np.float32))
    folded.bias.assign(np.broadcast_to(b, (dense.units,)).astype(np.float32))
    return folded


def _holds_device_tensor(value):
    if isinstance(value, dict):
        return any(_holds_device_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_device_tensor(v) for v in value)
    return is_device_tensor(value)


def _clone(layer):
    """An independent copy of a layer with its weights (not its batch
    buffers), on the CPU: device weights are copied to the host and what the
    last forward cached on the device is dropped."""
    memo = {id(layer._inbound_nodes): []}  # the copy belongs to no graph
    if isinstance(getattr(layer, "_bufs", None), _BatchBuffers):
        memo[id(layer._bufs)] = _BatchBuffers()
    for var in layer._variables:
        for t in (var.value, var.grad):
            if is_device_tensor(t):
                memo[id(t)] = to_host(t)
    for value in vars(layer).values():
        if id(value) not in memo and _holds_device_tensor(value):
            memo[id(value)] = None
    clone = copy.deepcopy(layer, memo)
    clone._device = "cpu"
    return clone


def fold_batchnorm(model):
    """A new Sequential for inference in which each BatchNormalization that
    directly follows a linear Dense is folded into that Dense (and an
    Activation right after it into the Dense's activation). Other layers are
    copied; the original model is not changed. Predictions agree with
    ``model.predict`` to float32 rounding. A compiled model's loss and metrics
    are carried over (with a fresh optimizer of the same configuration), so
    ``evaluate`` works on the result."""
    from .sequential import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"fold_batchnorm: expected a Sequential model, got {type(model).__name__}")
    model._require_built("fold_batchnorm")
    layers, out, i = model.layers, [], 0
    while i < len(layers):
        layer = layers[i]
        bn = layers[i + 1] if i + 1 < len(layers) else None
        if _foldable(layer, bn):
            after = layers[i + 2] if i + 2 < len(layers) else None
            merge = type(after) is Activation
            out.append(_folded_dense(layer, bn, after.activation if merge else layer.activation))
            i += 3 if merge else 2
        else:
            out.append(_clone(layer))
            i += 1
    folded = Sequential([Input(shape=model.input_shape[1:]), *out], name=f"{model.name}_folded")
    if model.loss is not None:
        # A fresh optimizer with the same hyperparameters: the original's slots
        # belong to the unfolded parameters.
        opt = model.optimizer
        folded.compile(optimizer=type(opt).from_config(opt.get_config()), loss=copy.deepcopy(model.loss),
                       metrics=[copy.deepcopy(m) for m in model.compiled_metrics], cuda_graphs=model.cuda_graphs)
    return folded.to(model.device)
