"""Learning-rate schedules: each value against its formula written out here
independently, 1cycle's shape (rise, fall, anneal; momentum the other way),
config round-trips, bad arguments, and use as an optimizer's learning_rate.
"""
import json
import math

import numpy as np
import pytest

from deepcore import Dense, Input, Sequential, optimizers, schedules
from deepcore.schedules import (ExponentialDecay, InverseTimeDecay, OneCycle, PiecewiseConstantDecay,
                                PowerDecay)

STEPS = [0, 1, 7, 10, 99, 100, 101, 1000, 12345]


# ------------------------------------------------------------------ formulas


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_matches_formula(staircase):
    s = ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5, staircase=staircase)
    for t in STEPS:
        p = (t // 100) if staircase else t / 100
        assert s(t) == pytest.approx(0.1 * 0.5 ** p, rel=1e-12), t


def test_exponential_decay_divides_by_decay_rate_every_decay_steps():
    s = ExponentialDecay(1.0, decay_steps=20, decay_rate=0.1)
    assert s(0) == pytest.approx(1.0)
    assert s(20) == pytest.approx(0.1)
    assert s(40) == pytest.approx(0.01)


def test_exponential_staircase_is_flat_within_a_period():
    s = ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5, staircase=True)
    assert s(0) == s(9) == 1.0
    assert s(10) == s(19) == 0.5


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_decay_matches_formula(staircase):
    s = InverseTimeDecay(0.2, decay_steps=50, decay_rate=3.0, staircase=staircase)
    for t in STEPS:
        p = (t // 50) if staircase else t / 50
        assert s(t) == pytest.approx(0.2 / (1 + 3.0 * p), rel=1e-12), t


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_power_decay_matches_formula(power):
    s = PowerDecay(0.01, decay_steps=30, power=power)
    for t in STEPS:
        assert s(t) == pytest.approx(0.01 / (1 + t / 30) ** power, rel=1e-12), t


def test_power_decay_with_power_1_equals_inverse_time_decay_with_rate_1():
    p = PowerDecay(0.05, decay_steps=17)
    q = InverseTimeDecay(0.05, decay_steps=17, decay_rate=1.0)
    for t in STEPS:
        assert p(t) == pytest.approx(q(t), rel=1e-12)
    assert p(17) == pytest.approx(0.025)  # halves after s steps


def test_piecewise_constant_uses_keras_boundary_semantics():
    s = PiecewiseConstantDecay(boundaries=[5, 15], values=[1.0, 0.5, 0.1])
    expected = {0: 1.0, 5: 1.0, 6: 0.5, 15: 0.5, 16: 0.1, 1000: 0.1}
    assert {t: s(t) for t in expected} == expected
    assert s(5.5) == 0.5


# -------------------------------------------------------------------- 1cycle


def test_one_cycle_rate_rises_falls_then_anneals():
    s = OneCycle(max_lr=0.5, total_steps=1000)  # a = 450 steps per half cycle
    lo, end = 0.5 / 25, 0.5 / 25 / 1e4
    assert s(0) == pytest.approx(lo)
    assert s(225) == pytest.approx(lo + (0.5 - lo) / 2)
    assert s(450) == pytest.approx(0.5)
    assert s(675) == pytest.approx(0.5 - (0.5 - lo) / 2)
    assert s(900) == pytest.approx(lo)
    assert s(950) == pytest.approx(lo - (lo - end) / 2)
    assert s(1000) == pytest.approx(end)
    assert s(5000) == pytest.approx(end)
    rates = np.array([s(t) for t in range(1001)])
    assert np.all(np.diff(rates[:451]) > 0)        # rise
    assert np.all(np.diff(rates[450:901]) < 0)     # fall
    assert np.all(np.diff(rates[900:]) < 0)        # anneal
    assert rates.argmax() == 450


def test_one_cycle_momentum_moves_inversely_to_the_rate():
    s = OneCycle(max_lr=1.0, total_steps=200, pct_start=0.25)  # a = 50
    assert s.momentum(0) == pytest.approx(0.95)
    assert s.momentum(25) == pytest.approx(0.90)
    assert s.momentum(50) == pytest.approx(0.85)
    assert s.momentum(75) == pytest.approx(0.90)
    assert s.momentum(100) == pytest.approx(0.95)
    for t in (101, 150, 199, 200, 500):
        assert s.momentum(t) == pytest.approx(0.95)  # flat while annealing
    rates = np.array([s(t) for t in range(101)])
    moms = np.array([s.momentum(t) for t in range(101)])
    assert np.all(np.sign(np.diff(rates)) == -np.sign(np.diff(moms)))


def test_one_cycle_without_momentum_cycling_leaves_momentum_alone():
    s = OneCycle(max_lr=1.0, total_steps=10, cycle_momentum=False)
    assert s.momentum(3) is None
    assert not s.cycle_momentum


def test_one_cycle_with_pct_start_half_has_no_anneal_phase():
    s = OneCycle(max_lr=1.0, total_steps=10, pct_start=0.5, start_div=10, final_div=100)
    assert s(5) == pytest.approx(1.0)
    assert s(10) == pytest.approx(0.1)
    assert s(11) == pytest.approx(0.001)


# ---------------------------------------------------------- config, callable


ALL = [
    ExponentialDecay(0.1, 10, 0.9, staircase=True),
    InverseTimeDecay(0.1, 10, 0.5),
    PowerDecay(0.1, 10, power=2.0),
    PiecewiseConstantDecay([10, 20], [0.1, 0.01, 0.001]),
    OneCycle(0.3, 100, pct_start=0.3, cycle_momentum=False),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_schedule_round_trips_through_json_config(schedule):
    text = json.dumps(schedules.serialize(schedule))
    again = schedules.deserialize(json.loads(text))
    assert again == schedule and again is not schedule
    assert [again(t) for t in STEPS] == [schedule(t) for t in STEPS]
    assert type(schedule).from_config(schedule.get_config()) == schedule


def test_deserialize_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="ExponentialDecay"):
        schedules.deserialize({"class_name": "Nope", "config": {}})


def test_schedule_drives_the_optimizer_rate_per_step():
    schedule = ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    opt = optimizers.SGD(learning_rate=schedule)
    model = Sequential([Input(shape=(2,)), Dense(1)])
    model.compile(optimizer=opt, loss="mse")
    assert opt.learning_rate == pytest.approx(0.1)
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 2 steps
    assert opt.iterations == 2
    assert opt.learning_rate == pytest.approx(0.1 * 0.25)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, arg", [
    (lambda: ExponentialDecay(-0.1, 10, 0.9), "initial_learning_rate"),
    (lambda: ExponentialDecay(float("nan"), 10, 0.9), "initial_learning_rate"),
    (lambda: ExponentialDecay(0.1, 0, 0.9), "decay_steps"),
    (lambda: ExponentialDecay(0.1, -5, 0.9), "decay_steps"),
    (lambda: ExponentialDecay(0.1, 10, 0.0), "decay_rate"),
    (lambda: ExponentialDecay(0.1, 10, float("inf")), "decay_rate"),
    (lambda: InverseTimeDecay(0.1, 0, 0.5), "decay_steps"),
    (lambda: InverseTimeDecay(0.1, 10, -0.5), "decay_rate"),
    (lambda: InverseTimeDecay(float("inf"), 10, 0.5), "initial_learning_rate"),
    (lambda: PowerDecay(0.1, 0), "decay_steps"),
    (lambda: PowerDecay(0.1, 10, power=float("nan")), "power"),
    (lambda: PowerDecay(-1.0, 10), "initial_learning_rate"),
    (lambda: PiecewiseConstantDecay([10, 20], [0.1, 0.01]), "values"),
    (lambda: PiecewiseConstantDecay([20, 10], [0.1, 0.01, 0.001]), "boundaries"),
    (lambda: PiecewiseConstantDecay([10], [0.1, float("nan")]), r"values\[1\]"),
    (lambda: PiecewiseConstantDecay([10], [-0.1, 0.1]), r"values\[0\]"),
    (lambda: OneCycle(0.0, 100), "max_lr"),
    (lambda: OneCycle(float("nan"), 100), "max_lr"),
    (lambda: OneCycle(0.1, 0), "total_steps"),
    (lambda: OneCycle(0.1, 10.5), "total_steps"),
    (lambda: OneCycle(0.1, 100, pct_start=0.6), "pct_start"),
    (lambda: OneCycle(0.1, 100, pct_start=0.0), "pct_start"),
    (lambda: OneCycle(0.1, 100, start_div=0), "start_div"),
    (lambda: OneCycle(0.1, 100, final_div=-1), "final_div"),
    (lambda: OneCycle(0.1, 100, base_momentum=0.99), "base_momentum"),
])
def test_bad_schedule_argument_raises_value_error_naming_it(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_negative_or_nan_step_is_rejected(schedule):
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="step"):
            schedule(bad)


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_schedules_give_finite_nonnegative_rates_far_out(schedule):
    for t in (0, 10**6, 10**12):
        v = schedule(t)
        assert math.isfinite(v) and v >= 0


def test_exponential_growth_past_float_range_gives_inf_not_an_exception():
    # the optimizer then refuses the non-finite rate with a clear error
    assert ExponentialDecay(0.1, 1, 10.0)(10**6) == math.inf


def test_per_step_schedule_returning_nan_stops_fit_before_touching_the_weights():
    model = Sequential([Input(shape=(2,)), Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=lambda step: 0.1 if step < 1 else float("nan")), loss="mse")
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # step 0: rate 0.1
    before = model.get_weights()
    with pytest.raises(ValueError, match="nan"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
