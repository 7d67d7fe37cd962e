"""The GPU Dense layer (cuBLASLt, loaded at run time) and the other CUDA twins
of issue 5 (loss_forward_backward, the Swish kernels, count_nonfinite,
gather_rows), against the CPU kernels of deepcore._core.

Runs everywhere: the twins exist under the CPU's names with the CPU's
arguments, host arrays and bad codes are refused before any device access, and
without cuBLASLt blas_available() is False with a reason that says where it
looked. The GPU tests skip with deepcore.cuda.reason(), and the GEMM tests also
with _cuda.blas_reason() when cuBLASLt is missing.

Tolerances. A GEMM is compared elementwise against the bound its rounding
obeys: |gpu - cpu| <= rel * (|op(a)| @ |op(b)| + |beta c|), the sum of the
absolute products, with rel = 1e-5 in fp32 (the default; cuBLAS and OpenBLAS
sum in different orders, each within ~sqrt(k) 2^-24 of that bound) and
rel = 2e-3 in TF32 (each input rounded to a 10-bit mantissa: up to 2^-11
relative per input, ~1e-3 per product). Activations and bias gradients agree
to 1e-5 relative, as in test_cuda.py. Loss values are sums in double and agree
to 1e-9; the count of non-finite values and gathered rows are exact.
"""

import ast
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deepcore import _core as C
from deepcore.activations import _CODES
from activation_reference import ref_forward
from finite_differences import central_difference
from device_data import dev
from cuda_toolkit import cuda_include_dir

RTOL = 1e-5
ATOL = 1e-6
GEMM_REL_FP32 = 1e-5
GEMM_REL_TF32 = 2e-3

LOSSES = {"mse": 0, "mae": 1, "huber": 2, "bce": 3, "bce_logits": 4, "cce": 5, "cce_logits": 6}
TWINS = ["sgemm", "dense_forward", "dense_backward", "loss_forward_backward", "swish_forward", "swish_backward",
         "swish_beta_grad", "count_nonfinite", "gather_rows"]


def cuda_module():
    try:
        from deepcore import _cuda
    except ImportError:
        pytest.skip("deepcore was built without the CUDA backend")
    return _cuda


# --------------------------------------------------------------------------
# runs everywhere
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", TWINS)
def test_twin_has_the_cpu_name_and_signature(name):
    G = cuda_module()
    cpu_sig = getattr(C, name).__doc__.splitlines()[0]
    gpu_sig = getattr(G, name).__doc__.splitlines()[0]
    assert gpu_sig == cpu_sig


def test_every_cpu_kernel_has_a_twin_but_the_host_only_ones():
    G = cuda_module()
    host_only = {"Buffer", "OptParams", "_set_philox_simd", "blas_config", "blas_num_threads", "get_num_threads",
                 "set_num_threads", "perceptron_epoch", "philox4x32_10", "philox_permutation", "parallel_thresholds"}
    missing = {n for n in dir(C) if not n.startswith("__")} - set(dir(G)) - host_only
    assert not missing


def test_blas_reason_agrees_with_blas_available():
    G = cuda_module()
    assert isinstance(G.blas_available(), bool)
    if G.blas_available():
        assert G.blas_reason() == ""
        lib = G.blas_library()
        assert os.path.exists(lib["path"]) and lib["version"] >= 120000
    else:
        assert G.blas_library() is None
        reason = G.blas_reason()
        for place in ("DEEPCORE_CUBLASLT_PATH", "nvidia-cublas", "libcublasLt.so.13", "libcublasLt.so.12"):
            assert place in reason, reason
        assert "pip install nvidia-cublas" in reason


def _blas_in_subprocess(env_extra):
    code = ("from deepcore import _cuda as G\n"
            "print(G.blas_available()); print(repr(G.blas_reason())); print(repr(G.blas_library()))")
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    available, reason, library = out.stdout.strip().split("\n")
    return available == "True", ast.literal_eval(reason), ast.literal_eval(library)


@pytest.mark.parametrize("bad", ["/nonexistent/libcublasLt.so.13", __file__], ids=["missing", "not-a-library"])
def test_a_bad_deepcore_cublaslt_path_is_named_in_the_reason(bad):
    cuda_module()
    available, reason, library = _blas_in_subprocess({"DEEPCORE_CUBLASLT_PATH": bad})
    if available:  # found elsewhere, after the bad path
        assert library["path"] != bad
    else:
        assert f"- $DEEPCORE_CUBLASLT_PATH={bad}: " in reason, reason


