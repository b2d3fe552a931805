"""Durable Raft storage: the log in segment files (or the ``wal`` kernel), hard state and
snapshot beside it in LMDB.

:class:`LmdbStorage` implements the :class:`~distsync.raft.storage.Storage` Protocol with
the same semantics and errors as :class:`~distsync.raft.storage.MemoryStorage`, plus the
write side a driver uses while handling a Ready. Every write method returns only once
what it wrote is durable (with ``sync=True``): a vote or an acknowledgement may leave the
node as soon as :meth:`LmdbStorage.save` returns (the Ready contract, step 1).

Layout of ``data_dir``
======================

``log-<gen>/``
    The log of generation ``gen``: a :class:`~distsync.raft.segment_log.SegmentLog`
    (``log_format="segments"``, the default: one flush per durable append) or a
    :class:`~distsync._core.wal.Wal` (``log_format="lmdb"``: its own LMDB environment,
    two ordered flushes per commit). Both have the same API and guarantees; an existing
    log is opened in the format found on disk, a new generation is made in the configured
    one. Record ``seq`` is Raft entry ``seq + base``; ``base`` is fixed for
    the life of a generation (``-1`` for generation 0, so entry 0 is seq 1). The first
    record is always the *dummy*: the entry at the compaction point, whose term answers
    ``term(first_index() - 1)`` -- the same trick as MemoryStorage's ``_ents[0]``. It
    makes compaction a single ``truncate_prefix`` (one commit, nothing to repair after a
    crash), and the first entry after a snapshot simply continues the sequence.
``meta/``
    A second, small LMDB environment (the Wal's environment has room for its own two
    databases only). Key ``state``: generation, base, hard state and its version;
    key ``snap``: the latest snapshot (metadata + data). Both values carry an xxh3
    checksum: LMDB has none, and a damaged vote must stop the node, not be trusted.

Record format (one Wal record per entry, little-endian)::

    u64 term | u64 index | u8 kind | u8 flags | [hard state if flags & 1] | data
    hard state = u64 version | u64 term | u64 commit | u8 has_vote | u16 len | vote

Why a hard state can ride in a log record
=========================================
A save holding entries *and* a new hard state (the common case: a leader's commit moves
with every batch; a follower's term changes with the first append of a new leader) costs
one durable Wal commit: the hard state is appended as a trailer of the batch's last record.
Hard states are numbered (``version``, strictly increasing); recovery takes the newest of
the ``meta`` copy and every trailer in the log. That is exact as long as no operation
deletes the record holding the newest hard state while ``meta`` is older, so every
deleting operation (suffix truncation, compaction, snapshot install) first copies the
current hard state into ``meta`` when ``meta`` lags (:meth:`LmdbStorage._flush_meta`). A
save with a hard state and no entries (a vote, a commit learnt from a heartbeat) is one
``meta`` commit.

Costs in durable commits (a log commit: one fdatasync for segments, two ordered flushes for
an LMDB Wal; a ``meta`` commit: LMDB's two):
entries (+ hard state): 1; hard state alone: 1; entries conflicting with the stored tail:
2 (truncate, append), plus 1 if ``meta`` lags; compaction: 1 (+1 if ``meta`` lags);
snapshot install (rare): 3 (the new Wal's creation, its records, ``meta``) plus two
directory fsyncs. The conflict case could be one commit if the Wal offered "truncate the
suffix and append" in one transaction; it is rare (a leader change with a divergent tail).

Snapshot install: a new generation
==================================
A snapshot from the leader replaces the whole log, and its index may lie beyond our last
entry, where a Wal cannot place its first record. So the log moves to a new generation:
``log-<gen+1>`` is created holding the dummy ``(snap.term, snap.index)`` and any entries
after it, made durable (with the directory entries), and only then does one ``meta``
commit switch ``gen`` and record the snapshot. That commit is the atomic switch point: a
crash before it leaves ``meta`` on the old generation (the new directory is removed at the
next open), a crash after it leaves a stale old directory (removed at the next open).

Recovery
========
Opening reads ``meta``, opens ``log-<gen>`` (the Wal verifies every record's checksum,
cuts a torn tail and raises :class:`~distsync.errors.CorruptLogError` for damage in the
middle), then decodes every record: its index must be ``seq + base`` and terms must not
decrease. Any failure raises CorruptLogError naming the file and the Raft index: the node
must stop rather than serve or vote from a log it cannot trust.

Not thread-safe: the driver that owns the Raft core owns its storage.
"""

