"""Committed proposals per second on a real 3-node cluster, against PySyncObj's: the
logic of ``distsync bench commit`` and of ``benchmarks/cluster_commit.py``.

distsync: three ``distsync serve`` processes on 127.0.0.1, fsync on (the Raft log in
segment files, and in LMDB for the ``lmdb`` rows); this process is the client
(:class:`~distsync.testing.cluster.ClusterClient`, one connection to the leader carrying
every proposal in flight). Each proposal is one ``incr`` command with a ``(client_id,
sequence)``, acknowledged once committed and applied on the leader.

PySyncObj (the peer): three processes, each a ``SyncObj`` with a ``ReplCounter`` and its
default in-memory journal (no fsync). It has no remote client, so the load runs inside
the leader's process with ``counter.inc(callback=...)``: P chains of asynchronous
increments, each issuing the next from its callback. As in PEERS.md: measured with
batching off (``appendEntriesUseBatch=False``, its low-latency mode) and on (its default,
0.1 s batches), the better of the two reported per proposer count, and with glibc's
``MALLOC_TRIM_THRESHOLD_`` raised (it reads every message into a 64 KiB buffer; at the
default threshold it runs at half speed). PySyncObj is installed with pip by
:func:`ensure_pysyncobj` (the benchmark's setup step) if missing, never as a distsync
dependency.

For each side and each proposer count (1 and 64): ``reps`` runs of ``duration`` seconds
after a warm-up; the median run's rate and its p50/p99 commit latency (from sending the
proposal to its acknowledgement) are reported.

A PySyncObj node runs as ``python -m distsync.bench._commit --pysyncobj-node I ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "QUICK",
    "CommitSettings",
    "ensure_pysyncobj",
    "bench_distsync",
    "bench_pysyncobj",
    "run_commit",
    "render_commit_table",
    "main",
]

MALLOC_TRIM = "1073741824"  # 1 GiB: heap trimming effectively off (PEERS.md)


# ==== distsync ===================================================================================


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _summary(lat: list[float], count: int, elapsed: float) -> dict[str, float]:
    """Rate, p50/p99 (ms) and count of one run; sorts ``lat`` (seconds) in place."""
    lat.sort()
    return {
        "rate": count / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _percentile(lat, 0.50) * 1e3,
        "p99_ms": _percentile(lat, 0.99) * 1e3,
        "count": count,
    }


async def _distsync_run(
    cl: Any, proposers: int, duration: float, warmup: float
) -> dict[str, float]:
    lat: list[float] = []
    count = 0
    stop = 0.0

    async def worker() -> None:
        nonlocal count
        perf = time.perf_counter
        while perf() < stop:
            t0 = perf()
            await cl.propose("incr")
            lat.append(perf() - t0)
            count += 1

    stop = time.perf_counter() + warmup
    await asyncio.gather(*(worker() for _ in range(proposers)))
    lat.clear()
    count = 0
    t0 = time.perf_counter()
    stop = t0 + duration
    await asyncio.gather(*(worker() for _ in range(proposers)))
    return _summary(lat, count, time.perf_counter() - t0)


def bench_distsync(
    proposer_counts: list[int],
    duration: float,
    reps: int,
    log: Callable[[str], None] = _stderr,
    warmup: float = 0.5,
    log_format: str = "segments",
) -> dict[int, list[dict[str, float]]]:
    """``reps`` runs per proposer count on a fresh 3-process cluster (fsync on), its Raft
    log stored in ``log_format`` (see :mod:`distsync.raft.lmdb_storage`)."""
    from distsync.node import install_uvloop
    from distsync.testing.cluster import ProcessCluster

    install_uvloop()
    results: dict[int, list[dict[str, float]]] = {p: [] for p in proposer_counts}
    with ProcessCluster(3, args=["--log-format", log_format]) as c:
        c.wait_for_leader(timeout=15.0)

        async def main() -> None:
            async with c.client() as cl:
                await cl.propose("incr")
                for p in proposer_counts:
                    for _ in range(reps):
                        results[p].append(await _distsync_run(cl, p, duration, warmup))
                        log(f"  distsync  P={p:<3} {results[p][-1]['rate']:>9,.0f}/s")

        asyncio.run(main())
    return results


# ==== PySyncObj ==================================================================================


def ensure_pysyncobj() -> str:
    """The benchmark's setup step: install PySyncObj (the peer) with pip if missing, into
    this interpreter (never a distsync dependency); its version."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pysyncobj"], check=True)
    from importlib.metadata import version

    return version("pysyncobj")


