"""``HyperParameters``: what ``build_model(hp)`` asks for. During a search
each call samples from the Optuna trial; outside one (``get_best_models``
rebuilding a trial's model) it returns the recorded value."""
from __future__ import annotations

import math
import numbers

__all__ = ["HyperParameters"]

_SAMPLINGS = ("linear", "log")


class HyperParameters:
    """The hyperparameters of one model, in Keras Tuner's names.

    ``hp.Int(name, min_value, max_value, step=1, sampling="linear")``,
    ``hp.Float(name, min_value, max_value, step=None, sampling="linear")``
    (``sampling="log"``: uniform in the logarithm), ``hp.Choice(name,
    values)``, ``hp.Boolean(name)``, ``hp.Fixed(name, value)``. Asking for a
    name twice gives the same value. ``hp.values`` is {name: value}.
    Outside a search, a name without a value gets its default (the given
    ``default``, else min_value, the first choice, False), as in Keras Tuner.
    """

    def __init__(self, values=None, trial=None):
        self.values = dict(values or {})
        self._trial = trial

    def __repr__(self):
        return f"HyperParameters({self.values!r})"

    def get(self, name):
        if name not in self.values:
            raise KeyError(f"no hyperparameter {name!r}; known: {sorted(self.values)}")
        return self.values[name]

    def __getitem__(self, name):
        return self.get(name)

    def _value(self, name, sample, default):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a hyperparameter name must be a non-empty string, got {name!r}")
        if self._trial is not None and name not in self.values:
            self.values[name] = sample()
        elif name not in self.values:
            self.values[name] = default
        return self.values[name]

    def Int(self, name, min_value, max_value, step=1, sampling="linear", default=None):
        for what, v in (("min_value", min_value), ("max_value", max_value), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"hp.Int({name!r}): {what} must be an int, got {v!r}")
        _check_range("Int", name, min_value, max_value, sampling)
        if step < 1 or (sampling == "log" and step != 1):
            raise ValueError(f"hp.Int({name!r}): step must be >= 1, and 1 with sampling='log', got {step}")
        return self._value(name, lambda: self._trial.suggest_int(name, int(min_value), int(max_value), step=int(step),
                                                                 log=sampling == "log"),
                           int(min_value) if default is None else int(default))

    def Float(self, name, min_value, max_value, step=None, sampling="linear", default=None):
        for what, v in (("min_value", min_value), ("max_value", max_value)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"hp.Float({name!r}): {what} must be a finite number, got {v!r}")
        _check_range("Float", name, min_value, max_value, sampling)
        if step is not None and sampling == "log":
            raise ValueError(f"hp.Float({name!r}): step cannot be combined with sampling='log'")
        return self._value(name, lambda: self._trial.suggest_float(name, float(min_value), float(max_value),
                                                                   step=step, log=sampling == "log"),
                           float(min_value) if default is None else float(default))

    def Choice(self, name, values, default=None):
        values = list(values)
        if not values:
            raise ValueError(f"hp.Choice({name!r}): values is empty")
        if default is not None and default not in values:
            raise ValueError(f"hp.Choice({name!r}): default {default!r} is not one of {values}")
        return self._value(name, lambda: self._trial.suggest_categorical(name, values),
                           values[0] if default is None else default)

    def Boolean(self, name, default=False):
        return self._value(name, lambda: self._trial.suggest_categorical(name, [False, True]), bool(default))

    def Fixed(self, name, value):
        """A value that is not searched (recorded with the trial's values)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a hyperparameter name must be a non-empty string, got {name!r}")
        self.values.setdefault(name, value)
        return self.values[name]


def _check_range(kind, name, lo, hi, sampling):
    if sampling not in _SAMPLINGS:
        raise ValueError(f"hp.{kind}({name!r}): sampling must be 'linear' or 'log', got {sampling!r}")
    if lo > hi:
        raise ValueError(f"hp.{kind}({name!r}): min_value {lo} > max_value {hi}")
    if sampling == "log" and lo <= 0:
        raise ValueError(f"hp.{kind}({name!r}): sampling='log' needs min_value > 0, got {lo}")
