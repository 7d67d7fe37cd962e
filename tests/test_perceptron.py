"""deepcore.Perceptron: Rosenblatt's rule on separable data, agreement with a
float64 NumPy reimplementation, multiclass / multilabel modes and bad input."""
import numpy as np
import pytest

from deepcore import Perceptron


def separable_blobs(n=200, seed=0, gap=1.0):
    """Two 2-D Gaussian blobs separated by the line x0 + x1 = 0 with a margin."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * 1.5
    side = x.sum(axis=1) > 0
    x[side] += gap
    x[~side] -= gap
    return x, side.astype(int)


def three_blobs(n_per=60, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 6.0], [-5.0, -3.0], [5.0, -3.0]])
    x = np.concatenate([c + rng.normal(size=(n_per, 2)) for c in centers])
    y = np.repeat([0, 1, 2], n_per)
    return x, y


def rosenblatt_float64(x, t, epochs, eta=1.0, stop_when_clean=True):
    """Reference: sequential updates in sample order, zero init,
    yhat = step(x.w + b) with step(z) = 1 if z >= 0 else 0."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64).reshape(len(x), -1)
    w = np.zeros((x.shape[1], t.shape[1]))
    b = np.zeros(t.shape[1])
    n_iter = 0
    for _ in range(epochs):
        mistakes = 0
        for xi, ti in zip(x, t):
            yhat = (xi @ w + b >= 0).astype(np.float64)
            err = ti - yhat
            if np.any(err != 0):
                mistakes += 1
                w += eta * np.outer(xi, err)
                b += eta * err
        n_iter += 1
        if stop_when_clean and mistakes == 0:
            break
    return w, b, n_iter


# ----------------------------------------------------------- separable data


def test_separates_synthetic_linearly_separable_blobs_and_stops_early():
    x, y = separable_blobs()
    p = Perceptron(max_iter=1000, random_state=0).fit(x, y)
    assert p.score(x, y) == 1.0
    assert 1 <= p.n_iter_ < p.max_iter
    np.testing.assert_array_equal(p.predict(x), y)
    # The learned hyperplane separates: decision sign matches the labels.
    d = p.decision_function(x)
    assert np.all((d >= 0) == (y == 1))


def test_separates_iris_setosa_on_petal_length_and_width():
    datasets = pytest.importorskip("sklearn.datasets")
    iris = datasets.load_iris()
    x = iris.data[:, 2:4]  # petal length, petal width
    y = (iris.target == 0).astype(int)  # setosa vs rest
    p = Perceptron(random_state=42).fit(x, y)
    assert p.score(x, y) == 1.0
    assert p.n_iter_ < p.max_iter
    assert p.predict([[2.0, 0.5]])[0] == 1 and p.predict([[5.0, 1.8]])[0] == 0


def test_non_separable_data_runs_all_max_iter_epochs():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([0, 0, 1, 1])  # XOR
    p = Perceptron(max_iter=25, shuffle=False).fit(x, y)
    assert p.n_iter_ == 25
    assert p.score(x, y) < 1.0


def test_multiclass_three_blobs_one_unit_per_class():
    x, y = three_blobs()
    p = Perceptron(random_state=1).fit(x, y)
    assert p.coef_.shape == (3, 2) and p.intercept_.shape == (3,)
    assert p.decision_function(x).shape == (len(x), 3)
    assert p.score(x, y) >= 0.95
    np.testing.assert_array_equal(p.classes_, [0, 1, 2])


def test_class_labels_of_any_type_are_returned_by_predict():
    x, y = separable_blobs(80)
    names = np.array(["neg", "pos"])[y]
    p = Perceptron(random_state=0).fit(x, names)
    assert set(p.predict(x)) <= {"neg", "pos"}
    assert p.score(x, names) == 1.0
    x3, y3 = three_blobs(30)
    p3 = Perceptron(random_state=0).fit(x3, np.array([10, 20, 30])[y3])
    assert set(np.unique(p3.predict(x3))) == {10, 20, 30}


def test_multilabel_targets_train_independent_units():
    x, y = separable_blobs(120)
    targets = np.stack([y, 1 - y, np.ones_like(y)], axis=1)  # third unit: always on
    p = Perceptron(random_state=0).fit(x, targets)
    pred = p.predict(x)
    assert pred.shape == (120, 3)
    np.testing.assert_array_equal(pred[:, 0], y)
    np.testing.assert_array_equal(pred[:, 1], 1 - y)
    np.testing.assert_array_equal(pred[:, 2], 1)


