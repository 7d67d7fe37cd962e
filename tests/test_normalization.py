"""Normalization (Keras's preprocessing layer): adapt() statistics in float64,
the forward (x - mean) / max(sqrt(var), 1e-7), its inverse, the pass-through
backward dx = dy / std, and the channel_affine kernel behind them."""
import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore import Dense, Input, Normalization, Sequential, optimizers
from finite_differences import central_difference as fd


def data(shape, seed=0, loc=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + loc).astype(np.float32)


def keras_normalize(x, mean, var):
    """Keras 3: (x - mean) / maximum(sqrt(variance), backend.epsilon() = 1e-7)."""
    return (np.asarray(x, np.float64) - mean) / np.maximum(np.sqrt(var), 1e-7)


@pytest.mark.parametrize("axis,shape,reduce", [
    (-1, (50, 6), (0,)),
    (-1, (20, 3, 4), (0, 1)),
    ([1, 2], (20, 3, 4, 2), (0, 3)),
    ([1, 3], (20, 3, 4, 2), (0, 2)),
    (None, (20, 3, 4), (0, 1, 2)),
])
def test_adapt_sets_per_feature_mean_and_biased_variance(axis, shape, reduce):
    x = data(shape, 1, loc=2.0, scale=3.0)
    norm = Normalization(axis=axis)
    norm.adapt(x)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=reduce), x64.var(axis=reduce)
    np.testing.assert_allclose(norm.mean.value, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(norm.variance.value, var, rtol=1e-6)
    y = norm(x)
    keep = tuple(1 if a in reduce else shape[a] for a in range(len(shape)))
    np.testing.assert_allclose(y, keras_normalize(x, mean.reshape(keep), var.reshape(keep)), rtol=1e-5, atol=1e-5)


def test_adapt_in_chunks_accumulates_in_float64():
    # Far from zero with a tiny spread: float32 sums would lose the variance.
    x = data((1000, 4), 2, loc=1e4, scale=0.01)
    one, chunked = Normalization(), Normalization()
    one.adapt(x, batch_size=10_000)
    chunked.adapt(x, batch_size=7)
    var = x.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(chunked.variance.value, var, rtol=1e-5)
    np.testing.assert_allclose(chunked.variance.value, one.variance.value, rtol=1e-5)
    np.testing.assert_allclose(chunked.mean.value, x.astype(np.float64).mean(axis=0), rtol=1e-7)


def test_adapt_accepts_integer_images_and_builds_the_layer():
    x = np.random.default_rng(3).integers(0, 256, (30, 5, 5), dtype=np.uint8)
    norm = Normalization(axis=None)
    assert not norm.built
    norm.adapt(x)
    assert norm.built and norm.input_shape == (5, 5) and norm.mean.shape == ()
    assert norm.mean.value == pytest.approx(x.mean(), rel=1e-6)
    y = norm(x.astype(np.float32))
    assert abs(y.mean()) < 1e-5 and y.std() == pytest.approx(1.0, rel=1e-4)


def test_constant_feature_divides_by_backend_epsilon_without_nan():
    x = data((10, 3), 4)
    x[:, 1] = 5.0
    norm = Normalization()
    norm.adapt(x)
    y = norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[:, 1], 0.0)
    np.testing.assert_allclose(norm(np.full((1, 3), 5.0 + 1e-6, np.float32))[0, 1],
                               (float(np.float32(5.0 + 1e-6)) - 5.0) / 1e-7, rtol=1e-3)


def test_given_mean_and_variance_broadcast_to_the_features():
    norm = Normalization(mean=[1.0, 2.0, 3.0], variance=4.0)
    x = data((6, 3), 5)
    np.testing.assert_allclose(norm(x), keras_normalize(x, [1, 2, 3], 4.0), rtol=1e-6, atol=1e-6)
    assert norm.variance.value.tolist() == [4.0, 4.0, 4.0]


def test_invert_undoes_the_normalization():
    x = data((40, 5), 6, loc=-3, scale=7)
    norm, inv = Normalization(), Normalization(invert=True)
    norm.adapt(x)
    inv.adapt(x)
    np.testing.assert_allclose(inv(norm(x)), x, rtol=1e-5, atol=1e-4)


def test_unadapted_layer_is_the_identity_as_in_keras():
    x = data((4, 3), 7)
    np.testing.assert_array_equal(Normalization()(x), x)


def test_backward_passes_gradients_through_scaled_by_one_over_std():
    x = data((8, 2, 3), 8, loc=1.0, scale=2.0)
    for axis in (-1, [1, 2], [1], None):
        norm = Normalization(axis=axis)
        norm.adapt(x)
        w = np.random.default_rng(9).normal(size=x.shape)
        norm(x)
        dx = norm.backward(w.astype(np.float32))
        mean, var = norm.mean.value.astype(np.float64), norm.variance.value.astype(np.float64)
        shape = norm._view.param_shape
        keep = {(-1,): (1, 1, 3), ((1, 2),): (1, 2, 3), ((1,),): (1, 2, 1), (None,): ()}[
            (tuple(axis) if isinstance(axis, list) else axis,)]
        m, v = mean.reshape(keep) if shape else mean, var.reshape(keep) if shape else var
        ref = fd(lambda a: float(np.sum(w * keras_normalize(a, m, v))), x.astype(np.float64))
        np.testing.assert_allclose(dx, ref, rtol=1e-4, atol=1e-5)


def test_layer_is_not_trainable_and_summary_counts_mean_and_variance():
    norm = Normalization()
    model = Sequential([Input(shape=(7,)), norm, Dense(2)])
    assert norm.trainable_weights == []
    assert [v.name for v in norm.non_trainable_weights] == ["mean", "variance"]
    lines = []
    model.summary(print_fn=lines.append)
    assert "Non-trainable params: 14" in "\n".join(lines)


