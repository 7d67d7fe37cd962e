"""Learning-rate schedules: plain callables ``schedule(step) -> float`` that an
optimizer evaluates at ``optimizer.iterations`` before every update, so any of
them can be passed as ``SGD(learning_rate=ExponentialDecay(...))``.

Names, arguments and formulas follow Keras (``keras.optimizers.schedules``);
``PowerDecay`` and ``OneCycle`` are the chapter's power scheduling and 1cycle.
Every schedule validates its arguments (a ``ValueError`` naming the argument)
and round-trips through ``get_config`` / ``from_config``.
"""
from __future__ import annotations

import math

__all__ = ["LearningRateSchedule", "ExponentialDecay", "InverseTimeDecay", "PowerDecay",
           "PiecewiseConstantDecay", "OneCycle", "serialize", "deserialize"]


# ------------------------------------------------------------ argument checks
def _finite(owner, name, value, minimum=None, exclusive=False):
    """value as a float; ValueError naming owner.name if it is not a finite
    number (>= minimum, or > minimum with exclusive=True)."""
    if isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    if minimum is not None and (v <= minimum if exclusive else v < minimum):
        raise ValueError(f"{owner}: {name} must be {'>' if exclusive else '>='} {minimum}, got {value!r}")
    return v


def _step(owner, step):
    s = float(step)
    if not s >= 0:  # also catches NaN
        raise ValueError(f"{owner}: step must be >= 0, got {step!r}")
    return s


class LearningRateSchedule:
    """Base class: subclasses implement ``__call__(step) -> float`` and
    ``get_config()``; ``from_config(config)`` rebuilds the schedule."""

    def __call__(self, step) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class ExponentialDecay(LearningRateSchedule):
    """Exponential scheduling, as Keras:

        lr(step) = initial_learning_rate * decay_rate ** (step / decay_steps)

    With ``staircase=True``, ``step / decay_steps`` is floored, so the rate
    drops by ``decay_rate`` every ``decay_steps`` steps. ``decay_rate`` > 1
    gives exponential growth (the chapter's learning-rate finder).
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        name = type(self).__name__
        self.initial_learning_rate = _finite(name, "initial_learning_rate", initial_learning_rate, 0.0)
        self.decay_steps = _finite(name, "decay_steps", decay_steps, 0.0, exclusive=True)
        self.decay_rate = _finite(name, "decay_rate", decay_rate, 0.0, exclusive=True)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = _step("ExponentialDecay", step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        try:
            return self.initial_learning_rate * self.decay_rate ** p
        except OverflowError:  # growth (decay_rate > 1) far past float range
            return math.inf

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class InverseTimeDecay(LearningRateSchedule):
    """Inverse time decay, as Keras:

        lr(step) = initial_learning_rate / (1 + decay_rate * step / decay_steps)

    With ``staircase=True``, ``step / decay_steps`` is floored. With
    decay_rate=1 this is power scheduling with c=1 (``PowerDecay(power=1)``).
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        name = type(self).__name__
        self.initial_learning_rate = _finite(name, "initial_learning_rate", initial_learning_rate, 0.0)
        self.decay_steps = _finite(name, "decay_steps", decay_steps, 0.0, exclusive=True)
        self.decay_rate = _finite(name, "decay_rate", decay_rate, 0.0)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = _step("InverseTimeDecay", step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class PowerDecay(LearningRateSchedule):
    """Power scheduling (the chapter's eta(t) = eta0 / (1 + t/s)^c):

        lr(step) = initial_learning_rate / (1 + step / decay_steps) ** power

    The rate halves after ``decay_steps`` steps (for power=1), then falls
    ever more slowly. Defaults: power=1.0.
    """

    def __init__(self, initial_learning_rate, decay_steps, power=1.0):
        name = type(self).__name__
        self.initial_learning_rate = _finite(name, "initial_learning_rate", initial_learning_rate, 0.0)
        self.decay_steps = _finite(name, "decay_steps", decay_steps, 0.0, exclusive=True)
        self.power = _finite(name, "power", power, 0.0)

    def __call__(self, step):
        return self.initial_learning_rate / (1.0 + _step("PowerDecay", step) / self.decay_steps) ** self.power

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "power": self.power}


