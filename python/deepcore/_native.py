"""Loads the compiled kernels (deepcore._core) and the OpenBLAS they link.

The extension finds ``libscipy_openblas.so`` through a relative rpath into the
installed ``scipy_openblas32`` wheel; preloading it here with RTLD_GLOBAL also
covers layouts where that relative path does not hold (editable installs,
in-tree builds).

Nothing here touches process-wide state that other libraries read: no
environment variable is set (not even around the import), and _core brings
no OpenMP runtime. Its kernels run on deepcore's own thread pool
(src/cpu/parallel.h), whose idle workers sleep instead of spinning on the
cores OpenBLAS needs, whatever PyTorch or another library loaded first.
"""
from __future__ import annotations

import ctypes
import os


def _preload_openblas() -> None:
    try:
        import scipy_openblas32
    except ImportError:  # the rpath may still find it
        return
    lib = os.path.join(scipy_openblas32.get_lib_dir(), "lib" + scipy_openblas32.get_library() + ".so")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


_preload_openblas()

from . import _core  # noqa: E402

core = _core
