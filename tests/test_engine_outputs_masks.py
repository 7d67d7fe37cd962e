"""The engine's protocol for layers with several outputs (an RNN's
return_state) and for Keras masks (Embedding(mask_zero=True) / Masking feeding
an RNN), exercised with small NumPy layers so that the engine is tested on
its own: models/engine.py."""
import numpy as np
import pytest

import deepcore as dc
from deepcore.layers import Dense, Layer
from deepcore.models import load_model, register_serializable


@register_serializable("EngineTests")
class _TwoHeads(Layer):
    """[x @ W1, x @ W2] in NumPy: one layer, two outputs."""

    _per_call = ("_x",)

    def __init__(self, units1, units2, **kwargs):
        super().__init__(**kwargs)
        self.units1, self.units2 = units1, units2

    def build(self, input_shape):
        rng = np.random.default_rng(7)
        self.w1 = self.add_weight("w1", (input_shape[-1], self.units1),
                                  lambda s: rng.standard_normal(s).astype(np.float32) * 0.5)
        self.w2 = self.add_weight("w2", (input_shape[-1], self.units2),
                                  lambda s: rng.standard_normal(s).astype(np.float32) * 0.5)

    def compute_output_shape(self, input_shape):
        return [(self.units1,), (self.units2,)]

    def forward(self, x, training=False):
        self._x = x
        return [x @ self.w1.value, x @ self.w2.value]

    def backward(self, dys, need_dx=True):
        assert isinstance(dys, list) and len(dys) == 2
        x = self._x
        dx = np.zeros_like(x)
        for var, dy in ((self.w1, dys[0]), (self.w2, dys[1])):
            if dy is None:  # nothing flows back to this output
                var.grad[...] = 0.0
                continue
            var.grad[...] = x.T @ dy
            dx += dy @ var.value.T
        return dx if need_dx else None

    def get_config(self):
        return {**super().get_config(), "units1": self.units1, "units2": self.units2}


def _two_dense_twin(layer):
    """The same computation as two plain bias-free Dense layers."""
    d1 = Dense(layer.units1, use_bias=False, name="twin1")
    d2 = Dense(layer.units2, use_bias=False, name="twin2")
    return d1, d2


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32),
            rng.standard_normal((n, 1)).astype(np.float32))


def _compile(m):
    m.compile(optimizer=dc.optimizers.SGD(0.05), loss=["mse", "mse"], loss_weights=[0.7, 0.3])


