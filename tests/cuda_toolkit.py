"""Where the CUDA toolkit's headers are, for tests that compile host-only
CUDA code with the host compiler (test_cuda_graph_host.py,
test_fake_cublaslt.py)."""
import os
import shutil
from pathlib import Path


def cuda_include_dir():
    """The include folder holding cuda_runtime.h ($CUDA_HOME, $CUDA_PATH, nvcc's
    toolkit, /usr/local/cuda*), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates += ["/usr/local/cuda"] + sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime.h").exists():
            return Path(c) / "include"
    return None
