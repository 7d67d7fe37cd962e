"""The graph engine (models/engine.py): functional models, shared layers,
fan-out, several inputs and outputs, subclassed models, and Sequential as a
linear plan of the same executor."""
import numpy as np
import pytest

import deepcore as dc
from deepcore.layers import Dense, Layer


class _Sum(Layer):
    """A two-input sum written in NumPy (a test double for a merge layer)."""

    _per_call = ()

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def forward(self, xs, training=False):
        return xs[0] + xs[1]

    def backward(self, dy, need_dx=True):
        return [dy, dy] if need_dx else [None, None]


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 5)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32),
            rng.standard_normal((n, 2)).astype(np.float32), rng.standard_normal((n, 1)).astype(np.float32))


def _torch():
    return pytest.importorskip("torch")


def _linear(torch, dense):
    k, b = dense.get_weights()
    lin = torch.nn.Linear(k.shape[0], k.shape[1]).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(k.T.astype(np.float64)))
        lin.bias.copy_(torch.from_numpy(b.astype(np.float64)))
    return lin


def _assert_weights(dense, lin, what):
    k, b = dense.get_weights()
    np.testing.assert_allclose(k, lin.weight.detach().numpy().T, rtol=1e-5, atol=1e-6, err_msg=what)
    np.testing.assert_allclose(b, lin.bias.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=what)


def test_fan_out_and_two_outputs_with_loss_weights_match_a_float64_reference():
    """x -> h = d1(x); out1 = d2(h), out2 = d3(h): h's gradient is the sum of
    both heads'; the loss is 0.9 mse1 + 0.1 mse2. Weights after 5 SGD steps
    agree with PyTorch in float64."""
    torch = _torch()
    x, _, y1, y2 = _data()
    inp = dc.Input(shape=[5])
    h = Dense(8, activation="tanh", name="h")(inp)
    out1 = Dense(2, name="main")(h)
    out2 = Dense(1, name="aux")(h)
    model = dc.Model(inp, [out1, out2])
    model.compile(optimizer=dc.optimizers.SGD(0.1), loss="mse", loss_weights=[0.9, 0.1])
    lins = [_linear(torch, model.get_layer(n)) for n in ("h", "main", "aux")]
    opt = torch.optim.SGD([p for lin in lins for p in lin.parameters()], lr=0.1)
    xt, y1t, y2t = (torch.from_numpy(a.astype(np.float64)) for a in (x, y1, y2))
    for _ in range(5):
        loss = model.train_on_batch(x, [y1, y2])
        opt.zero_grad()
        ht = torch.tanh(lins[0](xt))
        ref = 0.9 * torch.nn.functional.mse_loss(lins[1](ht), y1t) + 0.1 * torch.nn.functional.mse_loss(lins[2](ht), y2t)
        ref.backward()
        opt.step()
        assert loss == pytest.approx(ref.item(), rel=1e-5)
    for n, lin in zip(("h", "main", "aux"), lins):
        _assert_weights(model.get_layer(n), lin, n)


def test_a_shared_layer_sums_its_weight_gradients_over_its_calls():
    """Siamese: one Dense applied to two inputs, then summed: its gradient is
    the sum over both calls (each call keeps its own saved input)."""
    torch = _torch()
    xa, xb, _, y = _data()
    xb = np.concatenate([xb, xb[:, :2]], axis=1)  # both inputs 5 wide
    a, b = dc.Input(shape=[5], name="a"), dc.Input(shape=[5], name="b")
    tower = Dense(4, activation="relu", name="tower")
    s = _Sum(name="sum")([tower(a), tower(b)])
    out = Dense(1, name="head")(s)
    model = dc.Model([a, b], out)
    model.compile(optimizer=dc.optimizers.SGD(0.05), loss="mse")
    t, hd = _linear(torch, model.get_layer("tower")), _linear(torch, model.get_layer("head"))
    opt = torch.optim.SGD(list(t.parameters()) + list(hd.parameters()), lr=0.05)
    at, bt, yt = (torch.from_numpy(v.astype(np.float64)) for v in (xa, xb, y))
    for _ in range(5):
        model.train_on_batch([xa, xb], y)
        opt.zero_grad()
        torch.nn.functional.mse_loss(hd(torch.relu(t(at)) + torch.relu(t(bt))), yt).backward()
        opt.step()
    _assert_weights(model.get_layer("tower"), t, "tower")
    _assert_weights(model.get_layer("head"), hd, "head")
    assert len(model.get_layer("tower")._inbound_nodes) == 2


