"""SegmentLog on real files: the Wal API, truncations, rollovers, recovery of damaged segments.

Segments are made small (4096 bytes) so that appends roll over to new segments and
truncate_prefix deletes old ones after a few records. Chunks are found in the files with
a parser of the documented layout written here, not with the code under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import distsync
from distsync.errors import CorruptLogError, StorageError
from distsync.raft.segment_log import SEGMENT_BYTES, SegmentLog

SRC = str(Path(distsync.__file__).resolve().parents[1])
SEG = 4096
HEAD = struct.Struct("<IBBHIIQQ")  # magic, kind, 0, 0, count, body length, seq, checksum
MAGIC = 0x31475344
RECORDS, CUT, START = 1, 2, 3


def payload(seq: int, size: int = 100) -> bytes:
    """A record that names its own sequence number, so misplaced data shows."""
    head = f"rec-{seq:08d}-".encode()
    return (head * (size // len(head) + 1))[:size]


def open_log(path: Path, sync: bool = False, segment_bytes: int = SEG) -> SegmentLog:
    return SegmentLog(path, sync=sync, segment_bytes=segment_bytes)


def seg_name(n: int) -> str:
    return f"seg-{n:016x}.log"


def segments(path: Path) -> list[int]:
    """The segment numbers in the directory, in order."""
    return sorted(int(p.name[4:20], 16) for p in path.glob("seg-*.log"))


@dataclass
class Chunk:
    file: Path
    offset: int
    kind: int
    count: int
    seq: int
    body_len: int

    @property
    def end(self) -> int:
        """Where the next chunk starts (the chunk padded to 8 bytes)."""
        return (self.offset + HEAD.size + self.body_len + 7) & ~7


def chunks_of(file: Path) -> list[Chunk]:
    """The chunks of one segment file, read with the documented layout."""
    raw = file.read_bytes()
    out = []
    pos = 0
    while pos + HEAD.size <= len(raw):
        magic, kind, _z1, _z2, count, blen, seq, _check = HEAD.unpack_from(raw, pos)
        if magic == 0:
            break
        assert magic == MAGIC, f"{file.name}: no chunk at offset {pos}"
        chunk = Chunk(file, pos, kind, count, seq, blen)
        out.append(chunk)
        pos = chunk.end
    return out


def all_chunks(path: Path) -> list[Chunk]:
    return [c for n in segments(path) for c in chunks_of(path / seg_name(n))]


def records_chunk(path: Path, seq: int) -> Chunk:
    """The (only) records chunk that starts at ``seq``."""
    found = [c for c in all_chunks(path) if c.kind == RECORDS and c.seq == seq]
    assert len(found) == 1, found
    return found[0]


def patch(file: Path, offset: int, data: bytes) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(file: Path, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def data_end(path: Path) -> tuple[Path, int]:
    """The last segment holding chunks, and where its data ends."""
    for n in reversed(segments(path)):
        cs = chunks_of(path / seg_name(n))
        if cs:
            return path / seg_name(n), cs[-1].end
    raise AssertionError("no data")


def assert_log(log: SegmentLog, first: int, want: dict[int, bytes]) -> None:
    """``log`` holds exactly ``want`` (seq -> record), starting at ``first``."""
    last = first + len(want) - 1
    assert (log.first_seq, log.last_seq) == (first, last)
    assert sorted(want) == list(range(first, last + 1))
    assert dict(log.scan()) == want
    assert [s for s, _ in log.scan()] == list(range(first, last + 1))
    for s, r in want.items():
        assert log.read(s) == r
    for s in (first - 1, last + 1):
        with pytest.raises(IndexError):
            log.read(s)


def build(path: Path, n: int, per_append: int = 1, size: int = 100) -> dict[int, bytes]:
    """A log of records 1..n, ``per_append`` records per append; its contents."""
    want = {s: payload(s, size) for s in range(1, n + 1)}
    with open_log(path) as log:
        for lo in range(1, n + 1, per_append):
            hi = min(lo + per_append, n + 1)
            assert log.append([want[s] for s in range(lo, hi)]) == hi - 1
    return want


# --- the API ---------------------------------------------------------------------------------


def test_new_log_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        assert (log.first_seq, log.last_seq) == (1, 0)
        assert log.path == str(path)
        assert list(log.scan()) == []
        for s in (0, 1, -1):
            with pytest.raises(IndexError):
                log.read(s)
    # One segment, created full of zeros.
    assert segments(path) == [1]
    assert (path / seg_name(1)).read_bytes() == bytes(SEG)
    with open_log(path) as log:
        assert (log.first_seq, log.last_seq) == (1, 0)
        assert log.append([b"a"]) == 1


def test_append_numbers_records_from_one(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        assert log.append([b"a", b"bc"]) == 2
        assert log.append([b""]) == 3  # empty records are records
        assert log.append([]) == 3  # empty batch: unchanged, nothing written
        assert log.append(iter([])) == 3
        assert log.append((bytearray(b"x"), memoryview(b"yz"), memoryview(b"-uv-")[1:3])) == 6
        assert log.append(r for r in [b"g1", b"g2"]) == 8  # any iterable
        want = [b"a", b"bc", b"", b"x", b"yz", b"uv", b"g1", b"g2"]
        assert [log.read(s) for s in range(1, 9)] == want
        assert list(log.scan()) == list(enumerate(want, 1))
        assert list(log.scan(4)) == list(enumerate(want, 1))[3:]
        assert list(log.scan(9)) == []
        assert all(type(r) is bytes for _, r in log.scan())
        assert all(type(log.read(s)) is bytes for s in range(1, 9))
    # Four chunks: the empty batches wrote nothing.
    assert [(c.kind, c.seq, c.count) for c in all_chunks(path)] == [
        (RECORDS, 1, 2),
        (RECORDS, 3, 1),
        (RECORDS, 4, 3),
        (RECORDS, 7, 2),
    ]
    with open_log(path) as log:
        assert list(log.scan()) == list(enumerate(want, 1))


@pytest.mark.parametrize(
    "records",
    [b"abc", bytearray(b"ab"), memoryview(b"ab"), "abc", 123, None, [b"ok", "text"], [b"ok", 5]],
)
def test_append_rejects_what_is_not_bytes_like_records(tmp_path: Path, records: object) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        log.append([b"first"])
        with pytest.raises(TypeError, match="records"):
            log.append(records)  # type: ignore[arg-type]
        assert log.last_seq == 1  # nothing half-appended
        assert log.append([b"second"]) == 2
    with open_log(path) as log:
        assert list(log.scan()) == [(1, b"first"), (2, b"second")]


def test_append_framed_writes_the_chunk_append_writes(tmp_path: Path) -> None:
    records = [b"ab", b"", b"c" * 300]
    body = b"".join(struct.pack("<I", len(r)) + r for r in records)
    with open_log(tmp_path / "a") as a, open_log(tmp_path / "b") as b:
        assert a.append([b"first"]) == b.append_framed(struct.pack("<I", 5) + b"first", 1) == 1
        assert a.append(records) == 4
        assert b.append_framed(body, len(records)) == 4
        assert list(b.scan()) == list(a.scan())
    # Byte-identical files: the same chunks, and a reopened log serves the records.
    file = seg_name(1)
    assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    with open_log(tmp_path / "b") as b:
        assert list(b.scan()) == [(1, b"first")] + list(enumerate(records, 2))


@pytest.mark.parametrize(("body", "count"), [(b"", 0), (b"", 1), (b"\0" * 7, 2), (b"\0" * 4, -1)])
def test_append_framed_refuses_a_body_that_cannot_hold_count_records(
    tmp_path: Path, body: bytes, count: int
) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        with pytest.raises(ValueError, match="cannot hold"):
            log.append_framed(body, count)
        assert log.last_seq == 0
    assert all_chunks(path) == []


def test_appended_records_are_copies(tmp_path: Path) -> None:
    buf = bytearray(b"before")
    with open_log(tmp_path / "log") as log:
        log.append([buf, memoryview(buf)])
        buf[:] = b"AFTER!"
        assert list(log.scan()) == [(1, b"before"), (2, b"before")]


def test_chunk_layout_matches_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        log.append([b"ab", b"c"])
        log.truncate_suffix(2)
        log.truncate_prefix(1)
    raw = (path / seg_name(1)).read_bytes()
    magic, kind, z1, z2, count, blen, seq, check = HEAD.unpack_from(raw, 0)
    assert (magic, kind, z1, z2, count, blen, seq) == (MAGIC, RECORDS, 0, 0, 2, 4 + 2 + 4 + 1, 1)
    assert raw[:4] == b"DSG1"
    body = raw[32 : 32 + blen]
    assert body == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    assert check == xxhash.xxh3_64_intdigest(raw[:24] + body)
    assert raw[32 + blen : 48] == bytes(48 - 32 - blen)  # padded to 8 bytes
    # Then the cut chunk (records from 2 on are void) and the head chunk (start at 2).
    cut = HEAD.unpack_from(raw, 48)
    assert cut[:7] == (MAGIC, CUT, 0, 0, 0, 0, 2)
    assert cut[7] == xxhash.xxh3_64_intdigest(raw[48:72])
    head = HEAD.unpack_from(raw, 80)
    assert head[:7] == (MAGIC, START, 0, 0, 0, 0, 2)
    assert raw[112:] == bytes(SEG - 112)  # zeros to the end of the segment


def test_reads_cross_chunk_and_segment_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want: dict[int, bytes] = {}
    sizes = [0, 1, 7, 8, 100, 333, 1000, 2000, 4000]
    with open_log(path) as log:
        seq = 1
        for i in range(60):
            batch = [payload(seq + k, sizes[(i + k) % len(sizes)]) for k in range(i % 5 + 1)]
            assert log.append(batch) == seq + len(batch) - 1
            want.update((seq + k, r) for k, r in enumerate(batch))
            seq += len(batch)
        assert_log(log, 1, want)
        for start in range(0, seq + 2):
            assert list(log.scan(start)) == [(s, want[s]) for s in range(max(start, 1), seq)]
    segs = segments(path)
    assert len(segs) > 10 and segs == list(range(1, len(segs) + 1))
    # A segment is SEG bytes unless a chunk bigger than that needed more.
    for n in segs:
        size = (path / seg_name(n)).stat().st_size
        cs = chunks_of(path / seg_name(n))
        assert size == SEG or (len(cs) == 1 and cs[0].end == size and cs[0].end > SEG)
    cs = all_chunks(path)
    assert [c.seq for c in cs] == sorted(c.seq for c in cs)
    assert sum(c.count for c in cs) == len(want)
    with open_log(path) as log:
        assert_log(log, 1, want)
        assert log.append([b"more"]) == len(want) + 1


def test_a_record_larger_than_a_segment_gets_a_bigger_segment(tmp_path: Path) -> None:
    path = tmp_path / "log"
    big = os.urandom(3 * SEG + 5)
    batch = [os.urandom(1500) for _ in range(5)]  # a batch larger than a segment
    with open_log(path) as log:
        log.append([b"small"])
        assert log.append([big]) == 2
        assert log.append([b"after"]) == 3
        assert log.append(batch) == 8
        assert log.append([b"end"]) == 9
        want = dict(enumerate([b"small", big, b"after", *batch, b"end"], 1))
        assert_log(log, 1, want)
    sizes = {n: (path / seg_name(n)).stat().st_size for n in segments(path)}
    big_seg = records_chunk(path, 2).file
    assert big_seg.stat().st_size >= len(big) + 4 + 32
    assert big_seg.stat().st_size % 8 == 0
    assert records_chunk(path, 1).file != big_seg != records_chunk(path, 3).file
    assert records_chunk(path, 4).file.stat().st_size > SEG
    assert sorted(sizes.values())[0] == SEG
    with open_log(path) as log:
        assert_log(log, 1, want)
        log.truncate_prefix(2)
        assert_log(log, 3, {s: want[s] for s in range(3, 10)})
    assert big_seg.name not in os.listdir(path)  # deleted: wholly before the head


@pytest.mark.parametrize("before", ["new log", "torn first chunk"])
def test_a_first_chunk_larger_than_the_segment_leaves_no_empty_segment(
    tmp_path: Path, before: str
) -> None:
    path = tmp_path / "log"
    if before == "torn first chunk":
        build(path, 30)
        with open_log(path) as log:
            log.append([payload(31, 2000)])  # alone at the start of segment 2
        patch(records_chunk(path, 31).file, 512, bytes(512))  # a sector never written
    kept = {s: payload(s) for s in range(1, 31)} if before == "torn first chunk" else {}
    big = [os.urandom(3000), os.urandom(3000)]
    with open_log(path) as log:
        assert log.append(big) == len(kept) + 2
    segs = segments(path)
    for n in segs:  # none empty before the one with the big chunk
        assert chunks_of(path / seg_name(n)) or n == segs[-1]
    with open_log(path) as log:
        assert_log(log, 1, kept | {len(kept) + 1: big[0], len(kept) + 2: big[1]})
        log.append([b"x"])
    with open_log(path) as log:
        assert log.read(len(kept) + 3) == b"x"


def test_read_outside_the_log_is_a_key_error(tmp_path: Path) -> None:
    with open_log(tmp_path / "log") as log:
        log.append([b"a", b"b", b"c", b"d"])
        log.truncate_prefix(1)
        log.truncate_suffix(4)
        assert (log.first_seq, log.last_seq) == (2, 3)
        for s in (-5, 0, 1, 4, 5, 2**64):
            with pytest.raises(IndexError):
                log.read(s)
        assert [log.read(2), log.read(3)] == [b"b", b"c"]
        # scan clamps its start to the log
        assert list(log.scan(0)) == [(2, b"b"), (3, b"c")]
        assert list(log.scan(3)) == [(3, b"c")]
        assert list(log.scan(4)) == list(log.scan(100)) == []


# --- truncations -----------------------------------------------------------------------------


def test_truncate_suffix_mid_chunk_then_append_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 100, per_append=10)  # chunks of 10 records over several segments
    assert len(segments(path)) >= 3
    with open_log(path) as log:
        log.truncate_suffix(101)  # nothing from there: no-op
        log.truncate_suffix(500)
        assert log.last_seq == 100
        log.truncate_suffix(95)  # inside the last chunk
        assert_log(log, 1, {s: want[s] for s in range(1, 95)})
        log.truncate_suffix(13)  # inside a chunk of the first segment
        assert_log(log, 1, {s: want[s] for s in range(1, 13)})
        assert log.append([b"x", b"y"]) == 14
        want = {s: want[s] for s in range(1, 13)} | {13: b"x", 14: b"y"}
        assert_log(log, 1, want)
        with pytest.raises(ValueError, match="truncate_suffix"):
            log.truncate_suffix(0)
        assert_log(log, 1, want)
    with open_log(path) as log:
        assert_log(log, 1, want)
        log.truncate_prefix(10)
        with pytest.raises(ValueError, match="truncate_suffix"):
            log.truncate_suffix(10)  # before the first record
        log.truncate_suffix(11)  # everything: empty, numbering continues from 11
        assert (log.first_seq, log.last_seq) == (11, 10)
        assert list(log.scan()) == []
    with open_log(path) as log:
        assert (log.first_seq, log.last_seq) == (11, 10)
        assert log.append([b"z"]) == 11
        assert_log(log, 11, {11: b"z"})
    with open_log(path) as log:
        assert_log(log, 11, {11: b"z"})


def test_truncate_prefix_of_everything_deletes_the_segment_of_the_last_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        for s in range(1, 30):
            log.append([payload(s)])  # 29 chunks of 136 bytes
        log.append([payload(30, 4096 - 29 * 136 - 36)])  # fills segment 1 exactly
        assert records_chunk(path, 30).end == SEG
        log.truncate_prefix(30)  # the head chunk goes to segment 2
        assert chunks_of(path / seg_name(2))[0].kind == START
        assert segments(path) == [2]  # segment 1 holds nothing from 31 on
        assert (log.first_seq, log.last_seq) == (31, 30)
        assert log.append([b"a"]) == 31
    with open_log(path) as log:
        assert_log(log, 31, {31: b"a"})


def test_truncate_prefix_never_deletes_the_segment_it_writes_to(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        for s in range(1, 61):
            log.append([payload(s)])
        last = segments(path)[-1]
        log.truncate_prefix(60)  # everything
        assert segments(path)[0] >= last - 1  # at most the segment of record 60 before it
        assert log.append([b"n"]) == 61
    with open_log(path) as log:
        assert_log(log, 61, {61: b"n"})


def test_truncate_prefix_mid_chunk_then_append_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 100, per_append=10)
    with open_log(path) as log:
        log.truncate_prefix(0)  # before the first record: no-op
        assert log.first_seq == 1
        log.truncate_prefix(15)  # inside the second chunk
        want = {s: want[s] for s in range(16, 101)}
        assert_log(log, 16, want)
        log.truncate_prefix(3)  # already gone: no-op
        assert log.first_seq == 16
        with pytest.raises(ValueError, match="truncate_prefix"):
            log.truncate_prefix(101)  # after the last record
        assert_log(log, 16, want)
        assert log.append([b"x"]) == 101
        want[101] = b"x"
    with open_log(path) as log:
        assert_log(log, 16, want)
        log.truncate_prefix(101)  # everything: empty, numbering continues
        assert (log.first_seq, log.last_seq) == (102, 101)
        assert list(log.scan()) == []
        with pytest.raises(ValueError, match="truncate_prefix"):
            log.truncate_prefix(102)
    with open_log(path) as log:
        assert (log.first_seq, log.last_seq) == (102, 101)
        assert log.append([b"next"]) == 102
        assert_log(log, 102, {102: b"next"})


def test_truncate_prefix_deletes_the_segments_wholly_before_the_head(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 200)  # one record per chunk, 136 bytes each: 30 per segment
    assert segments(path) == list(range(1, 9))  # 7 with data and a spare
    where = {s: int(records_chunk(path, s).file.name[4:20], 16) for s in want}
    with open_log(path) as log:
        first_of_4 = min(s for s in want if where[s] == 4)
        log.truncate_prefix(first_of_4 - 1)  # segment 3 holds nothing after it now
        assert segments(path) == list(range(4, 9))
        log.truncate_prefix(first_of_4)  # segment 4 still holds live records
        assert segments(path) == list(range(4, 9))
        want = {s: want[s] for s in range(first_of_4 + 1, 201)}
        assert_log(log, first_of_4 + 1, want)
    with open_log(path) as log:
        assert_log(log, first_of_4 + 1, want)
        log.truncate_prefix(199)  # the head chunk goes in the last segment, which stays
        assert segments(path)[0] == where[200]
        assert_log(log, 200, {200: want[200]})
        log.append([b"a"] * 100)
    with open_log(path) as log:
        assert_log(log, 200, {200: want[200]} | {s: b"a" for s in range(201, 301)})


def test_chunks_about_deleted_segments_replay_after_a_compaction(tmp_path: Path) -> None:
    """The first segment left by a compaction may hold a cut or an older head chunk
    that points into the deleted segments: recovery replays them, not refuses."""
    path = tmp_path / "log"
    big = 500  # chunks of 536 bytes: 7 to a segment
    with open_log(path) as log:
        for s in range(1, 9):  # records 1..7 in segment 1, 8 in segment 2
            log.append([payload(s, big)])
        log.truncate_prefix(2)  # head 3, in segment 2: 3..7 live in segment 1
        log.truncate_suffix(5)  # cut 5, in segment 2: before record 8, its first
        log.append([b"five", b"six"])
        log.truncate_prefix(4)  # segment 1 holds nothing from 5 on: deleted
        want = {5: b"five", 6: b"six"}
        assert segments(path) == [2]
        assert_log(log, 5, want)
    with open_log(path) as log:
        assert_log(log, 5, want)
        log.append([b"seven"])
    with open_log(path) as log:
        assert_log(log, 5, want | {7: b"seven"})


def test_a_head_chunk_first_in_a_segment_left_by_a_compaction(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        for s in range(1, 31):  # segment 1 full: 30 chunks of 136 bytes, 16 bytes left
            log.append([payload(s)])
        log.truncate_prefix(10)  # head 11: the first chunk of segment 2
        log.truncate_suffix(20)
        log.append([b"x"] * 5)  # 20..24
        log.truncate_prefix(19)  # segment 1 goes
        assert segments(path)[0] == 2
        assert chunks_of(path / seg_name(2))[0].kind == START
        want = {s: b"x" for s in range(20, 25)}
        assert_log(log, 20, want)
    with open_log(path) as log:
        assert_log(log, 20, want)


def test_records_lost_with_a_segment_after_a_compaction_are_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 200)  # 30 records to a segment
    with open_log(path) as log:
        log.truncate_prefix(70)  # segments 1 and 2 go; 71..90 live in segment 3
    assert segments(path)[0] == 3
    (path / seg_name(3)).unlink()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(path / seg_name(4))
    assert info.value.seq == 71


def test_cut_then_head_then_reopen(tmp_path: Path) -> None:
    """Chunks replayed across segments in the order written: the cut voids records
    that are later written again; the head moves past the rewritten ones."""
    path = tmp_path / "log"
    want = build(path, 70)
    with open_log(path) as log:
        log.truncate_suffix(40)
        log.append([b"new"] * 50)
        want = {s: want[s] for s in range(1, 40)} | {s: b"new" for s in range(40, 90)}
        log.truncate_prefix(20)
        want = {s: r for s, r in want.items() if s > 20}
        assert_log(log, 21, want)
    with open_log(path) as log:
        assert_log(log, 21, want)


# --- recovery --------------------------------------------------------------------------------


def last_chunk(path: Path) -> Chunk:
    return all_chunks(path)[-1]


def assert_zeros_after(path: Path, want_last: int) -> None:
    """The log was cut after ``want_last``: everything after its data is zeros."""
    file, end = data_end(path)
    raw = file.read_bytes()
    assert raw[end:] == bytes(len(raw) - end)
    assert all_chunks(path)[-1].seq + all_chunks(path)[-1].count - 1 == want_last


def check_cut_to(path: Path, want: dict[int, bytes], last: int) -> None:
    """Open a damaged log: records 1..last survive, the tail is zeroed, appends and
    reopens work."""
    kept = {s: want[s] for s in range(1, last + 1)}
    with open_log(path) as log:
        assert_log(log, 1, kept)
    assert_zeros_after(path, last)
    with open_log(path) as log:
        assert_log(log, 1, kept)
        assert log.append([b"new1", b"new2"]) == last + 2
    with open_log(path) as log:
        assert_log(log, 1, kept | {last + 1: b"new1", last + 2: b"new2"})


def last_chunk_damage(c: Chunk, damage: str) -> tuple[int, bytes]:
    """(file offset, bytes to write there) for a kind of damage to chunk ``c``."""
    size = c.end - c.offset
    first_sector = (c.offset + 511) // 512 * 512  # the first sector wholly in the chunk
    assert first_sector + 1024 <= c.end
    return {
        "zero the second half": (c.offset + size // 2, bytes(size - size // 2)),
        "zero the header": (c.offset, bytes(32)),
        "zero the magic": (c.offset, bytes(4)),
        "zero a sector": (first_sector, bytes(512)),
        "zero from a sector on": (first_sector + 512, bytes(c.end - first_sector - 512)),
        "break the length": (c.offset + 12, b"\xff\xff"),
        "zero the last byte": (c.end - 1, b"\0"),
        "zero the checksum": (c.offset + 24, bytes(8)),
        "zero 511 bytes": (first_sector + 1, bytes(511)),
        "flip the count": (c.offset + 8, b"\x07"),
        "flip the body": (c.offset + 700, b"!"),
    }[damage]


@pytest.mark.parametrize(
    "damage",
    [
        "zero the second half",
        "zero the header",
        "zero the magic",
        "zero a sector",
        "zero from a sector on",
        "break the length",
    ],
)
def test_torn_last_chunk_is_cut_and_zeroed(tmp_path: Path, damage: str) -> None:
    """A write cut short leaves some sectors of the chunk as they were (zeros), or its
    header broken: a torn tail."""
    path = tmp_path / "log"
    want = build(path, 50, per_append=5, size=300)  # chunks of 1552 bytes, 2 per segment
    c = last_chunk(path)
    assert (c.seq, c.count) == (46, 5)
    patch(c.file, *last_chunk_damage(c, damage))
    check_cut_to(path, want, 45)


@pytest.mark.parametrize(
    "damage",
    [
        "zero the last byte",
        "zero the checksum",
        "zero 511 bytes",
        "flip the count",
        "flip the body",
    ],
)
def test_damaged_last_chunk_with_every_sector_written_is_corruption(
    tmp_path: Path, damage: str
) -> None:
    """Every sector of the last chunk holds data yet its checksum fails: it was damaged
    after it was acknowledged, not torn, and is refused."""
    path = tmp_path / "log"
    build(path, 50, per_append=5, size=300)
    c = last_chunk(path)
    patch(c.file, *last_chunk_damage(c, damage))
    damaged = c.file.read_bytes()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(c.file)
    assert info.value.seq == 46
    assert c.file.read_bytes() == damaged


def test_torn_chunk_at_the_start_of_a_new_segment_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 25, per_append=5, size=300)  # chunks of 1552 bytes, 2 per segment
    c = last_chunk(path)
    assert c.offset == 0 and c.file.name == seg_name(3)
    patch(c.file, 512, bytes(512))  # its second sector never written
    check_cut_to(path, want, 20)
    assert c.file.exists()  # the segment stays, zeroed, and takes the next appends


@pytest.mark.parametrize("garbage", [b"\xff" * 100, b"\x01", b"DSG1" + bytes(60) + b"x"])
def test_garbage_after_the_end_of_data_is_zeroed(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "log"
    want = build(path, 20, per_append=3)
    file, end = data_end(path)
    patch(file, end + 8, garbage)
    check_cut_to(path, want, 20)


def test_garbage_in_a_spare_segment_after_the_data_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 20)
    assert segments(path) == [1, 2]  # data and a spare
    spare = path / seg_name(2)
    spare.write_bytes(b"\x99" * 40 + bytes(SEG - 40))  # a first chunk that never made it
    with open_log(path) as log:
        assert_log(log, 1, want)
        assert spare.read_bytes() == bytes(SEG)  # zeroed
        assert log.append([b"x"]) == 21
    assert records_chunk(path, 21).file == spare  # the log went on in it
    with open_log(path) as log:
        assert_log(log, 1, want | {21: b"x"})


@pytest.mark.parametrize("where", ["magic", "kind", "count", "length", "seq", "checksum", "body"])
def test_damaged_chunk_followed_by_valid_ones_is_corruption(tmp_path: Path, where: str) -> None:
    path = tmp_path / "log"
    build(path, 50, per_append=5)
    c = records_chunk(path, 11)  # chunks 16.. follow in the same segment
    assert chunks_of(c.file)[-1].seq > 11
    at = {"magic": 0, "kind": 4, "count": 8, "length": 12, "seq": 16, "checksum": 24}.get(where, 99)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    flip(c.file, c.offset + at)
    damaged = c.file.read_bytes()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(c.file)
    assert info.value.seq == 11
    assert c.file.name in str(info.value) and "11" in str(info.value)
    # Nothing was repaired or deleted.
    assert {p.name for p in path.iterdir()} == set(before)
    assert c.file.read_bytes() == damaged


@pytest.mark.parametrize("zeroed", ["header", "chunk"])
def test_zeros_over_a_chunk_followed_by_valid_ones_is_corruption(
    tmp_path: Path, zeroed: str
) -> None:
    """Zeros tell the end of the data only when nothing valid follows them: else the
    records after them would be zeroed away as a torn tail."""
    path = tmp_path / "log"
    build(path, 20, per_append=2)
    c = records_chunk(path, 5)
    patch(c.file, c.offset, bytes(32 if zeroed == "header" else c.end - c.offset))
    damaged = c.file.read_bytes()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(c.file)
    assert info.value.seq == 5
    assert c.file.read_bytes() == damaged  # nothing zeroed


def test_damaged_last_chunk_of_a_segment_with_data_after_it_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 60)
    c = chunks_of(path / seg_name(1))[-1]
    flip(c.file, c.offset + 50)
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(c.file)
    assert info.value.seq == c.seq


def test_damaged_chunk_in_an_earlier_segment_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 200)
    c = records_chunk(path, 45)  # in segment 2 of 7
    flip(c.file, c.offset + 60)
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(path / seg_name(2))
    assert info.value.seq == 45


def test_a_valid_chunk_in_the_wrong_place_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 20)
    c11, c12 = records_chunk(path, 11), records_chunk(path, 12)
    raw = c11.file.read_bytes()
    patch(c12.file, c12.offset, raw[c11.offset : c11.end])  # record 11's chunk twice
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(c12.file)
    assert info.value.seq == 12


def test_a_valid_chunk_repeated_at_the_tail_is_corruption(tmp_path: Path) -> None:
    # A whole valid chunk that does not continue the log is not a torn write.
    path = tmp_path / "log"
    build(path, 5)
    c = records_chunk(path, 5)
    patch(c.file, c.end, c.file.read_bytes()[c.offset : c.end])
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.seq == 6


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 150)
    assert segments(path) == [1, 2, 3, 4, 5, 6]
    (path / seg_name(3)).unlink()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert seg_name(4) in info.value.path or seg_name(3) in str(info.value)


def test_missing_first_segment_without_a_head_chunk_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 100)
    (path / seg_name(1)).unlink()
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(path / seg_name(2))
    assert info.value.seq == 31  # the first record that is left


def test_missing_first_segments_with_a_head_chunk_are_compaction(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 100)
    with open_log(path) as log:
        log.truncate_prefix(70)
    assert segments(path)[0] == 3
    with open_log(path) as log:
        assert_log(log, 71, {s: want[s] for s in range(71, 101)})


def test_an_empty_segment_before_data_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(path, 100)
    (path / seg_name(2)).write_bytes(bytes(SEG))
    with pytest.raises(CorruptLogError) as info:
        open_log(path)
    assert info.value.path == str(path / seg_name(2))
    assert info.value.seq == 31  # the first record lost with it


def test_leftover_tmp_segment_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 40)
    n = segments(path)[-1]
    for extra in (n + 1, n + 2):
        (path / (seg_name(extra) + ".tmp")).write_bytes(b"\x07" * 1000)  # half-made
    with open_log(path) as log:
        assert_log(log, 1, want)
        assert not list(path.glob("*.tmp"))
        assert log.append([payload(s) for s in range(41, 101)]) == 100
    with open_log(path) as log:
        assert_log(log, 1, want | {s: payload(s) for s in range(41, 101)})


def test_an_empty_spare_segment_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        for s in range(1, 21):  # 20 of 30 slots: more than half, the spare is prepared
            log.append([payload(s)])
    assert segments(path) == [1, 2]
    spare = path / seg_name(2)
    assert spare.read_bytes() == bytes(SEG)
    inode = spare.stat().st_ino
    # Two more zero-filled segments: only one spare is kept.
    (path / seg_name(3)).write_bytes(bytes(SEG))
    (path / seg_name(4)).write_bytes(bytes(SEG * 2))
    with open_log(path) as log:
        assert segments(path) == [1, 2]
        assert spare.stat().st_ino == inode
        for s in range(21, 41):
            log.append([payload(s)])
        assert spare.stat().st_ino == inode  # written into, not made again
        assert records_chunk(path, 31).file == spare
        assert_log(log, 1, {s: payload(s) for s in range(1, 41)})
    with open_log(path) as log:
        assert_log(log, 1, {s: payload(s) for s in range(1, 41)})


def test_a_spare_too_small_for_the_next_chunk_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_log(path) as log:
        for s in range(1, 21):
            log.append([payload(s)])
    assert segments(path) == [1, 2]
    big = os.urandom(SEG * 2)
    with open_log(path) as log:
        log.append([payload(s) for s in range(21, 31)])  # fills segment 1
        assert log.append([big]) == 31
    assert (path / seg_name(2)).stat().st_size > SEG * 2
    with open_log(path) as log:
        assert_log(log, 1, {s: payload(s) for s in range(1, 31)} | {31: big})


def test_unusable_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError, match="file"):
        open_log(tmp_path / "file")


# --- options and lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False])
def test_sync_modes_keep_the_same_log(tmp_path: Path, sync: bool) -> None:
    path = tmp_path / "log"
    want: dict[int, bytes] = {}
    with SegmentLog(path, sync=sync, segment_bytes=SEG) as log:
        for lo in range(1, 121, 4):
            log.append([payload(s, 150) for s in range(lo, lo + 4)])
        log.sync()
        log.truncate_suffix(101)
        log.truncate_prefix(33)
        log.append([b"tail"])
        log.sync()
        want = {s: payload(s, 150) for s in range(34, 101)} | {101: b"tail"}
        assert_log(log, 34, want)
    assert len(segments(path)) >= 4
    with SegmentLog(path, sync=not sync, segment_bytes=SEG) as log:
        assert_log(log, 34, want)


def test_sync_flushes_every_segment_written_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync=False: sync() must flush the segments an append rolled over from, and the
    directory that names the new ones, not only the segment written last."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name flushed files")
    path = tmp_path / "log"
    flushed: list[str] = []

    def record(real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            flushed.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        return flush

    with open_log(path) as log:
        log.append([payload(1)])
        log.sync()
        monkeypatch.setattr(os, "fdatasync", record(os.fdatasync))
        monkeypatch.setattr(os, "fsync", record(os.fsync))
        for s in range(2, 71):  # segments 1, 2 and 3
            log.append([payload(s)])
        assert flushed == []  # sync=False: nothing flushed by appends
        log.sync()
        assert {seg_name(n) for n in (1, 2, 3)} <= set(flushed)
        assert "log" in flushed  # the directory: segments 2 and 3 are new
        flushed.clear()
        log.append([payload(71)])
        log.sync()
        assert flushed == [seg_name(3)]


def test_default_segment_size(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with SegmentLog(path, sync=False) as log:
        log.append([b"x"])
    assert (path / seg_name(1)).stat().st_size == SEGMENT_BYTES


def test_reopen_with_another_segment_size(tmp_path: Path) -> None:
    path = tmp_path / "log"
    want = build(path, 100)
    with open_log(path, segment_bytes=SEG * 4) as log:
        log.append([payload(s) for s in range(101, 301)])
    want |= {s: payload(s) for s in range(101, 301)}
    sizes = [(path / seg_name(n)).stat().st_size for n in segments(path)]
    assert SEG in sizes and SEG * 4 in sizes
    with open_log(path) as log:
        assert_log(log, 1, want)


@pytest.mark.parametrize("bad", [0, -8, 4095, 4092, 4097, 4100, 4096.0, "4096", None, 2**70 + 1])
def test_bad_segment_bytes_is_a_value_error(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="segment_bytes"):
        SegmentLog(tmp_path / "log", segment_bytes=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "log").exists()


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = open_log(tmp_path / "log")
    log.append([b"a", b"b"])
    log.close()
    log.close()  # idempotent
    for call in (
        lambda: log.append([b"c"]),
        lambda: log.read(1),
        lambda: list(log.scan()),
        lambda: log.truncate_prefix(1),
        lambda: log.truncate_suffix(2),
        lambda: log.sync(),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
    with open_log(tmp_path / "log") as again:
        assert list(again.scan()) == [(1, b"a"), (2, b"b")]
    assert repr(again).endswith("first_seq=1, last_seq=2)")


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with open_log(tmp_path / "log") as log:
            log.append([b"a"])
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="closed"):
        log.append([b"b"])


# --- against an oracle -----------------------------------------------------------------------


class SegmentLogAgainstOracle(RuleBasedStateMachine):
    """Random appends, truncations and reopens against a dict; 4 KiB segments, so that
    appends roll over and truncate_prefix deletes segments every few steps."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="segprop-"))
        self.path = self.dir / "log"
        self.log = open_log(self.path)
        self.first = 1
        self.records: dict[int, bytes] = {}

    @property
    def last(self) -> int:
        return self.first + len(self.records) - 1

    @rule(
        batch=st.lists(
            st.one_of(st.binary(max_size=300), st.binary(min_size=1000, max_size=5000)),
            max_size=6,
        )
    )
    def append(self, batch: list[bytes]) -> None:
        assert self.log.append(batch) == self.last + len(batch)
        last = self.last
        self.records.update((last + 1 + i, r) for i, r in enumerate(batch))

    @rule(batch=st.lists(st.binary(max_size=40), min_size=1, max_size=30))
    def append_small(self, batch: list[bytes]) -> None:
        self.append(batch)

    @rule(data=st.data())
    def truncate_suffix(self, data: st.DataObject) -> None:
        from_seq = data.draw(st.integers(self.first - 2, self.last + 2), label="from_seq")
        if from_seq < self.first and from_seq <= self.last:
            with pytest.raises(ValueError):
                self.log.truncate_suffix(from_seq)
            return
        self.log.truncate_suffix(from_seq)
        for s in range(from_seq, self.last + 1):
            del self.records[s]

    @rule(data=st.data())
    def truncate_prefix(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(self.first - 2, self.last + 2), label="upto")
        if upto > self.last and upto >= self.first:
            with pytest.raises(ValueError):
                self.log.truncate_prefix(upto)
            return
        self.log.truncate_prefix(upto)
        if upto >= self.first:
            for s in range(self.first, upto + 1):
                del self.records[s]
            self.first = upto + 1

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = open_log(self.path)

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(self.first - 2, self.last + 2), label="seq")
        if seq in self.records:
            assert self.log.read(seq) == self.records[seq]
        else:
            with pytest.raises(IndexError):
                self.log.read(seq)

    @rule(data=st.data())
    def scan(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(self.first - 2, self.last + 2), label="start")
        assert list(self.log.scan(start)) == [
            (s, self.records[s]) for s in range(max(start, self.first), self.last + 1)
        ]

    @invariant()
    def matches_the_oracle(self) -> None:
        assert (self.log.first_seq, self.log.last_seq) == (self.first, self.last)
        assert dict(self.log.scan()) == self.records

    @invariant()
    def segments_are_numbered_without_gaps(self) -> None:
        segs = segments(self.path)
        assert segs == list(range(segs[0], segs[0] + len(segs)))

    def teardown(self) -> None:
        self.log.close()
        try:
            # What was acknowledged is what a fresh open finds.
            with open_log(self.path) as log:
                assert (log.first_seq, log.last_seq) == (self.first, self.last)
                assert dict(log.scan()) == self.records
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


