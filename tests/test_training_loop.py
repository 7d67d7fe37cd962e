"""What Model.fit and Model.evaluate do with the data, checked from outside.

* fit visits every training row once per epoch, in a new order each epoch
  (shuffle=True), or in the data's order (shuffle=False); x and y stay paired;
* validation_split holds out the LAST fraction of the rows (as Keras);
* evaluate, and the validation fit reports, run in inference mode: Dropout is
  the identity and BatchNormalization uses its moving statistics;
* on_epoch_end sees the validation results of the epoch in its logs;
* a learning-rate schedule is evaluated at the 0-based step of each update;
* Dropout keeps units with the scale 1 / (1 - rate).

Expected values come from float64 NumPy forwards written here from the
layers' formulas (Dense, ReLU, softmax, BatchNormalization with the moving
statistics), never from the code under test. A small identity layer written
in NumPy records the row ids (column 0 of x) of each training batch.
"""
import math

import numpy as np
import pytest

import deepcore as dc
from deepcore.callbacks import Callback
from deepcore.layers.base import Layer

L = dc.layers


class RowIds(Layer):
    """Identity; in training forward passes it records column 0 of the batch
    (the row ids the tests put there). Nothing before the first trainable
    layer is differentiated, so backward is never needed, but it is exact."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def forward(self, x, training=False):
        if training:
            self.batches.append(np.array(x[:, 0], dtype=np.float64))
        return x

    def backward(self, dy, need_dx=True):
        return dy if need_dx else None


def id_data(n, features=4, classes=3, seed=0):
    """x with the row id in column 0 (exact in float32), noise elsewhere; labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[:, 0] = np.arange(n)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def recorder_model(lr=0.0, classes=3, features=4, seed=1):
    dc.set_random_seed(seed)
    rec = RowIds(name="ids")
    model = dc.Sequential([dc.Input((features,)), rec, L.Dense(classes, activation="softmax", name="out")])
    model.compile(optimizer=dc.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    return model, rec


def epochs_of(rec, steps):
    """The recorded batches grouped per epoch, each epoch's ids concatenated."""
    b = rec.batches
    assert len(b) % steps == 0
    return [np.concatenate(b[i:i + steps]).astype(np.int64) for i in range(0, len(b), steps)]


# ------------------------------------------------------------ float64 references
def softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy64(p, y):
    """Per-sample sparse categorical cross-entropy of probabilities p."""
    return -np.log(p[np.arange(len(y)), y])


def dense64(x, layer, activation=None):
    w, b = (v.astype(np.float64) for v in layer.get_weights())
    z = np.asarray(x, np.float64) @ w + b
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "softmax":
        return softmax64(z)
    return z


def batchnorm_inference64(x, bn):
    gamma, beta = bn.gamma.numpy().astype(np.float64), bn.beta.numpy().astype(np.float64)
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    return gamma * (x - mean) / np.sqrt(var + bn.epsilon) + beta


# ----------------------------------------------------------------- shuffling
def test_fit_shuffles_each_epoch_anew_and_visits_every_row_once():
    n, batch = 50, 8  # 7 steps, the last one ragged
    x, y = id_data(n)
    model, rec = recorder_model()
    model.fit(x, y, batch_size=batch, epochs=3, verbose=0, seed=11)
    orders = epochs_of(rec, math.ceil(n / batch))
    assert len(orders) == 3
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # a permutation of the rows
        assert not np.array_equal(order, np.arange(n))                # shuffled
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], orders[2])
    assert [len(b) for b in rec.batches[:7]] == [8, 8, 8, 8, 8, 8, 2]


def test_fit_without_shuffle_visits_the_rows_in_the_data_order_every_epoch():
    n, batch = 20, 6
    x, y = id_data(n)
    model, rec = recorder_model()
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0, shuffle=False)
    for order in epochs_of(rec, math.ceil(n / batch)):
        np.testing.assert_array_equal(order, np.arange(n))


def test_fit_with_the_same_seed_repeats_the_orders_and_another_seed_changes_them():
    n = 40
    x, y = id_data(n)
    runs = {}
    for key, seed in (("a", 5), ("b", 5), ("c", 6)):
        model, rec = recorder_model()
        model.fit(x, y, batch_size=10, epochs=2, verbose=0, seed=seed)
        runs[key] = epochs_of(rec, 4)
    for p, q in zip(runs["a"], runs["b"]):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(runs["a"][0], runs["c"][0])


class BatchLosses(Callback):
    def __init__(self):
        super().__init__()
        self.running = []

    def on_train_batch_end(self, batch, logs=None):
        self.running.append(logs["loss"])