class _WideDeep(dc.Model):
    def __init__(self, aux=True, **kwargs):
        super().__init__(**kwargs)
        self.h1 = Dense(6, activation="relu", name="h1")
        self.h2 = Dense(6, activation="relu", name="h2")
        self.sum = _Sum(name="sum")
        self.wide = Dense(6, name="wide")
        self.main = Dense(1, name="main")
        self.aux_out = Dense(1, name="aux") if aux else None

    def call(self, inputs, training=None):
        wide_in, deep_in = inputs
        h = self.h2(self.h1(deep_in))
        out = self.main(self.sum([self.wide(wide_in), h]))
        if self.aux_out is None:  # Python control flow in call
            return out
        return [out, self.aux_out(h)]


def _functional_wide_deep():
    wide_in, deep_in = dc.Input(shape=[5], name="wide_in"), dc.Input(shape=[3], name="deep_in")
    h = Dense(6, activation="relu", name="h2")(Dense(6, activation="relu", name="h1")(deep_in))
    out = Dense(1, name="main")(_Sum(name="sum")([Dense(6, name="wide")(wide_in), h]))
    return dc.Model([wide_in, deep_in], [out, Dense(1, name="aux")(h)])


def test_a_subclassed_model_trains_as_its_functional_twin_bit_for_bit():
    xw, xd, _, y = _data()
    sub, fun = _WideDeep(), _functional_wide_deep()
    sub.build([(None, 5), (None, 3)])
    for name in ("h1", "h2", "wide", "main", "aux"):
        sub.get_layer(name).set_weights(fun.get_layer(name).get_weights())
    for m in (sub, fun):
        m.compile(optimizer=dc.optimizers.Adam(0.01), loss=["mse", "mse"], loss_weights=[0.9, 0.1])
    h_sub = sub.fit([xw, xd], [y, y], epochs=3, batch_size=16, verbose=0, seed=1)
    h_fun = fun.fit([xw, xd], [y, y], epochs=3, batch_size=16, verbose=0, seed=1)
    # a subclassed model's outputs are output_1, output_2 (as in Keras); the functional one's are its layers'
    assert sub.output_names == ["output_1", "output_2"] and fun.output_names == ["main", "aux"]
    rename = {"output_1": "main", "output_2": "aux"}
    assert {next((rename[p] + k[len(p):] for p in rename if k.startswith(p)), k): v
            for k, v in h_sub.history.items()} == h_fun.history
    for name in ("h1", "h2", "wide", "main", "aux"):
        for a, b in zip(sub.get_layer(name).get_weights(), fun.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_history_keys_for_several_outputs_follow_keras():
    xw, xd, y2, y = _data()
    model = _functional_wide_deep()
    model.compile(optimizer="sgd", loss={"main": "mse", "aux": "mae"}, metrics={"main": ["mae"]})
    h = model.fit({"wide_in": xw, "deep_in": xd}, {"main": y, "aux": y}, epochs=2, verbose=0,
                  validation_data=([xw, xd], [y, y]))
    assert set(h.history) == {"loss", "main_loss", "aux_loss", "main_mae", "val_loss", "val_main_loss",
                              "val_aux_loss", "val_main_mae", "learning_rate", "lr"}
    # the total is the sum of the per-output losses (weights 1)
    ev = model.evaluate([xw, xd], [y, y], return_dict=True, verbose=0)
    assert ev["loss"] == pytest.approx(ev["main_loss"] + ev["aux_loss"], rel=1e-6)
    p = model.predict([xw, xd])
    assert isinstance(p, list) and p[0].shape == (64, 1) and p[1].shape == (64, 1)


def test_sequential_and_its_functional_twin_train_bit_for_bit():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((96, 10)).astype(np.float32), rng.integers(0, 4, 96)

    def layers():
        dc.set_random_seed(7)
        return [Dense(16, activation="relu"), dc.layers.Dropout(0.2, seed=3), Dense(4, activation="softmax")]

    seq = dc.Sequential([dc.Input(shape=[10]), *layers()])
    inp = dc.Input(shape=[10])
    t = inp
    for layer in layers():
        t = layer(t)
    fun = dc.Model(inp, t)
    for m in (seq, fun):
        m.compile(optimizer=dc.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    hs = seq.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=2)
    hf = fun.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=2)
    assert hs.history == hf.history
    for a, b in zip(seq.get_weights(), fun.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_graph_errors_name_the_layers():
    a, b = dc.Input(shape=[3], name="in_a"), dc.Input(shape=[3], name="in_b")
    out = Dense(2, name="d")(a)
    with pytest.raises(ValueError, match="in_b.*not connected"):
        dc.Model([a, b], out)
    c = dc.Input(shape=[3], name="in_c")
    with pytest.raises(ValueError, match="in_c.*not in the model's inputs"):
        dc.Model(a, _Sum(name="s")([Dense(2, name="e")(a), Dense(2, name="f")(c)]))
    with pytest.raises(ValueError, match="two different layers are named 'twin'"):
        dc.Model(a, Dense(2, name="twin")(Dense(3, name="twin")(a)))
    d = Dense(4, name="d4")
    d(a)
    with pytest.raises(ValueError, match="d4.*built for input shape"):
        d(dc.Input(shape=[5]))
    x = Dense(2, name="g1")(a)
    y = Dense(2, name="g2")(x)
    x._node.inputs = [y]  # a cycle (cannot be built through the API; the check is defensive)
    with pytest.raises(ValueError, match="cycle"):
        dc.Model(a, y)


def test_a_subclassed_model_refuses_numpy_math_between_layers():
    class Bad(dc.Model):
        def __init__(self):
            super().__init__()
            self.d1, self.d2 = Dense(3), Dense(1)

        def call(self, x, training=None):
            return self.d2(self.d1(x) * 2.0)

    m = Bad()
    m.compile(optimizer="sgd", loss="mse")
    x, _, _, y = _data()
    with pytest.raises(TypeError, match="must be layers too"):
        m.fit(x, y, epochs=1, verbose=0)


def test_summary_of_a_functional_model_shows_inbound_layers():
    xw, xd, _, _ = _data()
    model = _functional_wide_deep()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "sum (_Sum)" in text and "wide, h2" in text
    assert "Total params:" in text


def test_axpby_reference_and_bad_input():
    from deepcore import _core as C

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=1001).astype(np.float32), rng.normal(size=1001).astype(np.float32)
    for a, b in ((1.0, 1.0), (0.0, 3.0), (2.5, -1.0)):
        yc = y.copy()
        C.axpby(a, x, b, yc)
        np.testing.assert_allclose(yc, a * x.astype(np.float64) + b * y, rtol=1e-6, atol=1e-6)
    yc = y.copy()
    C.axpby(0.0, np.full_like(x, np.inf), 2.0, yc)  # a == 0 ignores x's values
    np.testing.assert_array_equal(yc, 2 * y)
    with pytest.raises(ValueError, match="axpby"):
        C.axpby(1.0, x[:10], 1.0, y)
    with pytest.raises((TypeError, ValueError), match="axpby"):
        C.axpby(1.0, x.astype(np.float64), 1.0, y)


