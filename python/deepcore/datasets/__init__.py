"""Dataset loaders (IDX reader, MNIST, Fashion-MNIST, sklearn digits fallback).

Self-contained on purpose: imports only numpy and the standard library, never
the rest of deepcore, so it works without the compiled extension.
"""

from .fallback import load_digits_fallback
from .idx import load_idx
from .mnist import DatasetNotFoundError, load_fashion_mnist, load_mnist

__all__ = [
    "DatasetNotFoundError",
    "load_digits_fallback",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
]
