"""The host fake of cuBLASLt (tests/cuda_emulator/fake_cublaslt.cpp) against a
float64 NumPy reference, so that tests running deepcore's GPU code on the CUDA
emulator can trust it: column-major D = epilogue(alpha op(A) op(B) + beta C)
with leading dimensions, the BIAS / RELU / RELU_BIAS epilogues, the alignment
and workspace rules, the error statuses, and the emulator-queue contract.
Builds the library with the host compiler; skips without one or without the
CUDA toolkit's headers (only their types are used).
"""

import ctypes as C
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cuda_toolkit import cuda_include_dir

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests/cuda_emulator/fake_cublaslt.cpp"

# cuda/cublaslt.h (cuBLAS 13 values)
SUCCESS, NOT_INITIALIZED, INVALID_VALUE, NOT_SUPPORTED = 0, 1, 7, 15
OP_N, OP_T = 0, 1
COMPUTE_32F, COMPUTE_32F_FAST_TF32, COMPUTE_64F = 68, 77, 70
CUDA_R_32F, CUDA_R_64F = 0, 1
DESC_COMPUTE_TYPE, DESC_SCALE_TYPE, DESC_TRANSA, DESC_TRANSB, DESC_EPILOGUE, DESC_BIAS_POINTER = 0, 1, 3, 4, 7, 8
EPI_DEFAULT, EPI_RELU, EPI_BIAS, EPI_RELU_BIAS = 1, 2, 4, 6
PREF_MAX_WORKSPACE_BYTES = 1
PREF_MIN_ALIGNMENT = {"A": 5, "B": 6, "C": 7, "D": 8}


def compile_shared(cxx, source, out, extra=()):
    cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
           *extra, str(source), "-ldl", "-o", str(out)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, " ".join(cmd) + "\n" + build.stderr


