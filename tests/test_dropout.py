"""Dropout and alpha dropout kernels (deepcore._core.dropout_* /
alpha_dropout_*) and the Dropout, AlphaDropout and MCDropout layers.

The reference masks come from a NumPy Philox4x32-10 written here from the
paper's round function (checked against Random123's known answers), keyed as
src/ops/dropout.h documents: word k of call c of (seed, stream) is lane k % 4
of block (c << 32) + k / 4; element i takes the low 16 bits of word i / 2 for
even i, the high 16 bits for odd i, and is kept iff they are
>= round(rate * 2^16).
So the reference does not use the code under test. Statistical checks use
>= 6 standard errors with fixed seeds: deterministic, yet a wrong rate or
scale fails them.
"""

import math

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from finite_differences import central_difference

MASK32 = np.uint64(0xFFFFFFFF)


# --------------------------------------------------------------------------
# NumPy Philox4x32-10 reference
# --------------------------------------------------------------------------
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Vectorized Philox4x32-10 (Salmon et al. 2011) on uint64 arrays holding 32-bit words."""
    c = [np.asarray(v, np.uint64) & MASK32 for v in (c0, c1, c2, c3)]
    k0, k1 = np.uint64(k0) & MASK32, np.uint64(k1) & MASK32
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    w0, w1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    for _ in range(10):
        p0, p1 = m0 * c[0], m1 * c[2]  # < 2^64: exact in uint64
        hi0, lo0, hi1, lo1 = p0 >> np.uint64(32), p0 & MASK32, p1 >> np.uint64(32), p1 & MASK32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0, k1 = (k0 + w0) & MASK32, (k1 + w1) & MASK32
    return c


def call_bits(n, seed, stream, call):
    """The 32 random bits of each of n elements for one call (ops/dropout.h's keying)."""
    blocks = (np.uint64(call) << np.uint64(32)) + np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32_10(blocks & MASK32, blocks >> np.uint64(32), np.uint64(stream & 0xFFFFFFFF),
                          np.uint64(stream >> 32), seed & 0xFFFFFFFF, seed >> 32)
    return np.stack(words, axis=1).reshape(-1)[:n]


def call_bits16(n, seed, stream, call):
    """The 16 random bits of each of n dropout elements for one call."""
    words = call_bits((n + 1) // 2, seed, stream, call)
    halves = np.stack([words & np.uint64(0xFFFF), words >> np.uint64(16)], axis=1).reshape(-1)
    return halves[:n]


def eff(rate):
    """The effective drop rate: round(rate * 2^16) / 2^16 (rate taken as float32)."""
    return math.floor(float(np.float32(rate)) * 2.0**16 + 0.5) / 2.0**16


def ref_keep(n, rate, seed, stream, call):
    rate = float(np.float32(rate))  # the kernels take rate as float32
    threshold = min(math.floor(rate * 2.0**16 + 0.5), 2**16)
    return call_bits16(n, seed, stream, call) >= np.uint64(threshold)


@pytest.mark.parametrize("counter,key,expected", [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
])
def test_numpy_philox_reference_matches_random123_known_answers(counter, key, expected):
    assert [int(v) for v in philox4x32_10(*counter, *key)] == expected


def run_forward(x, rate, seed, stream, call, kind="dropout"):
    y = np.full_like(x, np.nan)
    getattr(C, f"{kind}_forward")(x, y, rate, seed, stream, call)
    return y


def run_backward(dy, rate, seed, stream, call, kind="dropout"):
    dx = np.full_like(dy, np.nan)
    getattr(C, f"{kind}_backward")(dy, dx, rate, seed, stream, call)
    return dx


KEYS = [(0, 0, 0), (42, 7, 3), (2**64 - 1, 2**63 + 5, 2**32 - 1), (0x1234_5678_9ABC, 0x6472_6F70 << 32, 17)]


# --------------------------------------------------------------------------
# dropout: forward / backward against the float64 reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 4, 5, 37, 1000, 4099, 70001])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("key", KEYS)
def test_dropout_forward_matches_float64_reference(n, rate, key):
    x = np.random.default_rng(n).normal(size=n).astype(np.float32)
    y = run_forward(x, rate, *key)
    keep = ref_keep(n, rate, *key)
    ref = np.where(keep, x.astype(np.float64) / (1.0 - eff(rate)), 0.0)
    np.testing.assert_allclose(y, ref, rtol=3e-7, atol=0)


@pytest.mark.parametrize("rate", [0.2, 0.5])
@pytest.mark.parametrize("key", KEYS[:2])
def test_dropout_backward_applies_the_forward_mask(rate, key):
    n = 9999
    dy = np.random.default_rng(1).normal(size=n).astype(np.float32)
    dx = run_backward(dy, rate, *key)
    ref = np.where(ref_keep(n, rate, *key), dy.astype(np.float64) / (1.0 - eff(rate)), 0.0)
    np.testing.assert_allclose(dx, ref, rtol=3e-7, atol=0)


def test_dropout_mask_is_the_scaled_keep_mask():
    m = np.full(1001, np.nan, np.float32)
    C.dropout_mask(m, 0.3, 5, 6, 7)
    np.testing.assert_allclose(m, np.where(ref_keep(1001, 0.3, 5, 6, 7), 1 / (1 - eff(0.3)), 0.0), rtol=1e-7)


def test_dropout_backward_matches_finite_differences():
    # L(x) = sum(w * dropout(x)) is linear in x, so central differences of the
    # float32 kernel's forward are exact up to rounding even with a large step.
    rate, key = 0.4, (3, 4, 5)
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))

    def loss(a):
        return float(np.sum(w * run_forward(a.astype(np.float32), rate, *key)))

    fd = central_difference(loss, x, h=0.25)
    dx = run_backward(w.astype(np.float32), rate, *key)
    np.testing.assert_allclose(dx, fd, rtol=1e-5, atol=1e-5)
    assert (dx == 0).any() and (dx != 0).any()


