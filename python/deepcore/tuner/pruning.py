"""The per-epoch pruning callback: it reports the monitored value of each
epoch to an Optuna trial and stops training when the study's pruner (e.g.
Hyperband) says the trial is not worth finishing. Usable on its own in an
Optuna objective:

    def objective(trial):
        ...
        pruning = dc.tuner.PruningCallback(trial, monitor="val_loss")
        model.fit(..., callbacks=[pruning])
        if pruning.pruned:
            raise optuna.TrialPruned()
"""
from __future__ import annotations

import math

from ..callbacks import Callback

__all__ = ["PruningCallback"]


class PruningCallback(Callback):
    """``trial.report(logs[monitor], epoch)`` after every epoch; when
    ``trial.should_prune()``, sets ``model.stop_training`` and ``pruned``
    (training ends after that epoch; raising optuna.TrialPruned is left to
    the objective, after it has kept what it needs). A monitor that is not in
    the logs is a KeyError naming those that are."""

    def __init__(self, trial, monitor="val_loss"):
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned = False
        self.pruned_epoch = None

    def on_train_begin(self, logs=None):
        self.pruned = False
        self.pruned_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"PruningCallback: monitor={self.monitor!r} is not in the epoch's logs "
                           f"{sorted(logs)}; pass validation data for a val_ key, or monitor a logged key")
        value = float(logs[self.monitor])
        self.trial.report(value if math.isfinite(value) else float("nan"), step=epoch)
        if self.trial.should_prune():
            self.pruned, self.pruned_epoch = True, epoch
            self.model.stop_training = True
