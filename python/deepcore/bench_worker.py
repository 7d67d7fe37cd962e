"""The measuring side of ``deepcore bench``: one process times one side
(NumPy, deepcore or PyTorch, or one coexistence case) of a few benchmark rows
and prints what it measured as one JSON line.

bench.py starts it as ``python -c <boot> <this file> <job>`` and loads this
file by its path, not as ``deepcore.bench_worker``: importing a module of the
package would import the package, and a NumPy or PyTorch process must not
load deepcore's native library (its thread pools are what a neighbour would
feel). So this module imports only the standard library and NumPy at the
top; the deepcore and PyTorch sides import their library inside their own
functions, and the job reports which libraries were loaded so that bench.py
can refuse a contaminated measurement.

A job (JSON): ``{"side": ..., "rows": [{"case": ..., "p": {...}}, ...],
"mt": seconds per timing, "threads": n, "quick": bool, "data": {n: path}}``.
Each case function returns a dict: ``t`` (seconds, or None when the side
cannot run the row) and any other numbers or labels the row prints.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback

import numpy as np

RESULT_MARK = "DEEPCORE_BENCH_RESULT "
SIDES = ("numpy", "deepcore", "torch")


# ------------------------------------------------------------------ timing
def _median_time(fn, min_time=0.2, repeats=7, sync=None):
    """Median seconds per call: calls are batched so each sample lasts >= min_time/repeats.
    ``sync`` (for asynchronous GPU work) is called at the end of each batch, inside the timing."""
    sync = sync or (lambda: None)
    fn()
    sync()
    n, t = 1, 0.0
    while True:  # calibrate the batch size
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        t = time.perf_counter() - t0
        if t >= min_time / repeats or n >= 1 << 20:
            break
        n *= 2
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / n)
    return float(np.median(samples))


def _paired_ratio(fn_a, fn_b, calls=20, repeats=41):
    """Median over repeats of time(a) / time(b), the two timed back to back in
    each repeat so that machine-load drift cancels out of the ratio (both in
    one process: use it only to compare two calls of the same library)."""
    fn_a(), fn_b()
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn_a()
        t1 = time.perf_counter()
        for _ in range(calls):
            fn_b()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return float(np.median(ratios))


# ------------------------------------------------------------------ cases
_CASES = {}


def _case(name, *sides):
    def register(fn):
        for side in sides:
            _CASES[(name, side)] = fn
        return fn
    return register


class _Ctx:
    def __init__(self, job):
        self.side = job["side"]
        self.mt = float(job.get("mt", 0.3))
        self.quick = bool(job.get("quick", False))
        self.threads = job.get("threads")
        self.data = job.get("data", {})
        self._torch = None

    def torch(self):
        """PyTorch, with as many threads as deepcore uses (set in this process only)."""
        if self._torch is None:
            import torch

            if self.threads:
                torch.set_num_threads(int(self.threads))
            self._torch = torch
        return self._torch

    def images(self, n):
        """The first n training rows (float32 784-vectors in [0, 1], int64 labels) bench.py saved."""
        path = self.data[str(n)]
        return np.load(path + ".x.npy"), np.load(path + ".y.npy")


def _core():
    from deepcore._native import core

    return core


# ---------------------------------------------------------------- kernels
@_case("sgemm", *SIDES)
def _sgemm(p, ctx):
    rng = np.random.default_rng(0)
    m, k, n = p["m"], p["k"], p["n"]
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    if ctx.side == "numpy":
        return {"t": _median_time(lambda: np.matmul(a, b, out=c), ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        return {"t": _median_time(lambda: core.sgemm(a, b, c), ctx.mt)}
    torch = ctx.torch()
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    return {"t": _median_time(lambda: torch.mm(ta, tb, out=tc), ctx.mt)}


@_case("axpby", *SIDES)
def _axpby(p, ctx):
    """y <- y + x in place (the graph engine's gradient sum)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(p["n"], dtype=np.float32), rng.standard_normal(p["n"], dtype=np.float32)
    if ctx.side == "numpy":
        return {"t": _median_time(lambda: np.add(y, x, out=y), ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        return {"t": _median_time(lambda: core.axpby(1.0, x, 1.0, y), ctx.mt)}
    torch = ctx.torch()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return {"t": _median_time(lambda: yt.add_(xt), ctx.mt)}


@_case("dense", *SIDES)
def _dense(p, ctx):
    rng = np.random.default_rng(0)
    m, k, n = p["m"], p["k"], p["n"]
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    z = np.empty((m, n), np.float32)
    if ctx.side == "numpy":
        def np_dense():
            np.matmul(x, w, out=z)
            np.add(z, bias, out=z)
            np.maximum(z, 0, out=z)

        return {"t": _median_time(np_dense, ctx.mt)}
    if ctx.side == "deepcore":
        from deepcore.activations import _CODES

        core, relu = _core(), _CODES["relu"]
        dense = lambda: core.dense_forward(x, w, bias, z, z, relu)  # noqa: E731
        gemm = lambda: core.sgemm(x, w, z)  # noqa: E731
        return {"t": _median_time(dense, ctx.mt), "t_gemm": _median_time(gemm, ctx.mt),
                "overhead": _paired_ratio(dense, gemm, repeats=15 if ctx.quick else 41)}
    torch = ctx.torch()
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)
    return {"t": _median_time(lambda: torch.relu_(torch.addmm(tb, tx, tw)), ctx.mt)}


def _np_act(name):
    """float32 NumPy forward and backward (given x, y, dy) for an activation."""
    f32 = np.float32
    erf = np.vectorize(math.erf, otypes=[f32])
    sig = lambda v: f32(1) / (f32(1) + np.exp(-v))  # noqa: E731
    table = {
        "sigmoid": (sig, lambda x, y, g: g * y * (1 - y)),
        "tanh": (np.tanh, lambda x, y, g: g * (1 - y * y)),
        "relu": (lambda x: np.maximum(x, 0), lambda x, y, g: g * (x > 0)),
        "leaky_relu": (lambda x: np.where(x > 0, x, f32(0.2) * x), lambda x, y, g: np.where(x > 0, g, f32(0.2) * g)),
        "elu": (lambda x: np.where(x > 0, x, np.expm1(x)), lambda x, y, g: np.where(x > 0, g, g * (y + 1))),
        "selu": (lambda x: f32(1.0507) * np.where(x > 0, x, f32(1.6733) * np.expm1(x)),
                 lambda x, y, g: np.where(x > 0, g * f32(1.0507), g * (y + f32(1.7581)))),
        "gelu": (lambda x: f32(0.5) * x * (1 + erf(x * f32(0.70710678))),
                 lambda x, y, g: g * (f32(0.5) * (1 + erf(x * f32(0.70710678))) + x * f32(0.39894228) * np.exp(-0.5 * x * x))),
        "gelu_tanh": (lambda x: f32(0.5) * x * (1 + np.tanh(f32(0.7978846) * (x + f32(0.044715) * x ** 3))),
                      lambda x, y, g: g * (lambda t: f32(0.5) * (1 + t) + f32(0.5) * x * (1 - t * t) * f32(0.7978846) * (1 + f32(0.134145) * x * x))(np.tanh(f32(0.7978846) * (x + f32(0.044715) * x ** 3)))),
        "swish": (lambda x: x * sig(x), lambda x, y, g: g * (lambda s: s + x * s * (1 - s))(sig(x))),
        "mish": (lambda x: x * np.tanh(np.logaddexp(0, x)),
                 lambda x, y, g: g * (lambda t: t + x * (1 - t * t) * sig(x))(np.tanh(np.logaddexp(0, x)))),
        "softplus": (lambda x: np.logaddexp(f32(0), x), lambda x, y, g: g * sig(x)),
        "softmax": (lambda x: (lambda e: e / e.sum(1, keepdims=True))(np.exp(x - x.max(1, keepdims=True))),
                    lambda x, y, g: y * (g - (g * y).sum(1, keepdims=True))),
    }
    return table.get(name)


def _torch_act(torch, name):
    F = torch.nn.functional
    return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "leaky_relu": lambda v: F.leaky_relu(v, 0.2), "elu": F.elu, "selu": F.selu,
            "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "swish": F.silu,
            "mish": F.mish, "softplus": F.softplus, "softmax": lambda v: torch.softmax(v, 1)}.get(name)


def _act_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 300), dtype=np.float32) * 3
    dy = rng.standard_normal((256, 300), dtype=np.float32)
    return x, dy


