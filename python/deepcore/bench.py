"""Benchmarks: deepcore kernels and training against NumPy float32 (and
PyTorch CPU when installed), timed in the same process. Medians of repeated
runs; ratios > 1 mean deepcore is faster. ``deepcore bench`` runs this."""
from __future__ import annotations

import math
import os
import platform
import time

import numpy as np

from ._native import core
from .activations import _CODES


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
    each repeat so that machine-load drift cancels out of the ratio."""
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


def _fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else (f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s")


def _ratio(base, ours):
    return "-" if base is None or ours is None else f"{base / ours:.2f}x"


class _Table:
    def __init__(self, title, columns):
        self.title, self.columns, self.rows = title, columns, []
        print(f"\n{title}")
        print(" | ".join(columns))
        print(" | ".join("---" for _ in columns))

    def add(self, *cells):
        self.rows.append(cells)
        print(" | ".join(str(c) for c in cells), flush=True)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(core.get_num_threads())
    return torch


# ------------------------------------------------------------------ kernels
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
    return table[name]


def bench_kernels(quick=False, use_torch=True):
    torch = _torch() if use_torch else None
    mt = 0.05 if quick else 0.3
    rng = np.random.default_rng(0)
    table = _Table("Kernels (median time per call; ratio = other / deepcore, > 1 means deepcore is faster)",
                   ["kernel", "shape", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])

    shapes = [(32, 784, 300), (256, 784, 300), (256, 300, 100), (1024, 1024, 1024)]
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        t_np = _median_time(lambda: np.matmul(a, b, out=c), mt)
        t_dc = _median_time(lambda: core.sgemm(a, b, c), mt)
        t_th = None
        if torch is not None:
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
            t_th = _median_time(lambda: torch.mm(ta, tb, out=tc), mt)
        table.add("sgemm", f"{m}x{k}x{n}", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
                  _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    for m, k, n in [(32, 784, 300), (256, 784, 300)]:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        bias = rng.standard_normal(n, dtype=np.float32)
        z = np.empty((m, n), np.float32)

        def np_dense():
            np.matmul(x, w, out=z)
            np.add(z, bias, out=z)
            np.maximum(z, 0, out=z)

        t_np = _median_time(np_dense, mt)
        t_dc = _median_time(lambda: core.dense_forward(x, w, bias, z, z, _CODES["relu"]), mt)
        t_gemm = _median_time(lambda: core.sgemm(x, w, z), mt)
        overhead = _paired_ratio(lambda: core.dense_forward(x, w, bias, z, z, _CODES["relu"]),
                                 lambda: core.sgemm(x, w, z), repeats=15 if quick else 41)
        t_th = None
        if torch is not None:
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)
            t_th = _median_time(lambda: torch.relu_(torch.addmm(tb, tx, tw)), mt)
        table.add("dense+bias+relu", f"{m}x{k}x{n}", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
                  _ratio(t_np, t_dc), _ratio(t_th, t_dc))
        table.add("  vs bare sgemm (deepcore)", f"{m}x{k}x{n}", "-", _fmt_time(t_gemm), "-",
                  f"overhead {100 * (overhead - 1):+.1f}% (paired)", "-")

    x = rng.standard_normal((256, 300), dtype=np.float32) * 3
    dy = rng.standard_normal((256, 300), dtype=np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    torch_fns = {}
    if torch is not None:
        F = torch.nn.functional
        torch_fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
                     "leaky_relu": lambda v: F.leaky_relu(v, 0.2), "elu": F.elu, "selu": F.selu,
                     "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "swish": F.silu,
                     "mish": F.mish, "softplus": F.softplus, "softmax": lambda v: torch.softmax(v, 1)}
    for name, code in _CODES.items():
        if name == "linear":
            continue
        alpha = {"leaky_relu": 0.2, "elu": 1.0}.get(name, 0.0)
        fwd, bwd = _np_act(name)
        t_np = _median_time(lambda: bwd(x, fwd(x), dy), mt)

        def dc_act():
            core.activation_forward(code, x, y, alpha, 1.0)
            core.activation_backward(code, x, y, dy, dx, alpha, 1.0)

        t_dc = _median_time(dc_act, mt)
        t_th = None
        if name in torch_fns:
            tx = torch.from_numpy(x.copy()).requires_grad_(True)
            tdy = torch.from_numpy(dy)
            fn = torch_fns[name]
            t_th = _median_time(lambda: torch.autograd.grad(fn(tx), tx, tdy), mt)
        table.add(f"{name} fwd+bwd", "256x300", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
                  _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    # The Swish layer's step: beta read from a tensor, dL/dbeta written to one
    # (s = sigmoid(beta x); dx = dy (s + beta x s (1 - s)); dbeta = sum dy x^2 s (1 - s)).
    beta, dbeta = np.full((), 1.5, np.float32), np.zeros((), np.float32)
    sig = lambda v: np.float32(1) / (np.float32(1) + np.exp(-v))  # noqa: E731

    def np_swish():
        s = sig(beta * x)
        np.multiply(x, s, out=y)
        np.multiply(dy, s + beta * x * s * (1 - s), out=dx)
        return np.sum(dy * x * x * s * (1 - s), dtype=np.float64)

    def dc_swish():
        core.swish_forward(x, y, beta)
        core.swish_beta_grad(x, dy, beta, dbeta)
        core.swish_backward(x, dy, dx, beta)

    t_np = _median_time(np_swish, mt)
    t_dc = _median_time(dc_swish, mt)
    t_th = None
    if torch is not None:
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tbeta = torch.tensor(1.5, requires_grad=True)
        tdy = torch.from_numpy(dy)
        t_th = _median_time(lambda: torch.autograd.grad(tx * torch.sigmoid(tbeta * tx), (tx, tbeta), tdy), mt)
    table.add("swish fwd+bwd (incl. dbeta)", "256x300", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    for rows in (32, 256):
        logits = rng.standard_normal((rows, 10), dtype=np.float32)
        labels = rng.integers(0, 10, rows).astype(np.int32)
        grad = np.empty_like(logits)

        def np_xent():
            z = logits - logits.max(1, keepdims=True)
            e = np.exp(z)
            s = e.sum(1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(rows), labels]))
            g = e / s
            g[np.arange(rows), labels] -= 1
            g /= rows
            return loss, g

        t_np = _median_time(np_xent, mt)
        t_dc = _median_time(lambda: core.sparse_categorical_crossentropy(logits, labels, grad, True), mt)
        t_th = None
        if torch is not None:
            tl = torch.from_numpy(logits.copy()).requires_grad_(True)
            tlab = torch.from_numpy(labels.astype(np.int64))
            F = torch.nn.functional
            t_th = _median_time(lambda: torch.autograd.grad(F.cross_entropy(tl, tlab), tl), mt)
        table.add("softmax+sparse CE fwd+bwd", f"{rows}x10", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
                  _ratio(t_np, t_dc), _ratio(t_th, t_dc))
    return table


# ------------------------------------------------------------------ dropout
def bench_dropout(quick=False, use_torch=True):
    """Dropout family on 10M floats (and PReLU on a 256x300 activation): deepcore's
    Philox masks against NumPy's Generator mask and multiply, and PyTorch."""
    torch = _torch() if use_torch else None
    mt = 0.1 if quick else 0.5
    n, rate = 10_000_000, 0.3
    scale = np.float32(1.0 / (1.0 - rate))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    y, u, keep = np.empty_like(x), np.empty_like(x), np.empty(n, bool)
    bits = np.empty((n + 31) // 32, np.int32)  # the keep mask the layers store for backward
    table = _Table(f"Dropout family (rate {rate}; median time per call; ratio = other / deepcore)",
                   ["kernel", "size", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])

    def np_dropout():  # fresh mask from NumPy's Generator, then one fused-as-possible multiply
        rng.random(out=u, dtype=np.float32)
        np.greater_equal(u, np.float32(rate), out=keep)
        np.multiply(x, keep, out=y)
        np.multiply(y, scale, out=y)

    calls = iter(range(1 << 62))
    t_np = _median_time(np_dropout, mt)
    t_dc = _median_time(lambda: core.dropout_forward(x, y, rate, 1, 2, next(calls) & 0xFFFFFFFF, bits), mt)
    t_th = None
    if torch is not None:
        tx = torch.from_numpy(x)
        t_th = _median_time(lambda: torch.nn.functional.dropout(tx, rate, training=True), mt)
    table.add("dropout forward", "10M", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    # Backward: NumPy and PyTorch multiply by a stored mask; deepcore reads the
    # 1-bit-per-element keep mask its forward stored (what the layers do), or
    # regenerates the mask from the Philox key (no stored state).
    np_dropout()
    core.dropout_forward(x, y, rate, 1, 2, 0, bits)
    t_np_b = _median_time(lambda: np.multiply(np.multiply(x, keep, out=y), scale, out=y), mt)
    t_dc_b = _median_time(lambda: core.dropout_backward(x, y, rate, 1, 2, 0, bits), mt)
    t_dc_r = _median_time(lambda: core.dropout_backward(x, y, rate, 1, 2, 0), mt)
    t_th_b = None
    if torch is not None:
        tmask = torch.from_numpy(keep).to(torch.float32)
        t_th_b = _median_time(lambda: tx * tmask * float(scale), mt)
    table.add("dropout backward (stored keep bits)", "10M", _fmt_time(t_np_b), _fmt_time(t_dc_b), _fmt_time(t_th_b),
              _ratio(t_np_b, t_dc_b), _ratio(t_th_b, t_dc_b))
    table.add("dropout backward (mask regenerated)", "10M", _fmt_time(t_np_b), _fmt_time(t_dc_r), _fmt_time(t_th_b),
              _ratio(t_np_b, t_dc_r), _ratio(t_th_b, t_dc_r))

    a = 1.0 / np.sqrt((1 - rate) * (1 + rate * 1.7580993408473766**2))
    b = -a * -1.7580993408473766 * rate

    def np_alpha_dropout():
        rng.random(out=u, dtype=np.float32)
        np.greater_equal(u, np.float32(rate), out=keep)
        np.copyto(y, np.float32(-1.7580993408473766))
        np.copyto(y, x, where=keep)
        np.multiply(y, np.float32(a), out=y)
        np.add(y, np.float32(b), out=y)

    t_np = _median_time(np_alpha_dropout, mt)
    t_dc = _median_time(lambda: core.alpha_dropout_forward(x, y, rate, 1, 2, next(calls) & 0xFFFFFFFF, bits), mt)
    t_th = None
    if torch is not None:
        t_th = _median_time(lambda: torch.nn.functional.alpha_dropout(tx, rate, training=True), mt)
    table.add("alpha dropout forward", "10M", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    def np_rrelu():
        rng.random(out=u, dtype=np.float32)
        np.multiply(u, np.float32(1 / 3 - 1 / 8), out=u)
        np.add(u, np.float32(1 / 8), out=u)
        np.multiply(x, np.where(x >= 0, np.float32(1), u), out=y)

    t_np = _median_time(np_rrelu, mt)
    t_dc = _median_time(lambda: core.rrelu_forward(x, y, 1 / 8, 1 / 3, True, 1, 3, next(calls) & 0xFFFFFFFF), mt)
    t_th = None
    if torch is not None:
        t_th = _median_time(lambda: torch.nn.functional.rrelu(tx, 1 / 8, 1 / 3, training=True), mt)
    table.add("rrelu forward (training)", "10M", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    xs = rng.standard_normal((256, 300), dtype=np.float32)
    dys = rng.standard_normal((256, 300), dtype=np.float32)
    al = np.full(300, 0.25, np.float32)
    ys, dxs, da = np.empty_like(xs), np.empty_like(xs), np.empty_like(al)

    def np_prelu():
        neg = xs <= 0
        np.multiply(xs, np.where(neg, al, np.float32(1)), out=ys)
        np.multiply(dys, np.where(neg, al, np.float32(1)), out=dxs)
        return (dys * xs * neg).sum(axis=0)

    def dc_prelu():
        core.prelu_forward(xs, al, ys)
        core.prelu_backward(xs, al, dys, dxs, da)

    t_np = _median_time(np_prelu, mt)
    t_dc = _median_time(dc_prelu, mt)
    t_th = None
    if torch is not None:
        txs = torch.from_numpy(xs.copy()).requires_grad_(True)
        tal = torch.from_numpy(al.copy()).requires_grad_(True)
        tdy = torch.from_numpy(dys)
        t_th = _median_time(lambda: torch.autograd.grad(torch.nn.functional.prelu(txs, tal), (txs, tal), tdy), mt)
    table.add("prelu fwd+bwd (incl. dalpha)", "256x300", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))
    return table


# ---------------------------------------------------------------- batchnorm
def bench_batchnorm(quick=False, use_torch=True):
    """BatchNormalization kernels on 256x300 (train forward+backward, and the
    inference scale-shift) against NumPy float32 and PyTorch, then predict time
    of a BN network before and after model.fold_batchnorm()."""
    torch = _torch() if use_torch else None
    mt = 0.05 if quick else 0.3
    rng = np.random.default_rng(0)
    table = _Table("BatchNormalization (median time per call; ratio = other / deepcore, > 1 means deepcore is faster)",
                   ["kernel", "shape", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    n, c, eps, momentum = 256, 300, 1e-3, 0.99
    x = (rng.standard_normal((n, c), dtype=np.float32) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal((n, c), dtype=np.float32)
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.standard_normal(c, dtype=np.float32)
    mm, mv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    mean, inv_std, dgamma, dbeta = (np.empty(c, np.float32) for _ in range(4))
    f32 = np.float32

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

    def dc_train():
        core.batchnorm_forward_train(x, gamma, beta, y, mean, inv_std, mm, mv, eps, momentum)
        core.batchnorm_backward(x, dy, gamma, mean, inv_std, dx, dgamma, dbeta)

    t_np, t_dc, t_th = _median_time(np_train, mt), _median_time(dc_train, mt), None
    if torch is not None:
        F = torch.nn.functional
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tg = torch.from_numpy(gamma.copy()).requires_grad_(True)
        tb = torch.from_numpy(beta.copy()).requires_grad_(True)
        trm, trv, tdy = torch.zeros(c), torch.ones(c), torch.from_numpy(dy)

        def th_train():
            out = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=1 - momentum, eps=eps)
            torch.autograd.grad(out, (tx, tg, tb), tdy)

        t_th = _median_time(th_train, mt)
    table.add("batchnorm train fwd+bwd", f"{n}x{c}", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    scale = (gamma / np.sqrt(mv + f32(eps))).astype(np.float32)
    t_np = _median_time(lambda: np.add(np.multiply(np.subtract(x, mm, out=y), scale, out=y), beta, out=y), mt)
    t_dc = _median_time(lambda: core.batchnorm_forward_inference(x, gamma, beta, mm, mv, y, eps), mt)
    t_th = None
    if torch is not None:
        tx0, tg0, tb0 = torch.from_numpy(x), torch.from_numpy(gamma), torch.from_numpy(beta)
        trm, trv = torch.from_numpy(mm), torch.from_numpy(mv)
        with torch.no_grad():
            t_th = _median_time(lambda: F.batch_norm(tx0, trm, trv, tg0, tb0, training=False, eps=eps), mt)
    table.add("batchnorm inference", f"{n}x{c}", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
              _ratio(t_np, t_dc), _ratio(t_th, t_dc))

    # Folding: Dense(use_bias=False) -> BN -> ReLU blocks become one fused Dense each.
    import deepcore as dc

    rows = 2048 if quick else 10000
    X, yl, source = _load_training_images(rows)
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
    fold = _Table(f"BatchNorm folding: predict on {rows} {source}, 784-300-100-10 with "
                  f"Dense(use_bias=False)->BN->ReLU blocks; ratio = time before / after (paired)",
                  ["model", "batch", "layers", "predict", "ratio", "max |diff|"])
    for bs in (32, 256):  # 32: predict's default
        err = float(np.abs(folded.predict(X, batch_size=bs) - model.predict(X, batch_size=bs)).max())
        before = (lambda b=bs: model.predict(X, batch_size=b))
        after = (lambda b=bs: folded.predict(X, batch_size=b))
        t_before, t_after = _median_time(before, mt, repeats=5), _median_time(after, mt, repeats=5)
        # The ratio is paired (the two alternate) so that load from other processes cancels out of it.
        ratio = _paired_ratio(before, after, calls=1, repeats=5 if quick else 11)
        fold.add("with BatchNormalization", bs, len(model.layers), _fmt_time(t_before), "-", "-")
        fold.add("fold_batchnorm()", bs, len(folded.layers), _fmt_time(t_after), f"{ratio:.2f}x", f"{err:.1e}")
    return table, fold


# ----------------------------------------------------------------- training
def _load_training_images(n):
    try:
        from .datasets import load_fashion_mnist

        (X, y), _ = load_fashion_mnist()
        source = "Fashion-MNIST"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        source = "random images (Fashion-MNIST not found)"
    X = (X[:n].reshape(n, 784) / 255.0).astype(np.float32)
    return X, y[:n].astype(np.int64), source


def _epoch_deepcore(X, y, batch_size):
    import deepcore as dc

    dc.set_random_seed(0)
    model = dc.Sequential([
        dc.Input(shape=[784]),
        dc.Dense(300, activation="relu", kernel_initializer="he_normal"),
        dc.Dense(100, activation="relu", kernel_initializer="he_normal"),
        dc.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    model.fit(X[:2048], y[:2048], batch_size=batch_size, epochs=1, verbose=0)  # warm up buffers
    t0 = time.perf_counter()
    model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0)
    return time.perf_counter() - t0


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


def _epoch_torch(torch, X, y, batch_size):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(Xe, ye):
        order = torch.randperm(len(Xe))
        for lo in range(0, len(Xe), batch_size):
            idx = order[lo:lo + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xe[idx]), ye[idx])
            loss.backward()
            opt.step()

    epoch(Xt[:2048], yt[:2048])
    t0 = time.perf_counter()
    epoch(Xt, yt)
    return time.perf_counter() - t0


def _epoch_deepcore_bn(X, y, batch_size):
    """784-300-BN-100-BN-10 (Dense without bias -> BN -> ReLU), Adam."""
    import deepcore as dc

    dc.set_random_seed(0)
    model = dc.Sequential([
        dc.Input(shape=[784]),
        dc.Dense(300, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(), dc.Activation("relu"),
        dc.Dense(100, use_bias=False, kernel_initializer="he_normal"), dc.BatchNormalization(), dc.Activation("relu"),
        dc.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dc.optimizers.Adam(1e-3))
    model.fit(X[:2048], y[:2048], batch_size=batch_size, epochs=1, verbose=0)
    t0 = time.perf_counter()
    model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0)
    return time.perf_counter() - t0


def _epoch_torch_bn(torch, X, y, batch_size):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 300, bias=False), nn.BatchNorm1d(300, momentum=0.01, eps=1e-3), nn.ReLU(),
                          nn.Linear(300, 100, bias=False), nn.BatchNorm1d(100, momentum=0.01, eps=1e-3), nn.ReLU(),
                          nn.Linear(100, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(Xe, ye):
        order = torch.randperm(len(Xe))
        for lo in range(0, len(Xe) - 1, batch_size):
            idx = order[lo:lo + batch_size]
            if len(idx) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xe[idx]), ye[idx])
            loss.backward()
            opt.step()

    epoch(Xt[:2048], yt[:2048])
    t0 = time.perf_counter()
    epoch(Xt, yt)
    return time.perf_counter() - t0


def bench_training(quick=False, use_torch=True):
    torch = _torch() if use_torch else None
    n = 11000 if quick else 55000
    X, y, source = _load_training_images(n)
    table = _Table(f"Training: one epoch of 784-300-100-10 (ReLU, He normal, SGD lr 0.01 momentum 0.9 Nesterov) "
                   f"on {n} {source}; ratio = other's time / deepcore's (throughput ratio)",
                   ["batch", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    for bs in (32, 256):
        t_dc = _epoch_deepcore(X, y, bs)
        t_np = _epoch_numpy(X, y, bs)
        t_th = _epoch_torch(torch, X, y, bs) if torch is not None else None
        table.add(bs, _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th), _ratio(t_np, t_dc), _ratio(t_th, t_dc))
    bn = _Table(f"Training: one epoch of 784-300-BN-100-BN-10 (Dense without bias -> BatchNorm -> ReLU), Adam, "
                f"on {n} {source}; ratio = PyTorch's time / deepcore's",
                ["batch", "deepcore", "PyTorch", "vs PyTorch"])
    for bs in (32,):
        t_dc = _epoch_deepcore_bn(X, y, bs)
        t_th = _epoch_torch_bn(torch, X, y, bs) if torch is not None else None
        bn.add(bs, _fmt_time(t_dc), _fmt_time(t_th), _ratio(t_th, t_dc))
    return table


# --------------------------------------------------------------- optimizers
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


def bench_optimizers(quick=False, use_torch=True):
    from . import optimizers as O

    torch = _torch() if use_torch else None
    mt = 0.1 if quick else 0.4
    table = _Table("Optimizer step over one flat float32 parameter buffer (median per step; PyTorch: its fused "
                   "CPU kernel where it has one, else foreach)",
                   ["optimizer", "params", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    rng = np.random.default_rng(0)
    makers = {"SGD": lambda: O.SGD(1e-3, momentum=0.9), "Adagrad": O.Adagrad, "RMSprop": O.RMSprop,
              "Adam": O.Adam, "AdamW": O.AdamW, "Adamax": O.Adamax, "Nadam": O.Nadam, "Ftrl": O.Ftrl}
    sizes = [(1_000_000, list(makers)), (10_000_000, ["Adam"] if quick else ["SGD", "Adam", "AdamW"])]
    for n, names in sizes:
        g = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-2)
        for name in names:
            w = rng.standard_normal(n, dtype=np.float32)
            t_np = _median_time(_np_optimizer(name, w.copy(), g), mt, repeats=5)
            opt, wd = makers[name](), w.copy()
            t_dc = _median_time(lambda: opt.apply(wd, g), mt, repeats=5)
            t_th, kind = None, None
            if torch is not None:
                step, kind = _torch_optimizer(torch, name, w.copy(), g.copy())
                if step is not None:
                    t_th = _median_time(step, mt, repeats=5)
            label = name if kind in (None, "fused") else f"{name} (PyTorch {kind})"
            table.add(label, f"{n / 1e6:g}M", _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th),
                      _ratio(t_np, t_dc), _ratio(t_th, t_dc))
    return table


def bench_step_share(quick=False):
    """The optimizer's share of a training step for the 784-300-100-10 MLP."""
    from . import optimizers as O
    from .layers import Dense, Input
    from .models import Sequential

    table = _Table("Optimizer share of one training step, 784-300-100-10 MLP at batch 32 (one C++ call per step)",
                   ["optimizer", "train step", "optimizer step", "share"])
    rng = np.random.default_rng(0)
    x = rng.random((32, 784), dtype=np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    for name, make in (("SGD (momentum)", lambda: O.SGD(0.01, momentum=0.9)), ("Adam", O.Adam)):
        model = Sequential([Input((784,)), Dense(300, activation="relu"), Dense(100, activation="relu"),
                            Dense(10, activation="softmax")])
        model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
        t_step = _median_time(lambda: model._train_step(x, y), 0.1 if quick else 0.5)
        opt, params, grads, segs = model.optimizer, model._flat_params, model._flat_grads, model._segments
        t_opt = _median_time(lambda: opt.apply(params, grads, segs), 0.1 if quick else 0.5)
        table.add(name, _fmt_time(t_step), _fmt_time(t_opt), f"{100 * t_opt / t_step:.1f}%")
    return table


def run(quick=False, torch=True, sections=None):
    import deepcore

    th = _torch() if torch else None
    print(f"deepcore {deepcore.__version__} | numpy {np.__version__} | "
          f"PyTorch {th.__version__ if th else 'not installed'} | {platform.machine()} | "
          f"{os.cpu_count()} CPUs | threads {core.get_num_threads()} | {core.blas_config()}")
    sections = sections or ["kernels", "batchnorm", "dropout", "training", "optimizers", "gpu"]
    if "kernels" in sections:
        bench_kernels(quick, torch)
    if "batchnorm" in sections:
        bench_batchnorm(quick, torch)
    if "dropout" in sections:
        bench_dropout(quick, torch)
    if "training" in sections:
        bench_training(quick, torch)
    if "optimizers" in sections:
        bench_optimizers(quick, torch)
        bench_step_share(quick)
    if "gpu" in sections:
        from .bench_gpu import bench_gpu

        bench_gpu(quick, torch)
