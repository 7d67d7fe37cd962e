"""The README's Fashion-MNIST MLP trained twice with the same seed, on the CPU
and on the GPU (model.to("cuda")): test accuracy and seconds per epoch of
each. The issue asks for the same accuracy on both devices; the weights may
drift apart by rounding (cuBLASLt sums in another order), so the accuracies
are compared, not the weights. Run by tools/gpu/check.sh train."""
import sys
import time

import deepcore as dc
from deepcore.datasets import load_fashion_mnist

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def run(device):
    (X, y), (Xt, yt) = load_fashion_mnist()
    X, Xt = X / 255.0, Xt / 255.0
    dc.set_random_seed(42)
    model = dc.Sequential([
        dc.layers.Flatten(input_shape=[28, 28]),
        dc.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
        dc.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
                  metrics=["accuracy"])
    model.to(device)
    t0 = time.perf_counter()
    model.fit(X, y, epochs=EPOCHS, validation_split=0.1, verbose=0, seed=42)
    dt = (time.perf_counter() - t0) / EPOCHS
    loss, acc = model.evaluate(Xt, yt, verbose=0)
    print(f"{device}: test accuracy {acc:.4f}, test loss {loss:.4f}, {dt:.2f} s per epoch", flush=True)
    return acc


cpu = run("cpu")
gpu = run("cuda")
print(f"accuracy difference GPU - CPU: {gpu - cpu:+.4f} ({'within' if abs(gpu - cpu) <= 0.005 else 'OUTSIDE'} 0.5 points)")
