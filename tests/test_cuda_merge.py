"""The CUDA merge, concatenate and repeat kernels (cuda/merge.cu) against the CPU's,
bit for bit (ops/merge.h: every element folds its inputs in the same order
and no expression can become a fused multiply-add), their bad-input errors
in the CPU's words, and the merge layers running on device tensors. Skips
with deepcore.cuda.reason() without a usable device; under the CUDA host
emulator (tests/cuda_emulator/run_tests.sh) the kernels run on the CPU."""

import numpy as np
import pytest

import deepcore as dc
from deepcore import _core as C
from device_data import dev

KINDS = {"add": 0, "subtract": 1, "multiply": 2, "average": 3, "maximum": 4, "minimum": 5}
TWINS = ["merge_forward", "merge_backward", "concatenate_forward", "concatenate_backward", "repeat_forward",
         "repeat_backward"]


def cuda_module():
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    return _cuda


def assert_bit_identical(gpu, cpu, what=""):
    gpu, cpu = np.asarray(gpu), np.asarray(cpu)
    assert gpu.shape == cpu.shape, what
    np.testing.assert_array_equal(gpu.view(np.uint32), cpu.view(np.uint32), err_msg=what)


def merge_inputs(kind, k, shape, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(2 if kind == 1 else k)]
    if kind in (4, 5) and xs[0].size > 4:  # ties, NaNs and signed zeros for the winner rule
        xs[1].reshape(-1)[:2] = xs[0].reshape(-1)[:2]
        xs[0].reshape(-1)[2] = np.nan
        xs[-1].reshape(-1)[3] = np.nan
        xs[0].reshape(-1)[4], xs[1].reshape(-1)[4] = 0.0, -0.0
    return xs


# --------------------------------------------------------------------------
# runs everywhere the CUDA module imports
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", TWINS)
def test_twin_has_the_cpu_name_and_signature(name):
    G = cuda_module()
    assert getattr(G, name).__doc__.splitlines()[0] == getattr(C, name).__doc__.splitlines()[0]


# --------------------------------------------------------------------------
# on a device
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("shape", [(7,), (4, 5), (3, 2, 33), (2, 700)], ids=str)
def test_merge_forward_and_backward_are_bit_identical_to_cpu(G, kind, k, shape):
    xs = merge_inputs(kind, k, shape, seed=k)
    dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = np.empty(shape, np.float32)
    C.merge_forward(kind, xs, y)
    dxs = [np.empty(shape, np.float32) for _ in xs]
    C.merge_backward(kind, xs, dy, dxs)
    gxs = [dev(G, x) for x in xs]
    gy = G.DeviceBuffer(shape)
    G.merge_forward(kind, gxs, gy)
    assert_bit_identical(gy.to_numpy(), y, "forward")
    gdxs = [G.DeviceBuffer(shape) for _ in xs]
    G.merge_backward(kind, gxs, dev(G, dy), gdxs)
    for i, (g, c) in enumerate(zip(gdxs, dxs)):
        assert_bit_identical(g.to_numpy(), c, f"dx[{i}]")


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_merge_backward_on_the_gpu_skips_none_entries(G, kind):
    xs = merge_inputs(kind, 3, (4, 6), seed=2)
    dy = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    present = [False, True] if kind == 1 else [True, False, True]
    dxs = [np.empty((4, 6), np.float32) if p else None for p in present]
    C.merge_backward(kind, xs, dy, dxs)
    sentinel = np.full((4, 6), 7.0, np.float32)
    gdxs = [dev(G, sentinel) if p else None for p in present]
    G.merge_backward(kind, [dev(G, x) for x in xs], dev(G, dy), gdxs)
    for g, c in zip(gdxs, dxs):
        if c is not None:
            assert_bit_identical(g.to_numpy(), c)
    G.merge_backward(kind, [dev(G, x) for x in xs], dev(G, dy), [None] * len(xs))


def test_merge_forward_on_the_gpu_may_write_over_the_first_input(G):
    xs = merge_inputs(0, 3, (5, 6), seed=4)
    want = np.empty((5, 6), np.float32)
    C.merge_forward(0, xs, want)
    gxs = [dev(G, x) for x in xs]
    G.merge_forward(0, gxs, gxs[0])
    assert_bit_identical(gxs[0].to_numpy(), want)


