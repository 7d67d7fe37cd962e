"""Host-only checks of the CUDA graph bookkeeping: the allocator's private
pools (cuda/allocator.cpp) and the capture registry, the abort of a capture
and replay (cuda/graph.cpp), built with the host compiler against a fake CUDA
runtime (tests/cuda_host/fake_cudart.cpp), so they run on machines without a
GPU. Needs a C++17 compiler and the CUDA toolkit's headers; skips otherwise.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cuda_toolkit import cuda_include_dir

ROOT = Path(__file__).resolve().parent.parent


def test_private_pools_and_capture_abort_on_a_fake_runtime(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    include = cuda_include_dir()
    if not cxx or include is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit's headers")
    exe = tmp_path / "graph_host_test"
    sources = [ROOT / "tests/cuda_host/graph_host_test.cpp", ROOT / "tests/cuda_host/fake_cudart.cpp",
               ROOT / "cuda/allocator.cpp", ROOT / "cuda/graph.cpp", ROOT / "cuda/stream.cpp"]
    cmd = [cxx, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
           f"-I{ROOT / 'cuda'}", f"-I{ROOT / 'src'}", f"-I{include}", *map(str, sources), "-o", str(exe)]
    sanitized = cmd[:2] + ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"] + cmd[2:]
    build = subprocess.run(sanitized, capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        build = subprocess.run(cmd, capture_output=True, text=True)  # a compiler without sanitizers
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"
