"""The ecosystem features sit behind extras: `import deepcore` imports none
of their packages, and a feature whose package is missing raises an
ImportError that names the extra to install."""
import subprocess
import sys

import pytest

OPTIONAL = ("optuna", "sklearn", "tensorboardX", "tensorboard", "matplotlib", "pydot")


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_deepcore_imports_no_optional_package():
    loaded = _run(f"import sys, deepcore; print([m for m in {OPTIONAL!r} if m in sys.modules])")
    assert loaded == "[]"


@pytest.mark.parametrize("blocked, access, extra", [
    ("optuna", "dc.tuner", "tune"),
    ("sklearn", "dc.wrappers", "sklearn"),
    ("tensorboardX", "dc.callbacks.TensorBoard", "tensorboard"),
    ("matplotlib", "dc.plot.learning_curves({'loss': [1.0]})", "plot"),
    ("pydot", "dc.utils.model_to_dot(dc.Sequential([dc.layers.Input(shape=(2,)), dc.layers.Dense(1)]))", "plot"),
])
def test_a_missing_package_is_an_import_error_naming_its_extra(blocked, access, extra):
    message = _run(f"import sys; sys.modules[{blocked!r}] = None\n"
                   f"import deepcore as dc\n"
                   f"try:\n    {access}\nexcept ImportError as e:\n    print(e)\n")
    assert f'pip install "deepcore[{extra}]"' in message