def test_dropout_propagates_nan_like_a_multiplied_mask():
    x = np.full(64, np.nan, np.float32)
    assert np.isnan(run_forward(x, 0.5, 1, 2, 3)).all()


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_drops_the_stated_fraction_and_keeps_the_mean(rate):
    n = 2_000_000
    y = run_forward(np.ones(n, np.float32), rate, 11, 12, 13)
    dropped = np.mean(y == 0)
    assert abs(dropped - rate) < 6 * math.sqrt(rate * (1 - rate) / n)
    # E[y] = 1; sd of y is sqrt(rate / (1 - rate)).
    assert abs(y.astype(np.float64).mean() - 1.0) < 6 * math.sqrt(rate / (1 - rate) / n)
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / (1.0 - eff(rate))], rtol=3e-7)


def test_dropout_calls_and_streams_give_independent_masks():
    n = 200_000
    x = np.ones(n, np.float32)
    a, b, c = run_forward(x, 0.5, 1, 2, 0), run_forward(x, 0.5, 1, 2, 1), run_forward(x, 0.5, 1, 3, 0)
    for u, v in [(a, b), (a, c), (b, c)]:
        agree = np.mean((u == 0) == (v == 0))
        assert abs(agree - 0.5) < 6 * 0.5 / math.sqrt(n)


@pytest.mark.parametrize("kind", ["dropout", "alpha_dropout"])
def test_masks_are_identical_for_one_and_two_threads(kind):
    n = 3 * (1 << 20) + 13  # above kParallelThreshold, not a multiple of the chunk size
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    before = dc.get_num_threads()
    try:
        dc.set_num_threads(1)
        y1, dx1 = run_forward(x, 0.3, 9, 8, 7, kind), run_backward(x, 0.3, 9, 8, 7, kind)
        dc.set_num_threads(2)
        y2, dx2 = run_forward(x, 0.3, 9, 8, 7, kind), run_backward(x, 0.3, 9, 8, 7, kind)
    finally:
        dc.set_num_threads(before)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    if kind == "dropout":  # and both equal the reference
        np.testing.assert_array_equal(y1 == 0, ~ref_keep(n, 0.3, 9, 8, 7))


def test_dropout_writes_in_place():
    x = np.random.default_rng(0).normal(size=5000).astype(np.float32)
    ref = run_forward(x, 0.5, 1, 1, 1)
    C.dropout_forward(x, x, 0.5, 1, 1, 1)
    np.testing.assert_array_equal(x, ref)


# --------------------------------------------------------------------------
# alpha dropout
# --------------------------------------------------------------------------
ALPHA_P = -1.7580993408473766


def alpha_coefficients(rate):
    rate = eff(rate)
    a = ((1 - rate) * (1 + rate * ALPHA_P**2)) ** -0.5
    return a, -a * ALPHA_P * rate


