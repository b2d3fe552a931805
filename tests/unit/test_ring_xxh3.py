"""Our C XXH3 header on its own, including the portable 128-bit multiply.

The ring module's ``_xxh3_64`` hook only exercises the header as this
machine's compiler builds it (with ``__uint128_t``). Here the header is also
built with ``DS_XXH3_NO_INT128``, the path compilers without a 128-bit type
take, and strict C99 flags; both must equal the ``xxhash`` package.
"""

from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import xxhash

import distsync._core

# The header ships with the package (package data), so this works installed too.
HEADER_DIR = Path(distsync._core.__file__).resolve().parent

_SHIM = """
#include "_xxh3.h"
uint64_t shim_xxh3(const void *data, size_t len) { return ds_xxh3_64(data, len); }
"""


def _compiler() -> str:
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no C compiler")


@pytest.mark.parametrize("defines", [[], ["-DDS_XXH3_NO_INT128"]], ids=["int128", "portable"])
def test_header_builds_strict_c99_and_matches_xxhash(tmp_path: Path, defines: list[str]) -> None:
    src = tmp_path / "shim.c"
    src.write_text(_SHIM)
    lib = tmp_path / "libshim.so"
    cmd = [_compiler(), "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2", "-shared"]
    cmd += ["-fPIC", *defines, f"-I{HEADER_DIR}", str(src), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True)
    fn = ctypes.CDLL(str(lib)).shim_xxh3
    fn.restype = ctypes.c_uint64
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    rng = random.Random(99)
    for n in [*range(0, 300), 1023, 1024, 1025, 2047, 2048, 2049, 3000, 70_000]:
        data = rng.randbytes(n)
        assert fn(data, n) == xxhash.xxh3_64_intdigest(data), n
    # Unaligned input: hash a slice that starts at an odd address.
    buf = ctypes.create_string_buffer(rng.randbytes(600), 600)
    for start in (1, 3, 7):
        view = ctypes.cast(ctypes.addressof(buf) + start, ctypes.c_char_p)
        assert fn(view, 500) == xxhash.xxh3_64_intdigest(buf.raw[start : start + 500])
