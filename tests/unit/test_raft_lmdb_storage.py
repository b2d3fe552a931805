"""The Raft storages: one behavioural contract run against MemoryStorage (the reference)
and LmdbStorage, then what only a durable storage owes: exact recovery on reopen, nothing
saved lost to a kill -9, refusal to start from a corrupt log.

Contract tests reopen the storage between steps (a no-op for MemoryStorage), so every
behaviour is also checked across a restart. Raft's rule behind them (Figure 2, "Persistent
state on all servers ... updated on stable storage before responding to RPCs"): term, vote
and log must come back exactly as they were acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import distsync
from distsync._core.wal import Wal
from distsync.errors import CorruptLogError, StorageError
from distsync.raft import lmdb_storage
from distsync.raft.lmdb_storage import decode_entry, encode_entry, encode_framed
from distsync.raft.segment_log import SegmentLog
from distsync.raft.storage import (
    CompactedError,
    MemoryStorage,
    SnapshotOutOfDateError,
    Storage,
    UnavailableError,
)
from distsync.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot

SRC = str(Path(distsync.__file__).resolve().parents[1])

#: The log format the current test runs with (every test runs with each).
FORMAT = ["segments"]


@pytest.fixture(autouse=True, params=lmdb_storage.LOG_FORMATS)
def log_format(request: pytest.FixtureRequest) -> Any:
    FORMAT[0] = request.param
    yield request.param
    FORMAT[0] = "segments"


class LmdbStorage(lmdb_storage.LmdbStorage):
    """The storage under test, in the current test's log format."""

    def __init__(self, data_dir: Any, sync: bool = True, **kw: Any) -> None:
        kw.setdefault("log_format", FORMAT[0])
        kw.setdefault("segment_bytes", 1 << 16)  # small: rollovers happen, opens are quick
        super().__init__(data_dir, sync, **kw)


def open_log(path: Path) -> Wal | SegmentLog:
    """The log directory ``path`` opened directly, in the current format."""
    return Wal(path, sync=False) if FORMAT[0] == "lmdb" else SegmentLog(path, sync=False)


def log_file(path: Path) -> Path:
    """The file holding the first records of the log directory ``path``."""
    if FORMAT[0] == "lmdb":
        return path / "data.mdb"
    return path / f"seg-{1:016x}.log"


AnyStorage: TypeAlias = MemoryStorage | LmdbStorage


def ents(lo: int, hi: int, term: int, size: int = 8) -> list[Entry]:
    """Entries ``lo..hi`` (inclusive) of ``term`` whose data names them (unique bytes)."""
    return [Entry(term, i, data(i, term, size)) for i in range(lo, hi + 1)]