@pytest.mark.parametrize("n", [1, 7, 4096, 10001])
@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.5])
def test_alpha_dropout_forward_and_backward_match_float64_reference(n, rate):
    key = (123, 456, 2)
    rng = np.random.default_rng(n)
    x, dy = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    keep = ref_keep(n, rate, *key)
    a, b = alpha_coefficients(rate)
    ref = np.where(keep, a * x.astype(np.float64) + b, a * ALPHA_P + b)
    np.testing.assert_allclose(run_forward(x, rate, *key, kind="alpha_dropout"), ref, rtol=1e-6, atol=1e-6)
    dref = np.where(keep, a * dy.astype(np.float64), 0.0)
    np.testing.assert_allclose(run_backward(dy, rate, *key, kind="alpha_dropout"), dref, rtol=1e-6, atol=0)


def test_alpha_dropout_backward_matches_finite_differences():
    rate, key = 0.2, (1, 2, 3)
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=40), rng.normal(size=40)

    def loss(v):
        return float(np.sum(w * run_forward(v.astype(np.float32), rate, *key, kind="alpha_dropout")))

    fd = central_difference(loss, x, h=0.25)
    np.testing.assert_allclose(run_backward(w.astype(np.float32), rate, *key, kind="alpha_dropout"), fd,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_alpha_dropout_keeps_mean_and_variance_of_a_standard_normal(rate):
    n = 2_000_000
    x = np.empty(n, np.float32)
    C.philox_normal(x, 77, 1, 0.0, 1.0, False)
    y = run_forward(x, rate, 5, 6, 7, kind="alpha_dropout").astype(np.float64)
    # Standard errors: mean 1/sqrt(n), variance ~ sqrt(kurtosis-ish / n) < 3/sqrt(n).
    assert abs(y.mean()) < 6 / math.sqrt(n)
    assert abs(y.var() - 1.0) < 18 / math.sqrt(n)
    _, counts = np.unique(y, return_counts=True)  # the dropped value is the one repeated value
    assert abs(counts.max() / n - rate) < 6 * math.sqrt(rate * (1 - rate) / n)


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------
def test_dropout_layer_is_identity_at_inference_and_drops_in_training():
    x = np.random.default_rng(0).normal(size=(64, 50)).astype(np.float32)
    layer = dc.Dropout(0.5, seed=1)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True)
    kept = y != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-7)


def test_dropout_layer_masks_follow_its_stream_and_call_counter():
    x = np.ones((16, 100), np.float32)
    layer = dc.Dropout(0.25, seed=3)
    layer._build_for((100,))
    y0, y1 = layer.forward(x, True).copy(), layer.forward(x, True).copy()
    assert not np.array_equal(y0, y1)  # a new mask per training step
    stream = layer._stream
    np.testing.assert_array_equal(y0.reshape(-1) != 0, ref_keep(1600, 0.25, 3, stream, 0))
    np.testing.assert_array_equal(y1.reshape(-1) != 0, ref_keep(1600, 0.25, 3, stream, 1))
    # Backward regenerates the last forward's mask.
    dy = np.random.default_rng(0).normal(size=(16, 100)).astype(np.float32)
    np.testing.assert_allclose(layer.backward(dy), np.where(y1 != 0, dy / 0.75, 0), rtol=1e-6)
    # The same seed gives the same sequence.
    again = dc.Dropout(0.25, seed=3)
    np.testing.assert_array_equal(again(x, training=True), y0)


def test_unseeded_dropout_layers_are_reproducible_under_set_random_seed():
    x = np.ones((8, 64), np.float32)
    dc.set_random_seed(5)
    a = dc.Dropout(0.5)(x, training=True)
    dc.set_random_seed(5)
    b = dc.Dropout(0.5)(x, training=True)
    c = dc.Dropout(0.5)(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_layer_backward_is_identity_after_an_inference_forward():
    layer = dc.Dropout(0.5, seed=0)
    x = np.ones((4, 8), np.float32)
    layer(x, training=True)
    layer.forward(x, training=False)
    dy = np.full((4, 8), 3.0, np.float32)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_dropout_noise_shape_broadcasts_the_mask():
    x = np.ones((4, 6, 10), np.float32)
    layer = dc.Dropout(0.5, noise_shape=(None, 1, 10), seed=2)
    y = layer(x, training=True)
    assert ((y == 0) | (y == 2)).all()
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :], y.shape))  # same mask along axis 1
    assert 0 < (y == 0).mean() < 1
    dy = np.full_like(x, 5.0)
    np.testing.assert_array_equal(layer.backward(dy), y * 5.0)


