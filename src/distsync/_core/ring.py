"""Consistent hash ring over XXH3-64: the compiled kernel, or its pure-Python twin."""

from typing import TYPE_CHECKING

from distsync._core._dispatch import pick

if TYPE_CHECKING:
    from distsync._core._ring_py import DEFAULT_VNODES, MAX_VNODES, HashRing
else:
    _impl = pick("ring")
    HashRing = _impl.HashRing
    DEFAULT_VNODES = _impl.DEFAULT_VNODES
    MAX_VNODES = _impl.MAX_VNODES

__all__ = ["HashRing", "DEFAULT_VNODES", "MAX_VNODES"]
