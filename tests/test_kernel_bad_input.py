"""Every deepcore._core binding rejects bad input with a Python exception that
says what is wrong (never a crash, never a silent copy or conversion).

The table BINDINGS lists each binding with a factory of valid keyword
arguments and, for each array argument, its dtype and whether it is written.
Each rule (float64 -> TypeError naming the dtype, strided -> ValueError
"C-contiguous", list -> TypeError, read-only output -> ValueError "writable")
is then checked for every array argument of every binding.
"""

import re

import numpy as np
import pytest

import deepcore  # noqa: F401  (loads OpenBLAS before the extension)
from deepcore import _core as C

f32, i32, i64 = np.float32, np.int32, np.int64


def _z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


def _adam():
    h = C.OptParams()
    h.kind, h.lr = 3, 0.01
    return h


# name -> (valid kwargs factory, {array arg: (dtype, is_output)})
BINDINGS = {
    "activation_forward": (
        lambda: dict(kind=1, x=_z(3, 4), y=_z(3, 4)),
        {"x": (f32, False), "y": (f32, True)}),
    "activation_backward": (
        lambda: dict(kind=1, x=_z(3, 4), y=_z(3, 4), dy=_z(3, 4), dx=_z(3, 4)),
        {"x": (f32, False), "y": (f32, False), "dy": (f32, False), "dx": (f32, True)}),
    "swish_forward": (
        lambda: dict(x=_z(3, 4), y=_z(3, 4), beta=_z(1)),
        {"x": (f32, False), "y": (f32, True), "beta": (f32, False)}),
    "swish_backward": (
        lambda: dict(x=_z(3, 4), dy=_z(3, 4), dx=_z(3, 4), beta=_z(1)),
        {"x": (f32, False), "dy": (f32, False), "dx": (f32, True), "beta": (f32, False)}),
    "swish_beta_grad": (
        lambda: dict(x=_z(3, 4), dy=_z(3, 4), beta=_z(1), dbeta=_z(1)),
        {"x": (f32, False), "dy": (f32, False), "beta": (f32, False), "dbeta": (f32, True)}),
    "sgemm": (
        lambda: dict(a=_z(3, 4), b=_z(4, 5), c=_z(3, 5)),
        {"a": (f32, False), "b": (f32, False), "c": (f32, True)}),
    "dense_forward": (
        lambda: dict(x=_z(4, 3), w=_z(3, 2), b=_z(2), z=_z(4, 2), y=_z(4, 2), kind=3),
        {"x": (f32, False), "w": (f32, False), "b": (f32, False), "z": (f32, True), "y": (f32, True)}),
    "dense_backward": (
        lambda: dict(x=_z(4, 3), w=_z(3, 2), z=_z(4, 2), y=_z(4, 2), dy=_z(4, 2), dz_buf=_z(4, 2),
                     dx=_z(4, 3), dw=_z(3, 2), db=_z(2), kind=3),
        {"x": (f32, False), "w": (f32, False), "z": (f32, False), "y": (f32, False), "dy": (f32, False),
         "dz_buf": (f32, True), "dx": (f32, True), "dw": (f32, True), "db": (f32, True)}),
    "loss_forward_backward": (
        lambda: dict(kind=0, y_pred=_z(4, 3), y_true=_z(4, 3), grad=_z(4, 3), param=1.0),
        {"y_pred": (f32, False), "y_true": (f32, False), "grad": (f32, True)}),
    "sparse_categorical_crossentropy": (
        lambda: dict(y_pred=_z(4, 3), labels=_z(4, dtype=i32), grad=_z(4, 3), from_logits=True),
        {"y_pred": (f32, False), "labels": (i32, False), "grad": (f32, True)}),
    "philox_uniform": (
        lambda: dict(out=_z(3, 4), seed=1, stream=2),
        {"out": (f32, True)}),
    "philox_normal": (
        lambda: dict(out=_z(3, 4), seed=1, stream=2),
        {"out": (f32, True)}),
    "gather_rows": (
        lambda: dict(src=_z(5, 3), indices=np.array([0, 4], i64), dst=_z(2, 3)),
        {"src": (None, False), "indices": (i64, False), "dst": (None, True)}),
    "count_nonfinite": (
        lambda: dict(x=_z(3, 4)),
        {"x": (f32, False)}),
    "perceptron_epoch": (
        lambda: dict(x=_z(4, 3), targets=_z(4, 2), w=_z(3, 2), b=_z(2), order=np.arange(4, dtype=i64), eta=0.1),
        {"x": (f32, False), "targets": (f32, False), "w": (f32, True), "b": (f32, True), "order": (i64, False)}),
    "sgd_update": (
        lambda: dict(params=_z(6), grads=_z(6), velocity=_z(6), learning_rate=0.1, momentum=0.9, nesterov=False),
        {"params": (f32, True), "grads": (f32, False), "velocity": (f32, True)}),
    "optimizer_step": (
        lambda: dict(hyper=_adam(), params=_z(6), grads=_z(6), slot0=_z(6), slot1=_z(6), slot2=None,
                     offsets=np.array([0, 2, 6], i64), l1=_z(2), l2=_z(2)),
        {"params": (f32, True), "grads": (f32, False), "slot0": (f32, True), "slot1": (f32, True),
         "offsets": (i64, False), "l1": (f32, False), "l2": (f32, False)}),
    "max_norm": (
        lambda: dict(w=_z(3, 4), first_axis=0, last_axis=0, max_value=1.0),
        {"w": (f32, True)}),
    "batchnorm_forward_train": (
        lambda: dict(x=_z(4, 3, 2), gamma=_z(3), beta=_z(3), y=_z(4, 3, 2), mean=_z(3), inv_std=_z(3),
                     moving_mean=_z(3), moving_var=_z(3), epsilon=1e-3, momentum=0.99),
        {"x": (f32, False), "gamma": (f32, False), "beta": (f32, False), "y": (f32, True), "mean": (f32, True),
         "inv_std": (f32, True), "moving_mean": (f32, True), "moving_var": (f32, True)}),
    "batchnorm_forward_inference": (
        lambda: dict(x=_z(4, 3, 2), gamma=_z(3), beta=_z(3), moving_mean=_z(3), moving_var=_z(3) + 1,
                     y=_z(4, 3, 2), epsilon=1e-3),
        {"x": (f32, False), "gamma": (f32, False), "beta": (f32, False), "moving_mean": (f32, False),
         "moving_var": (f32, False), "y": (f32, True)}),
    "batchnorm_backward": (
        lambda: dict(x=_z(4, 3, 2), dy=_z(4, 3, 2), gamma=_z(3), mean=_z(3), inv_std=_z(3), dx=_z(4, 3, 2),
                     dgamma=_z(3), dbeta=_z(3)),
        {"x": (f32, False), "dy": (f32, False), "gamma": (f32, False), "mean": (f32, False),
         "inv_std": (f32, False), "dx": (f32, True), "dgamma": (f32, True), "dbeta": (f32, True)}),
}