TestSegmentLogAgainstOracle = SegmentLogAgainstOracle.TestCase
TestSegmentLogAgainstOracle.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None
)


def test_any_damaged_byte_of_a_chunk_is_caught_never_served(tmp_path: Path) -> None:
    """Flip any byte of any chunk (header, checksum, lengths, payload) of a log over six
    segments: the log is refused, naming the chunk's file and first record, or, for the
    last chunk only when the flip broke its header (a torn write can), opens without it."""
    pristine = tmp_path / "pristine"
    want = build(pristine, 60, per_append=5, size=300)  # 12 chunks of 1552 bytes
    chunks = all_chunks(pristine)
    assert len(chunks) == 12 and len(segments(pristine)) >= 6
    counter = iter(range(10**6))

    @settings(max_examples=150, deadline=None)
    @given(
        which=st.integers(0, 11), where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255)
    )
    def check(which: int, where: float, xor: int) -> None:
        path = tmp_path / f"log{next(counter)}"
        shutil.copytree(pristine, path)
        c = chunks[which]
        file = path / c.file.name
        at = c.offset + int(where * (HEAD.size + c.body_len))
        raw = bytearray(file.read_bytes())
        raw[at] ^= xor
        file.write_bytes(bytes(raw))
        try:
            log = open_log(path)
        except CorruptLogError as exc:
            assert exc.path == str(file)
            assert exc.seq == c.seq
            assert file.read_bytes() == raw  # nothing repaired
            return
        with log:
            assert which == 11, "damage before the last chunk was served"
            assert at - c.offset < HEAD.size, "a last chunk with all its sectors was cut"
            assert_log(log, 1, {s: want[s] for s in range(1, c.seq)})
        shutil.rmtree(path)

    check()


