"""MESI cache-line table of a near-cache agent: compiled kernel or its pure-Python twin."""

from typing import TYPE_CHECKING

from distsync._core._dispatch import pick

if TYPE_CHECKING:
    from distsync._core._mesi_py import (
        ACTION_NAMES,
        CLEAN,
        EVENT_NAMES,
        EVICT,
        EXCLUSIVE,
        FETCH,
        FILL_EXCLUSIVE,
        FILL_SHARED,
        FLUSH,
        INVALID,
        INVALIDATE,
        INVALIDATE_OTHERS,
        LOCAL_READ,
        LOCAL_WRITE,
        MODIFIED,
        NONE,
        OP_GET,
        OP_PUT,
        REMOTE_READ,
        REMOTE_WRITE,
        SHARED,
        STATE_NAMES,
        TRANSITIONS,
        UPGRADE,
        WRITE_BACK,
        IllegalTransition,
        LineTable,
        transition,
    )
else:
    _impl = pick("mesi")
    LineTable = _impl.LineTable
    IllegalTransition = _impl.IllegalTransition
    transition = _impl.transition
    TRANSITIONS = _impl.TRANSITIONS
    STATE_NAMES = _impl.STATE_NAMES
    EVENT_NAMES = _impl.EVENT_NAMES
    ACTION_NAMES = _impl.ACTION_NAMES
    INVALID = _impl.INVALID
    SHARED = _impl.SHARED
    EXCLUSIVE = _impl.EXCLUSIVE
    MODIFIED = _impl.MODIFIED
    NONE = _impl.NONE
    FETCH = _impl.FETCH
    INVALIDATE_OTHERS = _impl.INVALIDATE_OTHERS
    WRITE_BACK = _impl.WRITE_BACK
    LOCAL_READ = _impl.LOCAL_READ
    LOCAL_WRITE = _impl.LOCAL_WRITE
    FILL_EXCLUSIVE = _impl.FILL_EXCLUSIVE
    FILL_SHARED = _impl.FILL_SHARED
    UPGRADE = _impl.UPGRADE
    REMOTE_READ = _impl.REMOTE_READ
    INVALIDATE = _impl.INVALIDATE
    REMOTE_WRITE = _impl.REMOTE_WRITE
    EVICT = _impl.EVICT
    FLUSH = _impl.FLUSH
    CLEAN = _impl.CLEAN
    OP_GET = _impl.OP_GET
    OP_PUT = _impl.OP_PUT

__all__ = [
    "LineTable",
    "IllegalTransition",
    "transition",
    "TRANSITIONS",
    "STATE_NAMES",
    "EVENT_NAMES",
    "ACTION_NAMES",
    "INVALID",
    "SHARED",
    "EXCLUSIVE",
    "MODIFIED",
    "NONE",
    "FETCH",
    "INVALIDATE_OTHERS",
    "WRITE_BACK",
    "LOCAL_READ",
    "LOCAL_WRITE",
    "FILL_EXCLUSIVE",
    "FILL_SHARED",
    "UPGRADE",
    "REMOTE_READ",
    "INVALIDATE",
    "REMOTE_WRITE",
    "EVICT",
    "FLUSH",
    "CLEAN",
    "OP_GET",
    "OP_PUT",
]
