"""Model-level input validation: bad data and bad configuration fail early
with an exception of the right type whose message says what is wrong.

The C++ kernels accept only contiguous float32 arrays and raise otherwise
(see test_kernel_bad_input.py). The model API is more forgiving, as Keras is:
non-contiguous, float64, integer and bool arrays are converted once at the
start of fit/evaluate/predict, and give the same results as the equivalent
contiguous float32 array.
"""
import re

import numpy as np
import pytest

import deepcore
from deepcore import Dense, Flatten, Input, Sequential, optimizers


def model(compile=True, name="checked_model", n_in=4, n_out=3):
    deepcore.set_random_seed(0)
    m = Sequential([Input(shape=(n_in,)), Dense(8, activation="relu"), Dense(n_out, activation="softmax")], name=name)
    if compile:
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def data(n=10, n_in=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(np.float32), rng.integers(0, n_out, n)


# ----------------------------------------------------------- input shapes


@pytest.mark.parametrize("method", ["fit", "predict", "evaluate", "train_on_batch"])
def test_wrong_input_shape_names_the_model_and_both_shapes(method):
    m = model(name="shape_checked")
    x = np.zeros((5, 6), np.float32)
    y = np.zeros(5, int)
    call = {"fit": lambda: m.fit(x, y, verbose=0), "predict": lambda: m.predict(x),
            "evaluate": lambda: m.evaluate(x, y), "train_on_batch": lambda: m.train_on_batch(x, y)}[method]
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert "shape_checked" in msg
    assert "(4,)" in msg  # the expected sample shape
    assert "(5, 6)" in msg  # the shape given


@pytest.mark.parametrize("shape", [(5,), (5, 4, 1), (5, 2, 2)])
def test_wrong_rank_input_is_rejected_with_value_error(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        model().predict(np.zeros(shape, np.float32))


def test_scalar_input_is_rejected_with_value_error():
    with pytest.raises(ValueError, match="scalar"):
        model().predict(np.float32(3.0))


def test_dense_after_3d_input_without_flatten_suggests_flatten():
    m = Sequential([Input(shape=(28, 28)), Dense(10, activation="softmax")])  # Keras: Dense on the last axis
    assert m.output_shape == (None, 28, 10)
    m.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="Flatten") as e:
        m.fit(np.zeros((4, 28, 28), np.float32), np.zeros(4, int), verbose=0)
    assert "(None, 28, 10)" in str(e.value)


def test_dense_after_3d_input_without_flatten_detected_when_fit_builds():
    m = Sequential([Dense(10, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="Flatten"):
        m.fit(np.zeros((4, 28, 28), np.float32), np.zeros(4, int), verbose=0)


def test_flatten_before_dense_fixes_3d_input():
    m = Sequential([Input(shape=(28, 28)), Flatten(), Dense(10)])
    assert m.predict(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)


# ----------------------------------------------------------------- labels


@pytest.mark.parametrize("bad_label", [3, 7, -1])
def test_sparse_labels_out_of_range_name_the_valid_range(bad_label):
    x, y = data()
    y[4] = bad_label
    with pytest.raises(ValueError, match=r"\[0, 3\)") as e:
        model().fit(x, y, verbose=0)
    msg = str(e.value)
    assert "out of range" in msg and str(bad_label) in msg
    assert "np.int" not in msg  # plain number, not a numpy repr


def test_sparse_labels_out_of_range_also_rejected_by_evaluate_and_train_on_batch():
    x, y = data()
    y[0] = 10
    m = model()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.evaluate(x, y)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.train_on_batch(x, y)


def test_fractional_sparse_labels_are_rejected():
    x, y = data()
    with pytest.raises(ValueError, match="whole numbers"):
        model().fit(x, y + 0.5, verbose=0)


def test_string_labels_are_type_error():
    x, y = data()
    with pytest.raises(TypeError):
        model().fit(x, y.astype(str), verbose=0)


def test_one_hot_targets_of_wrong_width_are_rejected():
    x, y = data()
    m = model(compile=False)
    m.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\(3,\)"):
        m.fit(x, np.eye(4, dtype=np.float32)[y % 4], verbose=0)


def test_binary_crossentropy_targets_outside_0_1_are_rejected():
    x, _ = data()
    m = Sequential([Input(shape=(4,)), Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.fit(x, np.full(len(x), 2.0, np.float32), verbose=0)


def test_nan_regression_targets_are_rejected():
    x, _ = data()
    y = np.zeros((len(x), 1), np.float32)
    y[3] = np.nan
    m = Sequential([Input(shape=(4,)), Dense(1)])
    m.compile(loss="mse")
    with pytest.raises(ValueError, match="NaN"):
        m.fit(x, y, verbose=0)


# ------------------------------------------------------------------ x data


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["fit", "predict", "evaluate"])
def test_nonfinite_x_is_rejected_and_counted(value, method):
    x, y = data()
    x[2, 1] = value
    x[7, 3] = value
    m = model()
    call = {"fit": lambda: m.fit(x, y, verbose=0), "predict": lambda: m.predict(x),
            "evaluate": lambda: m.evaluate(x, y)}[method]
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        call()


def test_nan_in_validation_data_is_rejected():
    x, y = data()
    xv = x.copy()
    xv[0, 0] = np.nan
    with pytest.raises(ValueError, match="validation_data.*NaN"):
        model().fit(x, y, validation_data=(xv, y), verbose=0)


@pytest.mark.parametrize("method", ["fit", "predict", "evaluate"])
def test_empty_x_is_rejected(method):
    m = model()
    x = np.zeros((0, 4), np.float32)
    y = np.zeros(0, int)
    call = {"fit": lambda: m.fit(x, y, verbose=0), "predict": lambda: m.predict(x),
            "evaluate": lambda: m.evaluate(x, y)}[method]
    with pytest.raises(ValueError, match="empty"):
        call()


@pytest.mark.parametrize("n_y", [9, 11])
def test_x_and_y_length_mismatch_is_rejected(n_y):
    x, _ = data(10)
    with pytest.raises(ValueError, match=rf"10 samples but y has {n_y}"):
        model().fit(x, np.zeros(n_y, int), verbose=0)


def test_missing_y_is_rejected():
    x, _ = data()
    with pytest.raises(ValueError, match="y is required"):
        model().fit(x, None, verbose=0)


@pytest.mark.parametrize("dtype", [str, object, complex])
def test_non_numeric_x_is_type_error(dtype):
    x, y = data()
    with pytest.raises(TypeError, match="numeric"):
        model().predict(x.astype(dtype))
    with pytest.raises(TypeError, match="numeric"):
        model().fit(x.astype(dtype), y, verbose=0)


# --------------------------------------------------------- configuration


@pytest.mark.parametrize("method", ["fit", "evaluate", "train_on_batch"])
def test_training_or_evaluating_before_compile_is_runtime_error(method):
    x, y = data()
    m = model(compile=False)
    call = {"fit": lambda: m.fit(x, y, verbose=0), "evaluate": lambda: m.evaluate(x, y),
            "train_on_batch": lambda: m.train_on_batch(x, y)}[method]
    with pytest.raises(RuntimeError, match="compile"):
        call()


def test_predict_before_compile_is_allowed():
    x, _ = data()
    assert model(compile=False).predict(x).shape == (10, 3)


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_bad_learning_rate_is_rejected(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate=lr)


def test_setting_negative_learning_rate_later_is_rejected():
    opt = optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0
    assert opt.learning_rate == pytest.approx(0.1)


@pytest.mark.parametrize("momentum", [1.5, -0.1, float("nan")])
def test_momentum_outside_0_1_is_rejected(momentum):
    with pytest.raises(ValueError, match="momentum"):
        optimizers.SGD(0.01, momentum=momentum)


@pytest.mark.parametrize("kind,kwargs,known", [
    ("loss", {"loss": "cross_entropy"}, ["sparse_categorical_crossentropy", "mse", "binary_crossentropy"]),
    ("optimizer", {"loss": "mse", "optimizer": "lion"}, ["sgd", "adam", "nadam", "ftrl"]),
    ("metric", {"loss": "mse", "metrics": ["f1_score"]}, ["accuracy", "mae", "RootMeanSquaredError"]),
])
def test_unknown_compile_strings_list_known_names(kind, kwargs, known):
    with pytest.raises(ValueError, match=f"(?i)unknown {kind}") as e:
        model(compile=False).compile(**kwargs)
    for name in known:
        assert name in str(e.value)


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError, match="(?i)unknown activation") as e:
        Dense(3, activation="relu6")
    for name in ("relu", "sigmoid", "softmax", "tanh"):
        assert name in str(e.value)


def test_unknown_initializer_lists_known_names():
    with pytest.raises(ValueError, match="(?i)unknown initializer") as e:
        Dense(3, kernel_initializer="xavier")
    for name in ("glorot_uniform", "he_normal"):
        assert name in str(e.value)


@pytest.mark.parametrize("units", [0, -2, 2.5, "3"])
def test_bad_dense_units_are_rejected(units):
    with pytest.raises(ValueError, match="units"):
        Dense(units)


@pytest.mark.parametrize("batch_size", [0, -3])
@pytest.mark.parametrize("method", ["fit", "predict", "evaluate"])
def test_nonpositive_batch_size_is_rejected(method, batch_size):
    x, y = data()
    m = model()
    call = {"fit": lambda: m.fit(x, y, batch_size=batch_size, verbose=0),
            "predict": lambda: m.predict(x, batch_size=batch_size),
            "evaluate": lambda: m.evaluate(x, y, batch_size=batch_size)}[method]
    with pytest.raises(ValueError, match="batch_size"):
        call()


@pytest.mark.parametrize("split", [1.0, -0.1, 0.01])
def test_bad_validation_split_is_rejected(split):
    # 1.0 and -0.1 are out of range; 0.01 of 10 samples leaves no validation set.
    x, y = data()
    with pytest.raises(ValueError, match="validation_split"):
        model().fit(x, y, validation_split=split, verbose=0)


def test_unknown_layer_keyword_is_type_error():
    with pytest.raises(TypeError, match="activaton"):
        Dense(3, activaton="relu")


# ---------------------------------------- conversions accepted at model level


def test_noncontiguous_and_float64_x_give_same_predictions_as_float32():
    """The kernels reject non-contiguous or float64 arrays; the model converts
    once and must give exactly what contiguous float32 input gives."""
    x32, _ = data(12)
    m = model()
    ref = m.predict(x32)
    wide = np.zeros((12, 8), np.float32)
    wide[:, ::2] = x32
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    fortran = np.asfortranarray(x32)
    assert not fortran.flags.c_contiguous
    for variant in (strided, fortran, x32.astype(np.float64), x32.tolist()):
        np.testing.assert_array_equal(m.predict(variant), ref)
    negative_stride = x32[::-1]
    assert negative_stride.strides[0] < 0
    np.testing.assert_allclose(m.predict(negative_stride), ref[::-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(m(strided), ref)


def test_integer_and_bool_x_are_converted_to_float32():
    m = model()
    xi = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(m.predict(xi), m.predict(xi.astype(np.float32)))
    xb = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(m.predict(xb), m.predict(xb.astype(np.float32)))


def test_fit_on_float64_noncontiguous_data_matches_fit_on_float32_contiguous():
    x32, y = data(40)
    x64_strided = np.repeat(x32.astype(np.float64), 2, axis=1)[:, ::2]
    assert not x64_strided.flags.c_contiguous
    a, b = model(), model()
    a.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    b.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    a.fit(x32, y, epochs=2, batch_size=8, seed=1, verbose=0)
    b.fit(x64_strided, y.astype(np.int64), epochs=2, batch_size=8, seed=1, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_caller_arrays_are_not_modified_by_fit_or_predict():
    x, y = data(20)
    x64 = x.astype(np.float64)
    xc, yc, x64c = x.copy(), y.copy(), x64.copy()
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    m.fit(x64, y, epochs=1, verbose=0)
    m.predict(x)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(y, yc)
    np.testing.assert_array_equal(x64, x64c)
