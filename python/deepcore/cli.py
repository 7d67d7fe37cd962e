"""The ``deepcore`` command: demo, info, bench."""
from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import deepcore as dc
    from deepcore.datasets import DatasetNotFoundError, load_digits_fallback, load_fashion_mnist

    try:
        (X_full, y_full), (X_test, y_test) = load_fashion_mnist()
        dataset, n_valid = "Fashion-MNIST", 5000
    except DatasetNotFoundError as e:
        print(f"note: Fashion-MNIST not found, so this demo uses scikit-learn's 8x8 digits instead.\n{e}\n",
              file=sys.stderr)
        (X_full, y_full), (X_test, y_test) = load_digits_fallback()
        dataset, n_valid = "scikit-learn digits (fallback)", 200
    print(f"{dataset}: {len(X_full)} training images of {X_full.shape[1:]}, {len(X_test)} test images")
    X_train, y_train = X_full[:-n_valid] / 255.0, y_full[:-n_valid]
    X_valid, y_valid = X_full[-n_valid:] / 255.0, y_full[-n_valid:]
    X_test = X_test / 255.0

    dc.set_random_seed(args.seed)
    model = dc.Sequential([
        dc.layers.Flatten(input_shape=list(X_train.shape[1:])),
        dc.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
        dc.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.layers.Dense(10, activation="softmax"),
    ])
    model.summary()
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(X_valid, y_valid), verbose=1 if sys.stdout.isatty() else 2)
    dt = time.perf_counter() - t0
    loss, acc = model.evaluate(X_test, y_test, batch_size=256)
    print(f"trained {args.epochs} epochs in {dt:.1f} s ({dt / args.epochs:.2f} s/epoch)")
    print(f"test loss {loss:.4f}  test accuracy {acc:.4f}")
    return 0


def _info(args) -> int:
    import numpy as np

    import deepcore as dc
    from deepcore import cuda
    from deepcore._native import core

    print(f"deepcore {dc.__version__}")
    print(f"numpy {np.__version__}")
    print(f"BLAS: {core.blas_config()}")
    print(f"threads: deepcore pool {core.get_num_threads()}, OpenBLAS {core.blas_num_threads()}")
    print(f"CUDA available: {cuda.is_available()}" + ("" if cuda.is_available() else f" ({cuda.reason()})"))
    if cuda.is_available():
        current, mod = cuda.current_device(), cuda._probe()
        for d in range(cuda.device_count()):
            p = mod.device_properties(d)
            print(f"cuda:{d}: {p['name']}, sm_{p['compute_capability'][0]}{p['compute_capability'][1]}, "
                  f"{p['total_memory'] / 2**30:.0f} GiB" + (" (current)" if d == current else ""))
        print(f"cuBLASLt (GPU Dense): {cuda.blas_available()}" + ("" if cuda.blas_available()
                                                                 else f" ({cuda.blas_reason()})"))
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _bench(args) -> int:
    from deepcore.bench import run

    run(quick=args.quick, torch=not args.no_torch, sections=args.only, repeats=args.repeats)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deepcore", description="deepcore: deep learning on fused C++ kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train the 784-300-100-10 MLP on Fashion-MNIST")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(fn=_demo)
    p = sub.add_parser("info", help="version, BLAS, threads, CUDA")
    p.set_defaults(fn=_info)
    p = sub.add_parser("bench", help="microbenchmarks and training throughput vs NumPy (and PyTorch)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, training rows on a subset")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--only", choices=["kernels", "conv", "batchnorm", "dropout", "training", "optimizers", "coexist",
                                      "gpu"],
                   action="append", help="run only these sections (repeatable); coexist (two libraries in one "
                   "process) runs only when named")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="fresh processes per side of each CPU row, the sides alternating (default 3; 1 with --quick)")
    p.set_defaults(fn=_bench)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
