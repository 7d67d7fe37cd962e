"""Mutation testing: does the suite catch the bugs we fear?

Plants one known bug at a time (a "mutant": one exact text replacement in one
source file) in a scratch copy of the tree, rebuilds what the mutant touches,
runs the tests meant to catch it, and prints a table of which mutants were
caught and which survived. The working tree is never modified.

    python tools/mutants.py                 # every mutant
    python tools/mutants.py --list          # names, files, what each plants
    python tools/mutants.py --only NAME...  # some of them
    python tools/mutants.py --scratch DIR   # where the copy and build live
    python tools/mutants.py --rev HEAD      # a commit's files instead of the working tree

How it works: the tracked and untracked-not-ignored files are copied to
DIR/tree; deepcore._core is built there with CMake + Ninja (CPU only, the same
CMakeLists.txt as `pip install .`) into DIR/build and copied into
DIR/tree/python/deepcore; the tests run from DIR/tree with PYTHONPATH pointing
at that package, so the installed deepcore is not used. First every test
selection runs once against the unmutated copy: it must pass (otherwise a
"caught" would mean nothing). Then, per mutant: replace the text (it must
occur exactly once, else the mutant is stale and reported as such), rebuild
if the file is C++, run its tests with -x, restore the file.

A mutant is "caught" when pytest reports failures (exit status 1); "SURVIVED"
when the tests pass; "broken" when the mutated code did not build or pytest
could not run (exit status > 1): a broken mutant proves nothing. Exit status:
0 when every mutant was caught, 1 otherwise.

The list below is the project's memory of bugs that once slipped through or
could: add one whenever a review or an issue finds a bug the tests missed.
"""
import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Mutant:
    name: str
    path: str    # relative to the repository root
    old: str     # must occur exactly once in the file
    new: str
    tests: list  # pytest arguments: files or node ids (with -k expressions as "-k", "expr")
    what: str

    @property
    def native(self):
        return self.path.startswith("src/")