def test_mc_dropout_layer_is_active_at_inference():
    x = np.ones((32, 32), np.float32)
    y = dc.MCDropout(0.5, seed=1)(x, training=False)
    assert (y == 0).any() and (y == 2).any()


def test_alpha_dropout_layer_is_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    layer = dc.AlphaDropout(0.1, seed=0)
    np.testing.assert_array_equal(layer(x), x)
    assert not np.array_equal(layer(x, training=True), x)


def test_dropout_layers_round_trip_through_get_config():
    for layer in [dc.Dropout(0.3, noise_shape=(None, 1), seed=4), dc.MCDropout(0.2, seed=1),
                  dc.AlphaDropout(0.1, seed=9)]:
        cfg = layer.get_config()
        cfg["name"] = cfg["name"] + "_copy"
        clone = type(layer).from_config(cfg)
        assert {k: v for k, v in clone.get_config().items() if k != "name"} == \
               {k: v for k, v in layer.get_config().items() if k != "name"}


def test_sequential_with_dropout_trains_and_predicts_deterministically():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    dc.set_random_seed(1)
    model = dc.Sequential([dc.Input(shape=[20]), dc.Dense(32, activation="relu"), dc.Dropout(0.3),
                           dc.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.SGD(0.1))
    hist = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    np.testing.assert_array_equal(model.predict(x), model.predict(x))  # no dropout at inference


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
@pytest.mark.parametrize("cls", [dc.Dropout, dc.AlphaDropout, dc.MCDropout])
def test_layers_reject_a_rate_outside_0_1(cls, rate):
    with pytest.raises(ValueError, match="rate"):
        cls(rate)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "1", True])
def test_layers_reject_a_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        dc.Dropout(0.5, seed=seed)


@pytest.mark.parametrize("fn", ["dropout_forward", "alpha_dropout_forward", "dropout_backward",
                                "alpha_dropout_backward"])