def test_twins_refuse_host_arrays_and_bad_codes_before_touching_the_device():
    G = cuda_module()
    x = np.zeros((4, 3), np.float32)
    w = np.zeros((3, 2), np.float32)
    z = np.zeros((4, 2), np.float32)
    with pytest.raises(TypeError, match="dense_forward: x must be a deepcore._cuda.DeviceBuffer"):
        G.dense_forward(x, w, None, z, z, _CODES["relu"])
    with pytest.raises(TypeError, match="dense_backward: x must be a deepcore._cuda.DeviceBuffer"):
        G.dense_backward(x, w, z, z, z, z, None, w, None, _CODES["relu"])
    with pytest.raises(TypeError, match="sgemm: a must be a deepcore._cuda.DeviceBuffer"):
        G.sgemm(x, w, z)
    with pytest.raises(TypeError, match="loss_forward_backward: y_pred must be a deepcore._cuda.DeviceBuffer"):
        G.loss_forward_backward(0, z, z, None)
    with pytest.raises(TypeError, match="swish_beta_grad: x must be a deepcore._cuda.DeviceBuffer"):
        G.swish_beta_grad(x, x, np.ones((), np.float32), np.zeros((), np.float32))
    with pytest.raises(TypeError, match="count_nonfinite: x must be a deepcore._cuda.DeviceBuffer"):
        G.count_nonfinite(x)
    with pytest.raises(TypeError, match="gather_rows: src and dst must be deepcore._cuda.DeviceBuffers"):
        G.gather_rows(x, np.zeros(2, np.int64), x[:2].copy())
    # Codes are checked first, with the CPU's words.
    for name, args in [("dense_forward", (x, w, None, z, z, 99)),
                       ("dense_backward", (x, w, z, z, z, z, None, w, None, -1)),
                       ("loss_forward_backward", (7, z, z, None))]:
        with pytest.raises(ValueError) as cpu_err:
            getattr(C, name)(*args)
        with pytest.raises(ValueError) as gpu_err:
            getattr(G, name)(*args)
        assert str(gpu_err.value) == str(cpu_err.value)


def test_tf32_switch_round_trips():
    G = cuda_module()
    assert G.get_tf32() is False
    try:
        G.set_tf32(True)
        assert G.get_tf32() is True
    finally:
        G.set_tf32(False)
    assert G.get_tf32() is False


def _cublaslt_include_dir():
    """(folder with a real cublasLt.h or None, where it was looked for): $DEEPCORE_CUBLASLT_HEADER_CHECK
    when set, else the include folder of an installed nvidia-cublas wheel."""
    d = os.environ.get("DEEPCORE_CUBLASLT_HEADER_CHECK")
    if d:
        return (d if os.path.isfile(os.path.join(d, "cublasLt.h")) else None), f"DEEPCORE_CUBLASLT_HEADER_CHECK={d}"
    import importlib.util
    spec = importlib.util.find_spec("nvidia")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for sub in ("cu13/include", "cublas/include"):
            if os.path.exists(os.path.join(loc, sub, "cublasLt.h")):
                return os.path.join(loc, sub), "the nvidia-cublas wheel"
    return None, "an installed nvidia-cublas wheel (pip install nvidia-cublas) or DEEPCORE_CUBLASLT_HEADER_CHECK=<dir>"


def test_cublaslt_declarations_match_a_real_header():
    """cuda/check/cublaslt_header_check.cpp static_asserts every value, layout and signature of
    cuda/cublaslt.h against a real cublasLt.h (the CMake option DEEPCORE_CUBLASLT_HEADER_CHECK does
    the same in a build). Skips without a cublasLt.h, the CUDA headers or a C++ compiler, unless
    DEEPCORE_CUBLASLT_HEADER_CHECK is set (CI sets it): then it fails, naming what is missing."""
    header, header_where = _cublaslt_include_dir()
    cuda_inc = cuda_include_dir()
    cxx = shutil.which(os.environ["CXX"]) if os.environ.get("CXX") else shutil.which("c++") or shutil.which("g++")
    missing = []
    if header is None:
        missing.append(f"cublasLt.h (looked in {header_where})")
    if cuda_inc is None:
        missing.append("the CUDA toolkit's headers (cuda_runtime.h, looked in $CUDA_HOME, $CUDA_PATH, nvcc's "
                       "toolkit and /usr/local/cuda*; set CUDA_HOME)")
    if cxx is None:
        missing.append(f"a C++ compiler (CXX={os.environ['CXX']} not found)" if os.environ.get("CXX")
                       else "a C++ compiler (no c++ or g++ on PATH; or set CXX)")
    if missing:
        why = "cannot check cuda/cublaslt.h against a real cublasLt.h: missing " + "; ".join(missing)
        if os.environ.get("DEEPCORE_CUBLASLT_HEADER_CHECK"):
            pytest.fail(why + " (DEEPCORE_CUBLASLT_HEADER_CHECK is set: the check is required)", pytrace=False)
        pytest.skip(why)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "cuda", "check", "cublaslt_header_check.cpp")
    out = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-I", header, "-I", str(cuda_inc),
                          "-I", os.path.join(root, "cuda"), src], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    # The check names the cuBLAS release it compared against (a #pragma message): the header compiled
    # defines NVIDIA's CUBLAS_VER_MAJOR/MINOR/PATCH, as a real cublasLt.h does.
    assert re.search(r"checked against cublasLt\.h of cuBLAS \d+\.\d+\.\d+", out.stderr), out.stderr[-4000:]


# --------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def GB(G):
    """The CUDA module, when cuBLASLt is there too (the GEMM twins need it)."""
    if not G.blas_available():
        pytest.skip("cuBLASLt unavailable: " + G.blas_reason())
    return G


