"""scikit-learn estimators around deepcore models (the role SciKeras plays
for Keras): ``SKClassifier`` and ``SKRegressor``.

    def build_mlp(n_hidden=1, n_neurons=30, n_features_in_=None, n_classes_=None):
        model = dc.Sequential([dc.layers.Input(shape=(n_features_in_,))])
        for _ in range(n_hidden):
            model.add(dc.layers.Dense(n_neurons, activation="relu"))
        model.add(dc.layers.Dense(n_classes_, activation="softmax"))
        return model

    clf = SKClassifier(build_mlp, model__n_hidden=2, optimizer="adam",
                       optimizer__learning_rate=1e-3, epochs=20)
    GridSearchCV(clf, {"model__n_neurons": [16, 64],
                       "optimizer__learning_rate": [1e-3, 1e-2]}, cv=3).fit(X, y)

Hyperparameters are constructor arguments, so ``clone``, ``Pipeline``,
``GridSearchCV``, ``RandomizedSearchCV`` and ``cross_val_score`` work. Those
with a prefix are routed:

    model__<name>      an argument of the build function
    optimizer__<name>  an argument of the optimizer (``optimizer__learning_rate``)
    loss__<name>       an argument of the loss (``loss__delta`` for "huber")
    fit__<name>        an argument of ``model.fit`` (``fit__validation_data``)
    predict__<name>    an argument of ``model.predict`` (``predict__batch_size``)

The build function receives its ``model__`` arguments and, when its
signature names them, what the data tells: ``n_features_in_``,
``n_outputs_``, and for the classifier ``n_classes_`` and ``classes_``. It
returns a deepcore model, compiled or not: the wrapper compiles it with
``optimizer``, ``loss`` and ``metrics`` (each None keeps what the build
function compiled, else Adam, and the loss below).

``model`` must be a function (or class) that builds the model, not a model
instance: scikit-learn copies estimators with ``copy.deepcopy``, which
deepcore models do not support (their files are the way to copy them).

Every ``fit`` builds a fresh model (``warm_start=True`` trains the fitted one
further). ``random_state`` (an int) seeds deepcore's generator with
``dc.set_random_seed`` before the model is built and seeds the shuffles, so
two fits with the same ``random_state`` give the same model. A fitted
estimator pickles (joblib, ``n_jobs``): the model travels as its build
arguments and its weights, and is rebuilt on load (without the optimizer's
state: a warm start after unpickling starts the optimizer afresh).
"""
from __future__ import annotations

import copy
import inspect
import numbers

import numpy as np

from ._optional import require

_sklearn_base = require("sklearn.base", "deepcore.wrappers")
_validation = require("sklearn.utils.validation", "deepcore.wrappers")
_multiclass = require("sklearn.utils.multiclass", "deepcore.wrappers")
if not hasattr(_validation, "validate_data"):  # added in scikit-learn 1.6, with the estimator tags used here
    _version = require("sklearn", "deepcore.wrappers").__version__
    raise ImportError(f"deepcore.wrappers needs scikit-learn >= 1.6, found {_version}: "
                      f"pip install \"deepcore[sklearn]\"")

from . import losses as _losses  # noqa: E402
from . import optimizers as _optimizers  # noqa: E402
from .models import Model  # noqa: E402
from .random import set_random_seed  # noqa: E402

__all__ = ["SKClassifier", "SKRegressor"]

_ROUTES = ("model", "optimizer", "loss", "fit", "predict")


def _is_routed(name):
    prefix, sep, rest = name.partition("__")
    return bool(sep) and bool(rest) and prefix in _ROUTES


