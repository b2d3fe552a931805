"""An append-only record log in preallocated segment files: one flush per durable append.

:class:`SegmentLog` has the API of :class:`~distsync._core.wal.Wal` (records numbered
1, 2, 3, ...; ``append``, ``read``, ``scan``, ``truncate_prefix``, ``truncate_suffix``)
and the same guarantees (every record checksummed, a torn tail cut at recovery, damage in
the middle refused with :class:`~distsync.errors.CorruptLogError`), but a durable append
costs one ``fdatasync`` of data already allocated on disk, where an LMDB commit costs two
ordered flushes (the data pages, then the meta page). On this kind of disk that is the
difference between ~80 and ~200 µs per commit, and every Raft commit and every lock
hand-off waits for one.

Why it is safe with one flush
=============================
Segments are created full of zeros (written, not just ``fallocate``'d: an unwritten
extent would turn every first write to a block into a metadata change that
``fdatasync`` must also journal) and made durable, names included, before the first
record goes in. From then on an append only overwrites zeros inside the file: the file
size and its extents never change, so ``fdatasync`` flushes data only. An append is one
*chunk*, written with one ``pwrite`` at the end of the data and then flushed. A crash
during the flush can leave any subset of the chunk's sectors on disk; the chunk's
checksum (over its header and body) tells a whole chunk from a torn one, and the zeros
after the data tell the end of the log.

Nothing is ever overwritten in place. Truncations are chunks too:

``truncate_suffix(s)``
    appends a *cut* chunk "records from ``s`` on are void"; recovery replays it.
``truncate_prefix(u)``
    appends a *head* chunk "the log starts at ``u + 1``" and deletes the segments that
    hold nothing at or after it (never the last one, which holds the head chunk).

Layout
======
``path/`` holds ``seg-<n>.log`` files (``n`` = 1, 2, ... in order, 16 hex digits), each
``segment_bytes`` long (larger when one append needs it). A segment holds chunks back to
back from offset 0, each padded to 8 bytes; the rest of the file is zeros. A chunk::

    u32 magic "DSG1" | u8 kind | u8 0 | u16 0 | u32 count | u32 body length |
    u64 seq | u64 checksum | body

``checksum = xxh3_64(header[0:24] || body)``. ``kind`` 1 (records): ``count`` records
numbered from ``seq``, body = ``count`` x (u32 length | payload). Kind 2 (cut): records
from ``seq`` on are void. Kind 3 (head): the log starts at ``seq``. Little-endian.

Recovery
========
Segments are read in order, chunk by chunk. A chunk whose checksum fails, or whose
``seq`` does not continue the log, ends the data of the *last* segment when nothing valid
follows it (a torn tail: the bytes from there on are zeroed and flushed, so a later
append cannot be mistaken for more); anywhere else, or with a valid chunk after it, it is
damage in the middle and raises CorruptLogError naming the file and sequence number. A
damaged last chunk is a torn tail only if it can be one: a write cut short leaves some
of its sectors as they were, zeros; a chunk whose every sector holds data but whose
checksum fails was damaged after it was acknowledged, and is refused too. An
all-zero segment after the last one with data is a segment created in advance: reused.

Not thread-safe: the owner (a storage driven by one thread at a time) serialises calls.
The next segment is zero-filled in a background thread once the current one is half
full, so a rollover rarely waits for it.
"""

from __future__ import annotations

import bisect
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from xxhash import xxh3_64

from distsync.errors import CorruptLogError, StorageError

__all__ = ["SegmentLog", "SEGMENT_BYTES"]

MAGIC = 0x31475344  # b"DSG1" as a little-endian u32
_HEAD = struct.Struct("<IBBHIIQ")  # magic, kind, 0, 0, count, body length, seq
_CHECK = struct.Struct("<Q")
HEADER_SIZE = _HEAD.size + _CHECK.size  # 32
_LEN = struct.Struct("<I")
_RECORDS, _CUT, _START = 1, 2, 3
#: Default size of a segment file.
SEGMENT_BYTES = 16 << 20
_ZERO_STEP = 1 << 20
_SECTOR = 512
_ZEROS = bytes(_ZERO_STEP)
_NAME = re.compile(r"^seg-([0-9a-f]{16})\.log$")
MAX_RECORD = 0xFFFFFFFF


def _pad(n: int) -> int:
    return (n + 7) & ~7


def _checksum(head: bytes | memoryview, body: bytes | memoryview) -> int:
    h = xxh3_64(head)
    h.update(body)
    return h.intdigest()