def assert_within_gemm_bound(got, want, bound, rel, what=""):
    """|got - want| <= rel * (bound + |want|) + 1e-7, elementwise (bound: the sum of |products|)."""
    err = np.abs(got.astype(np.float64) - want)
    lim = rel * (bound + np.abs(want)) + 1e-7
    bad = ~(err <= lim)
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} beyond the bound; worst err {err.max():.3g} "
                           f"where the bound is {lim.flat[np.argmax(err - lim)]:.3g}")


def test_gemm_without_cublaslt_raises_runtime_error_with_the_reason(G):
    if G.blas_available():
        pytest.skip("cuBLASLt is available")
    a = G.DeviceBuffer((2, 3))
    with pytest.raises(RuntimeError, match="sgemm: the GPU GEMM needs cuBLASLt") as err:
        G.sgemm(a, G.DeviceBuffer((3, 4)), G.DeviceBuffer((2, 4)))
    assert G.blas_reason() in str(err.value)


# ------------------------------------------------------------------ sgemm
SGEMM_SHAPES = [(1, 1, 1), (5, 7, 4), (37, 65, 129), (256, 784, 300), (1000, 10, 100)]


def sgemm_case(m, k, n, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, m) if ta else (m, k)).astype(np.float32)
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(np.float32)
    c = rng.normal(size=(m, n)).astype(np.float32)
    return a, b, c


def run_sgemm(G, a, b, c, ta, tb, alpha, beta):
    want = c.copy()
    C.sgemm(a, b, want, ta, tb, alpha, beta)
    cd = dev(G, c)
    G.sgemm(dev(G, a), dev(G, b), cd, ta, tb, alpha, beta)
    opa, opb = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
    bound = abs(alpha) * (np.abs(opa) @ np.abs(opb)) + (abs(beta) * np.abs(c) if beta else 0.0)  # C unread at beta 0
    return cd.to_numpy(), want, bound


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 2.0), (-1.5, 1.0)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", SGEMM_SHAPES, ids=str)
def test_sgemm_matches_cpu(GB, m, k, n, ta, tb, alpha, beta):
    a, b, c = sgemm_case(m, k, n, ta, tb, seed=m + k + n)
    got, want, bound = run_sgemm(GB, a, b, c, ta, tb, alpha, beta)
    assert_within_gemm_bound(got, want, bound, GEMM_REL_FP32, "sgemm fp32")


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_sgemm_tf32_within_documented_tolerance(GB, ta, tb):
    a, b, c = sgemm_case(512, 1024, 384, ta, tb, seed=3)
    try:
        GB.set_tf32(True)
        got, want, bound = run_sgemm(GB, a, b, c, ta, tb, 1.0, 0.0)
    finally:
        GB.set_tf32(False)
    assert_within_gemm_bound(got, want, bound, GEMM_REL_TF32, "sgemm TF32")
    # and back in fp32 the same call is fp32-exact again (the plan cache keys on the precision)
    got32, want32, bound32 = run_sgemm(GB, a, b, c, ta, tb, 1.0, 0.0)
    assert_within_gemm_bound(got32, want32, bound32, GEMM_REL_FP32, "sgemm fp32 after TF32")


def test_sgemm_beta_zero_ignores_nan_in_c_and_empty_inner_dimension_scales_c(GB):
    a, b, _ = sgemm_case(8, 16, 5, False, False, seed=4)
    c = np.full((8, 5), np.nan, np.float32)
    got, want, bound = run_sgemm(GB, a, b, c, False, False, 1.0, 0.0)
    assert np.all(np.isfinite(got))
    assert_within_gemm_bound(got, want, bound, GEMM_REL_FP32, "beta 0")
    # k == 0: C = beta C (0 for beta 0), as BLAS
    c = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    for beta in (0.0, 2.5):
        cd = dev(GB, c)
        GB.sgemm(GB.DeviceBuffer((3, 0)), GB.DeviceBuffer((0, 4)), cd, False, False, 1.0, beta)
        np.testing.assert_array_equal(cd.to_numpy(), np.float32(beta) * c)
    GB.sgemm(GB.DeviceBuffer((0, 3)), GB.DeviceBuffer((3, 4)), GB.DeviceBuffer((0, 4)))  # m == 0: nothing


def test_sgemm_bad_input_raises_like_cpu(GB):
    a, b, c = np.zeros((3, 4), np.float32), np.zeros((5, 2), np.float32), np.zeros((3, 2), np.float32)
    for args in [(a, b, c), (a, np.zeros((4, 2), np.float32), np.zeros((3, 3), np.float32)),
                 (a.reshape(12), b, c), (a, np.zeros((4, 2), np.float32), c, True)]:
        with pytest.raises(ValueError) as cpu_err:
            C.sgemm(*args)
        with pytest.raises(ValueError) as gpu_err:
            GB.sgemm(*[dev(GB, x) if isinstance(x, np.ndarray) else x for x in args])
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="sgemm: b must have dtype float32, got int32"):
        GB.sgemm(dev(GB, a), GB.DeviceBuffer((4, 2), "int32"), dev(GB, c))


# ------------------------------------------------------------------ dense
ACTS = [("linear", 0.0, 1.0), ("sigmoid", 0.0, 1.0), ("tanh", 0.0, 1.0), ("relu", 0.0, 1.0),
        ("leaky_relu", 0.2, 1.0), ("elu", 0.5, 1.0), ("selu", 0.0, 1.0), ("gelu", 0.0, 1.0),
        ("gelu_tanh", 0.0, 1.0), ("swish", 0.0, 1.7), ("mish", 0.0, 1.0), ("softplus", 0.0, 1.0),
        ("softmax", 0.0, 1.0)]