@pytest.fixture(scope="module")
def fake_path(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    include = cuda_include_dir()
    if not cxx or include is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit's headers")
    out = tmp_path_factory.mktemp("fake_cublaslt") / "libcublasLt.so.13"
    compile_shared(cxx, SOURCE, out, [f"-I{ROOT / 'cuda'}", f"-I{include}", "-Wl,-soname,libcublasLt.so.13"])
    return out


class HeuristicResult(C.Structure):
    _fields_ = [("algo", C.c_uint64 * 8), ("workspaceSize", C.c_size_t), ("state", C.c_int),
                ("wavesCount", C.c_float), ("reserved", C.c_int * 4)]


def bind(lib):
    P, I, U32 = C.c_void_p, C.c_int, C.c_uint32
    sig = {
        "cublasLtGetVersion": (C.c_size_t, []),
        "cublasLtGetCudartVersion": (C.c_size_t, []),
        "cublasLtGetStatusName": (C.c_char_p, [I]),
        "cublasLtCreate": (I, [C.POINTER(P)]),
        "cublasLtMatmulDescCreate": (I, [C.POINTER(P), I, I]),
        "cublasLtMatmulDescDestroy": (I, [P]),
        "cublasLtMatmulDescSetAttribute": (I, [P, I, P, C.c_size_t]),
        "cublasLtMatrixLayoutCreate": (I, [C.POINTER(P), I, C.c_uint64, C.c_uint64, C.c_int64]),
        "cublasLtMatrixLayoutDestroy": (I, [P]),
        "cublasLtMatmulPreferenceCreate": (I, [C.POINTER(P)]),
        "cublasLtMatmulPreferenceDestroy": (I, [P]),
        "cublasLtMatmulPreferenceSetAttribute": (I, [P, I, P, C.c_size_t]),
        "cublasLtMatmulAlgoGetHeuristic": (I, [P, P, P, P, P, P, P, I, C.POINTER(HeuristicResult), C.POINTER(I)]),
        "cublasLtMatmul": (I, [P, P, P, P, P, P, P, P, P, P, P, P, P, P, C.c_size_t, P]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    del U32
    return lib


@pytest.fixture(scope="module")
def lt(fake_path):
    if os.environ.get("DEEPCORE_CUDA_EMULATOR"):
        # The fake would find the loaded emulator's queue and defer its GEMMs
        # until a stream wait these direct calls never make; under the
        # emulator it is tested through the CUDA test files instead.
        pytest.skip("the fake cuBLASLt is tested on its own here, without the CUDA host emulator loaded")
    return bind(C.CDLL(str(fake_path)))


def set_attr(setter, obj, attr, ctype_value):
    return setter(obj, attr, C.byref(ctype_value), C.sizeof(ctype_value))


def alignment(addr):
    a = 256
    while a > 1 and addr % a:
        a //= 2
    return a


class ColMajor:
    """A rows x cols float32 column-major matrix with leading dimension ld:
    element (i, j) at offset i + j * ld of one buffer (the padding holds `pad`)."""

    def __init__(self, values, ld=None, pad=-7.0):
        values = np.asarray(values, np.float32)
        self.rows, self.cols = values.shape
        self.ld = self.rows if ld is None else ld
        self.store = np.full((max(self.cols, 1), self.ld), pad, np.float32)  # one column per row of `store`
        self.store[: self.cols, : self.rows] = values.T

    @property
    def value(self):
        return self.store[: self.cols, : self.rows].T.copy()

    @property
    def ptr(self):
        return self.store.ctypes.data


class Gemm:
    """One configured cublasLtMatmul: descriptors, preference, heuristic, call."""

    def __init__(self, lt, a, b, c, d, ta=False, tb=False, epilogue=EPI_DEFAULT, bias=None,
                 compute=COMPUTE_32F, max_workspace=32 << 20, align=None, dtype=CUDA_R_32F):
        self.lt, self.a, self.b, self.c, self.d, self.bias = lt, a, b, c, d, bias
        self.handle, self.desc, self.pref = C.c_void_p(), C.c_void_p(), C.c_void_p()
        assert lt.cublasLtCreate(C.byref(self.handle)) == SUCCESS
        assert lt.cublasLtMatmulDescCreate(C.byref(self.desc), compute, CUDA_R_32F) == SUCCESS
        for attr, v in ((DESC_TRANSA, C.c_int32(OP_T if ta else OP_N)), (DESC_TRANSB, C.c_int32(OP_T if tb else OP_N)),
                        (DESC_EPILOGUE, C.c_uint32(epilogue))):
            assert set_attr(lt.cublasLtMatmulDescSetAttribute, self.desc, attr, v) == SUCCESS
        if bias is not None:
            self.bias_ptr = C.c_void_p(bias.ctypes.data)
            assert set_attr(lt.cublasLtMatmulDescSetAttribute, self.desc, DESC_BIAS_POINTER, self.bias_ptr) == SUCCESS
        self.layouts = []
        for m in (a, b, c, d):
            h = C.c_void_p()
            assert lt.cublasLtMatrixLayoutCreate(C.byref(h), dtype, m.rows, m.cols, m.ld) == SUCCESS
            self.layouts.append(h)
        assert lt.cublasLtMatmulPreferenceCreate(C.byref(self.pref)) == SUCCESS
        assert set_attr(lt.cublasLtMatmulPreferenceSetAttribute, self.pref, PREF_MAX_WORKSPACE_BYTES,
                        C.c_uint64(max_workspace)) == SUCCESS
        # As cuda/matmul.cpp does: each matrix's actual alignment (capped at 256) as the minimum.
        align = align or {k: alignment(m.ptr) for k, m in zip("ABCD", (a, b, c, d))}
        for k, v in align.items():
            assert set_attr(lt.cublasLtMatmulPreferenceSetAttribute, self.pref, PREF_MIN_ALIGNMENT[k],
                            C.c_uint32(v)) == SUCCESS
        self.workspace = np.zeros(max(max_workspace, 1) + 256, np.uint8)
        self.ws_ptr = self.workspace.ctypes.data + (-self.workspace.ctypes.data) % 256  # 256-byte aligned

    def heuristic(self):
        result, found = HeuristicResult(), C.c_int(-1)
        s = self.lt.cublasLtMatmulAlgoGetHeuristic(self.handle, self.desc, *self.layouts, self.pref, 1,
                                                   C.byref(result), C.byref(found))
        return s, found.value, result

    def run(self, alpha=1.0, beta=0.0, algo=None, ws_ptr=None, ws_size=None, a_ptr=None, handle=None):
        if algo is None:
            s, found, result = self.heuristic()
            assert (s, found, result.state) == (SUCCESS, 1, SUCCESS)
            algo = result.algo
        al, be = C.c_float(alpha), C.c_float(beta)
        return self.lt.cublasLtMatmul(
            self.handle if handle is None else handle, self.desc, C.byref(al),
            self.a.ptr if a_ptr is None else a_ptr, self.layouts[0], self.b.ptr, self.layouts[1], C.byref(be),
            self.c.ptr, self.layouts[2], self.d.ptr, self.layouts[3], C.byref(algo),
            self.ws_ptr if ws_ptr is None else ws_ptr, len(self.workspace) - 256 if ws_size is None else ws_size,
            None)


def reference(a, b, c, ta, tb, alpha, beta, epilogue=EPI_DEFAULT, bias=None):
    oa = a.value.astype(np.float64)
    ob = b.value.astype(np.float64)
    t = alpha * (oa.T if ta else oa) @ (ob.T if tb else ob)
    if beta != 0:
        t = t + beta * c.value.astype(np.float64)
    if epilogue in (EPI_BIAS, EPI_RELU_BIAS):
        t = t + bias.astype(np.float64)[:, None]  # one value per row of D, every column
    if epilogue in (EPI_RELU, EPI_RELU_BIAS):
        t = np.maximum(t, 0)
    return t


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_matches_float64_for_each_transpose_with_padded_leading_dimensions(lt, ta, tb):
    rng = np.random.default_rng(ta * 2 + tb)
    m, n, k = 5, 3, 7
    a = ColMajor(rand(rng, *((k, m) if ta else (m, k))), ld=(k if ta else m) + 3)
    b = ColMajor(rand(rng, *((n, k) if tb else (k, n))), ld=(n if tb else k) + 2)
    c = ColMajor(rand(rng, m, n), ld=m + 1)
    d = ColMajor(np.zeros((m, n)), ld=m + 4, pad=-7.0)
    g = Gemm(lt, a, b, c, d, ta=ta, tb=tb)
    assert g.run(alpha=0.75, beta=-0.5) == SUCCESS
    np.testing.assert_allclose(d.value, reference(a, b, c, ta, tb, 0.75, -0.5), rtol=1e-6, atol=1e-6)
    assert np.all(d.store[:, m:] == -7.0), "wrote into the padding between columns of D"


def test_beta_zero_does_not_read_c_aliasing_d(lt):
    rng = np.random.default_rng(5)
    a, b = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3))
    d = ColMajor(np.full((4, 3), np.nan))
    g = Gemm(lt, a, b, d, d)  # C is D, same layout
    assert g.run(alpha=2.0, beta=0.0) == SUCCESS
    np.testing.assert_allclose(d.value, reference(a, b, d, False, False, 2.0, 0.0), rtol=1e-6, atol=1e-6)


def test_beta_one_accumulates_into_d_in_place(lt):
    rng = np.random.default_rng(6)
    a, b = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3))
    d = ColMajor(rand(rng, 4, 3), ld=6)
    before = ColMajor(d.value, ld=6)
    g = Gemm(lt, a, b, d, d)
    assert g.run(beta=1.0) == SUCCESS
    np.testing.assert_allclose(d.value, reference(a, b, before, False, False, 1.0, 1.0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("epilogue", [EPI_BIAS, EPI_RELU, EPI_RELU_BIAS])
def test_epilogues_add_one_bias_per_row_of_d_then_relu(lt, epilogue):
    rng = np.random.default_rng(epilogue)
    m, n, k = 6, 5, 4
    a, b = ColMajor(rand(rng, m, k)), ColMajor(rand(rng, k, n))
    c = ColMajor(rand(rng, m, n))
    d = ColMajor(np.zeros((m, n)))
    bias = np.arange(m, dtype=np.float32) - 2.5 if epilogue != EPI_RELU else None
    g = Gemm(lt, a, b, c, d, epilogue=epilogue, bias=bias)
    assert g.run(alpha=1.0, beta=0.5) == SUCCESS
    want = reference(a, b, c, False, False, 1.0, 0.5, epilogue, bias)
    np.testing.assert_allclose(d.value, want, rtol=1e-6, atol=1e-6)
    if epilogue != EPI_BIAS:
        assert (want == 0).any() and (want > 0).any()  # the ReLU had something to do
    else:
        assert (want < 0).any()


def test_relu_epilogue_maps_nan_to_zero_and_bias_epilogue_keeps_it(lt):
    # The fake's documented choice for the undocumented case: max(NaN, 0) = 0 (fmax).
    a = ColMajor(np.array([[np.nan, 1.0], [1.0, 2.0]]))
    b = ColMajor(np.array([[1.0], [1.0]]))
    bias = np.array([0.5, 0.5], np.float32)
    for epilogue, want0 in ((EPI_RELU_BIAS, 0.0), (EPI_RELU, 0.0), (EPI_BIAS, np.nan)):
        d = ColMajor(np.zeros((2, 1)))
        g = Gemm(lt, a, b, d, d, epilogue=epilogue, bias=None if epilogue == EPI_RELU else bias)
        assert g.run() == SUCCESS
        np.testing.assert_equal(d.value[0, 0], np.float32(want0))
        assert d.value[1, 0] == 3.0 + (0.0 if epilogue == EPI_RELU else 0.5)


def test_heuristic_returns_one_plausible_algorithm(lt):
    rng = np.random.default_rng(7)
    a, b, d = ColMajor(rand(rng, 300, 20)), ColMajor(rand(rng, 20, 200)), ColMajor(np.zeros((300, 200)))
    g = Gemm(lt, a, b, d, d, max_workspace=1 << 16, compute=COMPUTE_32F_FAST_TF32)
    s, found, r = g.heuristic()
    assert (s, found, r.state) == (SUCCESS, 1, SUCCESS)
    assert 0 < r.workspaceSize <= 1 << 16 and r.wavesCount > 0
    assert g.run(algo=r.algo, ws_size=r.workspaceSize) == SUCCESS  # exactly the workspace it asked for
    np.testing.assert_allclose(d.value, reference(a, b, d, False, False, 1.0, 0.0), rtol=1e-5, atol=1e-5)
    assert g.run(algo=r.algo, ws_size=r.workspaceSize - 4) == INVALID_VALUE  # less than the algorithm needs


def test_version_is_cuda_13_and_statuses_have_names(lt):
    assert lt.cublasLtGetVersion() // 10000 == 13
    assert lt.cublasLtGetCudartVersion() // 1000 == 13
    assert lt.cublasLtGetStatusName(NOT_SUPPORTED) == b"CUBLAS_STATUS_NOT_SUPPORTED"


def make_layout(lt, rows, cols, ld, dtype=CUDA_R_32F):
    h = C.c_void_p()
    assert lt.cublasLtMatrixLayoutCreate(C.byref(h), dtype, rows, cols, ld) == SUCCESS
    return h


def test_inconsistent_layouts_get_not_supported_from_the_heuristic_and_invalid_value_from_matmul(lt):
    rng = np.random.default_rng(8)
    a, b, d = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3)), ColMajor(np.zeros((4, 3)))
    g = Gemm(lt, a, b, d, d)
    _, _, good = g.heuristic()
    cases = {
        "ld < rows for A": (0, make_layout(lt, 4, 6, 3)),
        "k of B differs from A": (1, make_layout(lt, 5, 3, 5)),
        "D has the wrong shape": (3, make_layout(lt, 4, 2, 4)),
        "C has another shape than D": (2, make_layout(lt, 3, 3, 4)),
        "double matrices": (0, make_layout(lt, 4, 6, 4, CUDA_R_64F)),
    }
    for what, (slot, bad) in cases.items():
        saved = g.layouts[slot]
        g.layouts[slot] = bad
        s, found, _ = g.heuristic()
        assert (s, found) == (NOT_SUPPORTED, 0), what
        want = NOT_SUPPORTED if "double" in what else INVALID_VALUE
        assert g.run(algo=good.algo) == want, what
        g.layouts[slot] = saved
    # In place needs Cdesc == Ddesc: the same leading dimension.
    g.layouts[2] = make_layout(lt, 4, 3, 8)
    assert g.run(algo=good.algo) == INVALID_VALUE
    assert np.all(d.value == 0), "a refused call wrote D"