M = Mutant
MUTANTS = [
    # ---- issue 19's table: each of these once survived the whole suite or was caught by one test only
    M("activation_backward_parallel_offset", "src/cpu/activations.cpp",
      "bwd_chunk(a.kind, x + b, y + b, dy + b, dx + b, e - b, a.alpha, a.beta);",
      "bwd_chunk(a.kind, x + b, y + b, dy, dx + b, e - b, a.alpha, a.beta);",
      ["tests/test_parallel_paths.py"],
      "the parallel activation backward reads dy at the wrong offset (chunk b reads from 0)"),
    M("fit_same_shuffle_every_epoch", "python/deepcore/models/model.py",
      "core.philox_permutation(n, seed, stream * 1_000_003 + epoch)",
      "core.philox_permutation(n, seed, stream * 1_000_003)",
      ["tests/test_training_loop.py"],
      "fit reuses the first epoch's shuffle in every epoch"),
    M("evaluate_in_training_mode", "python/deepcore/models/model.py",
      'out = self._forward(self._on_device(xh, ("x", n)), False)',
      'out = self._forward(self._on_device(xh, ("x", n)), True)',
      ["tests/test_training_loop.py"],
      "evaluate runs the layers in training mode (dropout on, BatchNorm on batch statistics)"),
    M("amsgrad_divides_by_v", "src/cpu/optimizers.cpp",
      "w[i] = wi - c1 * m / (std::sqrt(vh) + eps);",
      "w[i] = wi - c1 * m / (std::sqrt(v) + eps);",
      ["tests/test_optimizers.py", "tests/test_optimizer_resume.py"],
      "AMSGrad divides by sqrt(v) instead of sqrt(vhat)"),
    M("elu_derivative_plus_one", "src/ops/activations.h",
      "case Act::Elu: return x > 0.0f ? dy : dy * (y + alpha);",
      "case Act::Elu: return x > 0.0f ? dy : dy * (y + 1.0f);",
      ["tests/test_activations.py"],
      "the ELU derivative uses y + 1 instead of y + alpha"),
    # ---- parallel paths (each runs only above a size threshold, with more than one thread)
    M("dropout_chunk_restarts_philox_counter", "src/cpu/dropout.cpp",
      "draw_bits16(words, t, m, seed, stream, call);\n    const float* xt = x + t;\n    float* yt = y + t;\n"
      "#pragma omp simd\n    for (index_t j = 0; j < m; ++j) yt[j] = xt[j] * (uint32_t(bits[j]) >= thr ? scale",
      "draw_bits16(words, t - i0, m, seed, stream, call);\n    const float* xt = x + t;\n    float* yt = y + t;\n"
      "#pragma omp simd\n    for (index_t j = 0; j < m; ++j) yt[j] = xt[j] * (uint32_t(bits[j]) >= thr ? scale",
      ["tests/test_parallel_paths.py"],
      "each thread's dropout chunk draws from Philox counter 0: the threads repeat one mask"),
    M("optimizer_norm_blocks_skip_chunk_end", "src/cpu/optimizers.cpp",
      "for (index_t k = k0; k < k1; ++k) {\n        while (k >= first[s + 1])",
      "for (index_t k = k0; k < k1 - (k1 < blocks); ++k) {\n        while (k >= first[s + 1])",
      ["tests/test_parallel_paths.py"],
      "the gradient-norm and penalty sums skip the last block of every thread's share but the last"),
    M("optimizer_sums_first_segment_block_only", "src/cpu/optimizers.cpp",
      "for (index_t k = first[s]; k < first[s + 1]; ++k) sq += part[2 * k], pen += part[2 * k + 1];",
      "for (index_t k = first[s]; k < first[s] + 1; ++k) sq += part[2 * k], pen += part[2 * k + 1];",
      ["tests/test_parallel_paths.py"],
      "each segment's gradient norm and penalty keep only its first block's partial sum"),
    M("batchnorm_groups_skip_chunk_end", "src/cpu/batchnorm.cpp",
      "for (index_t g = g0; g < g1; ++g) {\n      double* p",
      "for (index_t g = g0; g < g1 - (g1 < groups); ++g) {\n      double* p",
      ["tests/test_parallel_paths.py"],
      "BatchNorm's per-feature sums skip the last row group of every thread's share but the last"),
    M("sum_blocks_parallel_repeats_first_block", "src/cpu/parallel.h",
      "for (index_t k = b; k < e; ++k) partial[k] = block_sum(k0 + k);",
      "for (index_t k = b; k < e; ++k) partial[k] = block_sum(k0 + b);",
      ["tests/test_parallel_paths.py"],
      "block sums in parallel (losses, Swish's dbeta) repeat each chunk's first block"),
    M("parallel_chunks_drop_last_element", "src/cpu/parallel.h",
      "const index_t b = std::min(n, t * per), e = std::min(n, b + per);",
      "const index_t b = std::min(n, t * per), e = std::min(n, b + per - (t + 1 < nt));",
      ["tests/test_parallel_paths.py"],
      "every thread's chunk but the last ends one element early (all elementwise parallel paths)"),
    M("gather_rows_parallel_chunk_offset", "src/cpu/gather.cpp",
      "for (index_t i = i0; i < i1; ++i) std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, row_bytes);",
      "for (index_t i = i0; i < i1; ++i) std::memcpy(d + i * row_bytes, s + idx[i - i0] * row_bytes, row_bytes);",
      ["tests/test_parallel_paths.py"],
      "gather_rows reads each thread's indices from the start of the index array"),
    M("prelu_backward_channel_chunks_drop_last", "src/cpu/dropout.cpp",
      "const index_t q0 = std::max<index_t>(c0 - p * Q, 0), q1 = std::min<index_t>(c1 - p * Q, Q);",
      "const index_t q0 = std::max<index_t>(c0 - p * Q, 0), q1 = std::min<index_t>(c1 - p * Q - (c1 < C), Q);",
      ["tests/test_parallel_paths.py"],
      "PReLU's parallel backward leaves the last channel of each thread's share (but the last) unset"),
    M("softmax_parallel_rows_unaligned", "src/cpu/activations.cpp",
      "parallel_chunks_if(rows * cols >= kParallelThreshold, rows, fn, 8);",
      "parallel_chunks_if(rows * cols >= kParallelThreshold, rows, [&](index_t r0, index_t r1) { fn(r0, r1 - (r1 < rows)); }, 8);",
      ["tests/test_parallel_paths.py"],
      "the parallel softmax (forward and backward) skips the last row of each thread's share but the last"),
    M("bias_epilogue_parallel_bias_offset", "src/cpu/activations.cpp",
      "bias_fwd_chunk(a.kind, z + r0 * cols, y + r0 * cols, b, r1 - r0, cols, a.alpha, a.beta);",
      "bias_fwd_chunk(a.kind, z + r0 * cols, y + r0 * cols, b + (r0 > 0), r1 - r0, cols, a.alpha, a.beta);",
      ["tests/test_parallel_paths.py"],
      "the parallel Dense bias epilogue reads the bias one column off on every thread but the first"),
    M("philox_normal_parallel_counter", "src/cpu/random.cpp",
      "const Philox4 r = philox_block(seed, stream, uint64_t(b));\n    float z[4];",
      "const Philox4 r = philox_block(seed, stream, uint64_t(b - b0));\n    float z[4];",
      ["tests/test_parallel_paths.py"],
      "the parallel Philox normal fill restarts the counter in every thread's share"),
    # ---- kernels' math
    M("batchnorm_backward_unbiased_n", "src/cpu/batchnorm.cpp",
      "q[c] = float(is * is * s2[c] / double(n));",
      "q[c] = float(is * is * s2[c] / double(n - 1));",
      ["tests/test_batchnorm.py"],
      "BatchNorm backward divides the xhat term by n - 1 instead of n"),
    M("batchnorm_moving_mean_momentum_swapped", "src/cpu/batchnorm.cpp",
      "moving_mean[c] = float(double(moving_mean[c]) * momentum + mu * (1.0 - double(momentum)));",
      "moving_mean[c] = float(double(moving_mean[c]) * (1.0 - double(momentum)) + mu * momentum);",
      ["tests/test_batchnorm.py"],
      "the moving mean keeps 1 - momentum of itself instead of momentum (PyTorch's convention, not Keras's)"),
    M("dropout_scale_one_over_rate", "src/cpu/dropout.cpp",
      "return float(1.0 / (1.0 - dropout_effective_rate(rate)));",
      "return float(1.0 / dropout_effective_rate(rate));",
      ["tests/test_dropout.py"],
      "inverted dropout scales kept units by 1/rate instead of 1/(1 - rate)"),
    M("nesterov_is_plain_momentum", "src/cpu/optimizers.cpp",
      "w[i] = wi + mu * v - lr * gi;",
      "w[i] = wi + v;",
      ["tests/test_optimizers.py"],
      "SGD with nesterov=True takes the plain momentum step"),
    M("l2_gradient_without_factor_two", "src/cpu/optimizers.cpp",
      "pl2x2 = 2.0f * seg.l2;",
      "pl2x2 = seg.l2;",
      ["tests/test_regularizers_constraints.py", "tests/test_optimizers.py"],
      "the l2 penalty's gradient is l2 w instead of 2 l2 w"),
    # ---- the Python layer: training loop, schedules, callbacks, initializers
    M("schedule_step_off_by_one", "python/deepcore/optimizers.py",
      "return float(lr(self.iterations)) if callable(lr) else lr",
      "return float(lr(self.iterations + 1)) if callable(lr) else lr",
      ["tests/test_schedules.py", "tests/test_optimizers.py", "tests/test_callbacks.py"],
      "a schedule is evaluated at the next step's count, one step ahead"),
    M("on_epoch_end_before_validation", "python/deepcore/models/model.py",
      """            if validation_data is not None:
                val = self._evaluate_arrays(xv, yv, batch_size, cb)
                logs.update({"val_" + k: v for k, v in val.items()})""",
      """            if validation_data is not None:
                cb.call("on_epoch_end", epoch, dict(logs))
                val = self._evaluate_arrays(xv, yv, batch_size, cb)
                logs.update({"val_" + k: v for k, v in val.items()})
                continue""",
      ["tests/test_callbacks.py", "tests/test_training_loop.py"],
      "callbacks' on_epoch_end runs before the validation metrics are in the logs"),
    M("validation_split_takes_first_rows", "python/deepcore/models/model.py",
      "x, y, validation_data = x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])",
      "x, y, validation_data = x[n_val:], y[n_val:], (x[:n_val], y[:n_val])",
      ["tests/test_models.py", "tests/test_training_loop.py"],
      "validation_split holds out the first rows instead of the last (Keras takes the last)"),
    M("early_stopping_one_epoch_late", "python/deepcore/callbacks.py",
      "if self.wait >= self.patience and epoch > 0:",
      "if self.wait > self.patience and epoch > 0:",
      ["tests/test_callbacks.py"],
      "EarlyStopping waits patience + 1 epochs without improvement"),
    M("he_normal_uses_fan_avg", "python/deepcore/initializers.py",
      'super().__init__(2.0, "fan_in", "truncated_normal", seed)',
      'super().__init__(2.0, "fan_avg", "truncated_normal", seed)',
      ["tests/test_initializers.py"],
      "he_normal scales by fan_avg instead of fan_in"),
    M("shuffled_labels_in_sorted_order", "python/deepcore/models/model.py",
      "core.gather_rows(y, idx, yh)",
      "core.gather_rows(y, np.sort(idx), yh)",
      ["tests/test_training_loop.py"],
      "a shuffled batch takes its labels in another order than its rows"),
    M("history_before_user_callbacks", "python/deepcore/models/model.py",
      'cbs = _user_callbacks(callbacks, "fit") + [history]',
      'cbs = [history] + _user_callbacks(callbacks, "fit")',
      ["tests/test_callbacks.py"],
      "History sees the epoch logs before the user's callbacks add to them (Keras 3 calls it after)"),
    M("dense_backward_without_activation_derivative", "python/deepcore/layers/core.py",
      "a.code, a.alpha, a.beta, dy_is_dz, False)",
      "a.code if dy_is_dz else 0, a.alpha, a.beta, dy_is_dz, False)",
      ["tests/test_dense.py", "tests/test_examples_diagnostics.py"],
      "a hidden Dense layer's backward skips its activation's derivative"),
    M("swish_derivative_without_beta", "src/ops/activations.h",
      "return dy * (s + beta * x * s * (1.0f - s));",
      "return dy * (s + x * s * (1.0f - s));",
      ["tests/test_activations.py"],
      "Swish's derivative drops beta from the x s (1 - s) term"),
    M("adamax_bias_correction_inverted", "python/deepcore/optimizers.py",
      "h.c1 = lr / (1.0 - self.beta_1 ** t)",
      "h.c1 = lr * (1.0 - self.beta_1 ** t)",
      ["tests/test_optimizers.py"],
      "Adamax multiplies by its bias correction instead of dividing"),
    M("amsgrad_state_without_vhat", "python/deepcore/optimizers.py",
      "state.update({k: to_host(v, copy=True) for k, v in self._slots.items()})",
      'state.update({k: to_host(v, copy=True) for k, v in self._slots.items() if k != "vhat"})',
      ["tests/test_optimizer_resume.py"],
      "get_state leaves out AMSGrad's vhat: a resumed run forgets the running maximum"),
    M("sparsity_fraction_from_pruned", "python/deepcore/sparsity.py",
      '"fraction": zeros / total if total else 0.0',
      '"fraction": pruned / total if total else 0.0',
      ["tests/test_lr_finder_sparsity.py"],
      "prune reports the fraction it pruned now, not the fraction of weights that are zero"),
    M("graph_step_drops_the_penalty", "python/deepcore/models/graph_step.py",
      "            loss += penalty\n",
      "            pass\n",
      ["tests/test_device_scenarios.py", "tests/test_graph_training.py"],
      "a replayed CUDA-graph step reports the loss without the l1/l2 penalty"),
    # ---- merge layers (issue 15): the rules src/ops/merge.h states
    M("maximum_ties_go_to_the_last_input", "src/ops/merge.h",
      "const bool beyond = is_max ? x > best : x < best;",
      "const bool beyond = is_max ? x >= best : x <= best;",
      ["tests/test_merge_layers.py"],
      "Maximum/Minimum send the gradient of a tie to the last tied input instead of the first"),
    M("multiply_gradient_misses_the_suffix", "src/cpu/merge.cpp",
      "          for (index_t j = 0; j < m; ++j) d[j] *= acc[j];",
      "          for (index_t j = 0; j < m; ++j) d[j] *= g[j];",
      ["tests/test_merge_layers.py"],
      "Multiply's gradient for input i leaves out the inputs after i (prefix product times dy only)"),
    M("merge_parallel_tile_offset", "src/cpu/merge.cpp",
      "for (index_t t = b; t < e; t += kTile) fn(t, std::min(kTile, e - t));",
      "for (index_t t = b; t < e; t += kTile) fn(t - b, std::min(kTile, e - t));",
      ["tests/test_parallel_paths.py", "-k", "merge"],
      "the parallel merge kernels compute every chunk at the first chunk's offset"),
    M("concatenate_backward_skips_the_offset", "src/cpu/merge.cpp",
      "        if (dxs[i]) std::memcpy(dxs[i] + r * cols[i], gr, size_t(cols[i]) * sizeof(float));\n        gr += cols[i];",
      "        if (dxs[i]) std::memcpy(dxs[i] + r * cols[i], gr, size_t(cols[i]) * sizeof(float));",
      ["tests/test_merge_layers.py"],
      "Concatenate's backward copies every input's gradient from the first input's columns"),
]