from __future__ import annotations

import os
import shutil
import struct
from array import array
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import lmdb
from xxhash import xxh3_64_intdigest

from distsync._core._wal_py import open_env, preflight, storage_error
from distsync._core.wal import Wal
from distsync.errors import CorruptLogError
from distsync.raft.segment_log import SEGMENT_BYTES, SegmentLog
from distsync.raft.storage import (
    CompactedError,
    SnapshotOutOfDateError,
    UnavailableError,
    limit_size,
)
from distsync.raft.types import EMPTY_HARD_STATE, ConfState, Entry, EntryKind, HardState, Snapshot

__all__ = [
    "LOG_FORMATS",
    "LmdbStorage",
    "check_log_format",
    "encode_entry",
    "encode_framed",
    "decode_entry",
]

_T = TypeVar("_T")

_ENTRY = struct.Struct("<QQBB")  # term, index, kind, flags
# A record framed in a segment chunk's body: u32 record length, then the entry header.
_FRAMED = struct.Struct("<IQQBB")
_HS = struct.Struct("<QQQBH")  # version, term, commit, has_vote, vote length
_STATE = struct.Struct("<Qq")  # generation, base (seq + base == index)
_SNAP = struct.Struct("<QQHH")  # index, term, number of voters, number of learners
_NAME = struct.Struct("<H")
_CHECK = struct.Struct("<Q")
_F_HARD_STATE = 1
_KINDS = {int(k): k for k in EntryKind}

_META_MAP_SIZE = 1 << 20
#: The formats a log generation can be stored in (see the module docstring).
LOG_FORMATS = ("segments", "lmdb")
_Log = Wal | SegmentLog


