"""Lock acquire+release pairs on a real 3-node cluster, against PySyncObj and etcd: the
logic of ``distsync bench locks`` and of ``benchmarks/cluster_locks.py``.

Three workloads, the same for every system (the issue's part 8):

- ``1 client``: one client takes and releases one lock in a loop;
- ``8 clients / 8 locks``: a middle point for the plot (no target);
- ``64 clients / 64 locks``: 64 clients, each on a lock of its own (no contention: what
  the cluster's commit path sustains);
- ``16 clients / 1 lock``: 16 clients contend for one lock; each pair is a hand-off, and
  its latency includes the wait in line.

A *pair* is one acquire plus one release, each acknowledged; its latency runs from
sending the acquire to the release's acknowledgement. Per workload: a warm-up, then
``duration`` seconds, ``reps`` times; the median run (by rate) is reported.

- **distsync**: ``LocalCluster(nodes=3)`` (three ``distsync serve`` processes on
  127.0.0.1, fsync on); each client is an :class:`~distsync.AsyncClient` of its
  own (its own connections and session), all on this process's event loop.
- **PySyncObj** (peer, no fsync: its journal is in memory): three processes, each a
  ``SyncObj`` with a ``ReplLockManager(autoUnlockTime=30)``, batching off
  (``appendEntriesUseBatch=False``, its low-latency mode) and glibc's heap-trim threshold
  raised, as PEERS.md measured it. It has no remote client, so the clients are threads in
  the leader's process. ``ReplLockManager`` names its holder by one ``selfID`` per
  instance; each client thread sends what ``tryAcquire``/``release`` send, with a
  ``selfID`` of its own, so 16 threads really are 16 contenders. It has no waiting
  acquire: a contender retries ``tryAcquire`` until it succeeds.
- **etcd** (peer, default fsync): Debian's ``etcd-server``, 3 members on 127.0.0.1, each
  client one HTTP keep-alive connection and one lease on the v3 JSON gateway:
  ``/v3/lock/lock`` then ``/v3/lock/unlock`` (a waiting acquire; etcd hands over by
  watch).

The peers are installed by :func:`ensure_pysyncobj` (pip) and :func:`ensure_etcd`
(apt-get, only when missing and running as root), never as distsync dependencies; what
is started is stopped before the benchmark returns.

A PySyncObj node runs as ``python -m distsync.bench._locks --pysyncobj-node I ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distsync.bench._commit import MALLOC_TRIM, _stderr, _summary, ensure_pysyncobj

__all__ = [
    "WORKLOADS",
    "TARGETS",
    "FSYNC_OFF",
    "SHARED",
    "LockSettings",
    "QUICK",
    "ensure_etcd",
    "run_locks",
    "render_locks_table",
    "plot_latency",
    "main",
]


@dataclass(frozen=True)
class Workload:
    """``clients`` clients over ``resources`` locks (client i uses lock i % resources)."""

    name: str
    clients: int
    resources: int


WORKLOADS = (
    Workload("1 client", 1, 1),
    # No target of its own: a middle point of the latency-against-clients plot, and the
    # figure PEERS.md gives for both peers at 8 clients.
    Workload("8 clients / 8 locks", 8, 8),
    Workload("64 clients / 64 locks", 64, 64),
    Workload("16 clients / 1 lock", 16, 1),
)

#: The issue's targets per workload: (minimum pairs/s, maximum p50 ms, maximum p99 ms).
TARGETS: dict[str, tuple[float, float | None, float | None]] = {
    "1 client": (1600.0, 0.6, None),
    "64 clients / 64 locks": (10000.0, None, None),
    "16 clients / 1 lock": (2000.0, None, 20.0),
}


@dataclass(frozen=True)
class LockSettings:
    """``duration`` seconds per run, ``reps`` runs per workload (median kept), after
    ``warmup`` seconds of the same load."""

    duration: float = 3.0
    reps: int = 3
    warmup: float = 0.5

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.reps < 1 or self.warmup < 0:
            raise ValueError("duration must be > 0, reps >= 1, warmup >= 0")


#: ``--quick``: one short run per workload, a smoke run (figures are rough).
QUICK = LockSettings(duration=0.5, reps=1, warmup=0.2)


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    med = statistics.median_low(sorted(r["rate"] for r in runs))
    return next(r for r in runs if r["rate"] == med)


# ==== distsync ===================================================================================


async def _distsync_run(clients: list[Any], w: Workload, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    count = 0
    stop = time.perf_counter() + seconds

    async def one(k: int) -> None:
        nonlocal count
        c = clients[k]
        resource = f"bench-{k % w.resources}"
        perf = time.perf_counter
        while perf() < stop:
            t0 = perf()
            grant = await c.acquire(resource, timeout=30.0)
            await grant.release()
            lat.append(perf() - t0)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(w.clients)))
    return _summary(lat, count, time.perf_counter() - t0)


def bench_distsync(
    settings: LockSettings,
    log: Callable[[str], None] = _stderr,
    *,
    node_args: tuple[str, ...] = (),
    shared_client: bool = False,
    label: str = "distsync",
) -> dict[str, list[dict[str, float]]]:
    """Every workload on one fresh ``LocalCluster(nodes=3)`` (fsync on unless
    ``node_args`` holds ``--no-sync``). ``shared_client``: the clients are tasks of one
    ``AsyncClient`` (one connection to the leader, a session per task) instead of an
    ``AsyncClient`` each."""
    from distsync.client import AsyncClient
    from distsync.cluster import LocalCluster
    from distsync.node import install_uvloop

    install_uvloop()
    results: dict[str, list[dict[str, float]]] = {}
    with LocalCluster(nodes=3, args=node_args) as cluster:

        async def main() -> None:
            most = max(w.clients for w in WORKLOADS)
            clients = [
                AsyncClient(cluster.addresses, secret=cluster.secret, session_ttl=30.0)
                for _ in range(1 if shared_client else most)
            ]
            try:
                for w in WORKLOADS:
                    use = clients * w.clients if shared_client else clients[: w.clients]
                    results[w.name] = []
                    for _ in range(settings.reps):
                        await _distsync_run(use, w, settings.warmup)
                        results[w.name].append(await _distsync_run(use, w, settings.duration))
                        log(f"  {label:<10} {w.name:<22} {results[w.name][-1]['rate']:>9,.0f}/s")
            finally:
                for c in clients:
                    await c.close(timeout=2.0)

        asyncio.run(main())
    return results


# ==== PySyncObj ==================================================================================


def _pysyncobj_run(impl: Any, w: Workload, seconds: float, tag: str) -> dict[str, float]:
    """``w`` inside the leader's process: one thread per client (see the module doc)."""
    lat: list[float] = []
    count = 0
    guard = threading.Lock()
    stop = time.perf_counter() + seconds

    def one(k: int) -> None:
        nonlocal count
        me = f"{tag}-client-{k}"
        lock_id = f"bench-{k % w.resources}"
        perf = time.perf_counter
        while perf() < stop:
            t0 = perf()
            # tryAcquire's replicated call, with this client's selfID; no waiting acquire
            # exists, so a contender tries again until it holds the lock.
            while not impl.acquire(lock_id, me, time.time(), sync=True, timeout=10):
                if perf() >= stop + 5:
                    return
            impl.release(lock_id, me, sync=True, timeout=10)
            t1 = perf()
            with guard:
                lat.append(t1 - t0)
                count += 1

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(w.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return _summary(lat, count, time.perf_counter() - t0)


def pysyncobj_node(args: argparse.Namespace) -> int:
    """One PySyncObj node (a subprocess). The leader runs the workloads and writes the
    results to ``--out``; every node exits once that file exists (bounded)."""
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplLockManager

    ports = [int(p) for p in args.ports.split(",")]
    me = f"127.0.0.1:{ports[args.index]}"
    others = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != args.index]
    conf = SyncObjConf(appendEntriesUseBatch=False, dynamicMembershipChange=False)
    manager = ReplLockManager(autoUnlockTime=30, selfID=me)
    obj = SyncObj(me, others, conf=conf, consumers=[manager])
    impl = manager._consumer()
    settings = LockSettings(args.duration, args.reps, args.warmup)
    out = Path(args.out)
    deadline = time.monotonic() + 120 + 20 * len(WORKLOADS) * settings.reps
    try:
        while time.monotonic() < deadline and not out.exists():
            if obj._isLeader() and obj.isReady():
                break
            time.sleep(0.01)
        else:
            return 0
        impl.acquire("warm", me, time.time(), sync=True, timeout=10)  # commits its term
        results: dict[str, list[dict[str, float]]] = {}
        for n, w in enumerate(WORKLOADS):
            results[w.name] = []
            for r in range(settings.reps):
                _pysyncobj_run(impl, w, settings.warmup, f"w{n}r{r}")
                results[w.name].append(_pysyncobj_run(impl, w, settings.duration, f"m{n}r{r}"))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results))
        tmp.rename(out)
    finally:
        manager.destroy()
        obj.destroy()
    return 0


