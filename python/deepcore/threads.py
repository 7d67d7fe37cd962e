"""deepcore's threads as threadpoolctl sees them.

deepcore runs its kernels on two pools of threads: its own (src/cpu/parallel.h,
sized by ``deepcore.set_num_threads``) and the OpenBLAS of the
``scipy_openblas32`` wheel (the Dense layer's GEMMs). threadpoolctl, the tool
scikit-learn users limit native thread pools with, lists that OpenBLAS by
itself (``internal_api="openblas"``, ``prefix="libscipy_openblas"``); the
controller below makes it list and limit deepcore's pool too
(``user_api="deepcore"``), so that ``threadpool_limits(1)`` makes deepcore
single-threaded and restores it afterwards.

The controller talks to two C functions that _core exports for it,
``deepcore_get_num_threads`` and ``deepcore_set_num_threads``.

deepcore never imports threadpoolctl itself: importing it sets an
environment variable (``KMP_DUPLICATE_LIB_OK``), and deepcore changes none.
If threadpoolctl is already imported, the controller is registered now;
otherwise a finder on ``sys.meta_path`` registers it right after
threadpoolctl's module has run, whenever something imports it, and then
removes itself. Without threadpoolctl (or with a version older than its
``register``) nothing else happens.
"""
from __future__ import annotations

import sys

_version = None
_registered = False


def register_threadpoolctl_controller(version: str) -> None:
    """Registers deepcore's controller with threadpoolctl, now if it is
    imported, else when it is (see the module docstring)."""
    global _version
    _version = version
    if "threadpoolctl" in sys.modules:
        _register()
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def _register() -> None:
    global _registered
    if _registered:
        return
    try:
        from threadpoolctl import LibController, register
    except ImportError:  # threadpoolctl older than 3.4 has no register
        return
    version = _version

    class DeepcoreController(LibController):
        """deepcore's thread pool: the loaded _core.*.so that exports
        deepcore_get_num_threads."""

        user_api = "deepcore"
        internal_api = "deepcore"
        filename_prefixes = ("_core",)
        # threadpoolctl opens every loaded library whose name starts with
        # "_core"; only one with these symbols is deepcore's.
        check_symbols = ("deepcore_get_num_threads", "deepcore_set_num_threads")

        def get_num_threads(self):
            return self._symbol("deepcore_get_num_threads")()

        def set_num_threads(self, num_threads):
            if self._symbol("deepcore_set_num_threads")(int(num_threads)) != 0:
                raise ValueError(f"deepcore: cannot use {num_threads!r} threads (expected 1 to 4096)")

        def get_version(self):
            # Called before threadpoolctl checks check_symbols: another "_core"
            # library gets None here and is then skipped.
            return version if self._symbol("deepcore_get_num_threads") is not None else None

        def _symbol(self, name):
            try:
                return getattr(self.dynlib, name)
            except AttributeError:  # a library that is not deepcore's _core
                return None

    register(DeepcoreController)
    _registered = True


class _RegisterOnImport:
    """A meta path finder that finds nothing itself: for "threadpoolctl" it
    asks the finders after it, and has the module's loader call _register()
    once the module has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "threadpoolctl":
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not installed (or an unusual loader): nothing to register with
        loader = spec.loader
        run_module = loader.exec_module

        def exec_module(module):
            del loader.exec_module  # the loader's own method again
            run_module(module)
            _register()

        loader.exec_module = exec_module
        # Found: the import system stops looking, so leaving sys.meta_path now
        # does not disturb its loop.
        sys.meta_path.remove(self)
        return spec
