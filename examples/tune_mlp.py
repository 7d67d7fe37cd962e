"""The chapter's hyperparameter search over the Fashion-MNIST MLP, on
deepcore.tuner (Optuna): 0 to 8 hidden layers of 16 to 256 ReLU units, a
learning rate from 1e-4 to 1e-2 (log scale), SGD or Adam.

    pip install ".[tune,plot]"
    python examples/tune_mlp.py --tuner random --max-trials 5 --epochs 10

--storage sqlite:///tune_mlp.db makes the search resumable (run the same
command again after a crash) and lets several processes share it (start the
same command in each; they divide the trials). The best trial's learning
curves go to tune_mlp_best.png when matplotlib is installed.
"""
import argparse
import time

import numpy as np

import deepcore as dc
from deepcore.datasets import load_fashion_mnist


def build_model(hp):
    n_hidden = hp.Int("n_hidden", min_value=0, max_value=8, default=2)
    n_neurons = hp.Int("n_neurons", min_value=16, max_value=256)
    learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log")
    optimizer = hp.Choice("optimizer", values=["sgd", "adam"])
    if optimizer == "sgd":
        optimizer = dc.optimizers.SGD(learning_rate=learning_rate)
    else:
        optimizer = dc.optimizers.Adam(learning_rate=learning_rate)
    model = dc.Sequential([dc.layers.Flatten(input_shape=[28, 28])])
    for _ in range(n_hidden):
        model.add(dc.layers.Dense(n_neurons, activation="relu"))
    model.add(dc.layers.Dense(10, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuner", choices=["random", "bayesian", "hyperband"], default="random")
    parser.add_argument("--max-trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial (Hyperband: the most)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--storage", default=None, help="an Optuna storage URL, e.g. sqlite:///tune_mlp.db")
    parser.add_argument("--directory", default="tune_mlp", help="where the trials' weights go")
    args = parser.parse_args()

    (X_train_full, y_train_full), (X_test, y_test) = load_fashion_mnist()
    X_train_full = (X_train_full / 255.0).astype(np.float32)
    X_test = (X_test / 255.0).astype(np.float32)
    X_train, y_train = X_train_full[:-5000], y_train_full[:-5000]
    X_valid, y_valid = X_train_full[-5000:], y_train_full[-5000:]

    dc.set_random_seed(args.seed)
    common = dict(objective="val_accuracy", max_trials=args.max_trials, seed=args.seed, directory=args.directory,
                  project_name=f"tune_mlp_{args.tuner}", storage=args.storage)
    if args.tuner == "random":
        tuner = dc.tuner.RandomSearch(build_model, **common)
    elif args.tuner == "bayesian":
        tuner = dc.tuner.BayesianOptimization(build_model, num_initial_points=min(5, args.max_trials), **common)
    else:
        tuner = dc.tuner.Hyperband(build_model, max_epochs=args.epochs, factor=3, **common)
    start = time.perf_counter()
    epochs = None if args.tuner == "hyperband" else args.epochs
    tuner.search(X_train, y_train, epochs=epochs, validation_data=(X_valid, y_valid))
    print(f"search: {time.perf_counter() - start:.0f} s, {tuner.finished_trials()} finished trials")
    tuner.results_summary(num_trials=3)

    best_trial = tuner.study.best_trial
    best_model = tuner.get_best_models()[0]
    test_loss, test_accuracy = best_model.evaluate(X_test, y_test)
    print(f"best trial {best_trial.number}: {tuner.get_best_hyperparameters()[0].values}")
    print(f"best trial's val_accuracy {best_trial.value:.4f}, test accuracy {test_accuracy:.4f}")
    try:
        dc.plot.learning_curves(tuner.get_history(best_trial.number), path="tune_mlp_best.png")
        print("the best trial's learning curves: tune_mlp_best.png")
    except ImportError as e:
        print(f"({e})")


if __name__ == "__main__":
    main()