ARRAY_ARGS = [pytest.param(fn, arg, id=f"{fn}-{arg}") for fn, (_, arrays) in BINDINGS.items() for arg in arrays]
OUTPUT_ARGS = [pytest.param(fn, arg, id=f"{fn}-{arg}")
               for fn, (_, arrays) in BINDINGS.items() for arg, (_, out) in arrays.items() if out]
TYPED_ARGS = [pytest.param(fn, arg, id=f"{fn}-{arg}")
              for fn, (_, arrays) in BINDINGS.items() for arg, (dt, _) in arrays.items() if dt is not None]
DTYPE_NAME = {f32: "float32", i32: "int32", i64: "int64"}


def call(fn, **overrides):
    kwargs = BINDINGS[fn][0]()
    kwargs.update(overrides)
    return getattr(C, fn)(**kwargs)


def names(msg, arg):
    """The message names `arg` as an argument (not merely as part of another
    word or of a slash-separated list of candidates)."""
    return re.search(rf"(?<![\w/]){re.escape(arg)}(?![\w/])", msg) is not None


def strided(a):
    """A non-contiguous view with the same shape, dtype and values as a."""
    big = np.repeat(a, 2, axis=-1)
    v = big[..., ::2]
    assert v.shape == a.shape and not v.flags.c_contiguous
    return v


