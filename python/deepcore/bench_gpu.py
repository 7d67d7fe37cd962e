"""The GPU section of ``deepcore bench`` (``--only gpu``): the rows issue 5
asks for, deepcore's CUDA backend against PyTorch CUDA, each library in its
own fresh processes (bench_worker.py's gpu_* cases, run by bench.py's
harness: the sides alternate, a cell is the median over ``repeats``
processes of each process's median time).

- dense forward 4096x4096x4096, fp32 and TF32: deepcore's ``dense_forward``
  against cuBLAS alone (PyTorch's ``torch.mm``, which calls cuBLAS, and
  deepcore's own bare cuBLASLt ``sgemm``, timed in deepcore's process);
- Adam over 100M parameters: bytes moved per second (7 floats per parameter:
  w, g, m, v read, w, m, v written) as a share of the device-to-device copy
  bandwidth (2 x bytes per copy), each library against the copy measured in
  its own process;
- one training step of the 784-300-100-10 MLP at batch 32 and 4096 (SGD,
  momentum 0.9, Nesterov), data resident on the GPU, eager and replayed as a
  CUDA graph (compile(cuda_graphs=True)), against PyTorch eager.

A row is skipped (with the reason) when what it needs is missing.
"""
from __future__ import annotations


def _rows(quick):
    n_adam = 10_000_000 if quick else 100_000_000
    return ([{"case": "gpu_dense", "p": {"n": 4096, "tf32": tf32}} for tf32 in (False, True)]
            + [{"case": "gpu_adam", "p": {"n": n_adam}}]
            + [{"case": "gpu_mlp", "p": {"bs": bs}} for bs in (32, 4096)])


def bench_gpu(h):
    """The GPU tables, measured through the harness ``h`` (bench._Harness)."""
    from . import cuda
    from .bench import _Table, _fmt_time as fmt

    if not cuda.is_available():
        print(f"\nGPU section skipped: {cuda.reason()}")
        return None
    rows = _rows(h.quick)
    res = h.measure(rows, sides=("deepcore", "torch"), mt=0.1 if h.quick else 0.4)
    dc, th = res["deepcore"], res.get("torch")
    th_note = h.torch_why or next((r.get("why") for r in th or () if r.get("why")), None)
    print(f"\nGPU: {dc[0].get('device') or dc[0].get('why')} | PyTorch CUDA: {th_note or 'yes'} | each library in "
          f"its own processes, sides alternating, median over {h.repeats} process(es) per side")

    def t_th(i, key="t"):
        return None if th is None else th[i].get(key)

    def ratio(base, ours):
        return "-" if base is None or ours is None else f"{base / ours:.2f}x"

    table = _Table("GPU dense forward 4096x4096x4096 (x @ W, no bias, linear); vs cuBLAS = cuBLAS time / ours",
                   ["precision", "deepcore dense_forward", "TFLOP/s", "cuBLAS (torch.mm)", "bare cuBLASLt sgemm",
                    "vs torch.mm", "vs sgemm"])
    for i in (0, 1):
        r, n = dc[i], rows[i]["p"]["n"]
        if r["t"] is None:
            print(f"skipped: {r.get('why')}")
            break
        table.add("TF32" if rows[i]["p"]["tf32"] else "fp32", fmt(r["t"]), f"{2.0 * n ** 3 / r['t'] / 1e12:.1f}",
                  fmt(t_th(i)), fmt(r["t_sgemm"]), ratio(t_th(i), r["t"]), ratio(r["t_sgemm"], r["t"]))

    n = rows[2]["p"]["n"]
    table = _Table(f"GPU Adam over {n / 1e6:g}M float32 parameters: bytes moved (7 x 4 per parameter) per second, "
                   "as a share of the device-to-device copy bandwidth (2 x bytes per copy) in the same process",
                   ["what", "time", "GB/s", "copy GB/s (same process)", "share of copy"])
    for label, r in (("deepcore Adam", dc[2]), ("PyTorch Adam (fused)", None if th is None else th[2])):
        if r is None or r["t"] is None:
            continue
        bw, bw_copy = 7 * 4 * n / r["t"], 2 * 4 * n / r["t_copy"]
        table.add(label, fmt(r["t"]), f"{bw / 1e9:.0f}", f"{bw_copy / 1e9:.0f}", f"{100 * bw / bw_copy:.0f}%")

    table = _Table("GPU training step, 784-300-100-10 (ReLU, SGD momentum 0.9 Nesterov), batch resident on the GPU; "
                   "eager: one call per kernel; graph: compile(cuda_graphs=True), the step replayed as a CUDA graph "
                   "(with the per-step DeviceHyper set and the loss read); vs PyTorch = PyTorch eager time / ours "
                   "(deepcore brings each step's loss back to the host, PyTorch's step does not synchronize)",
                   ["batch", "deepcore eager", "deepcore graph", "PyTorch eager", "eager vs PyTorch",
                    "graph vs PyTorch"])
    for i in (3, 4):
        r = dc[i]
        if r["t"] is not None and r.get("t_graph") is None:
            print(f"batch {rows[i]['p']['bs']}: the graph step did not capture; its column is empty")
        table.add(rows[i]["p"]["bs"], fmt(r["t"]), fmt(r.get("t_graph")), fmt(t_th(i)), ratio(t_th(i), r["t"]),
                  ratio(t_th(i), r.get("t_graph")))
    return table