def test_a_layer_with_two_outputs_trains_as_two_dense_layers():
    """inp -> _TwoHeads -> (a, b); heads on each: same weights after 4 SGD
    steps as the same graph written with two bias-free Dense layers."""
    x, y1, y2 = _data()
    inp = dc.Input(shape=[4])
    two = _TwoHeads(3, 5, name="two")
    a, b = two(inp)
    assert a.shape == (None, 3) and b.shape == (None, 5)
    h1, h2 = Dense(2, name="h1"), Dense(1, name="h2")
    m = dc.Model(inp, [h1(a), h2(b)])
    _compile(m)

    inp2 = dc.Input(shape=[4])
    t1, t2 = _two_dense_twin(two)
    g1, g2 = Dense(2, name="g1"), Dense(1, name="g2")
    twin = dc.Model(inp2, [g1(t1(inp2)), g2(t2(inp2))])
    _compile(twin)
    t1.set_weights([two.w1.numpy()])
    t2.set_weights([two.w2.numpy()])
    g1.set_weights(h1.get_weights())
    g2.set_weights(h2.get_weights())
    for _ in range(4):
        m.train_on_batch(x, [y1, y2])
        twin.train_on_batch(x, [y1, y2])
    np.testing.assert_allclose(two.w1.numpy(), t1.get_weights()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.w2.numpy(), t2.get_weights()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2.get_weights()[0], g2.get_weights()[0], rtol=1e-5, atol=1e-6)
    p, q = m.predict(x, verbose=0), twin.predict(x, verbose=0)
    np.testing.assert_allclose(p[0], q[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p[1], q[1], rtol=1e-5, atol=1e-6)


def test_an_unused_output_gets_none_and_a_subclassed_model_records_both():
    x, y1, _ = _data()

    class Sub(dc.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.two = _TwoHeads(3, 5, name="two_sub")
            self.head = Dense(2, name="head_sub")

        def call(self, inputs, training=None):
            a, _unused = self.two(inputs)
            return self.head(a)

    m = Sub()
    m.compile(optimizer=dc.optimizers.SGD(0.05), loss="mse")
    w2 = None
    for _ in range(3):
        m.train_on_batch(x, y1)
        if w2 is None:
            w2 = m.two.w2.numpy().copy()
    np.testing.assert_array_equal(m.two.w2.numpy(), w2)  # no gradient reached w2: unchanged

    inp = dc.Input(shape=[4])
    two = _TwoHeads(3, 5, name="two_fn")
    a, _b = two(inp)
    fn = dc.Model(inp, Dense(2, name="head_fn")(a))
    fn.compile(optimizer=dc.optimizers.SGD(0.05), loss="mse")
    before1, before2 = two.w1.numpy().copy(), two.w2.numpy().copy()
    fn.train_on_batch(x, y1)
    np.testing.assert_array_equal(two.w2.numpy(), before2)
    assert not np.array_equal(two.w1.numpy(), before1)  # the used output's weight did train


def test_eager_call_summary_and_model_file_of_a_two_output_layer(tmp_path):
    x, y1, y2 = _data()
    two = _TwoHeads(3, 5, name="two_e")
    out = two(x)
    assert isinstance(out, list) and out[0].shape == (48, 3) and out[1].shape == (48, 5)
    inp = dc.Input(shape=[4], name="x")
    a, b = two(inp)
    m = dc.Model(inp, [Dense(2, name="ha")(a), b])
    _compile(m)
    m.train_on_batch(x, [y1, np.zeros((48, 5), np.float32)])
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "[(None, 3), (None, 5)]" in text and "two_e[0]" in text
    path = tmp_path / "two.deepcore"
    m.save(path)
    back = load_model(path)
    p, q = m.predict(x, verbose=0), back.predict(x, verbose=0)
    np.testing.assert_array_equal(p[0], q[0])
    np.testing.assert_array_equal(p[1], q[1])


# ---------------------------------------------------------------- masks
class _MarkZeros(Layer):
    """Makes a mask: steps whose first feature is 0 are padding."""

    _per_call = ("_mask",)

    def compute_output_shape(self, input_shape):
        return input_shape

    def forward(self, x, training=False):
        self._mask = (x[..., 0] != 0).astype(np.float32)
        return x

    def backward(self, dy, need_dx=True):
        return dy

    def compute_mask(self, inputs, mask):
        return self._mask


class _PassThrough(Layer):
    _per_call = ()
    supports_masking = True

    def forward(self, x, training=False):
        return x * 2.0

    def backward(self, dy, need_dx=True):
        return dy * 2.0


class _NoMasking(_PassThrough):
    supports_masking = False


class _MaskedSum(Layer):
    """Sums the steps that the mask keeps: (B, T, F) -> (B, F)."""

    _per_call = ("_m", "_shape")
    _consumes_mask = True  # takes the mask; its output has none (no time axis left)

    def compute_output_shape(self, input_shape):
        return input_shape[1:]

    def forward(self, x, training=False, mask=None):
        self._m = np.ones(x.shape[:2], np.float32) if mask is None else mask
        self._shape = x.shape
        return np.einsum("bt,btf->bf", self._m, x).astype(np.float32)

    def backward(self, dy, need_dx=True):
        return (self._m[:, :, None] * dy[:, None, :]).astype(np.float32)


def _seq_data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    x[0, 3:, 0] = 0.0
    x[2, :2, 0] = 0.0
    keep = (x[..., 0] != 0).astype(np.float32)
    return x, keep


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_a_mask_flows_to_the_layer_that_consumes_it(kind):
    x, keep = _seq_data()
    layers = [_MarkZeros(), _PassThrough(), _MaskedSum(), Dense(2)]
    if kind == "sequential":
        m = dc.Sequential([dc.Input(shape=[5, 3])] + layers)
    elif kind == "functional":
        inp = dc.Input(shape=[5, 3])
        h = inp
        for layer in layers:
            h = layer(h)
        m = dc.Model(inp, h)
    else:
        class Sub(dc.Model):
            def call(self, inputs, training=None):
                h = inputs
                for layer in layers:
                    h = layer(h)
                return h
        m = Sub()
    summed = np.einsum("bt,btf->bf", keep, 2.0 * x)
    got = m.predict(x, verbose=0)
    k, b = layers[-1].get_weights()
    np.testing.assert_allclose(got, summed @ k + b, rtol=1e-5, atol=1e-6)
    # the gradient of Dense's kernel sees the masked sum: one SGD step on mse
    m.compile(optimizer=dc.optimizers.SGD(0.1), loss="mse")
    y = np.zeros((6, 2), np.float32)
    m.train_on_batch(x, y)
    grad_k = summed.T.astype(np.float64) @ (2.0 * (summed @ k + b) / (6 * 2))
    np.testing.assert_allclose(layers[-1].get_weights()[0], k - 0.1 * grad_k, rtol=1e-4, atol=1e-5)


def test_a_layer_without_masking_support_drops_the_mask():
    x, _ = _seq_data()
    m = dc.Sequential([dc.Input(shape=[5, 3]), _MarkZeros(), _NoMasking(), _MaskedSum()])
    np.testing.assert_allclose(m.predict(x, verbose=0), (2.0 * x).sum(axis=1), rtol=1e-6)


def test_plans_without_mask_makers_do_not_track_masks():
    m = dc.Sequential([dc.Input(shape=[5, 3]), _PassThrough(), _MaskedSum()])
    assert m._plan.masked is False
    m2 = dc.Sequential([dc.Input(shape=[5, 3]), _MarkZeros(), _MaskedSum()])
    assert m2._plan.masked is True
