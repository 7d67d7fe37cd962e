"""Optimizers with Keras names, defaults and update formulas.

A model keeps its trainable weights in one flat buffer, split into one segment
per variable, so an optimizer step is one fused C++ call over all parameters:
the l1/l2 penalty gradients, gradient clipping (``clipvalue``, per-tensor
``clipnorm`` or ``global_clipnorm``), decoupled ``weight_decay`` and the update
rule run in the same pass; no per-parameter Python loop.

Slots (momentum, moments, accumulators) and the step count are the optimizer's
state: ``get_state()``/``set_state()`` copy them, and ``Model.save_weights``/
``load_weights`` carry them, so training resumes exactly.

A learning rate may be a float or a schedule (any callable ``step -> rate``,
e.g. ``deepcore.schedules.ExponentialDecay``), evaluated at ``iterations``. A
schedule with a ``momentum(step)`` method and ``cycle_momentum`` true (1cycle)
also drives the momentum (SGD, RMSprop) or ``beta_1`` (Adam family).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import device_of, empty, ops, to_device, to_host
from ._native import core as _core

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "Adamax", "Nadam", "AdamW", "Ftrl", "get"]


def _check_rate(name, value):
    if callable(value):
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: learning_rate must be a number or a schedule (callable step -> rate), "
                        f"got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: learning_rate must be a finite number >= 0, got {value!r}")
    return value


def _check(owner, name, value, low=None, high=None, high_open=False, allow_none=False):
    """float(value) within [low, high] (or [low, high) when high_open)."""
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}") from None
    ok = math.isfinite(v) and (low is None or v >= low) and (high is None or (v < high if high_open else v <= high))
    if not ok:
        rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{')' if high_open else ']'}"
        raise ValueError(f"{owner}: {name} must be a finite number in {rng}, got {value!r}")
    return v


class Optimizer:
    """Base class. Subclasses set ``_KIND`` (the C++ rule), list their slots in
    ``_slot_names()`` and fill the step-dependent coefficients in ``_prepare``.

    Common arguments (Keras): ``weight_decay`` (decoupled: w <- w - lr*wd*w
    before the update), ``clipnorm`` (each variable's gradient rescaled to at
    most this L2 norm), ``clipvalue`` (each element clipped to [-v, v]),
    ``global_clipnorm`` (all gradients rescaled together so their joint norm is
    at most this). At most one of the three clipping arguments may be set.
    """

    _KIND = None

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None):
        cls = type(self).__name__
        self.name = name or cls.lower()
        self._learning_rate = _check_rate(cls, learning_rate)
        set_clips = [k for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                    ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(set_clips) > 1:
            raise ValueError(f"{cls}: only one of clipnorm, clipvalue and global_clipnorm can be set, "
                             f"got {', '.join(set_clips)}")
        self.clipnorm = _check(cls, "clipnorm", clipnorm, low=0.0, allow_none=True)
        self.clipvalue = _check(cls, "clipvalue", clipvalue, low=0.0, allow_none=True)
        self.global_clipnorm = _check(cls, "global_clipnorm", global_clipnorm, low=0.0, allow_none=True)
        self.weight_decay = _check(cls, "weight_decay", weight_decay, low=0.0, allow_none=True)
        self.iterations = 0
        self._size = None
        self._layout = None  # [(variable path, size)] the slots are laid out for
        self._slots: dict[str, np.ndarray] = {}  # NumPy arrays, or device tensors on CUDA
        self._device = "cpu"  # where the slots live: the model's device (Model.to moves them)
        self._hyper = _core.OptParams()  # both backends take this
        self._pending_state = None

    # ------------------------------------------------------------ rate
    @property
    def learning_rate(self) -> float:
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = _check_rate(type(self).__name__, value)

    def _cycles(self) -> bool:
        sched = self._learning_rate
        return callable(sched) and bool(getattr(sched, "cycle_momentum", False)) and hasattr(sched, "momentum")

    def _cycled_momentum(self):
        """The momentum a 1cycle-style schedule asks for at this step, else None."""
        if self._cycles():
            return float(self._learning_rate.momentum(self.iterations))
        return None

    # ------------------------------------------------------------ slots
    def _slot_names(self) -> list[str]:
        return []

    def _slot_initial(self, name) -> float:
        return 0.0

    def build(self, size: int) -> None:
        """Create zero-initialized (or rule-initialized) slots for size parameters."""
        self._size = int(size)
        self._slots = {}
        for slot in self._slot_names():
            buf = empty((self._size,), device=self._device)
            init = self._slot_initial(slot)
            if init:
                buf[...] = init
            self._slots[slot] = buf
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.set_state(state)

    @property
    def built(self) -> bool:
        return self._size is not None

    def set_layout(self, layout) -> None:
        """Tell the optimizer which variables the flat buffer holds, in order
        ([(path, size)]). When the set changes (a layer frozen or unfrozen),
        built slots are remapped by variable: a variable keeps its slot
        values, a new one starts from the initial values, so no variable ever
        receives another one's momentum."""
        layout = [(str(p), int(n)) for p, n in layout]
        old = self._layout
        self._layout = layout
        if not self.built or old is None or old == layout:
            if self.built and old is None and self._size != sum(n for _, n in layout):
                self.build(sum(n for _, n in layout))
            return
        old_offsets, off = {}, 0
        for path, n in old:
            old_offsets[path] = (off, n)
            off += n
        old_slots = self._slots
        self.build(sum(n for _, n in layout))
        off = 0
        for path, n in layout:
            prev = old_offsets.get(path)
            if prev is not None and prev[1] == n:
                for k, buf in self._slots.items():
                    buf[off:off + n] = old_slots[k][prev[0]:prev[0] + n]
            off += n

    def _place(self, device) -> None:
        """Move the slots to device (a canonical name, as Model.to gives it)."""
        self._slots = {k: to_device(v, device) for k, v in self._slots.items()}
        self._device = device

    # ------------------------------------------------------------ step
    def apply(self, params: np.ndarray, grads: np.ndarray, segments=None) -> float:
        """Update params in place from grads; returns the l1/l2 penalty value
        at the weights before the update (0.0 without penalties). ``segments``
        is (offsets int64[k+1], l1 float32[k], l2 float32[k]) or None."""
        if self._size != params.size:
            self._device = device_of(params)
            self.build(params.size)
        h = self._step_hyper()
        slots = list(self._slot_args())
        offsets, l1, l2 = segments if segments is not None else (None, None, None)
        penalty, _ = ops(params).optimizer_step(h, params, grads, *slots, offsets, l1, l2)
        self._step_done()
        return penalty

    def _step_hyper(self):
        """The OptParams of the next step (iterations + 1): the rate of the
        schedule now, the rule's coefficients (bias corrections). Filled
        afresh for every step, eager or replayed from a CUDA graph (which
        copies it to the device before each replay)."""
        lr = self.learning_rate
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{type(self).__name__}: the learning rate at step {self.iterations} is {lr!r}; "
                             f"a schedule must return finite rates >= 0")
        h = self._hyper
        h.kind = self._KIND
        h.lr = lr
        h.weight_decay = self.weight_decay or 0.0
        h.clipvalue = self.clipvalue or 0.0
        h.clipnorm = self.clipnorm or 0.0
        h.global_clipnorm = self.global_clipnorm or 0.0
        self._prepare(h, self.iterations + 1, lr)
        return h

    def _step_done(self):
        """The step of _step_hyper() has run: commit its state, count it."""
        self._commit()
        self.iterations += 1

    def _commit(self):
        """Advance state that _prepare computed, once the step has succeeded."""

    def _slot_args(self):
        names = self._slot_names()
        return [self._slots[n] for n in names] + [None] * (3 - len(names))

    def _prepare(self, h, t, lr):
        """Fill rule hyperparameters and step coefficients for step t (1-based)."""

    # ------------------------------------------------------------ state
    def _extra_state(self) -> dict:
        return {}

    def _set_extra_state(self, state) -> None:
        pass

    def get_state(self) -> dict:
        """NumPy copies of the step count and every slot (flat, in the
        model's parameter order), wherever the slots live."""
        state = {"iterations": np.array([self.iterations], dtype=np.int64)}
        state.update({k: to_host(v, copy=True) for k, v in self._slots.items()})
        state.update(self._extra_state())
        return state

    def set_state(self, state: dict) -> None:
        """Restore what get_state returned. Before the first step (slots not
        built yet) the state is kept and applied when the slots are built."""
        if "iterations" not in state:
            raise ValueError(f"{type(self).__name__}.set_state: the state has no 'iterations' entry")
        if not self.built:
            self._pending_state = {k: np.array(v, copy=True) for k, v in state.items()}
            self.iterations = int(np.asarray(state["iterations"]).reshape(-1)[0])
            return
        missing = [k for k in self._slots if k not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}.set_state: the state lacks slot(s) {missing}; "
                             f"it has {sorted(state)}")
        for k, buf in self._slots.items():
            v = np.asarray(state[k])
            if v.shape != buf.shape:
                raise ValueError(f"{type(self).__name__}.set_state: slot {k!r} has shape {v.shape}, "
                                 f"expected {buf.shape} (was the state saved from another model?)")
        for k, buf in self._slots.items():
            buf[...] = np.ascontiguousarray(state[k], dtype=np.float32)
        self.iterations = int(np.asarray(state["iterations"]).reshape(-1)[0])
        self._set_extra_state(state)

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Constructor arguments; a schedule is serialized as
        {"class_name", "config"} (a plain function cannot be: TypeError)."""
        from . import schedules as _schedules

        lr = self._learning_rate
        if callable(lr):
            if not isinstance(lr, _schedules.LearningRateSchedule):
                raise TypeError(f"{type(self).__name__}.get_config: the learning rate is a plain callable "
                                f"({lr!r}); only deepcore.schedules objects can be serialized")
            lr = _schedules.serialize(lr)
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config):
        from . import schedules as _schedules

        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name} learning_rate={self._learning_rate!r}>"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, Keras's
    formulation. Defaults: learning_rate=0.01, momentum=0.0, nesterov=False.

        v <- momentum v - lr g
        w <- w + v                    (momentum)
        w <- w + momentum v - lr g    (nesterov)

    PyTorch's SGD keeps v' = -v/lr (v <- momentum v + g, w <- w - lr v); with a
    constant learning rate the two give the same weights.
    """

    _KIND = 0

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = self._configured_momentum = _check("SGD", "momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)

    @property
    def velocity(self):
        return self._slots.get("velocity")

    def _slot_names(self):
        cycles = getattr(self._learning_rate, "cycle_momentum", False)
        return ["velocity"] if self.momentum > 0 or cycles else []

    def _prepare(self, h, t, lr):
        cycled = self._cycled_momentum()
        if cycled is not None:
            self.momentum = cycled
        h.momentum, h.nesterov = self.momentum, self.nesterov

    def get_config(self):
        momentum = self._configured_momentum if self._cycles() else self.momentum
        return {**super().get_config(), "momentum": momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Adagrad (Keras): a <- a + g^2, w <- w - lr g / sqrt(a + epsilon).
    Defaults: learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7.

    PyTorch puts epsilon outside the root (g / (sqrt(a) + eps)) and starts the
    accumulator at 0 by default.
    """

    _KIND = 1

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _check("Adagrad", "initial_accumulator_value",
                                                initial_accumulator_value, 0.0)
        self.epsilon = _check("Adagrad", "epsilon", epsilon, 0.0)

    def _slot_names(self):
        return ["accumulator"]

    def _slot_initial(self, name):
        return self.initial_accumulator_value

    def _prepare(self, h, t, lr):
        h.epsilon = self.epsilon

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop (Keras): v <- rho v + (1-rho) g^2; w <- w - lr g / sqrt(v + eps)
    (centered: v - mean_g^2 + eps under the root; momentum > 0 accumulates the
    increments). Defaults: learning_rate=0.001, rho=0.9, momentum=0.0,
    epsilon=1e-7, centered=False.

    PyTorch calls rho ``alpha`` (default 0.99) and puts epsilon outside the
    root: g / (sqrt(v) + eps).
    """

    _KIND = 2

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = _check("RMSprop", "rho", rho, 0.0, 1.0, high_open=True)
        self.momentum = self._configured_momentum = _check("RMSprop", "momentum", momentum, 0.0, 1.0)
        self.epsilon = _check("RMSprop", "epsilon", epsilon, 0.0)
        self.centered = bool(centered)

    def _slot_names(self):
        cycles = getattr(self._learning_rate, "cycle_momentum", False)
        names = ["velocity", "momentum"]
        if self.centered:
            names.append("average_gradient")
        return names if (self.momentum > 0 or cycles or self.centered) else ["velocity"]

    def _slot_args(self):
        s = self._slots
        return [s["velocity"], s.get("momentum"), s.get("average_gradient")]

    def _prepare(self, h, t, lr):
        cycled = self._cycled_momentum()
        if cycled is not None:
            self.momentum = cycled
        h.beta2, h.momentum, h.epsilon, h.centered = self.rho, self.momentum, self.epsilon, self.centered

    def get_config(self):
        momentum = self._configured_momentum if self._cycles() else self.momentum
        return {**super().get_config(), "rho": self.rho, "momentum": momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class _AdamFamily(Optimizer):
    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        cls = type(self).__name__
        self.beta_1 = self._configured_beta_1 = _check(cls, "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _check(cls, "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _check(cls, "epsilon", epsilon, 0.0)

    def _prepare(self, h, t, lr):
        cycled = self._cycled_momentum()
        if cycled is not None:
            self.beta_1 = _check(type(self).__name__, "beta_1 (from the schedule)", cycled, 0.0, 1.0, True)
        h.beta1, h.beta2, h.epsilon = self.beta_1, self.beta_2, self.epsilon

    def get_config(self):
        beta_1 = self._configured_beta_1 if self._cycles() else self.beta_1
        return {**super().get_config(), "beta_1": beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adam(_AdamFamily):
    """Adam (Keras): m <- m + (g-m)(1-b1), v <- v + (g^2-v)(1-b2),
    w <- w - lr_t m / (sqrt(v) + eps) with lr_t = lr sqrt(1-b2^t)/(1-b1^t)
    (amsgrad: the running maximum of v under the root). Defaults:
    learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False.

    PyTorch divides by (sqrt(v)/sqrt(1-b2^t) + eps), i.e. its epsilon is
    Keras's times sqrt(1-b2^t); the two agree when epsilon is negligible.
    """

    _KIND = 3

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        return ["m", "v", "vhat"] if self.amsgrad else ["m", "v"]

    def _prepare(self, h, t, lr):
        super()._prepare(h, t, lr)
        h.amsgrad = self.amsgrad
        h.c1 = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)

    def get_config(self):
        return {**super().get_config(), "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w <- w - lr*wd*w
    before each Adam update. Keras defaults: learning_rate=0.001,
    weight_decay=0.004. PyTorch's AdamW applies the same decay (its default
    weight_decay is 0.01)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW: weight_decay must be a number >= 0, got None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)


class Adamax(_AdamFamily):
    """Adamax (Keras): m <- m + (g-m)(1-b1), u <- max(b2 u, |g|),
    w <- w - lr/(1-b1^t) m / (u + eps). Defaults: learning_rate=0.001,
    beta_1=0.9, beta_2=0.999, epsilon=1e-7. PyTorch adds eps inside the max
    (u <- max(b2 u, |g| + eps)) and divides by u alone."""

    _KIND = 4

    def _slot_names(self):
        return ["m", "u"]

    def _prepare(self, h, t, lr):
        super()._prepare(h, t, lr)
        h.c1 = lr / (1.0 - self.beta_1 ** t)


class Nadam(_AdamFamily):
    """Nadam (Keras 3, after Dozat 2016), with the momentum schedule
    mu_t = b1 (1 - 0.5 * 0.96^t):
    w <- w - lr (mu_{t+1} m / (1 - prod mu_1..t+1) + (1 - mu_t) g / (1 - prod mu_1..t))
             / (sqrt(v / (1 - b2^t)) + eps).
    Defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7.
    PyTorch's NAdam (and Keras 2) use mu_t = b1 (1 - 0.5 * 0.96^(0.004 t)):
    PyTorch with momentum_decay=1.0 computes exactly this rule, with the same
    epsilon placement."""

    _KIND = 5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._u_product = 1.0

    def _slot_names(self):
        return ["m", "v"]

    def _prepare(self, h, t, lr):
        super()._prepare(h, t, lr)
        b1 = self.beta_1
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_prod_t = self._u_product * u_t
        u_prod_t1 = u_prod_t * u_t1
        self._u_product_next = u_prod_t  # committed once the step has run
        h.c1 = u_t1 / (1.0 - u_prod_t1)
        h.c2 = (1.0 - u_t) / (1.0 - u_prod_t)
        h.c3 = 1.0 / (1.0 - self.beta_2 ** t)

    def _commit(self):
        self._u_product = self._u_product_next

    def _extra_state(self):
        return {"u_product": np.array([self._u_product], dtype=np.float64)}

    def _set_extra_state(self, state):
        if "u_product" not in state:
            raise ValueError("Nadam.set_state: the state has no 'u_product' entry (the product of the momentum "
                             "schedule); it cannot resume exactly without it")
        self._u_product = float(np.asarray(state["u_product"]).reshape(-1)[0])


class Ftrl(Optimizer):
    """FTRL-proximal (McMahan et al. 2013), Keras's formulation: per element,
    with accumulator a and linear term z,
        a' = a + g^2
        z <- z + (g + 2 l2_shrinkage w) - (a'^-p - a^-p)/lr * w       (p = learning_rate_power)
        w <- (clip(z, -l1, l1) - z) / (a'^-p/lr + 2 (l2 + beta/(2 lr)))  if |z| > l1 else 0
    Defaults: learning_rate=0.001, learning_rate_power=-0.5,
    initial_accumulator_value=0.1, l1/l2/l2_shrinkage_regularization_strength=0,
    beta=0. With l1 > 0 it produces exact zeros (a sparse model)."""

    _KIND = 6

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.learning_rate_power = _check("Ftrl", "learning_rate_power", learning_rate_power, high=0.0)
        self.initial_accumulator_value = _check("Ftrl", "initial_accumulator_value", initial_accumulator_value, 0.0)
        self.l1_regularization_strength = _check("Ftrl", "l1_regularization_strength", l1_regularization_strength, 0.0)
        self.l2_regularization_strength = _check("Ftrl", "l2_regularization_strength", l2_regularization_strength, 0.0)
        self.l2_shrinkage_regularization_strength = _check("Ftrl", "l2_shrinkage_regularization_strength",
                                                           l2_shrinkage_regularization_strength, 0.0)
        self.beta = _check("Ftrl", "beta", beta, 0.0)

    def _slot_names(self):
        return ["accumulator", "linear"]

    def _slot_initial(self, name):
        return self.initial_accumulator_value if name == "accumulator" else 0.0

    def _prepare(self, h, t, lr):
        if lr <= 0:
            raise ValueError(f"Ftrl: the learning rate must be > 0 (it divides), got {lr!r} at step {t - 1}")
        h.lr_power = self.learning_rate_power
        h.l1 = self.l1_regularization_strength
        h.l2 = self.l2_regularization_strength
        h.l2_shrinkage = self.l2_shrinkage_regularization_strength
        h.ftrl_beta = self.beta

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


_BY_NAME = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
            "adamax": Adamax, "nadam": Nadam, "ftrl": Ftrl}


def get(identifier) -> Optimizer:
    """An Optimizer from an instance or a Keras name ("sgd", "adam", ...)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown optimizer {identifier!r}; expected an Optimizer or one of: {', '.join(_BY_NAME)}")