@pytest.mark.parametrize("fn", sorted(BINDINGS))
def test_valid_arguments_are_accepted(fn):
    # Guards the table: each failure below comes from the one bad argument.
    call(fn)


@pytest.mark.parametrize("fn,arg", TYPED_ARGS)
def test_float64_array_is_type_error_naming_expected_dtype(fn, arg):
    good = BINDINGS[fn][0]()[arg]
    with pytest.raises(TypeError) as ei:
        call(fn, **{arg: good.astype(np.float64)})
    msg = str(ei.value)
    want = DTYPE_NAME[BINDINGS[fn][1][arg][0]]
    assert want in msg and "float64" in msg and fn in msg and names(msg, arg), msg


@pytest.mark.parametrize("fn,arg", [p for p in TYPED_ARGS if BINDINGS[p.values[0]][1][p.values[1]][0] is f32])
def test_other_float32_lookalikes_are_type_errors(fn, arg):
    good = BINDINGS[fn][0]()[arg]
    for bad in (good.astype(np.float16), good.astype(">f4"), good.astype(np.int32)):
        with pytest.raises(TypeError, match="float32"):
            call(fn, **{arg: bad})


# (A one-element array, such as Swish's beta, is C-contiguous whatever its strides.)
@pytest.mark.parametrize("fn,arg", [p for p in ARRAY_ARGS if BINDINGS[p.values[0]][0]()[p.values[1]].size > 1])
def test_non_contiguous_array_is_value_error_naming_c_contiguous(fn, arg):
    good = BINDINGS[fn][0]()[arg]
    with pytest.raises(ValueError) as ei:
        call(fn, **{arg: strided(good)})
    msg = str(ei.value)
    assert "C-contiguous" in msg and names(msg, arg), msg


@pytest.mark.parametrize("fn,arg", [p for p in ARRAY_ARGS if BINDINGS[p.values[0]][0]()[p.values[1]].ndim == 2])
def test_fortran_ordered_array_is_value_error(fn, arg):
    good = BINDINGS[fn][0]()[arg]
    with pytest.raises(ValueError, match="C-contiguous"):
        call(fn, **{arg: np.asfortranarray(good)})


@pytest.mark.parametrize("fn,arg", ARRAY_ARGS)
def test_list_instead_of_array_is_type_error(fn, arg):
    good = BINDINGS[fn][0]()[arg]
    with pytest.raises(TypeError) as ei:
        call(fn, **{arg: good.tolist()})
    assert names(str(ei.value), arg), str(ei.value)


@pytest.mark.parametrize("fn,arg", ARRAY_ARGS)
def test_scalar_instead_of_array_is_type_error(fn, arg):
    with pytest.raises(TypeError):
        call(fn, **{arg: 1.5})


@pytest.mark.parametrize("fn,arg", OUTPUT_ARGS)
def test_read_only_output_is_value_error(fn, arg):
    out = BINDINGS[fn][0]()[arg]
    out.setflags(write=False)
    with pytest.raises(ValueError) as ei:
        call(fn, **{arg: out})
    msg = str(ei.value)
    assert "writable" in msg and names(msg, arg), msg
    np.testing.assert_array_equal(out, 0)