def test_shuffled_batches_keep_each_row_with_its_label():
    """With a zero learning rate the weights never move, so the running loss
    after each batch is the float64 mean of the per-row losses of the rows
    seen so far, with THEIR labels (a y gathered in another order than x
    would give other losses)."""
    n, batch = 30, 7
    x, y = id_data(n, seed=3)
    model, rec = recorder_model(lr=0.0)
    losses = BatchLosses()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, seed=2, callbacks=[losses])
    per_row = cross_entropy64(dense64(x, model.get_layer("out"), "softmax"), y)
    seen = np.concatenate(rec.batches).astype(np.int64)
    assert not np.array_equal(seen, np.arange(n))
    sizes = np.cumsum([len(b) for b in rec.batches])
    want = [per_row[seen[:k]].mean() for k in sizes]
    np.testing.assert_allclose(losses.running, want, rtol=2e-6)
    # the label of a shuffled row is not that of the row in its position
    assert not np.allclose(losses.running, [per_row[:k].mean() for k in sizes], rtol=1e-3)


# ---------------------------------------------------------- validation split
def test_validation_split_holds_out_the_last_rows_and_reports_their_loss():
    n = 40
    x, y = id_data(n, seed=4)
    model, rec = recorder_model(lr=0.0)
    h = model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_split=0.25, seed=1).history
    trained = np.concatenate(rec.batches).astype(np.int64)
    np.testing.assert_array_equal(np.sort(trained[:30]), np.arange(30))  # the first 75%, each once
    np.testing.assert_array_equal(np.sort(trained[30:]), np.arange(30))
    p = dense64(x[30:], model.get_layer("out"), "softmax")
    want = cross_entropy64(p, y[30:]).mean()
    assert h["val_loss"] == pytest.approx([want, want], rel=2e-6)


# ---------------------------------------------------- inference-mode evaluate
def dropout_model():
    dc.set_random_seed(2)
    model = dc.Sequential([dc.Input((6,)), L.Dense(32, activation="relu", name="h"), L.Dropout(0.5, name="drop"),
                           L.Dense(3, activation="softmax", name="out")])
    model.compile(optimizer=dc.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def dropout_forward64(model, x):
    """Inference: Dropout is the identity."""
    return dense64(dense64(x, model.get_layer("h"), "relu"), model.get_layer("out"), "softmax")


def test_evaluate_with_dropout_equals_the_float64_inference_loss():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    model = dropout_model()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)  # weights away from their initial values
    p = dropout_forward64(model, x)
    loss, acc = model.evaluate(x, y, batch_size=16, verbose=0)
    assert loss == pytest.approx(cross_entropy64(p, y).mean(), rel=1e-5)
    assert acc == pytest.approx(np.mean(p.argmax(1) == y))
    np.testing.assert_allclose(model.predict(x), p, rtol=1e-5, atol=1e-6)
    assert model.evaluate(x, y, batch_size=16, verbose=0) == [loss, acc]  # no random masks drawn


def bn_model(momentum=0.5):
    dc.set_random_seed(4)
    model = dc.Sequential([dc.Input((5,)), L.Dense(8, name="d"), L.BatchNormalization(momentum=momentum, name="bn"),
                           L.Activation("relu", name="act"), L.Dense(3, activation="softmax", name="out")])
    model.compile(optimizer=dc.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


def bn_forward64(model, x):
    z = batchnorm_inference64(dense64(x, model.get_layer("d")), model.get_layer("bn"))
    return dense64(np.maximum(z, 0.0), model.get_layer("out"), "softmax")


def test_evaluate_uses_batchnorm_moving_statistics_and_leaves_them_unchanged():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    model = bn_model()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)
    bn = model.get_layer("bn")
    # Data far from the training distribution: its batch statistics differ
    # from the moving ones, so a training-mode forward gives another loss.
    xe = (x * 3.0 + 2.0).astype(np.float32)
    moving = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    p = bn_forward64(model, xe)
    loss = model.evaluate(xe, y, batch_size=16, verbose=0)
    assert loss == pytest.approx(cross_entropy64(p, y).mean(), rel=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moving[1])
    # the reference is sensitive: the batch statistics give a clearly different loss
    d = dense64(xe, model.get_layer("d"))
    zb = (d - d.mean(0)) / np.sqrt(d.var(0) + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()
    batch_loss = cross_entropy64(dense64(np.maximum(zb, 0), model.get_layer("out"), "softmax"), y).mean()
    assert abs(batch_loss - loss) > 1e-2


class ValidationSeen(Callback):
    """At on_epoch_end: the logged val_loss and the float64 loss of the
    validation data under the weights of that moment."""

    def __init__(self, xv, yv, forward64):
        super().__init__()
        self.xv, self.yv, self.forward64 = xv, yv, forward64
        self.pairs = []

    def on_epoch_end(self, epoch, logs=None):
        want = cross_entropy64(self.forward64(self.model, self.xv), self.yv).mean()
        self.pairs.append((logs.get("val_loss"), want))


def test_on_epoch_end_sees_the_validation_loss_of_the_epoch_computed_in_inference_mode():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = rng.integers(0, 3, 96).astype(np.int32)
    xv = rng.normal(size=(40, 6)).astype(np.float32)
    yv = rng.integers(0, 3, 40).astype(np.int32)
    model = dropout_model()
    seen = ValidationSeen(xv, yv, dropout_forward64)
    h = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(xv, yv), callbacks=[seen], seed=0)
    assert len(seen.pairs) == 3
    for got, want in seen.pairs:
        assert got is not None, "on_epoch_end ran before the validation results were in the logs"
        assert got == pytest.approx(want, rel=1e-5)
    assert h.history["val_loss"] == [got for got, _ in seen.pairs]
    assert len(set(h.history["val_loss"])) == 3  # the weights moved between epochs


