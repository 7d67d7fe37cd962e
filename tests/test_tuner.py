"""deepcore.tuner: Keras Tuner's shape on Optuna."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="deepcore.tuner needs optuna (deepcore[tune])")

import deepcore as dc  # noqa: E402
from deepcore.tuner import HyperParameters  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))


def xor_data(n=256, seed=0):
    """The sign of x0 * x1: no linear model separates it, one hidden ReLU layer does."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)
    return x[:192], y[:192], x[192:], y[192:]


def build_xor(hp):
    """Four configurations, one clearly best: a hidden layer and the larger rate."""
    model = dc.Sequential([dc.layers.Input(shape=(2,))])
    if hp.Boolean("hidden"):
        model.add(dc.layers.Dense(16, activation="relu"))
    model.add(dc.layers.Dense(2, activation="softmax"))
    optimizer = dc.optimizers.Adam(learning_rate=hp.Choice("learning_rate", [1e-5, 3e-2]))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


BEST = {"hidden": True, "learning_rate": 3e-2}


@pytest.fixture(scope="module")
def xor():
    return xor_data()


def test_hyperparameters_sample_from_a_trial_and_replay_values():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp = HyperParameters(trial=trial)
    n = hp.Int("n_hidden", 0, 8)
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    opt = hp.Choice("optimizer", ["sgd", "adam"])
    flag = hp.Boolean("batchnorm")
    assert 0 <= n <= 8 and 1e-4 <= lr <= 1e-2 and opt in ("sgd", "adam") and flag in (False, True)
    assert hp.Int("n_hidden", 0, 8) == n  # the same name, the same value
    assert trial.distributions["learning_rate"].log
    assert hp.values == {"n_hidden": n, "learning_rate": lr, "optimizer": opt, "batchnorm": flag}
    replay = HyperParameters(hp.values)
    assert replay.Float("learning_rate", 1e-4, 1e-2, sampling="log") == lr
    defaults = HyperParameters()
    assert (defaults.Int("a", 2, 5), defaults.Choice("b", ["x", "y"]), defaults.Boolean("c")) == (2, "x", False)
    with pytest.raises(ValueError, match="min_value > 0"):
        defaults.Float("d", 0.0, 1.0, sampling="log")


def test_random_search_finds_the_known_best_configuration(xor, tmp_path):
    x, y, xv, yv = xor
    dc.set_random_seed(0)
    tuner = dc.tuner.RandomSearch(build_xor, objective="val_accuracy", max_trials=10, seed=1, directory=tmp_path)
    tuner.search(x, y, epochs=25, batch_size=32, validation_data=(xv, yv))
    assert len(tuner.study.trials) == 10
    (best,) = tuner.get_best_hyperparameters()
    assert best.values == BEST
    assert tuner.study.best_value > 0.85
    model = tuner.get_best_models()[0]
    accuracy = model.evaluate(xv, yv, return_dict=True)["accuracy"]
    history = tuner.get_history(tuner.study.best_trial.number)
    assert len(history["loss"]) == 25
    # the kept weights are the best epoch's, the one the score describes
    assert accuracy == pytest.approx(max(history["val_accuracy"]), abs=1e-6) == tuner.study.best_value
    assert history["val_accuracy"][tuner.study.best_trial.user_attrs["best_epoch"]] == tuner.study.best_value
    lines = []
    tuner.results_summary(num_trials=2, print_fn=lines.append)
    assert "Objective(name=\"val_accuracy\", direction=\"max\")" in lines and "hidden: True" in lines


def test_bayesian_optimization_with_tpe_finds_it_too(xor):
    x, y, xv, yv = xor
    dc.set_random_seed(0)
    tuner = dc.tuner.BayesianOptimization(build_xor, objective="val_loss", max_trials=10, num_initial_points=4,
                                          seed=0)
    assert isinstance(tuner.study.sampler, optuna.samplers.TPESampler)
    tuner.search(x, y, epochs=25, batch_size=32, validation_data=(xv, yv))
    assert tuner.get_best_hyperparameters()[0].values == BEST
    assert tuner.study.direction == optuna.study.StudyDirection.MINIMIZE


