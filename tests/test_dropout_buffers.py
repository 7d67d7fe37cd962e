"""The dropout layers' buffers: an eager call returns a fresh array written by
the kernel itself, while the keep bits are kept per batch size; the model path
(forward) reuses its output buffer."""

import numpy as np
import pytest

import deepcore as dc

LAYERS = [lambda: dc.Dropout(0.3, seed=7), lambda: dc.AlphaDropout(0.2, seed=7),
          lambda: dc.Dropout(0.5, noise_shape=(None, 1), seed=7)]


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("training", [True, False])
def test_eager_call_returns_a_fresh_array_that_a_later_call_does_not_change(make, training):
    x = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    layer = make()
    first = layer(x, training=training)
    kept = first.copy()
    second = layer(x * 3, training=training)
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second) and not np.shares_memory(first, x)


@pytest.mark.parametrize("make", LAYERS)
def test_eager_call_gives_what_the_model_path_forward_gives_for_the_same_call(make):
    x = np.random.default_rng(1).normal(size=(8, 20)).astype(np.float32)
    eager, model_path = make(), make()
    model_path._build_for((20,))
    for _ in range(3):  # the same masks, call after call
        np.testing.assert_array_equal(eager(x, training=True), model_path.forward(x, True))


def test_eager_calls_keep_the_keep_bits_per_batch_size_and_make_no_output_buffer():
    layer = dc.Dropout(0.3, seed=2)
    x = np.ones((10, 1000), np.float32)
    layer(x, training=True)
    bufs = layer._bufs._by_batch[10]
    mask = bufs["mask"]
    layer(x, training=True)
    assert layer._bufs._by_batch[10]["mask"] is mask and "y" not in bufs
    layer(np.ones((4, 1000), np.float32), training=True)  # another batch size: its own bits
    assert set(layer._bufs._by_batch) == {10, 4}


@pytest.mark.parametrize("make", LAYERS[:2])
def test_backward_after_an_eager_call_uses_that_calls_mask(make):
    rng = np.random.default_rng(3)
    x, dy = rng.normal(size=(6, 20)).astype(np.float32), rng.normal(size=(6, 20)).astype(np.float32)
    layer, reference = make(), make()
    layer(x, training=True)
    reference._build_for((20,))
    reference.forward(x, True)
    np.testing.assert_array_equal(layer.backward(dy), reference.backward(dy))


def test_model_path_forward_reuses_its_output_buffer():
    layer = dc.Dropout(0.3, seed=2)
    layer._build_for((50,))
    x = np.ones((8, 50), np.float32)
    assert layer.forward(x, True) is layer.forward(x, True)  # a steady-state step allocates nothing
