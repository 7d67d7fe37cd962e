"""Hyperparameter search on Optuna, in the shape Keras Tuner users know
(the ``tune`` extra: pip install "deepcore[tune]").

    def build_model(hp):
        model = dc.Sequential([dc.layers.Flatten(input_shape=[28, 28])])
        for _ in range(hp.Int("n_hidden", 0, 8)):
            model.add(dc.layers.Dense(hp.Int("n_neurons", 16, 256), activation="relu"))
        model.add(dc.layers.Dense(10, activation="softmax"))
        optimizer = dc.optimizers.get(hp.Choice("optimizer", ["sgd", "adam"]))
        optimizer.learning_rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
        return model

    tuner = dc.tuner.RandomSearch(build_model, objective="val_accuracy", max_trials=10)
    tuner.search(X_train, y_train, epochs=10, validation_data=(X_valid, y_valid))
    best_model = tuner.get_best_models()[0]
    tuner.study            # the optuna.Study: its trials, its visualizations

``RandomSearch`` (Optuna's RandomSampler), ``BayesianOptimization``
(TPESampler) and ``Hyperband`` (HyperbandPruner, fed each epoch by
``PruningCallback``). With ``storage="sqlite:///search.db"`` (any Optuna
storage URL, or a storage object) the search lives in that database: a
crashed or stopped search resumes where it was, and several processes or
machines given the same storage and ``directory`` work on one study. Each
trial's weights at its best epoch
(``<directory>/<project_name>/trial_NNNN/model.weights``) and its history
(the trial's user attributes) are kept.
"""
from .hyperparameters import HyperParameters
from .pruning import PruningCallback
from .tuners import BayesianOptimization, Hyperband, Objective, RandomSearch, Tuner

__all__ = ["HyperParameters", "Objective", "Tuner", "RandomSearch", "BayesianOptimization", "Hyperband",
           "PruningCallback"]