IN_PLACE = {"linear", "relu", "elu", "selu", "tanh"}  # the Dense layer's y is z for these
DENSE_SHAPES = [(5, 7, 4), (64, 300, 100), (33, 1, 10), (257, 784, 33)]


def dense_problem(batch, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    w = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = rng.normal(scale=0.5, size=n_out).astype(np.float32)
    return x, w, b


def cpu_forward(x, w, b, code, alpha, beta, in_place):
    z = np.full((x.shape[0], w.shape[1]), np.nan, np.float32)
    y = z if in_place else np.full_like(z, np.nan)
    C.dense_forward(x, w, b, z, y, code, alpha, beta)
    return z, y


def gpu_forward(G, x, w, b, code, alpha, beta, in_place):
    xd, wd = dev(G, x), dev(G, w)
    bd = None if b is None else dev(G, b)
    zd = dev(G, np.full((x.shape[0], w.shape[1]), np.nan, np.float32))
    yd = zd if in_place else dev(G, np.full((x.shape[0], w.shape[1]), np.nan, np.float32))
    G.dense_forward(xd, wd, bd, zd, yd, code, alpha, beta)
    return zd, yd


@pytest.mark.parametrize("in_place", [False, True], ids=["y_is_not_z", "y_is_z"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name,alpha,beta", ACTS, ids=[a[0] for a in ACTS])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
def test_dense_forward_matches_cpu(GB, shape, name, alpha, beta, with_bias, in_place):
    if in_place and name not in IN_PLACE:
        pytest.skip("y may be z only where the derivative follows from y")
    x, w, b = dense_problem(*shape, seed=sum(shape))
    b = b if with_bias else None
    code = _CODES[name]
    z_cpu, y_cpu = cpu_forward(x, w, b, code, alpha, beta, in_place)
    zd, yd = gpu_forward(GB, x, w, b, code, alpha, beta, in_place)
    bound = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    if not in_place:
        assert_within_gemm_bound(zd.to_numpy(), z_cpu, bound, GEMM_REL_FP32, "z")
    # y = act(z): the activations here are at most ~2-Lipschitz
    assert_within_gemm_bound(yd.to_numpy(), y_cpu, 2 * bound, GEMM_REL_FP32, "y")


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
@pytest.mark.parametrize("name", ["linear", "relu"])
def test_dense_forward_on_misaligned_views_matches_cpu(GB, name, tf32):
    """Views into packed parameters (an odd-sized layer's bias starts 4 bytes
    past a 16-byte boundary): the bias stays out of cuBLASLt's epilogue, and
    misaligned x, w and z still give the CPU's result."""
    x, w, b = dense_problem(9, 13, 7, seed=5)
    z_cpu, y_cpu = cpu_forward(x, w, b, _CODES[name], 0.0, 1.0, True)

    def view(a):  # a device copy of a, starting one float into a larger buffer
        flat = GB.DeviceBuffer((a.size + 1,), "float32")
        v = flat[1:].reshape(a.shape)
        v[...] = a
        return flat, v

    keep = [view(a) for a in (x, w, b, np.zeros_like(z_cpu))]
    (_, xd), (_, wd), (_, bd), (_, zd) = keep
    assert all(v.data_ptr % 16 == 4 for _, v in keep)
    GB.set_tf32(tf32)
    try:
        GB.dense_forward(xd, wd, bd, zd, zd, _CODES[name], 0.0, 1.0)
        got = zd.to_numpy()
    finally:
        GB.set_tf32(False)
    bound = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b)
    assert_within_gemm_bound(got, y_cpu, bound, GEMM_REL_TF32 if tf32 else GEMM_REL_FP32, "y")


def test_dense_forward_with_empty_inner_dimension_gives_bias_then_activation(GB):
    b = np.array([-1.0, 0.5, 2.0], np.float32)
    for name, in_place in (("relu", True), ("relu", False), ("sigmoid", False)):
        zd, yd = gpu_forward(GB, np.zeros((4, 0), np.float32), np.zeros((0, 3), np.float32), b, _CODES[name],
                             0.0, 1.0, in_place)
        want = np.broadcast_to(ref_forward(name, b.astype(np.float64), 0.0, 1.0), (4, 3))
        np.testing.assert_allclose(yd.to_numpy(), want, rtol=RTOL, atol=ATOL)
        if not in_place:
            np.testing.assert_array_equal(zd.to_numpy(), np.broadcast_to(b, (4, 3)))


def test_dense_forward_relu_nan_keeps_nan_unfused_and_is_nan_or_zero_fused(GB):
    """Unfused (y is not z): our ReLU kernel, NaN stays NaN as on the CPU. Fused (y is z):
    cuBLASLt's epilogue max(t, 0) may give 0 for NaN (documented in cuda/dense.cu)."""
    x, w, b = dense_problem(4, 6, 5, seed=9)
    x[0, 0] = np.nan
    z_cpu, y_cpu = cpu_forward(x, w, b, _CODES["relu"], 0.0, 1.0, False)
    assert np.all(np.isnan(y_cpu[0]))
    _, yd = gpu_forward(GB, x, w, b, _CODES["relu"], 0.0, 1.0, False)
    y = yd.to_numpy()
    assert np.all(np.isnan(y[0]))
    np.testing.assert_allclose(y[1:], y_cpu[1:], rtol=RTOL, atol=ATOL)
    zd, _ = gpu_forward(GB, x, w, b, _CODES["relu"], 0.0, 1.0, True)
    fused = zd.to_numpy()
    assert np.all(np.isnan(fused[0]) | (fused[0] == 0.0))
    np.testing.assert_allclose(fused[1:], y_cpu[1:], rtol=RTOL, atol=ATOL)


# (dy_is_dz, accumulate, with_dx, with_db)
BACKWARD_FLAGS = [(False, False, True, True), (True, False, True, True), (False, True, True, True),
                  (False, False, False, False)]


@pytest.mark.parametrize("flags", BACKWARD_FLAGS,
                         ids=["plain", "dy_is_dz", "accumulate", "no_dx_no_db"])
@pytest.mark.parametrize("name,alpha,beta", ACTS, ids=[a[0] for a in ACTS])
@pytest.mark.parametrize("shape", [(5, 7, 4), (300, 128, 65)], ids=str)
def test_dense_backward_matches_cpu(GB, shape, name, alpha, beta, flags):
    dy_is_dz, accumulate, with_dx, with_db = flags
    in_place = name in IN_PLACE
    x, w, b = dense_problem(*shape, seed=7)
    code = _CODES[name]
    rng = np.random.default_rng(8)
    dy = rng.normal(size=(shape[0], shape[2])).astype(np.float32)
    dw0 = rng.normal(size=w.shape).astype(np.float32) if accumulate else np.full_like(w, np.nan)
    db0 = rng.normal(size=b.shape).astype(np.float32) if accumulate else np.full_like(b, np.nan)
    z, y = cpu_forward(x, w, b, code, alpha, beta, in_place)

    dz_cpu = np.full_like(z, np.nan)
    dx_cpu = np.full_like(x, np.nan) if with_dx else None
    dw_cpu, db_cpu = dw0.copy(), (db0.copy() if with_db else None)
    C.dense_backward(x, w, z, y, dy, dz_cpu, dx_cpu, dw_cpu, db_cpu, code, alpha, beta, dy_is_dz, accumulate)

    yd = dev(GB, y)
    zd = yd if in_place else dev(GB, z)
    dzd = dev(GB, np.full_like(z, np.nan))
    dxd = dev(GB, np.full_like(x, np.nan)) if with_dx else None
    dwd, dbd = dev(GB, dw0), (dev(GB, db0) if with_db else None)
    GB.dense_backward(dev(GB, x), dev(GB, w), zd, yd, dev(GB, dy), dzd, dxd, dwd, dbd, code, alpha, beta,
                      dy_is_dz, accumulate)

    dz = dy if (dy_is_dz or name == "linear") else dz_cpu
    if dz is dz_cpu:
        np.testing.assert_allclose(dzd.to_numpy(), dz_cpu, rtol=RTOL, atol=ATOL)
    x64, w64, dz64 = x.astype(np.float64), w.astype(np.float64), np.abs(dz.astype(np.float64))
    prev = np.abs(dw0.astype(np.float64)) if accumulate else 0.0
    # dz on the two devices differs by ~1e-5 relative too: it enters the bounds with the same weight
    assert_within_gemm_bound(dwd.to_numpy(), dw_cpu, 2 * (np.abs(x64).T @ dz64) + prev, GEMM_REL_FP32, "dW")
    if with_dx:
        assert_within_gemm_bound(dxd.to_numpy(), dx_cpu, 2 * (dz64 @ np.abs(w64).T), GEMM_REL_FP32, "dx")
    if with_db:
        prev_b = np.abs(db0.astype(np.float64)) if accumulate else 0.0
        assert_within_gemm_bound(dbd.to_numpy(), db_cpu, 2 * dz64.sum(axis=0) + prev_b, GEMM_REL_FP32, "db")


@pytest.mark.parametrize("name,alpha,beta", [a for a in ACTS if a[0] not in ("relu", "leaky_relu", "elu", "selu")],
                         ids=[a[0] for a in ACTS if a[0] not in ("relu", "leaky_relu", "elu", "selu")])
def test_dense_backward_on_the_gpu_matches_finite_differences(GB, name, alpha, beta):
    """The GPU's dx, dW, db for L = sum(dy * act(x W + b)) against central differences of the float64 reference."""
    x, w, b = dense_problem(5, 7, 4, seed=11)
    dy = np.random.default_rng(12).normal(size=(5, 4)).astype(np.float32)
    code = _CODES[name]
    zd, yd = gpu_forward(GB, x, w, b, code, alpha, beta, False)
    dzd, dxd, dwd, dbd = GB.DeviceBuffer((5, 4)), GB.DeviceBuffer((5, 7)), GB.DeviceBuffer((7, 4)), GB.DeviceBuffer((4,))
    GB.dense_backward(dev(GB, x), dev(GB, w), zd, yd, dev(GB, dy), dzd, dxd, dwd, dbd, code, alpha, beta)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))

    def loss(x_, w_, b_):
        return float(np.sum(dy64 * ref_forward(name, x_ @ w_ + b_, alpha, beta)))

    for got, ref in ((dxd, central_difference(lambda a: loss(a, w64, b64), x64)),
                     (dwd, central_difference(lambda a: loss(x64, a, b64), w64)),
                     (dbd, central_difference(lambda a: loss(x64, w64, a), b64))):
        ref_scale = max(1.0, np.abs(ref).max())
        np.testing.assert_allclose(got.to_numpy(), ref, rtol=1e-3, atol=1e-4 * ref_scale)