def _frame_chunk(kind: int, seq: int, count: int, body: bytes) -> bytes:
    """One chunk (padded to 8 bytes) of ``kind`` at ``seq`` around an encoded ``body``."""
    head = _HEAD.pack(MAGIC, kind, 0, 0, count, len(body), seq)
    pad = -(HEADER_SIZE + len(body)) & 7
    return b"".join((head, _CHECK.pack(_checksum(head, body)), body, _ZEROS[:pad] if pad else b""))


def _whole_chunk(view: memoryview, pos: int) -> tuple[int, int, int, int] | None:
    """``(kind, count, body length, seq)`` of the chunk at ``pos`` when its header is
    well formed, it fits in ``view`` and its checksum matches; else None."""
    if pos + HEADER_SIZE > len(view):
        return None
    magic, kind, z1, z2, count, blen, seq = _HEAD.unpack_from(view, pos)
    body_at = pos + HEADER_SIZE
    if (
        magic != MAGIC
        or z1
        or z2
        or kind not in (_RECORDS, _CUT, _START)
        or body_at + blen > len(view)
    ):
        return None
    (check,) = _CHECK.unpack_from(view, pos + _HEAD.size)
    if check != _checksum(view[pos : pos + _HEAD.size], view[body_at : body_at + blen]):
        return None
    return kind, count, blen, seq


def _torn(data: bytes, pos: int) -> bool:
    """Whether the damaged chunk at ``pos`` can be an interrupted write rather than damage
    to a written one. Segments are zero-filled and never overwritten, so a write cut short
    leaves some of the chunk's sectors all zeros (sector writes are atomic); a chunk whose
    sectors all hold data but whose checksum fails was changed after it was written."""
    size = len(data)
    if pos + HEADER_SIZE > size:
        return True
    magic, kind, _z1, _z2, _count, blen, _seq = _HEAD.unpack_from(data, pos)
    end = pos + HEADER_SIZE + blen
    if magic != MAGIC or kind not in (_RECORDS, _CUT, _START) or end > size:
        return True  # the header itself did not land whole
    # Sectors wholly inside the chunk, and the chunk's part of its last sector.
    first = (pos + _SECTOR - 1) // _SECTOR * _SECTOR
    for at in range(first, end, _SECTOR):
        if data.count(0, at, min(at + _SECTOR, end)) == min(_SECTOR, end - at):
            return True
    return False


def _write_zeros(fd: int, start: int, stop: int) -> None:
    """Overwrite bytes ``start .. stop - 1`` of ``fd`` with zeros."""
    pos = start
    while pos < stop:
        step = min(_ZERO_STEP, stop - pos)
        pos += os.pwrite(fd, _ZEROS[:step] if step < _ZERO_STEP else _ZEROS, pos)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Chunk:
    """Where the live records ``seq .. seq + count - 1`` of one records chunk are."""

    __slots__ = ("seq", "count", "seg", "body_at", "body_len")

    def __init__(self, seq: int, count: int, seg: int, body_at: int, body_len: int) -> None:
        self.seq = seq
        self.count = count
        self.seg = seg
        self.body_at = body_at
        self.body_len = body_len


