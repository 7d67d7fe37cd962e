"""Optimizer state: AMSGrad's running maximum against float64, and exact
resume of every optimizer configuration that keeps state.

AMSGrad divides by sqrt(vhat), vhat the running maximum of v; the two differ
only once v falls, so the references here feed gradients that shrink over
time and check that vhat > v before comparing (Keras's formulas, float64).

Resume: N steps, the state saved (save_weights/load_weights, or
optimizer.get_state/set_state) and restored into a fresh model built from
other initial weights, M more steps; the weights, the BatchNorm moving
statistics, every slot and the step count must equal, bit for bit, those of
an uninterrupted N + M run on the same batches. Each case also checks that
the restored state matters: a model given the weights alone ends elsewhere.
"""
import math

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core
from deepcore import optimizers as O
from deepcore import schedules as S

L = dc.layers


# ---------------------------------------------------------------- AMSGrad
def amsgrad_reference(w0, grads, lr, b1, b2, eps):
    """Keras 3's Adam(amsgrad=True) in float64: per step (t = 1, 2, ...)
    m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); vhat = max(vhat, v);
    w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(vhat) + eps).
    Returns the (w, m, v, vhat) after every step."""
    w = w0.astype(np.float64).copy()
    m, v, vhat = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        vhat = np.maximum(vhat, v)
        w = w - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(vhat) + eps)
        out.append((w.copy(), m.copy(), v.copy(), vhat.copy()))
    return out


def shrinking_gradients(n, steps, seed):
    """Gradients whose size halves every step (random signs and scales), so
    v rises for a step or two and then falls below its running maximum."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, n)
    return [(rng.choice([-1.0, 1.0], n) * scale * 0.5 ** t * rng.uniform(0.8, 1.2, n)).astype(np.float32)
            for t in range(steps)]


AMS = dict(lr=0.05, b1=0.8, b2=0.9, eps=1e-7)


def test_amsgrad_optimizer_divides_by_the_running_maximum_of_v_over_shrinking_gradients():
    n, steps = 64, 8
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=n).astype(np.float32)
    grads = shrinking_gradients(n, steps, seed=1)
    ref = amsgrad_reference(w0, grads, AMS["lr"], AMS["b1"], AMS["b2"], AMS["eps"])
    opt = O.Adam(AMS["lr"], beta_1=AMS["b1"], beta_2=AMS["b2"], epsilon=AMS["eps"], amsgrad=True)
    w = w0.copy()
    for t, (g, (w64, m64, v64, vh64)) in enumerate(zip(grads, ref), start=1):
        opt.apply(w, g)
        state = opt.get_state()
        np.testing.assert_allclose(state["m"], m64, rtol=1e-5, atol=1e-7, err_msg=f"m, step {t}")
        np.testing.assert_allclose(state["v"], v64, rtol=1e-5, err_msg=f"v, step {t}")
        np.testing.assert_allclose(state["vhat"], vh64, rtol=1e-5, err_msg=f"vhat, step {t}")
        np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6, err_msg=f"w, step {t}")
    # The case is one where vhat matters: at the end vhat is far above v everywhere.
    _, _, v64, vh64 = ref[-1]
    assert np.all(vh64 > 1.5 * v64)
    assert np.max(np.abs(ref[-1][0] - ref[-2][0])) > 1e-3  # and the last steps still move w


@pytest.mark.parametrize("n", [1000, (1 << 17) + 7], ids=["serial", "parallel"])
def test_amsgrad_kernel_step_matches_float64_when_vhat_exceeds_v(n):
    """_core.optimizer_step with kind Adam, amsgrad and the step coefficient
    c1 = lr sqrt(1 - b2^t) / (1 - b1^t) computed here."""
    steps = 6
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=n).astype(np.float32)
    grads = shrinking_gradients(n, steps, seed=3)
    ref = amsgrad_reference(w0, grads, AMS["lr"], AMS["b1"], AMS["b2"], AMS["eps"])
    w = w0.copy()
    m, v, vhat = (np.zeros(n, np.float32) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        h = _core.OptParams()
        h.kind, h.lr, h.amsgrad = 3, AMS["lr"], True  # 3: Adam (src/ops/optimizers.h)
        h.beta1, h.beta2, h.epsilon = AMS["b1"], AMS["b2"], AMS["eps"]
        h.c1 = AMS["lr"] * math.sqrt(1 - AMS["b2"] ** t) / (1 - AMS["b1"] ** t)
        _core.optimizer_step(h, w, g, m, v, vhat, None, None, None)
    w64, m64, v64, vh64 = ref[-1]
    assert np.all(vh64 > 1.3 * v64)
    np.testing.assert_allclose(vhat, vh64, rtol=1e-5)
    np.testing.assert_allclose(v, v64, rtol=1e-5)
    np.testing.assert_allclose(m, m64, rtol=1e-5, atol=1e-7)  # m cancels where the signs alternate
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- resume
# name: (optimizer factory, the slots it uses: in its state, and nonzero after N steps)
CONFIGS = {
    "sgd-momentum": (lambda: O.SGD(0.05, momentum=0.9), {"velocity"}),
    "sgd-nesterov": (lambda: O.SGD(0.05, momentum=0.9, nesterov=True), {"velocity"}),
    "sgd-1cycle": (lambda: O.SGD(S.OneCycle(0.1, total_steps=12)), {"velocity"}),
    "adagrad": (lambda: O.Adagrad(0.05), {"accumulator"}),
    "rmsprop": (lambda: O.RMSprop(0.01), {"velocity"}),
    "rmsprop-momentum": (lambda: O.RMSprop(0.01, momentum=0.5), {"velocity", "momentum"}),
    "rmsprop-centered": (lambda: O.RMSprop(0.01, centered=True), {"velocity", "average_gradient"}),
    "rmsprop-centered-momentum": (lambda: O.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True),
                                  {"velocity", "momentum", "average_gradient"}),
    "adam": (lambda: O.Adam(0.01), {"m", "v"}),
    "adam-schedule": (lambda: O.Adam(S.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.7)), {"m", "v"}),
    "adam-amsgrad": (lambda: O.Adam(0.01, beta_2=0.9, amsgrad=True), {"m", "v", "vhat"}),
    "adamw": (lambda: O.AdamW(0.01, weight_decay=0.05), {"m", "v"}),
    "adamw-amsgrad": (lambda: O.AdamW(0.01, weight_decay=0.05, beta_2=0.9, amsgrad=True), {"m", "v", "vhat"}),
    "adamax": (lambda: O.Adamax(0.01), {"m", "u"}),
    "nadam": (lambda: O.Nadam(0.01), {"m", "v"}),
    "ftrl": (lambda: O.Ftrl(0.1, l1_regularization_strength=1e-3, l2_shrinkage_regularization_strength=0.01,
                            beta=0.1), {"accumulator", "linear"}),
}
N_STEPS, M_STEPS = 5, 4


def batches():
    """N + M fixed batches whose inputs shrink, so that the gradients do
    (AMSGrad's v falls below vhat) while every slot keeps changing."""
    rng = np.random.default_rng(11)
    out = []
    for k in range(N_STEPS + M_STEPS):
        x = (rng.normal(size=(16, 6)) * 0.7 ** k).astype(np.float32)
        y = rng.integers(0, 3, 16).astype(np.int32)
        out.append((x, y))
    return out


def model(make_opt, seed):
    dc.set_random_seed(seed)
    m = dc.Sequential([dc.Input((6,)), L.Dense(8, name="d", kernel_regularizer=dc.regularizers.l2(1e-3)),
                       L.BatchNormalization(momentum=0.8, name="bn"), L.Activation("relu", name="act"),
                       L.Dense(3, activation="softmax", name="out")], name="resume")
    m.compile(optimizer=make_opt(), loss="sparse_categorical_crossentropy")
    return m


def train(m, steps):
    for x, y in steps:
        m.train_on_batch(x, y)


def assert_same_run(a, b):
    for v, p, q in zip(a.weights, a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q, err_msg=v.path)
    sa, sb = a.optimizer.get_state(), b.optimizer.get_state()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"optimizer state {k!r}")