# ------------------------------------------------- reference implementation


def test_matches_float64_rosenblatt_rule_exactly_on_dyadic_data():
    """Quarter-integer data keeps every float32 operation exact, so weights
    must agree bit for bit with the float64 reference after each epoch count."""
    rng = np.random.default_rng(3)
    x = rng.integers(-8, 9, size=(30, 3)) / 4.0
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + rng.normal(0, 1.0, 30) > 0).astype(int)  # noisy: not separable
    for epochs in (1, 2, 5):
        p = Perceptron(eta0=1.0, max_iter=epochs, shuffle=False).fit(x, y)
        w, b, n_iter = rosenblatt_float64(x, y, epochs)
        assert p.n_iter_ == n_iter
        np.testing.assert_array_equal(p.coef_, w.T)
        np.testing.assert_array_equal(p.intercept_, b)


def test_matches_float64_rosenblatt_rule_on_real_valued_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 4))
    y = (x @ np.array([0.5, -1.0, 2.0, 0.1]) + rng.normal(0, 0.8, 40) > 0).astype(int)
    epochs = 6
    p = Perceptron(eta0=1.0, max_iter=epochs, shuffle=False).fit(x, y)
    w, b, n_iter = rosenblatt_float64(x, y, epochs)
    assert p.n_iter_ == n_iter
    assert np.abs(w).max() > 1.0  # the weights did move
    np.testing.assert_allclose(p.coef_, w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.intercept_, b, rtol=1e-5, atol=1e-5)


def test_matches_reference_with_learning_rate_and_early_stop():
    x, y = separable_blobs(50, seed=2)
    x = np.round(x * 4) / 4  # dyadic
    p = Perceptron(eta0=0.5, max_iter=200, shuffle=False).fit(x, y)
    w, b, n_iter = rosenblatt_float64(x, y, 200, eta=0.5)
    assert n_iter < 200  # the reference stopped on a clean epoch
    assert p.n_iter_ == n_iter
    np.testing.assert_array_equal(p.coef_, w.T)
    np.testing.assert_array_equal(p.intercept_, b)


def test_multiclass_matches_reference_one_vs_rest_units():
    x, y = three_blobs(15, seed=4)
    x = np.round(x * 4) / 4
    epochs = 3
    p = Perceptron(max_iter=epochs, shuffle=False).fit(x, y)
    w, b, n_iter = rosenblatt_float64(x, np.eye(3)[y], epochs)
    assert p.n_iter_ == n_iter
    np.testing.assert_array_equal(p.coef_, w.T)
    np.testing.assert_array_equal(p.intercept_, b)


def test_shuffled_training_is_reproducible_with_random_state():
    x, y = separable_blobs(100, seed=5)
    a = Perceptron(random_state=11).fit(x, y)
    b = Perceptron(random_state=11).fit(x, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    c = Perceptron(random_state=12).fit(x, y)
    unshuffled = Perceptron(shuffle=False).fit(x, y)
    assert not (np.array_equal(a.coef_, c.coef_) and np.array_equal(a.coef_, unshuffled.coef_))


def test_fit_does_not_modify_inputs():
    x, y = separable_blobs(30)
    xc, yc = x.copy(), y.copy()
    Perceptron(random_state=0).fit(x, y)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(y, yc)


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_x_is_rejected(value):
    x, y = separable_blobs(20)
    x[3, 1] = value
    with pytest.raises(ValueError, match="NaN"):
        Perceptron().fit(x, y)


@pytest.mark.parametrize("shape", [(20,), (2, 5, 2), (0, 2)])
def test_x_that_is_not_a_nonempty_2d_array_is_rejected(shape):
    with pytest.raises(ValueError, match="2-D"):
        Perceptron().fit(np.ones(shape), np.arange(shape[0]) % 2)


def test_single_class_is_rejected():
    x, _ = separable_blobs(20)
    with pytest.raises(ValueError, match="two classes"):
        Perceptron().fit(x, np.zeros(20, int))


def test_x_y_length_mismatch_is_rejected():
    x, y = separable_blobs(20)
    with pytest.raises(ValueError, match="20 samples but y has 19"):
        Perceptron().fit(x, y[:19])


@pytest.mark.parametrize("kwargs", [{"eta0": 0.0}, {"eta0": -1.0}, {"max_iter": 0}])
def test_bad_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Perceptron(**kwargs)