def test_hyperband_prunes_trials_through_the_epoch_callback_and_keeps_them(xor):
    x, y, xv, yv = xor
    dc.set_random_seed(0)
    tuner = dc.tuner.Hyperband(build_xor, objective="val_loss", max_epochs=9, factor=3, max_trials=12, seed=0)
    tuner.search(x, y, batch_size=32, validation_data=(xv, yv))
    pruned = tuner.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert pruned, "Hyperband pruned nothing"
    for t in pruned:
        epochs = len(tuner.get_history(t.number)["loss"])
        assert epochs < 9 and sorted(t.intermediate_values) == list(range(epochs))
        assert tuner.get_model(t.number).count_params() > 0  # a pruned trial's weights are kept
    assert tuner.get_best_hyperparameters()[0].values == BEST
    with pytest.raises(ValueError, match="max_epochs"):
        tuner.search(x, y, epochs=3, validation_data=(xv, yv))


def test_missing_objective_key_fails_the_trial_with_the_logged_keys(xor):
    x, y, _, _ = xor
    tuner = dc.tuner.RandomSearch(build_xor, objective="val_accuracy", max_trials=1)
    with pytest.raises(KeyError, match="val_accuracy"):
        tuner.search(x, y, epochs=1)  # no validation data
    assert tuner.study.trials[0].state == optuna.trial.TrialState.FAIL


WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import deepcore as dc
    from test_tuner import build_xor, xor_data

    def slow_build(hp):
        time.sleep(0.3)  # each trial takes a while, so the workers overlap
        return build_xor(hp)

    storage, directory, max_trials, go = sys.argv[1:5]
    if go != "-":  # announce this worker, then wait for the start signal
        open(go + "." + str(os.getpid()), "w").close()
        while not os.path.exists(go):
            time.sleep(0.02)
    x, y, xv, yv = xor_data()
    tuner = dc.tuner.RandomSearch(slow_build, objective="val_accuracy", max_trials=int(max_trials),
                                  storage=storage, directory=directory, project_name="shared")
    tuner.search(x, y, epochs=3, batch_size=64, validation_data=(xv, yv))
""")


def _worker(tmp_path, storage, max_trials, go="-"):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=TESTS))
    return subprocess.Popen([sys.executable, str(script), storage, str(tmp_path / "weights"), str(max_trials), go],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finished(study):
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def _shared_tuner(tmp_path, storage, max_trials):
    return dc.tuner.RandomSearch(build_xor, objective="val_accuracy", max_trials=max_trials, storage=storage,
                                 directory=tmp_path / "weights", project_name="shared")


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tuner = _shared_tuner(tmp_path, storage, 8)  # creates the database and the study before the workers join
    go = str(tmp_path / "go")
    workers = [_worker(tmp_path, storage, 8, go) for _ in range(2)]
    deadline = time.time() + 60
    while len([f for f in os.listdir(tmp_path) if f.startswith("go.")]) < 2 and time.time() < deadline:
        time.sleep(0.05)
    open(go, "w").close()  # both are up: start together
    outputs = [w.communicate(timeout=120)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    done = _finished(study)
    assert 8 <= len(done) <= 9  # a worker may start one trial while the other finishes the eighth
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both worked on it
    assert len({t.number for t in done}) == len(done)
    # any process can load any trial's model: the weights directory is shared
    assert tuner.finished_trials() == len(done)
    assert tuner.get_model(done[0].number).count_params() > 0


def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = _worker(tmp_path, storage, 8)
    deadline = time.time() + 90
    study = None
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:  # not created yet
            continue
        if len(_finished(study)) >= 2:
            break
    worker.kill()  # SIGKILL: no clean-up
    worker.wait()
    before = {t.number: t.value for t in _finished(study)}
    assert 2 <= len(before) < 8
    tuner = _shared_tuner(tmp_path, storage, 8)
    x, y, xv, yv = xor_data()
    tuner.search(x, y, epochs=3, batch_size=64, validation_data=(xv, yv))
    done = _finished(tuner.study)
    assert len(done) == 8
    assert {t.number: t.value for t in done if t.number in before} == before  # untouched
    here = f":{os.getpid()}"
    assert sum(t.user_attrs["worker"].endswith(here) for t in done) == 8 - len(before)  # only the rest ran
    for number in before:
        assert tuner.get_model(number).count_params() > 0