@pytest.fixture(scope="module")
def data():
    return batches()


def straight_and_first(make_opt, data):
    straight = model(make_opt, seed=0)
    train(straight, data)
    first = model(make_opt, seed=0)
    train(first, data[:N_STEPS])
    return straight, first


def check_state_matters(name, make_opt, first, straight, data):
    """Weights alone (a fresh optimizer) do not reproduce the run: the
    comparison above can fail when a slot or the step count is lost."""
    state = first.optimizer.get_state()
    assert int(state["iterations"][0]) == N_STEPS
    used = CONFIGS[name][1]
    assert used <= set(state)
    for k in used:
        assert np.any(state[k] != 0), f"slot {k!r} is still zero after {N_STEPS} steps"
    if "vhat" in state:
        assert np.any(state["vhat"] > state["v"])  # the case where vhat carries information
    weights_only = model(make_opt, seed=7)
    weights_only.set_weights(first.get_weights())
    train(weights_only, data[N_STEPS:])
    assert any(not np.array_equal(p, q) for p, q in zip(weights_only.get_weights(), straight.get_weights()))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_and_load_weights_resume_bit_for_bit(name, data, tmp_path):
    make_opt = CONFIGS[name][0]
    straight, first = straight_and_first(make_opt, data)
    path = tmp_path / "ckpt.safetensors"
    first.save_weights(path)
    resumed = model(make_opt, seed=99)  # other initial weights: everything must come from the file
    resumed.load_weights(path)
    assert resumed.optimizer.iterations == N_STEPS
    train(resumed, data[N_STEPS:])
    assert resumed.optimizer.iterations == N_STEPS + M_STEPS
    assert_same_run(straight, resumed)
    check_state_matters(name, make_opt, first, straight, data)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_get_state_and_set_state_resume_bit_for_bit(name, data):
    make_opt = CONFIGS[name][0]
    straight, first = straight_and_first(make_opt, data)
    resumed = model(make_opt, seed=99)
    resumed.set_weights(first.get_weights())
    resumed.optimizer.set_state(first.optimizer.get_state())  # before its slots exist: applied when built
    train(resumed, data[N_STEPS:])
    assert_same_run(straight, resumed)
    # and into an optimizer that has already stepped (its slots built): overwritten
    stepped = model(make_opt, seed=5)
    train(stepped, data[:2])
    stepped.set_weights(first.get_weights())
    stepped.optimizer.set_state(first.optimizer.get_state())
    train(stepped, data[N_STEPS:])
    assert_same_run(straight, stepped)