def test_dense_bias_gradient_is_deterministic_over_many_row_slices(GB):
    # 70_000 rows: 274 slices of 256 rows, a partial last slice, 3 columns (one partial 32-wide block)
    dz = np.random.default_rng(13).normal(size=(70_000, 3)).astype(np.float32)
    x = np.zeros((70_000, 1), np.float32)
    w = np.zeros((1, 3), np.float32)
    outs = []
    for _ in range(2):
        db = GB.DeviceBuffer((3,))
        GB.dense_backward(dev(GB, x), dev(GB, w), dev(GB, dz), dev(GB, dz), dev(GB, dz), GB.DeviceBuffer((70_000, 3)),
                          None, GB.DeviceBuffer((1, 3)), db, _CODES["linear"], 0.0, 1.0, True, False)
        outs.append(db.to_numpy())
    np.testing.assert_array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    np.testing.assert_allclose(outs[0], dz.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-6)


def test_dense_steady_state_allocates_nothing(GB):
    x, w, b = dense_problem(64, 100, 30, seed=14)
    xd, wd, bd = dev(GB, x), dev(GB, w), dev(GB, b)
    z, dz, dx, dw, db = (GB.DeviceBuffer(s) for s in ((64, 30), (64, 30), (64, 100), (100, 30), (30,)))
    dy = dev(GB, np.ones((64, 30), np.float32))

    def step():
        GB.dense_forward(xd, wd, bd, z, z, _CODES["relu"])
        GB.dense_backward(xd, wd, z, z, dy, dz, dx, dw, db, _CODES["relu"])

    step()
    before = GB.memory_stats()["malloc_calls"]
    for _ in range(5):
        step()
    assert GB.memory_stats()["malloc_calls"] == before


