"""The tuners: an Optuna study whose trials build, train and keep a deepcore
model. Optuna does the sampling, the pruning and the bookkeeping (its
storage is the distributed engine: deepcore writes no state of its own
beside each trial's weights file)."""
from __future__ import annotations

import math
import os
import socket
import tempfile
from dataclasses import dataclass


from .._optional import require
from ..callbacks import Callback
from ..models import Model
from ..saving import load_safetensors
from .hyperparameters import HyperParameters
from .pruning import PruningCallback

optuna = require("optuna", "deepcore.tuner")

__all__ = ["Objective", "Tuner", "RandomSearch", "BayesianOptimization", "Hyperband"]

_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class Objective:
    """What the search optimizes: a log key (``"val_accuracy"``) and its
    direction, ``"min"`` or ``"max"``. A trial's score is the key's best
    value over its epochs (as in Keras Tuner)."""
    name: str
    direction: str

    def __post_init__(self):
        if self.direction not in ("min", "max"):
            raise ValueError(f"Objective({self.name!r}): direction must be 'min' or 'max', got {self.direction!r}")

    def improves(self, value, best):
        """Whether value beats best (None: anything finite does; NaN never does)."""
        if not math.isfinite(value):
            return False
        return best is None or (value > best if self.direction == "max" else value < best)

    def best(self, values):
        """The best finite value (NaN if none is finite)."""
        result = None
        for v in values:
            if self.improves(v, result):
                result = v
        return float("nan") if result is None else result


_MAXIMIZED = ("accuracy", "acc", "auc", "precision", "recall")
_MINIMIZED = ("loss", "error", "mae", "mse", "rmse", "crossentropy", "mean_absolute_error",
              "mean_squared_error", "root_mean_squared_error")


def _objective(objective):
    if isinstance(objective, Objective):
        return objective
    if not isinstance(objective, str) or not objective:
        raise ValueError(f"objective must be a log key such as 'val_accuracy' or an Objective, got {objective!r}")
    name = objective[4:] if objective.startswith("val_") else objective
    if name.endswith(_MAXIMIZED):
        return Objective(objective, "max")
    if name.endswith(_MINIMIZED):
        return Objective(objective, "min")
    raise ValueError(f"cannot tell whether objective={objective!r} should be minimized or maximized; pass "
                     f"deepcore.tuner.Objective({objective!r}, 'min') or 'max'")


