"""Run deepcore's benchmarks (same as `deepcore bench`).

    python benchmarks/run.py [--quick] [--no-torch] [--only kernels|training]
"""
import sys

from deepcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
