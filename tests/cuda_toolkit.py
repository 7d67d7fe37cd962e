"""Where the CUDA toolkit is: its headers, for tests that compile host-only
CUDA code with the host compiler (test_cuda_graph_host.py,
test_fake_cublaslt.py), and its shared runtime library, for tests that play
another library with its own stream (test_cuda_tensor.py)."""
import os
import shutil
from pathlib import Path


def cuda_include_dir():
    """The include folder holding cuda_runtime.h ($CUDA_HOME, $CUDA_PATH, nvcc's
    toolkit, /usr/local/cuda*), or None."""
    for c in _toolkits():
        if (c / "include" / "cuda_runtime.h").exists():
            return c / "include"
    return None


def cudart_candidates():
    """Names and paths to try for the shared CUDA runtime: the loader's
    search path first, then the toolkits' lib64 folders."""
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    return names + [str(c / "lib64" / n) for c in _toolkits() for n in names if (c / "lib64" / n).exists()]


def _toolkits():
    """Toolkit folders: $CUDA_HOME, $CUDA_PATH, nvcc's toolkit, /usr/local/cuda*."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates += ["/usr/local/cuda"] + sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))
    return [Path(c) for c in candidates if c]
