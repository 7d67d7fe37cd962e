"""Data shared by the device tests (test_device_model.py, test_graph_training.py)."""
import numpy as np


def blobs(n=250, features=20, classes=4, seed=0):
    """Gaussian blobs as (x float32, y int64). 250 samples: batches of 32 and a
    ragged last batch of 26 (its own buffers, its own graph)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y