def bench_pysyncobj(settings: LockSettings) -> dict[str, list[dict[str, float]]]:
    """The workloads on a 3-process PySyncObj cluster (see the module docstring)."""
    from distsync.testing.cluster import _child_env, free_ports

    ports = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="pysyncobj-locks-") as tmp:
        out = Path(tmp) / "result.json"
        env = _child_env({"MALLOC_TRIM_THRESHOLD_": MALLOC_TRIM})
        cmd = [sys.executable, "-m", "distsync.bench._locks", "--pysyncobj-node"]
        common = [
            "--ports", ",".join(map(str, ports)),
            "--out", str(out),
            "--duration", str(settings.duration),
            "--reps", str(settings.reps),
            "--warmup", str(settings.warmup),
        ]  # fmt: skip
        procs = [
            subprocess.Popen(
                [*cmd, str(i), *common],
                env=env,
                stdout=subprocess.DEVNULL,
                # Its followers log "truncating already-applied log entries" by the
                # thousand with batching off (PEERS.md): known, not ours to show.
                stderr=subprocess.DEVNULL,
            )
            for i in range(3)
        ]
        try:
            per_run = settings.duration + settings.warmup + 5
            deadline = time.monotonic() + 60 + len(WORKLOADS) * settings.reps * per_run
            while not out.exists():
                if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                    raise RuntimeError("PySyncObj cluster produced no result")
                time.sleep(0.1)
            data: dict[str, list[dict[str, float]]] = json.loads(out.read_text())
        finally:
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
    return data