def test_bad_attributes_handles_and_counts_get_the_documented_status(lt):
    rng = np.random.default_rng(9)
    a, b, d = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3)), ColMajor(np.zeros((4, 3)))
    g = Gemm(lt, a, b, d, d)
    desc_set, pref_set = lt.cublasLtMatmulDescSetAttribute, lt.cublasLtMatmulPreferenceSetAttribute
    assert set_attr(desc_set, g.desc, 9999, C.c_int32(0)) == INVALID_VALUE  # unknown attribute
    assert set_attr(desc_set, g.desc, DESC_TRANSA, C.c_int64(0)) == INVALID_VALUE  # int32_t attribute, 8 bytes
    assert desc_set(g.desc, DESC_EPILOGUE, None, 4) == INVALID_VALUE  # NULL buffer
    assert set_attr(pref_set, g.pref, 0, C.c_uint32(0)) == INVALID_VALUE  # SEARCH_MODE: not in deepcore's subset
    assert set_attr(pref_set, g.pref, PREF_MAX_WORKSPACE_BYTES, C.c_uint32(0)) == INVALID_VALUE  # uint64_t
    result, found = HeuristicResult(), C.c_int(-1)
    assert lt.cublasLtMatmulAlgoGetHeuristic(g.handle, g.desc, *g.layouts, g.pref, 0, C.byref(result),
                                             C.byref(found)) == INVALID_VALUE  # requestedAlgoCount <= 0
    assert lt.cublasLtMatmulAlgoGetHeuristic(None, g.desc, *g.layouts, g.pref, 1, C.byref(result),
                                             C.byref(found)) == NOT_INITIALIZED
    assert g.run(handle=C.c_void_p(12345), algo=g.heuristic()[2].algo) == NOT_INITIALIZED
    garbage = (C.c_uint64 * 8)(*range(8))
    assert g.run(algo=garbage) == INVALID_VALUE  # not an algorithm the heuristic returned
    # An epilogue outside the subset, and a compute type the fake cannot compute.
    assert set_attr(desc_set, g.desc, DESC_EPILOGUE, C.c_uint32(32)) == SUCCESS  # GELU
    assert g.heuristic()[:2] == (NOT_SUPPORTED, 0)
    other = C.c_void_p()
    assert lt.cublasLtMatmulDescCreate(C.byref(other), COMPUTE_64F, CUDA_R_64F) == SUCCESS
    g.desc = other
    assert g.heuristic()[:2] == (NOT_SUPPORTED, 0)
    assert lt.cublasLtMatmulDescDestroy(other) == SUCCESS
    assert lt.cublasLtMatmulDescDestroy(other) == INVALID_VALUE  # destroyed twice
    assert g.heuristic()[:2] == (INVALID_VALUE, 0)  # a destroyed descriptor