def test_any_torn_write_of_the_last_chunk_is_cut(tmp_path: Path) -> None:
    """A crash during the flush of an append leaves any subset of its 512-byte sectors
    on disk: the log opens with the chunk whole or without it, zeros after its data,
    and takes appends."""
    pristine = tmp_path / "pristine"
    want = build(pristine, 32, per_append=4, size=300)  # the last chunk spans 3+ sectors
    c = all_chunks(pristine)[-1]
    first_sector, end_sector = c.offset // 512, (c.end + 511) // 512
    counter = iter(range(10**6))

    @settings(max_examples=100, deadline=None)
    @given(kept=st.lists(st.booleans(), min_size=end_sector - first_sector, max_size=16))
    def check(kept: list[bool]) -> None:
        path = tmp_path / f"log{next(counter)}"
        shutil.copytree(pristine, path)
        file = path / c.file.name
        raw = bytearray(file.read_bytes())
        for i, keep in enumerate(kept[: end_sector - first_sector]):
            lo = max(c.offset, (first_sector + i) * 512)
            hi = min(c.end, (first_sector + i + 1) * 512)
            if not keep:
                raw[lo:hi] = bytes(hi - lo)
        file.write_bytes(bytes(raw))
        whole = all(kept[: end_sector - first_sector])
        last = 32 if whole else c.seq - 1
        with open_log(path) as log:
            assert_log(log, 1, {s: want[s] for s in range(1, last + 1)})
            assert log.append([b"next"]) == last + 1
        data_file, end = data_end(path)
        assert records_chunk(path, last + 1).offset == (c.end if whole else c.offset)
        rest = data_file.read_bytes()[end:]
        assert rest == bytes(len(rest))  # no byte of the torn chunk left after the new one
        with open_log(path) as log:
            assert log.read(last + 1) == b"next"
        shutil.rmtree(path)

    check()


