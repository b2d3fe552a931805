"""pytest-benchmark: the WAL twins against plain py-lmdb on the same work.

Small sizes so the file runs in seconds: 20 batches of 1,000 x 100 B records
(no fsync, so the figures are the CPU cost and not the disk's mood), a scan of
them, and one durable single-record append. ``distsync bench kernels`` has the
full-size comparison with fsync.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import pytest

from distsync._core import NO_EXTENSIONS, load

IMPLS = ("py",) if NO_EXTENSIONS else ("c", "py")
BATCHES = 20
POOL = [os.urandom(100) for _ in range(1000)]
_fresh = itertools.count()


def _dir(root: Path) -> str:
    path = root / f"env{next(_fresh)}"
    shutil.rmtree(path, ignore_errors=True)
    return str(path)


@pytest.fixture(params=IMPLS)
def wal_mod(request: pytest.FixtureRequest) -> ModuleType:
    return load("wal", str(request.param))


def test_append_batches_ours(benchmark: Any, wal_mod: ModuleType, tmp_path: Path) -> None:
    def setup() -> tuple[tuple[object], dict[str, object]]:
        return (wal_mod.Wal(_dir(tmp_path), sync=False, map_size=1 << 28),), {}

    def work(wal: object) -> None:
        for _ in range(BATCHES):
            wal.append(POOL)  # type: ignore[attr-defined]
        wal.close()  # type: ignore[attr-defined]

    benchmark.pedantic(work, setup=setup, rounds=5)


def test_append_batches_peer_putmulti(benchmark: Any, tmp_path: Path) -> None:
    def setup() -> tuple[tuple[object], dict[str, object]]:
        return (lmdb.open(_dir(tmp_path), map_size=1 << 28, sync=False),), {}

    def work(env: lmdb.Environment) -> None:
        seq = 1
        for _ in range(BATCHES):
            items = [((seq + i).to_bytes(8, "big"), r) for i, r in enumerate(POOL)]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
            seq += len(POOL)
        env.close()

    benchmark.pedantic(work, setup=setup, rounds=5)


def test_scan_ours(benchmark: Any, wal_mod: ModuleType, tmp_path: Path) -> None:
    with wal_mod.Wal(_dir(tmp_path), sync=False, map_size=1 << 28) as wal:
        for _ in range(BATCHES):
            wal.append(POOL)
        n = benchmark(lambda: sum(1 for _ in wal.scan()))
    assert n == BATCHES * len(POOL)


def test_scan_peer_cursor(benchmark: Any, tmp_path: Path) -> None:
    env = lmdb.open(_dir(tmp_path), map_size=1 << 28, sync=False)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(
            [(i.to_bytes(8, "big"), POOL[i % 1000]) for i in range(BATCHES * 1000)], append=True
        )

    def scan() -> int:
        with env.begin() as txn:
            return sum(1 for _ in txn.cursor())

    assert benchmark(scan) == BATCHES * 1000
    env.close()


def test_durable_single_append_ours(benchmark: Any, wal_mod: ModuleType, tmp_path: Path) -> None:
    with wal_mod.Wal(_dir(tmp_path), sync=True) as wal:
        benchmark.pedantic(wal.append, args=([POOL[0]],), rounds=50, warmup_rounds=3)


def test_durable_single_append_peer_put(benchmark: Any, tmp_path: Path) -> None:
    env = lmdb.open(_dir(tmp_path), map_size=1 << 28)
    seq = itertools.count(1)

    def put() -> None:
        with env.begin(write=True) as txn:
            txn.put(next(seq).to_bytes(8, "big"), POOL[0], append=True)

    benchmark.pedantic(put, rounds=50, warmup_rounds=3)
    env.close()


def test_raw_write_fsync(benchmark: Any, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "raw.bin", os.O_WRONLY | os.O_CREAT, 0o644)

    def write() -> None:
        os.write(fd, POOL[0])
        os.fsync(fd)

    benchmark.pedantic(write, rounds=50, warmup_rounds=3)
    os.close(fd)