def test_bias_epilogue_without_a_bias_pointer_is_refused(lt):
    rng = np.random.default_rng(10)
    a, b, d = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3)), ColMajor(np.zeros((4, 3)))
    g = Gemm(lt, a, b, d, d, epilogue=EPI_BIAS)  # no BIAS_POINTER set: NULL
    assert g.run() == INVALID_VALUE


def test_pointers_must_keep_the_alignment_the_algorithm_was_chosen_for(lt):
    rng = np.random.default_rng(11)
    raw = np.zeros(64 + 24 + 1, np.float32)
    base = (-raw.ctypes.data) % 64 // 4  # first 64-byte aligned element
    a = ColMajor(rand(rng, 4, 6))
    b, d = ColMajor(rand(rng, 6, 4)), ColMajor(np.zeros((4, 4)))
    g = Gemm(lt, a, b, d, d)  # alignment preferences from the actual (>= 16-byte) pointers
    _, _, r = g.heuristic()
    shifted = raw[base + 1:]  # 4-byte aligned only
    shifted[:24] = a.store.ravel()
    assert g.run(algo=r.algo, a_ptr=shifted.ctypes.data) == INVALID_VALUE
    # Told the truth (4 bytes), the heuristic picks an algorithm that copes.
    g4 = Gemm(lt, a, b, d, d, align={"A": 4, "B": 16, "C": 16, "D": 16})
    assert g4.run(a_ptr=shifted.ctypes.data) == SUCCESS
    np.testing.assert_allclose(d.value, reference(a, b, d, False, False, 1.0, 0.0), rtol=1e-6, atol=1e-6)
    # Below the element size nothing fits.
    g2 = Gemm(lt, a, b, d, d, align={"A": 2, "B": 16, "C": 16, "D": 16})
    assert g2.heuristic()[:2] == (NOT_SUPPORTED, 0)
    # A bias 4-byte aligned when the heuristic saw a 16-byte aligned one.
    bias_buf = np.zeros(16, np.float32)
    first = (-bias_buf.ctypes.data) % 16 // 4
    gb = Gemm(lt, a, b, d, d, epilogue=EPI_BIAS, bias=bias_buf[first:first + 4])
    _, _, rb = gb.heuristic()
    moved = C.c_void_p(bias_buf[first + 1:].ctypes.data)
    assert set_attr(lt.cublasLtMatmulDescSetAttribute, gb.desc, DESC_BIAS_POINTER, moved) == SUCCESS
    assert gb.run(algo=rb.algo) == INVALID_VALUE


