"""Merge kernels (src/ops/merge.h), the repeat kernels (src/ops/repeat.h)
and the merge and reshaping layers (layers/merge.py, layers/reshaping.py):
forward against float64 NumPy and bit for bit against a float32 fold in
input order, backward against the
analytic gradient and central finite differences, the tie and NaN rules of
Maximum/Minimum, Multiply's gradient at zeros, Concatenate on every axis,
the multi-input layer protocol, bad input (a clear exception, never a
crash), and PyTorch parity where PyTorch is installed."""

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from deepcore.layers.core import _BatchBuffers
from deepcore.layers.merge import MAX_INPUTS
from finite_differences import central_difference

ADD, SUBTRACT, MULTIPLY, AVERAGE, MAXIMUM, MINIMUM = range(6)
NAMES = {ADD: "add", SUBTRACT: "subtract", MULTIPLY: "multiply", AVERAGE: "average", MAXIMUM: "maximum",
         MINIMUM: "minimum"}
LAYERS = {ADD: dc.Add, SUBTRACT: dc.Subtract, MULTIPLY: dc.Multiply, AVERAGE: dc.Average, MAXIMUM: dc.Maximum,
          MINIMUM: dc.Minimum}
FUNCTIONS = {ADD: dc.layers.add, SUBTRACT: dc.layers.subtract, MULTIPLY: dc.layers.multiply,
             AVERAGE: dc.layers.average, MAXIMUM: dc.layers.maximum, MINIMUM: dc.layers.minimum}
SHAPES = [(7,), (4, 5), (3, 2, 6), (2, 1, 3, 4)]


def inputs(kind, k, shape, seed=0):
    rng = np.random.default_rng(seed)
    k = 2 if kind == SUBTRACT else k
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(k)]


def ref_forward(kind, xs):
    """float64 reference of merge_forward."""
    xs = [np.asarray(x, np.float64) for x in xs]
    if kind in (ADD, AVERAGE):
        s = sum(xs[1:], xs[0].copy())
        return s / len(xs) if kind == AVERAGE else s
    if kind == SUBTRACT:
        return xs[0] - xs[1]
    if kind == MULTIPLY:
        return np.prod(np.stack(xs), axis=0)
    return (np.max if kind == MAXIMUM else np.min)(np.stack(xs), axis=0)


def fold32(kind, xs):
    """merge_forward's exact float32 arithmetic: the inputs folded in order."""
    y = xs[0].copy()
    for x in xs[1:]:
        if kind in (ADD, AVERAGE):
            y = y + x
        elif kind == SUBTRACT:
            y = y - x
        elif kind == MULTIPLY:
            y = y * x
        else:
            y = np.where((y == y) & ((x > y if kind == MAXIMUM else x < y) | (x != x)), x, y)
    return y / np.float32(len(xs)) if kind == AVERAGE else y


def ref_backward(kind, xs, dy):
    """float64 reference of merge_backward: the gradient for each input."""
    xs = [np.asarray(x, np.float64) for x in xs]
    dy = np.asarray(dy, np.float64)
    k = len(xs)
    if kind == ADD:
        return [dy] * k
    if kind == SUBTRACT:
        return [dy, -dy]
    if kind == AVERAGE:
        return [dy / k] * k
    if kind == MULTIPLY:
        return [dy * np.prod(np.stack([x for j, x in enumerate(xs) if j != i]), axis=0) for i in range(k)]
    stack = np.stack(xs)
    winner = (np.argmax if kind == MAXIMUM else np.argmin)(stack, axis=0)  # first of ties
    nan = np.isnan(stack)
    winner = np.where(nan.any(axis=0), np.argmax(nan, axis=0), winner)  # the first NaN wins
    return [np.where(winner == i, dy, 0.0) for i in range(k)]


def kernel_forward(kind, xs):
    y = np.empty_like(xs[0])
    C.merge_forward(kind, xs, y)
    return y