def test_dense_bad_input_raises_like_cpu(GB):
    x, w, b = dense_problem(4, 3, 2, seed=15)
    z = np.zeros((4, 2), np.float32)
    relu = _CODES["relu"]

    def both(fn_name, *host_args):
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            getattr(C, fn_name)(*host_args)
        dev_args = [dev(GB, a) if isinstance(a, np.ndarray) else a for a in host_args]
        with pytest.raises(cpu_err.type) as gpu_err:
            getattr(GB, fn_name)(*dev_args)
        assert str(gpu_err.value) == str(cpu_err.value)

    both("dense_forward", x.reshape(12), w, b, z, z, relu)                    # x rank
    both("dense_forward", x, w[:2].copy(), b, z, z, relu)                     # w rows
    both("dense_forward", x, w, b, z[:3].copy(), z, relu)                     # z shape
    both("dense_forward", x, w, b, z, np.zeros((4, 3), np.float32), relu)     # y shape
    both("dense_forward", x, w, b[:1].copy(), z, z, relu)                     # b shape
    dw = np.zeros_like(w)
    both("dense_backward", x, w, z, z, z[:3].copy(), z, None, dw, None, relu)  # dy shape
    both("dense_backward", x, w, z, z, z, z, np.zeros((4, 4), np.float32), dw, None, relu)  # dx shape
    both("dense_backward", x, w, z, z, z, z, None, dw, np.zeros(3, np.float32), relu)       # db shape
    both("dense_backward", x, w, z, z, z, z, None, dw.T.copy(), None, relu)                 # dw shape
    with pytest.raises(TypeError, match="dense_forward: w must have dtype float32, got int32"):
        GB.dense_forward(dev(GB, x), GB.DeviceBuffer((3, 2), "int32"), None, dev(GB, z), dev(GB, z), relu)


# ----------------------------------------------------------------- losses
def loss_inputs(name, rows, cols, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(rows, cols)).astype(np.float32)
    if name in ("bce", "cce"):
        pred = 1.0 / (1.0 + np.exp(-logits)) if name == "bce" else np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        pred = pred.astype(np.float32)
        pred.flat[0] = 0.0   # clipped to eps
        pred.flat[-1] = 1.0  # clipped to 1 - eps
    else:
        pred = logits
    if name in ("cce", "cce_logits"):
        t = rng.random(size=(rows, cols)).astype(np.float32)
        t /= t.sum(axis=1, keepdims=True)  # soft labels
        t[0] = 0.0
        t[0, rows % cols] = 1.0  # a one-hot row
    elif name in ("bce", "bce_logits"):
        t = (rng.random(size=(rows, cols)) < 0.5).astype(np.float32)
        t.flat[1::7] = 0.3  # soft targets
    else:
        t = rng.normal(size=(rows, cols)).astype(np.float32)
    return pred, t


