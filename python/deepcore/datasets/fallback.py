"""Offline fallback dataset: scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits_fallback"]


def load_digits_fallback():
    """Load scikit-learn's 8x8 digits as ``(X_train, y_train), (X_test, y_test)``.

    Useful when neither MNIST nor Fashion-MNIST is available: the data ships
    inside scikit-learn, so no download is needed. Images are rescaled from
    0..16 to uint8 0..255 with shape (n, 8, 8); labels are uint8 in 0..9.
    The 80/20 split (1438 train, 359 test) uses a fixed permutation from
    ``numpy.random.default_rng(42)``, so it is identical on every call.

    Raises:
        ImportError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits_fallback needs scikit-learn: pip install scikit-learn "
            "(or pip install 'deepcore[demo]')"
        ) from e
    digits = load_digits()
    X = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    y = digits.target.astype(np.uint8)
    perm = np.random.default_rng(42).permutation(len(X))
    n_test = len(X) // 5
    tr, te = perm[n_test:], perm[:n_test]
    # Fancy indexing already returns fresh C-contiguous copies.
    return (X[tr], y[tr]), (X[te], y[te])