def test_workspace_must_be_256_byte_aligned(lt):
    rng = np.random.default_rng(12)
    a, b, d = ColMajor(rand(rng, 4, 6)), ColMajor(rand(rng, 6, 3)), ColMajor(np.zeros((4, 3)))
    g = Gemm(lt, a, b, d, d)
    assert g.run(ws_ptr=g.ws_ptr + 128, ws_size=1 << 20) == INVALID_VALUE
    assert g.run(ws_ptr=0, ws_size=1 << 20) == INVALID_VALUE  # NULL with a size


def test_row_major_gemm_by_swapped_operands_as_cuda_matmul_cpp_builds_it(lt):
    """The mapping of cuda/matmul.cpp (make_plan) replayed through the fake:
    row-major C (m x n) = op(A) op(B) as column-major C^T = op(B)^T op(A)^T, cuBLASLt's
    A = our b (T iff trans_b), its B = our a (T iff trans_a), bias per row-major column."""
    rng = np.random.default_rng(13)
    for ta, tb, m, n, k in [(False, False, 5, 4, 3), (True, False, 3, 4, 5), (False, True, 5, 3, 4),
                            (True, True, 2, 3, 4)]:
        a_rm = rand(rng, *((k, m) if ta else (m, k)))  # row-major, lda = columns
        b_rm = rand(rng, *((k, n) if tb is False else (n, k)))
        bias = rand(rng, n)
        c_rm = np.zeros((m, n), np.float32)
        lda, ldb, ldc = a_rm.shape[1], b_rm.shape[1], n
        # A row-major (r, c) buffer is the column-major (c, r) matrix with the same ld.
        ca = ColMajor(b_rm.T, ld=ldb)  # cuBLASLt's A: (tb ? k : n) x (tb ? n : k)
        cb = ColMajor(a_rm.T, ld=lda)  # cuBLASLt's B: (ta ? m : k) x (ta ? k : m)
        cd = ColMajor(c_rm.T, ld=ldc)  # n x m
        assert (ca.rows, ca.cols) == ((k, n) if tb else (n, k)) and (cb.rows, cb.cols) == ((m, k) if ta else (k, m))
        g = Gemm(lt, ca, cb, cd, cd, ta=tb, tb=ta, epilogue=EPI_BIAS, bias=bias)
        assert g.run() == SUCCESS
        want = (a_rm.T if ta else a_rm).astype(np.float64) @ (b_rm.T if tb else b_rm) + bias
        np.testing.assert_allclose(cd.value.T, want, rtol=1e-6, atol=1e-6)