def check_log_format(log_format: str) -> None:
    """ValueError naming the choices unless ``log_format`` is one of :data:`LOG_FORMATS`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


#: Recent entries kept decoded in memory: a leader re-reads its newest entries for every
#: follower's AppendEntries, which must not cost an LMDB read each time.
TAIL_ENTRIES = 4096


# -- codecs ----------------------------------------------------------------------------------


def _encode_hs(version: int, hs: HardState) -> bytes:
    vote = b"" if hs.vote is None else hs.vote.encode()
    return _HS.pack(version, hs.term, hs.commit, hs.vote is not None, len(vote)) + vote


def _decode_hs(buf: bytes, pos: int) -> tuple[int, HardState, int]:
    """``(version, hard state, position after it)``; struct.error/ValueError if damaged."""
    version, term, commit, has_vote, n = _HS.unpack_from(buf, pos)
    pos += _HS.size
    if pos + n > len(buf):
        raise ValueError("vote runs past the end")
    vote = buf[pos : pos + n].decode() if has_vote else None
    return version, HardState(term, vote, commit), pos + n


def encode_entry(e: Entry, hs: tuple[int, HardState] | None = None) -> bytes:
    """The Wal record of ``e``, with ``hs = (version, hard state)`` as a trailer if given."""
    if hs is None:
        return _ENTRY.pack(e.term, e.index, e.kind, 0) + e.data
    return _ENTRY.pack(e.term, e.index, e.kind, _F_HARD_STATE) + _encode_hs(*hs) + e.data


def encode_framed(ents: list[Entry], hs: tuple[int, HardState] | None = None) -> bytes:
    """The records of ``ents`` (``hs`` as the last one's trailer if given) framed as a
    segment chunk's body: ``b"".join(u32 len(r) + r for r in records)``, built in one pass
    (see :meth:`~distsync.raft.segment_log.SegmentLog.append_framed`)."""
    pack = _FRAMED.pack
    size = _ENTRY.size
    parts: list[bytes] = []
    add = parts.append
    for e in ents[:-1] if hs is not None else ents:
        d = e.data
        add(pack(size + len(d), e.term, e.index, e.kind, 0))
        add(d)
    if hs is not None:
        e = ents[-1]
        trailer = _encode_hs(*hs)
        add(pack(size + len(trailer) + len(e.data), e.term, e.index, e.kind, _F_HARD_STATE))
        add(trailer)
        add(e.data)
    return b"".join(parts)


def decode_entry(rec: bytes) -> tuple[Entry, tuple[int, HardState] | None]:
    """Inverse of :func:`encode_entry`; struct.error/ValueError/KeyError if malformed."""
    term, index, kind, flags = _ENTRY.unpack_from(rec, 0)
    pos = _ENTRY.size
    hs = None
    if flags & _F_HARD_STATE:
        version, st, pos = _decode_hs(rec, pos)
        hs = (version, st)
    elif flags:
        raise ValueError(f"unknown flags {flags:#x}")
    return Entry(term, index, rec[pos:], _KINDS[kind]), hs


def _checked(body: bytes) -> bytes:
    return body + _CHECK.pack(xxh3_64_intdigest(body))


def _unchecked(raw: bytes) -> bytes | None:
    """The body of a checksummed value, or None if the checksum fails."""
    if len(raw) < _CHECK.size:
        return None
    body = raw[: -_CHECK.size]
    return body if _CHECK.unpack(raw[-_CHECK.size :])[0] == xxh3_64_intdigest(body) else None


def _encode_snapshot(s: Snapshot) -> bytes:
    parts = [_SNAP.pack(s.index, s.term, len(s.conf.voters), len(s.conf.learners))]
    for name in s.conf.voters + s.conf.learners:
        b = name.encode()
        parts.append(_NAME.pack(len(b)) + b)
    parts.append(s.data)
    return _checked(b"".join(parts))


def _decode_snapshot(body: bytes) -> Snapshot:
    index, term, nv, nl = _SNAP.unpack_from(body, 0)
    pos = _SNAP.size
    names = []
    for _ in range(nv + nl):
        (n,) = _NAME.unpack_from(body, pos)
        pos += _NAME.size
        if pos + n > len(body):
            raise ValueError("member name runs past the end")
        names.append(body[pos : pos + n].decode())
        pos += n
    conf = ConfState(tuple(names[:nv]), tuple(names[nv:]))
    return Snapshot(index, term, conf, body[pos:])


def _fsync_dir(path: str) -> None:
    """Make a directory's entries (a newly created subdirectory or file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the storage -----------------------------------------------------------------------------


class LmdbStorage:
    """Raft storage on LMDB: the :class:`~distsync.raft.storage.Storage` Protocol, the
    write methods of MemoryStorage, and :meth:`save` for a whole Ready.

    Invariants (in memory, mirrored on disk): ``_terms[i - _dummy]`` is the term of entry
    ``i`` for ``_dummy <= i <= _last``, where ``_dummy == first_index() - 1`` is the
    compaction point held by the Wal's first record (8 bytes per retained entry: every
    term is cached, so ``term(i)`` never reads the disk); ``_tail`` holds the last
    ``len(_tail)`` entries (all ``>= first_index()``); ``_version`` numbers the current
    hard state and ``_meta_version <= _version`` the one stored in ``meta``.

    :param data_dir: directory of the storage (created if missing).
    :param sync: True: every write is durable when it returns. False: no fsync (tests,
        simulations); consistent after a process crash, not after an OS crash.
    :param log_format: ``"segments"`` or ``"lmdb"``: how a new log generation is stored
        (an existing one is opened as found).
    :param segment_bytes: size of each segment file (``"segments"`` only).
    :raises CorruptLogError: the log or the metadata is damaged (names file and index).
    :raises StorageError: LMDB failed otherwise (e.g. the storage is open twice).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        sync: bool = True,
        *,
        log_format: str = "segments",
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        check_log_format(log_format)
        self._dir = os.fspath(data_dir)
        self._sync = sync
        self._log_format = log_format
        self._segment_bytes = segment_bytes
        os.makedirs(self._dir, exist_ok=True)
        self._meta_path = os.path.join(self._dir, "meta")
        self._meta_file = os.path.join(self._meta_path, "data.mdb")
        self._env: Any = None
        self._wal: _Log | None = None
        self._gen = 0
        self._base = -1
        self._hs = EMPTY_HARD_STATE
        self._version = 0
        self._meta_version = 0
        self._snapshot = Snapshot()
        self._terms = array("Q")
        self._dummy = 0
        self._last = 0
        self._tail: list[Entry] = []
        preflight(self._meta_file, repair=True)
        self._env = open_env(self._meta_path, self._meta_file, _META_MAP_SIZE, sync, False)
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _log_path(self, gen: int) -> str:
        return os.path.join(self._dir, f"log-{gen}")

    def _recover(self) -> None:
        with self._env.begin() as txn:
            raw_state = txn.get(b"state")
            raw_snap = txn.get(b"snap")
        if raw_state is None:
            # A new storage (or one whose first open crashed before writing ``state``:
            # then log-0 holds at most the dummy, which is reused).
            self._wal = self._open_wal(0)
            if self._wal.last_seq == 0:
                self._wal.append([encode_entry(Entry(0, 0))])
            self._load_log()
            if self._last != 0:
                raise self._meta_corrupt("the state record is missing but the log is not empty")
            self._write_meta()
            if self._sync:
                # The directories were just created: make their names durable too, or an
                # OS crash could lose a log whose contents were synced.
                for d in (self._log_path(0), self._meta_path, self._dir):
                    _fsync_dir(d)
        else:
            body = _unchecked(bytes(raw_state))
            try:
                if body is None:
                    raise ValueError("checksum mismatch")
                self._gen, self._base = _STATE.unpack_from(body, 0)
                version, self._hs, end = _decode_hs(body, _STATE.size)
                if end != len(body):
                    raise ValueError("trailing bytes")
            except (struct.error, ValueError) as exc:
                raise self._meta_corrupt(f"the state record is damaged ({exc})") from None
            self._version = self._meta_version = version
            if raw_snap is not None:
                snap_body = _unchecked(bytes(raw_snap))
                try:
                    if snap_body is None:
                        raise ValueError("checksum mismatch")
                    self._snapshot = _decode_snapshot(snap_body)
                except (struct.error, ValueError) as exc:
                    raise self._meta_corrupt(f"the snapshot record is damaged ({exc})") from None
            if not os.path.isdir(self._log_path(self._gen)):
                raise CorruptLogError(
                    f"{self._log_path(self._gen)}: the log of generation {self._gen} is "
                    "missing; the node cannot start",
                    self._log_path(self._gen),
                    0,
                )
            self._wal = self._open_wal(self._gen)
            self._load_log()
        # Other generations are leftovers of an interrupted snapshot install (see the
        # module docstring): never referenced by ``meta``, safe to delete.
        for name in os.listdir(self._dir):
            if name.startswith("log-") and name != f"log-{self._gen}":
                shutil.rmtree(os.path.join(self._dir, name), ignore_errors=True)

    def _new_log(self, path: str) -> _Log:
        """Open (or create) the log at ``path``: in the format found there, else in the
        configured one."""
        if os.path.exists(os.path.join(path, "data.mdb")):
            return Wal(path, self._sync)
        if self._log_format == "lmdb" and not (
            os.path.isdir(path) and any(n.startswith("seg-") for n in os.listdir(path))
        ):
            return Wal(path, self._sync)
        return SegmentLog(path, self._sync, segment_bytes=self._segment_bytes)

    def _open_wal(self, gen: int) -> _Log:
        path = self._log_path(gen)
        try:
            return self._new_log(path)
        except CorruptLogError as exc:
            # Name the Raft index, not just the Wal's sequence number (0: no record is
            # to blame, the file itself is damaged).
            where = f" (Raft log entry {exc.seq + self._base})" if exc.seq else ""
            raise CorruptLogError(
                f"{exc}{where}; the node cannot start", exc.path, exc.seq
            ) from exc

    def _load_log(self) -> None:
        """Rebuild the term cache, the tail and the hard state from the Wal's records."""
        assert self._wal is not None
        wal = self._wal
        terms = array("Q")
        tail: list[Entry] = []
        expect = wal.first_seq + self._base  # the index the next record must hold
        prev_term = 0
        for seq, rec in wal.scan():
            try:
                e, hs = decode_entry(rec)
            except (struct.error, ValueError, KeyError, UnicodeDecodeError) as exc:
                raise self._log_corrupt(seq, f"cannot be decoded ({exc})") from None
            if e.index != expect:
                raise self._log_corrupt(seq, f"holds index {e.index}")
            if e.term < prev_term:
                raise self._log_corrupt(seq, f"has term {e.term} after term {prev_term}")
            if hs is not None and hs[0] > self._version:
                self._version, self._hs = hs
            terms.append(e.term)
            tail.append(e)
            if len(tail) > 2 * TAIL_ENTRIES:
                del tail[:TAIL_ENTRIES]
            prev_term = e.term
            expect += 1
        if not terms:
            # Every generation is born holding its dummy, durably, before ``meta`` names it.
            raise CorruptLogError(
                f"{wal.path}: the log has no records (its compaction point is lost); "
                "the node cannot start",
                wal.path,
                wal.first_seq,
            )
        self._terms = terms
        self._dummy = wal.first_seq + self._base
        self._last = self._dummy + len(terms) - 1
        if tail and tail[0].index == self._dummy:
            del tail[0]  # the dummy is not a servable entry
        self._tail = tail[-TAIL_ENTRIES:]

    def _log_corrupt(self, seq: int, what: str) -> CorruptLogError:
        assert self._wal is not None
        return CorruptLogError(
            f"{self._wal.path}: record {seq} (Raft log entry {seq + self._base}) {what}; "
            "the node cannot start",
            self._wal.path,
            seq,
        )

    def _meta_corrupt(self, what: str) -> CorruptLogError:
        return CorruptLogError(
            f"{self._meta_file}: {what}; the node cannot start", self._meta_file, 0
        )

    # -- meta writes -------------------------------------------------------------------------

    def _meta_write(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(txn)`` in one ``meta`` write transaction: one durable commit. On "map
        full" the map is doubled and ``fn`` run again (it must not change ``self``)."""
        self._check_open()
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._env.set_mapsize(2 * self._env.info()["map_size"])
            except lmdb.Error as exc:
                raise storage_error(exc, self._meta_file) from exc

    def _write_meta(
        self,
        gen: int | None = None,
        base: int | None = None,
        hs: tuple[int, HardState] | None = None,
        snap: Snapshot | None = None,
    ) -> None:
        """Store ``state`` (and ``snap`` if given) in one durable commit; the arguments
        default to the current values. Updates ``self`` only once the commit is done."""
        gen = self._gen if gen is None else gen
        base = self._base if base is None else base
        version, st = (self._version, self._hs) if hs is None else hs
        state = _checked(_STATE.pack(gen, base) + _encode_hs(version, st))
        snap_raw = None if snap is None else _encode_snapshot(snap)

        def put(txn: Any) -> None:
            txn.put(b"state", state)
            if snap_raw is not None:
                txn.put(b"snap", snap_raw)

        self._meta_write(put)
        self._gen, self._base = gen, base
        self._version = self._meta_version = version
        self._hs = st
        if snap is not None:
            self._snapshot = snap

    def _flush_meta(self) -> None:
        """Copy the current hard state into ``meta`` if only a log record holds it: the
        caller is about to delete records (see "Why a hard state can ride in a log
        record" in the module docstring)."""
        if self._meta_version < self._version:
            self._write_meta()

    # -- the Storage protocol ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hs, self._snapshot.conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo <= self._dummy:
            raise CompactedError(f"entries({lo}, {hi}): compacted up to {self._dummy}")
        if hi > self._last + 1:
            raise UnavailableError(f"entries({lo}, {hi}): last index is {self._last}")
        if lo >= hi:
            return []
        tail = self._tail
        if tail and lo >= tail[0].index:
            t0 = tail[0].index
            return limit_size(tail[lo - t0 : hi - t0], max_bytes)
        return self._read(lo, hi, max_bytes)

    def _read(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """Entries ``[lo, hi)`` from the Wal (older than the tail cache)."""
        assert self._wal is not None
        out: list[Entry] = []
        size = 0
        for seq, rec in self._wal.scan(lo - self._base):
            try:
                e, _ = decode_entry(rec)
            except (struct.error, ValueError, KeyError, UnicodeDecodeError) as exc:
                raise self._log_corrupt(seq, f"cannot be decoded ({exc})") from None
            if e.index != seq + self._base:
                raise self._log_corrupt(seq, f"holds index {e.index}")
            if e.index >= hi:
                break
            size += len(e.data)
            # limit_size's rule: always the first entry, then while the sum fits.
            if max_bytes is not None and out and size > max_bytes:
                break
            out.append(e)
        return out

    def term(self, i: int) -> int:
        # O(1) from the in-memory term array: the core asks on every append it checks.
        if i < self._dummy:
            raise CompactedError(f"term({i}): compacted up to {self._dummy}")
        if i > self._last:
            raise UnavailableError(f"term({i}): last index is {self._last}")
        return self._terms[i - self._dummy]

    def first_index(self) -> int:
        return self._dummy + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes, done by the driver -------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hs

    @property
    def path(self) -> str:
        """The data directory."""
        return self._dir

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready's ``snapshot``, ``entries`` and ``hard_state`` (each may be
        absent), durably, before the driver sends its messages.

        Same effect as ``apply_snapshot``, ``append``, ``set_hard_state`` in that order,
        in fewer commits: entries with a hard state are one commit (the hard state rides
        in the last record); a snapshot with entries and hard state is one new log plus
        one ``meta`` commit. Raises before writing anything if the arguments are invalid.
        """
        self._check_open()
        if snapshot is not None:
            if snapshot.index <= self._snapshot.index:
                raise SnapshotOutOfDateError(
                    f"snapshot at {snapshot.index} is not newer than {self._snapshot.index}"
                )
            ents = [e for e in entries if e.index > snapshot.index]
            if ents and ents[0].index != snapshot.index + 1:
                raise UnavailableError(
                    f"append at {ents[0].index}: missing entries after {snapshot.index}"
                )
            self._install(snapshot, ents, hard_state)
            return
        hs_changed = hard_state is not None and hard_state != self._hs
        ents = self._trim(entries)
        if ents:
            self._append(ents, hard_state if hs_changed else None)
        elif hs_changed:
            assert hard_state is not None
            self._write_meta(hs=(self._version + 1, hard_state))

    def set_hard_state(self, hs: HardState) -> None:
        """Persist ``hs`` (one durable commit; none if unchanged)."""
        self.save(hs, [])

    def append(self, ents: list[Entry]) -> None:
        """Write ``ents``, replacing any stored entries from ``ents[0].index`` on (a new
        leader's entries overwrite a divergent tail). Entries already compacted are
        skipped; a gap after the last index raises UnavailableError."""
        self._check_open()
        ents = self._trim(ents)
        if ents:
            self._append(ents, None)

    def _trim(self, ents: list[Entry]) -> list[Entry]:
        """``ents`` without the compacted prefix; UnavailableError on a gap."""
        if not ents:
            return ents
        first = self._dummy + 1
        if ents[-1].index < first:
            return []  # all of it is already in the snapshot
        if ents[0].index < first:
            ents = ents[first - ents[0].index :]
        if ents[0].index > self._last + 1:
            raise UnavailableError(f"append at {ents[0].index}: missing entries after {self._last}")
        return ents

    def _append(self, ents: list[Entry], hs: HardState | None) -> None:
        """Truncate the conflicting tail if any, then append ``ents`` (contiguous, starting
        at most one past the last index) in one durable commit, with ``hs`` riding in the
        last record."""
        assert self._wal is not None
        lo = ents[0].index
        if lo <= self._last:
            # Records from lo on are deleted, and the newest hard state may live in one.
            self._flush_meta()
            self._wal.truncate_suffix(lo - self._base)
            del self._terms[lo - self._dummy :]
            self._last = lo - 1
            tail = self._tail
            if tail and tail[0].index >= lo:
                tail.clear()
            elif tail:
                del tail[lo - tail[0].index :]
        version = self._version + 1
        trailer = None if hs is None else (version, hs)
        wal = self._wal
        if type(wal) is SegmentLog:
            # Each record framed once, straight into the chunk body.
            wal.append_framed(encode_framed(ents, trailer), len(ents))
        else:
            recs = [encode_entry(e) for e in ents[:-1]]
            recs.append(encode_entry(ents[-1], trailer))
            wal.append(recs)
        # Durable: now update the in-memory view.
        if hs is not None:
            self._version, self._hs = version, hs
        term = ents[0].term
        if ents[-1].term == term:
            # Terms never decrease along a log: the whole batch is of one term.
            self._terms.extend(array("Q", (term,)) * len(ents))
        else:
            self._terms.extend([e.term for e in ents])
        self._last = ents[-1].index
        self._tail.extend(ents)
        if len(self._tail) > 2 * TAIL_ENTRIES:
            del self._tail[:-TAIL_ENTRIES]

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing the leader's)."""
        self._check_open()
        if snap.index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.index} is not newer than {self._snapshot.index}"
            )
        self._install(snap, [], None)

    def _install(self, snap: Snapshot, ents: list[Entry], hs: HardState | None) -> None:
        """Move to a new log generation holding ``snap``'s dummy and ``ents`` (which start
        at ``snap.index + 1``), and switch ``meta`` to it with ``snap`` and ``hs`` in one
        commit (the switch point: see the module docstring)."""
        gen = self._gen + 1
        path = self._log_path(gen)
        shutil.rmtree(path, ignore_errors=True)  # a leftover of an interrupted install
        wal = self._new_log(path)
        try:
            base = snap.index - 1  # the dummy is seq 1
            dummy = Entry(snap.term, snap.index)
            wal.append([encode_entry(dummy)] + [encode_entry(e) for e in ents])
            if self._sync:
                # The Wal's commit made its file contents durable, not the new names.
                _fsync_dir(path)
                _fsync_dir(self._dir)
            if hs is None or hs == self._hs:
                self._write_meta(gen, base, None, snap)
            else:
                self._write_meta(gen, base, (self._version + 1, hs), snap)
        except BaseException:
            wal.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        old, self._wal = self._wal, wal
        if old is not None:
            old.close()
            shutil.rmtree(self._log_path(gen - 1), ignore_errors=True)
        self._dummy = snap.index
        self._terms = array("Q", [snap.term])
        self._terms.extend(e.term for e in ents)
        self._last = snap.index + len(ents)
        self._tail = list(ents[-TAIL_ENTRIES:])

    def create_snapshot(
        self, index: int, conf: ConfState | None = None, data: bytes = b""
    ) -> Snapshot:
        """Record the state machine as of applied ``index`` as the latest snapshot (the log
        is kept; :meth:`compact` drops it). One durable commit."""
        self._check_open()
        if index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.index}"
            )
        if index > self._last:
            raise UnavailableError(f"snapshot at {index}: last index is {self._last}")
        if conf is None:
            conf = self._snapshot.conf
        snap = Snapshot(index, self.term(index), conf, data)
        self._write_meta(snap=snap)
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index``; entry ``index`` stays as the dummy
        (its term answers ``term(first_index() - 1)``). One durable commit."""
        self._check_open()
        assert self._wal is not None
        if index <= self._dummy:
            raise CompactedError(f"compact({index}): already compacted up to {self._dummy}")
        if index > self._last:
            raise UnavailableError(f"compact({index}): last index is {self._last}")
        self._flush_meta()  # records about to go may hold the newest hard state
        self._wal.truncate_prefix(index - 1 - self._base)
        del self._terms[: index - self._dummy]
        self._dummy = index
        tail = self._tail
        if tail and tail[0].index <= index:
            del tail[: index + 1 - tail[0].index]

    # -- lifecycle -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._env is None:
            raise ValueError("operation on a closed LmdbStorage")

    def sync(self) -> None:
        """Force everything written so far to disk (for ``sync=False`` storages)."""
        self._check_open()
        assert self._wal is not None
        self._wal.sync()
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise storage_error(exc, self._meta_file) from exc

    def close(self) -> None:
        """Close the storage; further writes raise ValueError. Idempotent."""
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> LmdbStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._env is None:
            return f"LmdbStorage({self._dir!r}, closed)"
        return f"LmdbStorage({self._dir!r}, [{self._dummy + 1}, {self._last}], {self._hs})"