class _SKWrapper(_sklearn_base.BaseEstimator):
    """What the classifier and the regressor share: routing, building,
    compiling, fitting, pickling."""

    _default_loss = None

    def __init__(self, model=None, *, optimizer=None, loss=None, metrics=None, epochs=1, batch_size=32,
                 validation_split=0.0, shuffle=True, callbacks=None, verbose=0, random_state=None,
                 warm_start=False, **routed):
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = metrics
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.shuffle = shuffle
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self.warm_start = warm_start
        # Checked by fit, not here: scikit-learn's rule is that __init__ and
        # set_params only store (an unknown name fails at fit).
        for name, value in routed.items():
            setattr(self, name, value)

    # ------------------------------------------------------------- parameters
    def _routed_names(self):
        """The keyword arguments given beyond the signature's (routed, or
        unknown until fit says so); fitted attributes end with "_"."""
        known = set(self._get_param_names())
        return sorted(k for k in vars(self) if k not in known and not k.startswith("_") and not k.endswith("_"))

    def _check_routed(self):
        for name in self._routed_names():
            if not _is_routed(name):
                raise TypeError(f"{type(self).__name__}: unexpected argument {name!r}; hyperparameters of the model, "
                                f"optimizer, loss, fit or predict take one of the prefixes "
                                f"{', '.join(p + '__' for p in _ROUTES)} (e.g. model__n_hidden)")

    def _routed(self, prefix):
        """{argument: value} of the parameters routed to prefix ("model", ...)."""
        p = prefix + "__"
        return {k[len(p):]: getattr(self, k) for k in self._routed_names() if k.startswith(p)}

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update({k: getattr(self, k) for k in self._routed_names()})
        return params

    def set_params(self, **params):
        routed = {k: v for k, v in params.items() if _is_routed(k) or k in self._routed_names()}
        for k, v in routed.items():
            setattr(self, k, v)
        rest = {k: v for k, v in params.items() if k not in routed}
        if rest:
            super().set_params(**rest)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    # -------------------------------------------------------------- building
    def _meta(self):
        """What the data told fit, offered to the build function by name."""
        return {"n_features_in_": self.n_features_in_, "n_outputs_": self.n_outputs_}

    def _build_model(self):
        build = self.model
        if build is None:
            raise ValueError(f"{type(self).__name__}: pass model=, a function that builds a deepcore model "
                             f"(see deepcore.wrappers)")
        if isinstance(build, Model):
            raise TypeError(f"{type(self).__name__}: model= is a model instance; pass the function that builds "
                            f"it instead (scikit-learn copies estimators with copy.deepcopy, which deepcore "
                            f"models do not support), e.g. model=lambda: dc.Sequential([...])")
        if not callable(build):
            raise TypeError(f"{type(self).__name__}: model= must be a function that builds a deepcore model, "
                            f"got {type(build).__name__}")
        kwargs = self._routed("model")
        try:
            signature = inspect.signature(build)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            for name, value in self._meta().items():
                if name in signature.parameters and name not in kwargs:
                    kwargs[name] = value
        model = build(**kwargs)
        if not isinstance(model, Model):
            raise TypeError(f"{type(self).__name__}: the build function returned {type(model).__name__}, "
                            f"not a deepcore model")
        if not model.built:
            model.build((None, self.n_features_in_))
        return model

    def _compile(self, model):
        compiled = model.loss is not None
        opt = self.optimizer if self.optimizer is not None else (model.optimizer if compiled else "adam")
        loss = self.loss if self.loss is not None else (model.loss if compiled else self._loss_for(model))
        metrics = self.metrics if self.metrics is not None else (model.compiled_metrics if compiled else None)
        model.compile(optimizer=_with_arguments(opt, self._routed("optimizer"), _optimizers.get, "optimizer"),
                      loss=_with_arguments(loss, self._routed("loss"), _losses.get, "loss"), metrics=metrics)

    def _loss_for(self, model):
        return self._default_loss

    def _targets_for(self, model, y):
        """y as the model's loss takes it."""
        return y

    def _seed(self):
        """An int seed from random_state (an int, a RandomState or None)."""
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs) % (2 ** 63)
        return int(_validation.check_random_state(rs).randint(2 ** 31 - 1))

    # --------------------------------------------------------------- fitting
    def _fit(self, X, y):
        self._check_routed()
        seed = self._seed()
        if not (self.warm_start and hasattr(self, "model_")):
            if seed is not None:
                set_random_seed(seed)
            model = self._build_model()
            self._compile(model)
            self.model_ = model
        y = self._targets_for(self.model_, y)
        # Copies: fit binds a callback to its model, and scikit-learn must
        # still be able to clone (deep-copy) this estimator's parameters.
        self.callbacks_ = [copy.deepcopy(cb) for cb in self.callbacks or []]
        options = {"epochs": self.epochs, "batch_size": self.batch_size, "verbose": self.verbose,
                   "validation_split": self.validation_split, "shuffle": self.shuffle,
                   "callbacks": self.callbacks_ or None, "seed": seed}
        options.update(self._routed("fit"))
        history = self.model_.fit(X, y, **options)
        self.history_ = {k: list(v) for k, v in history.history.items()}
        return self

    def _predict_raw(self, X):
        _validation.check_is_fitted(self)
        X = _validation.validate_data(self, X, reset=False, dtype=np.float32)
        options = {"batch_size": self.batch_size}
        options.update(self._routed("predict"))
        return self.model_.predict(X, **options)

    # -------------------------------------------------------------- pickling
    def __getstate__(self):
        # A deepcore model does not pickle: it travels as its weights (NumPy
        # arrays, in the model's order) and is rebuilt by the build function.
        state = dict(vars(self))
        model = state.pop("model_", None)
        if model is not None:
            state["_model_weights"] = model.get_weights()
        return state

    def __setstate__(self, state):
        weights = state.pop("_model_weights", None)
        self.__dict__.update(state)
        if weights is not None:
            model = self._build_model()
            self._compile(model)
            model.set_weights(weights)
            self.model_ = model