@_case("act", *SIDES)
def _act(p, ctx):
    name = p["name"]
    x, dy = _act_inputs()
    if ctx.side == "numpy":
        fns = _np_act(name)
        if fns is None:
            return {"t": None}
        fwd, bwd = fns
        return {"t": _median_time(lambda: bwd(x, fwd(x), dy), ctx.mt)}
    if ctx.side == "deepcore":
        from deepcore.activations import _CODES

        core, code = _core(), _CODES[name]
        alpha = {"leaky_relu": 0.2, "elu": 1.0}.get(name, 0.0)
        y, dx = np.empty_like(x), np.empty_like(x)

        def dc_act():
            core.activation_forward(code, x, y, alpha, 1.0)
            core.activation_backward(code, x, y, dy, dx, alpha, 1.0)

        return {"t": _median_time(dc_act, ctx.mt)}
    torch = ctx.torch()
    fn = _torch_act(torch, name)
    if fn is None:
        return {"t": None}
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tdy = torch.from_numpy(dy)
    return {"t": _median_time(lambda: torch.autograd.grad(fn(tx), tx, tdy), ctx.mt)}


@_case("swish_beta", *SIDES)
def _swish_beta(p, ctx):
    """The Swish layer's step: beta read from a tensor, dL/dbeta written to one
    (s = sigmoid(beta x); dx = dy (s + beta x s (1 - s)); dbeta = sum dy x^2 s (1 - s))."""
    x, dy = _act_inputs()
    y, dx = np.empty_like(x), np.empty_like(x)
    beta, dbeta = np.full((), 1.5, np.float32), np.zeros((), np.float32)
    if ctx.side == "numpy":
        sig = lambda v: np.float32(1) / (np.float32(1) + np.exp(-v))  # noqa: E731

        def np_swish():
            s = sig(beta * x)
            np.multiply(x, s, out=y)
            np.multiply(dy, s + beta * x * s * (1 - s), out=dx)
            return np.sum(dy * x * x * s * (1 - s), dtype=np.float64)

        return {"t": _median_time(np_swish, ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()

        def dc_swish():
            core.swish_forward(x, y, beta)
            core.swish_beta_grad(x, dy, beta, dbeta)
            core.swish_backward(x, dy, dx, beta)

        return {"t": _median_time(dc_swish, ctx.mt)}
    torch = ctx.torch()
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tbeta = torch.tensor(1.5, requires_grad=True)
    tdy = torch.from_numpy(dy)
    return {"t": _median_time(lambda: torch.autograd.grad(tx * torch.sigmoid(tbeta * tx), (tx, tbeta), tdy),
                              ctx.mt)}


# ------------------------------------------------------------- conv, pooling
def _same_pads(n, k, stride):
    """TensorFlow's "same" padding of one axis: (out, before, after)."""
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return out, total // 2, total - total // 2


def _np_conv_step(x, w, b, stride):
    """Conv2D "same" + bias + ReLU forward and backward (dx, dw, db) in float32
    NumPy: im2col through sliding_window_view, the GEMMs through np.matmul,
    col2im one kernel tap at a time."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    (oh, t, bt), (ow, l, r) = _same_pads(h, kh, stride), _same_pads(wd, kw, stride)
    xp = np.pad(x, ((0, 0), (t, bt), (l, r), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    col = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * oh * ow, kh * kw * c)
    z = col @ w.reshape(-1, f) + b
    y = np.maximum(z, 0)
    dz = (y > 0) * np.float32(1)  # dy = 1
    db = dz.sum(0)
    dw = col.T @ dz
    dcol = (dz @ w.reshape(-1, f).T).reshape(n, oh, ow, kh, kw, c)
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride] += dcol[:, :, :, i, j]
    return dxp[:, t:t + h, l:l + wd], dw, db


@_case("conv", *SIDES)
def _conv(p, ctx):
    """Conv2D "same" + bias + ReLU, forward and backward (dx, dw, db) with dy = 1."""
    rng = np.random.default_rng(0)
    n, h, c, k, f, stride = p["n"], p["h"], p["c"], p["k"], p["f"], p["stride"]
    x = rng.standard_normal((n, h, h, c), dtype=np.float32)
    w = rng.standard_normal((k, k, c, f), dtype=np.float32) * np.float32(0.1)
    b = rng.standard_normal(f, dtype=np.float32)
    if ctx.side == "numpy":
        return {"t": _median_time(lambda: _np_conv_step(x, w, b, stride), ctx.mt)}
    if ctx.side == "deepcore":
        from deepcore.activations import _CODES

        core, relu = _core(), _CODES["relu"]
        oh, ow, _, _ = core.conv2d_output_shape(h, h, (k, k), (stride, stride), (1, 1), "same")
        col = np.empty((n * oh * ow, k * k * c), np.float32)
        dcol = np.empty_like(col)
        z = np.empty((n, oh, ow, f), np.float32)
        dy, dz = np.ones_like(z), np.empty_like(z)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        args = ((stride, stride), (1, 1), "same", relu)

        def dc_conv():
            core.conv2d_forward(x, w, b, col, z, z, *args)
            core.conv2d_backward(x, w, col, z, z, dy, dz, dcol, dx, dw, db, *args)

        return {"t": _median_time(dc_conv, ctx.mt), "method": "im2col+sgemm"}
    torch = ctx.torch()
    F = torch.nn.functional
    (_, t, bt), (_, l, r) = _same_pads(h, k, stride), _same_pads(h, k, stride)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)  # NCHW, PyTorch's native layout
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_(True)
    tb = torch.from_numpy(b.copy()).requires_grad_(True)

    def torch_conv():
        out = torch.relu(F.conv2d(F.pad(tx, (l, r, t, bt)) if (l, r, t, bt) != (0, 0, 0, 0) else tx, tw, tb,
                                  stride=stride))
        return torch.autograd.grad(out, (tx, tw, tb), torch.ones_like(out))

    return {"t": _median_time(torch_conv, ctx.mt)}


@_case("maxpool", *SIDES)
def _maxpool(p, ctx):
    """MaxPooling2D 2x2 stride 2, forward and backward."""
    rng = np.random.default_rng(0)
    n, h, c = p["n"], p["h"], p["c"]
    x = rng.standard_normal((n, h, h, c), dtype=np.float32)
    o = h // 2
    if ctx.side == "numpy":
        def np_pool():
            v = x[:, :2 * o, :2 * o].reshape(n, o, 2, o, 2, c)
            y = v.max(axis=(2, 4))
            mask = v == y[:, :, None, :, None]  # (ties share the gradient: fine for timing)
            return y, mask * np.float32(1)

        return {"t": _median_time(np_pool, ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        y = np.empty((n, o, o, c), np.float32)
        arg = np.empty(y.shape, np.int32)
        dy, dx = np.ones_like(y), np.empty_like(x)

        def dc_pool():
            core.pool2d_forward(x, y, arg, (2, 2), (2, 2), "valid", "max")
            core.pool2d_backward(dy, arg, dx, (2, 2), (2, 2), "valid", "max")

        return {"t": _median_time(dc_pool, ctx.mt)}
    torch = ctx.torch()
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)

    def torch_pool():
        out = torch.nn.functional.max_pool2d(tx, 2)
        return torch.autograd.grad(out, tx, torch.ones_like(out))

    return {"t": _median_time(torch_pool, ctx.mt)}


@_case("xent", *SIDES)
def _xent(p, ctx):
    rows = p["rows"]
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((rows, 10), dtype=np.float32)
    labels = rng.integers(0, 10, rows).astype(np.int32)
    if ctx.side == "numpy":
        def np_xent():
            z = logits - logits.max(1, keepdims=True)
            e = np.exp(z)
            s = e.sum(1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(rows), labels]))
            g = e / s
            g[np.arange(rows), labels] -= 1
            g /= rows
            return loss, g

        return {"t": _median_time(np_xent, ctx.mt)}
    if ctx.side == "deepcore":
        core, grad = _core(), np.empty_like(logits)
        return {"t": _median_time(lambda: core.sparse_categorical_crossentropy(logits, labels, grad, True), ctx.mt)}
    torch = ctx.torch()
    tl = torch.from_numpy(logits.copy()).requires_grad_(True)
    tlab = torch.from_numpy(labels.astype(np.int64))
    F = torch.nn.functional
    return {"t": _median_time(lambda: torch.autograd.grad(F.cross_entropy(tl, tlab), tl), ctx.mt)}


# -------------------------------------------------------------- batchnorm
_BN = dict(n=256, c=300, eps=1e-3, momentum=0.99)


def _bn_inputs():
    rng = np.random.default_rng(0)
    n, c = _BN["n"], _BN["c"]
    x = (rng.standard_normal((n, c), dtype=np.float32) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal((n, c), dtype=np.float32)
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.standard_normal(c, dtype=np.float32)
    return x, dy, gamma, beta, np.zeros(c, np.float32), np.ones(c, np.float32)


@_case("bn_train", *SIDES)
def _bn_train(p, ctx):
    x, dy, gamma, beta, mm, mv = _bn_inputs()
    n, c, eps, momentum = _BN["n"], _BN["c"], _BN["eps"], _BN["momentum"]
    f32 = np.float32
    if ctx.side == "numpy":
        def np_train():
            mu = x.mean(0)
            xc = x - mu
            var = (xc * xc).mean(0)
            inv = f32(1) / np.sqrt(var + f32(eps))
            xhat = xc * inv
            out = gamma * xhat + beta
            mm[:] = mm * f32(momentum) + mu * f32(1 - momentum)
            mv[:] = mv * f32(momentum) + var * f32(1 - momentum)
            db = dy.sum(0)
            dg = (dy * xhat).sum(0)
            return out, (gamma * inv / f32(n)) * (f32(n) * dy - db - xhat * dg), dg, db

        return {"t": _median_time(np_train, ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        y, dx = np.empty_like(x), np.empty_like(x)
        mean, inv_std, dgamma, dbeta = (np.empty(c, np.float32) for _ in range(4))

        def dc_train():
            core.batchnorm_forward_train(x, gamma, beta, y, mean, inv_std, mm, mv, eps, momentum)
            core.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dgamma, dbeta)

        return {"t": _median_time(dc_train, ctx.mt)}
    torch = ctx.torch()
    F = torch.nn.functional
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tg = torch.from_numpy(gamma.copy()).requires_grad_(True)
    tb = torch.from_numpy(beta.copy()).requires_grad_(True)
    trm, trv, tdy = torch.zeros(c), torch.ones(c), torch.from_numpy(dy)

    def th_train():
        out = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=1 - momentum, eps=eps)
        torch.autograd.grad(out, (tx, tg, tb), tdy)

    return {"t": _median_time(th_train, ctx.mt)}


@_case("bn_infer", *SIDES)
def _bn_infer(p, ctx):
    x, _, gamma, beta, mm, mv = _bn_inputs()
    eps, f32 = _BN["eps"], np.float32
    y = np.empty_like(x)
    if ctx.side == "numpy":
        scale = (gamma / np.sqrt(mv + f32(eps))).astype(np.float32)
        return {"t": _median_time(lambda: np.add(np.multiply(np.subtract(x, mm, out=y), scale, out=y), beta, out=y),
                                  ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        return {"t": _median_time(lambda: core.batchnorm_forward_inference(x, gamma, beta, mm, mv, y, eps), ctx.mt)}
    torch = ctx.torch()
    F = torch.nn.functional
    tx0, tg0, tb0 = torch.from_numpy(x), torch.from_numpy(gamma), torch.from_numpy(beta)
    trm, trv = torch.from_numpy(mm), torch.from_numpy(mv)
    with torch.no_grad():
        return {"t": _median_time(lambda: F.batch_norm(tx0, trm, trv, tg0, tb0, training=False, eps=eps), ctx.mt)}


@_case("fold", "deepcore")
def _fold(p, ctx):
    """predict before and after fold_batchnorm, at batch 32 and 256; the ratio is paired (same library)."""
    import deepcore as dc

    X, yl = ctx.images(p["rows"])
    dc.set_random_seed(0)
    model = dc.Sequential([
        dc.Input(shape=[784]),
        dc.Dense(300, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(), dc.Activation("relu"),
        dc.Dense(100, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(), dc.Activation("relu"),
        dc.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.SGD(0.01, momentum=0.9))
    model.fit(X[:2048], yl[:2048], batch_size=32, epochs=1, verbose=0)
    folded = model.fold_batchnorm()
    out = {"t": None, "layers": len(model.layers), "layers_folded": len(folded.layers)}
    for bs in (32, 256):  # 32: predict's default
        out[f"err_{bs}"] = float(np.abs(folded.predict(X, batch_size=bs) - model.predict(X, batch_size=bs)).max())
        before = (lambda b=bs: model.predict(X, batch_size=b))
        after = (lambda b=bs: folded.predict(X, batch_size=b))
        out[f"before_{bs}"] = _median_time(before, ctx.mt, repeats=5)
        out[f"after_{bs}"] = _median_time(after, ctx.mt, repeats=5)
        out[f"ratio_{bs}"] = _paired_ratio(before, after, calls=1, repeats=5 if ctx.quick else 11)
    return out


# ---------------------------------------------------------------- dropout
_DROP_N, _DROP_RATE = 10_000_000, 0.3


def _drop_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(_DROP_N, dtype=np.float32)
    return rng, x, np.empty_like(x), np.empty_like(x), np.empty(_DROP_N, bool), np.empty((_DROP_N + 31) // 32, np.int32)


def _np_dropout(rng, x, y, u, keep):
    """A fresh mask from NumPy's Generator, then one fused-as-possible multiply."""
    scale = np.float32(1.0 / (1.0 - _DROP_RATE))

    def np_dropout():
        rng.random(out=u, dtype=np.float32)
        np.greater_equal(u, np.float32(_DROP_RATE), out=keep)
        np.multiply(x, keep, out=y)
        np.multiply(y, scale, out=y)

    return np_dropout


@_case("dropout_fwd", *SIDES)
def _dropout_fwd(p, ctx):
    rng, x, y, u, keep, bits = _drop_inputs()
    if ctx.side == "numpy":
        return {"t": _median_time(_np_dropout(rng, x, y, u, keep), ctx.mt)}
    if ctx.side == "deepcore":
        core, calls = _core(), iter(range(1 << 62))
        return {"t": _median_time(lambda: core.dropout_forward(x, y, _DROP_RATE, 1, 2, next(calls) & 0xFFFFFFFF,
                                                               bits), ctx.mt)}
    torch = ctx.torch()
    tx = torch.from_numpy(x)
    return {"t": _median_time(lambda: torch.nn.functional.dropout(tx, _DROP_RATE, training=True), ctx.mt)}


@_case("dropout_bwd", *SIDES)
def _dropout_bwd(p, ctx):
    """NumPy and PyTorch multiply by a stored mask; deepcore reads the 1-bit-per-element
    keep mask its forward stored (what the layers do), or regenerates the mask from the
    Philox key (no stored state)."""
    rng, x, y, u, keep, bits = _drop_inputs()
    scale = np.float32(1.0 / (1.0 - _DROP_RATE))
    _np_dropout(rng, x, y, u, keep)()
    if ctx.side == "numpy":
        return {"t": _median_time(lambda: np.multiply(np.multiply(x, keep, out=y), scale, out=y), ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        core.dropout_forward(x, y, _DROP_RATE, 1, 2, 0, bits)
        return {"t": _median_time(lambda: core.dropout_backward(x, y, _DROP_RATE, 1, 2, 0, bits), ctx.mt),
                "t_regen": _median_time(lambda: core.dropout_backward(x, y, _DROP_RATE, 1, 2, 0), ctx.mt)}
    torch = ctx.torch()
    tx, tmask = torch.from_numpy(x), torch.from_numpy(keep).to(torch.float32)
    return {"t": _median_time(lambda: tx * tmask * float(scale), ctx.mt)}


@_case("dropout_layer", *SIDES)
def _dropout_layer(p, ctx):
    """A layer-level call on a (1000, 10000) batch returning a fresh array, as a
    user calls it: NumPy's textbook expression, deepcore's Dropout layer
    (eager call, training=True) and torch.nn.Dropout in training mode.
    deepcore's side also times the bare kernel and the paired overhead."""
    rng, x, y, u, keep, bits = _drop_inputs()
    x = x.reshape(1000, _DROP_N // 1000)
    if ctx.side == "numpy":
        scale = np.float32(1.0 / (1.0 - _DROP_RATE))
        return {"t": _median_time(lambda: x * (rng.random(x.shape, dtype=np.float32) >= _DROP_RATE) * scale,
                                  ctx.mt)}
    if ctx.side == "deepcore":
        import deepcore as dc

        core, calls = _core(), iter(range(1 << 62))
        layer = dc.Dropout(_DROP_RATE, seed=1)
        y = y.reshape(x.shape)
        call = lambda: layer(x, training=True)  # noqa: E731
        kernel = lambda: core.dropout_forward(x, y, _DROP_RATE, 1, 2, next(calls) & 0xFFFFFFFF, bits)  # noqa: E731
        return {"t": _median_time(call, ctx.mt), "t_kernel": _median_time(kernel, ctx.mt),
                "overhead": _paired_ratio(call, kernel, calls=2, repeats=7 if ctx.quick else 21)}
    torch = ctx.torch()
    layer, tx = torch.nn.Dropout(_DROP_RATE).train(), torch.from_numpy(x)
    return {"t": _median_time(lambda: layer(tx), ctx.mt)}


@_case("alpha_fwd", *SIDES)
def _alpha_fwd(p, ctx):
    rng, x, y, u, keep, bits = _drop_inputs()
    rate, sat = _DROP_RATE, -1.7580993408473766
    if ctx.side == "numpy":
        a = 1.0 / np.sqrt((1 - rate) * (1 + rate * sat ** 2))
        b = -a * sat * rate

        def np_alpha_dropout():
            rng.random(out=u, dtype=np.float32)
            np.greater_equal(u, np.float32(rate), out=keep)
            np.copyto(y, np.float32(sat))
            np.copyto(y, x, where=keep)
            np.multiply(y, np.float32(a), out=y)
            np.add(y, np.float32(b), out=y)

        return {"t": _median_time(np_alpha_dropout, ctx.mt)}
    if ctx.side == "deepcore":
        core, calls = _core(), iter(range(1 << 62))
        return {"t": _median_time(lambda: core.alpha_dropout_forward(x, y, rate, 1, 2, next(calls) & 0xFFFFFFFF, bits),
                                  ctx.mt)}
    torch = ctx.torch()
    tx = torch.from_numpy(x)
    return {"t": _median_time(lambda: torch.nn.functional.alpha_dropout(tx, rate, training=True), ctx.mt)}


@_case("rrelu_fwd", *SIDES)
def _rrelu_fwd(p, ctx):
    rng, x, y, u, keep, bits = _drop_inputs()
    if ctx.side == "numpy":
        def np_rrelu():
            rng.random(out=u, dtype=np.float32)
            np.multiply(u, np.float32(1 / 3 - 1 / 8), out=u)
            np.add(u, np.float32(1 / 8), out=u)
            np.multiply(x, np.where(x >= 0, np.float32(1), u), out=y)

        return {"t": _median_time(np_rrelu, ctx.mt)}
    if ctx.side == "deepcore":
        core, calls = _core(), iter(range(1 << 62))
        return {"t": _median_time(lambda: core.rrelu_forward(x, y, 1 / 8, 1 / 3, True, 1, 3,
                                                             next(calls) & 0xFFFFFFFF), ctx.mt)}
    torch = ctx.torch()
    tx = torch.from_numpy(x)
    return {"t": _median_time(lambda: torch.nn.functional.rrelu(tx, 1 / 8, 1 / 3, training=True), ctx.mt)}


@_case("prelu", *SIDES)
def _prelu(p, ctx):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((256, 300), dtype=np.float32)
    dys = rng.standard_normal((256, 300), dtype=np.float32)
    al = np.full(300, 0.25, np.float32)
    ys, dxs, da = np.empty_like(xs), np.empty_like(xs), np.empty_like(al)
    if ctx.side == "numpy":
        def np_prelu():
            neg = xs <= 0
            np.multiply(xs, np.where(neg, al, np.float32(1)), out=ys)
            np.multiply(dys, np.where(neg, al, np.float32(1)), out=dxs)
            return (dys * xs * neg).sum(axis=0)

        return {"t": _median_time(np_prelu, ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()

        def dc_prelu():
            core.prelu_forward(xs, al, ys)
            core.prelu_backward(xs, al, dys, dxs, da)

        return {"t": _median_time(dc_prelu, ctx.mt)}
    torch = ctx.torch()
    txs = torch.from_numpy(xs.copy()).requires_grad_(True)
    tal = torch.from_numpy(al.copy()).requires_grad_(True)
    tdy = torch.from_numpy(dys)
    return {"t": _median_time(lambda: torch.autograd.grad(torch.nn.functional.prelu(txs, tal), (txs, tal), tdy),
                              ctx.mt)}


# ------------------------------------------------------------ merge layers
_MERGE_CODES = {"add": 0, "maximum": 4}


@_case("merge", *SIDES)
def _merge(p, ctx):
    """Forward and backward of a merge of k (rows, cols) float32 inputs into
    preallocated outputs: "add" and "maximum" (the gradient to the winner),
    or "concat" on the last axis. NumPy with out= arguments; PyTorch through
    autograd (its Add backward hands dy itself to every input, its cat
    backward views of dy)."""
    op, k, rows, cols = p["op"], int(p["k"]), int(p.get("rows", 256)), int(p.get("cols", 300))
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((rows, cols), dtype=np.float32) for _ in range(k)]
    out_cols = cols * k if op == "concat" else cols
    y = np.empty((rows, out_cols), np.float32)
    dy = rng.standard_normal((rows, out_cols), dtype=np.float32)
    dxs = [np.empty_like(x) for x in xs]
    if ctx.side == "numpy":
        if op == "concat":
            def np_merge():
                np.concatenate(xs, axis=1, out=y)
                for i, dx in enumerate(dxs):
                    np.copyto(dx, dy[:, i * cols:(i + 1) * cols])
        elif op == "add":
            def np_merge():
                np.add(xs[0], xs[1], out=y)
                for x in xs[2:]:
                    np.add(y, x, out=y)
                for dx in dxs:
                    np.copyto(dx, dy)
        else:
            def np_merge():
                stacked = np.stack(xs)
                np.max(stacked, axis=0, out=y)
                win = np.argmax(stacked, axis=0)
                for i, dx in enumerate(dxs):
                    np.multiply(dy, win == i, out=dx)
        return {"t": _median_time(np_merge, ctx.mt)}
    if ctx.side == "deepcore":
        core = _core()
        if op == "concat":
            def dc_merge():
                core.concatenate_forward(xs, y, 1)
                core.concatenate_backward(xs, dy, dxs, 1)
        else:
            code = _MERGE_CODES[op]

            def dc_merge():
                core.merge_forward(code, xs, y)
                core.merge_backward(code, xs, dy, dxs)
        return {"t": _median_time(dc_merge, ctx.mt)}
    torch = ctx.torch()
    ts = [torch.from_numpy(x.copy()).requires_grad_(True) for x in xs]
    tdy = torch.from_numpy(dy)
    if op == "concat":
        fwd = lambda: torch.cat(ts, dim=1)  # noqa: E731
    elif op == "add":
        fwd = lambda: sum(ts[1:], ts[0])  # noqa: E731
    else:
        fwd = lambda: torch.max(torch.stack(ts), dim=0).values  # noqa: E731
    return {"t": _median_time(lambda: torch.autograd.grad(fwd(), ts, tdy), ctx.mt)}


# ---------------------------------------------------------------- training
def _mlp_deepcore(batchnorm=False):
    import deepcore as dc

    dc.set_random_seed(0)
    if batchnorm:  # 784-300-BN-100-BN-10 (Dense without bias -> BN -> ReLU), Adam
        model = dc.Sequential([
            dc.Input(shape=[784]),
            dc.Dense(300, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(),
            dc.Activation("relu"),
            dc.Dense(100, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(),
            dc.Activation("relu"),
            dc.Dense(10, activation="softmax"),
        ])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.Adam(1e-3))
        return model
    model = dc.Sequential([
        dc.Input(shape=[784]),
        dc.Dense(300, activation="relu", kernel_initializer="he_normal"),
        dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    return model


def _epochs_deepcore(X, y, batch_size, epochs=1, batchnorm=False):
    """Seconds of each of ``epochs`` timed epochs, after one on 2048 rows (buffers, threads)."""
    model = _mlp_deepcore(batchnorm)
    model.fit(X[:2048], y[:2048], batch_size=batch_size, epochs=1, verbose=0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0)
        times.append(time.perf_counter() - t0)
    return times


def _epoch_numpy(X, y, batch_size):
    """A plain NumPy float32 MLP: the textbook forward/backward and Nesterov SGD."""
    rng = np.random.default_rng(0)
    sizes = [784, 300, 100, 10]
    W = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    B = [np.zeros(b, np.float32) for b in sizes[1:]]
    params = W + B
    vel = [np.zeros_like(p) for p in params]
    lr, mom = np.float32(0.01), np.float32(0.9)

    def step(xb, yb):
        acts = [xb]
        for i in range(3):
            z = acts[-1] @ W[i] + B[i]
            acts.append(np.maximum(z, 0) if i < 2 else z)
        z = acts[-1]
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        g = p / np.float32(len(yb))
        grads_w, grads_b = [None] * 3, [None] * 3
        for i in range(2, -1, -1):
            grads_w[i] = acts[i].T @ g
            grads_b[i] = g.sum(0)
            if i > 0:
                g = (g @ W[i].T) * (acts[i] > 0)
        for p_, g_, v_ in zip(params, grads_w + grads_b, vel):
            v_ *= mom
            v_ -= lr * g_
            p_ += mom * v_ - lr * g_

    def epoch(Xe, ye):
        order = rng.permutation(len(Xe))
        for lo in range(0, len(Xe), batch_size):
            idx = order[lo:lo + batch_size]
            step(Xe[idx], ye[idx])

    epoch(X[:2048], y[:2048])
    t0 = time.perf_counter()
    epoch(X, y)
    return time.perf_counter() - t0


def _mlp_torch(torch, batchnorm=False):
    torch.manual_seed(0)
    nn = torch.nn
    if batchnorm:
        model = nn.Sequential(nn.Linear(784, 300, bias=False), nn.BatchNorm1d(300, momentum=0.01, eps=1e-3), nn.ReLU(),
                              nn.Linear(300, 100, bias=False), nn.BatchNorm1d(100, momentum=0.01, eps=1e-3), nn.ReLU(),
                              nn.Linear(100, 10))
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)


def _epochs_torch(torch, X, y, batch_size, epochs=1, batchnorm=False):
    """Seconds of each of ``epochs`` timed epochs, after one on 2048 rows."""
    model, opt = _mlp_torch(torch, batchnorm)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(Xe, ye):
        order = torch.randperm(len(Xe))
        for lo in range(0, len(Xe), batch_size):
            idx = order[lo:lo + batch_size]
            if batchnorm and len(idx) < 2:  # BatchNorm1d refuses a batch of one in training
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xe[idx]), ye[idx])
            loss.backward()
            opt.step()

    epoch(Xt[:2048], yt[:2048])
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        epoch(Xt, yt)
        times.append(time.perf_counter() - t0)
    return times


@_case("epoch", *SIDES)
def _epoch(p, ctx):
    X, y = ctx.images(p["n"])
    if ctx.side == "numpy":
        return {"t": _epoch_numpy(X, y, p["batch"])}
    if ctx.side == "deepcore":
        return {"t": _epochs_deepcore(X, y, p["batch"])[0]}
    return {"t": _epochs_torch(ctx.torch(), X, y, p["batch"])[0]}


@_case("epoch_bn", "deepcore", "torch")
def _epoch_bn(p, ctx):
    X, y = ctx.images(p["n"])
    if ctx.side == "deepcore":
        return {"t": _epochs_deepcore(X, y, p["batch"], batchnorm=True)[0]}
    return {"t": _epochs_torch(ctx.torch(), X, y, p["batch"], batchnorm=True)[0]}


# -------------------------------------------------------------- optimizers
def _np_optimizer(name, w, g):
    """A textbook float32 NumPy step of the named optimizer (state in closures)."""
    f32 = np.float32
    m, v = np.zeros_like(w), np.zeros_like(w)
    a = np.full_like(w, 0.1)
    t = [0]
    lr, b1, b2, eps = f32(1e-3), f32(0.9), f32(0.999), f32(1e-7)

    def sgd():
        m[...] = f32(0.9) * m - lr * g
        w[...] += m

    def adagrad():
        a[...] += g * g
        w[...] -= lr * g / np.sqrt(a + eps)

    def rmsprop():
        v[...] = f32(0.9) * v + f32(0.1) * g * g
        w[...] -= lr * g / np.sqrt(v + eps)

    def adam(decay=0.0):
        t[0] += 1
        if decay:
            w[...] -= lr * f32(decay) * w
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        m_hat = m / f32(1 - 0.9 ** t[0])
        v_hat = v / f32(1 - 0.999 ** t[0])
        w[...] -= lr * m_hat / (np.sqrt(v_hat) + eps)

    def adamax():
        t[0] += 1
        m[...] = b1 * m + (1 - b1) * g
        v[...] = np.maximum(b2 * v, np.abs(g))
        w[...] -= lr / f32(1 - 0.9 ** t[0]) * m / (v + eps)

    def nadam():
        t[0] += 1
        u_t = f32(0.9 * (1 - 0.5 * 0.96 ** t[0]))
        u_t1 = f32(0.9 * (1 - 0.5 * 0.96 ** (t[0] + 1)))
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        m_hat = u_t1 * m / f32(0.5) + (1 - u_t) * g / f32(0.5)
        w[...] -= lr * m_hat / (np.sqrt(v / f32(1 - 0.999 ** t[0])) + eps)

    def ftrl():
        new_a = a + g * g
        m[...] += g - (np.sqrt(new_a) - np.sqrt(a)) / lr * w
        w[...] = np.where(np.abs(m) > 0, -m / (np.sqrt(new_a) / lr), f32(0))
        a[...] = new_a

    return {"SGD": sgd, "Adagrad": adagrad, "RMSprop": rmsprop, "Adam": adam, "AdamW": lambda: adam(0.004),
            "Adamax": adamax, "Nadam": nadam, "Ftrl": ftrl}[name]


def _torch_optimizer(torch, name, w, g):
    p = torch.nn.Parameter(torch.from_numpy(w))
    p.grad = torch.from_numpy(g)
    cls = {"SGD": lambda ps, **k: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, **k),
           "Adagrad": lambda ps, **k: torch.optim.Adagrad(ps, lr=1e-3, **k),
           "RMSprop": lambda ps, **k: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.9, **k),
           "Adam": lambda ps, **k: torch.optim.Adam(ps, lr=1e-3, **k),
           "AdamW": lambda ps, **k: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.004, **k),
           "Adamax": lambda ps, **k: torch.optim.Adamax(ps, lr=1e-3, **k),
           "Nadam": lambda ps, **k: torch.optim.NAdam(ps, lr=1e-3, momentum_decay=1.0, **k)}.get(name)
    if cls is None:
        return None, None
    for kind, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("for-loop", {})):
        try:
            opt = cls([p], **kw)
            opt.step()
            return opt.step, kind
        except (RuntimeError, TypeError, ValueError):
            continue
    return None, None


_DC_OPTIMIZERS = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "Nadam", "Ftrl")


@_case("optimizer", *SIDES)
def _optimizer(p, ctx):
    name, n = p["name"], p["n"]
    rng = np.random.default_rng(0)
    g = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-2)
    w = rng.standard_normal(n, dtype=np.float32)
    if ctx.side == "numpy":
        return {"t": _median_time(_np_optimizer(name, w, g), ctx.mt, repeats=5)}
    if ctx.side == "deepcore":
        from deepcore import optimizers as O

        opt = {"SGD": lambda: O.SGD(1e-3, momentum=0.9)}.get(name, getattr(O, name))()
        return {"t": _median_time(lambda: opt.apply(w, g), ctx.mt, repeats=5)}
    step, kind = _torch_optimizer(ctx.torch(), name, w, g)
    return {"t": None if step is None else _median_time(step, ctx.mt, repeats=5), "kind": kind}


