"""Choose between a kernel's compiled module and its pure-Python twin."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["KERNELS", "NO_EXTENSIONS", "implementation", "load"]

#: The kernels, by short name. ``distsync._core.<name>`` is the dispatcher.
KERNELS = ("ring", "wal", "mesi", "waitgraph")

#: True when ``DISTSYNC_NO_EXTENSIONS`` forces the pure-Python twins.
NO_EXTENSIONS = os.environ.get("DISTSYNC_NO_EXTENSIONS", "") not in ("", "0", "false", "no")

_chosen: dict[str, str] = {}


def load(kernel: str, impl: str) -> ModuleType:
    """Import one implementation of ``kernel``: ``impl`` is ``"c"`` or ``"py"``."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
    if impl not in ("c", "py"):
        raise ValueError(f"impl must be 'c' or 'py', not {impl!r}")
    return importlib.import_module(f"distsync._core._{kernel}_{impl}")


def pick(kernel: str) -> ModuleType:
    """The module the dispatcher uses: compiled unless absent or disabled."""
    if not NO_EXTENSIONS:
        try:
            mod = load(kernel, "c")
        except ImportError:
            pass
        else:
            _chosen[kernel] = "c"
            return mod
    _chosen[kernel] = "py"
    return load(kernel, "py")


def implementation(kernel: str) -> str:
    """``"c"`` or ``"py"``: which implementation ``distsync._core.<kernel>`` uses."""
    if kernel not in _chosen:
        importlib.import_module(f"distsync._core.{kernel}")
    return _chosen[kernel]
