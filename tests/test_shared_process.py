"""deepcore as a good neighbour in a shared process (DESIGN.md, "A good
neighbour"): it changes no process-wide state that other libraries read
(environment variables, an OpenMP runtime's settings, other libraries' BLAS
thread counts), it runs its kernels on its own threads whatever was imported
before it, and threadpoolctl sees and limits its thread pool.

Each case runs in a fresh interpreter (subprocess), so that what one imports
or sets cannot leak into another or into this pytest process. The child prints
one JSON line of observations; the assertions are made here.

Observables, and why they are meaningful:
  - deepcore's pool threads are named "deepcore-pool" (/proc/self/task/*/comm)
    and their CPU time (/proc/self/task/*/schedstat, nanoseconds) grows while
    a kernel above its parallel threshold runs: the work was done on them;
  - /proc/self/maps lists the shared libraries loaded: importing deepcore
    loads no OpenMP runtime (libgomp) of its own.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Inside the child: helpers for the observables above and a small fit.
PRELUDE = textwrap.dedent('''
    import json, os, sys

    def pool_threads():
        """tid -> CPU nanoseconds of each live thread named deepcore-pool."""
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f.read().strip()
                if name != "deepcore-pool":
                    continue
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    out[tid] = int(f.read().split()[0])
            except OSError:  # the thread ended meanwhile
                pass
        return out

    def pool_work(fn):
        """(live pool threads after fn(), CPU nanoseconds they spent during fn())."""
        before = pool_threads()
        fn()
        after = pool_threads()
        return len(after), sum(ns - before.get(tid, 0) for tid, ns in after.items())

    def big_parallel_kernel(dc):
        """Calls that take the pool's parallel path (sizes from parallel_thresholds)."""
        import numpy as np
        C = dc._native.core
        n = 4 * C.parallel_thresholds()["kParallelThreshold"]
        x = np.linspace(-3.0, 3.0, n, dtype=np.float32)
        y = np.empty_like(x)
        from deepcore.activations import _CODES
        def run():
            for _ in range(20):
                C.activation_forward(_CODES["gelu"], x, y)
        return run, x, y

    def small_fit(dc):
        import numpy as np
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 20)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32)
        dc.set_random_seed(0)
        model = dc.Sequential([dc.Input((20,)), dc.layers.Dense(16, activation="relu"),
                               dc.layers.Dense(2, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)

    def report(**kw):
        print(json.dumps(kw))
''')


def run_child(code, env_drop=("OMP_NUM_THREADS",)):
    """Runs PRELUDE + code in a fresh interpreter and returns its JSON report.
    OMP_NUM_THREADS is dropped from the child's environment (a copy): deepcore
    reads it for its default thread count, and these tests state defaults."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")

# Variables that OpenMP runtimes and BLAS libraries read when they load.
RUNTIME_VARIABLES = ["OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_DYNAMIC", "GOMP_SPINCOUNT",
                     "KMP_BLOCKTIME", "KMP_DUPLICATE_LIB_OK", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]


# --------------------------------------------------------------------------
# environment variables
# --------------------------------------------------------------------------
def test_importing_deepcore_and_fitting_leaves_the_environment_exactly_as_it_was():
    """os.environ, and the C library's view of the variables that OpenMP and
    BLAS runtimes read (a setenv from C would not show in os.environ), are the
    same before the import and after a fit."""
    out = run_child(f'''
        import ctypes
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        names = {RUNTIME_VARIABLES!r}
        before, c_before = dict(os.environ), {{n: libc.getenv(n.encode()) for n in names}}
        import deepcore as dc
        small_fit(dc)
        after, c_after = dict(os.environ), {{n: libc.getenv(n.encode()) for n in names}}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        c_changed = sorted(n for n in names if c_before[n] != c_after[n])
        report(changed=changed, c_changed=c_changed)
    ''')
    assert out["changed"] == []
    assert out["c_changed"] == []


def test_importing_threadpoolctl_after_deepcore_is_what_sets_its_variable_not_deepcore():
    """deepcore registers its threadpoolctl controller without importing
    threadpoolctl (whose import sets KMP_DUPLICATE_LIB_OK): the variable
    appears only when the user imports threadpoolctl, and the controller is
    there then."""
    pytest.importorskip("threadpoolctl")
    out = run_child('''
        os.environ.pop("KMP_DUPLICATE_LIB_OK", None)
        import deepcore as dc
        set_by_deepcore = "KMP_DUPLICATE_LIB_OK" in os.environ
        loaded = "threadpoolctl" in sys.modules
        from threadpoolctl import threadpool_info
        apis = [i["user_api"] for i in threadpool_info()]
        report(set_by_deepcore=set_by_deepcore, loaded=loaded, apis=apis)
    ''')
    assert out["set_by_deepcore"] is False
    assert out["loaded"] is False
    assert "deepcore" in out["apis"]


# --------------------------------------------------------------------------
# no OpenMP runtime, and no shared thread settings
# --------------------------------------------------------------------------
@needs_proc
def test_importing_deepcore_and_fitting_loads_no_openmp_runtime():
    """deepcore's kernels run on its own pool, so no libgomp (whose settings
    would be shared with PyTorch's, scikit-learn's, ...) enters the process."""
    out = run_child('''
        import deepcore as dc
        small_fit(dc)
        run, _, _ = big_parallel_kernel(dc)
        run()
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "/" in line})
        report(openmp=[p for p in libs if any(k in os.path.basename(p) for k in ("libgomp", "libomp", "libiomp"))])
    ''')
    assert out["openmp"] == []


@needs_proc
def test_with_pytorch_loaded_first_deepcore_keeps_its_own_thread_count_and_threads():
    """PyTorch imported first, its OpenMP runtime started by an op and then
    limited to 1 thread (torch.set_num_threads(1)): deepcore's default is
    still the number of usable cores, its kernels run on its own pool threads
    (which gain CPU time during a kernel above the threshold), and
    deepcore.set_num_threads leaves PyTorch's count alone. (With OpenMP
    kernels, deepcore shared PyTorch's libgomp: it reported 1 thread here, and
    its set_num_threads changed PyTorch's.)"""
    pytest.importorskip("torch")
    out = run_child('''
        import torch
        a = torch.ones(256, 256)
        (a @ a).sum().item()
        torch.set_num_threads(1)
        import deepcore as dc
        default = dc.get_num_threads()
        dc.set_num_threads(2)
        torch_after_set = torch.get_num_threads()
        run, x, y = big_parallel_kernel(dc)
        threads, ns = pool_work(run)
        report(default=default, cores=len(os.sched_getaffinity(0)), torch_after_set=torch_after_set,
               pool_threads=threads, pool_ns=ns)
    ''')
    assert out["default"] == out["cores"]
    assert out["torch_after_set"] == 1
    assert out["pool_threads"] == 1  # 2 threads: the caller and one worker
    assert out["pool_ns"] > 0


def test_importing_deepcore_and_fitting_leaves_pytorchs_thread_count_alone():
    pytest.importorskip("torch")
    out = run_child('''
        import torch
        torch.set_num_threads(1)  # not the default (the number of cores), so a reset would show
        before = [torch.get_num_threads(), torch.get_num_interop_threads()]
        import deepcore as dc
        small_fit(dc)
        run, _, _ = big_parallel_kernel(dc)
        run()
        report(before=before, after=[torch.get_num_threads(), torch.get_num_interop_threads()])
    ''')
    assert out["after"] == out["before"]


def test_deepcore_set_num_threads_changes_its_own_openblas_not_numpys():
    """deepcore sets the thread count of the scipy_openblas32 OpenBLAS it
    loads for its GEMMs, never NumPy's OpenBLAS (another library)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    out = run_child('''
        import numpy
        from threadpoolctl import threadpool_info
        def counts():
            return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"}
        import deepcore as dc
        before = counts()
        dc.set_num_threads(1)
        report(before=before, after=counts(), ours=dc._native.core.blas_num_threads())
    ''')
    assert out["ours"] == 1
    for path, n in out["after"].items():
        if "scipy_openblas32" in path:
            assert n == 1, path
        else:
            assert n == out["before"][path], path


@needs_proc
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_parallel_kernels_on_a_fresh_pool():
    """After fork() the child has none of the parent's pool threads: its first
    parallel kernel starts a pool of its own (multiprocessing's default start
    method on Linux forks), and gives the parent's bits, instead of waiting
    forever for workers that do not exist."""
    out = run_child('''
        import deepcore as dc
        dc.set_num_threads(2)
        run, x, y = big_parallel_kernel(dc)
        run()
        reference = y.copy()
        pid = os.fork()
        if pid == 0:
            y[:] = 0
            threads, ns = pool_work(run)
            os._exit(0 if threads == 1 and ns > 0 and (y == reference).all() else 1)
        _, status = os.waitpid(pid, 0)
        report(child_exit=os.waitstatus_to_exitcode(status))
    ''')
    assert out["child_exit"] == 0


# --------------------------------------------------------------------------
# threadpoolctl
# --------------------------------------------------------------------------
def test_threadpoolctl_lists_deepcores_pool_and_its_openblas():
    pytest.importorskip("threadpoolctl")
    out = run_child('''
        import deepcore as dc
        from threadpoolctl import threadpool_info
        info = threadpool_info()
        report(info=info, core=dc._native.core.__file__, threads=dc.get_num_threads(),
               blas=dc._native.core.blas_num_threads())
    ''')
    ours = [i for i in out["info"] if i["user_api"] == "deepcore"]
    assert len(ours) == 1
    assert ours[0]["internal_api"] == "deepcore"
    assert os.path.realpath(ours[0]["filepath"]) == os.path.realpath(out["core"])
    assert ours[0]["num_threads"] == out["threads"]
    blas = [i for i in out["info"] if i["internal_api"] == "openblas" and "scipy_openblas32" in i["filepath"]]
    assert len(blas) == 1 and blas[0]["num_threads"] == out["blas"]


@needs_proc
@pytest.mark.parametrize("import_first", ["deepcore", "threadpoolctl"])
def test_threadpool_limits_one_makes_deepcore_single_threaded_and_restores_it(import_first):
    """Inside threadpool_limits(1): deepcore reports 1 thread, its OpenBLAS
    too, and its pool has no worker thread left, so a kernel above the
    parallel threshold runs on the calling thread alone (and gives the bits
    it gives at set_num_threads(1)). Afterwards: the counts are restored and
    the pool's threads work again. Either import order."""
    pytest.importorskip("threadpoolctl")
    out = run_child(f'''
        import importlib
        importlib.import_module({import_first!r})
        import deepcore as dc
        from threadpoolctl import threadpool_limits
        C = dc._native.core
        dc.set_num_threads(2)
        run, x, y = big_parallel_kernel(dc)
        run()
        reference = y.copy()
        with threadpool_limits(limits=1):
            inside = [dc.get_num_threads(), C.blas_num_threads()]
            y[:] = 0
            threads_inside, ns_inside = pool_work(run)
            same_inside = bool((y == reference).all())
        after = [dc.get_num_threads(), C.blas_num_threads()]
        threads_after, ns_after = pool_work(run)
        report(inside=inside, threads_inside=threads_inside, ns_inside=ns_inside, same_inside=same_inside,
               after=after, threads_after=threads_after, ns_after=ns_after)
    ''')
    assert out["inside"] == [1, 1]
    assert out["threads_inside"] == 0 and out["ns_inside"] == 0
    assert out["same_inside"]
    assert out["after"] == [2, 2]
    assert out["threads_after"] == 1 and out["ns_after"] > 0


def test_deepcore_threadpoolctl_controller_refuses_a_bad_thread_count():
    pytest.importorskip("threadpoolctl")
    out = run_child('''
        import deepcore as dc
        from threadpoolctl import ThreadpoolController
        ours = ThreadpoolController().select(user_api="deepcore").lib_controllers[0]
        try:
            ours.set_num_threads(0)
            error = None
        except ValueError as e:
            error = str(e)
        report(error=error, threads=dc.get_num_threads())
    ''')
    assert out["error"] and "expected 1 to 4096" in out["error"]
    assert out["threads"] >= 1


def test_set_num_threads_rejects_zero_and_too_many_with_a_value_error_naming_the_range():
    import deepcore as dc

    with pytest.raises(ValueError, match=r"set_num_threads: expected n >= 1 \(and at most 4096\), got 0"):
        dc.set_num_threads(0)
    with pytest.raises(ValueError, match=r"set_num_threads: expected n >= 1 \(and at most 4096\), got 4097"):
        dc.set_num_threads(4097)
