"""WAL recovery on damaged LMDB files: torn tails are cut, damage in the middle is refused.

Opens of files cut short run in a subprocess: without the meta-page check,
LMDB 0.9 maps the file and dies of SIGBUS reading a page past its end, which
would kill pytest instead of failing one test.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

import distsync
from distsync._core import load
from distsync.errors import CorruptLogError

SRC = str(Path(distsync.__file__).resolve().parents[1])
MAGIC = struct.pack("<I", 0x31575344)


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("wal", impl)


def payload(seq: int, size: int = 100) -> bytes:
    head = f"rec-{seq:08d}-".encode()
    return (head * (size // len(head) + 1))[:size]


def build(mod: ModuleType, path: Path, batches: int, per_batch: int, size: int = 100) -> None:
    """A log of ``batches`` appends; each block is bigger than a page, so LMDB
    stores it in overflow pages written once (no stale copies in the file)."""
    with mod.Wal(path, sync=False) as wal:
        for b in range(batches):
            lo = b * per_batch + 1
            wal.append([payload(s, size) for s in range(lo, lo + per_batch)])


def data_file(path: Path) -> Path:
    return path / "data.mdb"


def offset_of(path: Path, needle: bytes) -> int:
    """Where ``needle`` is in data.mdb; it must be there exactly once."""
    raw = data_file(path).read_bytes()
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "needle not unique in the file"
    return at


def flip(path: Path, offset: int) -> None:
    with open(data_file(path), "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def flip_record(path: Path, seq: int, size: int = 100, where: int = 50) -> None:
    flip(path, offset_of(path, payload(seq, size)) + where)


def assert_valid_prefix(wal: object, last: int) -> None:
    assert wal.first_seq == 1  # type: ignore[attr-defined]
    assert wal.last_seq == last  # type: ignore[attr-defined]
    assert [r for _, r in wal.scan()] == [payload(s) for s in range(1, last + 1)]  # type: ignore[attr-defined]


# --- byte flips -----------------------------------------------------------------


def test_flip_in_a_middle_record_is_corruption(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=1, per_batch=100)
    flip_record(path, 50)
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 50
    assert info.value.path == str(data_file(path))
    assert "data.mdb" in str(info.value) and "50" in str(info.value)


def test_flip_in_an_earlier_block_is_corruption(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=5, per_batch=60)
    flip_record(path, 120)  # last record of block 2; blocks 3..5 are intact
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 120


def test_flip_in_the_checksum_field_is_corruption(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=1, per_batch=100)
    flip_record(path, 30, where=-3)  # inside the frame's u64 checksum
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 30


def test_record_moved_to_another_slot_is_caught(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=1, per_batch=100)
    # Copy frame 10 (length, checksum, payload) over frame 11: a well-formed
    # frame in the wrong slot. Only the sequence number in the checksum tells.
    at10 = offset_of(path, payload(10)) - 12
    at11 = offset_of(path, payload(11)) - 12
    raw = bytearray(data_file(path).read_bytes())
    raw[at11 : at11 + 112] = raw[at10 : at10 + 112]
    data_file(path).write_bytes(bytes(raw))
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 11


def test_flip_in_the_last_record_is_a_torn_tail(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=3, per_batch=100)
    flip_record(path, 300)
    with mod.Wal(path, sync=False) as wal:
        assert_valid_prefix(wal, 299)
    # The repair was committed: reopening finds a clean log, appends continue.
    with mod.Wal(path, sync=False) as wal:
        assert_valid_prefix(wal, 299)
        assert wal.append([b"new"]) == 300
        assert wal.read(300) == b"new"


def test_flips_in_the_last_records_cut_back_to_the_first_bad(
    mod: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    for seq in range(190, 201):  # every record from 190 on is bad
        flip_record(path, seq)
    with mod.Wal(path, sync=False) as wal:
        assert_valid_prefix(wal, 189)


def test_a_valid_record_after_several_bad_ones_is_corruption(
    mod: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    for seq in (190, 195, 199):  # 200 (and 191..194) still intact
        flip_record(path, seq)
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 190


def test_first_record_of_last_block_bad_with_valid_followers_is_corruption(
    mod: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    flip_record(path, 101)
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 101


def test_damaged_header_of_last_block_drops_the_block(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    build_last = 70
    with mod.Wal(path, sync=False) as wal:
        wal.append([payload(s) for s in range(201, 201 + build_last)])
    flip(path, offset_of(path, MAGIC + struct.pack("<I", build_last)))
    with mod.Wal(path, sync=False) as wal:
        assert_valid_prefix(wal, 200)


def test_damaged_header_of_a_middle_block_is_corruption(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with mod.Wal(path, sync=False) as wal:
        wal.append([payload(s) for s in range(1, 101)])
        wal.append([payload(s) for s in range(101, 171)])  # 70 records: a unique header
        wal.append([payload(s) for s in range(171, 271)])
    header = offset_of(path, MAGIC + struct.pack("<I", 70))
    flip(path, header)  # the magic: no record of the block can be located
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 101
    flip(path, header)
    flip(path, header + 4)  # the count (70 -> 28): frame 28 no longer ends where it should
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.seq == 101 + (70 ^ 0x5A) - 1


def test_damage_after_open_is_reported_by_read(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=1, per_batch=100)
    with mod.Wal(path, sync=False) as wal:
        flip_record(path, 40)  # the file is shared with LMDB's map
        assert wal.read(39) == payload(39)
        with pytest.raises(CorruptLogError) as info:
            wal.read(40)
        assert info.value.seq == 40
        it = wal.scan(35)
        assert [next(it)[0] for _ in range(5)] == [35, 36, 37, 38, 39]
        with pytest.raises(CorruptLogError):
            next(it)


def test_damaged_lmdb_meta_page_is_corruption_not_a_crash(mod: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    flip(path, 16)  # LMDB magic of meta page 0
    with pytest.raises(CorruptLogError) as info:
        mod.Wal(path, sync=False)
    assert info.value.path == str(data_file(path))


def test_not_a_wal_is_refused(mod: ModuleType, tmp_path: Path) -> None:
    import lmdb

    env = lmdb.open(str(tmp_path / "other"), max_dbs=2)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"some", b"thing", db=meta)
    env.close()
    with pytest.raises(CorruptLogError, match="not a distsync log"):
        mod.Wal(tmp_path / "other", readonly=True)
    with pytest.raises(CorruptLogError, match="not a distsync log"):
        mod.Wal(tmp_path / "other")


# --- files cut short (subprocess: a crash must fail the test, not kill pytest) ------

OPEN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from distsync._core import load
    from distsync.errors import CorruptLogError
    impl, path, readonly = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    def payload(seq, size=100):
        head = f"rec-{seq:08d}-".encode()
        return (head * (size // len(head) + 1))[:size]
    try:
        wal = load("wal", impl).Wal(path, sync=False, readonly=readonly)
    except CorruptLogError as exc:
        print(json.dumps({"corrupt": True, "seq": exc.seq, "path": exc.path, "msg": str(exc)}))
        sys.exit(0)
    recs = list(wal.scan())
    ok = [s for s, _ in recs] == list(range(1, wal.last_seq + 1))
    ok = ok and all(r == payload(s) for s, r in recs)
    last = wal.last_seq
    if not readonly:
        wal.append([payload(last + 1)])
        ok = ok and wal.read(last + 1) == payload(last + 1)
    wal.close()
    print(json.dumps({"corrupt": False, "last": last, "prefix_ok": ok}))
    """
)


