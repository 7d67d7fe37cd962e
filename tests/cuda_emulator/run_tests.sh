#!/usr/bin/env bash
# Builds the CUDA host emulator's deepcore._cuda (README.md: the real cuda/
# sources compiled for the CPU; NOT a GPU run) and runs the CUDA test files
# against it. Exits 0 with a message, without testing, only when a C++
# compiler or the CUDA toolkit's headers are missing, and then exits 1 with
# the same message if DEEPCORE_EMU_REQUIRED=1 (CI sets it: a run that tests
# nothing must not pass there); any build or test failure fails.
# The headers: $CUDA_HOME (or $CUDA_PATH) when set, which must then hold
# include/cuda_runtime.h; otherwise nvcc's toolkit or /usr/local/cuda*. Only
# headers are used (no nvcc, no libcudart): NVIDIA's nvidia-cuda-runtime,
# nvidia-cuda-crt and nvidia-cuda-cccl wheels are enough (.ci/run says how).
#
#   tests/cuda_emulator/run_tests.sh [BUILD_DIR] [-- extra pytest arguments]
#
# DEEPCORE_EMU_ASAN=1 builds with AddressSanitizer (and runs Python with libasan preloaded);
# DEEPCORE_EMU_RACECHECK=1 builds with the race checker (emu_racecheck.cpp: a data race
# between the threads or blocks of a launch aborts the run, naming the kernel and the lines);
# DEEPCORE_EMU_TESTS="tests/test_cuda.py ..." replaces the list of test files;
# DEEPCORE_EMU_REVERSE_TESTS the files run again in reverse block and thread order ("" for none).
# (Emulator settings read at run time, see README.md: DEEPCORE_EMU_ORDER=forward|reverse,
# DEEPCORE_EMU_DEFERRED=0 to run stream work at once instead of when the host waits.)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# One default build folder per checkout and kind of build (CMake refuses a folder configured
# for another source tree).
VARIANT=""
[ "${DEEPCORE_EMU_ASAN:-0}" != "0" ] && VARIANT="-asan"
[ "${DEEPCORE_EMU_RACECHECK:-0}" != "0" ] && VARIANT="$VARIANT-racecheck"
BUILD="${1:-${TMPDIR:-/tmp}/deepcore-cuda-emulator-$(printf %s "$ROOT" | cksum | cut -d' ' -f1)$VARIANT}"
shift || true
[ "${1:-}" = "--" ] && shift
PY="${PYTHON:-python}"

# What cannot be had: a skip with the reason, or with DEEPCORE_EMU_REQUIRED=1 a failure.
not_run() {
  if [ "${DEEPCORE_EMU_REQUIRED:-0}" != "0" ]; then
    echo "CUDA host emulator: FAILED, the CUDA tests did not run: $*" \
         "(DEEPCORE_EMU_REQUIRED=${DEEPCORE_EMU_REQUIRED}: this run must test the CUDA sources)" >&2
    exit 1
  fi
  echo "CUDA host emulator: skipped ($*)"
  exit 0
}

CXX_BIN="${CXX:-c++}"
if ! command -v "$CXX_BIN" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  not_run "no C++ compiler: neither $CXX_BIN nor g++ is on PATH"
fi
CUDA_INC=""
if [ -n "${CUDA_HOME:-}${CUDA_PATH:-}" ]; then
  # A toolkit named by the environment is the one used: never another one found elsewhere.
  if [ -n "${CUDA_HOME:-}" ]; then c_var=CUDA_HOME c="$CUDA_HOME"; else c_var=CUDA_PATH c="$CUDA_PATH"; fi
  [ -f "$c/include/cuda_runtime.h" ] ||
    not_run "no CUDA toolkit headers: $c_var=$c, but $c/include/cuda_runtime.h does not exist"
  CUDA_INC="$c/include"
else
  for c in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")")")" \
           /usr/local/cuda /usr/local/cuda-*; do
    if [ -f "$c/include/cuda_runtime.h" ]; then CUDA_INC="$c/include"; break; fi
  done
  [ -n "$CUDA_INC" ] ||
    not_run "no CUDA toolkit headers: cuda_runtime.h is not in the include/ folder of nvcc's toolkit or of" \
            "/usr/local/cuda*, and CUDA_HOME is not set (set it to a CUDA toolkit, or to the nvidia/cu13 folder" \
            "of the nvidia-cuda-runtime, nvidia-cuda-crt and nvidia-cuda-cccl wheels as .ci/run does)"
fi

# Build tools: the CMake and Ninja wheels and pybind11 when the machine has none.
if ! command -v cmake >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then "$PY" -m pip install -q cmake ninja; fi
"$PY" -m pybind11 --cmakedir >/dev/null 2>&1 || "$PY" -m pip install -q pybind11

ASAN=OFF
[ "${DEEPCORE_EMU_ASAN:-0}" != "0" ] && ASAN=ON
RACECHECK=OFF
[ "${DEEPCORE_EMU_RACECHECK:-0}" != "0" ] && RACECHECK=ON
start=$(date +%s)
cmake -S "$ROOT/tests/cuda_emulator" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Emulator \
  -DCUDA_HOME="$(dirname "$CUDA_INC")" -DDEEPCORE_EMU_ASAN=$ASAN -DDEEPCORE_EMU_RACECHECK=$RACECHECK \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null
