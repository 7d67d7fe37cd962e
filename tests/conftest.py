"""Shared fixtures: ``fake_cuda`` installs the CPU-backed double of
deepcore._cuda (tests/fake_cuda.py) for one test."""
import pytest

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