# (binding, bad argument override, argument the message must name, shape strings it must contain)
SHAPE_CASES = [
    ("activation_forward", dict(y=_z(3, 5)), "y", ["(3, 4)", "(3, 5)"]),
    ("activation_forward", dict(y=_z(12)), "y", ["(3, 4)", "(12,)"]),
    ("activation_backward", dict(y=_z(4, 3)), "y", ["(3, 4)", "(4, 3)"]),
    ("activation_backward", dict(dy=_z(3, 5)), "dy", ["(3, 4)", "(3, 5)"]),
    ("activation_backward", dict(dx=_z(3, 4, 1)), "dx", ["(3, 4)", "(3, 4, 1)"]),
    ("swish_forward", dict(y=_z(3, 5)), "y", ["(3, 4)", "(3, 5)"]),
    ("swish_forward", dict(beta=_z(2)), "beta", ["()", "(1,)", "(2,)"]),
    ("swish_forward", dict(beta=_z(1, 1)), "beta", ["()", "(1,)", "(1, 1)"]),
    ("swish_backward", dict(dy=_z(4, 3)), "dy", ["(3, 4)", "(4, 3)"]),
    ("swish_backward", dict(dx=_z(12)), "dx", ["(3, 4)", "(12,)"]),
    ("swish_backward", dict(beta=_z(0)), "beta", ["()", "(1,)", "(0,)"]),
    ("swish_beta_grad", dict(dy=_z(3, 5)), "dy", ["(3, 4)", "(3, 5)"]),
    ("swish_beta_grad", dict(beta=_z(3, 4)), "beta", ["()", "(1,)", "(3, 4)"]),
    ("swish_beta_grad", dict(dbeta=_z(2)), "dbeta", ["()", "(1,)", "(2,)"]),
    ("sgemm", dict(a=_z(12)), "a", ["(12,)"]),
    ("sgemm", dict(b=_z(4, 5, 1)), "b", ["(4, 5, 1)"]),
    ("sgemm", dict(c=_z(5, 3)), "c", ["(3, 5)", "(5, 3)"]),
    ("sgemm", dict(b=_z(6, 5)), "op(b)", ["(3, 4)", "(6, 5)"]),
    ("dense_forward", dict(x=_z(12)), "x", ["(12,)"]),
    ("dense_forward", dict(w=_z(5, 2)), "w", ["(3, any)", "(5, 2)"]),
    ("dense_forward", dict(b=_z(3)), "b", ["(2", "(3,)"]),
    ("dense_forward", dict(z=_z(4, 3)), "z", ["(4, 2)", "(4, 3)"]),
    ("dense_forward", dict(y=_z(5, 2)), "y", ["(4, 2)", "(5, 2)"]),
    ("dense_backward", dict(w=_z(5, 2)), "w", ["(3, any)", "(5, 2)"]),
    ("dense_backward", dict(z=_z(4, 3)), "z", ["(4, 2)", "(4, 3)"]),
    ("dense_backward", dict(y=_z(4, 3)), "y", ["(4, 2)", "(4, 3)"]),
    ("dense_backward", dict(dy=_z(4, 3)), "dy", ["(4, 2)", "(4, 3)"]),
    ("dense_backward", dict(dz_buf=_z(4, 3)), "dz_buf", ["(4, 2)", "(4, 3)"]),
    ("dense_backward", dict(dx=_z(4, 2)), "dx", ["(4, 3)", "(4, 2)"]),
    ("dense_backward", dict(dw=_z(2, 3)), "dw", ["(3, 2)", "(2, 3)"]),
    ("dense_backward", dict(db=_z(3)), "db", ["(2", "(3,)"]),
    ("loss_forward_backward", dict(y_true=_z(4, 2)), "y_true", ["(4, 3)", "(4, 2)"]),
    ("loss_forward_backward", dict(grad=_z(3, 4)), "grad", ["(4, 3)", "(3, 4)"]),
    ("sparse_categorical_crossentropy", dict(labels=_z(5, dtype=i32)), "labels", ["(4", "(5,)"]),
    ("sparse_categorical_crossentropy", dict(y_pred=_z(12)), "y_pred", ["(12,)"]),
    ("sparse_categorical_crossentropy", dict(grad=_z(4, 4)), "grad", ["(4, 3)", "(4, 4)"]),
    ("gather_rows", dict(dst=_z(2, 4)), "dst", ["(2, 3)", "(2, 4)"]),
    ("gather_rows", dict(dst=_z(3, 3)), "dst", ["(2, 3)", "(3, 3)"]),
    ("gather_rows", dict(indices=np.zeros((2, 1), i64)), "indices", ["(2, 1)"]),
    ("perceptron_epoch", dict(w=_z(4, 2)), "w", ["(3, any)", "(4, 2)"]),
    ("perceptron_epoch", dict(targets=_z(4, 3)), "targets", ["(4, 2)", "(4, 3)"]),
    ("perceptron_epoch", dict(b=_z(3)), "b", ["(2", "(3,)"]),
    ("perceptron_epoch", dict(order=_z(3, dtype=i64)), "order", ["(4", "(3,)"]),
    ("sgd_update", dict(grads=_z(5)), "grads", ["(6,)", "(5,)"]),
    ("sgd_update", dict(velocity=_z(2, 3)), "velocity", ["(6,)", "(2, 3)"]),
]