# --- a real crash ----------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from distsync.raft.segment_log import SegmentLog
    path, sync = sys.argv[1], sys.argv[2] == "1"
    def payload(seq):
        head = f"rec-{seq:08d}-".encode()
        size = 40 + seq * 7 % 300
        return (head * (size // len(head) + 1))[:size]
    log = SegmentLog(path, sync=sync, segment_bytes=4096)
    for i in range(200_000):
        lo = log.last_seq + 1
        log.append([payload(s) for s in range(lo, lo + i % 4 + 1)])
        print("A", log.last_seq, flush=True)  # acknowledged
        if i % 25 == 24 and log.last_seq > 100:
            upto = log.last_seq - 100
            log.truncate_prefix(upto)
            print("P", upto, flush=True)
    print("done", flush=True)
    """
)


def crash_payload(seq: int) -> bytes:
    head = f"rec-{seq:08d}-".encode()
    size = 40 + seq * 7 % 300
    return (head * (size // len(head) + 1))[:size]


@pytest.mark.parametrize("kill_after", [150, 601, 2000])
@pytest.mark.parametrize("sync", [True, False])
def test_acknowledged_appends_survive_kill_9(tmp_path: Path, sync: bool, kill_after: int) -> None:
    path = tmp_path / "log"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT, str(path), "1" if sync else "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    watchdog = threading.Timer(120, proc.kill)  # a hung child fails the test, not the run
    watchdog.start()
    acked = compacted = 0
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) == kill_after:  # mid-run: the loop goes on far longer
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    for line in lines:  # every full line printed before the kill is an acknowledgment
        kind, _, value = line.partition(" ")
        if kind == "A" and line.endswith("\n"):
            acked = int(value)
        elif kind == "P" and line.endswith("\n"):
            compacted = int(value)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()[-2000:]
    assert "done\n" not in lines
    assert acked >= kill_after and compacted > 0
    with open_log(path) as log:
        assert log.last_seq >= acked  # an append unacknowledged may be there too
        # The head is at or after the last acknowledged compaction; one more may have
        # been written (always 100 records before the last acknowledged append).
        assert compacted + 1 <= log.first_seq <= acked - 99
        assert [s for s, _ in log.scan()] == list(range(log.first_seq, log.last_seq + 1))
        assert all(r == crash_payload(s) for s, r in log.scan())
        last = log.last_seq
        assert log.append([b"after"]) == last + 1
    assert not list(path.glob("*.tmp"))
    with open_log(path) as log:
        assert log.read(last + 1) == b"after"
        assert log.read(acked) == crash_payload(acked)
