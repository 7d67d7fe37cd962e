"""Data and checks shared by the device tests (test_device_model.py, test_graph_training.py)."""
import numpy as np
import pytest

# A GPU step against the CPU's, from the same weights and optimizer state.
STEP_RTOL, STEP_ATOL = 1e-5, 1e-6


def blobs(n=250, features=20, classes=4, seed=0):
    """Gaussian blobs as (x float32, y int64). 250 samples: batches of 32 and a
    ragged last batch of 26 (its own buffers, its own graph)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y


def assert_steps_agree(cpu, dev, x, y, starts, batch=32):
    """From identical weights and optimizer state, each train_on_batch on dev
    agrees with the CPU's to STEP_RTOL (loss and every weight)."""
    for step, lo in enumerate(starts):
        dev.set_weights(cpu.get_weights())
        if step:
            dev.optimizer.set_state(cpu.optimizer.get_state())
        a = cpu.train_on_batch(x[lo:lo + batch], y[lo:lo + batch])
        b = dev.train_on_batch(x[lo:lo + batch], y[lo:lo + batch])
        assert b == pytest.approx(a, rel=STEP_RTOL, abs=STEP_ATOL)
        for v, wc, wd in zip(cpu.weights, cpu.get_weights(), dev.get_weights()):
            np.testing.assert_allclose(wd, wc, rtol=STEP_RTOL, atol=STEP_ATOL, err_msg=f"step {step}: {v.path}")


def dev(G, a):
    """A device copy of the array a, through the CUDA module G."""
    return G.to_device(np.asarray(a, order="C"))  # (ascontiguousarray would make a 0-d array 1-d)