def test_kernels_reject_bad_rates_dtypes_and_shapes(fn):
    f = getattr(C, fn)
    x = np.zeros(10, np.float32)
    for rate in (1.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            f(x, np.zeros(10, np.float32), rate, 0, 0, 0)
    with pytest.raises(TypeError, match="float32"):
        f(np.zeros(10), np.zeros(10, np.float32), 0.5, 0, 0, 0)
    with pytest.raises(TypeError):
        f([0.0] * 10, np.zeros(10, np.float32), 0.5, 0, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        f(x, np.zeros(11, np.float32), 0.5, 0, 0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        f(np.zeros(20, np.float32)[::2], x.copy(), 0.5, 0, 0, 0)
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        f(x, ro, 0.5, 0, 0, 0)
    with pytest.raises(TypeError):
        f(x, x.copy(), 0.5, -1, 0, 0)  # seeds are unsigned 64-bit


def test_dropout_layer_rejects_wrong_input_shape_and_bad_noise_shape():
    layer = dc.Dropout(0.5, seed=0)
    layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="expected input shape"):
        layer.forward(np.zeros((2, 6), np.float32), True)
    bad = dc.Dropout(0.5, noise_shape=(None, 3))
    with pytest.raises(ValueError, match="noise_shape"):
        bad(np.zeros((2, 5), np.float32), training=True)
    with pytest.raises(ValueError, match="noise_shape"):
        dc.Dropout(0.5, noise_shape=(None,))(np.zeros((2, 5), np.float32), training=True)


# --------------------------------------------------------------------------
# keep bitmasks (what the layers store for backward)
# --------------------------------------------------------------------------
def unpack_keep_bits(words, n):
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n].astype(bool)


@pytest.mark.parametrize("kind", ["dropout", "alpha_dropout"])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 1000, 5000])
def test_forward_keep_bits_match_the_reference_mask_and_drive_backward(kind, n):
    key, rate = (21, 22, 23), 0.35
    rng = np.random.default_rng(n)
    x, dy = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    words = np.full((n + 31) // 32, -1, np.int32)
    getattr(C, f"{kind}_forward")(x, np.empty_like(x), rate, *key, words)
    keep = ref_keep(n, rate, *key)
    np.testing.assert_array_equal(unpack_keep_bits(words, n), keep)
    assert not np.unpackbits(words.view(np.uint8), bitorder="little")[n:].any()  # padding bits are 0
    from_bits, regenerated = np.full_like(dy, np.nan), np.full_like(dy, np.nan)
    getattr(C, f"{kind}_backward")(dy, from_bits, rate, 0, 0, 0, words)  # the key is ignored with bits
    getattr(C, f"{kind}_backward")(dy, regenerated, rate, *key)
    np.testing.assert_array_equal(from_bits, regenerated)


def test_keep_bits_are_identical_for_one_and_two_threads():
    n = 3 * (1 << 20) + 77
    x = np.ones(n, np.float32)
    before = dc.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            dc.set_num_threads(threads)
            words = np.empty((n + 31) // 32, np.int32)
            C.dropout_forward(x, np.empty_like(x), 0.5, 1, 2, 3, words)
            dx = np.empty_like(x)
            C.dropout_backward(x, dx, 0.5, 0, 0, 0, words)
            out.append((words, dx))
    finally:
        dc.set_num_threads(before)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(unpack_keep_bits(out[0][0], n), ref_keep(n, 0.5, 1, 2, 3))


@pytest.mark.parametrize("fn", ["dropout_forward", "dropout_backward", "alpha_dropout_forward",
                                "alpha_dropout_backward"])
def test_kernels_reject_a_bad_keep_bitmask(fn):
    f = getattr(C, fn)
    x = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="mask"):
        f(x, x.copy(), 0.5, 0, 0, 0, np.zeros(3, np.int32))  # needs 4 words
    with pytest.raises(TypeError, match="int32"):
        f(x, x.copy(), 0.5, 0, 0, 0, np.zeros(4, np.uint8))


@pytest.mark.parametrize("n", [5, 1000, 70001])
def test_scalar_and_simd_philox_paths_draw_the_same_masks(n):
    # CPUs without AVX2 take the scalar generator; both must follow the reference.
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    before = C._set_philox_simd(False)
    try:
        words = np.empty((n + 31) // 32, np.int32)
        y_scalar = run_forward(x, 0.4, 8, 9, 10)
        C.dropout_forward(x, np.empty_like(x), 0.4, 8, 9, 10, words)
        r_scalar = np.empty_like(x)
        C.rrelu_forward(x, r_scalar, 0.1, 0.3, True, 8, 9, 10)
    finally:
        C._set_philox_simd(before)
    np.testing.assert_array_equal(y_scalar, run_forward(x, 0.4, 8, 9, 10))
    np.testing.assert_array_equal(unpack_keep_bits(words, n), ref_keep(n, 0.4, 8, 9, 10))
    r = np.empty_like(x)
    C.rrelu_forward(x, r, 0.1, 0.3, True, 8, 9, 10)
    np.testing.assert_array_equal(r_scalar, r)


@pytest.mark.parametrize("rate", [1e-6, 0.9999, 0.99999])
def test_dropout_keeps_the_mean_at_extreme_rates(rate):
    # Kept values are scaled by 1 / (1 - effective rate): exactly unbiased even
    # where the 16-bit threshold rounds the rate.
    n = 1 << 22
    y = np.empty(n, np.float32)
    C.dropout_forward(np.ones(n, np.float32), y, rate, 11, 12, 13)
    kept = np.count_nonzero(y)
    assert y.astype(np.float64).sum() == pytest.approx(kept / (1 - eff(rate)), rel=1e-6)
    assert abs(kept / n - (1 - eff(rate))) < 6 * math.sqrt(eff(rate) * (1 - eff(rate)) / n) + 1e-12


@pytest.mark.parametrize("rate", [1 - 2**-18, 0.99999999])
def test_rates_too_close_to_one_are_rejected(rate):
    with pytest.raises(ValueError, match="too close to 1"):
        dc.Dropout(rate)
    with pytest.raises(ValueError, match=r"1 - 2\^-17"):
        C.dropout_forward(np.ones(4, np.float32), np.empty(4, np.float32), rate, 1, 2, 3)


def test_backward_accepts_a_read_only_keep_mask():
    n = 100
    x, y = np.ones(n, np.float32), np.empty(n, np.float32)
    mask = np.zeros((n + 31) // 32, np.int32)
    C.dropout_forward(x, y, 0.5, 1, 2, 3, mask)
    mask.setflags(write=False)
    dx = np.empty(n, np.float32)
    C.dropout_backward(x, dx, 0.5, 1, 2, 3, mask)
    np.testing.assert_array_equal(dx, y)