def test_gradients_through_fan_out_and_a_shared_layer_match_finite_differences():
    """d(loss)/d(weights) from one backward equals central differences in
    float64 of the model's own forward (tanh: smooth)."""
    a, b = dc.Input(shape=[4], name="fa"), dc.Input(shape=[4], name="fb")
    shared = Dense(3, activation="tanh", name="shared")
    h = shared(a)
    out = Dense(1, name="o")(_Sum(name="s2")([Dense(3, activation="tanh", name="branch")(h), shared(b)]))
    aux = Dense(1, name="aux")(h)
    model = dc.Model([a, b], [out, aux])
    model.compile(optimizer=dc.optimizers.SGD(0.0), loss="mse", loss_weights=[1.0, 0.5])
    rng = np.random.default_rng(5)
    xa, xb = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)
    y1, y2 = rng.normal(size=(8, 1)).astype(np.float32), rng.normal(size=(8, 1)).astype(np.float32)
    model.train_on_batch([xa, xb], [y1, y2])  # lr 0: gradients computed, weights unchanged
    grads = {v.path: np.array(v.grad, dtype=np.float64) for v in model.trainable_weights}

    def loss():
        p1, p2 = model.predict([xa, xb], batch_size=8)
        return np.mean((p1.astype(np.float64) - y1) ** 2) + 0.5 * np.mean((p2.astype(np.float64) - y2) ** 2)

    for v in model.trainable_weights:
        w = v.numpy()
        for idx in [(0,) * w.ndim, tuple(s - 1 for s in w.shape)]:
            eps = 1e-2
            w2 = w.copy()
            w2[idx] += eps
            v.assign(w2)
            up = loss()
            w2[idx] -= 2 * eps
            v.assign(w2)
            down = loss()
            v.assign(w)
            np.testing.assert_allclose(grads[v.path][idx], (up - down) / (2 * eps), rtol=2e-2, atol=2e-4,
                                       err_msg=f"{v.path}{idx}")