@pytest.mark.parametrize("param", [1.0, 0.3])
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("rows,cols", [(1000, 10), (37, 1000), (5, 1), (70_000, 3)], ids=str)
def test_loss_forward_backward_matches_cpu(G, name, rows, cols, param):
    if param != 1.0 and name != "huber":
        pytest.skip("param is Huber's delta")
    kind = LOSSES[name]
    pred, t = loss_inputs(name, rows, cols, seed=rows + cols)
    g_cpu = np.empty_like(pred)
    loss_cpu = C.loss_forward_backward(kind, pred, t, g_cpu, param)
    gd = dev(G, np.full_like(pred, np.nan))
    pd, td = dev(G, pred), dev(G, t)
    loss = G.loss_forward_backward(kind, pd, td, gd, param)
    assert loss == pytest.approx(loss_cpu, rel=1e-9)
    # the gradients' scale: 1/rows for the categorical kinds, 1/n (2/n for MSE) for the others
    scale = 1.0 / rows if name in ("cce", "cce_logits") else 2.0 / (rows * cols)
    np.testing.assert_allclose(gd.to_numpy(), g_cpu, rtol=RTOL, atol=ATOL * scale)
    # without a gradient, the same bits; and again (deterministic)
    assert G.loss_forward_backward(kind, pd, td, None, param) == loss
    assert G.loss_forward_backward(kind, pd, td, gd, param) == loss


@pytest.mark.parametrize("name", ["mse", "bce_logits", "cce", "cce_logits"])
def test_loss_gradient_may_overwrite_the_prediction_like_cpu(G, name):
    pred, t = loss_inputs(name, 33, 40, seed=16)
    g_cpu = pred.copy()
    loss_cpu = C.loss_forward_backward(LOSSES[name], g_cpu, t, g_cpu)
    pd = dev(G, pred)
    loss = G.loss_forward_backward(LOSSES[name], pd, dev(G, t), pd)
    assert loss == pytest.approx(loss_cpu, rel=1e-9)
    np.testing.assert_allclose(pd.to_numpy(), g_cpu, rtol=RTOL, atol=ATOL)


def test_loss_nan_propagates_like_cpu(G):
    for name in LOSSES:
        pred, t = loss_inputs(name, 4, 5, seed=17)
        pred[1, 2] = np.nan
        g_cpu = np.empty_like(pred)
        loss_cpu = C.loss_forward_backward(LOSSES[name], pred, t, g_cpu)
        gd = G.DeviceBuffer(pred.shape)
        loss = G.loss_forward_backward(LOSSES[name], dev(G, pred), dev(G, t), gd)
        assert np.isnan(loss) == np.isnan(loss_cpu), name
        np.testing.assert_array_equal(np.isnan(gd.to_numpy()), np.isnan(g_cpu), err_msg=name)


def test_loss_bad_input_raises_like_cpu(G):
    p = np.zeros((4, 3), np.float32)

    def both(*host_args):
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            C.loss_forward_backward(*host_args)
        dev_args = [dev(G, a) if isinstance(a, np.ndarray) else a for a in host_args]
        with pytest.raises(cpu_err.type) as gpu_err:
            G.loss_forward_backward(*dev_args)
        assert str(gpu_err.value) == str(cpu_err.value)

    both(-1, p, p, None)
    both(0, p, p[:3].copy(), None)
    both(0, p, p, np.zeros((4, 4), np.float32))
    both(0, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), None)
    with pytest.raises(TypeError, match="y_true must have dtype float32, got int32"):
        G.loss_forward_backward(0, dev(G, p), G.DeviceBuffer((4, 3), "int32"), None)


# ------------------------------------------------------------- reductions
@pytest.mark.parametrize("n", [0, 1, 1000, (1 << 20) + 3])
@pytest.mark.parametrize("beta", [1.0, 0.37])
def test_swish_beta_grad_matches_cpu_on_the_device(G, n, beta):
    """beta read from and dbeta written to device scalars; fixed-order double
    sums (the CPU's order differs), deterministic across calls."""
    rng = np.random.default_rng(18)
    x = rng.normal(scale=3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    want = np.full((), np.nan, np.float32)
    C.swish_beta_grad(x, dy, np.full((), beta, np.float32), want)
    xd, dyd, beta_d = dev(G, x), dev(G, dy), dev(G, np.full((), beta, np.float32))
    got = dev(G, np.full((), np.nan, np.float32))
    G.swish_beta_grad(xd, dyd, beta_d, got)
    scale = float(np.sum(np.abs(dy.astype(np.float64)) * x.astype(np.float64) ** 2))
    assert abs(float(got.to_numpy()) - float(want)) <= RTOL * scale
    again = dev(G, np.full((1,), np.nan, np.float32))
    G.swish_beta_grad(xd, dyd, beta_d, again)
    assert again.to_numpy()[0] == got.to_numpy()  # deterministic, and a (1,) dbeta takes the same value


@pytest.mark.parametrize("beta", [1.0, -1.7])
def test_swish_beta_grad_on_the_device_is_accurate_where_the_sigmoid_saturates(G, beta):
    """|beta x| in [6, 20]: the terms come from the shared swish_beta_grad_term
    (no 1 - s cancellation), so the device result is as close to float64 as
    the CPU's."""
    rng = np.random.default_rng(25)
    mag = rng.uniform(6.0, 20.0, size=5000) / abs(beta)
    x = (mag * rng.choice([-1.0, 1.0], size=mag.size)).astype(np.float32)
    dy = rng.normal(size=x.size).astype(np.float32)
    got = dev(G, np.full((), np.nan, np.float32))
    G.swish_beta_grad(dev(G, x), dev(G, dy), dev(G, np.full((), beta, np.float32)), got)
    x64, dy64, bx = x.astype(np.float64), dy.astype(np.float64), np.float64(np.float32(beta)) * x.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-bx))
    terms = dy64 * x64 ** 2 * s * (1.0 - s)
    assert abs(float(got.to_numpy()) - terms.sum()) <= 1e-6 * np.abs(terms).sum()


