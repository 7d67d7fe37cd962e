"""Whole-model files (models/serialization.py): save -> load predicts the same
and resumes training bit for bit; corrupt, truncated and hand-edited files
give clear errors; a killed save leaves a loadable file."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import deepcore as dc
from deepcore.layers import Dense, Layer
from deepcore.models import clone_model, load_model, model_from_json, register_serializable


def _xy(n=64, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


def _sequential():
    dc.set_random_seed(1)
    m = dc.Sequential([dc.Input(shape=[6]), Dense(16, activation="relu", kernel_regularizer=dc.regularizers.l2(1e-3)),
                       dc.layers.BatchNormalization(), dc.layers.Dropout(0.3), Dense(3, activation="softmax")])
    m.compile(optimizer=dc.optimizers.Adam(1e-2, clipnorm=1.0), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


class _Sum(Layer):
    _per_call = ()

    def compute_output_shape(self, shapes):
        return shapes[0]

    def forward(self, xs, training=False):
        return xs[0] + xs[1]

    def backward(self, dy, need_dx=True):
        return [dy, dy]


register_serializable("Tests")(_Sum)


def _functional():
    dc.set_random_seed(2)
    a, b = dc.Input(shape=[6], name="a"), dc.Input(shape=[6], name="b")
    shared = Dense(8, activation="tanh", name="shared")
    s = _Sum(name="sum")([shared(a), shared(b)])
    main = Dense(3, activation="softmax", name="main")(s)
    aux = Dense(1, name="aux")(shared(a))
    m = dc.Model([a, b], {"main": main, "aux": aux})
    m.compile(optimizer=dc.optimizers.SGD(0.05, momentum=0.9), loss={"main": "sparse_categorical_crossentropy",
                                                                     "aux": "mse"},
              loss_weights={"main": 1.0, "aux": 0.3}, metrics={"main": ["accuracy"]})
    return m


@register_serializable("Tests")
class _Tower(dc.Model):
    def __init__(self, width=5, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.h = Dense(width, activation="relu", name="h")
        self.out = Dense(3, activation="softmax", name="out")

    def call(self, x, training=None):
        return self.out(self.h(x))

    def get_config(self):
        return {"width": self.width, "name": self.name}


def _subclassed():
    dc.set_random_seed(3)
    m = _Tower(7)
    m.build((None, 6))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def _fit(m, x, y, epochs):
    if len(m.input_names) == 2:
        return m.fit([x, x[::-1].copy()], {"main": y, "aux": x[:, :1]}, epochs=epochs, batch_size=16, verbose=0,
                     shuffle=False)
    return m.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False)


@pytest.mark.parametrize("make", [_sequential, _functional, _subclassed], ids=["sequential", "functional",
                                                                             "subclassed"])
def test_save_load_predicts_identically_and_resumes_training_bit_for_bit(tmp_path, make):
    x, y = _xy()
    m = make()
    _fit(m, x, y, 2)
    path = tmp_path / "m.deepcore"
    m.save(path)
    loaded = load_model(path)
    assert type(loaded).__name__ == type(m).__name__ and loaded.output_names == m.output_names
    xs = [x, x[::-1].copy()] if len(m.input_names) == 2 else x
    for a, b in zip(np.atleast_1d(m.predict(xs)) if not isinstance(m.predict(xs), list) else m.predict(xs),
                    np.atleast_1d(loaded.predict(xs)) if not isinstance(loaded.predict(xs), list)
                    else loaded.predict(xs)):
        np.testing.assert_array_equal(a, b)
    h1, h2 = _fit(m, x, y, 2), _fit(loaded, x, y, 2)
    assert h1.history == h2.history
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.iterations == m.optimizer.iterations


def test_json_round_trip_and_clone_model_make_fresh_weights():
    m = _functional()
    again = model_from_json(m.to_json())
    assert [la.name for la in again.layers] == [la.name for la in m.layers]
    clone = clone_model(m)
    assert clone.output_names == m.output_names
    assert all(a.shape == b.shape for a, b in zip(clone.get_weights(), m.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(clone.get_weights(), m.get_weights()))
    assert clone.get_layer("shared") is not m.get_layer("shared")


def test_unknown_classes_need_registration_or_custom_objects(tmp_path):
    class Plain(Layer):
        _per_call = ()

        def forward(self, x, training=False):
            return x

        def backward(self, dy, need_dx=True):
            return dy

    inp = dc.Input(shape=[4])
    m = dc.Model(inp, Dense(2)(Plain(name="plain")(inp)))
    m.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "p.deepcore"
    m.save(path)
    with pytest.raises(ValueError, match="unknown layer class 'Plain'"):
        load_model(path)
    loaded = load_model(path, custom_objects={"Plain": Plain})
    np.testing.assert_array_equal(loaded.predict(np.ones((2, 4), np.float32)), m.predict(np.ones((2, 4), np.float32)))


def _rewrite(path, out, config=None, weights=None, extra=None):
    with zipfile.ZipFile(path) as z:
        cfg, w = z.read("config.json"), z.read("model.weights.safetensors")
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("config.json", cfg if config is None else config(cfg))
        z.writestr("model.weights.safetensors", w if weights is None else weights)
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def test_hand_edited_files_give_errors_that_name_the_problem(tmp_path, monkeypatch):
    m = _sequential()
    path = tmp_path / "m.deepcore"
    m.save(path)
    bad = tmp_path / "bad.deepcore"

    def units(raw):
        cfg = json.loads(raw)
        cfg["model"]["config"]["layers"][0]["config"]["units"] = 17
        return json.dumps(cfg)

    _rewrite(path, bad, config=units)
    with pytest.raises(ValueError, match="kernel.*shape"):
        load_model(bad)
    _rewrite(path, bad, config=lambda raw: raw.replace(b'"Dense"', b'"os.system"'))
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        load_model(bad)
    _rewrite(path, bad, extra={"../../evil.py": b"print('pwned')"})
    with pytest.raises(ValueError, match="outside"):
        load_model(bad)
    _rewrite(path, bad, extra={"notes.txt": b"hello"})
    with pytest.raises(ValueError, match="unexpected members"):
        load_model(bad)
    from deepcore.models import serialization
    monkeypatch.setattr(serialization, "MAX_WEIGHTS_BYTES", 100)
    with pytest.raises(ValueError, match="declares .* bytes, over the limit"):
        load_model(path)


def test_corrupt_and_truncated_files_never_crash(tmp_path):
    """Every truncation and 300 random byte flips: a model or a ValueError,
    nothing else (and nothing executed: the files are JSON and safetensors)."""
    m = _functional()
    path = tmp_path / "m.deepcore"
    m.save(path)
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    cases = [raw[:n] for n in sorted(set(rng.integers(0, len(raw), 60).tolist()))]
    for _ in range(300):
        b = bytearray(raw)
        for pos in rng.integers(0, len(raw), rng.integers(1, 4)):
            b[pos] = rng.integers(0, 256)
        cases.append(bytes(b))
    bad = tmp_path / "fuzz.deepcore"
    outcomes = {"loaded": 0, "error": 0}
    for data in cases:
        bad.write_bytes(data)
        try:
            load_model(bad)
            outcomes["loaded"] += 1
        except ValueError:
            outcomes["error"] += 1
    assert outcomes["error"] > 200


def test_a_killed_save_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "m.deepcore"
    code = textwrap.dedent(f"""
        import deepcore as dc, sys
        dc.set_random_seed(0)
        m = dc.Sequential([dc.Input(shape=[512]), dc.Dense(2048), dc.Dense(512)])
        m.compile(optimizer="adam", loss="mse")
        m.save({str(path)!r})
        print("first", flush=True)
        while True:
            m.save({str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "first"
        import time
        time.sleep(0.7)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    loaded = load_model(path)
    assert loaded.count_params() == 512 * 2048 + 2048 + 2048 * 512 + 512
    leftovers = [f for f in os.listdir(tmp_path) if f != "m.deepcore"]
    assert all(f.startswith(".tmp-") for f in leftovers)  # a killed save may leave its temp file, never a torn target