@_case("step_share", "deepcore")
def _step_share(p, ctx):
    """The optimizer's share of a training step for the 784-300-100-10 MLP at batch 32."""
    import deepcore as dc
    from deepcore import optimizers as O

    rng = np.random.default_rng(0)
    x = rng.random((32, 784), dtype=np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    make = {"SGD": lambda: O.SGD(0.01, momentum=0.9), "Adam": O.Adam}[p["name"]]
    model = dc.Sequential([dc.Input((784,)), dc.Dense(300, activation="relu"), dc.Dense(100, activation="relu"),
                           dc.Dense(10, activation="softmax")])
    model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    t_step = _median_time(lambda: model._train_step(x, y), ctx.mt)
    opt, params, grads, segs = model.optimizer, model._flat_params, model._flat_grads, model._segments
    return {"t": t_step, "t_opt": _median_time(lambda: opt.apply(params, grads, segs), ctx.mt)}


# ---------------------------------------------------------------- coexist
COEXIST = ("deepcore_alone", "deepcore_after_torch", "deepcore_after_sklearn", "torch_alone", "torch_after_deepcore")


def _thread_pools():
    """The thread pools besides BLAS that threadpoolctl sees in this process
    (OpenMP runtimes, deepcore's own pool when it registers one): user API,
    library path inside site-packages, threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            continue
        short = info.get("filepath", "?").split("site-packages" + os.sep, 1)[-1]
        pools.append(f"{info.get('user_api')} {short} x{info.get('num_threads')}")
    return "; ".join(pools) or "none"


def _coexist(p, ctx):
    """One case of the coexistence table: a neighbour's work first (in this
    process), then the timed library's epochs of the 784-300-100-10 MLP at
    batch 32, best of ``epochs``. No thread settings are touched: defaults."""
    X, y = ctx.images(p["n"])
    case, epochs, batch = ctx.side, p["epochs"], 32
    if case == "deepcore_after_torch":  # import torch, one PyTorch training step
        import torch

        model, opt = _mlp_torch(torch)
        loss = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(X[:batch])), torch.from_numpy(y[:batch]))
        loss.backward()
        opt.step()
    elif case == "deepcore_after_sklearn":  # import sklearn, one fit that runs its OpenMP threads
        from sklearn.cluster import KMeans

        KMeans(n_clusters=10, n_init=1, random_state=0).fit(X[:2048])
    elif case == "torch_after_deepcore":  # import deepcore, one deepcore fit
        _mlp_deepcore().fit(X[:2048], y[:2048], batch_size=batch, epochs=1, verbose=0)
    if case.startswith("deepcore"):
        times = _epochs_deepcore(X, y, batch, epochs)
    else:
        import torch

        times = _epochs_torch(torch, X, y, batch, epochs)
    return {"t": min(times), "worst": max(times), "pools": _thread_pools()}


for _name in COEXIST:
    _CASES[("coexist", _name)] = _coexist


# ------------------------------------------------------------------ gpu
# The GPU section (bench_gpu.py): deepcore's CUDA backend and PyTorch CUDA,
# each in its own process like the CPU rows. GPU work is asynchronous, so
# every timing synchronizes before reading the clock. A side that cannot run
# a row returns t None and why.
def _gpu_deepcore():
    from deepcore import cuda

    if not cuda.is_available():
        return None, cuda.reason()
    from deepcore import _cuda

    return _cuda, ""


def _gpu_torch(ctx):
    torch = ctx.torch()
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} has no usable CUDA device"
    return torch, ""


def _gpu_side(ctx):
    """(deepcore's _cuda or torch, why not, device name)."""
    if ctx.side == "deepcore":
        g, why = _gpu_deepcore()
        return g, why, (str(g.device_properties(0).get("name", "?")) if g is not None else None)
    torch, why = _gpu_torch(ctx)
    return torch, why, (torch.cuda.get_device_name(0) if torch is not None else None)


def gpu_dense_deepcore(g, n, tf32, mt):
    """deepcore's dense_forward (x @ W, no bias, linear) and its bare cuBLASLt sgemm, n x n x n."""
    from deepcore.activations import _CODES

    rng = np.random.default_rng(0)
    x = g.to_device(rng.standard_normal((n, n), dtype=np.float32))
    w = g.to_device(rng.standard_normal((n, n), dtype=np.float32))
    z = g.DeviceBuffer((n, n), "float32")
    g.set_tf32(tf32)
    try:
        t = _median_time(lambda: g.dense_forward(x, w, None, z, z, _CODES["linear"], 0.0, 1.0), mt, 5, g.synchronize)
        t_sgemm = _median_time(lambda: g.sgemm(x, w, z, False, False, 1.0, 0.0), mt, 5, g.synchronize)
    finally:
        g.set_tf32(False)
    return t, t_sgemm


@_case("gpu_dense", "deepcore", "torch")
def _gpu_dense(p, ctx):
    lib, why, device = _gpu_side(ctx)
    if lib is None:
        return {"t": None, "why": why}
    n, tf32 = p["n"], p["tf32"]
    if ctx.side == "deepcore":
        if not getattr(lib, "blas_available", lambda: False)():
            return {"t": None, "why": f"cuBLASLt unavailable ({lib.blas_reason()})", "device": device}
        t, t_sgemm = gpu_dense_deepcore(lib, n, tf32, ctx.mt)
        return {"t": t, "t_sgemm": t_sgemm, "device": device}
    torch = lib
    torch.backends.cuda.matmul.allow_tf32 = tf32
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)).cuda()
    w = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)).cuda()
    out = torch.empty((n, n), device="cuda")
    return {"t": _median_time(lambda: torch.mm(x, w, out=out), ctx.mt, 5, torch.cuda.synchronize), "device": device}