def kernel_backward(kind, xs, dy, present=None):
    dxs = [np.full_like(xs[0], np.nan) if present is None or present[i] else None for i in range(len(xs))]
    C.merge_backward(kind, xs, dy, dxs)
    return dxs


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(NAMES), ids=list(NAMES.values()))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("shape", SHAPES + [(3, 1100)], ids=str)  # 3300 elements: several 1024-element tiles
def test_merge_forward_matches_float64_and_the_float32_fold_bit_for_bit(kind, k, shape):
    xs = inputs(kind, k, shape, seed=k)
    y = kernel_forward(kind, xs)
    np.testing.assert_allclose(y, ref_forward(kind, xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y.view(np.uint32), fold32(kind, xs).view(np.uint32))


@pytest.mark.parametrize("kind", list(NAMES), ids=list(NAMES.values()))
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("shape", [(4, 5), (3, 1100)], ids=str)
def test_merge_backward_matches_the_float64_gradient(kind, k, shape):
    xs = inputs(kind, k, shape, seed=10 + k)
    dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for got, want in zip(kernel_backward(kind, xs, dy), ref_backward(kind, xs, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(NAMES), ids=list(NAMES.values()))
def test_merge_backward_matches_finite_differences(kind):
    """The kernel's gradient of sum(w * merge(xs)) against central differences
    of the float64 reference, and (coarsely) of the float32 kernel itself."""
    xs = inputs(kind, 3, (2, 3), seed=5)
    w = np.random.default_rng(6).standard_normal((2, 3))
    dxs = kernel_backward(kind, xs, w.astype(np.float32))
    for i in range(len(xs)):
        def f64(a, i=i):
            return float(np.sum(w * ref_forward(kind, [a if j == i else x for j, x in enumerate(xs)])))

        def f32(a, i=i):
            ys = kernel_forward(kind, [a.astype(np.float32) if j == i else x for j, x in enumerate(xs)])
            return float(np.sum(w * ys.astype(np.float64)))
        np.testing.assert_allclose(dxs[i], central_difference(f64, xs[i]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dxs[i], central_difference(f32, xs[i], h=1e-2), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("kind", [MAXIMUM, MINIMUM], ids=["maximum", "minimum"])
def test_max_and_min_send_the_whole_gradient_to_the_first_tied_input_and_to_the_first_nan(kind):
    nan = np.float32(np.nan)
    x0 = np.array([1.0, 2.0, 3.0, nan, 5.0, 0.0], np.float32)
    x1 = np.array([1.0, 7.0, -7.0, 1.0, nan, 0.0], np.float32)
    x2 = np.array([1.0, 2.0, 3.0, nan, nan, -0.0], np.float32)
    xs = [x0, x1, x2]
    dy = np.arange(1, 7, dtype=np.float32)
    y = kernel_forward(kind, xs)
    np.testing.assert_array_equal(y, (np.maximum if kind == MAXIMUM else np.minimum).reduce(np.stack(xs)))
    winners = [0, 1 if kind == MAXIMUM else 0, 0 if kind == MAXIMUM else 1, 0, 1, 0]
    dxs = kernel_backward(kind, xs, dy)
    for i in range(3):
        np.testing.assert_array_equal(dxs[i], np.where(np.array(winners) == i, dy, 0.0))
    # the sum of the gradients is dy: never split, never doubled
    np.testing.assert_array_equal(sum(dxs), dy)


def test_multiply_gradient_is_exact_at_zeros_without_division():
    x0 = np.array([0.0, 0.0, 2.0, 3.0], np.float32)
    x1 = np.array([5.0, 0.0, 0.0, 4.0], np.float32)
    x2 = np.array([7.0, 6.0, 1e-30, 0.5], np.float32)
    dy = np.ones(4, np.float32)
    dxs = kernel_backward(MULTIPLY, [x0, x1, x2], dy)
    np.testing.assert_array_equal(dxs[0], x1 * x2)
    np.testing.assert_array_equal(dxs[1], x0 * x2)
    np.testing.assert_array_equal(dxs[2], x0 * x1)
    assert np.isfinite(np.stack(dxs)).all()


@pytest.mark.parametrize("kind", list(NAMES), ids=list(NAMES.values()))
def test_merge_backward_skips_none_entries_and_writes_the_others(kind):
    xs = inputs(kind, 3, (4, 5), seed=2)
    dy = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    full = kernel_backward(kind, xs, dy)
    present = [False, True] if kind == SUBTRACT else [False, True, False]
    part = kernel_backward(kind, xs, dy, present)
    for i, d in enumerate(part):
        if present[i]:
            np.testing.assert_array_equal(d, full[i])
        else:
            assert d is None
    C.merge_backward(kind, xs, dy, [None] * len(xs))  # nothing to do is fine


def test_merge_forward_output_may_be_the_first_input():
    xs = inputs(ADD, 3, (5, 6), seed=4)
    want = kernel_forward(ADD, xs)
    C.merge_forward(ADD, xs, xs[0])
    np.testing.assert_array_equal(xs[0], want)


@pytest.mark.parametrize("shape,axis", [((4, 3), 1), ((4, 3), -1), ((4, 3), 0), ((2, 3, 5), 1), ((2, 3, 5), -1),
                                        ((2, 3, 5), 0), ((2, 3, 4, 2), 2), ((6,), 0)], ids=str)
def test_concatenate_forward_and_backward_are_exact_copies(shape, axis):
    rng = np.random.default_rng(0)
    widths = [1, 3, 2]
    xs = []
    for w in widths:
        s = list(shape)
        s[axis] = w
        xs.append(rng.standard_normal(s).astype(np.float32))
    want = np.concatenate(xs, axis=axis)
    y = np.full_like(want, np.nan)
    C.concatenate_forward(xs, y, axis)
    np.testing.assert_array_equal(y, want)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    dxs = [np.full_like(x, np.nan) for x in xs]
    C.concatenate_backward(xs, dy, dxs, axis)
    for d, part in zip(dxs, np.split(dy, np.cumsum(widths)[:-1], axis=axis)):
        np.testing.assert_array_equal(d, part)
    dxs = [None, np.full_like(xs[1], np.nan), None]
    C.concatenate_backward(xs, dy, dxs, axis)
    np.testing.assert_array_equal(dxs[1], np.split(dy, np.cumsum(widths)[:-1], axis=axis)[1])


def test_concatenate_handles_empty_batches_and_zero_width_inputs():
    a, b = np.ones((0, 3), np.float32), np.ones((0, 2), np.float32)
    y = np.empty((0, 5), np.float32)
    C.concatenate_forward([a, b], y, 1)
    a, b = np.ones((2, 0), np.float32), np.full((2, 2), 3, np.float32)
    y = np.empty((2, 2), np.float32)
    C.concatenate_forward([a, b], y, 1)
    np.testing.assert_array_equal(y, b)


def test_kernels_take_up_to_64_inputs():
    xs = [np.full((3,), i, np.float32) for i in range(MAX_INPUTS)]
    np.testing.assert_array_equal(kernel_forward(ADD, xs), np.full(3, sum(range(MAX_INPUTS)), np.float32))
    y = np.empty(3 * MAX_INPUTS, np.float32)
    C.concatenate_forward(xs, y, 0)
    np.testing.assert_array_equal(y, np.concatenate(xs))


X = np.zeros((4, 3), np.float32)
READ_ONLY = np.zeros((4, 3), np.float32)
READ_ONLY.flags.writeable = False
BAD_KERNEL_CALLS = [
    (ValueError, "unknown merge code 6", lambda: C.merge_forward(6, [X, X], X.copy())),
    (ValueError, "subtract takes exactly 2 inputs, got 3", lambda: C.merge_forward(SUBTRACT, [X, X, X], X.copy())),
    (ValueError, "xs must hold 1 to 64 tensors, got 0", lambda: C.merge_forward(ADD, [], X.copy())),
    (ValueError, "xs must hold 1 to 64 tensors, got 65", lambda: C.merge_forward(ADD, [X] * 65, X.copy())),
    (ValueError, r"xs\[1\] must have the shape of xs\[0\] \(4, 3\), got \(4, 2\)",
     lambda: C.merge_forward(ADD, [X, X[:, :2].copy()], X.copy())),
    (ValueError, r"y must have the shape of xs\[0\] \(4, 3\), got \(3, 4\)",
     lambda: C.merge_forward(ADD, [X, X], np.zeros((3, 4), np.float32))),
    (TypeError, r"xs\[1\] must have dtype float32, got float64",
     lambda: C.merge_forward(ADD, [X, X.astype(np.float64)], X.copy())),
    (ValueError, r"xs\[0\] must be C-contiguous", lambda: C.merge_forward(ADD, [X.T, X.T], X.T.copy())),
    (TypeError, "xs must be a list of numpy float32 arrays, got <class 'numpy.ndarray'>",
     lambda: C.merge_forward(ADD, X, X.copy())),
    (TypeError, "xs must be a list of numpy float32 arrays, got <class .str.>", lambda: C.merge_forward(ADD, "ab", X.copy())),
    (ValueError, "y must be writable", lambda: C.merge_forward(ADD, [X, X], READ_ONLY)),
    (ValueError, "dxs must hold one entry .* per input, 2, got 1",
     lambda: C.merge_backward(ADD, [X, X], X, [X.copy()])),
    (ValueError, r"dxs\[1\] must have the shape of xs\[0\]",
     lambda: C.merge_backward(ADD, [X, X], X, [None, np.zeros(12, np.float32)])),
    (TypeError, r"dxs\[0\] must be a numpy float32 array, got <class 'int'>",
     lambda: C.merge_backward(ADD, [X, X], X, [0, None])),
    (ValueError, "axis 2 is out of range for tensors of 2 dimensions",
     lambda: C.concatenate_forward([X, X], np.zeros((4, 6), np.float32), 2)),
    (ValueError, "axis -3 is out of range", lambda: C.concatenate_forward([X, X], np.zeros((4, 6), np.float32), -3)),
    (ValueError, r"xs\[1\] \(5, 3\) must match xs\[0\] \(4, 3\) on every axis but axis 1",
     lambda: C.concatenate_forward([X, np.zeros((5, 3), np.float32)], np.zeros((4, 6), np.float32), 1)),
    (ValueError, r"xs\[1\] \(4, 3, 1\) must match xs\[0\] \(4, 3\)",
     lambda: C.concatenate_forward([X, np.zeros((4, 3, 1), np.float32)], np.zeros((4, 6), np.float32), 1)),
    (ValueError, r"y must have shape \(4, 6\) \(the inputs joined on axis -1\), got \(4, 5\)",
     lambda: C.concatenate_forward([X, X], np.zeros((4, 5), np.float32), -1)),
    (ValueError, r"xs\[0\] must have at least one dimension",
     lambda: C.concatenate_forward([np.ones((), np.float32)] * 2, np.zeros(2, np.float32), 0)),
    (ValueError, r"dy must have shape \(4, 6\)",
     lambda: C.concatenate_backward([X, X], np.zeros((4, 7), np.float32), [None, None], 1)),
    (ValueError, r"dxs\[0\] must have the shape of xs\[0\] \(4, 3\), got \(4, 6\)",
     lambda: C.concatenate_backward([X, X], np.zeros((4, 6), np.float32), [np.zeros((4, 6), np.float32), None], 1)),
]


@pytest.mark.parametrize("error,match,call", BAD_KERNEL_CALLS, ids=[m[:40] for _, m, _ in BAD_KERNEL_CALLS])
def test_bad_kernel_input_raises_a_clear_exception(error, match, call):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(NAMES), ids=list(NAMES.values()))
def test_merge_layer_eager_call_forward_and_backward(kind):
    xs = inputs(kind, 3, (5, 2, 3), seed=8)
    layer = LAYERS[kind]()
    y = layer(xs)
    assert isinstance(y, np.ndarray) and y.shape == (5, 2, 3)
    np.testing.assert_allclose(y, ref_forward(kind, xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(FUNCTIONS[kind](xs), y)
    assert layer.output_shape == (2, 3)
    assert layer.compute_output_shape([(2, 3)] * len(xs)) == (2, 3)
    dy = np.random.default_rng(9).standard_normal((5, 2, 3)).astype(np.float32)
    dxs = layer.backward(dy)
    assert isinstance(dxs, list) and len(dxs) == len(xs)
    for got, want in zip(dxs, ref_backward(kind, xs, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert layer.backward(dy, need_dx=False) == [None] * len(xs)


def test_concatenate_layer_axis_counts_the_batch_axis_like_keras():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 2, 5)).astype(np.float32)
    b = rng.standard_normal((4, 3, 5)).astype(np.float32)
    c = rng.standard_normal((4, 2, 1)).astype(np.float32)
    np.testing.assert_array_equal(dc.Concatenate(axis=1)([a, b]), np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(dc.Concatenate(axis=-2)([a, b]), np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(dc.Concatenate()([a, c]), np.concatenate([a, c], axis=-1))
    np.testing.assert_array_equal(dc.layers.concatenate([a, c], axis=2), np.concatenate([a, c], axis=2))
    layer = dc.Concatenate(axis=1)
    assert layer.compute_output_shape([(2, 5), (3, 5), (1, 5)]) == (6, 5)
    y = layer([a, b])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    da, db = layer.backward(dy)
    np.testing.assert_array_equal(da, dy[:, :2])
    np.testing.assert_array_equal(db, dy[:, 2:])
    assert layer.backward(dy, need_dx=False) == [None, None]


def test_layer_buffers_are_reused_per_batch_size():
    layer = dc.Add()
    xs = inputs(ADD, 2, (8, 3))
    layer._build_for([(3,), (3,)])
    y1 = layer.forward(xs)
    d1 = layer.backward(y1)
    y2 = layer.forward(xs)
    d2 = layer.backward(y2)
    assert y1 is y2 and all(p is q for p, q in zip(d1, d2))
    y3 = layer.forward([x[:5] for x in xs])
    assert y3 is not y1 and y3.shape == (5, 3)


@pytest.mark.parametrize("make", [dc.Add, dc.Multiply, dc.Maximum, lambda: dc.Concatenate(axis=1)],
                         ids=["Add", "Multiply", "Maximum", "Concatenate"])
def test_per_call_state_lets_one_layer_serve_two_calls(make):
    """What a graph engine does with a layer called twice in a step: it swaps
    the _per_call attributes around each call. Backward of the first call
    after the second call's forward must give the first call's gradients."""
    layer = make()
    assert isinstance(layer._per_call, tuple) and "_bufs" in layer._per_call
    xa, xb = inputs(MULTIPLY, 2, (4, 3), seed=1), inputs(MULTIPLY, 2, (4, 3), seed=2)
    out_shape = make()(xa).shape
    dy = np.random.default_rng(0).standard_normal(out_shape).astype(np.float32)
    want_a = [d.copy() for d in _grads(make(), xa, dy)]
    layer._build_for([(3,), (3,)])
    fresh = {name: getattr(layer, name) for name in layer._per_call}
    layer.forward(xa)
    saved_a = {name: getattr(layer, name) for name in layer._per_call}
    for name in layer._per_call:
        setattr(layer, name, _BatchBuffers() if name == "_bufs" else fresh[name])
    layer.forward(xb)
    for name, value in saved_a.items():
        setattr(layer, name, value)
    for got, want in zip(layer.backward(dy), want_a):
        np.testing.assert_array_equal(got, want)


def _grads(layer, xs, dy):
    layer(xs)
    return layer.backward(dy)


BAD_LAYER_CALLS = [
    ("Add 'bad_add' needs inputs of one shape, got input shapes \\[\\(None, 3\\), \\(None, 4\\)\\]",
     lambda: dc.Add(name="bad_add")([np.zeros((2, 3)), np.zeros((2, 4))])),
    ("Multiply 'bad_mul' must be called on a list of at least 2 inputs, got 1",
     lambda: dc.Multiply(name="bad_mul")([np.zeros((2, 3))])),
    ("Average 'bad_avg' must be called on a list of inputs",
     lambda: dc.Average(name="bad_avg").compute_output_shape((3,))),
    ("Subtract 'bad_sub' must be called on exactly 2 inputs, got 3",
     lambda: dc.Subtract(name="bad_sub")([np.zeros((2, 3))] * 3)),
    ("Maximum 'bad_max' takes at most 64 inputs, got 65",
     lambda: dc.Maximum(name="bad_max")([np.zeros((2, 3))] * 65)),
    ("Concatenate 'bad_cat' needs inputs that match on every axis but axis -1",
     lambda: dc.Concatenate(name="bad_cat")([np.zeros((2, 3, 4)), np.zeros((2, 2, 4))])),
    ("Concatenate 'bad_rank' needs inputs of one rank",
     lambda: dc.Concatenate(name="bad_rank")([np.zeros((2, 3, 4)), np.zeros((2, 3))])),
    ("Concatenate 'bad_axis': axis 3 is out of range for inputs of 3 dimensions",
     lambda: dc.Concatenate(axis=3, name="bad_axis")([np.zeros((2, 3, 4))] * 2)),
    ("Concatenate 'batch_axis': axis 0 is the batch axis",
     lambda: dc.Concatenate(axis=0, name="batch_axis")([np.zeros((2, 3))] * 2)),
    ("Concatenate 'batch_axis2': axis -3 is the batch axis",
     lambda: dc.Concatenate(axis=-3, name="batch_axis2")([np.zeros((2, 3, 4))] * 2)),
]


@pytest.mark.parametrize("match,call", BAD_LAYER_CALLS, ids=[m.split("'")[1] for m, _ in BAD_LAYER_CALLS])
def test_shapes_that_do_not_merge_raise_value_error_naming_the_layer_and_the_shapes(match, call):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_built_layer_refuses_inputs_of_other_shapes():
    layer = dc.Add(name="built_add")
    layer([np.zeros((2, 3)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="built_add"):
        layer([np.zeros((2, 4)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"Add 'built_add' expected inputs of shapes \[\(None, 3\), \(None, 3\)\]"):
        layer.forward([np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32)])
    with pytest.raises(ValueError, match="expects a list of 2 inputs, got 3 tensors"):
        layer.forward([np.zeros((2, 3), np.float32)] * 3)


def test_concatenate_axis_must_be_an_int():
    with pytest.raises(TypeError, match="axis must be an int"):
        dc.Concatenate(axis=1.0)


@pytest.mark.parametrize("layer", [dc.Add(name="a1"), dc.Subtract(), dc.Multiply(), dc.Average(), dc.Maximum(),
                                   dc.Minimum(), dc.Concatenate(axis=2, name="cat"), dc.Reshape((2, -1))],
                         ids=lambda layer: type(layer).__name__)
def test_get_config_round_trips(layer):
    cfg = layer.get_config()
    clone = type(layer).from_config(cfg)
    assert clone.get_config() == cfg
    if isinstance(layer, dc.Concatenate):
        assert cfg["axis"] == 2
    if isinstance(layer, dc.Reshape):
        assert cfg["target_shape"] == [2, -1]


def test_layers_are_exported_with_keras_names():
    for name in ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Reshape",
                 "RepeatVector"]:
        assert getattr(dc, name) is getattr(dc.layers, name)
    for name in ["add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate"]:
        assert callable(getattr(dc.layers, name))
    assert all(cls.supports_device for cls in (dc.Add, dc.Concatenate, dc.Reshape, dc.RepeatVector))


# --------------------------------------------------------------------------
# Reshape
# --------------------------------------------------------------------------
@pytest.mark.parametrize("target,want", [((3, 4), (3, 4)), ((-1, 2, 2), (3, 2, 2)), ((12,), (12,)),
                                         ((2, -1), (2, 6)), (6 * 2, (12,))], ids=str)
def test_reshape_is_a_view_with_one_inferred_dimension(target, want):
    x = np.arange(5 * 12, dtype=np.float32).reshape(5, 12)
    layer = dc.Reshape(target)
    layer._build_for((12,))
    assert layer.output_shape == want
    y = layer.forward(x)
    assert y.shape == (5,) + want and np.shares_memory(y, x)
    np.testing.assert_array_equal(y.reshape(5, 12), x)
    dx = layer.backward(y)
    assert dx.shape == (5, 12) and np.shares_memory(dx, x)
    assert layer.backward(y, need_dx=False) is None
    np.testing.assert_array_equal(dc.Reshape(target)(x), y)  # the eager call


def test_reshape_bad_targets_raise():
    with pytest.raises(ValueError, match="at most one -1"):
        dc.Reshape((-1, -1))
    with pytest.raises(ValueError, match="must be positive"):
        dc.Reshape((0, 3))
    with pytest.raises(TypeError, match="tuple of ints"):
        dc.Reshape((2.5, 3))
    with pytest.raises(ValueError, match=r"Reshape 'r5' cannot reshape samples of shape \(12,\) \(12 values\) to "
                                         r"\(5, -1\): 12 is not a multiple of 5"):
        dc.Reshape((5, -1), name="r5")(np.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"Reshape 'r13' cannot reshape samples of shape \(12,\) \(12 values\) to "
                                         r"\(13,\) \(13 values\)"):
        dc.Reshape((13,), name="r13")(np.zeros((2, 12)))


def test_reshape_trains_inside_a_sequential_model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    dc.set_random_seed(1)
    model = dc.Sequential([dc.Input((12,)), dc.Reshape((3, 4)), dc.Flatten(), dc.Dense(3, activation="softmax")])
    dc.set_random_seed(1)
    plain = dc.Sequential([dc.Input((12,)), dc.Dense(3, activation="softmax")])
    plain.set_weights(model.get_weights())
    for m in (model, plain):
        m.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    h1 = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0).history["loss"]
    h2 = plain.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0).history["loss"]
    assert h1 == h2
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# PyTorch parity (skipped without PyTorch)
# --------------------------------------------------------------------------
def test_concatenate_and_maximum_match_pytorch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((6, 4, s)).astype(np.float32) for s in (2, 5, 3)]
    dy = rng.standard_normal((6, 4, 10)).astype(np.float32)
    layer = dc.Concatenate(axis=-1)
    y = layer(xs)
    dxs = layer.backward(dy)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    ty = torch.cat(ts, dim=-1)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    for d, t in zip(dxs, ts):
        np.testing.assert_array_equal(d, t.grad.numpy())

    xs = [rng.standard_normal((6, 7)).astype(np.float32) for _ in range(2)]  # no ties: PyTorch splits those
    dy = rng.standard_normal((6, 7)).astype(np.float32)
    layer = dc.Maximum()
    y = layer(xs)
    dxs = layer.backward(dy)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    ty = torch.maximum(ts[0], ts[1])
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    for d, t in zip(dxs, ts):
        np.testing.assert_array_equal(d, t.grad.numpy())


@pytest.mark.parametrize("make", [dc.Add, dc.Multiply, dc.Maximum, lambda: dc.Concatenate(axis=-1)],
                         ids=["Add", "Multiply", "Maximum", "Concatenate"])
def test_merge_layers_on_the_fake_device_compute_through_the_kernel_module_only(fake_cuda, make):
    """On the CPU-backed fake of deepcore._cuda (tests/fake_cuda.py), whose
    tensors refuse NumPy math: the layers call only ops(x) kernels and give
    the CPU's bits."""
    xs = inputs(MULTIPLY, 3, (5, 4), seed=3)
    cpu, fake = make(), make()
    for layer in (cpu, fake):
        layer._build_for([(4,)] * 3)
    y = cpu.forward(xs)
    fy = fake.forward([fake_cuda.to_device(x) for x in xs])
    np.testing.assert_array_equal(fy.to_numpy(), y)
    dy = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    for f, c in zip(fake.backward(fake_cuda.to_device(dy)), cpu.backward(dy)):
        np.testing.assert_array_equal(f.to_numpy(), c)


# --------------------------------------------------------------------------
# RepeatVector
# --------------------------------------------------------------------------
def repeat_fold32(dy):
    """repeat_backward's float32 arithmetic: the n gradients added in order."""
    acc = dy[:, 0].copy()
    for j in range(1, dy.shape[1]):
        acc = acc + dy[:, j]
    return acc


@pytest.mark.parametrize("rows,n,cols", [(3, 1, 4), (5, 4, 7), (2, 9, 1100), (0, 3, 2)], ids=str)
def test_repeat_kernels_match_numpy_and_the_float32_fold(rows, n, cols):
    rng = np.random.default_rng(rows + n)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    y = np.full((rows, n, cols), np.nan, np.float32)
    C.repeat_forward(x, y)
    np.testing.assert_array_equal(y, np.repeat(x[:, None, :], n, axis=1))
    dy = rng.standard_normal((rows, n, cols)).astype(np.float32)
    dx = np.full((rows, cols), np.nan, np.float32)
    C.repeat_backward(dy, dx)
    np.testing.assert_array_equal(dx.view(np.uint32), repeat_fold32(dy).view(np.uint32))
    np.testing.assert_allclose(dx, dy.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5)


def test_repeat_vector_layer_forward_backward_and_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((3, 5, 4))
    layer = dc.RepeatVector(5)
    y = layer(x)
    assert y.shape == (3, 5, 4) and layer.output_shape == (5, 4)
    dx = layer.backward(w.astype(np.float32))
    fd = central_difference(lambda a: float(np.sum(w * np.repeat(a[:, None, :], 5, axis=1))), x)
    np.testing.assert_allclose(dx, fd, rtol=1e-5, atol=1e-5)
    assert layer.backward(w.astype(np.float32), need_dx=False) is None
    assert dc.RepeatVector.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.get_config()["n"] == 5


def test_repeat_vector_bad_input_raises():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        dc.RepeatVector(0)
    with pytest.raises(ValueError, match=r"RepeatVector 'rv3' expects 2-D input \(batch, features\), got shape "
                                         r"\(None, 2, 3\)"):
        dc.RepeatVector(2, name="rv3")(np.zeros((4, 2, 3)))
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"repeat_forward: y must have shape \(4, n, 3\) for x \(4, 3\), got \(4, 3\)"):
        C.repeat_forward(x, x.copy())
    with pytest.raises(ValueError, match=r"repeat_backward: dx must have shape \(rows, cols\), got \(4, 1, 3\)"):
        C.repeat_backward(np.zeros((4, 2, 3), np.float32), np.zeros((4, 1, 3), np.float32))
    with pytest.raises(TypeError, match="dy must have dtype float32"):
        C.repeat_backward(np.zeros((4, 2, 3)), x)