class Tuner:
    """A search over the models that ``hypermodel(hp)`` builds (compiled).

    ``objective``: a log key or an Objective (default "val_loss");
    ``max_trials``: how many trials the study should finish (completed or
    pruned) in all, counting those already in a resumed or shared study;
    ``seed``: the sampler's seed (a resumed search offsets it by the number of
    trials already in the study, so it does not draw the same values again);
    ``storage``: None (in memory), an Optuna storage URL
    ("sqlite:///search.db", "postgresql://...") or storage object;
    ``directory``/``project_name``: where each trial's weights are written
    (required with a storage, and shared by the processes that share it;
    without one, a temporary directory that lives as long as the tuner);
    ``project_name`` is also the study's name; ``overwrite=True`` deletes an
    existing study of that name first.

    Several processes: construct the tuner once (it creates the database
    and the study) before starting the workers, as Optuna advises; each
    worker then builds the same tuner and calls ``search``. A process killed
    mid-trial leaves that trial RUNNING in the study (Optuna's record of
    it); it is not counted as finished, so the resumed search runs a new one.
    """

    def __init__(self, hypermodel, objective="val_loss", max_trials=10, *, sampler_factory, pruner=None, seed=None,
                 directory=None, project_name="deepcore_tuner", storage=None, overwrite=False):
        if not callable(hypermodel):
            raise TypeError(f"hypermodel must be a function build_model(hp) that returns a compiled deepcore model, "
                            f"got {type(hypermodel).__name__}")
        if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
            raise ValueError(f"max_trials must be an int >= 1, got {max_trials!r}")
        self.hypermodel = hypermodel
        self.objective = _objective(objective)
        self.max_trials = max_trials
        self.seed = seed
        self.project_name = project_name
        self._sampler_factory = sampler_factory
        if storage is not None and directory is None:
            raise ValueError("a tuner with a storage needs directory= for the trials' weights (a directory that "
                             "every process sharing the storage can reach)")
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="deepcore_tuner_")
            directory = self._tmp.name
        self.directory = os.fspath(directory)
        self.project_dir = os.path.join(self.directory, project_name)
        if isinstance(storage, str):
            storage = optuna.storages.RDBStorage(storage)
        if overwrite and storage is not None and project_name in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=project_name, storage=storage)
        self.study = optuna.create_study(study_name=project_name, storage=storage, load_if_exists=True,
                                         direction="maximize" if self.objective.direction == "max" else "minimize",
                                         sampler=sampler_factory(seed), pruner=pruner or optuna.pruners.NopPruner())

    # ---------------------------------------------------------------- search
    def search(self, x, y, epochs=1, validation_data=None, validation_split=0.0, callbacks=None, batch_size=None,
               verbose=0, **fit_kwargs):
        """Run trials until the study holds ``max_trials`` finished ones:
        each builds a model with ``hypermodel(hp)``, fits it with these
        arguments (model.fit's), keeps its weights and history, and scores it
        by the objective's best epoch. Finished trials of a resumed or shared
        study are not run again."""
        if self.finished_trials() >= self.max_trials:
            return self
        if self.seed is not None:  # a resumed search draws new values
            self.study.sampler = self._sampler_factory(self.seed + len(self.study.trials))
        fit_options = dict(fit_kwargs, epochs=epochs, validation_data=validation_data,
                           validation_split=validation_split, batch_size=batch_size, verbose=verbose)

        def objective(trial):
            return self._run_trial(trial, x, y, callbacks, fit_options)

        stop = optuna.study.MaxTrialsCallback(self.max_trials, states=_FINISHED)
        self.study.optimize(objective, n_trials=self.max_trials - self.finished_trials(), callbacks=[stop],
                            gc_after_trial=False)
        return self

    def _run_trial(self, trial, x, y, callbacks, fit_options):
        hp = HyperParameters(trial=trial)
        model = self.hypermodel(hp)
        if not isinstance(model, Model):
            raise TypeError(f"build_model(hp) returned {type(model).__name__}, not a deepcore model")
        if model.loss is None:
            raise ValueError("build_model(hp) must return a compiled model (model.compile(...) inside it)")
        directory = os.path.join(self.project_dir, f"trial_{trial.number:04d}")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "model.weights")
        pruning = PruningCallback(trial, self.objective.name)
        best_epoch = _SaveBestEpoch(path, self.objective)
        history = model.fit(x, y, callbacks=list(callbacks or []) + [pruning, best_epoch], **fit_options)
        logs = history.history
        if self.objective.name not in logs:
            raise KeyError(f"objective {self.objective.name!r} is not among the logged keys {sorted(logs)}")
        if best_epoch.epoch is None:  # the objective was never finite: keep the last weights
            model.save_weights(path, overwrite=True)
        trial.set_user_attr("best_epoch", best_epoch.epoch)
        trial.set_user_attr("hyperparameters", hp.values)
        trial.set_user_attr("history", {k: [float(v) for v in vals] for k, vals in logs.items()})
        trial.set_user_attr("weights", os.path.relpath(path, self.directory))
        # Loading goes by position: a model rebuilt in another process (or
        # later in this one) names its layers differently.
        trial.set_user_attr("weight_names", [v.path for v in model.weights])
        trial.set_user_attr("input_shape", list(model.input_shape[1:]))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_epoch + 1}")
        return self.objective.best(logs[self.objective.name])

    # --------------------------------------------------------------- results
    def finished_trials(self):
        """How many trials the study holds completed or pruned."""
        return len(self.study.get_trials(deepcopy=False, states=_FINISHED))

    def _best_trials(self, num):
        done = [t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        done.sort(key=lambda t: t.value, reverse=self.objective.direction == "max")
        return done[:num]

    def get_best_hyperparameters(self, num_trials=1):
        """The HyperParameters of the best completed trials, best first."""
        return [HyperParameters(t.user_attrs["hyperparameters"]) for t in self._best_trials(num_trials)]

    def get_best_models(self, num_models=1):
        """The models of the best completed trials, best first, rebuilt with
        ``hypermodel(hp)`` and given the weights of the trial's best epoch."""
        return [self.get_model(t.number) for t in self._best_trials(num_models)]

    def _trial(self, number):
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise KeyError(f"no trial {number} in study {self.project_name!r}")

    def get_model(self, trial_number):
        """The model of a trial (completed or pruned) with the weights of its
        best epoch (``study.trials[n].user_attrs["best_epoch"]``)."""
        t = self._trial(trial_number)
        if "weights" not in t.user_attrs:
            raise ValueError(f"trial {trial_number} ({t.state.name}) kept no weights")
        model = self.hypermodel(HyperParameters(t.user_attrs["hyperparameters"]))
        if not model.built:
            model.build((None,) + tuple(t.user_attrs["input_shape"]))
        tensors, _ = load_safetensors(os.path.join(self.directory, t.user_attrs["weights"]))
        model.set_weights([tensors[name] for name in t.user_attrs["weight_names"]])
        return model

    def get_history(self, trial_number):
        """The History dict of a trial ({key: per-epoch values})."""
        return self._trial(trial_number).user_attrs.get("history", {})

    def results_summary(self, num_trials=10, print_fn=print):
        """Print the best trials with their hyperparameters and scores."""
        print_fn("Results summary")
        print_fn(f"Results in {self.project_dir}")
        print_fn(f"Showing {num_trials} best trials")
        print_fn(f"Objective(name=\"{self.objective.name}\", direction=\"{self.objective.direction}\")")
        for t in self._best_trials(num_trials):
            print_fn("")
            print_fn(f"Trial {t.number:04d} summary")
            print_fn("Hyperparameters:")
            for name, value in t.user_attrs["hyperparameters"].items():
                print_fn(f"{name}: {value}")
            print_fn(f"Score: {t.value}")


class _SaveBestEpoch(Callback):
    """Writes the weights (and the optimizer's state with them) at each
    epoch that improves the objective: a trial keeps its best epoch's model,
    the one its score describes (as Keras Tuner does)."""

    def __init__(self, path, objective):
        super().__init__()
        self.path, self.objective = path, objective
        self.best = None
        self.epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective.name)
        if value is not None and self.objective.improves(value, self.best):
            self.best, self.epoch = value, epoch
            self.model.save_weights(self.path, overwrite=True)


