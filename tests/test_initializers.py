"""Statistical and API tests for deepcore.initializers.

Each distribution is sampled on a large (400, 600) kernel (240,000 values),
so the sample mean has a standard error of std/490 and the sample variance a
relative standard error of about 0.3% (normal) or less (uniform). The
tolerances below are several standard errors wide: a correct initializer
passes essentially always, while a wrong fan, scale or distribution (which
changes the variance by 20% or more) fails.
"""
import math

import numpy as np
import pytest

import deepcore
from deepcore import initializers
from deepcore.initializers import compute_fans

SHAPE = (400, 600)  # fan_in=400, fan_out=600, fan_avg=500
FANS = {"fan_in": 400.0, "fan_out": 600.0, "fan_avg": 500.0}
TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]
TWO_SIDED_TAIL_2SD = 0.0455002638963584  # P(|Z| > 2) for a standard normal


def sample(init, shape=SHAPE):
    w = init(shape)
    assert isinstance(w, np.ndarray)
    assert w.shape == tuple(shape)
    assert w.dtype == np.float32
    assert np.isfinite(w).all()
    return w.astype(np.float64)


def check_mean_var(w, mean, var, rel_var_tol=0.03):
    std = math.sqrt(var)
    se_mean = std / math.sqrt(w.size)
    assert abs(w.mean() - mean) < 6 * se_mean + 1e-12, (w.mean(), mean)
    assert w.var() == pytest.approx(var, rel=rel_var_tol), (w.var(), var)


def check_truncated(w, std_target, mean=0.0):
    """Variance std_target**2 and support |w - mean| <= 2 * std_target / TRUNC_STD
    (the untruncated normal's std is std_target / 0.8796...)."""
    bound = 2 * std_target / TRUNC_STD
    dev = np.abs(w - mean)
    assert dev.max() <= bound * (1 + 1e-5), (dev.max(), bound)
    # The truncated normal has plenty of mass right up to the bound.
    assert dev.max() >= 0.97 * bound
    check_mean_var(w, mean, std_target ** 2)


def check_untruncated(w, std, mean=0.0):
    check_mean_var(w, mean, std ** 2)
    tail = np.mean(np.abs(w - mean) > 2 * std)
    # Binomial standard error of the tail fraction is ~0.0004 for 240k samples.
    assert tail == pytest.approx(TWO_SIDED_TAIL_2SD, abs=0.004)
    assert np.abs(w - mean).max() > 3.5 * std  # no truncation


def check_uniform(w, low, high):
    assert w.min() >= low and w.max() <= high
    width = high - low
    assert w.min() < low + 0.001 * width and w.max() > high - 0.001 * width
    check_mean_var(w, (low + high) / 2, width ** 2 / 12, rel_var_tol=0.02)
    # Flat histogram: each of 10 bins holds ~10% of the samples.
    hist, _ = np.histogram(w, bins=10, range=(low, high))
    np.testing.assert_allclose(hist / w.size, 0.1, atol=0.005)


# ------------------------------------------------------------------ fans


def test_compute_fans_of_dense_kernel_are_its_two_dims():
    assert compute_fans((400, 600)) == (400.0, 600.0)


def test_compute_fans_of_conv_kernel_multiply_by_receptive_field():
    # (kh, kw, in, out) = (3, 3, 16, 32): receptive field 9.
    assert compute_fans((3, 3, 16, 32)) == (144.0, 288.0)


def test_compute_fans_of_vector_and_scalar_shapes():
    assert compute_fans((7,)) == (7.0, 7.0)
    assert compute_fans(()) == (1.0, 1.0)


def test_he_normal_on_conv_kernel_uses_receptive_field_fan_in():
    shape = (5, 5, 64, 128)  # fan_in = 1600, 204,800 values
    w = sample(initializers.HeNormal(seed=3), shape)
    check_truncated(w, math.sqrt(2.0 / 1600))


def test_glorot_uniform_on_conv_kernel_uses_receptive_field_fan_avg():
    shape = (5, 5, 64, 128)  # fan_in = 1600, fan_out = 3200
    w = sample(initializers.GlorotUniform(seed=4), shape)
    limit = math.sqrt(6.0 / (1600 + 3200))
    check_uniform(w, -limit, limit)


# ------------------------------------------------------- named initializers

NAMED = [
    # name, class, scale, fan mode, distribution
    ("glorot_uniform", initializers.GlorotUniform, 1.0, "fan_avg", "uniform"),
    ("glorot_normal", initializers.GlorotNormal, 1.0, "fan_avg", "truncated_normal"),
    ("he_normal", initializers.HeNormal, 2.0, "fan_in", "truncated_normal"),
    ("he_uniform", initializers.HeUniform, 2.0, "fan_in", "uniform"),
    ("lecun_normal", initializers.LecunNormal, 1.0, "fan_in", "truncated_normal"),
    ("lecun_uniform", initializers.LecunUniform, 1.0, "fan_in", "uniform"),
]


