"""The benchmark harness (deepcore bench): each side in its own process, the
sides alternating, medians over processes. Tiny rows only; no timing is
asserted, only what was run where."""

import importlib.util
import json
import subprocess
import sys

import pytest

from deepcore import bench, bench_worker
from deepcore.cli import main

HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY_SGEMM = {"case": "sgemm", "p": {"m": 4, "k": 5, "n": 3}}


@pytest.fixture
def harness(tmp_path):
    h = bench._Harness(quick=True, repeats=1, workdir=str(tmp_path))
    yield h
    h.close()


def _worker_run(spec, harness):
    """The worker's own report, run as the harness runs it."""
    out = subprocess.run([sys.executable, "-c", bench._BOOT, bench_worker.__file__, json.dumps(spec)],
                         env=harness.env, cwd=harness.workdir, capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith(bench_worker.RESULT_MARK)][-1]
    return json.loads(line[len(bench_worker.RESULT_MARK):])


@pytest.mark.parametrize("side", ["numpy", "deepcore"] + (["torch"] if HAS_TORCH else []))
def test_each_side_process_loads_its_own_library_and_not_its_competitors(side, harness):
    out = _worker_run({"side": side, "rows": [TINY_SGEMM], "mt": 0.001, "threads": 1}, harness)
    assert out["loaded"]["deepcore"] == (side == "deepcore")
    assert out["loaded"]["torch"] == (side == "torch")
    assert out["results"][0]["t"] > 0


def test_a_side_process_that_loads_a_competitor_is_refused(harness, monkeypatch):
    real = subprocess.run

    def leaky(*args, **kwargs):  # the worker's report, as if the NumPy process had loaded deepcore
        proc = real(*args, **kwargs)
        proc.stdout = proc.stdout.replace('"deepcore": false', '"deepcore": true')
        return proc

    monkeypatch.setattr(bench.subprocess, "run", leaky)
    with pytest.raises(bench.BenchError, match="numpy process loaded"):
        harness.job("numpy", [TINY_SGEMM], 0.001)


def test_a_failing_side_process_raises_with_its_traceback(harness):
    with pytest.raises(bench.BenchError, match="no case 'nope'"):
        harness.job("numpy", [{"case": "nope"}], 0.001)


def test_measure_alternates_the_sides_over_repeats_and_takes_medians(harness, monkeypatch):
    order, times = [], {"numpy": iter([3.0, 1.0, 2.0]), "deepcore": iter([5.0, 4.0, 6.0])}

    def job(side, rows, mt):
        order.append(side)
        return [{"t": next(times[side]), "kind": side}]

    monkeypatch.setattr(harness, "job", job)
    harness.repeats = 3
    res = harness.measure([TINY_SGEMM], sides=["numpy", "deepcore"])
    assert order == ["numpy", "deepcore"] * 3
    assert res["numpy"][0]["t"] == 2.0 and res["deepcore"][0]["t"] == 5.0
    assert res["numpy"][0]["kind"] == "numpy" and res["numpy"][0]["processes"] == 3


def test_merge_keeps_a_time_that_a_process_could_not_take_as_none():
    merged = bench._merge([{"t": None, "kind": None}, {"t": 1.0, "kind": None}])
    assert merged["t"] is None and merged["kind"] is None


def test_measure_rows_runs_groups_of_rows_in_one_process_per_side(harness, monkeypatch):
    calls = []
    monkeypatch.setattr(harness, "job", lambda side, rows, mt: calls.append((side, len(rows))) or
                        [{"t": 1.0}] * len(rows))
    rows = [TINY_SGEMM] * (bench._ROWS_PER_PROCESS + 1)
    got = list(harness.measure_rows(rows, sides=["numpy", "deepcore"]))
    assert len(got) == len(rows)
    assert calls == [("numpy", bench._ROWS_PER_PROCESS), ("deepcore", bench._ROWS_PER_PROCESS),
                     ("numpy", 1), ("deepcore", 1)]


def test_a_tiny_training_row_and_coexist_case_run_end_to_end(harness):
    n = 2100
    harness.images(n)
    (row, res), = harness.measure_rows([{"case": "epoch", "p": {"n": n, "batch": 256}}], sides=["numpy", "deepcore"])
    assert res["numpy"]["t"] > 0 and res["deepcore"]["t"] > 0
    out = harness.job("deepcore_alone", [{"case": "coexist", "p": {"n": n, "epochs": 2}}], 0.0)[0]
    assert 0 < out["t"] <= out["worst"]


