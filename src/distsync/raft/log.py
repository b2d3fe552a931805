"""The Raft log as the core sees it: stable storage plus an unstable (not yet persisted) tail.

Modelled on etcd-io/raft's ``log.go``/``log_unstable.go``. Entries are shared, never
copied, between the storage, the unstable tail, messages and Ready batches.
"""

from __future__ import annotations

from distsync.raft.storage import CompactedError, Storage, UnavailableError, limit_size
from distsync.raft.types import Entry, Snapshot

__all__ = ["RaftLog", "Unstable"]


class Unstable:
    """Entries (and possibly a snapshot) the core has accepted but the driver has not yet
    persisted.

    Invariant: ``entries[k].index == offset + k``; if ``snapshot`` is set it precedes the
    entries (``offset == snapshot.index + 1`` when it was installed).
    """

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, i: int) -> int | None:
        """The term of ``i`` if the unstable part knows it, else None (ask storage)."""
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.index == i:
                return self.snapshot.term
            return None
        k = i - self.offset
        if k < len(self.entries):
            return self.entries[k].term
        return None

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (of term ``t``) are persisted. The term check matters: if the
        tail was replaced since the Ready was cut, ``i`` is now a different entry that
        nobody has persisted yet, and must stay."""
        gt = self.maybe_term(i)
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            # The common case: a plain append at the end.
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces the whole unstable tail (and some persisted entries, which the
            # storage overwrites when this is persisted).
            self.offset = after
            self.entries = list(ents)
        else:
            # Keep the prefix before ``after``, drop the divergent rest.
            self.entries = self.entries[: after - self.offset] + ents


class RaftLog:
    """Storage + unstable tail, with the commit and apply cursors.

    Invariant: ``applied <= committed <= last_index()``; entries at or below
    ``committed`` are never truncated (the core would be violating Raft if it tried, so
    it raises instead).
    """

    __slots__ = ("storage", "unstable", "committed", "applied")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        self.unstable = Unstable(storage.last_index() + 1)
        # Everything compacted is committed and applied (it is in the snapshot).
        self.committed = first - 1
        self.applied = first - 1

    # -- indexes and terms -------------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``, or 0 if ``i`` is compacted or beyond the log: callers compare
        terms, and 0 never equals a real term, so "unknown" reads as "does not match"."""
        u = self.unstable
        if i >= u.offset:
            # At or past the unstable offset only the unstable tail is authoritative: the
            # storage may still hold a stale tail that the next persist overwrites.
            k = i - u.offset
            return u.entries[k].term if k < len(u.entries) else 0
        t = u.maybe_term(i)
        if t is not None:
            return t
        if u.snapshot is not None:
            return 0  # below a pending snapshot: compacted
        try:
            return self.storage.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    # -- reading entries -------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``; ``lo`` must be >= first_index (else CompactedError)."""
        if lo >= hi:
            return []
        u = self.unstable
        ents: list[Entry] = []
        if lo < u.offset:
            stop = min(hi, u.offset)
            ents = self.storage.entries(lo, stop, max_bytes)
            if len(ents) < stop - lo:
                return ents  # cut short by max_bytes: the unstable part would not fit either
            if hi <= u.offset:
                return ents  # all from storage, which applied max_bytes already
        if hi > u.offset:
            part = u.entries[max(lo, u.offset) - u.offset : hi - u.offset]
            ents = ents + part if ents else part
        return limit_size(ents, max_bytes)

    def entries_from(self, i: int, max_bytes: int | None = None) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_bytes)

    def next_committed_entries(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1)
        return []

    def has_next_committed_entries(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def snapshot(self) -> Snapshot:
        u = self.unstable.snapshot
        return u if u is not None else self.storage.snapshot()

    # -- changing the log ------------------------------------------------------------------

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry of ``ents`` that is not already in the log with the same
        term (0 if all are). Entries that match are left alone: this is what keeps a
        duplicated or reordered append from truncating entries a later append added."""
        for e in ents:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """Raft §5.3 receiver rule: if our entry at ``index`` has ``log_term``, append
        ``ents`` after it (truncating only from the first conflicting entry) and return the
        last index the leader's message proves we match; else None (reject)."""
        if self.term(index) != log_term:
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflicts with committed entry (committed {self.committed})"
                )
            self.unstable.truncate_and_append(ents[ci - index - 1 :])
        # Commit only what this message proves matches the leader: entries past last_new
        # may be a stale tail that the leader will still overwrite.
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if ents:
            if ents[0].index - 1 < self.committed:
                raise AssertionError(
                    f"append at {ents[0].index} would overwrite committed {self.committed}"
                )
            self.unstable.truncate_and_append(ents)
        return self.last_index()

    def commit_to(self, c: int) -> None:
        # Commit never goes back (a stale leader's lower commit is simply ignored).
        if c > self.committed:
            if c > self.last_index():
                raise AssertionError(f"commit {c} beyond last index {self.last_index()}")
            self.committed = c

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Raft §5.4.2: a leader commits by counting replicas only entries of its own term;
        earlier entries become committed as their prefix."""
        if max_index > self.committed and self.term(max_index) == term:
            self.committed = max_index
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i:
            if i > self.committed or i < self.applied:
                raise AssertionError(f"applied {i} outside [{self.applied}, {self.committed}]")
            self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by ``snap`` (InstallSnapshot on a follower)."""
        self.committed = snap.index
        self.unstable.restore(snap)