def check_variance_scaling(w, scale, mode, distribution):
    var = scale / FANS[mode]
    if distribution == "uniform":
        limit = math.sqrt(3 * var)
        check_uniform(w, -limit, limit)
    elif distribution == "truncated_normal":
        check_truncated(w, math.sqrt(var))
    else:
        check_untruncated(w, math.sqrt(var))


@pytest.mark.parametrize("name,cls,scale,mode,distribution", NAMED, ids=[n[0] for n in NAMED])
def test_named_initializer_has_keras_variance_and_support(name, cls, scale, mode, distribution):
    w = sample(cls(seed=11))
    check_variance_scaling(w, scale, mode, distribution)


@pytest.mark.parametrize("name,cls,scale,mode,distribution", NAMED, ids=[n[0] for n in NAMED])
def test_named_initializer_string_and_function_alias_resolve_to_the_class(name, cls, scale, mode, distribution):
    assert type(initializers.get(name)) is cls
    assert getattr(initializers, name) is cls
    inst = cls()
    assert (inst.scale, inst.mode, inst.distribution) == (scale, mode, distribution)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_variance_scaling_variance_is_scale_over_fan(mode, distribution):
    scale = 2.5
    init = initializers.VarianceScaling(scale=scale, mode=mode, distribution=distribution, seed=5)
    assert init.variance(SHAPE) == pytest.approx(scale / FANS[mode])
    check_variance_scaling(sample(init), scale, mode, distribution)


def test_variance_scaling_normal_is_an_alias_of_untruncated_normal():
    init = initializers.VarianceScaling(distribution="normal")
    assert init.distribution == "untruncated_normal"
    a = initializers.VarianceScaling(distribution="normal", seed=8)(SHAPE)
    b = initializers.VarianceScaling(distribution="untruncated_normal", seed=8)(SHAPE)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- plain distributions


def test_random_normal_has_given_mean_and_stddev():
    check_untruncated(sample(initializers.RandomNormal(mean=0.5, stddev=0.2, seed=1)), 0.2, mean=0.5)


def test_random_normal_keras_defaults_mean_0_stddev_005():
    init = initializers.RandomNormal()
    assert (init.mean, init.stddev) == (0.0, 0.05)
    check_untruncated(sample(initializers.RandomNormal(seed=2)), 0.05)


def test_random_uniform_covers_given_interval_evenly():
    check_uniform(sample(initializers.RandomUniform(minval=-0.3, maxval=0.1, seed=1)), -0.3, 0.1)


def test_random_uniform_keras_defaults_minus_005_to_005():
    check_uniform(sample(initializers.RandomUniform(seed=2)), -0.05, 0.05)


def test_truncated_normal_cuts_at_two_stddev_around_mean():
    stddev, mean = 0.1, 0.25
    w = sample(initializers.TruncatedNormal(mean=mean, stddev=stddev, seed=1))
    # Keras semantics: stddev is that of the normal *before* truncation, so the
    # resulting std is 0.8796 * stddev and the support is mean +- 2 stddev.
    check_truncated(w, stddev * TRUNC_STD, mean=mean)


def test_zeros_ones_and_constant_fill_exactly():
    np.testing.assert_array_equal(initializers.Zeros()((3, 4)), np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(initializers.Ones()((3, 4)), np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(initializers.Constant(3.5)((5,)), np.full((5,), 3.5, np.float32))
    np.testing.assert_array_equal(initializers.get("zeros")((2, 2)), 0)
    np.testing.assert_array_equal(initializers.get("ones")((2, 2)), 1)
    assert initializers.Constant().value == 0.0
    for init in (initializers.Zeros(), initializers.Ones(), initializers.Constant(2.0)):
        assert init((2, 3)).dtype == np.float32


# ------------------------------------------------------------ reproducibility

SEEDED = [initializers.GlorotUniform, initializers.GlorotNormal, initializers.HeNormal, initializers.HeUniform,
          initializers.LecunNormal, initializers.LecunUniform, initializers.RandomNormal,
          initializers.RandomUniform, initializers.TruncatedNormal,
          lambda seed: initializers.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=seed)]


@pytest.mark.parametrize("factory", SEEDED, ids=lambda f: getattr(f, "__name__", "VarianceScaling"))
def test_same_seed_gives_identical_first_call_and_other_seed_differs(factory):
    a = factory(seed=1234)((50, 70))
    b = factory(seed=1234)((50, 70))
    c = factory(seed=1235)((50, 70))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seeded_initializer_second_call_differs_but_sequence_is_reproducible():
    i1, i2 = initializers.HeNormal(seed=9), initializers.HeNormal(seed=9)
    a1, a2 = i1((30, 40)), i1((30, 40))
    b1, b2 = i2((30, 40)), i2((30, 40))
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)


