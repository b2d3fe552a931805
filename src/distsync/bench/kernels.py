"""``distsync bench kernels``: each native kernel against its peer, one table.

Each kernel's benchmark lives in ``distsync.bench._<kernel>`` and exposes
``run(impl, quick, progress) -> list[Row]``.
"""

from __future__ import annotations

import importlib

from distsync._core import KERNELS, implementation
from distsync.bench import Progress, Row

__all__ = ["run_kernels"]


def run_kernels(
    kernels: tuple[str, ...] = KERNELS,
    quick: bool = False,
    progress: Progress | None = None,
) -> list[Row]:
    """Run the benchmark of each kernel in ``kernels`` and return all rows."""
    progress = progress or Progress()
    rows: list[Row] = []
    for name in kernels:
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; choose from {', '.join(KERNELS)}")
        mod = importlib.import_module(f"distsync.bench._{name}")
        impl = implementation(name)
        progress(f"{name}: benchmarking the {'compiled' if impl == 'c' else 'pure-Python'} kernel")
        rows.extend(mod.run(impl=impl, quick=quick, progress=progress))
    return rows
