"""The GPU section of ``deepcore bench`` (``--only gpu``): the rows issue 5
asks for, each timed against its reference in the same process.

- dense forward 4096x4096x4096, fp32 and TF32: deepcore's ``dense_forward``
  against cuBLAS alone (PyTorch's ``torch.mm``, which calls cuBLAS, and
  deepcore's own bare cuBLASLt ``sgemm``);
- Adam over 100M parameters: bytes moved per second (7 floats per parameter:
  w, g, m, v read, w, m, v written) as a share of the device-to-device copy
  bandwidth measured on the same GPU (2 x bytes per copy);
- one training step of the 784-300-100-10 MLP at batch 32 and 4096 (SGD,
  momentum 0.9, Nesterov), data resident on the GPU, eager and replayed as a
  CUDA graph (compile(cuda_graphs=True)), against PyTorch eager.

GPU work is asynchronous, so every timing synchronizes before reading the
clock; a row is skipped (with the reason) when what it needs is missing.
"""
from __future__ import annotations

import time

import numpy as np


def _sync_timer(fn, sync, min_time=0.3, repeats=5):
    """Median seconds per call of fn, synchronizing at the end of each timed batch of calls."""
    from .bench import _median_time

    return _median_time(fn, min_time, repeats, sync)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} has no usable CUDA device"
    return torch, ""


def bench_gpu(quick=False, use_torch=True):
    from . import cuda
    from .bench import _Table, _fmt_time

    if not cuda.is_available():
        print(f"\nGPU section skipped: {cuda.reason()}")
        return None
    from . import _cuda as g

    torch, why = _torch_cuda() if use_torch else (None, "--no-torch")
    props = g.device_properties(0)
    print(f"\nGPU: {props} | PyTorch CUDA: {torch.__version__ if torch else why}")
    mt = 0.1 if quick else 0.4
    sync = g.synchronize
    _bench_dense(g, torch, sync, mt, _Table, _fmt_time)
    _bench_adam(g, torch, sync, mt, quick, _Table, _fmt_time)
    _bench_mlp(g, torch, sync, mt, _Table, _fmt_time)


def _bench_dense(g, torch, sync, mt, Table, fmt):
    from .activations import _CODES

    table = Table("GPU dense forward 4096x4096x4096 (x @ W, no bias, linear); vs cuBLAS = cuBLAS time / ours",
                  ["precision", "deepcore dense_forward", "TFLOP/s", "cuBLAS (torch.mm)", "bare cuBLASLt sgemm",
                   "vs torch.mm", "vs sgemm"])
    if not getattr(g, "blas_available", lambda: False)():
        print(f"skipped: cuBLASLt unavailable ({getattr(g, 'blas_reason', lambda: 'no dense twin')()})")
        return
    n = 4096
    rng = np.random.default_rng(0)
    xh = rng.standard_normal((n, n), dtype=np.float32)
    wh = rng.standard_normal((n, n), dtype=np.float32)
    x, w = g.to_device(xh), g.to_device(wh)
    z = g.DeviceBuffer((n, n), "float32")
    flops = 2.0 * n ** 3
    for tf32 in (False, True):
        g.set_tf32(tf32)
        t_dc = _sync_timer(lambda: g.dense_forward(x, w, None, z, z, _CODES["linear"], 0.0, 1.0), sync, mt)
        t_sg = _sync_timer(lambda: g.sgemm(x, w, z, False, False, 1.0, 0.0), sync, mt)
        t_th = None
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            xt, wt = torch.from_numpy(xh).cuda(), torch.from_numpy(wh).cuda()
            out = torch.empty((n, n), device="cuda")
            t_th = _sync_timer(lambda: torch.mm(xt, wt, out=out), torch.cuda.synchronize, mt)
        table.add("TF32" if tf32 else "fp32", fmt(t_dc), f"{flops / t_dc / 1e12:.1f}", fmt(t_th), fmt(t_sg),
                  "-" if t_th is None else f"{t_th / t_dc:.3f}x", f"{t_sg / t_dc:.3f}x")
    g.set_tf32(False)


