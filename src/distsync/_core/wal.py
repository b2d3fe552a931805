"""Append-only checksummed log over LMDB: the compiled kernel, or its pure-Python twin."""

from typing import TYPE_CHECKING

from distsync._core._dispatch import pick

if TYPE_CHECKING:
    from distsync._core._wal_py import Wal
else:
    _impl = pick("wal")
    Wal = _impl.Wal

__all__ = ["Wal"]