def test_swish_kernels_bad_input_raises_like_cpu(G):
    x = np.zeros((4, 3), np.float32)
    one, two = np.ones((), np.float32), np.ones(2, np.float32)
    cases = [("swish_beta_grad", (x, x[:2].copy(), one, one.copy())),
             ("swish_beta_grad", (x, x, two, one.copy())),
             ("swish_beta_grad", (x, x, one, two.copy())),
             ("swish_forward", (x, x[:, :2].copy(), one)),
             ("swish_forward", (x, x.copy(), np.ones((1, 1), np.float32))),
             ("swish_backward", (x, x, x.copy(), two))]
    for name, host_args in cases:
        with pytest.raises(ValueError) as cpu_err:
            getattr(C, name)(*host_args)
        with pytest.raises(ValueError) as gpu_err:
            getattr(G, name)(*[dev(G, a) for a in host_args])
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="swish_forward: beta must have dtype float32, got int32"):
        G.swish_forward(dev(G, x), dev(G, x), G.DeviceBuffer((), "int32"))
    with pytest.raises(TypeError, match="swish_backward: beta must be a deepcore._cuda.DeviceBuffer"):
        G.swish_backward(dev(G, x), dev(G, x), dev(G, x), 1.0)  # a number would need a host round trip


@pytest.mark.parametrize("n", [0, 1, 1000, (1 << 20) + 3])
def test_count_nonfinite_matches_cpu(G, n):
    x = np.random.default_rng(19).normal(size=n).astype(np.float32)
    x[::97] = np.nan
    x[5::101] = np.inf
    x[7::103] = -np.inf
    assert G.count_nonfinite(dev(G, x)) == C.count_nonfinite(x)
    assert G.count_nonfinite(dev(G, x.reshape(-1, 1) if n else x)) == C.count_nonfinite(x)


# ----------------------------------------------------------------- gather
@pytest.mark.parametrize("dtype,row_shape", [(np.float32, (784,)), (np.int32, ()), (np.int64, (3, 5)),
                                             (np.float32, (1,))], ids=str)
def test_gather_rows_matches_cpu(G, dtype, row_shape):
    rng = np.random.default_rng(20)
    src = (rng.normal(size=(1000,) + row_shape) * 100).astype(dtype)
    idx = rng.integers(0, 1000, size=257).astype(np.int64)
    idx[:3] = [0, 999, 0]  # both ends, a repeat
    want = np.empty((257,) + row_shape, dtype)
    C.gather_rows(src, idx, want)
    dst = G.DeviceBuffer((257,) + row_shape, np.dtype(dtype).name)
    G.gather_rows(dev(G, src), idx, dst)
    np.testing.assert_array_equal(dst.to_numpy(), want)
    G.gather_rows(dev(G, src), idx[:0], G.DeviceBuffer((0,) + row_shape, np.dtype(dtype).name))  # empty


def test_gather_rows_bad_input_raises_like_cpu_and_writes_nothing(G):
    src = np.arange(20, dtype=np.float32).reshape(10, 2)
    dst = np.full((3, 2), 7.0, np.float32)
    for idx in ([1, 10, 2], [-1, 0, 0]):
        idx = np.array(idx, np.int64)
        with pytest.raises(ValueError) as cpu_err:
            C.gather_rows(src, idx, dst.copy())
        dd = dev(G, dst)
        with pytest.raises(ValueError) as gpu_err:
            G.gather_rows(dev(G, src), idx, dd)
        assert str(gpu_err.value) == str(cpu_err.value)
        np.testing.assert_array_equal(dd.to_numpy(), dst)
    for args in [(src, np.zeros(3, np.int32), dst), (src, np.zeros(3, np.int64), dst.astype(np.int32)),
                 (src, np.zeros(3, np.int64), np.zeros((3, 3), np.float32)),
                 (src, np.zeros((3, 1), np.int64), dst)]:
        with pytest.raises((TypeError, ValueError)) as cpu_err:
            C.gather_rows(*args)
        with pytest.raises(cpu_err.type) as gpu_err:
            G.gather_rows(dev(G, args[0]), args[1], dev(G, args[2]))
        assert str(gpu_err.value) == str(cpu_err.value)
    with pytest.raises(TypeError, match="indices must be a host numpy int64 array"):
        G.gather_rows(dev(G, src), dev(G, np.zeros(3, np.int64)), dev(G, dst))
