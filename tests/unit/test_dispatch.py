"""The dispatcher picks the compiled kernels in a normal install."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from distsync._core import KERNELS, NO_EXTENSIONS, implementation, load


@pytest.mark.parametrize("kernel", KERNELS)
def test_dispatcher_uses_compiled_kernel_unless_disabled(kernel: str) -> None:
    expected = "py" if NO_EXTENSIONS else "c"
    assert implementation(kernel) == expected
    mod = load(kernel, expected)
    if expected == "c":
        # A compiled module is a shared object, not a .py file.
        assert mod.__file__ is not None and not mod.__file__.endswith(".py")


@pytest.mark.parametrize("kernel", KERNELS)
def test_env_var_forces_python_twin(kernel: str) -> None:
    code = f"from distsync._core import implementation;print(implementation({kernel!r}))"
    env = dict(os.environ, DISTSYNC_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "py"


def test_load_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="kernel"):
        load("nope", "c")
    with pytest.raises(ValueError, match="impl"):
        load("ring", "rust")


def test_dispatcher_modules_export_the_same_names_as_twins() -> None:
    for kernel in KERNELS:
        disp = importlib.import_module(f"distsync._core.{kernel}")
        py = load(kernel, "py")
        for name in disp.__all__:
            assert hasattr(py, name), f"{kernel}: twin lacks {name}"
            if not NO_EXTENSIONS:
                assert hasattr(load(kernel, "c"), name), f"{kernel}: compiled lacks {name}"
