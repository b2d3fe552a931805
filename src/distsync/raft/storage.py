"""The stable log a Raft core reads from, as a Protocol, and its in-memory reference.

The core only *reads* storage; the driver writes to it while handling a Ready (see
:class:`~distsync.raft.types.Ready`). The LMDB storage implements the same Protocol.
"""

from __future__ import annotations

from typing import Protocol

from distsync.errors import DistSyncError
from distsync.raft.types import EMPTY_HARD_STATE, ConfState, Entry, HardState, Snapshot

__all__ = [
    "Storage",
    "MemoryStorage",
    "RaftStorageError",
    "CompactedError",
    "UnavailableError",
    "SnapshotOutOfDateError",
    "limit_size",
]


class RaftStorageError(DistSyncError):
    """Base of the errors a Raft storage raises on purpose."""

    code = "raft_storage"


class CompactedError(RaftStorageError):
    """The requested index is at or below the last compaction point: it is only in the
    snapshot now. The leader answers this by sending the snapshot."""

    code = "raft_compacted"


class UnavailableError(RaftStorageError):
    """The requested index is beyond the last stored entry."""

    code = "raft_unavailable"


class SnapshotOutOfDateError(RaftStorageError):
    """A snapshot no newer than the current one was offered."""

    code = "raft_snapshot_out_of_date"


class Storage(Protocol):
    """Read access to the durable Raft state.

    Invariants: ``first_index() - 1`` is the index of the last compacted entry (the
    snapshot's, or 0) and ``term(first_index() - 1)`` still answers; ``entries`` returns
    consecutive entries; anything below ``first_index()`` raises CompactedError.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``; with ``max_bytes``, a prefix of at least one entry whose
        ``data`` sizes sum to at most ``max_bytes``."""
        ...

    def term(self, i: int) -> int:
        """Term of entry ``i``, for ``first_index() - 1 <= i <= last_index()``."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (not compacted)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (``first_index() - 1`` when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (``index == 0`` if none)."""
        ...


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` of data, never empty if ``ents``
    is not: one oversized entry must still be able to travel, or replication would stall."""
    if max_bytes is None or len(ents) <= 1:
        return ents
    size = len(ents[0].data)
    for n in range(1, len(ents)):
        size += len(ents[n].data)
        if size > max_bytes:
            return ents[:n]
    return ents


class MemoryStorage:
    """Storage kept in a Python list; the reference implementation, used by tests and the
    simulator (which copies it to model what was fsync'd).

    Invariant: ``_ents[0]`` is a dummy entry holding the index and term of the last
    compacted entry (the snapshot point), so ``term(first_index() - 1)`` always works and
    ``_ents[i - _ents[0].index]`` is entry ``i``.
    """

    __slots__ = ("_hard_state", "_snapshot", "_ents")

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- the Storage protocol -------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"entries({lo}, {hi}): compacted up to {offset}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries({lo}, {hi}): last index is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError(f"term({i}): compacted up to {offset}")
        if i - offset >= len(self._ents):
            raise UnavailableError(f"term({i}): last index is {self.last_index()}")
        return self._ents[i - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes, done by the driver ---------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, ents: list[Entry]) -> None:
        """Write ``ents``, replacing any stored entries from ``ents[0].index`` on (a new
        leader's entries overwrite a divergent tail). Entries already compacted are
        skipped; a gap after the last index is a bug in the caller."""
        if not ents:
            return
        first = self.first_index()
        if ents[-1].index < first:
            return  # all of it is already in the snapshot
        if ents[0].index < first:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(
                f"append at {ents[0].index}: missing entries after {self.last_index()}"
            )
        # Truncate then extend: a no-op truncation when appending at the end.
        del self._ents[offset:]
        self._ents.extend(ents)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing the leader's)."""
        if snap.index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.index} is not newer than {self._snapshot.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.term, snap.index)]

    def create_snapshot(
        self, index: int, conf: ConfState | None = None, data: bytes = b""
    ) -> Snapshot:
        """Record the state machine as of applied ``index`` as the latest snapshot (the log
        is kept; :meth:`compact` drops it)."""
        if index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot at {index}: last index is {self.last_index()}")
        if conf is None:
            conf = self._snapshot.conf
        snap = Snapshot(index, self.term(index), conf, data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` (which must be covered by a snapshot
        the application has taken; the core never asks for compacted entries it needs
        without falling back to that snapshot)."""
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(f"compact({index}): already compacted up to {offset}")
        if index > self.last_index():
            raise UnavailableError(f"compact({index}): last index is {self.last_index()}")
        i = index - offset
        # The dummy keeps the compaction point's term so term(first_index - 1) still works.
        self._ents = [Entry(self._ents[i].term, index)] + self._ents[i + 1 :]

    def copy(self) -> MemoryStorage:
        """A snapshot of the storage as it stands (the simulator's "what was fsync'd").
        Entries are shared: they are immutable."""
        c = MemoryStorage()
        c._hard_state = self._hard_state
        c._snapshot = self._snapshot
        c._ents = list(self._ents)
        return c