@pytest.mark.parametrize("shape,axis", [((4, 3), 1), ((4, 3), 0), ((2, 3, 5), -2), ((2, 3, 5), -1),
                                        ((3, 2, 4, 2), 2), ((6,), 0)], ids=str)
def test_concatenate_forward_and_backward_match_cpu(G, shape, axis):
    rng = np.random.default_rng(0)
    xs = []
    for w in (2, 1, 3):
        s = list(shape)
        s[axis] = w
        xs.append(rng.standard_normal(s).astype(np.float32))
    y = np.concatenate(xs, axis=axis)
    gxs = [dev(G, x) for x in xs]
    gy = G.DeviceBuffer(y.shape)
    G.concatenate_forward(gxs, gy, axis)
    assert_bit_identical(gy.to_numpy(), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gdxs = [G.DeviceBuffer(x.shape) for x in xs]
    G.concatenate_backward(gxs, dev(G, dy), gdxs, axis)
    for g, part in zip(gdxs, np.split(dy, [2, 3], axis=axis)):
        assert_bit_identical(g.to_numpy(), part)
    gdxs = [None, dev(G, np.full(xs[1].shape, 7.0, np.float32)), None]
    G.concatenate_backward(gxs, dev(G, dy), gdxs, axis)
    assert_bit_identical(gdxs[1].to_numpy(), np.split(dy, [2, 3], axis=axis)[1])


def test_concatenate_on_the_gpu_handles_empty_and_zero_width_inputs(G):
    G.concatenate_forward([dev(G, np.ones((0, 3), np.float32))] * 2, G.DeviceBuffer((0, 6)), 1)
    a, b = np.ones((2, 0), np.float32), np.full((2, 2), 3.0, np.float32)
    gy = G.DeviceBuffer((2, 2))
    G.concatenate_forward([dev(G, a), dev(G, b)], gy, 1)
    assert_bit_identical(gy.to_numpy(), b)


def test_sixty_four_inputs_on_the_gpu(G):
    xs = [np.full((5,), i, np.float32) for i in range(64)]
    gy = G.DeviceBuffer((5,))
    G.merge_forward(2, [dev(G, x + 1) for x in xs], gy)  # a product of 64 numbers: 64!
    want = np.empty(5, np.float32)
    C.merge_forward(2, [x + 1 for x in xs], want)
    assert_bit_identical(gy.to_numpy(), want)
    gy = G.DeviceBuffer((5 * 64,))
    G.concatenate_forward([dev(G, x) for x in xs], gy, 0)
    assert_bit_identical(gy.to_numpy(), np.concatenate(xs))


def test_bad_input_raises_like_cpu(G):
    X = np.zeros((4, 3), np.float32)
    Z5, Z6 = np.zeros((4, 5), np.float32), np.zeros((4, 6), np.float32)
    calls = [
        ("merge_forward", lambda d: (9, [d(X), d(X)], d(X))),
        ("merge_forward", lambda d: (1, [d(X)] * 3, d(X))),
        ("merge_forward", lambda d: (0, [], d(X))),
        ("merge_forward", lambda d: (0, [d(X)] * 65, d(X))),
        ("merge_forward", lambda d: (0, [d(X), d(Z5)], d(X))),
        ("merge_forward", lambda d: (0, [d(X), d(X)], d(Z5))),
        ("merge_backward", lambda d: (0, [d(X), d(X)], d(X), [d(X)])),
        ("merge_backward", lambda d: (0, [d(X), d(X)], d(X), [None, d(Z5)])),
        ("concatenate_forward", lambda d: ([d(X), d(X)], d(Z6), 2)),
        ("concatenate_forward", lambda d: ([d(X), d(Z5.T.copy())], d(Z6), 1)),
        ("concatenate_forward", lambda d: ([d(X), d(X)], d(Z5), -1)),
        ("concatenate_backward", lambda d: ([d(X), d(X)], d(Z5), [None, None], 1)),
        ("concatenate_backward", lambda d: ([d(X), d(X)], d(Z6), [d(Z6), None], 1)),
    ]
    for name, args in calls:
        with pytest.raises(ValueError) as cpu_err:
            getattr(C, name)(*args(lambda a: a.copy()))
        with pytest.raises(ValueError) as gpu_err:
            getattr(G, name)(*args(lambda a: dev(G, a)))
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match=r"merge_forward: xs\[1\] must be a deepcore._cuda.DeviceBuffer"):
        G.merge_forward(0, [dev(G, X), X], dev(G, X))
    with pytest.raises(TypeError, match="xs must be a list of deepcore._cuda.DeviceBuffer float32 tensors"):
        G.merge_forward(0, dev(G, X), dev(G, X))
    with pytest.raises(TypeError, match=r"concatenate_forward: y must .*float32"):
        G.concatenate_forward([dev(G, X)] * 2, G.DeviceBuffer((4, 6), "int32"), 1)