def test_validation_during_fit_uses_batchnorm_moving_statistics():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    xv = (rng.normal(size=(32, 5)) * 2.0 + 1.5).astype(np.float32)
    yv = rng.integers(0, 3, 32).astype(np.int32)
    model = bn_model()
    seen = ValidationSeen(xv, yv, bn_forward64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(xv, yv), callbacks=[seen], seed=0)
    for got, want in seen.pairs:
        assert got == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------- schedules
def test_a_schedule_sets_the_rate_of_each_update_at_its_zero_based_step():
    """SGD on loss = mean((x w - y)^2) with x = 1, y = 0 and one weight: the
    gradient is 2 w, so w_{k+1} = w_k (1 - 2 lr(k)), lr evaluated at the
    step k = 0, 1, 2, ... of the update (Keras's optimizer.iterations)."""
    sched = dc.schedules.PiecewiseConstantDecay([0, 2], [0.3, 0.1, 0.05])  # 0.3 at step 0 only
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input((1,)), L.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=dc.optimizers.SGD(sched), loss="mse")
    x, y = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    w, seen = 1.0, []
    for k in range(5):
        model.train_on_batch(x, y)
        w *= 1.0 - 2.0 * [0.3, 0.1, 0.1, 0.05, 0.05][k]
        seen.append(float(model.get_weights()[0][0, 0]))
        assert seen[-1] == pytest.approx(w, rel=1e-6), f"update {k}"


def test_exponential_decay_drives_sgd_at_the_step_of_each_update():
    sched = dc.schedules.ExponentialDecay(0.2, decay_steps=1, decay_rate=0.5)
    opt = dc.optimizers.SGD(sched)
    w = np.ones(3, np.float32)
    want = np.ones(3)
    for k in range(6):
        opt.apply(w, np.ones(3, np.float32))
        want -= 0.2 * 0.5 ** k
        np.testing.assert_allclose(w, want, rtol=1e-6, err_msg=f"update {k}")


def test_one_cycle_rates_and_momenta_drive_sgd_at_the_step_of_each_update():
    """1cycle over 10 steps from 0.04 (max 1.0, start_div 25): float64 SGD
    with momentum following the schedule's formulas by hand."""
    total, max_lr, lo = 10, 1.0, 1.0 / 25
    a = 0.3 * total

    def rate(s):
        if s <= a:
            return lo + (max_lr - lo) * s / a
        if s <= 2 * a:
            return max_lr - (max_lr - lo) * (s - a) / a
        end = lo / 1e4
        return lo - (lo - end) * min(s - 2 * a, total - 2 * a) / (total - 2 * a)  # then stays at the end

    def mom(s):
        if s <= a:
            return 0.95 - 0.1 * s / a
        if s <= 2 * a:
            return 0.85 + 0.1 * (s - a) / a
        return 0.95

    opt = dc.optimizers.SGD(dc.schedules.OneCycle(max_lr, total, pct_start=0.3))
    w = np.ones(2, np.float32)
    w64, v64 = np.ones(2), np.zeros(2)
    for k in range(12):
        g = np.array([1.0, -0.5])
        opt.apply(w, g.astype(np.float32))
        v64 = mom(k) * v64 - rate(k) * g
        w64 = w64 + v64
        np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6, err_msg=f"update {k}")


# ----------------------------------------------------------------- dropout
@pytest.mark.parametrize("noise_shape", [None, (None, 1)], ids=["elementwise", "noise_shape"])
def test_dropout_keeps_units_scaled_by_one_over_one_minus_rate(noise_shape):
    rate = 0.3
    layer = L.Dropout(rate, noise_shape=noise_shape, seed=5)
    x = (np.arange(1, 1 + 400 * 16, dtype=np.float32).reshape(400, 16) / 100).astype(np.float32)
    y = layer(x, training=True)
    kept = y != 0
    # rtol: masks use 16-bit draws, so the effective rate is within 2^-17 of rate (src/ops/dropout.h)
    np.testing.assert_allclose(y[kept], x[kept] / (1.0 - rate), rtol=2e-5)
    assert abs(kept.mean() - (1 - rate)) < 0.03
    if noise_shape is not None:
        assert np.all(kept.all(axis=1) | ~kept.any(axis=1))  # one draw per row
    np.testing.assert_array_equal(layer(x, training=False), x)