class SegmentLog:
    """Append-only log of byte records in zero-filled segment files (see the module
    docstring). Same API as :class:`~distsync._core.wal.Wal`.

    :param path: directory of the log (created if missing).
    :param sync: True: ``append`` and the truncations are durable when they return.
    :param segment_bytes: size of each segment file.
    :raises CorruptLogError: damage that is not a torn tail (names file and sequence).
    :raises StorageError: the directory cannot be used (names the path and the error).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync: bool = True,
        *,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        if not isinstance(segment_bytes, int) or segment_bytes < 4096 or segment_bytes % 8:
            raise ValueError(
                f"segment_bytes must be a multiple of 8 of at least 4096, not {segment_bytes!r}"
            )
        self._path = os.fspath(path)
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._fds: dict[int, int] = {}  # segment number -> fd
        self._sizes: dict[int, int] = {}
        self._chunks: list[_Chunk] = []  # live records chunks, in order
        self._starts: list[int] = []  # their first seqs (for bisect)
        self._first = 1
        self._last = 0
        self._seg = 0  # the segment being written
        self._end = 0  # where the next chunk goes in it
        self._spare: int | None = None  # a zero-filled segment after the current one
        self._preparing: threading.Thread | None = None
        self._prepared: int | None = None  # fd of the segment the thread made
        self._loaded = False  # recovery: where the log ends is known
        self._head: int | None = None  # recovery: the seq of the last head chunk replayed
        self._prepare_error: BaseException | None = None
        self._closed = False
        # sync=False: segments written, and whether segments were made, since sync().
        self._unsynced: set[int] = set()
        self._dir_unsynced = not sync
        try:
            os.makedirs(self._path, exist_ok=True)
            self._recover()
        except OSError as exc:
            self._close_fds()
            raise StorageError(f"{self._path}: cannot open the log ({exc})") from exc
        except BaseException:
            self._close_fds()
            raise

    # -- properties --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def first_seq(self) -> int:
        return self._first

    @property
    def last_seq(self) -> int:
        return self._last

    # -- files ---------------------------------------------------------------------------------

    def _seg_path(self, n: int) -> str:
        return os.path.join(self._path, f"seg-{n:016x}.log")

    def _create_segment(self, n: int, size: int) -> int:
        """Create segment ``n`` full of zeros, durably (contents and name); its fd."""
        tmp = self._seg_path(n) + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_zeros(fd, 0, size)
            if self._sync:
                os.fsync(fd)
            os.rename(tmp, self._seg_path(n))
            if self._sync:
                _fsync_dir(self._path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _prepare_spare(self) -> None:
        """Zero-fill the segment after the current one in a background thread."""
        if self._spare is not None or self._preparing is not None:
            return
        n = self._seg + 1

        def work() -> None:
            try:
                self._prepared = self._create_segment(n, self._segment_bytes)
            except BaseException as exc:  # reported by the append that needs it
                self._prepare_error = exc

        t = threading.Thread(target=work, name=f"distsync-segment-{n}", daemon=True)
        self._preparing = t
        t.start()

    def _join_spare(self) -> None:
        """Wait for a segment being prepared and register it as the spare."""
        if self._preparing is None:
            return
        self._preparing.join()
        self._preparing = None
        n = self._seg + 1
        if self._prepare_error is not None:
            exc, self._prepare_error = self._prepare_error, None
            raise StorageError(f"{self._seg_path(n)}: cannot create the segment ({exc})")
        assert self._prepared is not None
        self._fds[n], self._prepared = self._prepared, None
        self._sizes[n] = self._segment_bytes
        self._spare = n

    def _next_segment(self, need: int) -> None:
        """Move writing to the next segment, one that can hold ``need`` bytes."""
        self._dir_unsynced = self._dir_unsynced or not self._sync
        if self._end == 0:
            # Nothing in the current segment yet: make it bigger instead (recovery
            # refuses an empty segment before one with data).
            n = self._seg
            size = max(self._segment_bytes, _pad(need))
            fd = self._create_segment(n, size)  # replaces it by name
            os.close(self._fds[n])
            self._fds[n], self._sizes[n] = fd, size
            return
        n = self._seg + 1
        self._join_spare()
        if self._spare == n and self._sizes[n] < need:
            self._delete_segment(n)
            self._spare = None
        if self._spare != n:
            size = max(self._segment_bytes, _pad(need))
            self._fds[n] = self._create_segment(n, size)
            self._sizes[n] = size
        self._spare = None
        self._seg, self._end = n, 0

    def _delete_segment(self, n: int) -> None:
        os.close(self._fds.pop(n))
        del self._sizes[n]
        os.unlink(self._seg_path(n))

    def _close_fds(self) -> None:
        if self._preparing is not None:
            self._preparing.join()
            self._preparing = None
        if self._prepared is not None:
            os.close(self._prepared)
            self._prepared = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- recovery ------------------------------------------------------------------------------

    def _corrupt(self, seg: int, seq: int, what: str) -> CorruptLogError:
        path = self._seg_path(seg)
        return CorruptLogError(f"{path}: {what} at record {seq}; the log cannot be used", path, seq)

    def _recover(self) -> None:
        segs = []
        for name in os.listdir(self._path):
            m = _NAME.match(name)
            if m:
                segs.append(int(m.group(1), 16))
            elif name.endswith(".log.tmp"):
                os.unlink(os.path.join(self._path, name))  # an interrupted creation
        segs.sort()
        if not segs:
            self._fds[1] = self._create_segment(1, self._segment_bytes)
            self._sizes[1] = self._segment_bytes
            self._seg, self._end = 1, 0
            return
        for a, b in zip(segs, segs[1:], strict=False):
            if b != a + 1:
                raise self._corrupt(b, 0, f"segment {a + 1} is missing before it")
        for n in segs:
            self._fds[n] = os.open(self._seg_path(n), os.O_RDWR)
            self._sizes[n] = os.fstat(self._fds[n]).st_size
        data_segs: list[int] = []
        torn: tuple[int, int] | None = None  # (segment, offset) of a torn tail
        # With segment 1 the whole history is there: the log starts empty at 1.
        self._loaded = segs[0] == 1
        empty: int | None = None  # the first segment without data
        for n in segs:
            if (torn is not None or empty is not None) and any(
                os.pread(self._fds[n], HEADER_SIZE, 0)
            ):
                # Data after a damaged chunk (not a torn tail) or an empty segment: name
                # the segment at fault, not this one that does not continue the log.
                if torn is not None:
                    raise self._corrupt(
                        torn[0], self._last + 1, f"a damaged chunk at offset {torn[1]}"
                    )
                assert empty is not None
                raise self._corrupt(empty, self._last + 1, "an empty segment before others")
            end, bad = self._load_segment(n)
            if end is None:
                empty = n if empty is None else empty
                continue  # all zeros: a segment created in advance
            data_segs.append(n)
            if bad:
                torn = (n, end)
            self._seg, self._end = n, end
        if not data_segs:
            self._seg, self._end = segs[0], 0
        else:
            last = data_segs[-1]
            for n in segs:
                if n < last and n not in data_segs:
                    raise self._corrupt(n, self._last + 1, "an empty segment before others")
            head = self._head
            if segs[0] > 1 and head is None:
                raise self._corrupt(segs[0], self._first, f"segments before {segs[0]} are missing")
            if head is not None and not self._loaded:
                self._first, self._last = head, head - 1  # only head chunks: an empty log
            elif head is not None and head < self._first:
                # The last head chunk points before the first record replayed: the records
                # between were in the deleted segments.
                if head <= self._last:
                    raise self._corrupt(segs[0], head, f"segments before {segs[0]} are missing")
                self._first = head
            self._zero_tail(self._seg, self._end)
        later = [n for n in segs if n > self._seg]
        for n in later[1:]:  # at most one spare is kept
            self._delete_segment(n)
        if later:
            self._spare = later[0]

    def _load_segment(self, n: int) -> tuple[int | None, bool]:
        """Read segment ``n``'s chunks into the index. Returns (end of its data, or None
        when it holds none; whether it ends in a damaged chunk with nothing valid after
        it in this segment: a torn tail if no later segment holds data)."""
        fd = self._fds[n]
        size = self._sizes[n]
        data = os.pread(fd, size, 0)
        view = memoryview(data)
        pos = 0
        while pos + HEADER_SIZE <= size:
            if not any(view[pos : pos + HEADER_SIZE]):
                # Zeros: the end of this segment's data, unless a chunk follows (zeros
                # over a chunk are damage, not the end of the log).
                if self._valid_after(data, pos + 8):
                    raise self._corrupt(n, self._last + 1, f"zeros before a chunk at offset {pos}")
                break
            chunk = _whole_chunk(view, pos)
            if chunk is None:
                if self._valid_after(data, pos + 8) or not _torn(data, pos):
                    raise self._corrupt(
                        n,
                        self._last + 1,
                        f"a damaged chunk at offset {pos} (the records from {self._last + 1} "
                        "written together)",
                    )
                return pos, True
            kind, count, blen, seq = chunk
            body_at = pos + HEADER_SIZE
            if not self._apply_chunk(kind, seq, count, n, body_at, view[body_at : body_at + blen]):
                raise self._corrupt(
                    n, self._last + 1, f"a chunk at offset {pos} does not continue the log"
                )
            pos = _pad(body_at + blen)
        return (pos if pos else None), False

    def _apply_chunk(
        self, kind: int, seq: int, count: int, seg: int, body_at: int, body: memoryview
    ) -> bool:
        """Replay one checksummed chunk into the index; False if it does not fit the log.

        The index holds records ``first .. last``. When a compaction deleted the first
        segments, the chunks of the first ones left may refer to records that were in
        them: until the first records or cut chunk, where the log ends is unknown, and a
        cut or an older head chunk may point before the first record replayed. The last
        head chunk, which recovery requires then, must leave no record unknown.
        """
        if seq < 1 or (self._head is not None and seq < self._head):
            return False  # nothing before the head is written, cut or made the head again
        if not self._loaded and kind != _START:
            self._loaded = True
            self._first, self._last = seq, seq - 1
        if kind == _RECORDS:
            if count == 0 or seq != self._last + 1:
                return False
            # The body must hold exactly ``count`` records.
            pos, blen = 0, len(body)
            for _ in range(count):
                if pos + 4 > blen:
                    return False
                (ln,) = _LEN.unpack_from(body, pos)
                pos += 4 + ln
            if pos != blen:
                return False
            self._add(_Chunk(seq, count, seg, body_at, blen))
            self._last = seq + count - 1
            return True
        if kind == _CUT:
            if seq > self._last + 1:
                return False
            # Before the first record replayed only after deleted segments (else the
            # checks above keep it at or after the first record).
            self._first = min(self._first, seq)
            self._drop_from(seq)
            return True
        # _START
        if self._loaded:
            if seq > self._last + 1:
                return False
            if seq >= self._first:
                self._drop_before(seq)
        self._head = seq
        return True

    def _valid_after(self, data: bytes, start: int) -> bool:
        """Whether a chunk with a valid checksum starts anywhere from ``start`` on."""
        view = memoryview(data)
        magic = _LEN.pack(MAGIC)
        pos = data.find(magic, start)
        while pos >= 0:
            if pos % 8 == 0 and _whole_chunk(view, pos) is not None:
                return True
            pos = data.find(magic, pos + 1)
        return False

    def _zero_tail(self, n: int, end: int) -> None:
        """Zero segment ``n`` after ``end`` when anything there is not zero (a torn
        tail), so that no later append can be followed by stale bytes."""
        fd, size = self._fds[n], self._sizes[n]
        rest = os.pread(fd, size - end, end)
        if rest.count(0) == len(rest):
            return
        _write_zeros(fd, end, end + len(rest.rstrip(b"\0")))
        if self._sync:
            os.fdatasync(fd)

    # -- index -------------------------------------------------------------------------------

    def _add(self, c: _Chunk) -> None:
        self._chunks.append(c)
        self._starts.append(c.seq)

    def _drop_from(self, seq: int) -> None:
        """Forget records ``seq`` and after (in memory)."""
        i = bisect.bisect_right(self._starts, seq - 1)
        # chunks[i-1] starts at or before seq - 1; chunks[i:] start at seq or later
        del self._chunks[i:]
        del self._starts[i:]
        if self._chunks:
            c = self._chunks[-1]
            c.count = min(c.count, seq - c.seq)
        self._last = seq - 1

    def _drop_before(self, seq: int) -> None:
        """Forget records before ``seq`` (in memory)."""
        i = bisect.bisect_right(self._starts, seq) - 1
        if i >= 0 and self._chunks[i].seq + self._chunks[i].count <= seq:
            i += 1  # that chunk ends before seq too (the log is empty from seq)
        if i > 0:
            del self._chunks[:i]
            del self._starts[:i]
        self._first = seq

    def _locate(self, seq: int) -> _Chunk:
        i = bisect.bisect_right(self._starts, seq) - 1
        return self._chunks[i]

    # -- writing -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("operation on a closed SegmentLog")

    def _write(self, chunk: bytes) -> tuple[int, int]:
        """Write one encoded chunk at the end of the data, durably. (segment, offset)."""
        if self._end + len(chunk) > self._sizes[self._seg]:
            self._next_segment(len(chunk))
        seg, at = self._seg, self._end
        fd = self._fds[seg]
        try:
            if os.pwrite(fd, chunk, at) != len(chunk):
                raise OSError(f"short write at offset {at}")
            if self._sync:
                os.fdatasync(fd)
            else:
                self._unsynced.add(seg)
        except OSError as exc:
            raise StorageError(f"{self._seg_path(seg)}: write failed ({exc})") from exc
        self._end = at + len(chunk)
        if self._end * 2 > self._sizes[seg]:
            self._prepare_spare()
        return seg, at

    def append(self, records: Iterable[Any]) -> int:
        """Append ``records`` (bytes-like) as one durable write; the last seq written.

        :raises TypeError: ``records`` is one bytes-like object or str, or holds an item
            that is not bytes-like (``bytes(5)`` would be five zero bytes).
        """
        self._check_open()
        if isinstance(records, (bytes, bytearray, memoryview, str)) or not isinstance(
            records, Iterable
        ):
            raise TypeError(
                f"records must be an iterable of bytes-like objects, not {type(records).__name__}"
            )
        # The body in one pass: u32 length | payload per record.
        parts: list[bytes] = []
        add = parts.append
        pack = _LEN.pack
        i = -1
        for i, r in enumerate(records):
            if type(r) is not bytes:
                try:
                    r = memoryview(r).tobytes()
                except TypeError:
                    raise TypeError(
                        f"records[{i}] must be bytes-like, not {type(r).__name__}"
                    ) from None
            n = len(r)
            if n > MAX_RECORD:
                raise ValueError(f"a record of {n} bytes is larger than {MAX_RECORD}")
            add(pack(n))
            add(r)
        if i < 0:
            return self._last
        return self.append_framed(b"".join(parts), i + 1)

    def append_framed(self, body: bytes, count: int) -> int:
        """Append ``count`` records already framed as a chunk body (``count`` x (u32
        length | payload), little-endian: what :meth:`append` builds from the records) as
        one durable write; the last seq written. For a caller that can build the body
        with its own record headers in one pass instead of encoding every record twice.

        The framing is the caller's to get right: it is not parsed here (recovery refuses
        a chunk whose body does not hold exactly ``count`` records).

        :raises ValueError: ``count`` is not positive, or ``body`` is too short for it.
        """
        self._check_open()
        if count < 1 or len(body) < 4 * count:
            raise ValueError(f"a body of {len(body)} bytes cannot hold {count} records")
        seq = self._last + 1
        chunk = _frame_chunk(_RECORDS, seq, count, body)
        seg, at = self._write(chunk)
        self._add(_Chunk(seq, count, seg, at + HEADER_SIZE, len(body)))
        self._last = seq + count - 1
        return self._last

    def truncate_suffix(self, from_seq: int) -> None:
        """Delete records ``from_seq`` and after (durably)."""
        self._check_open()
        if from_seq > self._last:
            return
        if from_seq < self._first:
            raise ValueError(f"truncate_suffix({from_seq}): before the first record {self._first}")
        self._write(_frame_chunk(_CUT, from_seq, 0, b""))
        self._drop_from(from_seq)

    def truncate_prefix(self, upto: int) -> None:
        """Delete records up to and including ``upto`` (durably); whole segments that
        hold nothing after it are removed."""
        self._check_open()
        if upto < self._first:
            return
        if upto > self._last:
            raise ValueError(f"truncate_prefix({upto}): after the last record {self._last}")
        start = upto + 1
        self._write(_frame_chunk(_START, start, 0, b""))
        self._drop_before(start)
        keep = self._chunks[0].seg if self._chunks else self._seg
        for n in sorted(self._fds):
            if n >= keep or n >= self._seg:
                break
            self._delete_segment(n)
        # A removed name need not be durable: recovery of a segment that comes back holds
        # only records before the head chunk, which recovery drops again.

    def sync(self) -> None:
        """Flush everything written (a no-op when every write already is durable)."""
        self._check_open()
        for n in sorted(self._unsynced | {self._seg}):
            if n in self._fds:  # not deleted by a compaction since
                os.fdatasync(self._fds[n])
        if self._dir_unsynced:
            _fsync_dir(self._path)  # the names of segments made without a flush
        self._unsynced.clear()
        self._dir_unsynced = False

    # -- reading -----------------------------------------------------------------------------

    def _records(self, c: _Chunk) -> list[bytes]:
        body = os.pread(self._fds[c.seg], c.body_len, c.body_at)
        if len(body) != c.body_len:
            raise self._corrupt(c.seg, c.seq, "a chunk cut short")
        out = []
        pos = 0
        unpack = _LEN.unpack_from
        for _ in range(c.count):
            (ln,) = unpack(body, pos)
            out.append(body[pos + 4 : pos + 4 + ln])
            pos += 4 + ln
        return out

    def read(self, seq: int) -> bytes:
        """Record ``seq``; IndexError (as the Wal) when it is not in the log."""
        self._check_open()
        if not self._first <= seq <= self._last:
            raise IndexError(f"seq {seq} is outside the log [{self._first}, {self._last}]")
        c = self._locate(seq)
        return self._records(c)[seq - c.seq]

    def scan(self, from_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, record) from ``from_seq`` (default: the first) to the last, in order."""
        self._check_open()
        seq = self._first if from_seq is None else max(from_seq, self._first)
        if seq > self._last:
            return
        i = bisect.bisect_right(self._starts, seq) - 1
        chunks = self._chunks[i:]
        for c in chunks:
            recs = self._records(c)
            for k in range(max(0, seq - c.seq), min(c.count, len(recs))):
                yield c.seq + k, recs[k]

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close_fds()

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SegmentLog({self._path!r}, first_seq={self._first}, last_seq={self._last})"