EMU_QUEUE = r"""
// A stand-in for the emulator's queue: records (fn, arg), runs them on demand.
#include <vector>
struct Item { void (*fn)(void*); void* arg; };
static std::vector<Item> q;
extern "C" __attribute__((visibility("default"))) void deepcore_emu_enqueue(void* /*stream*/, void (*fn)(void*), void* arg) {
  q.push_back({fn, arg});
}
extern "C" __attribute__((visibility("default"))) int emu_queued() { return int(q.size()); }
extern "C" __attribute__((visibility("default"))) void* emu_arg(int i) { return q[i].arg; }
extern "C" __attribute__((visibility("default"))) void emu_replay() { for (auto& it : q) it.fn(it.arg); }
"""

ENQUEUE_SCRIPT = r"""
import ctypes as C, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import test_fake_cublaslt as t
emu = C.CDLL(sys.argv[2])  # RTLD_LOCAL, as Python loads an extension module
emu.emu_arg.restype = C.c_void_p
lt = t.bind(C.CDLL(sys.argv[1]))
rng = np.random.default_rng(0)
a, b, d = t.ColMajor(t.rand(rng, 3, 4)), t.ColMajor(t.rand(rng, 4, 2)), t.ColMajor(np.zeros((3, 2)))
g = t.Gemm(lt, a, b, d, d, epilogue=t.EPI_BIAS, bias=np.ones(3, np.float32))
assert g.run() == t.SUCCESS
assert emu.emu_queued() == 1 and np.all(d.value == 0), "ran before the queue did"
emu.emu_replay()
first = a.value.astype(np.float64) @ b.value + 1
np.testing.assert_allclose(d.value, first, rtol=1e-6)
# A replay reads the data as it is then (pointers were recorded, not values).
a.store *= 2
emu.emu_replay()
np.testing.assert_allclose(d.value, 2 * first - 1, rtol=1e-6)
# The bias pointer was read from the descriptor at call time: changing it later does not move the recorded call.
other = C.c_void_p(np.zeros(3, np.float32).ctypes.data)
assert t.set_attr(lt.cublasLtMatmulDescSetAttribute, g.desc, t.DESC_BIAS_POINTER, other) == t.SUCCESS
emu.emu_replay()
np.testing.assert_allclose(d.value, 2 * first - 1, rtol=1e-6)
# The same call again shares its parameter block (memory stays bounded in a loop).
g.desc_bias = C.c_void_p(g.bias.ctypes.data)
assert t.set_attr(lt.cublasLtMatmulDescSetAttribute, g.desc, t.DESC_BIAS_POINTER, g.desc_bias) == t.SUCCESS
assert g.run() == t.SUCCESS and emu.emu_queued() == 2 and emu.emu_arg(0) == emu.emu_arg(1)
print("ok")
"""