# ==== etcd =======================================================================================


def ensure_etcd(log: Callable[[str], None] = _stderr) -> tuple[str | None, str]:
    """The benchmark's setup step for etcd: Debian's ``etcd-server``, installed with
    apt-get when missing and this process is root. ``(path to etcd, version)``, or
    ``(None, why not)`` when it cannot be had."""
    found = shutil.which("etcd")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing Debian's etcd-server with apt-get...")

        def apt(*argv: str) -> int:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            try:
                done = subprocess.run(
                    ["apt-get", *argv],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    timeout=600,
                )
            except subprocess.TimeoutExpired:  # a stuck mirror: etcd is then not available
                return 1
            return done.returncode

        # A stale package index makes the install fail: update once, then try again.
        if apt("install", "-y", "-q", "etcd-server") != 0:
            apt("update", "-q")
            apt("install", "-y", "-q", "etcd-server")
        found = shutil.which("etcd") or (
            "/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None
        )
    if found is None:
        return None, "not available (etcd-server missing; installing it needs root and apt-get)"
    proc = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10)
    first = (proc.stdout or proc.stderr).splitlines()
    version = first[0].split(":")[-1].strip() if first else "?"
    return found, version


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class _EtcdClient:
    """One client of the v3 JSON gateway: one keep-alive connection, one lease."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.lease = self.post("/v3/lease/grant", {"TTL": 60})["ID"]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def pair(self, name: str) -> None:
        key = self.post("/v3/lock/lock", {"name": _b64(name), "lease": self.lease})["key"]
        self.post("/v3/lock/unlock", {"key": key})

    def close(self) -> None:
        self.conn.close()


def _etcd_run(clients: list[_EtcdClient], w: Workload, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    count = 0
    guard = threading.Lock()
    errors: list[BaseException] = []
    stop = time.perf_counter() + seconds

    def one(k: int) -> None:
        nonlocal count
        # A name no other key starts with: lock(name) waits on every key under name/.
        name = f"bench-lock-{k % w.resources}"
        perf = time.perf_counter
        try:
            while perf() < stop:
                t0 = perf()
                clients[k].pair(name)
                t1 = perf()
                with guard:
                    lat.append(t1 - t0)
                    count += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(w.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    if errors:
        raise errors[0]
    return _summary(lat, count, time.perf_counter() - t0)


def bench_etcd(
    etcd: str, settings: LockSettings, log: Callable[[str], None] = _stderr
) -> dict[str, list[dict[str, float]]]:
    """The workloads on 3 etcd members on 127.0.0.1, stopped and removed on return."""
    from distsync.testing.cluster import free_ports

    ports = free_ports(6)
    client_ports, peer_ports = ports[:3], ports[3:]
    names = [f"m{i}" for i in range(3)]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="etcd-locks-") as tmp:
        try:
            for n, cp, pp in zip(names, client_ports, peer_ports, strict=True):
                cmd = [
                    etcd, "--name", n, "--data-dir", str(Path(tmp) / n),
                    "--listen-client-urls", f"http://127.0.0.1:{cp}",
                    "--advertise-client-urls", f"http://127.0.0.1:{cp}",
                    "--listen-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "distsync-bench",
                ]  # fmt: skip
                procs.append(
                    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            port = client_ports[0]
            deadline = time.monotonic() + 30
            while True:
                try:
                    probe = _EtcdClient(port)
                    probe.pair("bench-warm")
                    probe.close()
                    break
                except (OSError, RuntimeError, http.client.HTTPException, KeyError):
                    if time.monotonic() > deadline:
                        raise RuntimeError("etcd cluster did not come up") from None
                    time.sleep(0.2)
            most = max(w.clients for w in WORKLOADS)
            # Clients spread over the members, as etcd's own clients balance.
            clients = [_EtcdClient(client_ports[k % 3]) for k in range(most)]
            results: dict[str, list[dict[str, float]]] = {}
            try:
                for w in WORKLOADS:
                    use = clients[: w.clients]
                    results[w.name] = []
                    for _ in range(settings.reps):
                        _etcd_run(use, w, settings.warmup)
                        results[w.name].append(_etcd_run(use, w, settings.duration))
                        log(f"  etcd       {w.name:<22} {results[w.name][-1]['rate']:>9,.0f}/s")
            finally:
                for c in clients:
                    c.close()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
    return results


# ==== the whole benchmark =========================================================================


#: The system names of the extra distsync runs (rows without target or ratio): fsync off
#: on every node, and the clients as tasks of one shared client.
FSYNC_OFF = "distsync, fsync off (bound)"
SHARED = "distsync, one shared client"


def run_locks(
    settings: LockSettings,
    *,
    peers: bool = True,
    fsync_off_bound: bool = False,
    shared_client: bool = False,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run the benchmark: ``{"meta": {...}, "rows": [...]}``, one row per system and
    workload (the shape ``--json`` writes). ``peers=False`` runs distsync only.

    ``fsync_off_bound`` runs distsync a second time with fsync off on every node
    (``distsync serve --no-sync``): not a configuration to deploy (an acknowledged lock
    could be lost with a power cut) but the bound that tells what the disk costs, i.e.
    what the same code does when every flush is free. Its rows (system
    :data:`FSYNC_OFF`) carry no target: the targets hold while every commit is fsynced.

    ``shared_client`` runs distsync once more with each workload's clients as tasks of
    one ``AsyncClient`` (rows :data:`SHARED`, no target): how a service with many workers
    would use it, one connection to the leader for all of them. A lock's holder is then
    a session of that client rather than a client of its own, so these rows are not the
    workloads the targets are for (n clients, each with its own connection), only beside
    them."""
    rows: list[dict[str, Any]] = []
    log("distsync (3 processes, fsync on)...")
    ours = bench_distsync(settings, log)
    extra: dict[str, tuple[bool, dict[str, list[dict[str, float]]]]] = {}
    if fsync_off_bound:
        log("distsync again, fsync off on every node (a bound, not a configuration)...")
        unsynced = bench_distsync(settings, log, node_args=("--no-sync",), label="no fsync")
        extra[FSYNC_OFF] = (False, unsynced)
    if shared_client:
        log("distsync again, the clients as tasks of one client (fsync on)...")
        extra[SHARED] = (True, bench_distsync(settings, log, shared_client=True, label="shared"))
    peer_runs: dict[str, dict[str, list[dict[str, float]]] | str] = {}
    versions: dict[str, str] = {}
    if peers:
        v = ensure_pysyncobj()
        versions["PySyncObj"] = v
        log(f"PySyncObj {v} (3 processes, ReplLockManager, no fsync)...")
        try:
            peer_runs["PySyncObj"] = bench_pysyncobj(settings)
        except RuntimeError as exc:
            peer_runs["PySyncObj"] = f"failed: {exc}"
        etcd, ev = ensure_etcd(log)
        if etcd is None:
            peer_runs["etcd"] = ev
        else:
            versions["etcd"] = ev
            log(f"etcd {ev} (3 members, v3 JSON gateway, fsync on)...")
            try:
                peer_runs["etcd"] = bench_etcd(etcd, settings, log)
            except (RuntimeError, OSError, http.client.HTTPException) as exc:
                peer_runs["etcd"] = f"failed: {exc}"
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for peer, runs in peer_runs.items():
        if isinstance(runs, dict):
            medians[peer] = {w: _median_run(r) for w, r in runs.items()}
    for w in WORKLOADS:
        med = _median_run(ours[w.name])
        target: str | None = None
        met: bool | None = None
        if w.name in TARGETS:
            min_rate, max_p50, max_p99 = TARGETS[w.name]
            met = med["rate"] >= min_rate
            met = met and (max_p50 is None or med["p50_ms"] <= max_p50)
            met = met and (max_p99 is None or med["p99_ms"] <= max_p99)
            target = f">= {min_rate:,.0f}/s" + (f", p50 <= {max_p50} ms" if max_p50 else "")
            target += f", p99 <= {max_p99:.0f} ms" if max_p99 else ""
        ratios = {
            p: (med["rate"] / m[w.name]["rate"] if m[w.name]["rate"] > 0 else None)
            for p, m in medians.items()
        }
        rows.append(
            {
                "system": "distsync",
                "fsync": True,
                "workload": w.name,
                "clients": w.clients,
                "resources": w.resources,
                "available": True,
                **med,
                "ratio_vs": ratios,
                "target": target,
                "met": met,
                "runs": ours[w.name],
            }
        )
        for system, (fsync, variant) in extra.items():
            rows.append(
                {
                    "system": system,
                    "fsync": fsync,
                    "workload": w.name,
                    "clients": w.clients,
                    "resources": w.resources,
                    "available": True,
                    **_median_run(variant[w.name]),
                    "runs": variant[w.name],
                }
            )
        for peer, runs in peer_runs.items():
            name = f"{peer} {versions[peer]}" if peer in versions else peer
            row: dict[str, Any] = {
                "system": name,
                "fsync": peer == "etcd",
                "workload": w.name,
                "clients": w.clients,
                "resources": w.resources,
            }
            if isinstance(runs, dict):
                row.update(available=True, **_median_run(runs[w.name]), runs=runs[w.name])
            else:
                row.update(available=False, note=runs)
            rows.append(row)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "duration_s": settings.duration,
        "reps": settings.reps,
        "warmup_s": settings.warmup,
        "peers": {p: (versions.get(p) or r) for p, r in peer_runs.items()},
    }
    return {"meta": meta, "rows": rows}


