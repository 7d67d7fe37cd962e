"""Optimizers against float64 NumPy transcriptions of Keras's update formulas,
against PyTorch where the algorithm is the same, and the fused step's extras
(penalties, clipping, weight decay, one C++ call, state round trips)."""
import math

import numpy as np
import pytest

import deepcore as dc
from deepcore import optimizers as O

STEPS = 100


# ----------------------------------------------------------------- references
def reference(kind, cfg, w0, grads_fn, steps=STEPS, segments=None, clip=None, wd=0.0):
    """Float64 transcription of Keras 3's update rules (one array, all steps).

    grads_fn(t, w) -> raw gradient (float64). segments: list of (lo, hi, l1, l2).
    clip: ("value"|"norm"|"global", c)."""
    w = w0.astype(np.float64).copy()
    n = w.size
    segs = segments or [(0, n, 0.0, 0.0)]
    z = np.zeros(n)
    s = {"m": z.copy(), "v": z.copy(), "vh": z.copy(), "u": z.copy(), "mo": z.copy(), "c": z.copy(),
         "acc": np.full(n, cfg.get("initial_accumulator_value", 0.1)), "lin": z.copy()}
    u_product = 1.0
    for t in range(1, steps + 1):
        g = grads_fn(t, w).astype(np.float64).copy()
        for lo, hi, l1, l2 in segs:
            g[lo:hi] += 2 * l2 * w[lo:hi] + l1 * np.sign(w[lo:hi])
        if clip:
            how, c = clip
            if how == "value":
                g = np.clip(g, -c, c)
            elif how == "norm":
                for lo, hi, _, _ in segs:
                    nrm = np.linalg.norm(g[lo:hi])
                    g[lo:hi] *= c / max(nrm, c)
            else:
                g *= c / max(np.linalg.norm(g), c)
        lr = cfg.get("learning_rate", 0.01 if kind == "sgd" else 0.001)
        w = w - lr * wd * w
        b1, b2, eps = cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999), cfg.get("epsilon", 1e-7)
        if kind == "sgd":
            mu = cfg.get("momentum", 0.0)
            if mu == 0:
                w = w - lr * g
            else:
                s["m"] = mu * s["m"] - lr * g
                w = w + (mu * s["m"] - lr * g if cfg.get("nesterov") else s["m"])
        elif kind == "adagrad":
            s["acc"] = s["acc"] + g * g
            w = w - lr * g / np.sqrt(s["acc"] + eps)
        elif kind == "rmsprop":
            rho, mu = cfg.get("rho", 0.9), cfg.get("momentum", 0.0)
            s["v"] = rho * s["v"] + (1 - rho) * g * g
            if cfg.get("centered"):
                s["c"] = rho * s["c"] + (1 - rho) * g
                den = s["v"] - s["c"] ** 2 + eps
            else:
                den = s["v"] + eps
            inc = lr * g / np.sqrt(den)
            if mu > 0:
                s["mo"] = mu * s["mo"] + inc
                w = w - s["mo"]
            else:
                w = w - inc
        elif kind in ("adam", "adamw"):
            s["m"] += (g - s["m"]) * (1 - b1)
            s["v"] += (g * g - s["v"]) * (1 - b2)
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            v = s["v"]
            if cfg.get("amsgrad"):
                s["vh"] = np.maximum(s["vh"], s["v"])
                v = s["vh"]
            w = w - alpha * s["m"] / (np.sqrt(v) + eps)
        elif kind == "adamax":
            s["m"] += (g - s["m"]) * (1 - b1)
            s["u"] = np.maximum(b2 * s["u"], np.abs(g))
            w = w - lr / (1 - b1 ** t) * s["m"] / (s["u"] + eps)
        elif kind == "nadam":
            u_t = b1 * (1 - 0.5 * 0.96 ** t)  # Keras 3's momentum schedule
            u_t1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
            u_product_t = u_product * u_t
            u_product_t1 = u_product_t * u_t1
            u_product = u_product_t
            s["m"] += (g - s["m"]) * (1 - b1)
            s["v"] += (g * g - s["v"]) * (1 - b2)
            m_hat = u_t1 * s["m"] / (1 - u_product_t1) + (1 - u_t) * g / (1 - u_product_t)
            v_hat = s["v"] / (1 - b2 ** t)
            w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        elif kind == "ftrl":
            p = cfg.get("learning_rate_power", -0.5)
            l1 = cfg.get("l1_regularization_strength", 0.0)
            l2 = cfg.get("l2_regularization_strength", 0.0) + cfg.get("beta", 0.0) / (2 * lr)
            shrink = cfg.get("l2_shrinkage_regularization_strength", 0.0)
            new_acc = s["acc"] + g * g
            s["lin"] += g + 2 * shrink * w - (new_acc ** -p - s["acc"] ** -p) / lr * w
            quad = new_acc ** -p / lr + 2 * l2
            w = np.where(np.abs(s["lin"]) > l1, (np.clip(s["lin"], -l1, l1) - s["lin"]) / quad, 0.0)
            s["acc"] = new_acc
    return w


