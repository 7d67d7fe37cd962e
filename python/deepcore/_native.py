"""Loads the compiled kernels (deepcore._core) and the OpenBLAS they link.

The extension finds ``libscipy_openblas.so`` through a relative rpath into the
installed ``scipy_openblas32`` wheel; preloading it here with RTLD_GLOBAL also
covers layouts where that relative path does not hold (editable installs,
in-tree builds).
"""
from __future__ import annotations

import ctypes
import os

# Two thread pools share the cores: OpenBLAS's (pthreads) and OpenMP's (our
# elementwise kernels). With OpenMP's default of spinning after a parallel
# region, its idle threads steal the cores OpenBLAS needs for the next GEMM
# (measured: a 784-300-100-10 training step ran 8x slower). Sleeping idle
# OpenMP threads costs a few microseconds per region and only large tensors
# take the parallel path. libgomp reads it once, when it loads (with our
# extension below); a user's own setting wins. It is removed again afterwards
# so that other OpenMP runtimes loaded later in the process (PyTorch bundles
# its own libgomp) keep their defaults.
_set_wait_policy = "OMP_WAIT_POLICY" not in os.environ
if _set_wait_policy:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _preload_openblas() -> None:
    try:
        import scipy_openblas32
    except ImportError:  # the rpath may still find it
        return
    lib = os.path.join(scipy_openblas32.get_lib_dir(), "lib" + scipy_openblas32.get_library() + ".so")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


_preload_openblas()

try:
    from . import _core  # noqa: E402
finally:
    if _set_wait_policy:
        os.environ.pop("OMP_WAIT_POLICY", None)

core = _core