def test_dense_on_nd_input_applies_to_the_last_axis():
    """(batch, 4, 6) -> Dense(3): x @ W + b on every row of the last axis;
    gradients against a float64 reference."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4, 6)).astype(np.float32)
    inp = dc.Input(shape=[4, 6])
    out = Dense(3, activation="tanh", name="nd")(inp)
    assert out.shape == (None, 4, 3)
    model = dc.Model(inp, out)
    model.compile(optimizer=dc.optimizers.SGD(0.0), loss="mse")
    k, b = model.get_layer("nd").get_weights()
    want = np.tanh(x.astype(np.float64) @ k + b)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-6)
    y = rng.normal(size=(5, 4, 3)).astype(np.float32)
    model.train_on_batch(x, y)
    layer = model.get_layer("nd")
    dz = 2 * (want - y) / y.size * (1 - want ** 2)
    np.testing.assert_allclose(layer.kernel.grad, np.einsum("bti,bto->io", x, dz), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, dz.sum(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="nd.*built for input shape"):
        model.get_layer("nd")(dc.Input(shape=[4, 7]))


def test_layers_reused_in_another_model_share_weights_and_freeze():
    """Transfer: model B reuses A's hidden layers (the same objects, as in
    Keras). Frozen, they do not move while B trains; unfrozen, B's training
    changes A too; A then trains again on the shared weights."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, 64)
    yb = (y == 0).astype(np.float32)
    dc.set_random_seed(0)
    a = dc.Sequential([dc.Input(shape=[6]), Dense(8, activation="relu", name="t1"),
                       Dense(8, activation="relu", name="t2"), Dense(3, activation="softmax", name="head_a")])
    a.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    a.fit(x, y, epochs=1, verbose=0)
    b = dc.Sequential([dc.Input(shape=[6]), *a.layers[:-1], Dense(1, activation="sigmoid", name="head_b")])
    for layer in b.layers[:-1]:
        layer.trainable = False
    b.compile(optimizer="sgd", loss="binary_crossentropy")
    before = [w.copy() for w in a.get_layer("t1").get_weights()]
    b.fit(x, yb, epochs=2, verbose=0)
    for w0, w1 in zip(before, a.get_layer("t1").get_weights()):
        np.testing.assert_array_equal(w0, w1)
    for layer in b.layers[:-1]:
        layer.trainable = True
    b.compile(optimizer="sgd", loss="binary_crossentropy")
    b.fit(x, yb, epochs=2, verbose=0)
    moved = a.get_layer("t1").get_weights()
    assert not np.array_equal(moved[0], before[0])
    np.testing.assert_array_equal(b.get_layer("t1").get_weights()[0], moved[0])
    a.fit(x, y, epochs=1, verbose=0)  # A repacks the shared weights into its own buffers and trains them
    np.testing.assert_array_equal(b.get_layer("t1").get_weights()[0], a.get_layer("t1").get_weights()[0])
    assert not np.array_equal(a.get_layer("t1").get_weights()[0], moved[0])


