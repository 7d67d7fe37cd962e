"""The ladder of "TensorFlow and deep learning, without a PhD" (Martin Görner)
on MNIST, one rung after another, one table row per rung.

    python examples/mnist_ladder.py                      # every rung
    python examples/mnist_ladder.py --rungs convnet --epochs 3 --threads 1

Data: MNIST's 60,000 training images from ../shared/data/mnist (--data).
The official test set is deliberately not used: the first 50,000 images
train, the **last 10,000 are held out as the test split** and every accuracy
below is measured on them.

Rungs (batch 100 throughout; "decay" is the tutorial's
lr = 0.0001 + 0.003 * exp(-step / 2000)):
  softmax     Dense(10, softmax) on the pixels, SGD(0.1)
  sigmoid     five layers 200-100-60-30-10, sigmoid, Adam(0.003)
  relu        the same with ReLU
  relu+decay  the same with the learning-rate decay
  dropout     the same with Dropout(0.25) after each hidden layer
  convnet     Conv2D 6@5x5 s1, 12@5x5 s2, 24@4x4 s2 ("same", ReLU), Dense 200
              ReLU + Dropout(0.25), softmax; Adam with the decay
  convnet+bn  Conv2D 24@6x6 s1, 48@5x5 s2, 64@4x4 s2, each followed by
              BatchNormalization and ReLU, Dense 200 + BatchNormalization +
              ReLU + Dropout(0.3), softmax; Adam with the decay
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np

import deepcore as dc
from deepcore.datasets.idx import load_idx

HERE = Path(__file__).resolve().parent


class TutorialDecay(dc.schedules.LearningRateSchedule):
    """The tutorial's decay: lr(step) = minimum + maximum * exp(-step / decay_steps),
    0.0001 + 0.003 * exp(-step / 2000) by default."""

    def __init__(self, maximum=0.003, minimum=0.0001, decay_steps=2000.0):
        self.maximum, self.minimum, self.decay_steps = maximum, minimum, decay_steps

    def __call__(self, step):
        return self.minimum + self.maximum * math.exp(-float(step) / self.decay_steps)

    def get_config(self):
        return {"maximum": self.maximum, "minimum": self.minimum, "decay_steps": self.decay_steps}


def mlp(activation, dropout=0.0):
    layers = [dc.Input((28, 28, 1)), dc.Flatten()]
    for units in (200, 100, 60, 30):
        layers.append(dc.Dense(units, activation=activation))
        if dropout:
            layers.append(dc.Dropout(dropout))
    return layers + [dc.Dense(10, activation="softmax")]


def convnet():
    return [dc.Input((28, 28, 1)),
            dc.Conv2D(6, 5, strides=1, padding="same", activation="relu"),
            dc.Conv2D(12, 5, strides=2, padding="same", activation="relu"),
            dc.Conv2D(24, 4, strides=2, padding="same", activation="relu"),
            dc.Flatten(),
            dc.Dense(200, activation="relu"),
            dc.Dropout(0.25),
            dc.Dense(10, activation="softmax")]


def convnet_bn():
    layers = [dc.Input((28, 28, 1))]
    for filters, size, stride in ((24, 6, 1), (48, 5, 2), (64, 4, 2)):
        layers += [dc.Conv2D(filters, size, strides=stride, padding="same", use_bias=False),
                   dc.BatchNormalization(), dc.Activation("relu")]
    return layers + [dc.Flatten(), dc.Dense(200, use_bias=False), dc.BatchNormalization(), dc.Activation("relu"),
                     dc.Dropout(0.3), dc.Dense(10, activation="softmax")]


RUNGS = {
    "softmax": (lambda: [dc.Input((28, 28, 1)), dc.Flatten(), dc.Dense(10, activation="softmax")],
                lambda: dc.optimizers.SGD(0.1)),
    "sigmoid": (lambda: mlp("sigmoid"), lambda: dc.optimizers.Adam(0.003)),
    "relu": (lambda: mlp("relu"), lambda: dc.optimizers.Adam(0.003)),
    "relu+decay": (lambda: mlp("relu"), lambda: dc.optimizers.Adam(TutorialDecay())),
    "dropout": (lambda: mlp("relu", dropout=0.25), lambda: dc.optimizers.Adam(TutorialDecay())),
    "convnet": (convnet, lambda: dc.optimizers.Adam(TutorialDecay())),
    "convnet+bn": (convnet_bn, lambda: dc.optimizers.Adam(TutorialDecay())),
}


class EpochTimer(dc.callbacks.Callback):
    """Wall-clock seconds of each epoch's training (validation excluded: none is run)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def load_split(path):
    # The official test files are deliberately absent (../shared/data/mnist/README.md): read the training pair.
    x = load_idx(Path(path) / "train-images-idx3-ubyte.gz")
    y = load_idx(Path(path) / "train-labels-idx1-ubyte.gz")
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    y = y.astype(np.int32)
    # The first 50,000 train; the last 10,000 are the held-out test split.
    return (x[:-10000], y[:-10000]), (x[-10000:], y[-10000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS))
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per rung (default: 10 for the dense rungs, 12 for the convnets)")
    parser.add_argument("--data", default=str(HERE.parent / ".." / "shared" / "data" / "mnist"),
                        help="the folder holding train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="deepcore's threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        dc.set_num_threads(args.threads)

    (x_train, y_train), (x_test, y_test) = load_split(args.data)
    print(f"MNIST: {len(x_train)} training images, the last {len(x_test)} of the 60,000 held out as the test split; "
          f"{dc.get_num_threads()} threads")
    print(f"| rung | epochs | test accuracy | seconds per epoch |")
    print(f"|---|---:|---:|---:|")
    for name in args.rungs:
        build, optimizer = RUNGS[name]
        epochs = args.epochs or (12 if name.startswith("convnet") else 10)
        dc.set_random_seed(args.seed)
        model = dc.Sequential(build())
        model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        timer = EpochTimer()
        model.fit(x_train, y_train, batch_size=100, epochs=epochs, verbose=0, callbacks=[timer], seed=args.seed)
        _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
        print(f"| {name} | {epochs} | {100 * accuracy:.2f}% | {np.median(timer.seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