def test_cli_rejects_bad_repeats_and_unknown_sections(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--repeats", "0"])
    with pytest.raises(SystemExit):
        main(["bench", "--only", "everything"])
    with pytest.raises(ValueError, match="unknown section"):
        bench.run(sections=["everything"])


class _StubHarness:
    """What bench_gpu needs of the harness, with made-up medians per side."""
    quick, repeats, torch_why = False, 3, None

    def __init__(self, torch=True):
        self.torch = torch
        self.torch_why = None if torch else "--no-torch"
        self.asked = None

    def measure(self, rows, sides=None, mt=0.3):
        self.asked = (rows, sides)
        dc = [{"t": 0.010, "t_sgemm": 0.011, "device": "stub GPU"}, {"t": 0.005, "t_sgemm": 0.006},
              {"t": 0.028, "t_copy": 0.016}, {"t": 1e-4, "t_graph": 5e-5}, {"t": 2e-3, "t_graph": None}]
        th = [{"t": 0.010}, {"t": 0.004}, {"t": 0.020, "t_copy": 0.008}, {"t": 3e-4}, {"t": 4e-3}]
        return {"deepcore": dc, "torch": th} if self.torch else {"deepcore": dc}


@pytest.mark.parametrize("torch", [True, False])
def test_gpu_section_asks_both_sides_in_their_processes_and_prints_ratios(monkeypatch, capsys, torch):
    from deepcore import bench_gpu, cuda

    monkeypatch.setattr(cuda, "is_available", lambda: True)
    h = _StubHarness(torch)
    bench_gpu.bench_gpu(h)
    out = capsys.readouterr().out
    rows, sides = h.asked
    assert sides == ("deepcore", "torch") and [r["case"] for r in rows] == ["gpu_dense"] * 2 + ["gpu_adam"] + \
        ["gpu_mlp"] * 2
    assert "stub GPU" in out and "did not capture" in out  # batch 4096's graph column is empty
    # Adam: 7 x 4 x 1e8 bytes / 0.028 s = 100 GB/s against a copy of 2 x 4 x 1e8 / 0.016 s = 50 GB/s
    assert "deepcore Adam | 28.00 ms | 100 | 50 | 200%" in out
    if torch:
        assert "fp32 | 10.00 ms | 13.7 | 10.00 ms | 11.00 ms | 1.00x | 1.10x" in out
        assert "32 | 100.0 us | 50.0 us | 300.0 us | 3.00x | 6.00x" in out
        assert "PyTorch Adam (fused) | 20.00 ms | 140 | 100 | 140%" in out
    else:
        assert "32 | 100.0 us | 50.0 us | - | - | -" in out and "PyTorch Adam" not in out


@pytest.mark.parametrize("side", ["numpy", "deepcore"] + (["torch"] if HAS_TORCH else []))
def test_tiny_conv_and_pooling_rows_run_on_each_side(side, harness):
    rows = [{"case": "conv", "p": {"n": 2, "h": 7, "c": 2, "k": 3, "f": 3, "stride": 2}},
            {"case": "maxpool", "p": {"n": 2, "h": 6, "c": 3}}]
    out = _worker_run({"side": side, "rows": rows, "mt": 0.001, "threads": 1}, harness)
    assert [r["t"] > 0 for r in out["results"]] == [True, True]
    assert out["loaded"]["deepcore"] == (side == "deepcore")


def test_the_numpy_conv_baseline_computes_the_conv_gradients():
    """The NumPy side times real work: its dx, dw, db match the float64 reference of tests/test_conv.py."""
    import numpy as np
    from test_conv import conv_grads_ref, conv_ref

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 7, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    dx, dw, db = bench_worker._np_conv_step(x, w, b, 2)
    z = conv_ref(x, w, b, (2, 2), (1, 1), "same")
    want = conv_grads_ref(x, w, (z > 0).astype(np.float64), (2, 2), (1, 1), "same")
    for got, ref in zip((dx, dw, db), want):
        np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-4, atol=1e-4)
