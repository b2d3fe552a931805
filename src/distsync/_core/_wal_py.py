"""Append-only log over LMDB with per-record checksums (pure-Python twin of ``_wal_c``).

On-disk format (shared with the compiled twin; both read each other's files)
============================================================================

The log is an LMDB environment (directory ``path``: ``data.mdb`` + ``lock.mdb``)
opened with LMDB 0.9.x through the ``lmdb`` package, with two sub-databases:

``log``
    key: the first sequence number of a *block*, 8 bytes big-endian (so LMDB's
    byte order is numeric order and appends are ``MDB_APPEND`` puts).
    value: one block = the records of (part of) one ``append`` call::

        u32 magic "DSW1" | u32 count n | u32 offset[n] | frame[0] ... frame[n-1]
        frame = u32 length | u64 checksum | payload (length bytes)

    All integers little-endian. ``offset[i]`` is where frame i starts (from the
    block start); frame i ends where frame i+1 starts, the last at the block
    end. The table makes ``read(seq)`` O(1) inside a block; the length in each
    frame lets recovery check the table against the frames.
    ``checksum = xxh3_64(le64(seq) || le64(xxh3_64(payload)))``: it covers the
    sequence number, so a record (or a whole block) in the wrong slot fails.

``meta``
    ``b"format"`` -> ``b"distsync-wal/1"``; ``b"first"`` -> ``le64(first_seq) ||
    le64(xxh3_64(le64(first_seq)))``. Kept apart from the records (as
    hashicorp/raft-wal does) because compaction must survive an empty log.

Why one LMDB value per batch: ``append`` is then one ``put`` and one durable
commit however many records the batch holds (group commit), instead of one
B-tree insert per record. A batch larger than ``BLOCK_BYTES`` is split into
several blocks, still in one transaction.

Invariants (checked on open, kept by every mutation)
----------------------------------------------------
* Blocks are contiguous: block keys are ``first_seq``, ``first_seq + n0``, ...
  and the last block ends at ``last_seq``; the first block starts exactly at
  ``first_seq`` (``truncate_prefix`` re-keys the block it cuts into).
* Empty log: no blocks and ``last_seq == first_seq - 1`` (a fresh log has
  ``first_seq == 1, last_seq == 0``).

Recovery
--------
Before LMDB maps ``data.mdb`` we read its two meta pages ourselves: a file cut
shorter than the newest meta page needs would make LMDB touch pages past the
end of the file (SIGBUS through the mmap). If the older meta page is complete
we fall back to it (LMDB is copy-on-write: the older snapshot's pages are
untouched by the newer transaction), else :class:`CorruptLogError`. Then every
record's checksum is verified: bad records only at the end (a torn tail) are
cut off and the repair committed; a bad record followed by a valid one raises
:class:`CorruptLogError` naming the file and sequence number.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import lmdb
from xxhash import xxh3_64_intdigest

from distsync.errors import CorruptLogError, StorageError

__all__ = ["Wal", "BLOCK_BYTES", "MAX_RECORD", "record_checksum", "encode_block"]

_T = TypeVar("_T")

MAGIC = 0x31575344  # b"DSW1" read as a little-endian u32
HEADER = struct.Struct("<II")  # magic, count
FRAME = struct.Struct("<IQ")  # payload length, checksum
FRAME_SIZE = FRAME.size  # 12
KEY = struct.Struct(">Q")  # big-endian: byte order == numeric order in LMDB
_SEQ_HASH = struct.Struct("<QQ")
_FIRST = struct.Struct("<QQ")

#: A block stops taking records once its frames would pass this many bytes
#: (one record bigger than this gets a block of its own). Bounds the cost of
#: the block rewrite that truncations do, while a typical batch is one block.
BLOCK_BYTES = 1 << 20
#: Largest record: the frame length field is a u32.
MAX_RECORD = 0xFFFFFFFF

FORMAT = b"distsync-wal/1"
DEFAULT_MAP_SIZE = 64 << 20
#: Largest initial map size accepted (LMDB's map is a size_t; 64-bit hosts only).
MAX_MAP_SIZE = 1 << 48

# LMDB 0.9 meta page layout (64-bit builds): page header (pgno u64, pad u16,
# flags u16, lower u16, upper u16) then MDB_meta (magic u32, version u32,
# address u64, mapsize u64, 2 x MDB_db of 48 bytes, last_pg u64, txnid u64).
# The free-DB record's first field (md_pad) holds the page size.
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_DATA_VERSION = 1
_P_META = 0x08
_META_FLAGS_AT = 10
_META_MAGIC_AT = 16
_META_PSIZE_AT = 40
_META_LAST_AT = 136
_META_TXNID_AT = 144
_META_END = 152


def record_checksum(seq: int, payload: Any) -> int:
    """The checksum stored with record ``seq``: it binds the payload to its slot."""
    return xxh3_64_intdigest(_SEQ_HASH.pack(seq, xxh3_64_intdigest(payload)))


def encode_block(first_seq: int, payloads: list[bytes]) -> bytes:
    """One block holding ``payloads`` as records ``first_seq, first_seq + 1, ...``."""
    n = len(payloads)
    pos = HEADER.size + 4 * n
    offsets = []
    parts = []
    for i, p in enumerate(payloads):
        offsets.append(pos)
        parts.append(FRAME.pack(len(p), record_checksum(first_seq + i, p)))
        parts.append(p)
        pos += FRAME_SIZE + len(p)
    return HEADER.pack(MAGIC, n) + struct.pack(f"<{n}I", *offsets) + b"".join(parts)


def _offsets(block: Any) -> tuple[int, ...] | None:
    """The frame offset table of a block, or None when the header is unusable."""
    size = len(block)
    if size < HEADER.size:
        return None
    magic, n = HEADER.unpack_from(block, 0)
    if magic != MAGIC or n == 0 or HEADER.size + 4 * n > size:
        return None
    return struct.unpack_from(f"<{n}I", block, HEADER.size)


def _frame(block: Any, offs: tuple[int, ...], i: int, seq: int) -> Any | None:
    """Payload of frame ``i`` (a slice of ``block``) if the frame is intact, else None.

    Intact means: it lies after the table and inside the block, its length field
    matches the table's extent for it, and its checksum matches for ``seq``.
    """
    n = len(offs)
    start = offs[i]
    end = offs[i + 1] if i + 1 < n else len(block)
    if start < HEADER.size + 4 * n or end > len(block) or end - start < FRAME_SIZE:
        return None
    length, checksum = FRAME.unpack_from(block, start)
    if length != end - start - FRAME_SIZE:
        return None
    payload = block[start + FRAME_SIZE : end]
    if record_checksum(seq, payload) != checksum:
        return None
    return payload


def _check_block(key: int, block: Any) -> tuple[int, int, bool]:
    """Verify every record of a block: ``(count, good, valid_after_bad)``.

    ``count`` is -1 when the header is unusable (no record can be located);
    ``good`` is the number of leading intact records; ``valid_after_bad`` tells
    whether an intact record follows the first bad one (damage in the middle).
    """
    offs = _offsets(block)
    if offs is None:
        return -1, 0, False
    n = len(offs)
    good = 0
    while good < n and _frame(block, offs, good, key + good) is not None:
        good += 1
    after = any(_frame(block, offs, i, key + i) is not None for i in range(good + 1, n))
    return n, good, after


def _slice_block(block: Any, lo: int, hi: int) -> bytes | None:
    """A new block holding records ``[lo, hi)`` (indices) of ``block``; None if the
    header or the table of ``block`` cannot be trusted for that range.

    Frames are copied unchanged: their checksums cover the sequence number,
    which does not change, only the block they live in. The range is checked
    (the block may have been damaged since open) so that a bad table can never
    make the copy read outside the block.
    """
    offs = _offsets(block)
    if offs is None or not 0 <= lo < hi <= len(offs):
        return None
    n = hi - lo
    start = offs[lo]
    end = offs[hi] if hi < len(offs) else len(block)
    kept = offs[lo:hi]
    if not HEADER.size + 4 * len(offs) <= start <= end <= len(block):
        return None
    if any(kept[i] > kept[i + 1] for i in range(n - 1)) or kept[-1] > end:
        return None
    shift = start - (HEADER.size + 4 * n)
    table = struct.pack(f"<{n}I", *(o - shift for o in kept))
    return HEADER.pack(MAGIC, n) + table + bytes(block[start:end])


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass but never a sequence number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _as_payloads(records: object) -> list[bytes]:
    """The batch as a list of bytes, or TypeError/ValueError naming the bad item."""
    if isinstance(records, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"records must be a sequence of bytes-like objects, not {type(records).__name__}"
        )
    if not isinstance(records, Iterable):
        raise TypeError(
            f"records must be a sequence of bytes-like objects, not {type(records).__name__}"
        )
    out = []
    for i, r in enumerate(records):
        if isinstance(r, bytes):
            p = r
        else:
            try:
                p = memoryview(r).tobytes()
            except TypeError:
                raise TypeError(
                    f"records[{i}] must be bytes-like, not {type(r).__name__}"
                ) from None
        if len(p) > MAX_RECORD:
            raise ValueError(f"records[{i}] is {len(p)} bytes; the limit is {MAX_RECORD}")
        out.append(p)
    return out


# --- the file check before LMDB maps the file --------------------------------


def _read_meta(page: bytes) -> tuple[int, int, int] | None:
    """``(psize, last_pgno, txnid)`` of an LMDB meta page, or None if it is not one."""
    if len(page) < _META_END:
        return None
    (flags,) = struct.unpack_from("<H", page, _META_FLAGS_AT)
    magic, version = struct.unpack_from("<II", page, _META_MAGIC_AT)
    if not flags & _P_META or magic != _LMDB_MAGIC or version != _LMDB_DATA_VERSION:
        return None
    (psize,) = struct.unpack_from("<I", page, _META_PSIZE_AT)
    last, txnid = struct.unpack_from("<QQ", page, _META_LAST_AT)
    return psize, last, txnid


def preflight(data_file: str, repair: bool) -> None:
    """Make sure LMDB will not read past the end of ``data_file``; fall back if it would.

    LMDB trusts its newest meta page: every page up to ``last_pgno`` must exist,
    or reading it through the mmap raises SIGBUS and kills the process. A real
    crash cannot produce that (pages are written and synced before the meta
    page that references them), but a file cut short can. If the newest
    snapshot is incomplete and the older one is complete, the older meta page
    is copied over the newer one (``repair``) so that LMDB opens the older
    snapshot: its pages were not overwritten by the newer transaction (LMDB
    only reuses pages freed before the older snapshot). Otherwise, or when
    ``repair`` is False (read-only handles), raise :class:`CorruptLogError`.
    A missing or empty file is a log never written to: LMDB initialises it.

    What LMDB 0.9.36 (py-lmdb 3.0) does by itself with a file cut short,
    measured: without ``writemap`` the first read of a missing page is SIGBUS
    (the process dies, exit status 135); with ``writemap`` it extends the file
    to the map size with zeros and serves zero bytes for the missing pages as
    if they were data. Neither is acceptable for a log, hence this check,
    which runs before LMDB maps the file.
    """
    try:
        size = os.path.getsize(data_file)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(data_file, "rb") as f:
        head = f.read(_META_END)
        m0 = _read_meta(head)
        psize = m0[0] if m0 is not None else 4096
        if psize < _META_END or psize & (psize - 1):
            m0, psize = None, 4096
        f.seek(psize)
        m1 = _read_meta(f.read(_META_END))
    if m0 is None or m1 is None or size < 2 * psize:
        raise CorruptLogError(
            f"{data_file}: LMDB meta pages are missing or damaged; the log cannot be opened",
            data_file,
            0,
        )
    metas = [m0, m1]
    newest = 0 if m0[2] >= m1[2] else 1
    older = 1 - newest

    def complete(m: tuple[int, int, int]) -> bool:
        return (m[1] + 1) * psize <= size

    if complete(metas[newest]):
        return
    if not complete(metas[older]) or not repair:
        what = "no complete snapshot remains" if repair else "open it read-write to repair"
        raise CorruptLogError(
            f"{data_file}: file is {size} bytes but LMDB's newest snapshot needs "
            f"{(metas[newest][1] + 1) * psize}; {what}",
            data_file,
            0,
        )
    # Copy the older meta page into the newer one's slot (with its own page
    # number) and make it durable before LMDB reads it.
    with open(data_file, "r+b") as g:
        g.seek(older * psize)
        page = bytearray(g.read(psize))
        struct.pack_into("<Q", page, 0, newest)
        g.seek(newest * psize)
        g.write(page)
        g.flush()
        os.fsync(g.fileno())


def storage_error(exc: lmdb.Error, data_file: str) -> Exception:
    """Translate an LMDB error into the distsync hierarchy (the one place that does)."""
    if isinstance(
        exc,
        (
            lmdb.CorruptedError,
            lmdb.InvalidError,
            lmdb.PageNotFoundError,
            lmdb.VersionMismatchError,
            lmdb.BadValsizeError,
            lmdb.IncompatibleError,
        ),
    ):
        return CorruptLogError(f"{data_file}: LMDB reports damage: {exc}", data_file, 0)
    return StorageError(f"{data_file}: {exc}")


def open_env(path: str, data_file: str, map_size: int, sync: bool, readonly: bool) -> Any:
    """The LMDB environment of a log, with the flags both twins must agree on.

    ``sync=True`` keeps LMDB's full commit: data pages written and fdatasync'ed,
    then the meta page written through an O_DSYNC descriptor. That is two
    ordered flushes per commit, and both are needed: ``metasync=False`` would
    leave the last commit undone by a system crash, ``sync=False`` could let
    the meta page reach the disk before the pages it points to. ``writemap``
    is off: it gains nothing measurable here and hides files cut short (see
    ``preflight``). The 0.9 engine is forced (data format v1): ``preflight``
    parses its meta pages.
    """
    kwargs: dict[str, Any] = dict(
        map_size=map_size, max_dbs=2, sync=sync, metasync=True, readonly=readonly
    )
    try:
        try:
            return lmdb.open(path, lib_version=0, **kwargs)
        except TypeError:  # py-lmdb < 3.0 has one engine (0.9) and no lib_version
            return lmdb.open(path, **kwargs)
    except lmdb.Error as exc:
        raise storage_error(exc, data_file) from exc


class ReadTxn:
    """A read transaction as a context manager that translates LMDB errors.

    LMDB can report damage (``MDB_CORRUPTED``, ``MDB_PAGE_NOTFOUND``) from any
    cursor step, so the translation wraps the whole ``with`` body.
    """

    __slots__ = ("txn", "data_file")

    def __init__(self, txn: Any, data_file: str) -> None:
        self.txn = txn
        self.data_file = data_file

    def __enter__(self) -> Any:
        return self.txn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.txn.abort()  # a read transaction only releases its snapshot
        if isinstance(exc, lmdb.Error):
            raise storage_error(exc, self.data_file) from exc


# --- the log -----------------------------------------------------------------


class Wal:
    """An append-only log of byte records numbered 1, 2, 3, ... stored in LMDB.

    One writer per log (one process); readers in other processes open their
    own handle with ``readonly=True`` and see a committed prefix. A handle may
    be shared by threads: its operations are serialized by an internal lock.

    :param path: directory of the LMDB environment (created if missing).
    :param sync: True: every ``append``/truncation is durable when it returns
        (LMDB commit: data pages synced, then the meta page written with a
        synchronous write). False: no fsync (for tests and CPU benchmarks);
        still consistent after a process crash, but an OS crash may lose or
        damage recent commits.
    :param map_size: initial LMDB map size in bytes; the map grows (doubling)
        whenever a transaction finds it full.
    :param readonly: open for reading only (no recovery writes; the log must
        exist).
    :raises CorruptLogError: the log holds a bad record followed by valid ones,
        or the file is damaged beyond what recovery can cut off.
    :raises StorageError: LMDB failed otherwise (e.g. the log is already open in
        this process).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync: bool = True,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        if not isinstance(sync, bool):
            raise TypeError(f"sync must be a bool, not {type(sync).__name__}")
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly must be a bool, not {type(readonly).__name__}")
        _check_int("map_size", map_size)
        if not 4096 <= map_size <= MAX_MAP_SIZE:
            raise ValueError(f"map_size must be in [4096, {MAX_MAP_SIZE}], got {map_size}")
        self._path = os.fspath(path)
        self._data_file = os.path.join(self._path, "data.mdb")
        self._sync = sync
        self._readonly = readonly
        self._lock = threading.Lock()
        self._env: Any = None
        self._first = 1
        self._last = 0
        self._torn = 0  # readers: first bad record of a torn tail seen at open
        if readonly and not os.path.exists(self._data_file):
            raise FileNotFoundError(f"no log at {self._path} (readonly=True needs one)")
        preflight(self._data_file, repair=not readonly)
        self._env = open_env(self._path, self._data_file, map_size, sync, readonly)
        try:
            self._open_dbs()
            self._recover()
        except BaseException:
            self._env.close()
            self._env = None
            raise

    # -- opening --------------------------------------------------------------

    def _open_dbs(self) -> None:
        if self._readonly:
            with self._read_txn() as txn:
                if txn.get(b"meta") is None or txn.get(b"log") is None:
                    raise CorruptLogError(
                        f"{self._data_file}: not a distsync log (no meta database)",
                        self._data_file,
                        0,
                    )
            try:
                self._log = self._env.open_db(b"log", create=False)
                self._meta = self._env.open_db(b"meta", create=False)
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc
            return

        def init(txn: Any) -> tuple[Any, Any]:
            # Inside the write retry loop: creating the sub-databases of a new
            # log needs pages, which a tiny initial map may not have.
            log = self._env.open_db(b"log", txn=txn)
            meta = self._env.open_db(b"meta", txn=txn)
            if txn.get(b"format", db=meta) is None:
                if txn.stat(log)["entries"] or txn.stat(meta)["entries"]:
                    raise CorruptLogError(
                        f"{self._data_file}: not a distsync log (no format marker)",
                        self._data_file,
                        0,
                    )
                txn.put(b"format", FORMAT, db=meta)
                txn.put(b"first", self._first_value(1), db=meta)
            return log, meta

        self._log, self._meta = self._write(init)

    @staticmethod
    def _first_value(first: int) -> bytes:
        return _FIRST.pack(first, xxh3_64_intdigest(KEY.pack(first)))

    def _read_first(self, txn: Any) -> int:
        fmt = txn.get(b"format", db=self._meta)
        raw = txn.get(b"first", db=self._meta)
        if fmt != FORMAT or raw is None or len(raw) != _FIRST.size:
            raise CorruptLogError(
                f"{self._data_file}: not a distsync log or its meta record is damaged",
                self._data_file,
                0,
            )
        first, check = _FIRST.unpack(bytes(raw))
        if check != xxh3_64_intdigest(KEY.pack(first)) or first < 1:
            raise CorruptLogError(
                f"{self._data_file}: the first_seq record fails its checksum",
                self._data_file,
                0,
            )
        return int(first)

    def _recover(self) -> None:
        """Verify every record; cut a torn tail; refuse damage in the middle."""
        with self._read_txn() as txn:
            first = self._read_first(txn)
            expected = first  # the key the next block must have
            # (raw key, intact records to keep) of the block holding the first bad record
            cut: tuple[bytes, int] | None = None
            bad_seq = 0
            for raw_key, block in txn.cursor(db=self._log):
                raw_key = bytes(raw_key)
                key = KEY.unpack(raw_key)[0] if len(raw_key) == 8 else -1
                if cut is not None:
                    # Past the first bad record: any intact record now means the
                    # damage is not a tail.
                    _, good, after = _check_block(key, block)
                    if good or after:
                        raise self._corrupt(bad_seq)
                    continue
                if key != expected:
                    # A gap, an overlap or a damaged key: records are missing
                    # before this block. Only a tail if nothing here is intact.
                    _, good, after = _check_block(key, block)
                    if good or after:
                        raise self._corrupt(expected)
                    cut, bad_seq = (raw_key, 0), expected
                    continue
                count, good, after = _check_block(key, block)
                if good == count:
                    expected = key + count
                    continue
                if after:
                    raise self._corrupt(key + good)
                cut, bad_seq = (raw_key, good), key + good
        self._first = first
        if cut is None:
            self._last = expected - 1
            return
        self._last = bad_seq - 1
        if self._readonly:
            self._torn = bad_seq  # serve the valid prefix; the writer repairs
            return
        cut_key, keep = cut

        def repair(txn: Any) -> None:
            # Keep the intact head of the first bad block, drop it and
            # everything after it otherwise.
            cur = txn.cursor(db=self._log)
            if keep:
                new = _slice_block(txn.get(cut_key, db=self._log), 0, keep)
                if new is None:
                    raise self._damaged(bad_seq - keep)
                txn.put(cut_key, new, db=self._log)
                cur.set_range(cut_key)
                cur.next()
            else:
                cur.set_range(cut_key)
            if cur.key():
                while cur.delete():
                    pass

        self._write(repair)

    def _corrupt(self, seq: int) -> CorruptLogError:
        return CorruptLogError(
            f"{self._data_file}: record {seq} is damaged and valid records follow it; "
            "the log is corrupt (not a torn tail) and cannot be served",
            self._data_file,
            seq,
        )

    # -- transactions -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._env is None:
            raise ValueError("operation on a closed Wal")

    def _read_txn(self) -> ReadTxn:
        """A read transaction; adopts a map grown by the writer in another process."""
        try:
            try:
                txn = self._env.begin(buffers=True)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
                txn = self._env.begin(buffers=True)
        except lmdb.Error as exc:
            raise storage_error(exc, self._data_file) from exc
        return ReadTxn(txn, self._data_file)

    def _write(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(txn)`` in one write transaction and commit it (durably when sync).

        ``fn`` must not change ``self``: on "map full" the transaction is aborted,
        the map doubled and ``fn`` run again from scratch.
        """
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                info = self._env.info()
                self._env.set_mapsize(2 * info["map_size"])
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc

    def _bounds(self, txn: Any) -> tuple[int, int]:
        """``(first_seq, last_seq)``: cached for the writer, read afresh by readers."""
        if not self._readonly:
            return self._first, self._last
        first = self._read_first(txn)
        cur = txn.cursor(db=self._log)
        if not cur.last():
            return first, first - 1
        key = KEY.unpack(bytes(cur.key()))[0]
        offs = _offsets(cur.value())
        if offs is None:
            raise self._corrupt(key)
        last = key + len(offs) - 1
        if self._torn and self._torn <= last:
            # This reader found a torn tail at open and cannot repair it: keep
            # serving the prefix until the writer has replaced the bad record.
            k, block = self._block_at(cur, self._torn)
            o = _offsets(block)
            if o is None or _frame(block, o, self._torn - k, self._torn) is None:
                return first, self._torn - 1
            self._torn = 0
        return first, last

    # -- public API ---------------------------------------------------------------

    @property
    def path(self) -> str:
        """The directory of the LMDB environment."""
        return self._path

    @property
    def first_seq(self) -> int:
        """First record still in the log (``last_seq + 1`` when the log is empty)."""
        with self._lock:
            self._check_open()
            if not self._readonly:
                return self._first
            with self._read_txn() as txn:
                return self._bounds(txn)[0]

    @property
    def last_seq(self) -> int:
        """Last record appended (0 for a new log; kept across ``truncate_prefix``)."""
        with self._lock:
            self._check_open()
            if not self._readonly:
                return self._last
            with self._read_txn() as txn:
                return self._bounds(txn)[1]

    def append(self, records: Iterable[Any]) -> int:
        """Append a batch of records in one transaction with one durable commit.

        :param records: a sequence of bytes-like objects (bytes, bytearray,
            memoryview, ...); they get sequence numbers ``last_seq + 1, ...``.
        :returns: the new ``last_seq`` (unchanged for an empty batch).
        :raises TypeError: ``records`` is not a sequence of bytes-like objects.
        :raises ValueError: a record is larger than ``MAX_RECORD``; the Wal is closed.
        """
        payloads = _as_payloads(records)
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("append on a read-only Wal")
            if not payloads:
                return self._last
            start = self._last + 1
            blocks = []
            lo = 0
            size = 0
            for i, p in enumerate(payloads):
                if size and size + FRAME_SIZE + len(p) > BLOCK_BYTES:
                    blocks.append((start + lo, encode_block(start + lo, payloads[lo:i])))
                    lo, size = i, 0
                size += FRAME_SIZE + len(p)
            blocks.append((start + lo, encode_block(start + lo, payloads[lo:])))

            def put(txn: Any) -> None:
                for key, block in blocks:
                    if not txn.put(KEY.pack(key), block, db=self._log, append=True):
                        raise StorageError(f"{self._data_file}: block {key} already exists")

            self._write(put)
            self._last = start + len(payloads) - 1
            return self._last

    def read(self, seq: int) -> bytes:
        """The record numbered ``seq``.

        :raises TypeError: ``seq`` is not an int.
        :raises ValueError: ``seq`` is negative; the Wal is closed.
        :raises IndexError: ``seq`` is outside ``[first_seq, last_seq]``.
        :raises CorruptLogError: the record fails its checksum.
        """
        _check_int("seq", seq)
        with self._lock:
            self._check_open()
            with self._read_txn() as txn:
                first, last = self._bounds(txn)
                if not first <= seq <= last:
                    raise IndexError(f"seq {seq} is outside the log [{first}, {last}]")
                cur = txn.cursor(db=self._log)
                key, block = self._block_at(cur, seq)
                offs = _offsets(block)
                payload = None if offs is None else _frame(block, offs, seq - key, seq)
                if payload is None:
                    raise self._damaged(seq)
                return bytes(payload)

    def _damaged(self, seq: int) -> CorruptLogError:
        return CorruptLogError(
            f"{self._data_file}: record {seq} fails its checksum", self._data_file, seq
        )

    def _block_at(self, cur: Any, seq: int) -> tuple[int, Any]:
        """Position ``cur`` on the block holding ``seq`` (which must be in the log)."""
        if cur.set_range(KEY.pack(seq)):
            if KEY.unpack(bytes(cur.key()))[0] == seq:
                return seq, cur.value()
            found = cur.prev()  # the block before the first one starting after seq
        else:
            found = cur.last()  # seq lies in the last block
        if not found:
            raise self._damaged(seq)
        return KEY.unpack(bytes(cur.key()))[0], cur.value()

    def scan(self, from_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, record)`` from ``from_seq`` (default ``first_seq``) to the end.

        Each block is read in its own short read transaction, so records
        appended during the iteration are included and a writer is never held
        up; a concurrent truncation that removes the next record ends it.

        :raises TypeError: ``from_seq`` is not an int or None.
        :raises ValueError: ``from_seq`` is negative; the Wal is closed.
        :raises IndexError: ``from_seq`` is outside ``[first_seq, last_seq + 1]``.
        :raises CorruptLogError: (while iterating) a record fails its checksum.
        """
        if from_seq is not None:
            _check_int("from_seq", from_seq)
        with self._lock:
            self._check_open()
            with self._read_txn() as txn:
                first, last = self._bounds(txn)
        start = first if from_seq is None else from_seq
        if not first <= start <= last + 1:
            raise IndexError(f"from_seq {start} is outside the log [{first}, {last + 1}]")
        return self._scan(start)

    def _scan(self, seq: int) -> Iterator[tuple[int, bytes]]:
        while True:
            with self._lock:
                if self._env is None:
                    return
                with self._read_txn() as txn:
                    first, last = self._bounds(txn)
                    if not first <= seq <= last:
                        return
                    key, block = self._block_at(txn.cursor(db=self._log), seq)
                    offs = _offsets(block)
                    if offs is None:
                        raise self._damaged(seq)
                    out: list[tuple[int, bytes]] = []
                    for i in range(seq - key, min(len(offs), last - key + 1)):
                        payload = _frame(block, offs, i, key + i)
                        if payload is None:
                            if out:
                                break  # yield the good ones first, fail on the next round
                            raise self._damaged(key + i)
                        out.append((key + i, bytes(payload)))
            yield from out
            seq = out[-1][0] + 1

    def truncate_prefix(self, upto: int) -> None:
        """Drop records ``<= upto`` (compaction), durably; ``first_seq`` becomes ``upto + 1``.

        ``upto < first_seq`` is a no-op; ``upto == last_seq`` empties the log
        (``last_seq`` is kept, so the next append continues after it).

        :raises TypeError: ``upto`` is not an int.
        :raises ValueError: ``upto`` is negative or beyond ``last_seq``; read-only or closed.
        """
        _check_int("upto", upto)
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("truncate_prefix on a read-only Wal")
            if upto > self._last:
                raise ValueError(f"upto {upto} is beyond last_seq {self._last}")
            if upto < self._first:
                return
            new_first = upto + 1

            def cut(txn: Any) -> None:
                cur = txn.cursor(db=self._log)
                cur.first()
                # Delete whole blocks that end at or before upto; the block that
                # straddles upto is re-keyed at upto + 1 so the first block
                # always starts at first_seq.
                while cur.key():
                    key = KEY.unpack(bytes(cur.key()))[0]
                    block = cur.value()
                    offs = _offsets(block)
                    if offs is None:
                        raise self._damaged(key)
                    if key + len(offs) - 1 <= upto:
                        cur.delete()
                        continue
                    if key <= upto:
                        new = _slice_block(block, upto + 1 - key, len(offs))
                        if new is None:
                            raise self._damaged(key)
                        cur.delete()
                        txn.put(KEY.pack(new_first), new, db=self._log)
                    break
                txn.put(b"first", self._first_value(new_first), db=self._meta)

            self._write(cut)
            self._first = new_first

    def truncate_suffix(self, from_seq: int) -> None:
        """Drop records ``>= from_seq`` (Raft log conflict), durably.

        The next append continues at ``from_seq``. ``from_seq == last_seq + 1``
        is a no-op.

        :raises TypeError: ``from_seq`` is not an int.
        :raises ValueError: ``from_seq`` is outside ``[first_seq, last_seq + 1]``
            or negative; read-only or closed.
        """
        _check_int("from_seq", from_seq)
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("truncate_suffix on a read-only Wal")
            if not self._first <= from_seq <= self._last + 1:
                raise ValueError(
                    f"from_seq {from_seq} is outside [{self._first}, {self._last + 1}]"
                )
            if from_seq == self._last + 1:
                return

            def cut(txn: Any) -> None:
                cur = txn.cursor(db=self._log)
                key, block = self._block_at(cur, from_seq)
                if key < from_seq:
                    # Keep the head of the straddling block, then step past it.
                    new = _slice_block(block, 0, from_seq - key)
                    if new is None:
                        raise self._damaged(key)
                    txn.put(KEY.pack(key), new, db=self._log)
                    cur.set_range(KEY.pack(from_seq))
                if cur.key():
                    while cur.delete():
                        pass

            self._write(cut)
            self._last = from_seq - 1

    def sync(self) -> None:
        """Force everything committed so far to disk (useful with ``sync=False``)."""
        with self._lock:
            self._check_open()
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc

    def close(self) -> None:
        """Close the log; further calls raise ValueError. Idempotent."""
        with self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None

    def __enter__(self) -> Wal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._env is None else f"[{self._first}, {self._last}]"
        return f"Wal({self._path!r}, {state})"