def gpu_adam_deepcore(g, n, mt):
    """(device-to-device copy of n floats, one Adam step over n parameters), seconds."""
    import deepcore as dc

    src, dst = g.DeviceBuffer((n,), "float32"), g.DeviceBuffer((n,), "float32")

    def copy():
        dst[...] = src

    t_copy = _median_time(copy, mt, 5, g.synchronize)
    del src, dst
    rng = np.random.default_rng(0)
    w = g.to_device(rng.standard_normal(n, dtype=np.float32))
    grad = g.to_device(rng.standard_normal(n, dtype=np.float32) * np.float32(1e-2))
    opt = dc.optimizers.Adam(1e-3)
    return t_copy, _median_time(lambda: opt.apply(w, grad), mt, 5, g.synchronize)


@_case("gpu_adam", "deepcore", "torch")
def _gpu_adam(p, ctx):
    lib, why, device = _gpu_side(ctx)
    if lib is None:
        return {"t": None, "why": why}
    n = p["n"]
    if ctx.side == "deepcore":
        t_copy, t = gpu_adam_deepcore(lib, n, ctx.mt)
        return {"t": t, "t_copy": t_copy, "device": device}
    torch = lib
    src, dst = torch.empty(n, device="cuda"), torch.empty(n, device="cuda")
    t_copy = _median_time(lambda: dst.copy_(src), ctx.mt, 5, torch.cuda.synchronize)
    del src, dst
    w = torch.nn.Parameter(torch.randn(n, device="cuda"))
    w.grad = torch.randn(n, device="cuda") * 1e-2
    opt = torch.optim.Adam([w], lr=1e-3, fused=True)
    return {"t": _median_time(opt.step, ctx.mt, 5, torch.cuda.synchronize), "t_copy": t_copy, "device": device}


