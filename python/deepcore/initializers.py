"""Weight initializers with Keras names and defaults.

Glorot (Xavier), He and LeCun initialization are all ``VarianceScaling``:
the weights get variance ``scale / fan`` where fan is fan_in, fan_out or their
mean, drawn from a truncated normal (cut at 2 std, rescaled so the variance is
still scale/fan), an untruncated normal or a uniform on [-sqrt(3 scale/fan),
+sqrt(3 scale/fan)]. All draws come from Philox streams: a seeded initializer
gives the same weights on any machine and thread count.
"""
from __future__ import annotations

import math

from . import random as _random
from .backend import empty, ops

# std of a standard normal truncated to [-2, 2]; dividing by it restores unit variance.
_TRUNC_STD = 0.87962566103423978


def compute_fans(shape) -> tuple[float, float]:
    """(fan_in, fan_out) as Keras computes them: for a kernel (..., in, out)
    the receptive field (product of the leading dims) multiplies both."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


class Initializer:
    """Base class: ``init(shape) -> float32 array``."""

    def __call__(self, shape, dtype="float32"):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _Seeded(Initializer):
    def __init__(self, seed=None):
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative int or None, got {seed!r}")
        self.seed = seed
        self._calls = 0

    def _stream(self):
        # A seeded initializer gives different (but reproducible) draws on each
        # call, as Keras 3's seeded initializers do for distinct variables.
        if self.seed is None:
            return _random.next_stream()
        self._calls += 1
        return self.seed, self._calls


class RandomNormal(_Seeded):
    """N(mean, stddev). Defaults: mean=0.0, stddev=0.05."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype="float32"):
        out = empty(shape)
        seed, stream = self._stream()
        ops(out).philox_normal(out, seed, stream, self.mean, self.stddev, False)
        return out

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """N(mean, stddev) with values beyond 2 stddev redrawn. Defaults: 0.0, 0.05."""

    def __call__(self, shape, dtype="float32"):
        out = empty(shape)
        seed, stream = self._stream()
        ops(out).philox_normal(out, seed, stream, self.mean, self.stddev, True)
        return out


class RandomUniform(_Seeded):
    """U[minval, maxval). Defaults: minval=-0.05, maxval=0.05."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype="float32"):
        out = empty(shape)
        seed, stream = self._stream()
        ops(out).philox_uniform(out, seed, stream, self.minval, self.maxval)
        return out

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(_Seeded):
    """Variance ``scale / fan``. Defaults: scale=1.0, mode="fan_in",
    distribution="truncated_normal" (also "untruncated_normal", "normal" as an
    alias of it, and "uniform")."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"VarianceScaling: scale must be > 0, got {scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "untruncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("VarianceScaling: distribution must be 'truncated_normal', 'untruncated_normal' "
                             f"or 'uniform', got {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def variance(self, shape) -> float:
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale / max(1.0, fan)

    def __call__(self, shape, dtype="float32"):
        var = self.variance(shape)
        out = empty(shape)
        seed, stream = self._stream()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            ops(out).philox_uniform(out, seed, stream, -limit, limit)
        elif self.distribution == "truncated_normal":
            ops(out).philox_normal(out, seed, stream, 0.0, math.sqrt(var) / _TRUNC_STD, True)
        else:
            ops(out).philox_normal(out, seed, stream, 0.0, math.sqrt(var), False)
        return out

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class GlorotUniform(VarianceScaling):
    """Glorot & Bengio (2010): U[-sqrt(6/(fan_in+fan_out)), +...]. Keras's default kernel initializer."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    """Truncated normal with variance 2/(fan_in+fan_out)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    """He et al. (2015): truncated normal with variance 2/fan_in (for ReLU)."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    """U[-sqrt(6/fan_in), +sqrt(6/fan_in)]."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunNormal(VarianceScaling):
    """LeCun (1998): truncated normal with variance 1/fan_in (for SELU)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunUniform(VarianceScaling):
    """U[-sqrt(3/fan_in), +sqrt(3/fan_in)]."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class Constant(Initializer):
    """Every element = value. Default 0.0."""

    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype="float32"):
        out = empty(shape)
        out.fill(self.value)
        return out

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


_BY_NAME = {
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_normal": HeNormal,
    "he_uniform": HeUniform, "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
    "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}

# Keras's lower-case function-style aliases: deepcore.initializers.he_normal(seed=42)
glorot_uniform, glorot_normal = GlorotUniform, GlorotNormal
he_normal, he_uniform = HeNormal, HeUniform
lecun_normal, lecun_uniform = LecunNormal, LecunUniform
zeros, ones, constant = Zeros, Ones, Constant


def get(identifier) -> Initializer:
    """A name ('he_normal'), a class name ('HeNormal'), a config dict
    {'class_name': ..., 'config': {...}} or an Initializer instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, dict):
        cls = _BY_CLASS.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown initializer config {identifier!r}")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_CLASS.get(identifier)
        if cls is not None:
            return cls()
    raise ValueError(f"Unknown initializer {identifier!r}; expected one of: {', '.join(sorted(_BY_NAME))}")


def serialize(init: Initializer) -> dict:
    return {"class_name": type(init).__name__, "config": init.get_config()}
