"""Vanishing gradients, made visible.

Trains three 10-hidden-layer MLPs on Fashion-MNIST for a short while and
records, per layer, the norm of the weight gradients and the statistics of the
activations (deepcore.diagnostics.GradientDiagnostics):

  * sigmoid with N(0, 1) initialization: each layer's output variance is far
    above its input's, the sigmoids saturate (outputs pinned near 0 and 1),
    and the hidden layers get gradients ~8x smaller than the output layer's
    and ~15x smaller than the ReLU net's: it barely learns;
  * sigmoid with the old "standard" small uniform initialization
    U(-1/sqrt(n), 1/sqrt(n)) that Glorot & Bengio (2010) studied: the
    gradient shrinks ~4-8x per layer on its way down, ~1e-7 at the first layer;
  * ReLU with He initialization;
  * SELU with LeCun initialization on standardized inputs (self-normalizing).

Prints a table of gradient norms per layer and, when matplotlib is installed,
draws them to vanishing_gradients.png.

    python examples/vanishing_gradients.py [--samples 10000] [--epochs 1] [--png PATH]
"""
from __future__ import annotations

import argparse

import numpy as np

import deepcore as dc
from deepcore.diagnostics import GradientDiagnostics

CONFIGS = {
    "sigmoid + N(0,1)": dict(activation="sigmoid", init=lambda: dc.initializers.RandomNormal(0.0, 1.0)),
    "sigmoid + U(+-1/sqrt(n))": dict(activation="sigmoid", init=lambda: dc.initializers.VarianceScaling(
        1.0 / 3.0, mode="fan_in", distribution="uniform")),
    "ReLU + He": dict(activation="relu", init=lambda: "he_normal"),
    "SELU + LeCun": dict(activation="selu", init=lambda: "lecun_normal"),
}


def load(samples):
    try:
        (x, y), _ = dc.datasets.load_fashion_mnist()
    except dc.datasets.DatasetNotFoundError:
        from deepcore.datasets.fallback import load_digits_fallback
        (x, y), _ = load_digits_fallback()
    x = x[:samples].reshape(min(samples, len(x)), -1).astype(np.float32) / np.float32(255)
    # Standardize (what SELU needs; harmless for the others).
    x = (x - x.mean(0)) / (x.std(0) + 1e-7)
    return x.astype(np.float32), y[:samples].astype(np.int32)


def build(activation, init, depth=10, width=100, inputs=784, seed=0):
    dc.set_random_seed(seed)
    layers = [dc.Input((inputs,))]
    layers += [dc.Dense(width, activation=activation, kernel_initializer=init(), name=f"hidden{i + 1}")
               for i in range(depth)]
    layers.append(dc.Dense(10, activation="softmax", name="output"))
    model = dc.Sequential(layers)
    model.compile(optimizer=dc.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run(samples=10000, epochs=1, every=5, configs=CONFIGS):
    """Train each configuration; returns {name: {"grad": [...], "mean": [...],
    "std": [...], "dead": [...], "accuracy": float, "layers": [...]}} with one
    entry per layer, from the first epoch."""
    x, y = load(samples)
    results = {}
    for name, cfg in configs.items():
        model = build(cfg["activation"], cfg["init"], inputs=x.shape[1])
        diag = GradientDiagnostics(every=every)
        hist = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[diag], seed=0).history
        names = [layer.name for layer in model.layers]
        first = lambda key: [hist.get(f"{n}/{key}", [float("nan")])[0] for n in names]  # noqa: E731
        results[name] = {"layers": names, "grad": first("gradient_norm"), "mean": first("activation_mean"),
                         "std": first("activation_std"), "dead": first("dead_fraction"),
                         "accuracy": hist["accuracy"][-1]}
    return results


def table(results):
    names = next(iter(results.values()))["layers"]
    cols = list(results)
    lines = ["Weight-gradient norm per layer (first epoch average)", "layer | " + " | ".join(cols),
             " | ".join(["---"] * (len(cols) + 1))]
    for i, layer in enumerate(names):
        lines.append(layer + " | " + " | ".join(f"{results[c]['grad'][i]:.3g}" for c in cols))
    lines.append("hidden1 / output | " + " | ".join(
        f"{results[c]['grad'][0] / results[c]['grad'][-1]:.2g}" for c in cols))
    lines.append("activation std (last hidden) | " + " | ".join(
        f"{results[c]['std'][len(names) - 2]:.3g}" for c in cols))
    lines.append("training accuracy | " + " | ".join(f"{results[c]['accuracy']:.3f}" for c in cols))
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        ax.plot(range(1, len(r["grad"]) + 1), r["grad"], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = first hidden, last = output)")
    ax.set_ylabel("weight-gradient norm")
    ax.set_title("Vanishing gradients in a 10-layer MLP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--png", default="vanishing_gradients.png")
    args = p.parse_args()
    results = run(args.samples, args.epochs)
    print(table(results))
    plot(results, args.png)


if __name__ == "__main__":
    main()