ninja -C "$BUILD" -j"${DEEPCORE_EMU_JOBS:-2}" _cuda emu_selftest fake_cublaslt >/dev/null
MOD="$(ls "$BUILD"/_cuda*.so)"
echo "CUDA host emulator: built $MOD in $(( $(date +%s) - start )) s (kernels run on the CPU; this is not a GPU run)"

# Two emulated devices, so that "cuda:1" and a model on a device that is not the
# current one are tested (a kernel or GEMM given another device's memory aborts).
export DEEPCORE_EMU_DEVICES="${DEEPCORE_EMU_DEVICES:-2}"
# The emulator's own checks, and the kernel bugs it must report (abort, naming the kernel).
"$BUILD/emu_selftest"
DEEPCORE_EMU_ORDER=reverse "$BUILD/emu_selftest"
BUGS="divergent_barrier early_exit_shuffle deadlock"
[ "${DEEPCORE_EMU_DEVICES:-1}" -ge 2 ] && BUGS="$BUGS other_device_pointer"
[ "$RACECHECK" = ON ] && BUGS="$BUGS tree_sum blocks_add shuffle_not_a_fence read_then_atomic init_then_atomic reader_slots uninit_read"
for bug in $BUGS; do
  if out="$("$BUILD/emu_selftest" "$bug" 2>&1)" || [[ "$out" != *"kernel ${bug}_kernel"* ]]; then
    echo "CUDA host emulator: the self-test's $bug kernel was not reported as a bug:"; echo "$out"; exit 1
  fi
done
echo "CUDA host emulator: self-test ok (block/warp scheduling, capture and replay, bug reports)"
# The race checker prints what it checked when the process exits.
[ "$RACECHECK" = ON ] && export DEEPCORE_EMU_RACECHECK_SUMMARY=1

export DEEPCORE_CUDA_EMULATOR="$MOD"
# The Dense layer's GEMMs: the host fake of cuBLASLt (README_cublaslt.md), not NVIDIA's library.
export DEEPCORE_CUBLASLT_PATH="$BUILD/fake_cublaslt/libcublasLt.so.13"
if [ "$ASAN" = ON ]; then
  export LD_PRELOAD="$("${CXX_BIN}" -print-file-name=libasan.so) $("${CXX_BIN}" -print-file-name=libubsan.so)"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0}"
  # With 2 OpenMP threads, a CPU kernel's parallel region (gather_rows in fit)
  # segfaulted under ASan after many fiber switches, with no ASan report; the
  # same tests pass without ASan and under ASan with one thread.
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
cd "$ROOT"
# A kernel bug aborts the Python process, and pytest's capture would swallow
# the emulator's report: the emulator also writes it here, printed on failure.
export DEEPCORE_EMU_REPORT_FILE="$BUILD/kernel-bug-report.txt"
rm -f "$DEEPCORE_EMU_REPORT_FILE"
run_pytest() {
  local rc=0
  rm -f "$DEEPCORE_EMU_REPORT_FILE"
  "$@" || rc=$?
  if [ "$rc" -ne 0 ] && [ -s "$DEEPCORE_EMU_REPORT_FILE" ]; then
    echo "CUDA host emulator: the kernel bug that stopped the run ($DEEPCORE_EMU_REPORT_FILE):"
    cat "$DEEPCORE_EMU_REPORT_FILE"
  fi
  return "$rc"
}
start=$(date +%s)
TESTS="${DEEPCORE_EMU_TESTS:-tests/test_cuda.py tests/test_cuda_tensor.py tests/test_cuda_graph.py tests/test_cuda_dense.py
  tests/test_cuda_merge.py tests/test_cuda_conv.py
  tests/test_device_model.py tests/test_device_scenarios.py tests/test_graph_training.py tests/test_multi_device.py}"
# shellcheck disable=SC2086
run_pytest "$PY" -m pytest -q -p no:cacheprovider $TESTS "$@"
echo "CUDA host emulator: tests took $(( $(date +%s) - start )) s"

# The kernel tests again with blocks and threads started in reverse order: a
# kernel whose result depends on that order (a missing barrier, a race between
# blocks) fails one of the two runs. DEEPCORE_EMU_REVERSE_TESTS="" skips it.
REVERSE="${DEEPCORE_EMU_REVERSE_TESTS-tests/test_cuda.py tests/test_cuda_dense.py tests/test_cuda_graph.py tests/test_cuda_merge.py
  tests/test_cuda_conv.py}"
if [ -n "$REVERSE" ]; then
  start=$(date +%s)
  # shellcheck disable=SC2086
  DEEPCORE_EMU_ORDER=reverse run_pytest "$PY" -m pytest -q -p no:cacheprovider $REVERSE "$@"
  echo "CUDA host emulator: the kernel tests in reverse block and thread order took $(( $(date +%s) - start )) s"
fi