def test_matmul_goes_through_the_emulator_queue_and_replays_read_current_data(fake_path, tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    src = tmp_path / "emu_queue.cpp"
    src.write_text(EMU_QUEUE)
    emu = tmp_path / "libemu_queue.so"
    compile_shared(cxx, src, emu)
    # A fresh process: the fake remembers the queue it found, and this test's
    # queue must not swallow the other tests' GEMMs.
    run = subprocess.run([sys.executable, "-c", ENQUEUE_SCRIPT, str(fake_path), str(emu), str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"


EMU_DEVICES = EMU_QUEUE + r"""
// The emulator's device view: a current device, and one range of "device 1" memory.
static int current = 0;
static unsigned long long lo = 0, hi = 0;
extern "C" __attribute__((visibility("default"))) int cudaGetDevice(int* d) { *d = current; return 0; }
extern "C" __attribute__((visibility("default"))) void emu_set_device(int d) { current = d; }
extern "C" __attribute__((visibility("default"))) void emu_device1_memory(unsigned long long p, unsigned long long n) {
  lo = p, hi = p + n;
}
extern "C" __attribute__((visibility("default"))) int deepcore_emu_device_of(const void* p) {
  const unsigned long long a = (unsigned long long)p;
  return a >= lo && a < hi ? 1 : -1;
}
"""

DEVICES_SCRIPT = r"""
import ctypes as C, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import test_fake_cublaslt as t
emu = C.CDLL(sys.argv[2])
lt = t.bind(C.CDLL(sys.argv[1]))
rng = np.random.default_rng(0)
a, b, d = t.ColMajor(t.rand(rng, 3, 4)), t.ColMajor(t.rand(rng, 4, 2)), t.ColMajor(np.zeros((3, 2)))
mode = sys.argv[4]
if mode == "all_on_1":
    emu.emu_set_device(1)
g = t.Gemm(lt, a, b, d, d)  # its handle is created while that device is current
assert g.run() == t.SUCCESS
if mode == "all_on_1":  # B in cuda:1 memory, cuda:1 current, the handle cuda:1's: fine
    emu.emu_device1_memory(C.c_ulonglong(b.ptr), C.c_ulonglong(b.store.nbytes))
elif mode == "other_current":
    emu.emu_set_device(1)
elif mode == "other_memory":
    emu.emu_device1_memory(C.c_ulonglong(b.ptr), C.c_ulonglong(b.store.nbytes))
print("not refused", flush=True)
assert g.run() == t.SUCCESS
print("ran", flush=True)
"""


@pytest.mark.parametrize("mode, words", [
    ("other_current", "with a handle created on cuda:0 while cuda:1 is current"),
    ("other_memory", "cublasLtMatmul on cuda:0: B points into memory of cuda:1"),
    ("all_on_1", None),
])
def test_under_the_emulator_a_gemm_on_another_devices_memory_or_handle_aborts(fake_path, tmp_path, mode, words):
    """deepcore never enables peer access: the fake aborts (as the emulator
    does for a kernel) on a GEMM whose handle or operands belong to another
    device than the current one, and says which in DEEPCORE_EMU_REPORT_FILE."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    src = tmp_path / "emu_devices.cpp"
    src.write_text(EMU_DEVICES)
    emu = tmp_path / "libemu_devices.so"
    compile_shared(cxx, src, emu)
    report = tmp_path / "report.txt"
    env = dict(os.environ, DEEPCORE_EMU_REPORT_FILE=str(report))
    run = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, str(fake_path), str(emu), str(ROOT / "tests"), mode],
                         capture_output=True, text=True, timeout=60, env=env)
    if words is None:  # a GEMM wholly on cuda:1 runs
        assert run.returncode == 0 and "ran" in run.stdout and not report.exists(), run.stdout + run.stderr
        return
    assert run.returncode != 0 and "not refused" in run.stdout and "ran" not in run.stdout, run.stdout + run.stderr
    assert words in run.stderr and words in report.read_text()