def _gpu_mlp_model(dc, cuda_graphs):
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input(shape=[784]), dc.Dense(300, activation="relu"),
                           dc.Dense(100, activation="relu"), dc.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True), cuda_graphs=cuda_graphs)
    return model.to("cuda")


def _gpu_mlp_batch(bs):
    rng = np.random.default_rng(bs)
    return rng.random((bs, 784), dtype=np.float32), rng.integers(0, 10, bs).astype(np.int32)


def gpu_mlp_deepcore(g, bs, mt):
    """(eager step, CUDA-graph step or None when the step did not capture), seconds."""
    import deepcore as dc

    xh, yh = _gpu_mlp_batch(bs)
    model = _gpu_mlp_model(dc, cuda_graphs=False)
    model.train_on_batch(xh, yh)  # builds, packs and allocates the step's buffers
    xb, yb = g.to_device(xh), g.to_device(yh)
    t = _median_time(lambda: model._train_step(xb, yb), mt, 5, g.synchronize)
    # The graph step: the first train_on_batch warms up, the second captures;
    # then the timed calls replay (the inputs stay in the batch buffers the
    # graph reads, as they would after fit's host copy).
    gm = _gpu_mlp_model(dc, cuda_graphs=True)
    gm.train_on_batch(xh, yh)
    gm.train_on_batch(xh, yh)
    xg, yg, trainer = gm._batch_buffers[("x", 0, bs)], gm._batch_buffers[("y", 0, bs)], gm._graphs
    if trainer is None or bs not in trainer.steps or trainer.train_step(xg, yg, bs) is None:
        return t, None
    return t, _median_time(lambda: trainer.train_step(xg, yg, bs), mt, 5, g.synchronize)