@pytest.mark.parametrize("make", [dc.Add, dc.Subtract, dc.Multiply, dc.Average, dc.Maximum, dc.Minimum,
                                  lambda: dc.Concatenate(axis=1)],
                         ids=["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"])
def test_merge_layers_run_on_device_tensors_like_on_the_cpu(G, make):
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((6, 4)).astype(np.float32) for _ in range(2)]
    cpu, gpu = make(), make()
    for layer in (cpu, gpu):
        layer._build_for([(4,), (4,)])
    y = cpu.forward(xs)
    gy = gpu.forward([dev(G, x) for x in xs])
    assert isinstance(gy, G.DeviceBuffer)
    assert_bit_identical(gy.to_numpy(), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for g, c in zip(gpu.backward(dev(G, dy)), cpu.backward(dy)):
        assert_bit_identical(g.to_numpy(), c)


def test_reshape_is_a_view_of_device_tensors(G):
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    layer = dc.Reshape((-1, 4))
    layer._build_for((12,))
    gy = layer.forward(dev(G, x))
    assert gy.shape == (2, 3, 4)
    assert_bit_identical(gy.to_numpy(), x.reshape(2, 3, 4))
    assert layer.backward(gy).shape == (2, 12)


@pytest.mark.parametrize("rows,n,cols", [(3, 1, 4), (5, 4, 7), (2, 9, 300), (0, 2, 3)], ids=str)
def test_repeat_forward_and_backward_are_bit_identical_to_cpu(G, rows, n, cols):
    rng = np.random.default_rng(rows + n)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, n, cols)).astype(np.float32)
    y, dx = np.empty((rows, n, cols), np.float32), np.empty((rows, cols), np.float32)
    C.repeat_forward(x, y)
    C.repeat_backward(dy, dx)
    gy, gdx = G.DeviceBuffer((rows, n, cols)), G.DeviceBuffer((rows, cols))
    G.repeat_forward(dev(G, x), gy)
    G.repeat_backward(dev(G, dy), gdx)
    assert_bit_identical(gy.to_numpy(), y, "y")
    assert_bit_identical(gdx.to_numpy(), dx, "dx")
    X, Y = np.zeros((4, 3), np.float32), np.zeros((4, 2, 3), np.float32)
    for name, args in [("repeat_forward", (X, X)), ("repeat_forward", (Y, Y)), ("repeat_backward", (X, X)),
                       ("repeat_backward", (Y, np.zeros((5, 3), np.float32)))]:
        with pytest.raises(ValueError) as cpu_err:
            getattr(C, name)(*[a.copy() for a in args])
        with pytest.raises(ValueError) as gpu_err:
            getattr(G, name)(*[dev(G, a) for a in args])
        assert str(gpu_err.value) == str(cpu_err.value)


def test_repeat_vector_layer_runs_on_device_tensors_like_on_the_cpu(G):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    cpu, gpu = dc.RepeatVector(3), dc.RepeatVector(3)
    for layer in (cpu, gpu):
        layer._build_for((4,))
    assert_bit_identical(gpu.forward(dev(G, x)).to_numpy(), cpu.forward(x))
    dy = np.random.default_rng(1).standard_normal((6, 3, 4)).astype(np.float32)
    assert_bit_identical(gpu.backward(dev(G, dy)).to_numpy(), cpu.backward(dy))