class RandomSearch(Tuner):
    """Hyperparameters drawn at random (Optuna's RandomSampler). Defaults:
    objective="val_loss", max_trials=10."""

    def __init__(self, hypermodel, objective="val_loss", max_trials=10, **kwargs):
        super().__init__(hypermodel, objective, max_trials,
                         sampler_factory=lambda seed: optuna.samplers.RandomSampler(seed=seed), **kwargs)


class BayesianOptimization(Tuner):
    """Hyperparameters proposed by the Tree-structured Parzen Estimator
    (Optuna's TPESampler; ``num_initial_points`` random trials first,
    default 10 as Optuna's n_startup_trials). Defaults: objective="val_loss",
    max_trials=10."""

    def __init__(self, hypermodel, objective="val_loss", max_trials=10, num_initial_points=10, **kwargs):
        super().__init__(hypermodel, objective, max_trials, sampler_factory=lambda seed: optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=num_initial_points), **kwargs)


class Hyperband(Tuner):
    """Hyperband (Li et al., 2018): many configurations trained briefly, the
    best trained further. Optuna's HyperbandPruner (min_resource=1 epoch,
    max_resource=``max_epochs``, reduction_factor=``factor``) decides after
    each epoch, through PruningCallback, whether a trial goes on; a pruned
    trial keeps its weights and history. Hyperparameters come from the TPE
    sampler (Optuna's recommended pairing; Keras Tuner's Hyperband draws
    them at random). ``search`` trains each trial for up to ``max_epochs``.
    Defaults: objective="val_loss", factor=3, max_trials=20."""

    def __init__(self, hypermodel, objective="val_loss", max_epochs=10, factor=3, max_trials=20, **kwargs):
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"Hyperband: max_epochs must be an int >= 1, got {max_epochs!r}")
        self.max_epochs = max_epochs
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=factor)
        super().__init__(hypermodel, objective, max_trials, pruner=pruner,
                         sampler_factory=lambda seed: optuna.samplers.TPESampler(seed=seed), **kwargs)

    def search(self, x, y, epochs=None, **kwargs):
        if epochs is not None and epochs != self.max_epochs:
            raise ValueError(f"Hyperband trains each trial for up to max_epochs={self.max_epochs} epochs; "
                             f"search(epochs={epochs}) disagrees (leave epochs out)")
        return super().search(x, y, epochs=self.max_epochs, **kwargs)
