"""pytest-benchmark: LmdbStorage.save() on the Raft commit path, against raw write + fsync.

What a Ready costs the driver in step 1 (persist): one entry with a moved commit (a
leader at low load), and a batch of 64 x 100 B entries (a leader under load: the
throughput bound is one save per fsync). Both with fsync on; the raw ``write`` +
``fsync`` of the same bytes to a plain file, and their ``pwrite`` + ``fdatasync`` over a
zero-filled file (what a segment log does), are the floors a durable log pays. Each
storage row runs with both log formats (segment files, LMDB). A ``sync=False`` run of
the batch separates the CPU cost from the disk's.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from distsync.raft.lmdb_storage import LmdbStorage
from distsync.raft.types import Entry, HardState

BATCH = 64
PAYLOAD = os.urandom(100)
ROUNDS = 200


def _saver(s: LmdbStorage, n: int) -> Any:
    """A function saving the next ``n`` entries plus a hard state whose commit moves (the
    leader's usual Ready), as one ``save``."""
    nxt = itertools.count(s.last_index() + 1, n)

    def save() -> None:
        lo = next(nxt)
        s.save(HardState(1, "n1", lo - 1), [Entry(1, i, PAYLOAD) for i in range(lo, lo + n)])

    return save


FORMATS = pytest.mark.parametrize("log_format", ["segments", "lmdb"])


@FORMATS
@pytest.mark.parametrize("n", [1, BATCH], ids=["one_entry", f"batch_{BATCH}x100B"])
def test_save_fsync(benchmark: Any, tmp_path: Path, n: int, log_format: str) -> None:
    with LmdbStorage(tmp_path / "raft", sync=True, log_format=log_format) as s:
        saves = itertools.count(1)
        save = _saver(s, n)

        def counted() -> None:
            save()
            next(saves)

        benchmark.pedantic(counted, rounds=ROUNDS, warmup_rounds=5)
        benchmark.extra_info["entries_per_save"] = n
        # However many rounds ran (one with --benchmark-disable), every save landed.
        assert s.last_index() == (next(saves) - 1) * n


@FORMATS
def test_save_batch_no_fsync(benchmark: Any, tmp_path: Path, log_format: str) -> None:
    with LmdbStorage(tmp_path / "raft", sync=False, log_format=log_format) as s:
        benchmark.pedantic(_saver(s, BATCH), rounds=ROUNDS, warmup_rounds=5)


@pytest.mark.parametrize("n", [1, BATCH], ids=["one_entry", f"batch_{BATCH}x100B"])
def test_raw_write_fsync(benchmark: Any, tmp_path: Path, n: int) -> None:
    """The floor: the same payload bytes appended to a file, then fsync."""
    fd = os.open(tmp_path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = PAYLOAD * n

    def write() -> None:
        os.write(fd, buf)
        os.fsync(fd)

    try:
        benchmark.pedantic(write, rounds=ROUNDS, warmup_rounds=5)
    finally:
        os.close(fd)


@pytest.mark.parametrize("n", [1, BATCH], ids=["one_entry", f"batch_{BATCH}x100B"])
def test_raw_overwrite_fdatasync(benchmark: Any, tmp_path: Path, n: int) -> None:
    """The floor of a one-flush log: the same bytes written over a zero-filled file, then
    fdatasync (no size or extent change, so no metadata to journal)."""
    buf = PAYLOAD * n
    size = (ROUNDS + 10) * len(buf)
    fd = os.open(tmp_path / "pre.bin", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, bytes(size), 0)
    os.fsync(fd)
    at = itertools.count(0, len(buf))

    def write() -> None:
        os.pwrite(fd, buf, next(at))
        os.fdatasync(fd)

    try:
        benchmark.pedantic(write, rounds=ROUNDS, warmup_rounds=5)
    finally:
        os.close(fd)
