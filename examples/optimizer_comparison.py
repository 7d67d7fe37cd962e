"""The chapter's optimizer comparison on Fashion-MNIST.

Every optimizer trains the same 784-300-100-10 MLP (ReLU, He init) from the
same initial weights and the same batch order; prints a table of the epoch at
which each first reaches the target validation accuracy, and the final
accuracy, and draws the learning curves in one plot when matplotlib is
installed.

    python examples/optimizer_comparison.py [--epochs 10] [--samples 55000] [--target 0.85] [--png PATH]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import deepcore as dc
from deepcore import optimizers as O

OPTIMIZERS = {
    "SGD": lambda: O.SGD(0.01),
    "Momentum": lambda: O.SGD(0.01, momentum=0.9),
    "Nesterov": lambda: O.SGD(0.01, momentum=0.9, nesterov=True),
    "Adagrad": lambda: O.Adagrad(0.01),
    "RMSprop": lambda: O.RMSprop(0.001),
    "Adam": lambda: O.Adam(0.001),
    "AdamW": lambda: O.AdamW(0.001, weight_decay=0.004),
    "Adamax": lambda: O.Adamax(0.002),
    "Nadam": lambda: O.Nadam(0.001),
    "Ftrl": lambda: O.Ftrl(0.05),
}


def load(samples):
    try:
        (x, y), (xt, yt) = dc.datasets.load_fashion_mnist()
    except dc.datasets.DatasetNotFoundError:
        from deepcore.datasets.fallback import load_digits_fallback
        (x, y), (xt, yt) = load_digits_fallback()
    flat = lambda a: (a.reshape(len(a), -1) / np.float32(255)).astype(np.float32)  # noqa: E731
    n_val = min(5000, max(100, samples // 5))  # validation: the images after the training ones
    n = min(samples, len(x) - n_val)
    return (flat(x[:n]), y[:n].astype(np.int32)), (flat(x[n:n + n_val]), y[n:n + n_val].astype(np.int32))


def run(samples=55000, epochs=10, target=0.85, names=None, seed=0):
    """Train each optimizer; returns {name: {"val_accuracy": [...], "loss": [...],
    "epochs_to_target": int or None, "final": float, "seconds": float}}."""
    (x, y), (xv, yv) = load(samples)
    results = {}
    for name in names or list(OPTIMIZERS):
        dc.set_random_seed(seed)
        model = dc.Sequential([dc.Input((x.shape[1],)),
                               dc.Dense(300, activation="relu", kernel_initializer="he_normal"),
                               dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
                               dc.Dense(10, activation="softmax")])
        model.compile(optimizer=OPTIMIZERS[name](), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        t0 = time.perf_counter()
        hist = model.fit(x, y, epochs=epochs, validation_data=(xv, yv), verbose=0, seed=seed).history
        acc = hist["val_accuracy"]
        reach = next((i + 1 for i, a in enumerate(acc) if a >= target), None)
        results[name] = {"val_accuracy": acc, "loss": hist["loss"], "epochs_to_target": reach,
                         "final": acc[-1], "seconds": time.perf_counter() - t0}
    return results


def table(results, target):
    lines = [f"optimizer | epochs to {target:.0%} val. accuracy | final val. accuracy | final loss | time",
             "--- | --- | --- | --- | ---"]
    for name, r in results.items():
        reach = "-" if r["epochs_to_target"] is None else str(r["epochs_to_target"])
        lines.append(f"{name} | {reach} | {r['final']:.4f} | {r['loss'][-1]:.4f} | {r['seconds']:.1f} s")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib)")
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        epochs = range(1, len(r["loss"]) + 1)
        ax1.plot(epochs, r["loss"], label=name)
        ax2.plot(epochs, r["val_accuracy"], label=name)
    ax1.set_title("training loss")
    ax2.set_title("validation accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
    ax1.set_yscale("log")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=55000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--png", default="optimizer_comparison.png")
    args = p.parse_args()
    results = run(args.samples, args.epochs, args.target)
    print(table(results, args.target))
    plot(results, args.png)


if __name__ == "__main__":
    main()
