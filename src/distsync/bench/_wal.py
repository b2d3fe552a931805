"""WAL benchmark: our LMDB log against plain py-lmdb, and against the disk itself.

Rows (all measured in the same run, in the same temporary directory, each
side on a fresh environment):

* bulk append with fsync per batch: ``Wal.append`` of batches of 1,000 x 100 B
  against py-lmdb ``cursor.putmulti(items, append=True)`` (no checksums) with
  the same keys, batches and durability; best of a few alternating rounds.
* the same without fsync (``sync=False`` / ``sync=False``): the CPU cost alone.
* one record per durable append: median latency against the raw cost of the
  disk (write 100 B to a file in the same directory + ``os.fsync``) and, for
  context, py-lmdb one put per transaction. Samples are taken in interleaved
  rounds so that drift on a shared machine hits all sides alike.
* scan of the bulk log against iterating a py-lmdb cursor over the peer's.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import lmdb

from distsync._core.wal import Wal
from distsync.bench import Row

__all__ = ["run"]

_MAP = 1 << 30


def _records(n: int, size: int = 100) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def _ours_bulk(path: str, batches: list[list[bytes]], sync: bool) -> float:
    wal = Wal(path, sync=sync, map_size=_MAP)
    try:
        t0 = time.perf_counter()
        for batch in batches:
            wal.append(batch)
        return time.perf_counter() - t0
    finally:
        wal.close()


def _peer_bulk(path: str, batches: list[list[bytes]], sync: bool) -> float:
    env = lmdb.open(path, map_size=_MAP, sync=sync)
    try:
        seq = 1
        t0 = time.perf_counter()
        for batch in batches:
            items = [((seq + i).to_bytes(8, "big"), r) for i, r in enumerate(batch)]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
            seq += len(batch)
        return time.perf_counter() - t0
    finally:
        env.close()


def _fresh(root: str, name: str) -> str:
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def _bulk(
    root: str, n: int, sync: bool, rounds: int, progress: Callable[[str], None]
) -> tuple[float, float]:
    """Best time of ours and of the peer for ``n`` records, alternating rounds."""
    pool = _records(1000)
    batches = [pool] * (n // 1000)
    ours = peer = float("inf")
    for r in range(rounds):
        progress(f"wal: bulk append {n:,} records, sync={sync}, round {r + 1}/{rounds}")
        ours = min(ours, _ours_bulk(_fresh(root, "ours"), batches, sync))
        peer = min(peer, _peer_bulk(_fresh(root, "peer"), batches, sync))
    shutil.rmtree(os.path.join(root, "ours"), ignore_errors=True)
    shutil.rmtree(os.path.join(root, "peer"), ignore_errors=True)
    return n / ours, n / peer


def _latency(root: str, samples: int) -> tuple[float, float, float]:
    """Median seconds per durable single-record append: ours, raw write+fsync, py-lmdb."""
    rec = os.urandom(100)
    wal = Wal(_fresh(root, "lat-ours"), sync=True, map_size=_MAP)
    env = lmdb.open(_fresh(root, "lat-peer"), map_size=_MAP)
    fd = os.open(os.path.join(root, "raw.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    ours: list[float] = []
    raw: list[float] = []
    peer: list[float] = []
    seq = 0
    try:
        for _ in range(5):  # warm up all three (first commits create the trees)
            wal.append([rec])
        rounds = max(1, samples // 50)
        for _ in range(rounds):
            for _ in range(50):
                t0 = time.perf_counter()
                wal.append([rec])
                ours.append(time.perf_counter() - t0)
            for _ in range(50):
                t0 = time.perf_counter()
                os.write(fd, rec)
                os.fsync(fd)
                raw.append(time.perf_counter() - t0)
            for _ in range(50):
                seq += 1
                t0 = time.perf_counter()
                with env.begin(write=True) as txn:
                    txn.put(seq.to_bytes(8, "big"), rec, append=True)
                peer.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        wal.close()
        env.close()
    return statistics.median(ours), statistics.median(raw), statistics.median(peer)


def _scan(root: str, n: int, progress: Callable[[str], None]) -> tuple[float, float]:
    """Records per second: our scan (checksums verified) against a py-lmdb cursor."""
    pool = _records(1000)
    batches = [pool] * (n // 1000)
    progress(f"wal: scan {n:,} records")
    _ours_bulk(_fresh(root, "scan-ours"), batches, sync=False)
    _peer_bulk(_fresh(root, "scan-peer"), batches, sync=False)
    wal = Wal(os.path.join(root, "scan-ours"), sync=False, map_size=_MAP)
    env = lmdb.open(os.path.join(root, "scan-peer"), map_size=_MAP)
    try:

        def ours_scan() -> None:
            for _ in wal.scan():
                pass

        def peer_scan() -> None:
            with env.begin() as txn:
                for _ in txn.cursor():
                    pass

        best_ours = best_peer = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            ours_scan()
            best_ours = min(best_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            peer_scan()
            best_peer = min(best_peer, time.perf_counter() - t0)
    finally:
        wal.close()
        env.close()
    return n / best_ours, n / best_peer


def run(impl: str, quick: bool, progress: Callable[[str], None]) -> list[Row]:
    """Measure our ``Wal`` (the dispatcher's, i.e. ``impl``) and its peers in one run."""
    n = 100_000 if quick else 1_000_000
    # fsync rounds cost ~1 s each on a quiet disk but several seconds when the
    # disk is throttled (a shared VM); the CPU-only rounds are cheap.
    rounds_sync = 2
    rounds_cpu = 2 if quick else 3
    samples = 200 if quick else 600
    root = tempfile.mkdtemp(prefix="distsync-wal-bench-")
    try:
        ours_sync, peer_sync = _bulk(root, n, True, rounds_sync, progress)
        ours_cpu, peer_cpu = _bulk(root, n, False, rounds_cpu, progress)
        progress(f"wal: single-record durable append latency, {samples} samples each")
        lat_ours, lat_raw, lat_peer = _latency(root, samples)
        scan_ours, scan_peer = _scan(root, n // 2 if quick else n, progress)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    return [
        Row(
            kernel="wal",
            work=f"append {label} x 100 B, batches of 1000, fsync",
            ours=ours_sync,
            peer="py-lmdb putmulti(append)",
            peer_value=peer_sync,
            unit="ops/s",
            target=">= 2x",
            met=ours_sync >= 2 * peer_sync,
            impl=impl,
        ),
        Row(
            kernel="wal",
            work=f"append {label} x 100 B, batches of 1000, no fsync",
            ours=ours_cpu,
            peer="py-lmdb putmulti(append)",
            peer_value=peer_cpu,
            unit="ops/s",
            impl=impl,
        ),
        Row(
            kernel="wal",
            work="1 record per durable append (median)",
            ours=lat_ours,
            peer="raw write+fsync",
            peer_value=lat_raw,
            unit="s",
            higher_is_better=False,
            target="<= 1.3x raw",
            met=lat_ours <= 1.3 * lat_raw,
            impl=impl,
            extra={"py_lmdb_put_per_txn_s": lat_peer},
        ),
        Row(
            kernel="wal",
            work="1 record per durable append (median)",
            ours=lat_ours,
            peer="py-lmdb put per txn",
            peer_value=lat_peer,
            unit="s",
            higher_is_better=False,
            impl=impl,
        ),
        Row(
            kernel="wal",
            work="scan, checksums verified",
            ours=scan_ours,
            peer="py-lmdb cursor iteration",
            peer_value=scan_peer,
            unit="ops/s",
            impl=impl,
        ),
    ]