@pytest.mark.parametrize("fn,override,arg,shapes", [
    pytest.param(*c, id=f"{c[0]}-{c[2]}-{list(c[1].values())[0].shape}") for c in SHAPE_CASES])
def test_wrong_shape_is_value_error_naming_argument_and_both_shapes(fn, override, arg, shapes):
    with pytest.raises(ValueError) as ei:
        call(fn, **{k: v.copy() for k, v in override.items()})
    msg = str(ei.value)
    assert msg.startswith(fn), msg
    assert names(msg, arg), f"message does not single out {arg!r}: {msg}"
    for s in shapes:
        assert s in msg, f"{s!r} missing from: {msg}"


def test_zero_dimensional_array_is_value_error():
    x = np.zeros((), f32)
    with pytest.raises(ValueError, match="at least one dimension"):
        C.activation_forward(1, x, x.copy())
    with pytest.raises(ValueError, match="at least one dimension"):
        C.loss_forward_backward(0, x, x.copy(), None, 1.0)
    with pytest.raises(ValueError):
        C.gather_rows(x, np.zeros(0, i64), np.zeros((), f32))


def test_swish_beta_as_a_number_is_type_error_naming_beta():
    # beta is a tensor the kernel reads (so that it can stay on the device), not a number.
    x = _z(3, 4)
    for call_ in (lambda b: C.swish_forward(x, x.copy(), b), lambda b: C.swish_backward(x, x, x.copy(), b),
                  lambda b: C.swish_beta_grad(x, x, b, _z(1))):
        with pytest.raises(TypeError, match=r"beta must be a numpy float32 array"):
            call_(1.0)
    with pytest.raises(TypeError, match=r"dbeta must have dtype float32, got float64"):
        C.swish_beta_grad(x, x, _z(1), np.zeros((), np.float64))


# --------------------------------------------------------------------------
# codes, indices, sizes, scalars
# --------------------------------------------------------------------------
@pytest.mark.parametrize("code", [13, -1, 100])
@pytest.mark.parametrize("fn", ["activation_forward", "activation_backward", "dense_forward", "dense_backward"])
def test_unknown_activation_code_is_value_error(fn, code):
    out_name = {"activation_forward": "y", "activation_backward": "dx", "dense_forward": "y",
                "dense_backward": "dw"}[fn]
    out = BINDINGS[fn][0]()[out_name]
    out[...] = 7.0
    with pytest.raises(ValueError, match=rf"unknown activation code {code}"):
        call(fn, kind=code, **{out_name: out})
    np.testing.assert_array_equal(out, 7.0)  # nothing was written


@pytest.mark.parametrize("code", [7, -1, 1000])
def test_unknown_loss_code_is_value_error(code):
    with pytest.raises(ValueError, match=rf"unknown loss code {code}"):
        call("loss_forward_backward", kind=code)


@pytest.mark.parametrize("bad", [5, -1, 2**62])
def test_gather_rows_index_out_of_range_is_value_error(bad):
    dst = np.full((2, 3), 3.0, f32)
    with pytest.raises(ValueError, match=r"out of range"):
        call("gather_rows", indices=np.array([0, bad], i64), dst=dst)
    np.testing.assert_array_equal(dst, 3.0)


def test_gather_rows_dtype_mismatch_between_src_and_dst_is_type_error():
    with pytest.raises(TypeError, match="dtype"):
        call("gather_rows", dst=_z(2, 3, dtype=i32))
    with pytest.raises(TypeError, match="dtype"):
        call("gather_rows", src=_z(5, 3, dtype=np.float64))


def test_int64_indices_of_an_equal_numpy_dtype_are_accepted():
    # np.longlong and np.int64 are equal dtypes (same kind, size, byte order);
    # a check by dtype object identity rejects one of them with the
    # self-contradictory TypeError "must have dtype int64, got int64".
    idx = np.array([4, 0], dtype=np.longlong)
    assert idx.dtype == np.dtype(np.int64)
    src = np.arange(15, dtype=f32).reshape(5, 3)
    dst = np.zeros((2, 3), f32)
    C.gather_rows(src, idx, dst)
    np.testing.assert_array_equal(dst, src[[4, 0]])


