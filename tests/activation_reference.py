"""float64 NumPy references of the activations, shared by the kernel tests.
Written from the formulas, independently of src/ops/activations.h."""

import math

import numpy as np

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_COEF = 0.044715

# Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation for x << 0 (1 + erf(x) has it).
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# --------------------------------------------------------------------------
# forward references
# --------------------------------------------------------------------------
def _sigmoid(x):
    # Stable in both tails: never exponentiates a large positive number.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_forward(name, x, alpha, beta):
    x = np.asarray(x, dtype=np.float64)
    neg = np.minimum(x, 0.0)  # keeps expm1 of the unused branch finite
    if name == "linear":
        return x.copy()
    if name == "sigmoid":
        return _sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "elu":
        return np.where(x > 0, x, alpha * np.expm1(neg))
    if name == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(neg))
    if name == "gelu":
        return 0.5 * x * _erfc(-x / math.sqrt(2.0))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + GELU_COEF * x**3)))
    if name == "swish":
        return x * _sigmoid(beta * x)
    if name == "mish":
        return x * np.tanh(_softplus(x))
    if name == "softplus":
        return _softplus(x)
    if name == "softmax":
        return _softmax(x)
    raise AssertionError(name)