def test_set_random_seed_makes_unseeded_initializers_reproducible():
    def draw():
        return [initializers.GlorotUniform()((20, 30)), initializers.RandomNormal()((20, 30)),
                initializers.HeNormal()((20, 30))]

    deepcore.set_random_seed(77)
    first = draw()
    deepcore.set_random_seed(77)
    second = draw()
    deepcore.set_random_seed(78)
    third = draw()
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    # Two successive unseeded initializers draw different streams.
    assert not np.array_equal(first[0], initializers.GlorotUniform()((20, 30)))


def test_set_random_seed_makes_dense_layer_kernels_reproducible():
    def kernels():
        m = deepcore.Sequential([deepcore.Input(shape=(8,)), deepcore.Dense(5), deepcore.Dense(3)])
        return [w for w in m.get_weights()]

    deepcore.set_random_seed(5)
    a = kernels()
    deepcore.set_random_seed(5)
    b = kernels()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_seeded_draws_do_not_depend_on_thread_count():
    old = deepcore.get_num_threads()
    try:
        deepcore.set_num_threads(1)
        a = initializers.GlorotNormal(seed=21)((300, 500))
        deepcore.set_num_threads(2)
        b = initializers.GlorotNormal(seed=21)((300, 500))
    finally:
        deepcore.set_num_threads(old)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- get()


def test_get_by_snake_case_name_and_by_class_name():
    assert type(initializers.get("he_normal")) is initializers.HeNormal
    assert type(initializers.get("HeNormal")) is initializers.HeNormal
    assert type(initializers.get("GlorotUniform")) is initializers.GlorotUniform
    assert type(initializers.get("random_normal")) is initializers.RandomNormal
    assert type(initializers.get("TruncatedNormal")) is initializers.TruncatedNormal
    assert type(initializers.get("constant")) is initializers.Constant


def test_get_passes_instances_through_and_instantiates_classes():
    inst = initializers.HeUniform(seed=3)
    assert initializers.get(inst) is inst
    assert type(initializers.get(initializers.LecunNormal)) is initializers.LecunNormal


def test_get_from_config_dict_restores_parameters():
    init = initializers.get({"class_name": "VarianceScaling",
                             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 4}})
    assert isinstance(init, initializers.VarianceScaling)
    assert (init.scale, init.mode, init.distribution, init.seed) == (2.0, "fan_out", "uniform", 4)
    c = initializers.get({"class_name": "Constant", "config": {"value": 0.7}})
    np.testing.assert_array_equal(c((2,)), np.float32(0.7))


@pytest.mark.parametrize("init", [initializers.HeNormal(seed=6), initializers.RandomUniform(-1.0, 2.0, seed=6),
                                  initializers.TruncatedNormal(0.1, 0.3, seed=6), initializers.Constant(1.5),
                                  initializers.VarianceScaling(0.5, "fan_avg", "untruncated_normal", seed=6)],
                         ids=lambda i: type(i).__name__)
def test_serialize_then_get_round_trips_to_identical_draws(init):
    config = initializers.serialize(init)
    assert config["class_name"] == type(init).__name__
    clone = initializers.get(config)
    assert type(clone) is type(init)
    assert clone.get_config() == init.get_config()
    np.testing.assert_array_equal(clone((10, 12)), type(init).from_config(init.get_config())((10, 12)))


@pytest.mark.parametrize("identifier", ["he_normall", "xavier", "", 42,
                                        {"class_name": "NoSuchInit", "config": {}}])
def test_get_unknown_identifier_raises_value_error(identifier):
    with pytest.raises(ValueError, match="(?i)unknown initializer"):
        initializers.get(identifier)


def test_get_unknown_string_lists_known_names():
    with pytest.raises(ValueError) as e:
        initializers.get("he_normall")
    for known in ("he_normal", "glorot_uniform", "zeros"):
        assert known in str(e.value)


# --------------------------------------------------------------- bad args


@pytest.mark.parametrize("kwargs,fragment", [
    ({"mode": "bad"}, "mode"),
    ({"scale": 0}, "scale"),
    ({"scale": -1.0}, "scale"),
    ({"scale": float("nan")}, "scale"),
    ({"distribution": "gamma"}, "distribution"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
])
def test_variance_scaling_rejects_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        initializers.VarianceScaling(**kwargs)


@pytest.mark.parametrize("cls", [initializers.HeNormal, initializers.GlorotUniform, initializers.RandomNormal,
                                 initializers.RandomUniform, initializers.TruncatedNormal])
def test_negative_seed_is_rejected(cls):
    with pytest.raises(ValueError, match="seed"):
        cls(seed=-3)


def test_set_random_seed_rejects_negative_seed():
    with pytest.raises(ValueError):
        deepcore.set_random_seed(-1)