def test_labels_out_of_range_is_value_error():
    with pytest.raises(ValueError, match=r"out of range.*\[0, 3\)"):
        call("sparse_categorical_crossentropy", labels=np.array([0, 1, 3, 2], i32))


def test_perceptron_order_out_of_range_is_value_error():
    w = _z(3, 2)
    with pytest.raises(ValueError, match="out of range"):
        call("perceptron_epoch", order=np.array([0, 1, 4, 2], i64), w=w)
    with pytest.raises(ValueError, match="out of range"):
        call("perceptron_epoch", order=np.array([0, -1, 1, 2], i64))


def test_philox_permutation_negative_n_is_value_error():
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        C.philox_permutation(-1, 0, 0)


@pytest.mark.parametrize("counter,key", [
    ([0, 0, 0], [0, 0]),          # wrong length
    ([0, 0, 0, 0, 0], [0, 0]),
    ([0, 0, 0, 0], [0]),
    ([-1, 0, 0, 0], [0, 0]),      # not a uint32
    ([2**32, 0, 0, 0], [0, 0]),
    ([0.5, 0, 0, 0], [0, 0]),
])
def test_philox4x32_10_rejects_bad_counters_and_keys(counter, key):
    with pytest.raises(TypeError):
        C.philox4x32_10(counter, key)


@pytest.mark.parametrize("seed,stream", [(-1, 0), (0, -1), (2**64, 0), (0.5, 0)])
def test_philox_generators_reject_bad_seeds(seed, stream):
    for fn in ("philox_uniform", "philox_normal"):
        with pytest.raises(TypeError):
            call(fn, seed=seed, stream=stream)
    with pytest.raises(TypeError):
        C.philox_permutation(3, seed, stream)


def test_runtime_and_buffer_argument_errors():
    with pytest.raises(ValueError, match="n >= 1"):
        C.set_num_threads(0)
    with pytest.raises(ValueError, match="negative"):
        C.Buffer([2, -1])
    with pytest.raises(TypeError, match="float32"):
        C.Buffer([2], "float64")
    buf = np.asarray(C.Buffer([3, 2], "int64"))
    assert buf.dtype == np.int64 and buf.shape == (3, 2) and np.all(buf == 0)


def test_zero_sized_arrays_are_handled_without_crashing():
    e = np.zeros((0, 4), f32)
    C.activation_forward(12, e, e.copy())
    C.activation_backward(12, e, e.copy(), e.copy(), e.copy())
    dbeta = np.full((), 7.0, f32)
    C.swish_beta_grad(np.zeros(0, f32), np.zeros(0, f32), np.ones((), f32), dbeta)
    assert dbeta == 0.0  # the gradient over no elements is zero
    C.swish_forward(e, e.copy(), np.ones((), f32))
    C.swish_backward(e, e.copy(), e.copy(), np.ones((), f32))
    assert C.count_nonfinite(np.zeros(0, f32)) == 0
    C.philox_uniform(np.zeros(0, f32), 0, 0)
    C.philox_normal(np.zeros(0, f32), 0, 0, 0.0, 1.0, True)
    assert C.philox_permutation(0, 0, 0).shape == (0,)
    z = _z(0, 2)
    C.dense_forward(_z(0, 3), _z(3, 2), _z(2), z, z, 1)
    dw, db = np.full((3, 2), 9.0, f32), np.full(2, 9.0, f32)
    C.dense_backward(_z(0, 3), _z(3, 2), z, z, z.copy(), z.copy(), _z(0, 3), dw, db, 1)
    np.testing.assert_array_equal(dw, 0.0)  # a gradient over an empty batch is zero
    np.testing.assert_array_equal(db, 0.0)
    y = np.full((4, 2), 9.0, f32)
    C.dense_forward(_z(4, 0), _z(0, 2), np.ones(2, f32), _z(4, 2), y, 0)
    np.testing.assert_array_equal(y, 1.0)  # x W is zero, only the bias remains
    C.sgd_update(np.zeros(0, f32), np.zeros(0, f32), None, 0.1, 0.0, False)