def quadratic_problem(n, seed):
    """Gradients of a noisy quadratic: g = a * (w - target) + noise_t."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, n)
    target = rng.normal(size=n)
    noise = rng.normal(scale=0.3, size=(STEPS + 1, n))
    w0 = rng.normal(size=n).astype(np.float32)

    def grads(t, w):
        return a * (w - target) + noise[t]

    return w0, grads


def run_deepcore(opt, w0, grads_fn, steps=STEPS, segments=None):
    w = w0.astype(np.float32).copy()
    g = np.empty_like(w)
    for t in range(1, steps + 1):
        g[...] = grads_fn(t, w.astype(np.float64))
        opt.apply(w, g, segments)
    return w


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


CASES = [
    ("sgd", {"learning_rate": 0.05}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adagrad", {"learning_rate": 0.1}),
    ("adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("rmsprop", {"learning_rate": 0.01}),
    ("rmsprop", {"learning_rate": 0.01, "momentum": 0.8}),
    ("rmsprop", {"learning_rate": 0.01, "centered": True}),
    ("rmsprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.5, "rho": 0.8}),
    ("adam", {"learning_rate": 0.02}),
    ("adam", {"learning_rate": 0.02, "amsgrad": True, "beta_1": 0.8, "beta_2": 0.99}),
    ("adamw", {"learning_rate": 0.02, "weight_decay": 0.05}),
    ("adamax", {"learning_rate": 0.02}),
    ("nadam", {"learning_rate": 0.02}),
    ("nadam", {"learning_rate": 0.02, "beta_1": 0.95, "epsilon": 1e-4}),
    ("ftrl", {"learning_rate": 0.1}),
    ("ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1}),
    ("ftrl", {"learning_rate": 0.1, "l2_shrinkage_regularization_strength": 0.1, "beta": 0.5,
              "learning_rate_power": -0.7}),
]

CLASSES = {"sgd": O.SGD, "adagrad": O.Adagrad, "rmsprop": O.RMSprop, "adam": O.Adam, "adamw": O.AdamW,
           "adamax": O.Adamax, "nadam": O.Nadam, "ftrl": O.Ftrl}


@pytest.mark.parametrize("kind,cfg", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_matches_keras_formula_over_100_steps(kind, cfg):
    w0, grads = quadratic_problem(257, seed=len(kind) + len(cfg))
    ours = run_deepcore(CLASSES[kind](**cfg), w0, grads)
    ref = reference(kind, cfg, w0, grads, wd=cfg.get("weight_decay", 0.0))
    assert rel_err(ours, ref) < 1e-5
    assert not np.allclose(ours, w0, atol=1e-3)  # it moved


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["adam", "rmsprop", "sgd"])
def test_large_tensor_parallel_path_matches_formula(kind, threads):
    # Above the optimizer's parallel threshold (1 << 17) the step is split across threads.
    rng = np.random.default_rng(3)
    n = (1 << 19) + 37
    w0 = rng.normal(size=n).astype(np.float32)
    gs = rng.normal(size=(4, n))
    cfg = {"learning_rate": 0.01, "momentum": 0.9} if kind != "adam" else {"learning_rate": 0.01}
    before = dc.get_num_threads()
    dc.set_num_threads(threads)
    try:
        ours = run_deepcore(CLASSES[kind](**cfg), w0, lambda t, w: gs[t - 1], steps=4)
    finally:
        dc.set_num_threads(before)
    ref = reference(kind, cfg, w0, lambda t, w: gs[t - 1], steps=4)
    assert rel_err(ours, ref) < 1e-5


# ------------------------------------------------------- penalties, clipping
SEGS = [(0, 100, 0.0, 0.0), (100, 160, 0.01, 0.0), (160, 257, 0.0, 0.05), (257, 300, 0.02, 0.03)]


def segment_arrays(segs):
    offsets = np.array([s[0] for s in segs] + [segs[-1][1]], dtype=np.int64)
    return offsets, np.array([s[2] for s in segs], np.float32), np.array([s[3] for s in segs], np.float32)


@pytest.mark.parametrize("clip", [None, ("value", 0.3), ("norm", 0.5), ("global", 1.0)])
@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
def test_penalties_and_clipping_fused_into_the_step(kind, clip):
    w0, grads = quadratic_problem(300, seed=7)
    kw = {} if clip is None else {{"value": "clipvalue", "norm": "clipnorm", "global": "global_clipnorm"}[clip[0]]: clip[1]}
    cfg = {"learning_rate": 0.03}
    ours = run_deepcore(CLASSES[kind](**cfg, **kw), w0, grads, segments=segment_arrays(SEGS))
    ref = reference(kind, cfg, w0, grads, segments=SEGS, clip=clip)
    assert rel_err(ours, ref) < 1e-5


def test_clipping_changes_the_result():
    # Guards the test above against clipping that silently does nothing.
    w0, grads = quadratic_problem(300, seed=7)
    plain = run_deepcore(O.SGD(0.03), w0, grads)
    clipped = run_deepcore(O.SGD(0.03, global_clipnorm=0.1), w0, grads)
    assert rel_err(clipped, plain) > 1e-2


def test_step_returns_the_penalty_at_the_weights_before_the_update():
    rng = np.random.default_rng(1)
    w = rng.normal(size=300).astype(np.float32)
    before = w.astype(np.float64).copy()
    offsets, l1, l2 = segment_arrays(SEGS)
    penalty = O.SGD(0.1).apply(w, rng.normal(size=300).astype(np.float32), (offsets, l1, l2))
    expected = sum(a * np.abs(before[lo:hi]).sum() + b * np.square(before[lo:hi]).sum() for lo, hi, a, b in SEGS)
    assert penalty == pytest.approx(expected, rel=1e-6)


def test_weight_decay_on_sgd_is_decoupled():
    w0, grads = quadratic_problem(64, seed=2)
    ours = run_deepcore(O.SGD(0.05, momentum=0.9, weight_decay=0.1), w0, grads)
    ref = reference("sgd", {"learning_rate": 0.05, "momentum": 0.9}, w0, grads, wd=0.1)
    assert rel_err(ours, ref) < 1e-5


def test_one_cpp_call_per_step(monkeypatch):
    from deepcore import backend
    calls = []
    real = backend.ops()

    class Spy:
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name == "optimizer_step":
                def counted(*a, **k):
                    calls.append(1)
                    return attr(*a, **k)
                return counted
            return attr

    import deepcore.optimizers as opt_mod
    monkeypatch.setattr(opt_mod, "ops", lambda *tensors: Spy())
    model = dc.Sequential([dc.Input((8,)), dc.Dense(16, activation="relu", kernel_regularizer="l2"),
                           dc.Dense(16, activation="relu"), dc.Dense(3, activation="softmax")])
    model.compile(optimizer=O.Adam(clipnorm=1.0), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64), batch_size=16, epochs=1,
              verbose=0)
    assert len(calls) == 4  # 4 batches, 6 variables: one call each step


# ------------------------------------------------------------------- PyTorch
torch_cases = [
    ("sgd", {"learning_rate": 0.05}, lambda t, p: t.optim.SGD(p, lr=0.05)),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9}, lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("adagrad", {"learning_rate": 0.1, "epsilon": 0.0, "initial_accumulator_value": 0.1},
     lambda t, p: t.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=0.0)),
    ("rmsprop", {"learning_rate": 0.01, "rho": 0.9, "epsilon": 0.0},
     lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=0.0)),
    ("rmsprop", {"learning_rate": 0.01, "rho": 0.9, "epsilon": 0.0, "momentum": 0.7, "centered": True},
     lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=0.0, momentum=0.7, centered=True)),
    ("adam", {"learning_rate": 0.02, "epsilon": 0.0}, lambda t, p: t.optim.Adam(p, lr=0.02, eps=0.0)),
    ("adam", {"learning_rate": 0.02, "epsilon": 0.0, "amsgrad": True},
     lambda t, p: t.optim.Adam(p, lr=0.02, eps=0.0, amsgrad=True)),
    ("adamw", {"learning_rate": 0.02, "epsilon": 0.0, "weight_decay": 0.05},
     lambda t, p: t.optim.AdamW(p, lr=0.02, eps=0.0, weight_decay=0.05)),
    ("adamax", {"learning_rate": 0.02, "epsilon": 0.0}, lambda t, p: t.optim.Adamax(p, lr=0.02, eps=0.0)),
    ("nadam", {"learning_rate": 0.02, "epsilon": 0.0},
     lambda t, p: t.optim.NAdam(p, lr=0.02, eps=0.0, momentum_decay=1.0)),  # Keras 3's schedule
]


@pytest.mark.parametrize("kind,cfg,make", torch_cases, ids=[f"{c[0]}-{i}" for i, c in enumerate(torch_cases)])
def test_matches_pytorch(kind, cfg, make):
    torch = pytest.importorskip("torch")
    w0, grads = quadratic_problem(129, seed=11)
    ours = run_deepcore(CLASSES[kind](**cfg), w0, grads)
    p = torch.nn.Parameter(torch.tensor(w0.astype(np.float64)))
    opt = make(torch, [p])
    for t in range(1, STEPS + 1):
        p.grad = torch.tensor(grads(t, p.detach().numpy().copy()))
        opt.step()
    assert rel_err(ours, p.detach().numpy()) < 1e-5


# --------------------------------------------------------------- schedules
def test_schedule_learning_rate_is_evaluated_per_step():
    seen = []

    def schedule(step):
        seen.append(step)
        return 0.1 / (1 + step)

    opt = O.SGD(schedule)
    w0, grads = quadratic_problem(10, seed=0)
    ours = run_deepcore(opt, w0, grads, steps=5)
    w = w0.astype(np.float64)
    for t in range(1, 6):
        w = w - 0.1 / t * grads(t, w)
    assert seen == [0, 1, 2, 3, 4]
    assert rel_err(ours, w) < 1e-6


class _Cycle:
    cycle_momentum = True

    def __call__(self, step):
        return 0.01

    def momentum(self, step):
        return [0.95, 0.85, 0.9][step % 3]


def test_momentum_driven_by_a_cycling_schedule():
    sgd = O.SGD(_Cycle())  # momentum 0 at construction: the schedule's momentum takes over
    adam = O.Adam(_Cycle())
    w = np.ones(4, np.float32)
    for step in range(4):
        sgd.apply(w, np.ones(4, np.float32))
        adam.apply(w.copy(), np.ones(4, np.float32))
        assert sgd.momentum == _Cycle().momentum(step)
        assert adam.beta_1 == _Cycle().momentum(step)
    assert sgd.velocity is not None and np.all(sgd.velocity != 0)


# ------------------------------------------------------------------- state
@pytest.mark.parametrize("name", list(CLASSES))
def test_state_round_trip_resumes_exactly(name):
    w0, grads = quadratic_problem(50, seed=5)
    straight = run_deepcore(CLASSES[name](), w0, grads, steps=20)
    first = CLASSES[name]()
    mid = run_deepcore(first, w0, grads, steps=10)
    state = first.get_state()
    second = CLASSES[name]()
    second.set_state(state)  # before build: kept until the slots exist
    w = mid.copy()
    for t in range(11, 21):
        second.apply(w, grads(t, w.astype(np.float64)).astype(np.float32))
    assert second.iterations == 20
    np.testing.assert_array_equal(w, straight)


def _mlp(seed=0):
    dc.set_random_seed(seed)
    return dc.Sequential([dc.Input((12,)), dc.Dense(24, activation="relu", name="h1",
                                                    kernel_regularizer=dc.regularizers.l2(1e-3)),
                          dc.Dense(4, activation="softmax", name="out")])


@pytest.mark.parametrize("opt", ["adam", "nadam", "rmsprop", "ftrl"])
def test_interrupt_and_resume_equals_straight_training(tmp_path, opt):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    y = (x[:, :4].argmax(1)).astype(np.int32)
    straight = _mlp()
    straight.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0, seed=3)

    first = _mlp()
    first.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    first.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=3)
    path = tmp_path / "ckpt.safetensors"
    first.save_weights(path)

    resumed = _mlp(seed=99)  # different initial weights: everything must come from the file
    resumed.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    resumed.load_weights(path)
    assert resumed.optimizer.iterations == first.optimizer.iterations
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0, seed=3)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_state_that_does_not_fit_is_skipped_with_a_warning_and_weights_load(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 12)).astype(np.float32), rng.integers(0, 4, 32)
    m = _mlp()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    m.save_weights(tmp_path / "w.safetensors")
    other = _mlp(seed=5)
    other.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="Adam state.*SGD"):
        other.load_weights(tmp_path / "w.safetensors")
    for a, b in zip(m.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    frozen = _mlp(seed=6)  # transfer learning: same weights, fewer trainable ones
    frozen.layers[0].trainable = False
    frozen.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="trainable weights"):
        frozen.load_weights(tmp_path / "w.safetensors")
    for a, b in zip(m.get_weights(), frozen.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_slots_follow_their_variables_when_the_trainable_set_changes():
    # Two layers of equal size: freezing one and unfreezing the other keeps the
    # flat size, so slots keyed by size alone would hand d1's velocity to d0.
    dc.set_random_seed(0)
    m = dc.Sequential([dc.Input((4,)), dc.Dense(4, name="d0"), dc.Dense(4, name="d1")])
    m.compile(optimizer=O.SGD(0.1, momentum=0.9), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.normal(size=(16, 4)).astype(np.float32)
    m.layers[0].trainable = False
    m.fit(x, y, epochs=2, verbose=0)
    v_d1 = m.optimizer.velocity.copy()
    assert v_d1.any()
    m.layers[0].trainable = True  # unfreeze: d0 is packed first, d1 moves
    m._ensure_packed()
    n0 = 4 * 4 + 4
    np.testing.assert_array_equal(m.optimizer.velocity[n0:], v_d1)  # d1 keeps its own velocity
    assert not m.optimizer.velocity[:n0].any()  # d0 starts fresh
    m.fit(x, y, epochs=1, verbose=0)
    v_d0 = m.optimizer.velocity[:n0].copy()
    m.layers[1].trainable = False  # same flat size as before, different variable
    m._ensure_packed()
    np.testing.assert_array_equal(m.optimizer.velocity, v_d0)


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", list(CLASSES.values()))
@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_bad_learning_rates_rejected(cls, lr):
    with pytest.raises(ValueError, match="learning_rate"):
        cls(learning_rate=lr)


@pytest.mark.parametrize("cls", [O.Adam, O.AdamW, O.Adamax, O.Nadam])
@pytest.mark.parametrize("arg", ["beta_1", "beta_2"])
@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, float("nan")])
def test_betas_outside_0_1_rejected(cls, arg, value):
    with pytest.raises(ValueError, match=arg):
        cls(**{arg: value})


@pytest.mark.parametrize("kw", [{"rho": 1.0}, {"epsilon": -1.0}, {"momentum": 2.0}])
def test_rmsprop_bad_hyperparameters(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        O.RMSprop(**kw)


def test_more_than_one_clipping_argument_rejected():
    with pytest.raises(ValueError, match="only one of clipnorm, clipvalue and global_clipnorm"):
        O.Adam(clipnorm=1.0, clipvalue=0.5)


@pytest.mark.parametrize("kw", [{"clipnorm": -1.0}, {"clipvalue": float("nan")}, {"weight_decay": -0.1}])
def test_negative_clip_or_decay_rejected(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        O.SGD(**kw)


@pytest.mark.parametrize("kw", [{"learning_rate_power": 0.5}, {"l1_regularization_strength": -1.0},
                                {"initial_accumulator_value": -0.1}])
def test_ftrl_bad_hyperparameters(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        O.Ftrl(**kw)


def test_schedule_returning_non_finite_rate_raises_naming_the_step():
    opt = O.Adam(lambda step: float("nan") if step == 2 else 0.01)
    w, g = np.ones(3, np.float32), np.ones(3, np.float32)
    opt.apply(w, g)
    opt.apply(w, g)
    with pytest.raises(ValueError, match="step 2"):
        opt.apply(w, g)
    assert np.all(np.isfinite(w))


def test_binding_rejects_bad_arrays():
    core = dc.backend.ops()
    h = core.OptParams()
    h.kind = 3
    w = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="needs the m"):
        core.optimizer_step(h, w, w.copy(), None, None, None, None, None, None)
    with pytest.raises(TypeError, match="float32"):
        core.optimizer_step(h, w, np.ones(8), np.zeros(8, np.float32), np.zeros(8, np.float32), None,
                            None, None, None)
    with pytest.raises(ValueError, match="shape"):
        core.optimizer_step(h, w, np.ones(7, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32),
                            None, None, None, None)
    h.kind = 0
    with pytest.raises(ValueError, match="offsets must start at 0 and end at"):
        core.optimizer_step(h, w, w.copy(), None, None, None, np.array([0, 4], np.int64), None, None)
    with pytest.raises(ValueError, match="l1 must have shape"):
        core.optimizer_step(h, w, w.copy(), None, None, None, np.array([0, 4, 8], np.int64),
                            np.zeros(3, np.float32), None)
    h.kind = 42
    with pytest.raises(ValueError, match="unknown optimizer kind"):
        core.optimizer_step(h, w, w.copy(), None, None, None, None, None, None)
    h.kind, h.lr = 0, float("nan")
    with pytest.raises(ValueError, match="learning rate"):
        core.optimizer_step(h, w, w.copy(), None, None, None, None, None, None)


# --------------------------------------------------------------- config / 1cycle
@pytest.mark.parametrize("name", list(CLASSES))
def test_config_round_trip(name):
    opt = CLASSES[name](learning_rate=0.123, clipnorm=2.0)
    again = type(opt).from_config(opt.get_config())
    assert again.get_config() == opt.get_config()


def test_cycled_momentum_does_not_leak_into_config():
    opt = O.SGD(dc.schedules.OneCycle(max_lr=0.1, total_steps=20), momentum=0.0)
    w = np.ones(3, np.float32)
    for _ in range(5):
        opt.apply(w, np.ones(3, np.float32))
    assert opt.momentum != 0.0 and opt.get_config()["momentum"] == 0.0


def test_nadam_failed_step_leaves_its_state_unchanged():
    opt = O.Nadam()
    w = np.ones(3, np.float32)
    opt.apply(w, np.ones(3, np.float32))
    before = opt.get_state()
    with pytest.raises(TypeError):
        opt.apply(w, np.ones(3))  # float64 gradient: the binding refuses it
    after = opt.get_state()
    assert after["u_product"][0] == before["u_product"][0] and opt.iterations == 1


def test_config_round_trip_with_a_schedule():
    sched = dc.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    opt = O.Adam(sched)
    again = O.Adam.from_config(opt.get_config())
    assert isinstance(again._learning_rate, dc.schedules.ExponentialDecay)
    again.iterations = opt.iterations = 25
    assert again.learning_rate == pytest.approx(opt.learning_rate)
    with pytest.raises(TypeError, match="plain callable"):
        O.SGD(lambda step: 0.1).get_config()


@pytest.mark.parametrize("make,attr", [(lambda s: O.SGD(s), "momentum"), (lambda s: O.Adam(s), "beta_1")])
def test_one_cycle_drives_rate_and_momentum_in_training(make, attr):
    steps = 40
    sched = dc.schedules.OneCycle(max_lr=0.05, total_steps=steps)
    model = dc.Sequential([dc.Input((6,)), dc.Dense(8, activation="relu"), dc.Dense(2, activation="softmax")])
    model.compile(optimizer=make(sched), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(160, 6)).astype(np.float32), rng.integers(0, 2, 160)
    rates, moms = [], []
    cb = dc.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: (
        rates.append(sched(model.optimizer.iterations - 1)), moms.append(getattr(model.optimizer, attr))))
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[cb])
    assert len(moms) == steps
    peak = int(np.argmax(rates))
    assert int(np.argmin(moms)) == peak  # momentum lowest where the rate peaks
    assert moms[0] == pytest.approx(0.95, abs=0.01) and moms[peak] == pytest.approx(0.85, abs=0.01)
    assert rates[peak] == pytest.approx(0.05, rel=0.05)


def test_buffer_shape_whose_byte_count_overflows_is_rejected():
    with pytest.raises(ValueError, match="too large"):
        dc.backend.ops().Buffer([2**62 + 1], "float32")