@_case("gpu_mlp", "deepcore", "torch")
def _gpu_mlp(p, ctx):
    lib, why, device = _gpu_side(ctx)
    if lib is None:
        return {"t": None, "why": why}
    bs = p["bs"]
    if ctx.side == "deepcore":
        t, t_graph = gpu_mlp_deepcore(lib, bs, ctx.mt)
        return {"t": t, "t_graph": t_graph, "device": device}
    torch = lib
    xh, yh = _gpu_mlp_batch(bs)
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.from_numpy(xh).cuda(), torch.from_numpy(yh.astype(np.int64)).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return {"t": _median_time(step, ctx.mt, 5, torch.cuda.synchronize), "device": device}


# ------------------------------------------------------------------ entry
def run_job(job):
    ctx = _Ctx(job)
    results = []
    for row in job["rows"]:
        fn = _CASES.get((row["case"], ctx.side))
        if fn is None:
            raise ValueError(f"bench worker: no case {row['case']!r} for side {ctx.side!r}")
        results.append(fn(row.get("p", {}), ctx))
    loaded = {name: name in sys.modules for name in ("deepcore", "torch", "sklearn")}
    return {"results": results, "loaded": loaded}


def main(argv):
    if len(argv) != 1:
        print("usage: bench_worker.py JOB_JSON", file=sys.stderr)
        return 2
    try:
        out = run_job(json.loads(argv[0]))
    except Exception:
        traceback.print_exc()
        return 1
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0
