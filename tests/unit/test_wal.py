"""The WAL kernel on real LMDB files: API, durability of state across reopen, twins agree."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from types import ModuleType

import pytest
import xxhash

from distsync._core import NO_EXTENSIONS, load
from distsync.errors import StorageError

OTHER = {"c": "py", "py": "c"}


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("wal", impl)


def payload(seq: int, size: int = 100) -> bytes:
    """A record that names its own sequence number, so misplaced data shows."""
    head = f"rec-{seq:08d}-".encode()
    return (head * (size // len(head) + 1))[:size]


def test_new_log_is_empty(mod: ModuleType, tmp_path: Path) -> None:
    with mod.Wal(tmp_path / "log", sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (1, 0)
        assert list(wal.scan()) == []
        with pytest.raises(IndexError):
            wal.read(1)
        with pytest.raises(IndexError):
            wal.read(0)


def test_append_numbers_records_from_one(mod: ModuleType, tmp_path: Path) -> None:
    with mod.Wal(tmp_path / "log") as wal:
        assert wal.append([b"a", b"bc"]) == 2
        assert wal.append([b""]) == 3  # empty records are records
        assert wal.append([]) == 3  # empty batch: unchanged
        assert wal.append((bytearray(b"x"), memoryview(b"yz"))) == 5
        assert [wal.read(s) for s in range(1, 6)] == [b"a", b"bc", b"", b"x", b"yz"]
        assert list(wal.scan()) == [(1, b"a"), (2, b"bc"), (3, b""), (4, b"x"), (5, b"yz")]
        assert list(wal.scan(4)) == [(4, b"x"), (5, b"yz")]
        assert list(wal.scan(6)) == []
        assert all(type(r) is bytes for _, r in wal.scan())


@pytest.mark.parametrize("writer", ["c", "py"])
def test_reopen_with_either_twin_reads_the_same_log(writer: str, tmp_path: Path) -> None:
    if NO_EXTENSIONS:
        pytest.skip("compiled twin not built")
    path = tmp_path / "log"
    recs = [payload(s, size=(s * 37) % 300) for s in range(1, 2001)]
    with load("wal", writer).Wal(path, sync=False) as wal:
        for lo in range(0, 2000, 250):
            wal.append(recs[lo : lo + 250])
    with load("wal", OTHER[writer]).Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (1, 2000)
        assert [r for _, r in wal.scan()] == recs
        assert wal.read(1234) == recs[1233]
        assert wal.append([b"more"]) == 2001
    with load("wal", writer).Wal(path, sync=False) as wal:
        assert wal.read(2001) == b"more"


def test_twins_write_identical_blocks() -> None:
    if NO_EXTENSIONS:
        pytest.skip("compiled twin not built")
    c, py = load("wal", "c"), load("wal", "py")
    batch = [payload(s, size=s) for s in range(50)]
    assert c.encode_block(77, batch) == py.encode_block(77, batch)
    for seq in (0, 1, 2**63 + 5):
        assert c.record_checksum(seq, b"abc") == py.record_checksum(seq, b"abc")


def test_checksum_covers_sequence_number(mod: ModuleType) -> None:
    # Independent of the code under test: the documented formula.
    def expected(seq: int, data: bytes) -> int:
        inner = xxhash.xxh3_64_intdigest(data)
        return xxhash.xxh3_64_intdigest(struct.pack("<QQ", seq, inner))

    assert mod.record_checksum(9, b"hello") == expected(9, b"hello")
    assert mod.record_checksum(9, b"hello") != mod.record_checksum(10, b"hello")


def test_block_layout_matches_the_documented_format(mod: ModuleType) -> None:
    block = mod.encode_block(5, [b"ab", b"c"])
    magic, n, o0, o1 = struct.unpack_from("<IIII", block)
    assert (magic, n) == (0x31575344, 2)
    assert o0 == 16 and o1 == 16 + 12 + 2
    assert struct.unpack_from("<I", block, o0)[0] == 2
    assert block[o0 + 12 : o0 + 14] == b"ab"
    assert struct.unpack_from("<Q", block, o1 + 4)[0] == mod.record_checksum(6, b"c")
    assert len(block) == o1 + 12 + 1


def test_truncate_prefix_and_reopen(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with mod.Wal(path, sync=False) as wal:
        wal.append([payload(s) for s in range(1, 101)])
        wal.append([payload(s) for s in range(101, 201)])
        wal.truncate_prefix(150)  # cuts into the second block
        assert (wal.first_seq, wal.last_seq) == (151, 200)
        with pytest.raises(IndexError):
            wal.read(150)
        assert wal.read(151) == payload(151)
        assert [s for s, _ in wal.scan()] == list(range(151, 201))
        with pytest.raises(IndexError):
            wal.scan(150)
        wal.truncate_prefix(10)  # already compacted: no-op
        assert wal.first_seq == 151
    with mod.Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (151, 200)
        assert [r for _, r in wal.scan()] == [payload(s) for s in range(151, 201)]
        wal.truncate_prefix(200)  # everything: empty, but numbering continues
        assert (wal.first_seq, wal.last_seq) == (201, 200)
        assert list(wal.scan()) == []
    with mod.Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (201, 200)
        assert wal.append([b"next"]) == 201
        assert list(wal.scan()) == [(201, b"next")]


def test_truncate_suffix_and_reopen(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with mod.Wal(path, sync=False) as wal:
        wal.append([payload(s) for s in range(1, 51)])
        wal.append([payload(s) for s in range(51, 101)])
        wal.truncate_suffix(101)  # no-op
        wal.truncate_suffix(30)  # inside the first block, drops the second
        assert wal.last_seq == 29
        with pytest.raises(IndexError):
            wal.read(30)
        assert wal.append([b"x", b"y"]) == 31
        assert wal.read(30) == b"x"
    with mod.Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (1, 31)
        assert [r for _, r in wal.scan()] == [payload(s) for s in range(1, 30)] + [b"x", b"y"]
        wal.truncate_prefix(10)
        wal.truncate_suffix(11)  # drop all but first_seq
        assert (wal.first_seq, wal.last_seq) == (11, 10)
    with mod.Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (11, 10)
        assert wal.append([b"z"]) == 11


def test_big_batches_split_into_blocks(mod: ModuleType, tmp_path: Path) -> None:
    big = [os.urandom(300_000) for _ in range(8)]  # > BLOCK_BYTES in total
    with mod.Wal(tmp_path / "log", sync=False) as wal:
        assert wal.append(big) == 8
        assert [r for _, r in wal.scan()] == big
        wal.truncate_suffix(5)
        wal.truncate_prefix(2)
        assert [r for _, r in wal.scan()] == big[2:4]


def test_map_full_grows_the_map(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with mod.Wal(path, sync=False, map_size=16384) as wal:
        for i in range(40):
            wal.append([payload(i * 100 + k, 1000) for k in range(100)])
        wal.append([os.urandom(3 << 20)])  # one record bigger than the whole map
        assert wal.last_seq == 4001
        assert wal.read(2345) == payload(2344, 1000)
    with mod.Wal(path, sync=False, map_size=16384) as wal:
        assert wal.last_seq == 4001
        assert wal.append([b"x"]) == 4002


def test_threads_share_one_handle(mod: ModuleType, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with mod.Wal(tmp_path / "log", sync=False, map_size=65536) as wal:
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    seqs = []
                    for seq, rec in wal.scan():
                        assert rec == payload(seq, 50)
                        seqs.append(seq)
                    assert seqs == list(range(1, len(seqs) + 1))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for lo in range(1, 5001, 100):  # map growth happens while the reader runs
            wal.append([payload(s, 50) for s in range(lo, lo + 100)])
        stop.set()
        t.join()
    assert not errors, errors


def test_closed_wal_refuses_work(mod: ModuleType, tmp_path: Path) -> None:
    wal = mod.Wal(tmp_path / "log", sync=False)
    wal.append([b"a"])
    wal.close()
    wal.close()  # idempotent
    for call in (
        lambda: wal.append([b"b"]),
        lambda: wal.read(1),
        lambda: wal.scan(),
        lambda: wal.first_seq,
        lambda: wal.truncate_prefix(1),
        lambda: wal.truncate_suffix(1),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_second_open_in_one_process_is_refused(mod: ModuleType, tmp_path: Path) -> None:
    with mod.Wal(tmp_path / "log", sync=False):
        with pytest.raises(StorageError):
            mod.Wal(tmp_path / "log", sync=False)


def test_readonly_handle(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with pytest.raises(FileNotFoundError):
        mod.Wal(path, readonly=True)
    with mod.Wal(path, sync=False) as wal:
        wal.append([b"a", b"b", b"c"])
        wal.truncate_prefix(1)
    with mod.Wal(path, readonly=True) as ro:
        assert (ro.first_seq, ro.last_seq) == (2, 3)
        assert list(ro.scan()) == [(2, b"b"), (3, b"c")]
        with pytest.raises(ValueError):
            ro.append([b"d"])
        with pytest.raises(ValueError):
            ro.truncate_suffix(2)
        with pytest.raises(ValueError):
            ro.truncate_prefix(2)


@pytest.mark.parametrize(
    "records, exc",
    [
        (b"abc", TypeError),
        ("abc", TypeError),
        (123, TypeError),
        (None, TypeError),
        ([b"ok", "text"], TypeError),
        ([b"ok", 5], TypeError),
        ([None], TypeError),
    ],
)
def test_append_rejects_non_bytes(
    mod: ModuleType, tmp_path: Path, records: object, exc: type[Exception]
) -> None:
    with mod.Wal(tmp_path / "log", sync=False) as wal:
        with pytest.raises(exc, match="records"):
            wal.append(records)
        assert wal.last_seq == 0  # nothing half-appended


def test_bad_arguments_name_themselves(mod: ModuleType, tmp_path: Path) -> None:
    with mod.Wal(tmp_path / "log", sync=False) as wal:
        wal.append([b"a", b"b", b"c"])
        with pytest.raises(TypeError, match="seq"):
            wal.read("1")
        with pytest.raises(TypeError, match="seq"):
            wal.read(1.0)
        with pytest.raises(TypeError, match="seq"):
            wal.read(True)
        with pytest.raises(ValueError, match="seq"):
            wal.read(-1)
        with pytest.raises(IndexError):
            wal.read(4)
        with pytest.raises(TypeError, match="from_seq"):
            wal.scan("x")
        with pytest.raises(IndexError):
            wal.scan(5)
        with pytest.raises(ValueError, match="upto"):
            wal.truncate_prefix(4)
        with pytest.raises(ValueError, match="upto"):
            wal.truncate_prefix(-1)
        with pytest.raises(TypeError, match="upto"):
            wal.truncate_prefix(None)
        with pytest.raises(ValueError, match="from_seq"):
            wal.truncate_suffix(5)
        with pytest.raises(ValueError, match="from_seq"):
            wal.truncate_suffix(0)
        with pytest.raises(TypeError, match="from_seq"):
            wal.truncate_suffix(2.5)
        assert list(wal.scan()) == [(1, b"a"), (2, b"b"), (3, b"c")]
    with pytest.raises(TypeError, match="path"):
        mod.Wal(42)
    with pytest.raises(TypeError, match="sync"):
        mod.Wal(tmp_path / "other", sync="yes")
    with pytest.raises(ValueError, match="map_size"):
        mod.Wal(tmp_path / "other", map_size=10)