def _with_arguments(spec, arguments, get, what):
    """A fresh optimizer/loss from spec (a name, a class or an instance) with
    the routed arguments applied. Instances are copied through get_config, so
    no two fits share an optimizer's slots."""
    if isinstance(spec, type):
        return spec(**arguments)
    obj = get(spec)
    if not arguments and isinstance(spec, str):
        return obj
    config = obj.get_config()
    unknown = sorted(set(arguments) - set(config))
    if unknown and isinstance(obj, _losses.Loss):
        return type(obj)(**arguments)  # the loss names its own errors
    if unknown:
        raise ValueError(f"{what}__{unknown[0]}: {type(obj).__name__} has no argument {unknown[0]!r}; "
                         f"its arguments: {', '.join(sorted(config))}")
    config.update(arguments)
    if hasattr(type(obj), "from_config"):
        return type(obj).from_config(config)
    config.pop("name", None)
    return type(obj)(**config)


class SKClassifier(_sklearn_base.ClassifierMixin, _SKWrapper):
    """A deepcore model as a scikit-learn classifier.

    Labels may be any values ``np.unique`` sorts (strings too): they are
    encoded as 0..n_classes_-1 in ``classes_`` order. The default loss is
    sparse categorical cross-entropy, or binary cross-entropy when the model
    has a single output unit and there are two classes (predict_proba then
    returns [1 - p, p]). Fitted attributes: ``model_``, ``history_`` (the
    History's dict), ``callbacks_`` (the copies of ``callbacks`` that fit
    used), ``classes_``, ``n_classes_``, ``n_features_in_``, ``n_outputs_``.
    See the module docstring for the parameters.
    """

    def _meta(self):
        return {**super()._meta(), "n_classes_": self.n_classes_, "classes_": self.classes_}

    def _loss_for(self, model):
        units = model.output_shape[-1]
        return "binary_crossentropy" if units == 1 and self.n_classes_ == 2 else "sparse_categorical_crossentropy"

    def fit(self, X, y):
        """Encode the labels, build and compile a fresh model (unless
        warm_start), and train it for ``epochs``."""
        X, y = _validation.validate_data(self, X, y, dtype=np.float32)
        y = _validation.column_or_1d(y, warn=True)
        _multiclass.check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if self.warm_start and hasattr(self, "model_") and not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start: the labels {classes.tolist()} differ from the fitted classes_ "
                             f"{self.classes_.tolist()}")
        self.classes_, self.n_classes_, self.n_outputs_ = classes, len(classes), 1
        return self._fit(X, encoded)

    def _targets_for(self, model, encoded):
        units = model.output_shape[-1]
        if isinstance(model.loss, _losses.BinaryCrossentropy):  # one sigmoid unit: float 0/1 targets
            return encoded.astype(np.float32).reshape(-1, 1)
        if units < self.n_classes_:
            raise ValueError(f"SKClassifier: the model has {units} outputs but the data has {self.n_classes_} "
                             f"classes; build the output layer with n_classes_ units (the build function "
                             f"receives n_classes_ when it names it)")
        return encoded.astype(np.int32)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes_), rows summing to 1."""
        p = np.asarray(self._predict_raw(X), dtype=np.float64)
        if p.shape[1] == 1 and self.n_classes_ == 2:  # one sigmoid unit: P(classes_[1])
            p = np.hstack([1.0 - p, p])
        p = p[:, :self.n_classes_]
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable class of each row, as a label from classes_."""
        proba = self.predict_proba(X)  # first: NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]


class SKRegressor(_sklearn_base.RegressorMixin, _SKWrapper):
    """A deepcore model as a scikit-learn regressor (one or several
    targets). The default loss is mean squared error; ``predict`` returns a
    1-D array for a 1-D target. Fitted attributes: ``model_``, ``history_``,
    ``callbacks_``, ``n_features_in_``, ``n_outputs_``. See the module
    docstring for the parameters."""

    _default_loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Build and compile a fresh model (unless warm_start) and train it
        for ``epochs`` on float targets."""
        X, y = _validation.validate_data(self, X, y, dtype=np.float32, y_numeric=True, multi_output=True)
        self._target_1d = y.ndim == 1
        y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        self.n_outputs_ = y.shape[1]
        return self._fit(X, y)

    def predict(self, X):
        """Predicted targets: shape (n_samples,) for a 1-D target, else (n_samples, n_outputs_)."""
        out = np.asarray(self._predict_raw(X), dtype=np.float64)
        return out.reshape(-1) if self._target_1d else out