def run(cmd, cwd, env=None, log=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}  (rc {p.returncode}, {time.perf_counter() - t0:.1f} s)\n{p.stdout}\n")
        log.flush()
    return p.returncode, p.stdout


def copy_tree(scratch, rev=None):
    """The tracked and untracked-not-ignored files of the working tree, as they
    are now; or, with rev, the files of that commit."""
    tree = scratch / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    if rev:
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        return tree
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, stdout=subprocess.PIPE).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            dst = tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return tree


class Build:
    """deepcore._core built from the scratch tree; rebuilt incrementally by Ninja."""

    def __init__(self, scratch, tree, log):
        self.dir, self.tree, self.log = scratch / "build", tree, log

    def configure(self):
        pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], check=True,
                                      stdout=subprocess.PIPE, text=True).stdout.strip()
        rc, out = run(["cmake", "-S", self.tree, "-B", self.dir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                       "-DDEEPCORE_ENABLE_CUDA=OFF", f"-DPython_EXECUTABLE={sys.executable}",
                       f"-Dpybind11_DIR={pybind11_dir}"], self.tree, log=self.log)
        if rc:
            sys.exit(f"mutants: CMake configure failed (log: {self.log.name})\n{out[-2000:]}")

    def build(self):
        """True when _core built; the module is copied into the scratch package."""
        rc, _ = run(["ninja", "-C", self.dir, "_core"], self.tree, log=self.log)
        if rc:
            return False
        for so in self.dir.glob("_core*.so"):
            shutil.copy2(so, self.tree / "python" / "deepcore" / so.name)
        return True


