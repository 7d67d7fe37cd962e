"""Benchmarks: deepcore kernels and training against NumPy float32 and
PyTorch CPU (when installed). ``deepcore bench`` runs this.

Every side of every row runs in its own fresh process (bench_worker.py,
loaded by path so that a NumPy or PyTorch process never loads deepcore): a
library's thread pools and OpenMP runtime never share a process with the
library it is compared with. For each group of rows, the sides alternate
(NumPy, deepcore, PyTorch, NumPy, deepcore, PyTorch, ...) over ``repeats``
processes each, so that neither side gets the machine's quieter moments; a
cell is the median over those processes of the process's own median time per
call (or of its one timed epoch). Ratios are other's time / deepcore's: > 1
means deepcore is faster. Paired ratios (an overhead, a folding gain) compare
two calls of deepcore itself and are timed back to back in one process.

The coexist section times the opposite case on purpose: two libraries in one
process, as users run them. The gpu section (bench_gpu.py) runs through the
same harness: deepcore's CUDA backend and PyTorch CUDA, each in its own
processes.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import bench_worker as _worker
from .bench_worker import _median_time, _paired_ratio  # noqa: F401  (callers use them from here)

SECTIONS = ("kernels", "conv", "batchnorm", "dropout", "training", "optimizers", "coexist", "gpu")
#: What ``deepcore bench`` runs without --only (coexist is asked for by name).
DEFAULT_SECTIONS = ("kernels", "conv", "batchnorm", "dropout", "training", "optimizers", "gpu")
_ROWS_PER_PROCESS = 4  # rows a side times in one process (it pays one import of its library per process)

# Loads bench_worker.py by its path (argv[1]) without importing the deepcore package.
_BOOT = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('deepcore_bench_worker', sys.argv[1])\n"
         "mod = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(mod)\n"
         "sys.exit(mod.main(sys.argv[2:]))\n")


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


# ------------------------------------------------------------------ harness
class BenchError(RuntimeError):
    """A benchmark process failed, or loaded a library its side must not load."""


# The libraries a side's process must not have loaded: its competitors.
_FORBIDDEN = {"numpy": ("deepcore", "torch"), "deepcore": ("torch",), "torch": ("deepcore",)}


class _Harness:
    """Runs bench_worker jobs in fresh processes and collects their medians."""

    def __init__(self, quick=False, use_torch=True, repeats=None, workdir=None):
        import deepcore

        self.quick = bool(quick)
        self.repeats = int(repeats) if repeats is not None else (1 if quick else 3)
        if self.repeats < 1:
            raise ValueError(f"bench: repeats must be >= 1, got {repeats!r}")
        self.threads = deepcore.get_num_threads()
        self.torch_why = None
        if not use_torch:
            self.torch_why = "--no-torch"
        elif importlib.util.find_spec("torch") is None:
            self.torch_why = "PyTorch is not installed"
        self.sides = ("numpy", "deepcore") + (("torch",) if self.torch_why is None else ())
        self._tmp = tempfile.TemporaryDirectory(prefix="deepcore-bench-") if workdir is None else None
        self.workdir = workdir or self._tmp.name
        # The workers import the same deepcore as this process, whatever the current directory.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(deepcore.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p])
        self.env = env
        self.data = {}
        self.data_source = {}
        self.processes = 0

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()

    def images(self, n):
        """Save the first n training rows for the workers (once per n); returns the source's name."""
        if str(n) not in self.data:
            X, y, source = _load_training_images(n)
            path = os.path.join(self.workdir, f"images{n}")
            np.save(path + ".x.npy", X)
            np.save(path + ".y.npy", y)
            self.data[str(n)], self.data_source[str(n)] = path, source
        return self.data_source[str(n)]

    def job(self, side, rows, mt):
        """One fresh process timing ``rows`` for ``side``; returns its result dicts."""
        spec = {"side": side, "rows": rows, "mt": mt, "quick": self.quick, "threads": self.threads,
                "data": self.data}
        proc = subprocess.run([sys.executable, "-c", _BOOT, os.path.abspath(_worker.__file__), json.dumps(spec)],
                              env=self.env, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        self.processes += 1
        lines = [line for line in proc.stdout.splitlines() if line.startswith(_worker.RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            raise BenchError(f"bench: the {side} process for {[r['case'] for r in rows]} failed (exit "
                             f"{proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(lines[-1][len(_worker.RESULT_MARK):])
        leaked = [name for name in _FORBIDDEN.get(side, ()) if out["loaded"].get(name)]
        if leaked:
            raise BenchError(f"bench: the {side} process loaded {leaked}: its timings would not be its own")
        return out["results"]

    def measure(self, rows, sides=None, mt=0.3):
        """{side: [merged result per row]}: ``repeats`` processes per side,
        the sides alternating (A B A B ...), each cell the median over them."""
        sides = tuple(self.sides if sides is None else (s for s in sides if s != "torch" or "torch" in self.sides))
        runs = {side: [[] for _ in rows] for side in sides}
        for _ in range(self.repeats):
            for side in sides:
                for i, result in enumerate(self.job(side, rows, mt)):
                    runs[side][i].append(result)
        return {side: [_merge(results) for results in per_row] for side, per_row in runs.items()}

    def measure_rows(self, rows, sides=None, mt=0.3):
        """measure() over groups of at most _ROWS_PER_PROCESS rows, yielding (row, {side: result}) in order."""
        for lo in range(0, len(rows), _ROWS_PER_PROCESS):
            group = rows[lo:lo + _ROWS_PER_PROCESS]
            by_side = self.measure(group, sides, mt)
            for i, row in enumerate(group):
                yield row, {side: by_side[side][i] for side in by_side}


def _merge(results):
    """One row's result over processes: the median of each numeric entry; a
    time that some process could not take (None) stays None; other entries
    (labels) from the first process."""
    merged = {}
    for key in results[0]:
        values = [r.get(key) for r in results]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = float(np.median(values))
        elif key == "t":
            merged[key] = None
        else:
            merged[key] = values[0]
    merged["processes"] = len(results)
    return merged


def _t(result, key="t"):
    return None if result is None else result.get(key)


def _three(table, label, shape, res, dc_key="t"):
    """A NumPy / deepcore / PyTorch row with its two ratios (deepcore's time under dc_key)."""
    t_np, t_dc, t_th = _t(res.get("numpy")), _t(res.get("deepcore"), dc_key), _t(res.get("torch"))
    table.add(label, shape, _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th), _ratio(t_np, t_dc), _ratio(t_th, t_dc))


# ------------------------------------------------------------------ kernels
def bench_kernels(h):
    mt = 0.05 if h.quick else 0.3
    table = _Table("Kernels (median time per call; ratio = other / deepcore, > 1 means deepcore is faster)",
                   ["kernel", "shape", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    from .activations import _CODES

    rows = [{"case": "sgemm", "p": {"m": m, "k": k, "n": n}}
            for m, k, n in [(32, 784, 300), (256, 784, 300), (256, 300, 100), (1024, 1024, 1024)]]
    rows += [{"case": "dense", "p": {"m": m, "k": k, "n": n}} for m, k, n in [(32, 784, 300), (256, 784, 300)]]
    rows += [{"case": "act", "p": {"name": name}} for name in _CODES if name != "linear"]
    rows += [{"case": "swish_beta"}] + [{"case": "xent", "p": {"rows": r}} for r in (32, 256)]
    rows += [{"case": "axpby", "p": {"n": n}} for n in (256 * 300, 4_000_000)]
    for row, res in h.measure_rows(rows, mt=mt):
        case, p = row["case"], row.get("p", {})
        if case in ("sgemm", "dense"):
            shape = f"{p['m']}x{p['k']}x{p['n']}"
            _three(table, "sgemm" if case == "sgemm" else "dense+bias+relu", shape, res)
            if case == "dense":
                dc = res["deepcore"]
                table.add("  vs bare sgemm (deepcore)", shape, "-", _fmt_time(dc["t_gemm"]), "-",
                          f"overhead {100 * (dc['overhead'] - 1):+.1f}% (paired)", "-")
        elif case == "act":
            _three(table, f"{p['name']} fwd+bwd", "256x300", res)
        elif case == "swish_beta":
            _three(table, "swish fwd+bwd (incl. dbeta)", "256x300", res)
        elif case == "axpby":
            _three(table, "gradient sum y += x (axpby)", f"{p['n']:,}", res)
        else:
            _three(table, "softmax+sparse CE fwd+bwd", f"{p['rows']}x10", res)
    return table


def bench_merge(h):
    """The merge layers' kernels, forward + backward into preallocated buffers:
    Add and Maximum of 4 x (256, 300), Concatenate of 2 x (256, 300) on the last axis."""
    mt = 0.05 if h.quick else 0.3
    table = _Table("Merge layers (forward + backward; median time per call; ratio = other / deepcore)",
                   ["kernel", "inputs", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    rows = [{"case": "merge", "p": {"op": op, "k": k}} for op, k in (("add", 4), ("maximum", 4), ("concat", 2))]
    labels = {"add": "Add fwd+bwd", "maximum": "Maximum fwd+bwd", "concat": "Concatenate(axis=-1) fwd+bwd"}
    for row, res in h.measure_rows(rows, mt=mt):
        p = row["p"]
        _three(table, labels[p["op"]], f"{p['k']} x 256x300", res)
    return table


# --------------------------------------------------------------------- conv
# (batch, image side, in channels, kernel side, filters, stride), "same" padding:
# the MNIST ladder's three convolutions, and a 3x3 64->64 layer on 32x32 images.
CONV_SHAPES = [(100, 28, 1, 5, 6, 1), (100, 28, 6, 5, 12, 2), (100, 14, 12, 4, 24, 2), (32, 32, 64, 3, 64, 1)]


def bench_conv(h):
    """Conv2D ("same" + bias + ReLU) forward and backward (dx, dw, db) at the
    ladder's shapes, and 2x2 max pooling, against a NumPy im2col baseline and
    PyTorch (NCHW, its native layout; deepcore is NHWC)."""
    mt = 0.05 if h.quick else 0.3
    table = _Table("Conv2D and pooling, forward + backward (median time per call; ratio = other / deepcore, "
                   "> 1 means deepcore is faster)",
                   ["kernel", "shape", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    rows = [{"case": "conv", "p": dict(zip(("n", "h", "c", "k", "f", "stride"), s))} for s in CONV_SHAPES]
    rows += [{"case": "maxpool", "p": {"n": 100, "h": 28, "c": 32}}]
    for row, res in h.measure_rows(rows, mt=mt):
        p = row["p"]
        if row["case"] == "conv":
            shape = f"{p['n']}x{p['h']}x{p['h']}x{p['c']} -> {p['f']}@{p['k']}x{p['k']} s{p['stride']}"
            method = (res.get("deepcore") or {}).get("method", "?")
            _three(table, f"conv2d fwd+bwd ({method})", shape, res)
        else:
            _three(table, "maxpool 2x2 fwd+bwd", f"{p['n']}x{p['h']}x{p['h']}x{p['c']}", res)
    return table


# ---------------------------------------------------------------- batchnorm
def bench_batchnorm(h):
    """BatchNormalization kernels on 256x300 (train forward+backward, and the
    inference scale-shift) against NumPy float32 and PyTorch, then predict time
    of a BN network before and after model.fold_batchnorm()."""
    mt = 0.05 if h.quick else 0.3
    table = _Table("BatchNormalization (median time per call; ratio = other / deepcore, > 1 means deepcore is faster)",
                   ["kernel", "shape", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    for row, res in h.measure_rows([{"case": "bn_train"}, {"case": "bn_infer"}], mt=mt):
        label = "batchnorm train fwd+bwd" if row["case"] == "bn_train" else "batchnorm inference"
        _three(table, label, "256x300", res)

    # Folding: Dense(use_bias=False) -> BN -> ReLU blocks become one fused Dense each (deepcore only).
    rows = 2048 if h.quick else 10000
    source = h.images(rows)
    fold = _Table(f"BatchNorm folding: predict on {rows} {source}, 784-300-100-10 with "
                  f"Dense(use_bias=False)->BN->ReLU blocks; ratio = time before / after (paired)",
                  ["model", "batch", "layers", "predict", "ratio", "max |diff|"])
    (_, res), = h.measure_rows([{"case": "fold", "p": {"rows": rows}}], sides=["deepcore"], mt=mt)
    r = res["deepcore"]
    for bs in (32, 256):
        fold.add("with BatchNormalization", bs, int(r["layers"]), _fmt_time(r[f"before_{bs}"]), "-", "-")
        fold.add("fold_batchnorm()", bs, int(r["layers_folded"]), _fmt_time(r[f"after_{bs}"]),
                 f"{r[f'ratio_{bs}']:.2f}x", f"{r[f'err_{bs}']:.1e}")
    return table, fold


# ------------------------------------------------------------------ dropout
def bench_dropout(h):
    """Dropout family on 10M floats (and PReLU on a 256x300 activation): deepcore's
    Philox masks against NumPy's Generator mask and multiply, and PyTorch; then
    the Dropout layer's eager call against its bare kernel."""
    mt = 0.1 if h.quick else 0.5
    rate = _worker._DROP_RATE
    table = _Table(f"Dropout family (rate {rate}; median time per call; ratio = other / deepcore)",
                   ["kernel", "size", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    rows = [{"case": c} for c in ("dropout_fwd", "dropout_bwd", "alpha_fwd", "rrelu_fwd", "prelu", "dropout_layer")]
    for row, res in h.measure_rows(rows, mt=mt):
        case = row["case"]
        if case == "dropout_fwd":
            _three(table, "dropout forward", "10M", res)
        elif case == "dropout_bwd":
            _three(table, "dropout backward (stored keep bits)", "10M", res)
            _three(table, "dropout backward (mask regenerated)", "10M", res, dc_key="t_regen")
        elif case == "alpha_fwd":
            _three(table, "alpha dropout forward", "10M", res)
        elif case == "rrelu_fwd":
            _three(table, "rrelu forward (training)", "10M", res)
        elif case == "prelu":
            _three(table, "prelu fwd+bwd (incl. dalpha)", "256x300", res)
        else:
            _three(table, "Dropout layer call (training, fresh output)", "1000x10000", res)
            dc = res["deepcore"]
            table.add("  vs dropout kernel (deepcore)", "1000x10000", "-", _fmt_time(dc["t_kernel"]), "-",
                      f"overhead {100 * (dc['overhead'] - 1):+.1f}% (paired)", "-")
    return table


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


def bench_training(h):
    n = 11000 if h.quick else 55000
    source = h.images(n)
    table = _Table(f"Training: one epoch of 784-300-100-10 (ReLU, He normal, SGD lr 0.01 momentum 0.9 Nesterov) "
                   f"on {n} {source}; ratio = other's time / deepcore's (throughput ratio)",
                   ["batch", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    for row, res in h.measure_rows([{"case": "epoch", "p": {"n": n, "batch": bs}} for bs in (32, 256)]):
        t_np, t_dc, t_th = _t(res.get("numpy")), _t(res.get("deepcore")), _t(res.get("torch"))
        table.add(row["p"]["batch"], _fmt_time(t_np), _fmt_time(t_dc), _fmt_time(t_th), _ratio(t_np, t_dc),
                  _ratio(t_th, t_dc))
    bn = _Table(f"Training: one epoch of 784-300-BN-100-BN-10 (Dense without bias -> BatchNorm -> ReLU), Adam, "
                f"on {n} {source}; ratio = PyTorch's time / deepcore's",
                ["batch", "deepcore", "PyTorch", "vs PyTorch"])
    for row, res in h.measure_rows([{"case": "epoch_bn", "p": {"n": n, "batch": 32}}], sides=["deepcore", "torch"]):
        t_dc, t_th = _t(res.get("deepcore")), _t(res.get("torch"))
        bn.add(row["p"]["batch"], _fmt_time(t_dc), _fmt_time(t_th), _ratio(t_th, t_dc))
    return table


# --------------------------------------------------------------- optimizers
def bench_optimizers(h):
    mt = 0.1 if h.quick else 0.4
    table = _Table("Optimizer step over one flat float32 parameter buffer (median per step; PyTorch: its fused "
                   "CPU kernel where it has one, else foreach)",
                   ["optimizer", "params", "NumPy", "deepcore", "PyTorch", "vs NumPy", "vs PyTorch"])
    sizes = [(1_000_000, list(_worker._DC_OPTIMIZERS)),
             (10_000_000, ["Adam"] if h.quick else ["SGD", "Adam", "AdamW"])]
    rows = [{"case": "optimizer", "p": {"name": name, "n": n}} for n, names in sizes for name in names]
    for row, res in h.measure_rows(rows, mt=mt):
        name, n = row["p"]["name"], row["p"]["n"]
        kind = _t(res.get("torch"), "kind")
        label = name if kind in (None, "fused") else f"{name} (PyTorch {kind})"
        _three(table, label, f"{n / 1e6:g}M", res)
    return table


def bench_step_share(h):
    """The optimizer's share of a training step for the 784-300-100-10 MLP (deepcore only, one process)."""
    table = _Table("Optimizer share of one training step, 784-300-100-10 MLP at batch 32 (one C++ call per step)",
                   ["optimizer", "train step", "optimizer step", "share"])
    rows = [{"case": "step_share", "p": {"name": "SGD"}}, {"case": "step_share", "p": {"name": "Adam"}}]
    for row, res in h.measure_rows(rows, sides=["deepcore"], mt=0.1 if h.quick else 0.5):
        r = res["deepcore"]
        label = "SGD (momentum)" if row["p"]["name"] == "SGD" else row["p"]["name"]
        table.add(label, _fmt_time(r["t"]), _fmt_time(r["t_opt"]), f"{100 * r['t_opt'] / r['t']:.1f}%")
    return table


# ------------------------------------------------------------------ coexist
_COEXIST_LABELS = {
    "deepcore_alone": "deepcore alone",
    "deepcore_after_torch": "deepcore after import torch and one PyTorch training step",
    "deepcore_after_sklearn": "deepcore after import sklearn and one KMeans fit (its OpenMP threads)",
    "torch_alone": "PyTorch alone",
    "torch_after_deepcore": "PyTorch after import deepcore and one deepcore fit",
}


def bench_coexist(h):
    """Two libraries in one process, as users run them: the 784-300-100-10 MLP
    (ReLU, SGD momentum 0.9 Nesterov, batch 32) trained for one epoch on 20,000
    rows, alone and after a neighbour library ran in the same process. Each
    case runs in its own fresh processes (``repeats`` of them, the cases
    alternating); a process times 3 epochs after a warm-up on 2048 rows and
    keeps the best; the cell is the median of those bests. No thread
    settings are changed in any case (every library's defaults)."""
    n, epochs = 20000, 3
    source = h.images(n)
    cases = list(_worker.COEXIST)
    skipped = []
    if h.torch_why is not None:
        skipped += [(c, h.torch_why) for c in cases if "torch" in c]
    if importlib.util.find_spec("sklearn") is None:
        skipped.append(("deepcore_after_sklearn", "scikit-learn is not installed"))
    cases = [c for c in cases if c not in dict(skipped)]
    table = _Table(f"Coexistence in one process: one epoch of 784-300-100-10 (ReLU, SGD momentum 0.9 Nesterov), "
                   f"batch 32, {n} {source}; each case in its own fresh processes, best of {epochs} epochs per "
                   f"process, median over {h.repeats} process(es); ratio = time / the same library alone "
                   f"(> 1: slower beside the neighbour)",
                   ["case", "epoch", "vs alone", "thread pools besides BLAS, after the run (threadpoolctl)"])
    rows = [{"case": "coexist", "p": {"n": n, "epochs": epochs}}]
    res = {}
    runs = {c: [] for c in cases}
    for _ in range(h.repeats):
        for c in cases:  # the cases alternate, one fresh process each
            runs[c].append(h.job(c, rows, 0.0)[0])
    res = {c: _merge(r) for c, r in runs.items()}
    for c in _worker.COEXIST:
        if c not in res:
            continue
        alone = res.get("torch_alone" if c.startswith("torch") else "deepcore_alone")
        ratio = "-" if alone is None else f"{res[c]['t'] / alone['t']:.2f}x"
        table.add(_COEXIST_LABELS[c], _fmt_time(res[c]["t"]), ratio, res[c].get("pools") or "-")
    for c, why in skipped:
        print(f"skipped: {_COEXIST_LABELS[c]} ({why})")
    return table


# ---------------------------------------------------------------------- run
def run(quick=False, torch=True, sections=None, repeats=None):
    import deepcore

    from ._native import core

    sections = list(sections or DEFAULT_SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"bench: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    h = _Harness(quick, torch, repeats)
    try:
        torch_version = importlib.metadata.version("torch") if h.torch_why is None else None
    except importlib.metadata.PackageNotFoundError:
        torch_version = "installed (version unknown)"
    print(f"deepcore {deepcore.__version__} | numpy {np.__version__} | "
          f"PyTorch {torch_version or h.torch_why} | {platform.machine()} | "
          f"{os.cpu_count()} CPUs | threads {h.threads} | {core.blas_config()}")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} | CPU rows: each side in its own fresh process, sides "
          f"alternating, median over {h.repeats} process(es) per side")
    started = time.perf_counter()
    try:
        if "kernels" in sections:
            bench_kernels(h)
            bench_merge(h)
        if "conv" in sections:
            bench_conv(h)
        if "batchnorm" in sections:
            bench_batchnorm(h)
        if "dropout" in sections:
            bench_dropout(h)
        if "training" in sections:
            bench_training(h)
        if "optimizers" in sections:
            bench_optimizers(h)
            bench_step_share(h)
        if "coexist" in sections:
            bench_coexist(h)
        if "gpu" in sections:
            from .bench_gpu import bench_gpu

            bench_gpu(h)
    finally:
        h.close()
    if h.processes:
        print(f"\n({h.processes} benchmark processes, {time.perf_counter() - started:.0f} s)")