def render_locks_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`run_locks` as a fixed-width table."""
    peers = sorted({p for r in rows for p in r.get("ratio_vs", {})})
    header = ["system", "workload", "pairs/s", "p50 ms", "p99 ms"]
    header += [f"vs {p}" for p in peers] + ["target"]
    lines = [header]
    for r in rows:
        if not r.get("available", True):
            cells = [r["system"], r["workload"], r.get("note", "not available"), "", ""]
            lines.append(cells + [""] * (len(peers) + 1))
            continue
        cells = [
            r["system"] + ("" if r["fsync"] or r["system"] == FSYNC_OFF else " (no fsync)"),
            r["workload"],
            f"{r['rate']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
        ]
        for p in peers:
            ratio = r.get("ratio_vs", {}).get(p) if "ratio_vs" in r else None
            cells.append("" if ratio is None else f"{ratio:.2f}x")
        if r.get("target"):
            cells.append(f"{r['target']} {'met' if r['met'] else 'MISSED'}")
        else:
            cells.append("")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(wd) for c, wd in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * wd for wd in widths))
    return "\n".join(out)


def plot_latency(rows: list[dict[str, Any]], path: str) -> None:
    """A PNG of p50 and p99 pair latency against the number of clients, per system
    (matplotlib, from the ``bench`` extra): the 1- and 64-client points are the
    uncontended workloads (a line), the 16-client point the one-lock hand-off."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    systems = list(dict.fromkeys(r["system"] for r in rows if r.get("available", True)))
    for n, system in enumerate(systems):
        color = f"C{n}"
        mine = [r for r in rows if r["system"] == system and r.get("available", True)]
        free = sorted(
            (r for r in mine if r["resources"] == r["clients"]), key=lambda r: r["clients"]
        )
        hot = [r for r in mine if r["resources"] == 1 and r["clients"] > 1]
        for q, style in (("p50_ms", "-"), ("p99_ms", ":")):
            ax.plot(
                [r["clients"] for r in free],
                [r[q] for r in free],
                style,
                marker="o",
                color=color,
                label=f"{system} {q[:3]}, a lock each",
            )
            ax.plot(
                [r["clients"] for r in hot],
                [r[q] for r in hot],
                linestyle="none",
                marker="^" if q == "p50_ms" else "v",
                color=color,
                label=f"{system} {q[:3]}, one shared lock",
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    counts = sorted({int(r["clients"]) for r in rows})
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("acquire+release latency (ms)")
    ax.set_title("Lock pair latency against clients, 3 nodes on 127.0.0.1")
    ax.grid(True, which="both", alpha=0.3)
    # Outside the axes: inside, a dozen entries would hide the points.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``benchmarks/cluster_locks.py``'s command line (and a PySyncObj node's)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=float, help="seconds per run (3; 0.5 with --quick)")
    ap.add_argument("--reps", type=int, help="runs per workload, median kept (3; 1 with --quick)")
    ap.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="one short run each, a smoke run")
    ap.add_argument("--skip-peers", action="store_true", help="distsync only, nothing installed")
    ap.add_argument(
        "--fsync-off-bound",
        action="store_true",
        help="also run distsync with fsync off on every node, what the disk costs (a bound)",
    )
    ap.add_argument(
        "--shared-client",
        action="store_true",
        help="also run distsync with the clients as tasks of one shared client",
    )
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", metavar="FILE", help="write a PNG of latency against clients")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    # Internal: one PySyncObj node.
    ap.add_argument("--pysyncobj-node", dest="index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.index is not None:
        return pysyncobj_node(args)
    return run_cli(args)


def run_cli(args: argparse.Namespace) -> int:
    """Shared by :func:`main` and ``distsync bench locks``."""
    from distsync.bench import Progress

    base = QUICK if args.quick else LockSettings()
    try:
        settings = LockSettings(
            base.duration if args.duration is None else args.duration,
            base.reps if args.reps is None else args.reps,
            base.warmup if getattr(args, "warmup", None) is None else args.warmup,
        )
    except ValueError as exc:
        print(f"distsync bench locks: {exc}", file=sys.stderr)
        return 2
    result = run_locks(
        settings,
        peers=not args.skip_peers,
        fsync_off_bound=args.fsync_off_bound,
        shared_client=args.shared_client,
        log=Progress(quiet=args.quiet),
    )
    print(render_locks_table(result["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.plot:
        plot_latency(result["rows"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
