"""deepcore.wrappers: scikit-learn estimators around deepcore models."""
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6",
                              reason="the scikit-learn wrappers need scikit-learn >= 1.6 (deepcore[sklearn])")

import deepcore as dc  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from deepcore.wrappers import SKClassifier, SKRegressor  # noqa: E402


def build_classifier(n_hidden=1, n_neurons=16, n_features_in_=None, n_classes_=None):
    model = dc.Sequential([dc.layers.Input(shape=(n_features_in_,))])
    for _ in range(n_hidden):
        model.add(dc.layers.Dense(n_neurons, activation="relu"))
    model.add(dc.layers.Dense(n_classes_, activation="softmax"))
    return model


def build_regressor(n_neurons=16, n_features_in_=None, n_outputs_=None):
    return dc.Sequential([dc.layers.Input(shape=(n_features_in_,)),
                          dc.layers.Dense(n_neurons, activation="relu"), dc.layers.Dense(n_outputs_)])


def build_binary(n_features_in_=None):
    return dc.Sequential([dc.layers.Input(shape=(n_features_in_,)), dc.layers.Dense(8, activation="relu"),
                          dc.layers.Dense(1, activation="sigmoid")])


# The routed hyperparameters (optimizer__learning_rate) are constructor
# keywords beyond the signature, stored as attributes: that is what the one
# excluded check forbids, and what makes clone and the searches route them.
_ROUTED_ATTRIBUTES = ("routed hyperparameters (model__, optimizer__, fit__, ...) are keyword arguments stored as "
                      "attributes by design, as in SciKeras; get_params returns them, so clone keeps them")


def _expected_failures(estimator):
    return {"check_no_attributes_set_in_init": _ROUTED_ATTRIBUTES}


@parametrize_with_checks([SKClassifier(build_classifier, epochs=20, random_state=0, optimizer__learning_rate=0.01),
                          SKRegressor(build_regressor, epochs=20, random_state=0, optimizer__learning_rate=0.01)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    return X, y


def test_routed_parameters_reach_the_build_function_optimizer_and_fit(iris):
    X, y = iris
    clf = SKClassifier(build_classifier, model__n_hidden=2, model__n_neurons=7, optimizer="sgd",
                       optimizer__learning_rate=0.05, optimizer__momentum=0.9, fit__epochs=3, random_state=0)
    clf.fit(X, y)
    dense = [layer for layer in clf.model_.layers]
    assert [layer.output_shape for layer in dense] == [(7,), (7,), (3,)]
    assert type(clf.model_.optimizer).__name__ == "SGD"
    assert clf.model_.optimizer.learning_rate == pytest.approx(0.05)
    assert clf.model_.optimizer.get_config()["momentum"] == pytest.approx(0.9)
    assert len(clf.history_["loss"]) == 3  # fit__epochs overrides epochs
    assert clf.get_params()["model__n_neurons"] == 7
    clf.set_params(model__n_neurons=5)
    assert clf.model__n_neurons == 5


def test_unknown_keyword_fails_at_fit_naming_the_prefixes(iris):
    X, y = iris
    clf = SKClassifier(build_classifier, n_hidden=2)  # stored: __init__ never raises
    with pytest.raises(TypeError, match="model__"):
        clf.fit(X, y)


def test_clone_keeps_routed_parameters_and_fits_afresh(iris):
    X, y = iris
    clf = SKClassifier(build_classifier, model__n_neurons=9, optimizer__learning_rate=0.02, epochs=2,
                       random_state=0).fit(X, y)
    twin = clone(clf)
    assert twin.get_params()["model__n_neurons"] == 9
    assert twin.get_params()["optimizer__learning_rate"] == 0.02
    assert not hasattr(twin, "model_")
    twin.fit(X, y)
    # the same random_state: the same initial weights and shuffles, so the same model
    for a, b in zip(clf.model_.get_weights(), twin.model_.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_string_labels_classes_and_predict_proba(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = SKClassifier(build_classifier, epochs=30, optimizer__learning_rate=0.01, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    pred = clf.predict(X)
    assert set(pred) <= set(clf.classes_)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, names) > 0.8


def test_single_sigmoid_output_gives_two_column_probabilities(iris):
    X, y = iris
    keep = y < 2
    labels = np.where(y[keep] == 0, "no", "yes")
    clf = SKClassifier(build_binary, epochs=20, optimizer__learning_rate=0.02, random_state=0).fit(X[keep], labels)
    assert type(clf.model_.loss).__name__ == "BinaryCrossentropy"
    proba = clf.predict_proba(X[keep])
    assert proba.shape == (keep.sum(), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X[keep], labels) > 0.9


def test_grid_search_over_routed_parameters_in_a_pipeline(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), SKClassifier(build_classifier, epochs=5, random_state=0))
    grid = GridSearchCV(pipe, {"skclassifier__model__n_neurons": [4, 16],
                               "skclassifier__optimizer__learning_rate": [1e-4, 3e-2]}, cv=3)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    # 5 epochs at 1e-4 barely move the weights; 3e-2 learns iris
    assert grid.best_params_["skclassifier__optimizer__learning_rate"] == 3e-2
    assert grid.best_score_ > 0.8
    assert grid.predict(X).shape == (150,)


def test_randomized_search_and_cross_val_score_on_a_regressor():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    reg = SKRegressor(build_regressor, epochs=10, optimizer__learning_rate=0.01, random_state=0)
    scores = cross_val_score(reg, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.3  # R^2 of a linear model is about 0.5 here
    search = RandomizedSearchCV(reg, {"model__n_neurons": [8, 32], "fit__batch_size": [16, 64]}, n_iter=2, cv=2,
                                random_state=0)
    search.fit(X, y)
    assert set(search.best_params_) == {"model__n_neurons", "fit__batch_size"}


def test_regressor_with_two_targets_predicts_both():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    Y = np.column_stack([y, -y]) / y.std()
    reg = SKRegressor(build_regressor, epochs=2, random_state=0).fit(X, Y)
    assert reg.n_outputs_ == 2
    assert reg.predict(X).shape == (len(X), 2)


def test_fitted_estimator_pickles_with_its_weights(iris):
    X, y = iris
    clf = SKClassifier(build_classifier, epochs=3, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_warm_start_trains_the_fitted_model_further(iris):
    X, y = iris
    clf = SKClassifier(build_classifier, epochs=2, warm_start=True, random_state=0).fit(X, y)
    model = clf.model_
    first = clf.history_["loss"][-1]
    clf.fit(X, y)
    assert clf.model_ is model
    assert clf.history_["loss"][-1] < first


def test_model_instance_is_refused_with_the_remedy(iris):
    X, y = iris
    with pytest.raises(TypeError, match="function that builds"):
        SKClassifier(build_classifier(n_features_in_=4, n_classes_=3)).fit(X, y)


def test_callbacks_are_copied_so_a_fitted_estimator_still_clones(iris):
    X, y = iris
    stop = dc.callbacks.EarlyStopping(monitor="loss", patience=0)
    clf = SKClassifier(build_classifier, epochs=3, callbacks=[stop], random_state=0).fit(X, y)
    assert stop.model is None and clf.callbacks_[0].model is clf.model_
    scores = cross_val_score(clf, X, y, cv=2)  # clones the fitted estimator's parameters
    assert scores.shape == (2,)
