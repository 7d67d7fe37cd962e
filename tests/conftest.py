"""Shared fixtures: ``fake_cuda`` installs the CPU-backed double of
deepcore._cuda (tests/fake_cuda.py) for one test.

DEEPCORE_CUDA_EMULATOR=/path/to/_cuda*.so runs the CUDA tests against the CUDA
host emulator (tests/cuda_emulator/README.md: the real cuda/ sources built with
the host compiler, kernels executed on the CPU; not a GPU): the module is
installed as deepcore._cuda before anything imports deepcore.cuda."""
import os
import sys

import pytest


def _install_cuda_emulator(path):
    import importlib.util

    import deepcore

    if not os.path.isfile(path):
        raise pytest.UsageError(f"DEEPCORE_CUDA_EMULATOR={path}: no such file (build tests/cuda_emulator first)")
    spec = importlib.util.spec_from_file_location("deepcore._cuda", path)
    mod = importlib.util.module_from_spec(spec)
    # RTLD_GLOBAL: a fake library opened later (the fake cuBLASLt) resolves the
    # emulated runtime API and deepcore_emu_enqueue from this module.
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.setdlopenflags(flags)
    if getattr(mod, "built_archs", None) != "host-emulator":
        raise pytest.UsageError(f"DEEPCORE_CUDA_EMULATOR={path} is not the CUDA host emulator's module")
    sys.modules["deepcore._cuda"] = mod
    deepcore._cuda = mod


if os.environ.get("DEEPCORE_CUDA_EMULATOR"):
    _install_cuda_emulator(os.environ["DEEPCORE_CUDA_EMULATOR"])


def pytest_report_header(config):
    if os.environ.get("DEEPCORE_CUDA_EMULATOR"):
        return ["deepcore._cuda: CUDA HOST EMULATOR (kernels run on the CPU; this is not a GPU run): "
                + os.environ["DEEPCORE_CUDA_EMULATOR"]]
    return []

from fake_cuda import fake_cuda  # noqa: F401


@pytest.fixture(scope="module")
def gpu():
    """The real CUDA backend (deepcore.cuda) with cuBLASLt (models have Dense
    layers), or a skip that says why it is unavailable."""
    from deepcore import cuda

    if not cuda.is_available():
        pytest.skip(cuda.reason())
    if not cuda.blas_available():
        pytest.skip(cuda.blas_reason())
    return cuda


@pytest.fixture(scope="module")
def G():
    """The real CUDA module (deepcore._cuda), or a skip that says why CUDA is unavailable."""
    from deepcore import cuda

    if not cuda.is_available():
        pytest.skip(cuda.reason())
    from deepcore import _cuda
    return _cuda