def pytest(tree, tests, log):
    env = dict(os.environ, PYTHONPATH=str(tree / "python"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("DEEPCORE_CUDA_EMULATOR", None)
    rc, out = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], tree, env, log)
    last = next((line for line in reversed(out.splitlines()) if line.strip()), "")
    return rc, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--rev", help="test the files of this commit (e.g. HEAD) instead of the working tree")
    ap.add_argument("--scratch", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "deepcore-mutants"),
                    help="folder for the copy of the tree, the build and the log")
    args = ap.parse_args()

    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            sys.exit(f"mutants: unknown mutant(s) {sorted(unknown)}; --list shows the names")
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:40s} {m.path:40s} {m.what}")
        return 0

    scratch = Path(args.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    log = open(scratch / "mutants.log", "w")
    tree = copy_tree(scratch, args.rev)
    build = Build(scratch, tree, log)
    print(f"mutants: copy in {tree}, log in {log.name}", flush=True)
    build.configure()
    if not build.build():
        sys.exit(f"mutants: the unmutated tree does not build (log: {log.name})")

    # Every selection must pass before any mutant is planted.
    selections = {tuple(m.tests) for m in mutants}
    for sel in sorted(selections):
        rc, last = pytest(tree, list(sel), log)
        if rc:
            sys.exit(f"mutants: the unmutated tree fails {' '.join(sel)}: {last} (log: {log.name})")

    rows = []
    for m in mutants:
        t0 = time.perf_counter()
        f = tree / m.path
        text = f.read_text()
        count = text.count(m.old)
        if count != 1:
            rows.append((m, f"stale ({count} matches)", ""))
            print(f"{m.name}: stale: the text to replace occurs {count} times in {m.path}", flush=True)
            continue
        f.write_text(text.replace(m.old, m.new))
        try:
            if m.native and not build.build():
                result, detail = "broken", "does not build"
            else:
                rc, detail = pytest(tree, m.tests, log)
                result = "caught" if rc == 1 else "SURVIVED" if rc == 0 else "broken"
        finally:
            f.write_text(text)
        if m.native:
            build.build()  # back to the unmutated module before the next mutant
        rows.append((m, result, f"{time.perf_counter() - t0:.0f} s"))
        print(f"{m.name}: {result} ({detail})", flush=True)

    print("\nmutant | file | planted bug | tests | result | time")
    print("--- | --- | --- | --- | --- | ---")
    for m, result, took in rows:
        print(f"{m.name} | {m.path} | {m.what} | {' '.join(m.tests)} | {result} | {took}")
    caught = sum(r == "caught" for _, r, _ in rows)
    print(f"\n{caught} of {len(rows)} caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