def open_in_subprocess(impl: str, path: Path, readonly: bool = False) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", OPEN_SCRIPT, impl, str(path), "1" if readonly else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"open crashed (rc={out.returncode}): {out.stderr[-2000:]}"
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_cut_file_falls_back_to_the_older_snapshot(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(load("wal", impl), path, batches=10, per_batch=100)
    size = data_file(path).stat().st_size
    os.truncate(data_file(path), size - 100)  # the newest snapshot loses its last page
    result = open_in_subprocess(impl, path)
    assert result["corrupt"] is False and result["prefix_ok"] is True, result
    assert result["last"] == 900  # the older snapshot: one append lost with the cut
    again = open_in_subprocess(impl, path)  # the fallback was made durable
    assert again["corrupt"] is False and again["prefix_ok"] is True
    assert again["last"] == 901


@pytest.mark.parametrize("cut", [1, 4096, 4096 * 5 + 17, "half", 9000, 5000, 10])
def test_cut_file_opens_a_valid_prefix_or_refuses_clearly(
    impl: str, tmp_path: Path, cut: int | str
) -> None:
    path = tmp_path / "log"
    build(load("wal", impl), path, batches=10, per_batch=100)
    size = data_file(path).stat().st_size
    new_size = size // 2 if cut == "half" else (size - cut if cut in (1, 4096, 20497) else cut)
    assert isinstance(new_size, int)
    os.truncate(data_file(path), new_size)
    result = open_in_subprocess(impl, path)
    if result["corrupt"]:
        assert result["path"] == str(data_file(path))
        assert "data.mdb" in str(result["msg"])
    else:
        assert result["prefix_ok"] is True
        assert isinstance(result["last"], int) and result["last"] <= 1000


def test_readonly_open_of_a_cut_file_refuses_without_writing(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "log"
    build(load("wal", impl), path, batches=10, per_batch=100)
    size = data_file(path).stat().st_size
    os.truncate(data_file(path), size - 100)
    before = data_file(path).read_bytes()
    result = open_in_subprocess(impl, path, readonly=True)
    assert result["corrupt"] is True
    assert data_file(path).read_bytes() == before


# --- a reader process while the writer appends ---------------------------------------

READER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from distsync._core import load
    impl, path, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def payload(seq, size=100):
        head = f"rec-{seq:08d}-".encode()
        return (head * (size // len(head) + 1))[:size]
    wal = load("wal", impl).Wal(path, readonly=True)
    scans, seen, deadline = 0, 0, time.monotonic() + 30
    while seen < target and time.monotonic() < deadline:
        recs = list(wal.scan())
        assert [s for s, _ in recs] == list(range(1, len(recs) + 1)), "not a prefix"
        assert all(r == payload(s) for s, r in recs), "bad record"
        assert len(recs) >= seen, "went back in time"
        seen = len(recs)
        assert wal.last_seq >= seen
        if seen:
            assert wal.read(seen) == payload(seen)
        scans += 1
        if scans == 1:
            print("scanned", flush=True)  # the writer appends the rest only now
    print(json.dumps({"scans": scans, "seen": seen}))
    """
)


def test_reader_process_sees_a_consistent_prefix(impl: str, tmp_path: Path) -> None:
    mod = load("wal", impl)
    path = tmp_path / "log"
    total = 6000
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with mod.Wal(path, sync=False, map_size=65536) as wal:  # the map grows under the reader
        wal.append([payload(1)])
        reader = subprocess.Popen(
            [sys.executable, "-c", READER_SCRIPT, impl, str(path), str(total)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Wait for the reader's first scan, so it sees the log both short and grown
        # however the two processes are scheduled.
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "scanned", (
            reader.stderr.read() if reader.stderr else ""
        )
        seq = 2
        while seq <= total:
            wal.append([payload(s) for s in range(seq, min(seq + 50, total + 1))])
            seq += 50
            time.sleep(0.002)
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err[-2000:]
    result = json.loads(out)
    assert result["seen"] == total
    assert result["scans"] >= 2


def test_readonly_handle_serves_the_prefix_of_a_torn_tail_without_writing(
    mod: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=2, per_batch=100)
    flip_record(path, 200)
    before = data_file(path).read_bytes()
    with mod.Wal(path, readonly=True) as ro:
        assert [r for _, r in ro.scan(150)][-1] == payload(199)
        assert ro.read(199) == payload(199)
    assert data_file(path).read_bytes() == before
    with mod.Wal(path, sync=False) as wal:  # the writer repairs
        assert_valid_prefix(wal, 199)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from distsync._core import load
    impl, path, sync = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    wal = load("wal", impl).Wal(path, sync=sync)
    for b in range(20):
        wal.append([b"%d-%d" % (b, i) for i in range(50)])
        print(wal.last_seq, flush=True)  # acknowledged
    wal.truncate_suffix(901)
    wal.truncate_prefix(100)
    print("done", flush=True)
    os._exit(0)  # like kill -9: no close, no atexit, no flush by Python
    """
)


@pytest.mark.parametrize("sync", [True, False])
def test_acknowledged_appends_survive_a_process_crash(
    impl: str, tmp_path: Path, sync: bool
) -> None:
    path = tmp_path / "log"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, impl, str(path), "1" if sync else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "done"
    with load("wal", impl).Wal(path, sync=False) as wal:
        assert (wal.first_seq, wal.last_seq) == (101, 900)
        assert wal.read(101) == b"2-0"
        assert wal.read(900) == b"17-49"


@pytest.mark.parametrize("op", ["truncate_suffix", "truncate_prefix"])
def test_truncation_through_a_block_damaged_after_open_refuses(
    mod: ModuleType, tmp_path: Path, op: str
) -> None:
    path = tmp_path / "log"
    build(mod, path, batches=1, per_batch=100)
    with mod.Wal(path, sync=False) as wal:
        # A wild offset in the table (entry 50): rewriting the block must not
        # copy from outside it.
        header = offset_of(path, MAGIC + struct.pack("<I", 100))
        with open(data_file(path), "r+b") as f:
            f.seek(header + 8 + 4 * 50)
            f.write(struct.pack("<I", 0xFFFFFF00))
        with pytest.raises(CorruptLogError):
            if op == "truncate_suffix":
                wal.truncate_suffix(60)
            else:
                wal.truncate_prefix(40)
        assert (wal.first_seq, wal.last_seq) == (1, 100)  # nothing changed
        assert wal.read(10) == payload(10)
