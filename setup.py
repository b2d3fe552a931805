"""Build the Cython kernels of distsync._core.

Everything else about the package lives in pyproject.toml. Each kernel is one
``src/distsync/_core/_<name>_c.pyx``; its pure-Python twin ``_<name>_py.py`` is
used when the extension is absent or ``DISTSYNC_NO_EXTENSIONS=1`` is set.

Build-time switches (environment variables):

``DISTSYNC_NO_EXTENSIONS=1``
    build no extensions at all (pure-Python install).
``DISTSYNC_CYTHON_DEBUG=1``
    bounds checks, wraparound and line tracing on; for debugging and coverage.
"""

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
CORE = HERE / "src" / "distsync" / "_core"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


def _extensions():
    if _truthy("DISTSYNC_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = _truthy("DISTSYNC_CYTHON_DEBUG")
    macros = [("CYTHON_TRACE_NOGIL", "1")] if debug else []
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    exts = [
        Extension(
            f"distsync._core.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[str(CORE.relative_to(HERE))],
            define_macros=macros,
            extra_compile_args=cflags,
        )
        for pyx in sorted(CORE.glob("_*_c.pyx"))
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": debug,
        },
    )


setup(ext_modules=_extensions())