def _frozen_model():
    dc.set_random_seed(5)
    m = dc.Sequential([dc.Input(shape=[4, 5]), dc.layers.Flatten(), Dense(12, activation="relu", name="f1"),
                       dc.layers.BatchNormalization(name="fbn"), Dense(8, activation="elu", name="t1"),
                       dc.layers.Dropout(0.2, seed=1), Dense(3, activation="softmax", name="out")])
    for name in ("f1", "fbn"):
        m.get_layer(name).trainable = False
    m.compile(optimizer=dc.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_cached_frozen_outputs_train_the_same_weights(capsys):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(100, 4, 5)).astype(np.float32), rng.integers(0, 3, 100)
    xv, yv = rng.normal(size=(30, 4, 5)).astype(np.float32), rng.integers(0, 3, 30)
    assert _frozen_model()._frozen_prefix()[0] == 3
    a, b = _frozen_model(), _frozen_model()
    ha = a.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=4, validation_data=(xv, yv), cache_frozen=True)
    assert a._fit_plan is None  # the whole model again after fit
    hb = b.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=4, validation_data=(xv, yv), cache_frozen=False)
    assert ha.history == hb.history
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    c = _frozen_model()
    c.fit(x, y, epochs=1, verbose=1, seed=4)  # "auto" caches and says so once
    c.fit(x, y, epochs=1, verbose=1, seed=4)
    assert capsys.readouterr().out.count("are frozen and deterministic") == 1


def test_cache_frozen_true_says_why_nothing_can_be_cached():
    m = dc.Sequential([dc.Input(shape=[3]), dc.layers.Dropout(0.5), Dense(2, name="x")])
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="nothing to cache"):
        m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), verbose=0, cache_frozen=True)
    with pytest.raises(ValueError, match="cache_frozen"):
        m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), verbose=0, cache_frozen="yes")


@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"])
def test_every_merge_layer_in_a_graph_trains_as_pytorch(merge):
    torch = _torch()
    ops = {"Add": lambda a, b: a + b, "Subtract": lambda a, b: a - b, "Multiply": lambda a, b: a * b,
           "Average": lambda a, b: (a + b) / 2, "Maximum": torch.maximum, "Minimum": torch.minimum,
           "Concatenate": lambda a, b: torch.cat([a, b], dim=1)}
    xa, _, _, y = _data(seed=1)
    xb = _data(seed=2)[0]
    a, b = dc.Input(shape=[5]), dc.Input(shape=[5])
    h = getattr(dc.layers, merge)(name="m")([Dense(4, activation="tanh", name="l")(a),
                                           Dense(4, activation="tanh", name="r")(b)])
    model = dc.Model([a, b], Dense(1, name="o")(h))
    model.compile(optimizer=dc.optimizers.SGD(0.1), loss="mse")
    lins = [_linear(torch, model.get_layer(n)) for n in ("l", "r", "o")]
    opt = torch.optim.SGD([p for lin in lins for p in lin.parameters()], lr=0.1)
    at, bt, yt = (torch.from_numpy(v.astype(np.float64)) for v in (xa, xb, y))
    for _ in range(5):
        model.train_on_batch([xa, xb], y)
        opt.zero_grad()
        out = lins[2](ops[merge](torch.tanh(lins[0](at)), torch.tanh(lins[1](bt))))
        torch.nn.functional.mse_loss(out, yt).backward()
        opt.step()
    for n, lin in zip(("l", "r", "o"), lins):
        _assert_weights(model.get_layer(n), lin, f"{merge}: {n}")


def _nested_data():
    rng = np.random.default_rng(5)
    return rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 3, 64)


