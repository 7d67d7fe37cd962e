"""Run deepcore's benchmarks (same as `deepcore bench`).

    python benchmarks/run.py [--quick] [--no-torch] [--repeats N]
        [--only kernels|batchnorm|dropout|training|optimizers|coexist|gpu]
"""
import sys

from deepcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