def test_normalization_first_in_a_model_trains_and_keeps_its_statistics():
    rng = np.random.default_rng(10)
    x = (rng.normal(size=(256, 5)) * [1, 10, 100, 0.1, 1000] + [50, -20, 300, 0, 1e4]).astype(np.float32)
    y = (x[:, 0] - 50 + (x[:, 2] - 300) / 100 > 0).astype(np.int64)
    norm = Normalization()
    norm.adapt(x)
    mean = norm.mean.numpy()
    dc.set_random_seed(0)
    model = Sequential([Input(shape=(5,)), norm, Dense(8, activation="relu"), Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9
    np.testing.assert_array_equal(norm.mean.value, mean)


def test_normalization_after_a_trained_layer_backpropagates():
    # Normalization in the middle: the Dense before it only learns through norm.backward.
    x = data((64, 3), 11)
    y = (x[:, 0] > 0).astype(np.int64)
    norm = Normalization(mean=0.0, variance=25.0)
    dc.set_random_seed(1)
    first = Dense(4)
    model = Sequential([Input(shape=(3,)), first, norm, Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    w0 = first.kernel.numpy()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert not np.allclose(first.kernel.value, w0)


def test_get_config_round_trips():
    norm = Normalization(axis=[1, 2], mean=[[1.0, 2.0]], variance=[[3.0, 4.0]], invert=True, name="norm_cfg")
    cfg = norm.get_config()
    clone = Normalization.from_config(cfg)
    assert clone.get_config() == cfg
    x = data((3, 1, 2), 12)
    np.testing.assert_array_equal(clone(x), norm(x))


# ----------------------------------------------------------------- bad input
def test_mean_without_variance_is_a_value_error():
    with pytest.raises(ValueError, match="both mean and variance"):
        Normalization(mean=1.0)


def test_negative_or_nan_variance_is_a_value_error():
    with pytest.raises(ValueError, match="variance must be >= 0"):
        Normalization(mean=0.0, variance=[1.0, -1.0])
    with pytest.raises(ValueError, match="finite"):
        Normalization(mean=float("nan"), variance=1.0)


def test_given_statistics_that_do_not_broadcast_are_a_value_error():
    norm = Normalization(mean=[1.0, 2.0], variance=[1.0, 1.0], name="norm_bcast")
    with pytest.raises(ValueError, match=r"norm_bcast.*mean of shape \(2,\) does not broadcast"):
        norm(np.zeros((2, 3), np.float32))


def test_adapt_rejects_bad_data():
    with pytest.raises(ValueError, match="NaN"):
        Normalization().adapt(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="non-empty"):
        Normalization().adapt(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="numeric"):
        Normalization().adapt(np.array([["a"], ["b"]]))
    norm = Normalization()
    norm.adapt(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="built for input shape"):
        norm.adapt(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="cannot be adapted"):
        Normalization(mean=0.0, variance=1.0).adapt(np.zeros((4, 3)))


def test_axis_that_does_not_exist_is_a_value_error():
    with pytest.raises(ValueError, match="axis 3 does not exist for input of rank 2"):
        Normalization(axis=3).adapt(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="axis"):
        Normalization(axis="last")


def test_channel_affine_kernel_matches_reference_and_rejects_bad_arrays():
    x = data((5, 3, 4), 13)
    rng = np.random.default_rng(14)
    m, s, o = (rng.normal(size=3).astype(np.float32) for _ in range(3))
    y = np.full_like(x, np.nan)
    C.channel_affine(x, m, s, o, y)
    ref = (x - m[None, :, None].astype(np.float64)) * s[None, :, None] + o[None, :, None]
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    C.channel_affine(x, None, s, None, y)
    np.testing.assert_allclose(y, x * s[None, :, None], rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        C.channel_affine(x, None, np.ones(4, np.float32), None, y)
    with pytest.raises(TypeError, match="center.*float64"):
        C.channel_affine(x, m.astype(np.float64), s, None, y)
    with pytest.raises(ValueError, match="y"):
        C.channel_affine(x, None, s, None, np.zeros((5, 3, 3), np.float32))
    y.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        C.channel_affine(x, None, s, None, y)


def test_adapt_on_data_with_an_empty_reduced_axis_is_a_value_error():
    import deepcore as _dc

    with pytest.raises(ValueError, match="no values to average"):
        _dc.layers.Normalization(axis=1).adapt(np.ones((5, 3, 0), np.float32))


def test_scale_follows_every_assignment_of_the_statistics():
    """The layer keeps its scale between steps and recomputes it when the
    variance is assigned: adapt again, set_weights, load_weights."""
    x = data((40, 5), seed=3, loc=1.0, scale=2.0)
    layer = Normalization()
    layer.adapt(x)
    np.testing.assert_allclose(layer(x), keras_normalize(x, x.mean(0, dtype=np.float64), x.var(0, dtype=np.float64)),
                               rtol=1e-5, atol=1e-5)
    x2 = data((40, 5), seed=4, loc=-3.0, scale=0.5)
    layer.adapt(x2)                               # same buffers, new statistics
    np.testing.assert_allclose(layer(x), keras_normalize(x, x2.mean(0, dtype=np.float64), x2.var(0, dtype=np.float64)),
                               rtol=1e-5, atol=1e-4)
    mean, var = np.full(5, 0.5, np.float32), np.full(5, 4.0, np.float32)
    layer.set_weights([mean, var])
    np.testing.assert_allclose(layer(x), (x - 0.5) / 2.0, rtol=1e-6, atol=1e-6)
    dy = np.ones_like(x)
    np.testing.assert_allclose(layer.backward(dy), dy / 2.0)