def test_a_model_as_a_layer_shares_its_weights_and_freezes_as_a_whole(tmp_path):
    """Keras's stacked autoencoder: Sequential([encoder, decoder]) trains the
    encoder's own layers; the encoder then called in a functional classifier
    shares them, and encoder.trainable = False freezes them there."""
    x, y = _nested_data()
    dc.set_random_seed(3)
    enc = dc.Sequential([dc.Input(shape=[6]), Dense(4, activation="relu", name="enc_d")])
    dec = dc.Sequential([dc.Input(shape=[4]), Dense(6, name="dec_d")])
    ae = dc.Sequential([enc, dec])
    assert [la.name for la in ae.layers] == ["enc_d", "dec_d"] and ae.input_shape == (None, 6)
    ae.compile(optimizer=dc.optimizers.SGD(0.05), loss="mse")
    before = enc.get_weights()[0].copy()
    ae.fit(x, x, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(before, enc.get_weights()[0])
    np.testing.assert_array_equal(enc.predict(x, verbose=0), enc.layers[0](x))

    inp = dc.Input(shape=[6])
    clf = dc.Model(inp, Dense(3, activation="softmax", name="clf_head")(enc(inp)))
    enc.trainable = False
    assert not enc.layers[0].trainable
    clf.compile(optimizer=dc.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    frozen = enc.get_weights()[0].copy()
    clf.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(frozen, enc.get_weights()[0])
    enc.trainable = True
    clf.compile(optimizer=dc.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    clf.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(frozen, enc.get_weights()[0])
    # the outer model's file holds the encoder's layers, and predicts the same after loading
    clf.save(tmp_path / "clf.deepcore")
    back = dc.models.load_model(tmp_path / "clf.deepcore")
    np.testing.assert_array_equal(back.predict(x, verbose=0), clf.predict(x, verbose=0))


def test_a_model_called_inside_a_subclassed_model_trains_its_layers():
    x, y = _nested_data()
    enc = dc.Sequential([dc.Input(shape=[6]), Dense(4, activation="relu", name="inner_d")])
    enc.predict(x, verbose=0)  # built before the outer model ever runs

    class Outer(dc.Model):
        def __init__(self):
            super().__init__(name="outer")
            self.enc = enc
            self.head = Dense(3, activation="softmax", name="outer_head")

        def call(self, inputs, training=None):
            return self.head(self.enc(inputs))

    m = Outer()
    m.compile(optimizer=dc.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    before = enc.get_weights()[0].copy()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert {la.name for la in m.layers} == {"inner_d", "outer_head"}
    assert not np.array_equal(before, enc.get_weights()[0])


def test_a_branching_model_cannot_be_a_layer_of_a_sequential():
    a = dc.Input(shape=[4])
    two = dc.Model(a, [Dense(2, name="br1")(a), Dense(2, name="br2")(a)])
    with pytest.raises(TypeError, match="not a plain stack"):
        dc.Sequential([two])
    chain_in = dc.Input(shape=[4])
    chain = dc.Model(chain_in, Dense(2, name="ch2")(Dense(3, name="ch1")(chain_in)))
    s = dc.Sequential([chain, Dense(1, name="ch_out")])
    assert [la.name for la in s.layers] == ["ch1", "ch2", "ch_out"] and s.input_shape == (None, 4)


def test_sparse_cross_entropy_on_a_sequence_output_is_the_mean_over_positions():
    """Dense on (batch, steps, features) with one label per step (a language
    model's output): the same loss, accuracy and weights as the same Dense
    on the (batch * steps) rows."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 5, 4)).astype(np.float32)
    y = rng.integers(0, 6, (8, 5))
    seq_d, row_d = Dense(6, activation="softmax", name="seq_d"), Dense(6, activation="softmax", name="row_d")
    seq = dc.Sequential([dc.Input(shape=[5, 4]), seq_d])
    rows = dc.Sequential([dc.Input(shape=[4]), row_d])
    row_d.set_weights(seq_d.get_weights())
    for m in (seq, rows):
        m.compile(optimizer=dc.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    p = seq.predict(x, verbose=0).reshape(-1, 6).astype(np.float64)
    ref = -np.mean(np.log(p[np.arange(40), y.reshape(-1)]))
    loss, acc = seq.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    np.testing.assert_allclose(acc, np.mean(p.argmax(1) == y.reshape(-1)), rtol=1e-6)
    for _ in range(3):
        seq.train_on_batch(x, y)
        rows.train_on_batch(x.reshape(-1, 4), y.reshape(-1))
    np.testing.assert_allclose(seq_d.get_weights()[0], row_d.get_weights()[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(batch,\) \+ \(5,\)"):
        seq.fit(x, y[:, :4], verbose=0)