def _bench_adam(g, torch, sync, mt, quick, Table, fmt):
    from . import optimizers as O

    n = 10_000_000 if quick else 100_000_000
    table = Table(f"GPU Adam over {n / 1e6:g}M float32 parameters: bytes moved (7 x 4 per parameter) per second, "
                  "as a share of the device-to-device copy bandwidth (2 x bytes per copy)",
                  ["what", "time", "GB/s", "share of copy"])
    src, dst = g.DeviceBuffer((n,), "float32"), g.DeviceBuffer((n,), "float32")

    def copy():
        dst[...] = src

    t_copy = _sync_timer(copy, sync, mt)
    bw_copy = 2 * 4 * n / t_copy
    table.add("device-to-device copy", fmt(t_copy), f"{bw_copy / 1e9:.0f}", "100%")
    rng = np.random.default_rng(0)
    w = g.to_device(rng.standard_normal(n, dtype=np.float32))
    grad = g.to_device(rng.standard_normal(n, dtype=np.float32) * np.float32(1e-2))
    opt = O.Adam(1e-3)
    t_adam = _sync_timer(lambda: opt.apply(w, grad), sync, mt)
    bw = 7 * 4 * n / t_adam
    table.add("deepcore Adam", fmt(t_adam), f"{bw / 1e9:.0f}", f"{100 * bw / bw_copy:.0f}%")
    if torch is not None:
        wt = torch.nn.Parameter(torch.randn(n, device="cuda"))
        wt.grad = torch.randn(n, device="cuda") * 1e-2
        topt = torch.optim.Adam([wt], lr=1e-3, fused=True)
        t_th = _sync_timer(topt.step, torch.cuda.synchronize, mt)
        bw = 7 * 4 * n / t_th
        table.add("PyTorch Adam (fused)", fmt(t_th), f"{bw / 1e9:.0f}", f"{100 * bw / bw_copy:.0f}%")


def _mlp_on_gpu(dc, cuda_graphs):
    dc.set_random_seed(0)
    model = dc.Sequential([dc.Input(shape=[784]), dc.Dense(300, activation="relu"),
                           dc.Dense(100, activation="relu"), dc.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True), cuda_graphs=cuda_graphs)
    return model.to("cuda")


def _bench_mlp(g, torch, sync, mt, Table, fmt):
    import deepcore as dc

    table = Table("GPU training step, 784-300-100-10 (ReLU, SGD momentum 0.9 Nesterov), batch resident on the GPU; "
                  "eager: one call per kernel; graph: compile(cuda_graphs=True), the step replayed as a CUDA graph "
                  "(with the per-step DeviceHyper set and the loss read); vs PyTorch = PyTorch eager time / ours "
                  "(deepcore brings each step's loss back to the host, PyTorch's step does not synchronize)",
                  ["batch", "deepcore eager", "deepcore graph", "PyTorch eager", "eager vs PyTorch",
                   "graph vs PyTorch"])
    rng = np.random.default_rng(0)
    for bs in (32, 4096):
        xh = rng.random((bs, 784), dtype=np.float32)
        yh = rng.integers(0, 10, bs).astype(np.int32)
        model = _mlp_on_gpu(dc, cuda_graphs=False)
        model.train_on_batch(xh, yh)  # builds, packs and allocates the step's buffers
        xb, yb = g.to_device(xh), g.to_device(yh)
        t_dc = _sync_timer(lambda: model._train_step(xb, yb), sync, mt)
        # The graph step: the first train_on_batch warms up, the second
        # captures; then the timed calls replay (inputs stay in the batch
        # buffers the graph reads, as they would after fit's host copy).
        gm = _mlp_on_gpu(dc, cuda_graphs=True)
        gm.train_on_batch(xh, yh)
        gm.train_on_batch(xh, yh)
        xg, yg, trainer = gm._batch_buffers[("x", bs)], gm._batch_buffers[("y", bs)], gm._graphs
        t_graph = None
        if trainer is not None and bs in trainer.steps and trainer.train_step(xg, yg, bs) is not None:
            t_graph = _sync_timer(lambda: trainer.train_step(xg, yg, bs), sync, mt)
        else:
            print(f"batch {bs}: the graph step did not capture (see the warning); its column is empty")
        t_th = None
        if torch is not None:
            nn = torch.nn
            tm = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                               nn.Linear(100, 10)).cuda()
            topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            loss_fn = nn.CrossEntropyLoss()
            xt, yt = torch.from_numpy(xh).cuda(), torch.from_numpy(yh.astype(np.int64)).cuda()

            def step():
                topt.zero_grad(set_to_none=True)
                loss_fn(tm(xt), yt).backward()
                topt.step()

            t_th = _sync_timer(step, torch.cuda.synchronize, mt)

        def ratio(t):
            return "-" if t_th is None or t is None else f"{t_th / t:.2f}x"

        table.add(bs, fmt(t_dc), fmt(t_graph), fmt(t_th), ratio(t_dc), ratio(t_graph))