def pysyncobj_node(args: argparse.Namespace) -> int:
    """One PySyncObj node (run as a subprocess). The node that becomes leader runs the
    load and writes its results to ``--out``; every node exits once that file exists."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplCounter

    ports = [int(p) for p in args.ports.split(",")]
    me = f"127.0.0.1:{ports[args.index]}"
    others = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != args.index]
    conf = SyncObjConf(appendEntriesUseBatch=bool(args.batch), dynamicMembershipChange=False)
    counter = ReplCounter()
    obj = SyncObj(me, others, conf=conf, consumers=[counter])
    out = Path(args.out)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not out.exists():
            if obj._isLeader() and obj.isReady():
                break
            time.sleep(0.01)
        else:
            return 0
        counter.inc(sync=True, timeout=10)  # the leader commits its term: warm-up
        results: dict[str, list[dict[str, float]]] = {}
        for p in [int(x) for x in args.proposers.split(",")]:
            runs = []
            for _ in range(args.reps):
                _pysyncobj_run(counter, FAIL_REASON.SUCCESS, p, args.warmup)
                runs.append(_pysyncobj_run(counter, FAIL_REASON.SUCCESS, p, args.duration))
            results[str(p)] = runs
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results))
        tmp.rename(out)
    finally:
        obj.destroy()
    return 0


def _pysyncobj_run(counter: Any, success: int, proposers: int, duration: float) -> dict[str, float]:
    lat: list[float] = []
    count = 0
    errors = 0
    active = proposers
    done = threading.Event()
    lock = threading.Lock()
    stop = time.perf_counter() + duration
    t_start = time.perf_counter()

    def issue() -> None:
        t0 = time.perf_counter()

        def cb(result: Any, err: int) -> None:
            nonlocal count, errors, active
            now = time.perf_counter()
            with lock:
                if err == success:
                    lat.append(now - t0)
                    count += 1
                else:
                    errors += 1
            if now < stop:
                issue()
            else:
                with lock:
                    active -= 1
                    if active == 0:
                        done.set()

        counter.inc(callback=cb)

    for _ in range(proposers):
        issue()
    done.wait(duration + 30)
    return {**_summary(lat, count, time.perf_counter() - t_start), "errors": errors}


def bench_pysyncobj(
    proposer_counts: list[int], duration: float, reps: int, batch: bool, warmup: float = 0.5
) -> dict[int, list[dict[str, float]]]:
    """The same runs on a 3-process PySyncObj cluster (see the module docstring)."""
    from distsync.testing.cluster import _child_env, free_ports

    ports = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="pysyncobj-bench-") as tmp:
        out = Path(tmp) / "result.json"
        # The children import this module from the same distsync as this process.
        env = _child_env({"MALLOC_TRIM_THRESHOLD_": MALLOC_TRIM})
        cmd = [sys.executable, "-m", "distsync.bench._commit", "--pysyncobj-node"]
        common = [
            "--ports", ",".join(map(str, ports)),
            "--out", str(out),
            "--proposers", ",".join(map(str, proposer_counts)),
            "--duration", str(duration),
            "--reps", str(reps),
            "--warmup", str(warmup),
            "--batch", "1" if batch else "0",
        ]  # fmt: skip
        procs = [
            subprocess.Popen(
                [*cmd, str(i), *common],
                env=env,
                stdout=subprocess.DEVNULL,
                # With batching off its followers log "truncating already-applied log
                # entries" warnings by the thousand (PEERS.md): known, not ours to show.
                stderr=subprocess.DEVNULL,
            )
            for i in range(3)
        ]
        try:
            budget = 60 + len(proposer_counts) * reps * (duration + warmup + 5)
            deadline = time.monotonic() + budget
            while not out.exists():
                if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                    raise RuntimeError("PySyncObj cluster produced no result")
                time.sleep(0.1)
            data = json.loads(out.read_text())
        finally:
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
    return {int(k): v for k, v in data.items()}


# ==== the whole benchmark =========================================================================


class CommitSettings:
    """How long and how often: ``duration`` seconds per run, ``reps`` runs per
    configuration (the median is reported), after ``warmup`` seconds of load."""

    def __init__(
        self,
        proposers: tuple[int, ...] = (1, 64),
        duration: float = 3.0,
        reps: int = 3,
        warmup: float = 0.5,
        log_formats: tuple[str, ...] = ("segments", "lmdb"),
    ) -> None:
        if not proposers or min(proposers) < 1:
            raise ValueError("proposer counts must be >= 1")
        from distsync.raft.lmdb_storage import LOG_FORMATS

        if not log_formats or any(f not in LOG_FORMATS for f in log_formats):
            raise ValueError(f"log formats must be among {', '.join(LOG_FORMATS)}")
        self.log_formats = log_formats
        if duration <= 0 or reps < 1 or warmup < 0:
            raise ValueError("duration must be > 0, reps >= 1, warmup >= 0")
        self.proposers = proposers
        self.duration = duration
        self.reps = reps
        self.warmup = warmup


#: ``--quick``: one short run per configuration, a smoke run (figures are rough).
QUICK = CommitSettings(duration=0.5, reps=1, warmup=0.2, log_formats=("segments",))


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    rates = sorted(r["rate"] for r in runs)
    med = statistics.median_low(rates)
    return next(r for r in runs if r["rate"] == med)


def run_commit(
    settings: CommitSettings,
    *,
    peer: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run the benchmark: ``{"meta": {...}, "rows": [...]}``, one row per system and
    proposer count (the shape ``--json`` writes). ``peer=False`` skips PySyncObj."""
    counts = list(settings.proposers)
    d, reps, warm = settings.duration, settings.reps, settings.warmup
    rows: list[dict[str, Any]] = []
    for fmt in settings.log_formats:
        log(f"distsync (3 processes, Raft log in {fmt}, fsync on)...")
        ours = bench_distsync(counts, d, reps, log, warm, fmt)
        for p in counts:
            rows.append(
                {
                    "system": "distsync" if fmt == "segments" else f"distsync ({fmt} log)",
                    "fsync": True,
                    "proposers": p,
                    **_median_run(ours[p]),
                    "runs": ours[p],
                }
            )
    peer_version = None
    if peer:
        peer_version = ensure_pysyncobj()
        best: dict[int, dict[str, Any]] = {}
        for batch in (False, True):
            log(f"PySyncObj {peer_version} (appendEntriesUseBatch={batch})...")
            theirs = bench_pysyncobj(counts, d, reps, batch, warm)
            for p in counts:
                med = _median_run(theirs[p])
                log(f"  PySyncObj P={p:<3} batch={batch!s:<5} {med['rate']:>9,.0f}/s")
                if p not in best or med["rate"] > best[p]["rate"]:
                    best[p] = {"batch": batch, **med, "runs": theirs[p]}
        for p in counts:
            rows.append(
                {"system": f"PySyncObj {peer_version}", "fsync": False, "proposers": p, **best[p]}
            )
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "duration_s": d,
        "reps": reps,
        "warmup_s": warm,
        "peer": None if peer_version is None else f"pysyncobj {peer_version}",
    }
    return {"meta": meta, "rows": rows}