def data(i: int, term: int = 1, size: int = 8) -> bytes:
    head = f"<e{i:05d}t{term:03d}>".encode()
    return (head * (size // len(head) + 1))[:size]


def dump(s: AnyStorage) -> dict[str, Any]:
    """Everything a Raft core can observe of a storage."""
    first, last = s.first_index(), s.last_index()
    return {
        "initial_state": s.initial_state(),
        "hard_state": s.hard_state,
        "first": first,
        "last": last,
        "terms": [s.term(i) for i in range(first - 1, last + 1)],
        "entries": s.entries(first, last + 1),
        "snapshot": s.snapshot(),
    }


class Handle:
    """A storage under test plus how to restart it: MemoryStorage "restarts" as itself;
    LmdbStorage is closed and reopened from its directory."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.s: AnyStorage = MemoryStorage() if kind == "memory" else LmdbStorage(path, False)

    def reopen(self) -> AnyStorage:
        if isinstance(self.s, LmdbStorage):
            before = dump(self.s)
            self.s.close()
            self.s = LmdbStorage(self.path, False)
            assert dump(self.s) == before, "reopen changed what the storage holds"
        return self.s

    def close(self) -> None:
        if isinstance(self.s, LmdbStorage):
            self.s.close()


@pytest.fixture(params=["memory", "lmdb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    handle = Handle(str(request.param), tmp_path / "raft")
    yield handle
    handle.close()


# ==== the Storage contract (both implementations) ============================================


def test_empty_storage(h: Handle) -> None:
    for s in (h.s, h.reopen()):
        assert s.initial_state() == (HardState(), ConfState())
        assert (s.first_index(), s.last_index()) == (1, 0)
        assert s.term(0) == 0  # term(first_index - 1) always answers
        assert s.entries(1, 1) == []
        assert s.snapshot() == Snapshot()
        with pytest.raises(UnavailableError):
            s.term(1)
        with pytest.raises(CompactedError):
            s.entries(0, 1)
        with pytest.raises(UnavailableError):
            s.entries(1, 2)


def test_append_then_read_entries_and_terms(h: Handle) -> None:
    h.s.append(ents(1, 3, 1) + ents(4, 6, 2))
    for s in (h.s, h.reopen()):
        assert (s.first_index(), s.last_index()) == (1, 6)
        assert [s.term(i) for i in range(7)] == [0, 1, 1, 1, 2, 2, 2]
        assert s.entries(2, 5) == ents(2, 3, 1) + ents(4, 4, 2)
        with pytest.raises(UnavailableError):
            s.entries(5, 8)
        with pytest.raises(UnavailableError):
            s.term(7)


def test_entries_max_bytes_keeps_at_least_one(h: Handle) -> None:
    h.s.append(ents(1, 5, 1, size=10))
    for s in (h.s, h.reopen()):
        assert s.entries(1, 6, max_bytes=0) == ents(1, 1, 1, 10)  # one oversized still goes
        assert s.entries(1, 6, max_bytes=29) == ents(1, 2, 1, 10)
        assert s.entries(1, 6, max_bytes=30) == ents(1, 3, 1, 10)
        assert s.entries(2, 6, max_bytes=1000) == ents(2, 5, 1, 10)


def test_entry_kinds_and_empty_data_round_trip(h: Handle) -> None:
    es = [
        Entry(1, 1, b"", EntryKind.NOOP),
        Entry(1, 2, b"1:n4", EntryKind.CONFIG),
        Entry(2, 3, b"\x00" * 3),
    ]
    h.s.append(es)
    assert h.reopen().entries(1, 4) == es


def test_conflicting_suffix_is_replaced(h: Handle) -> None:
    """Raft §5.3: if an existing entry conflicts with a new one (same index, different
    terms), delete the existing entry and all that follow it."""
    h.s.append(ents(1, 5, 1))
    h.s.append(ents(3, 4, 2))
    for s in (h.s, h.reopen()):
        assert s.last_index() == 4
        assert s.entries(1, 5) == ents(1, 2, 1) + ents(3, 4, 2)
        assert [s.term(i) for i in range(5)] == [0, 1, 1, 2, 2]
    h.s.append(ents(5, 6, 2))  # and the log continues after the replacement
    assert h.reopen().entries(1, 7) == ents(1, 2, 1) + ents(3, 6, 2)


def test_append_after_a_gap_is_refused(h: Handle) -> None:
    h.s.append(ents(1, 2, 1))
    with pytest.raises(UnavailableError):
        h.s.append(ents(4, 5, 1))
    assert h.reopen().last_index() == 2


def test_compaction_keeps_the_compaction_point_term(h: Handle) -> None:
    h.s.append(ents(1, 3, 1) + ents(4, 6, 2))
    h.s.compact(4)
    for s in (h.s, h.reopen()):
        assert (s.first_index(), s.last_index()) == (5, 6)
        assert s.term(4) == 2
        assert s.entries(5, 7) == ents(5, 6, 2)
        with pytest.raises(CompactedError):
            s.term(3)
        with pytest.raises(CompactedError):
            s.entries(4, 6)
    with pytest.raises(CompactedError):
        h.s.compact(4)
    with pytest.raises(UnavailableError):
        h.s.compact(7)
    h.s.compact(6)  # everything: the log is empty, its compaction point remains
    s = h.reopen()
    assert (s.first_index(), s.last_index(), s.term(6)) == (7, 6, 2)
    assert s.entries(7, 7) == []


def test_append_skips_compacted_entries(h: Handle) -> None:
    h.s.append(ents(1, 5, 1))
    h.s.compact(3)
    h.s.append(ents(1, 2, 1))  # wholly compacted: no-op
    assert h.s.entries(4, 6) == ents(4, 5, 1)
    h.s.append(ents(2, 6, 2))  # the compacted part is skipped, 4..6 replaced
    for s in (h.s, h.reopen()):
        assert s.entries(4, 7) == ents(4, 6, 2)
        assert s.term(3) == 1


def test_create_snapshot_keeps_the_log(h: Handle) -> None:
    h.s.append(ents(1, 4, 1))
    conf = ConfState(("n1", "n2"), ("n3",))
    snap = h.s.create_snapshot(3, conf, b"state@3")
    assert snap == Snapshot(3, 1, conf, b"state@3")
    for s in (h.s, h.reopen()):
        assert s.snapshot() == snap
        assert s.initial_state()[1] == conf
        assert s.entries(1, 5) == ents(1, 4, 1)
    with pytest.raises(SnapshotOutOfDateError):
        h.s.create_snapshot(3)
    with pytest.raises(UnavailableError):
        h.s.create_snapshot(5)
    assert h.s.create_snapshot(4).conf == conf  # conf defaults to the previous one


def test_apply_snapshot_replaces_the_log(h: Handle) -> None:
    h.s.append(ents(1, 4, 1))
    snap = Snapshot(10, 3, ConfState(("a", "b", "c")), b"leader's state")
    h.s.apply_snapshot(snap)
    for s in (h.s, h.reopen()):
        assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 3)
        assert s.snapshot() == snap
        assert s.initial_state()[1] == snap.conf
        with pytest.raises(CompactedError):
            s.entries(4, 5)
    h.s.append(ents(11, 12, 3))  # entries after the snapshot continue
    assert h.reopen().entries(11, 13) == ents(11, 12, 3)
    with pytest.raises(SnapshotOutOfDateError):
        h.s.apply_snapshot(Snapshot(10, 3))
    h.s.apply_snapshot(Snapshot(11, 3))  # behind our last index: still replaces it all
    assert (h.reopen().first_index(), h.s.last_index()) == (12, 11)


def test_hard_state(h: Handle) -> None:
    h.s.append(ents(1, 2, 1))
    h.s.set_hard_state(HardState(1, "n1", 2))
    assert h.reopen().initial_state()[0] == HardState(1, "n1", 2)
    h.s.set_hard_state(HardState(2, None, 2))
    assert h.reopen().hard_state == HardState(2, None, 2)
    h.s.set_hard_state(HardState(3, "nœud-é", 2))  # any node id (utf-8)
    assert h.reopen().hard_state == HardState(3, "nœud-é", 2)


# ==== LmdbStorage: save(), the write path the driver uses ====================================


class CountingWal:
    """A Wal whose durable operations are recorded (the compiled Wal's methods cannot be
    patched, so the storage's handle is wrapped instead)."""

    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ("append", "truncate_suffix", "truncate_prefix"):
            return attr

        def spy(*a: Any) -> Any:
            self._calls.append(name)
            return attr(*a)

        return spy


def counting(s: LmdbStorage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every durable commit ``s`` makes: Wal operations and ``meta`` writes."""
    calls: list[str] = []
    monkeypatch.setattr(s, "_wal", CountingWal(s._wal, calls))
    meta = s._meta_write

    def meta_spy(fn: Any) -> Any:
        calls.append("meta")
        return meta(fn)

    monkeypatch.setattr(s, "_meta_write", meta_spy)
    return calls


def test_save_entries_and_hard_state_is_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common Ready (new entries, moved commit, maybe a new term) costs one fsync."""
    with LmdbStorage(tmp_path, sync=False) as s:
        calls = counting(s, monkeypatch)
        s.save(HardState(1, "a", 0), ents(1, 3, 1))
        assert calls == ["append"]
        calls.clear()
        s.save(HardState(1, "a", 3), [])  # commit learnt from a heartbeat
        assert calls == ["meta"]
        calls.clear()
        s.save(HardState(1, "a", 3), [])  # unchanged: nothing to write
        s.save(None, [])
        assert calls == []
        s.save(None, ents(4, 4, 1))
        assert calls == ["append"]


def test_save_matches_the_three_write_methods(tmp_path: Path) -> None:
    mem = MemoryStorage()
    with LmdbStorage(tmp_path / "a", sync=False) as s:
        for hs, es, snap in [
            (HardState(1, "n1", 0), ents(1, 3, 1), None),
            (HardState(2, "n2", 3), ents(3, 5, 2), None),  # conflict
            (HardState(2, "n2", 5), [], None),
            (None, ents(6, 12, 2), Snapshot(5, 2, ConfState(("n1",)), b"s")),
            (HardState(3, None, 5), ents(13, 13, 3), Snapshot(13, 3)),  # entry <= snapshot
        ]:
            s.save(hs, es, snap)
            if snap is not None:
                mem.apply_snapshot(snap)
            mem.append(es)
            if hs is not None:
                mem.set_hard_state(hs)
            assert dump(s) == dump(mem)


def test_save_validates_before_writing(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.save(HardState(1, "a", 0), ents(1, 2, 1), Snapshot(5, 1))
        before = dump(s)
        with pytest.raises(SnapshotOutOfDateError):
            s.save(HardState(2), [], Snapshot(5, 1))
        with pytest.raises(UnavailableError):
            s.save(HardState(2), ents(8, 8, 2), Snapshot(6, 1))
        with pytest.raises(UnavailableError):
            s.save(HardState(2), ents(8, 8, 2))
        assert dump(s) == before


def test_hard_state_in_a_log_record_survives_truncating_that_record(tmp_path: Path) -> None:
    """The newest vote rode in entry 5's record; a new leader's entries then replace
    entry 5: the vote must not go back with it (it is copied to meta first)."""
    with LmdbStorage(tmp_path, sync=False) as s:
        s.save(HardState(1, "a", 0), ents(1, 4, 1))
        s.save(HardState(2, "b", 4), ents(5, 5, 2))  # rides in record 5
        s.append(ents(5, 6, 3))
        expect = dump(s)
    with LmdbStorage(tmp_path, sync=False) as s:
        assert dump(s) == expect
        assert s.hard_state == HardState(2, "b", 4)


def test_hard_state_in_a_log_record_survives_compacting_that_record(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.save(HardState(2, "b", 3), ents(1, 3, 2))  # rides in record 3
        s.save(None, ents(4, 6, 2))
        s.compact(5)  # drops record 3
    with LmdbStorage(tmp_path, sync=False) as s:
        assert s.hard_state == HardState(2, "b", 3)
        assert (s.first_index(), s.last_index(), s.term(5)) == (6, 6, 2)


def test_newest_hard_state_wins_between_meta_and_log(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.save(HardState(1, "a", 0), ents(1, 2, 1))  # log: version 1
        s.save(HardState(2, "b", 0), [])  # meta: version 2
        s.save(HardState(2, "b", 3), ents(3, 3, 2))  # log: version 3
        s.save(None, ents(4, 4, 2))  # newest record carries no hard state
    with LmdbStorage(tmp_path, sync=False) as s:
        assert s.hard_state == HardState(2, "b", 3)


def test_entries_older_than_the_tail_cache_come_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distsync.raft.lmdb_storage as mod

    monkeypatch.setattr(mod, "TAIL_ENTRIES", 4)
    mem = MemoryStorage()
    with LmdbStorage(tmp_path, sync=False) as s:
        for i in range(1, 40, 3):
            for x in (s, mem):
                x.append(ents(i, i + 2, 1 + i // 10, size=20))
        s.compact(5)
        mem.compact(5)
        assert len(s._tail) <= 8
        assert s.entries(6, 40) == mem.entries(6, 40)
        assert s.entries(7, 40, max_bytes=50) == mem.entries(7, 40, max_bytes=50)
        assert len(s.entries(7, 40, max_bytes=50)) == 2
    with LmdbStorage(tmp_path, sync=False) as s:
        assert s.entries(6, 40) == mem.entries(6, 40)


def test_max_bytes_limits_entries_from_the_tail_cache_as_limit_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries of varied sizes through appends, conflicting suffixes, trimming of the tail
    cache, compaction and a snapshot install: every ``entries(lo, hi, max_bytes)`` is
    MemoryStorage's."""
    import distsync.raft.lmdb_storage as mod

    monkeypatch.setattr(mod, "TAIL_ENTRIES", 6)
    mem = MemoryStorage()

    def batch(lo: int, hi: int, term: int) -> list[Entry]:
        return [Entry(term, i, data(i, term, (i * 7 + term) % 23)) for i in range(lo, hi + 1)]

    def check(s: LmdbStorage) -> None:
        first, last = mem.first_index(), mem.last_index()
        assert (s.first_index(), s.last_index()) == (first, last)
        for lo in range(first, last + 1):
            for hi in range(lo, last + 2):
                for mb in (None, 0, 1, 10, 22, 23, 40, 60, 100, 1000):
                    assert s.entries(lo, hi, mb) == mem.entries(lo, hi, mb), (lo, hi, mb)

    with LmdbStorage(tmp_path, sync=False) as s:
        steps: list[Callable[[Any], object]] = [
            lambda x: x.append(batch(1, 5, 1)),
            lambda x: x.append(batch(6, 9, 1)),
            lambda x: x.append(batch(4, 7, 2)),  # a conflicting suffix
            lambda x: x.append(batch(8, 20, 2)),  # trims the tail cache
            lambda x: x.append(batch(21, 21, 3)),
            lambda x: x.compact(17),
            lambda x: x.append(batch(19, 22, 4)),
            lambda x: x.compact(21),
            lambda x: x.apply_snapshot(Snapshot(30, 5, ConfState(("n1",)))),
            lambda x: x.append(batch(31, 36, 5)),
        ]
        for step in steps:
            step(s)
            step(mem)
            check(s)
    with LmdbStorage(tmp_path, sync=False) as s:
        check(s)


# ==== recovery ===============================================================================


def test_compaction_snapshot_and_reopen(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path) as s:
        s.save(HardState(1, "n1", 0), ents(1, 100, 1, size=64))
        s.save(HardState(1, "n1", 90), ents(101, 120, 1, size=64))
        snap = s.create_snapshot(90, ConfState(("n1", "n2", "n3")), b"sm@90")
        s.compact(90)
        expect = dump(s)
    with LmdbStorage(tmp_path) as s:
        assert dump(s) == expect
        assert s.snapshot() == snap
        assert (s.first_index(), s.last_index(), s.term(90)) == (91, 120, 1)
        s.save(HardState(2, "n2", 90), ents(121, 125, 2))
        s.apply_snapshot(Snapshot(200, 3, ConfState(("n2",)), b"sm@200"))
        s.save(HardState(3, "n2", 200), ents(201, 202, 3))
        expect = dump(s)
    with LmdbStorage(tmp_path) as s:
        assert dump(s) == expect
        assert sorted(os.listdir(tmp_path)) == ["log-1", "meta"]  # the old log is gone


def test_conflicting_suffix_truncation_and_reopen(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path) as s:
        s.save(HardState(1, "a", 2), ents(1, 10, 1))
        s.save(HardState(2, "b", 2), ents(3, 4, 2))  # drops 3..10 then writes 3..4
        expect = dump(s)
    with LmdbStorage(tmp_path) as s:
        assert dump(s) == expect
        assert s.entries(1, 5) == ents(1, 2, 1) + ents(3, 4, 2)
        s.append(ents(5, 6, 2))
        assert s.last_index() == 6


def test_an_existing_log_opens_in_the_format_found_on_disk(tmp_path: Path) -> None:
    """A node configured for the other format keeps its log as it is; only a new
    generation (a snapshot install) is made in the configured format."""
    other = "lmdb" if FORMAT[0] == "segments" else "segments"
    with LmdbStorage(tmp_path, log_format=FORMAT[0]) as s:
        s.save(HardState(2, "a", 1), ents(1, 5, 2))
        expect = dump(s)
    before = sorted(os.listdir(tmp_path / "log-0"))
    with LmdbStorage(tmp_path, log_format=other) as s:
        assert dump(s) == expect
        s.save(HardState(2, "a", 6), ents(6, 7, 2))
        s.apply_snapshot(Snapshot(20, 3, ConfState(("a", "b", "c"))))
    assert sorted(os.listdir(tmp_path)) == ["log-1", "meta"]
    names = os.listdir(tmp_path / "log-1")
    assert ("data.mdb" in names) == (other == "lmdb")
    assert ("data.mdb" in before) == (FORMAT[0] == "lmdb")
    with LmdbStorage(tmp_path, log_format=FORMAT[0]) as s:
        assert (s.first_index(), s.last_index()) == (21, 20)
        assert s.hard_state == HardState(2, "a", 6)


def test_interrupted_snapshot_install_leaves_the_old_log(tmp_path: Path) -> None:
    """A crash before the meta commit of an install leaves a half-made ``log-1``: meta
    still names ``log-0``, which is kept; the leftover is removed."""
    with LmdbStorage(tmp_path) as s:
        s.save(HardState(1, "a", 0), ents(1, 3, 1))
        expect = dump(s)
    with open_log(tmp_path / "log-1") as w:
        w.append([encode_entry(Entry(5, 50))])
    with LmdbStorage(tmp_path) as s:
        assert dump(s) == expect
    assert sorted(os.listdir(tmp_path)) == ["log-0", "meta"]


def test_records_encode_compactly() -> None:
    e = Entry(7, 123, b"payload", EntryKind.CONFIG)
    rec = encode_entry(e)
    assert len(rec) == 18 + len(b"payload")  # struct header + data, no pickle
    assert decode_entry(rec) == (e, None)
    hs = (9, HardState(7, "n2", 120))
    assert decode_entry(encode_entry(e, hs)) == (e, hs)


def test_framed_records_are_the_length_prefixed_records() -> None:
    es = [
        Entry(7, 123, b"payload", EntryKind.CONFIG),
        Entry(7, 124),
        Entry(8, 125, b"x" * 1000, EntryKind.NOOP),
    ]
    hs = (9, HardState(8, "n2", 124))

    def framed(recs: list[bytes]) -> bytes:
        return b"".join(len(r).to_bytes(4, "little") + r for r in recs)

    assert encode_framed(es) == framed([encode_entry(e) for e in es])
    want = framed([encode_entry(e) for e in es[:-1]] + [encode_entry(es[-1], hs)])
    assert encode_framed(es, hs) == want
    assert encode_framed(es[:1], hs) == framed([encode_entry(es[0], hs)])


# ==== crash durability: kill -9 right after save returns ======================================

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from distsync.raft.lmdb_storage import LmdbStorage
    from distsync.raft.types import ConfState, Entry, HardState, Snapshot

    path, step = sys.argv[1], sys.argv[2]
    s = LmdbStorage(path, sync=True)
    last = s.last_index()
    t = s.hard_state.term + 1
    if step == "entries":
        s.save(HardState(t, "me", last), [Entry(t, last + i, b"x" * 50) for i in (1, 2, 3)])
    elif step == "vote":
        s.save(HardState(t, "other", last), [])
    elif step == "conflict":
        s.save(HardState(t, "me", 1), [Entry(t, 2, b"replaced")])
    elif step == "compact":
        s.compact(last - 1)
    elif step == "snapshot":
        s.save(HardState(t, "me", last + 10), [Entry(t, last + 11, b"after")],
               Snapshot(last + 10, t, ConfState(("me", "other")), b"snap"))
    # Tell the parent what is now durable, then die without any cleanup.
    print(s.first_index(), s.last_index(), s.hard_state.term, s.hard_state.vote,
          s.hard_state.commit, s.term(s.last_index()), s.snapshot().index, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_child(path: Path, step: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), step],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    return p.stdout.split()


def state_line(s: LmdbStorage) -> list[str]:
    hs = s.hard_state
    last = s.last_index()
    return [
        str(v)
        for v in (
            s.first_index(),
            last,
            hs.term,
            hs.vote,
            hs.commit,
            s.term(last),
            s.snapshot().index,
        )
    ]


def test_kill_9_after_save_keeps_everything_saved(tmp_path: Path) -> None:
    path = tmp_path / "raft"
    for step in (
        "entries",
        "entries",
        "vote",
        "conflict",
        "entries",
        "compact",
        "snapshot",
        "entries",
        "vote",
    ):
        said = run_child(path, step)
        with LmdbStorage(path) as s:
            assert state_line(s) == said, step
            if step == "conflict":
                assert s.entries(2, 3)[0].data == b"replaced"


LOOP_CHILD = textwrap.dedent(
    """
    import sys
    from distsync.raft.lmdb_storage import LmdbStorage
    from distsync.raft.types import Entry, HardState

    s = LmdbStorage(sys.argv[1], sync=True)
    i = n = 0  # i: saves done (also the term), n: last index
    while True:
        i += 1
        # Vary the Ready: entries with a hard state, a vote alone, entries alone, compaction.
        if i % 7 == 0:
            s.save(HardState(i, f"v{i}", n), [])
        else:
            n += 1
            e = Entry(i, n, b"e%d" % n)
            s.save(None if i % 5 == 0 else HardState(i, "me", n - 1), [e])
        if i % 11 == 0:
            s.compact(n - 3)
        print(i, flush=True)
    """
)


def test_kill_9_at_any_moment_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The parent kills the child while it saves in a loop: every save the child
    reported done (as a node acknowledges after save returns) must be on disk."""
    path = tmp_path / "raft"
    env = dict(os.environ, PYTHONPATH=SRC)
    for rounds in (3, 17, 40):
        p = subprocess.Popen(
            [sys.executable, "-c", LOOP_CHILD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert p.stdout is not None
        done = 0
        for _ in range(rounds):
            done = int(p.stdout.readline())
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.stdout.close()
        with LmdbStorage(path) as s:
            appended = sum(1 for i in range(1, done + 1) if i % 7)
            assert s.last_index() >= appended  # nothing acknowledged is lost ...
            last_hs = max(i for i in range(1, done + 1) if i % 7 == 0 or i % 5)
            hs = s.hard_state
            assert hs.term >= last_hs  # ... neither the term nor the vote
            if hs.term == last_hs:
                assert hs.vote == (f"v{last_hs}" if last_hs % 7 == 0 else "me")
            for e in s.entries(s.first_index(), s.last_index() + 1):
                assert e.data == b"e%d" % e.index
        shutil.rmtree(path)


# ==== corruption =============================================================================


def flip_in(file: Path, needle: bytes, where: int = 3) -> None:
    raw = bytearray(file.read_bytes())
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "needle not unique in the file"
    raw[at + where] ^= 0x5A
    file.write_bytes(bytes(raw))


def test_damaged_entry_in_the_middle_stops_the_node(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.save(HardState(1, "a", 0), ents(1, 60, 1, size=100))  # one block, overflow pages
    flip_in(log_file(tmp_path / "log-0"), data(20, 1, 100))
    with pytest.raises(CorruptLogError) as info:
        LmdbStorage(tmp_path, sync=False)
    msg = str(info.value)
    assert info.value.path == str(log_file(tmp_path / "log-0"))
    # The Wal checksums each record; a segment log each append (the save above is one).
    first_bad = 20 if FORMAT[0] == "lmdb" else 1
    assert f"Raft log entry {first_bad}" in msg and "cannot start" in msg


def test_record_with_a_wrong_index_stops_the_node(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.append(ents(1, 3, 1))
    with open_log(tmp_path / "log-0") as w:  # intact checksum, wrong content
        w.append([encode_entry(Entry(1, 9))])
    with pytest.raises(CorruptLogError, match=r"record 5 \(Raft log entry 4\) holds index 9"):
        LmdbStorage(tmp_path, sync=False)


def test_decreasing_term_in_the_log_stops_the_node(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.append(ents(1, 3, 2))
    with open_log(tmp_path / "log-0") as w:
        w.append([encode_entry(Entry(1, 4))])
    with pytest.raises(CorruptLogError, match="term 1 after term 2"):
        LmdbStorage(tmp_path, sync=False)


def test_damaged_hard_state_stops_the_node(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.set_hard_state(HardState(7, "voted-for-n9", 0))
    flip_in(tmp_path / "meta" / "data.mdb", b"voted-for-n9")
    with pytest.raises(CorruptLogError, match="state record is damaged") as info:
        LmdbStorage(tmp_path, sync=False)
    assert info.value.path == str(tmp_path / "meta" / "data.mdb")


def test_missing_log_stops_the_node(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False) as s:
        s.append(ents(1, 3, 1))
    shutil.rmtree(tmp_path / "log-0")
    with pytest.raises(CorruptLogError, match="log of generation 0 is missing"):
        LmdbStorage(tmp_path, sync=False)


def test_snapshot_larger_than_the_initial_map(tmp_path: Path) -> None:
    """The meta environment grows for a big state-machine snapshot (lock tables are)."""
    big = os.urandom(3 << 20)
    with LmdbStorage(tmp_path, sync=False) as s:
        s.append(ents(1, 2, 1))
        s.create_snapshot(2, ConfState(("a",)), big)
    with LmdbStorage(tmp_path, sync=False) as s:
        assert s.snapshot().data == big


def test_second_open_in_one_process_is_refused(tmp_path: Path) -> None:
    with LmdbStorage(tmp_path, sync=False):
        with pytest.raises(StorageError, match="already open"):
            LmdbStorage(tmp_path, sync=False)


def test_closed_storage_refuses_writes(tmp_path: Path) -> None:
    s = LmdbStorage(tmp_path, sync=False)
    s.close()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.append(ents(1, 1, 1))


def test_lmdb_storage_is_a_storage() -> None:
    """Static conformance to the Protocol: mypy checks this assignment."""

    def as_storage(s: LmdbStorage) -> Storage:
        return s

    assert as_storage is not None


# ==== hypothesis: LmdbStorage against MemoryStorage ==========================================


class StorageAgainstOracle(RuleBasedStateMachine):
    """Random writes and restarts; LmdbStorage must always look exactly like the oracle.
    Generated logs keep Raft's invariant (terms never decrease along the log)."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="raft-lmdb-")
        self.mem = MemoryStorage()
        self.lmdb = LmdbStorage(self.dir, sync=False)
        self.serial = 0

    def teardown(self) -> None:
        self.lmdb.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _entries(self, lo: int, n: int, bump: int) -> list[Entry]:
        base = max(1, self.mem.term(lo - 1))
        out = []
        for i in range(lo, lo + n):
            self.serial += 1
            out.append(Entry(base + bump, i, b"d%d" % self.serial))
        return out

    def _both(self, fn: Callable[[AnyStorage], object]) -> None:
        errs: list[type[Exception] | None] = []
        for s in (self.mem, self.lmdb):
            try:
                fn(s)
                errs.append(None)
            except Exception as exc:  # noqa: BLE001 - compared across the two
                errs.append(type(exc))
        assert errs[0] == errs[1]

    @rule(back=st.integers(0, 4), n=st.integers(1, 5), bump=st.integers(0, 2))
    def append(self, back: int, n: int, bump: int) -> None:
        lo = max(self.mem.first_index(), self.mem.last_index() + 1 - back)
        es = self._entries(lo, n, bump)
        self._both(lambda s: s.append(es))

    @rule(
        back=st.integers(0, 3),
        n=st.integers(0, 4),
        term=st.integers(0, 3),
        vote=st.sampled_from([None, "a", "b"]),
        commit=st.integers(0, 30),
    )
    def save(self, back: int, n: int, term: int, vote: str | None, commit: int) -> None:
        lo = max(self.mem.first_index(), self.mem.last_index() + 1 - back)
        es = self._entries(lo, n, 0)
        hs = HardState(self.mem.hard_state.term + term, vote, commit)
        self.lmdb.save(hs, es)
        self.mem.append(es)
        self.mem.set_hard_state(hs)

    @rule(ahead=st.integers(-3, 5), n=st.integers(0, 3), vote=st.sampled_from([None, "a"]))
    def save_with_snapshot(self, ahead: int, n: int, vote: str | None) -> None:
        i = max(1, self.mem.last_index() + ahead)
        term = self.mem.term(self.mem.last_index()) + 1
        snap = Snapshot(i, term, ConfState(("a", "b")), b"snap%d" % i)
        es = [Entry(term, j, b"s%d" % j) for j in range(i - 1, i + n + 1)]  # one <= snap
        hs = HardState(self.mem.hard_state.term + 1, vote, i)
        if i <= self.mem.snapshot().index:
            with pytest.raises(SnapshotOutOfDateError):
                self.lmdb.save(hs, es, snap)
            return
        self.lmdb.save(hs, es, snap)
        self.mem.apply_snapshot(snap)
        self.mem.append(es)
        self.mem.set_hard_state(hs)

    @rule(k=st.integers(0, 6))
    def compact(self, k: int) -> None:
        i = self.mem.first_index() + k
        self._both(lambda s: s.compact(i))

    @rule(k=st.integers(0, 6), data=st.binary(max_size=20))
    def create_snapshot(self, k: int, data: bytes) -> None:
        i = self.mem.snapshot().index + 1 + k
        conf = ConfState(("a", "b"), ("c",) if k % 2 else ())
        self._both(lambda s: s.create_snapshot(i, conf, data))

    @rule(ahead=st.integers(-3, 5), bump=st.integers(0, 2))
    def apply_snapshot(self, ahead: int, bump: int) -> None:
        i = max(1, self.mem.last_index() + ahead)
        snap = Snapshot(i, self.mem.term(self.mem.last_index()) + bump or 1, ConfState(("a",)))
        self._both(lambda s: s.apply_snapshot(snap))

    @rule()
    def reopen(self) -> None:
        self.lmdb.close()
        self.lmdb = LmdbStorage(self.dir, sync=False)

    @precondition(lambda self: self.mem.last_index() >= self.mem.first_index())
    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        first, last = self.mem.first_index(), self.mem.last_index()
        lo = data.draw(st.integers(first - 1, last + 1))
        hi = data.draw(st.integers(lo, last + 2))
        mb = data.draw(st.none() | st.integers(0, 10))
        got: list[list[Entry] | type[Exception]] = []
        for s in (self.mem, self.lmdb):
            try:
                got.append(s.entries(lo, hi, mb))
            except Exception as exc:  # noqa: BLE001
                got.append(type(exc))
        assert got[0] == got[1]

    @invariant()
    def same(self) -> None:
        assert dump(self.lmdb) == dump(self.mem)


def test_storage_against_oracle() -> None:
    """Runs once per log format (the autouse ``log_format`` fixture)."""
    run_state_machine_as_test(
        StorageAgainstOracle,
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None),
    )
