#!/usr/bin/env bash
# Run ON THE LENT GPU MACHINE, in the repository root, after tools/gpu/prepare.sh
# ran here: `bash tools/gpu/check.sh STAGE...` with carry=[".gpu"]. Stages, in
# the order a session should spend its 30 device minutes:
#   build      compile _core and _cuda for that GPU only (DEEPCORE_CUDA_ARCH,
#              default: the device's own, e.g. 90) into build-gpu/
#   test       the CUDA tests, then the whole suite once (CPU+GPU)
#   test-cuda  the CUDA tests only
#   sync       the CUDA tests with DEEPCORE_CUDA_SYNC=1 (errors name the kernel)
#   sanitizer  compute-sanitizer memcheck over the CUDA tests (SANITIZER_TESTS=... to narrow)
#   racecheck  compute-sanitizer racecheck (shared-memory hazards), synccheck (barrier
#              misuse) and initcheck (reads of device memory nothing wrote) over the
#              kernel tests (RACECHECK_TESTS, default tests/test_cuda.py); the host
#              emulator's own race checker already runs in CI (tests/cuda_emulator)
#   bench      deepcore bench --only gpu (deepcore and PyTorch CUDA, each in its own processes)
#   train      Fashion-MNIST, the README MLP, 10 epochs on CPU and on GPU
# Each stage writes $OUT/<stage>.log (the device tool returns $OUT). The
# build dir survives between calls only while the machine stays warm (30 s), so
# chain stages in one command where possible: `check.sh build test sync`.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
site=/tmp/deepcore-site
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/whl/*.whl || exit 1
  export PYTHONPATH="$site"
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu/data ] && export DEEPCORE_DATA="$PWD/.gpu/data"

run_stage() {  # name, command...: log to $OUT/name.log, report pass/fail
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  ( "$@" ) 2>&1 | tee "$OUT/$name.log" | tail -40
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s"
  return 0
}

build() {
  local arch="${DEEPCORE_CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)}"
  nvidia-smi || true
  mkdir -p build-gpu && cd build-gpu || return 1
  cmake -G Ninja .. -DCMAKE_BUILD_TYPE=Release -DDEEPCORE_ENABLE_CUDA=ON \
    ${arch:+-DCMAKE_CUDA_ARCHITECTURES=$arch} -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >cmake.log || { cat cmake.log; return 1; }
  ninja || return 1
  cp _core*.so cuda/_cuda*.so ../python/deepcore/ && cd .. &&
  "$PY" -c "import deepcore, deepcore.cuda as c; print(deepcore.__version__, 'cuda available:', c.is_available(), c.reason()); from deepcore import _cuda; c.is_available() and print(_cuda.device_properties(0)); print('cuBLASLt:', getattr(_cuda, 'blas_available', lambda: None)(), getattr(_cuda, 'blas_reason', lambda: '')())"
}
# GPU_TEST_TIMEOUT=N: each test stops after N s (pytest-timeout, where installed)
TO=""; [ -n "${GPU_TEST_TIMEOUT:-}" ] && "$PY" -c "import pytest_timeout" 2>/dev/null && TO="--timeout=$GPU_TEST_TIMEOUT"
test_cuda() { run_stage test-cuda "$PY" -m pytest -q -rs --tb=short --maxfail=100 $TO $(cuda_tests); }
cuda_tests() { ls tests/test_cuda*.py tests/test_device_*.py tests/test_graph_training.py tests/test_multi_device.py 2>/dev/null; }

for stage in "$@"; do
  case "$stage" in
    build) run_stage build build ;;
    test) test_cuda; run_stage test-all "$PY" -m pytest -q -rs $TO tests ;;
    test-cuda) test_cuda ;;
    sync) run_stage sync env DEEPCORE_CUDA_SYNC=1 "$PY" -m pytest -q -rs --tb=short --maxfail=100 $(cuda_tests) ;;
    # Two tests cannot run under memcheck: the out-of-memory test's failed
    # cudaMalloc is, by design, a reported API error, and the graph-host test
    # runs an ASan-built binary, which refuses compute-sanitizer's preload.
    sanitizer) run_stage sanitizer compute-sanitizer --tool memcheck --error-exitcode 1 --print-limit 50 \
                 "$PY" -m pytest -q --maxfail=20 --tb=short -p no:cacheprovider ${SANITIZER_TESTS:-$(cuda_tests)} \
                 --deselect tests/test_cuda.py::test_out_of_memory_says_how_much_was_asked_and_what_is_free \
                 --deselect tests/test_cuda_graph_host.py::test_private_pools_and_capture_abort_on_a_fake_runtime ;;
    racecheck)
      for tool in racecheck synccheck initcheck; do
        run_stage "$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 50 \
          "$PY" -m pytest -q --maxfail=20 --tb=short -p no:cacheprovider ${RACECHECK_TESTS:-tests/test_cuda.py}
      done ;;
    bench) run_stage bench "$PY" -m deepcore.cli bench --only gpu ;;
    train) run_stage train "$PY" tools/gpu/train_fashion_mnist.py ;;
    *) echo "unknown stage '$stage' (build test test-cuda sync sanitizer racecheck bench train)"; exit 2 ;;
  esac
done