class PiecewiseConstantDecay(LearningRateSchedule):
    """Piecewise constant scheduling, with Keras's boundary semantics:

        values[0]    while step <= boundaries[0]
        values[i]    while boundaries[i-1] < step <= boundaries[i]
        values[-1]   once step > boundaries[-1]

    ``boundaries`` must be strictly increasing and ``len(values) ==
    len(boundaries) + 1``.
    """

    def __init__(self, boundaries, values):
        name = type(self).__name__
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"{name}: values must have one more entry than boundaries, got "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        self.boundaries = [_finite(name, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        self.values = [_finite(name, f"values[{i}]", v, 0.0) for i, v in enumerate(values)]
        for i in range(1, len(self.boundaries)):
            if self.boundaries[i] <= self.boundaries[i - 1]:
                raise ValueError(f"{name}: boundaries must be strictly increasing, got {boundaries!r}")

    def __call__(self, step):
        s = _step("PiecewiseConstantDecay", step)
        for boundary, value in zip(self.boundaries, self.values):
            if s <= boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


class OneCycle(LearningRateSchedule):
    """The chapter's 1cycle schedule (Leslie Smith, 2018), per step, over
    ``total_steps`` steps. With lo = max_lr / start_div, a = pct_start *
    total_steps:

        step in [0, a]:            rises linearly   lo     -> max_lr
        step in [a, 2a]:           falls linearly   max_lr -> lo
        step in [2a, total_steps]: anneals linearly lo     -> lo / final_div
        step > total_steps:        stays at lo / final_div

    (2a <= total_steps, so pct_start must be in (0, 0.5]). ``momentum(step)``
    cycles the other way: max_momentum -> base_momentum over the rise, back
    to max_momentum over the fall, and stays at max_momentum while annealing.
    An optimizer whose learning_rate is this schedule uses ``momentum(step)``
    as its momentum (SGD) or beta_1 (Adam family) when ``cycle_momentum`` is
    true; with cycle_momentum=False, ``momentum(step)`` returns None (leave the
    optimizer's momentum alone).

    Defaults: start_div=25.0, final_div=1e4, pct_start=0.45,
    base_momentum=0.85, max_momentum=0.95, cycle_momentum=True.
    """

    def __init__(self, max_lr, total_steps, start_div=25.0, final_div=1e4, pct_start=0.45,
                 base_momentum=0.85, max_momentum=0.95, cycle_momentum=True):
        name = type(self).__name__
        self.max_lr = _finite(name, "max_lr", max_lr, 0.0, exclusive=True)
        steps = _finite(name, "total_steps", total_steps, 1.0)
        if not steps.is_integer():
            raise ValueError(f"{name}: total_steps must be a positive integer, got {total_steps!r}")
        self.total_steps = int(steps)
        self.start_div = _finite(name, "start_div", start_div, 0.0, exclusive=True)
        self.final_div = _finite(name, "final_div", final_div, 0.0, exclusive=True)
        self.pct_start = _finite(name, "pct_start", pct_start, 0.0, exclusive=True)
        if self.pct_start > 0.5:
            raise ValueError(f"{name}: pct_start must be in (0, 0.5] (the rise and the fall each take "
                             f"pct_start of the steps), got {pct_start!r}")
        self.base_momentum = _finite(name, "base_momentum", base_momentum, 0.0)
        self.max_momentum = _finite(name, "max_momentum", max_momentum, 0.0)
        if not self.base_momentum <= self.max_momentum <= 1.0:
            raise ValueError(f"{name}: need 0 <= base_momentum <= max_momentum <= 1, got "
                             f"base_momentum={base_momentum!r}, max_momentum={max_momentum!r}")
        self.cycle_momentum = bool(cycle_momentum)

    def _phase(self, step):
        """(phase, fraction of that phase done): phase 0 rise, 1 fall, 2 anneal, 3 done."""
        s = _step("OneCycle", step)
        a = self.pct_start * self.total_steps
        if s <= a:
            return 0, s / a
        if s <= 2 * a:
            return 1, (s - a) / a
        if s < self.total_steps:
            return 2, (s - 2 * a) / (self.total_steps - 2 * a)
        return 3, 1.0

    def __call__(self, step):
        lo = self.max_lr / self.start_div
        phase, f = self._phase(step)
        if phase == 0:
            return lo + (self.max_lr - lo) * f
        if phase == 1:
            return self.max_lr - (self.max_lr - lo) * f
        end = lo / self.final_div
        return lo - (lo - end) * f

    def momentum(self, step):
        """The momentum (or beta_1) for this step; None when cycle_momentum=False."""
        if not self.cycle_momentum:
            return None
        phase, f = self._phase(step)
        span = self.max_momentum - self.base_momentum
        if phase == 0:
            return self.max_momentum - span * f
        if phase == 1:
            return self.base_momentum + span * f
        return self.max_momentum

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "start_div": self.start_div,
                "final_div": self.final_div, "pct_start": self.pct_start, "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum, "cycle_momentum": self.cycle_momentum}


_BY_NAME = {cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay, PowerDecay,
                                            PiecewiseConstantDecay, OneCycle)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """{"class_name": ..., "config": ...}, JSON-safe, as Keras serializes schedules."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict) -> LearningRateSchedule:
    """Inverse of serialize."""
    name = config.get("class_name")
    if name not in _BY_NAME:
        raise ValueError(f"Unknown learning-rate schedule {name!r}; expected one of: {', '.join(_BY_NAME)}")
    return _BY_NAME[name].from_config(config["config"])