def render_commit_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`run_commit` as a fixed-width table."""
    head = (
        f"{'system':<20} {'fsync':>5} {'proposers':>9} {'commits/s':>11} {'p50 ms':>8} "
        f"{'p99 ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        extra = f"  (batch={r['batch']})" if "batch" in r else ""
        lines.append(
            f"{r['system']:<20} {('on' if r['fsync'] else 'off'):>5} {r['proposers']:>9} "
            f"{r['rate']:>11,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}{extra}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``benchmarks/cluster_commit.py``'s command line (and a PySyncObj node's)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    ap.add_argument("--reps", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each run")
    ap.add_argument("--proposers", default="1,64", help="comma-separated proposer counts")
    ap.add_argument("--quick", action="store_true", help="one short run each, a smoke run")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--skip-pysyncobj", action="store_true")
    ap.add_argument(
        "--log-formats", help="Raft log formats to run, comma-separated (segments,lmdb)"
    )
    # Internal: one PySyncObj node.
    ap.add_argument("--pysyncobj-node", dest="index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.index is not None:
        return pysyncobj_node(args)
    counts = tuple(int(p) for p in args.proposers.split(","))
    formats = tuple(args.log_formats.split(",")) if args.log_formats else ()
    formats_arg = (formats,) if formats else ()
    if args.quick:
        settings = CommitSettings(
            counts, QUICK.duration, QUICK.reps, QUICK.warmup, formats or QUICK.log_formats
        )
    else:
        settings = CommitSettings(counts, args.duration, args.reps, args.warmup, *formats_arg)
    result = run_commit(settings, peer=not args.skip_pysyncobj)
    print(render_commit_table(result["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
