"""Real ``distsync serve`` processes on loopback, for multi-process tests and benchmarks.

:class:`ProcessCluster` starts N nodes as subprocesses (``python -m distsync serve``) on
127.0.0.1 with free ports and their own data directories, and can kill (``SIGKILL``),
restart and stop them. :class:`ClusterClient` proposes commands to whichever node leads,
following redirects and retrying after failures with the same ``(client_id, sequence)``,
so that a retry is applied once.

The subprocesses import the same ``distsync`` as this process (its parent directory goes
first on their ``PYTHONPATH``), so the harness works from an installed package and from a
source checkout alike. Everything is bounded: every wait has a timeout, and
:meth:`ProcessCluster.close` (also on ``with`` exit) kills whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import distsync
from distsync.errors import AuthError, ClusterUnavailable, DistSyncError, ProtocolError
from distsync.net.envelope import Envelope, MsgIdGenerator
from distsync.net.transport import Connection, ConnectionPool
from distsync.node import encode_command, fetch_status
from distsync.raft import NotLeaderError

__all__ = ["ProcessCluster", "ClusterClient", "free_ports"]

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (bound, then released: another
    process could take one meanwhile, which on a test machine is rare)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The directory holding the distsync package imported here: a checkout's src/ or
    # site-packages. First on the path, so the children run this very code.
    root = str(Path(distsync.__file__).resolve().parent.parent)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    # Keep the nodes' secret out of the environment they would otherwise inherit.
    env.pop("DISTSYNC_SECRET", None)
    env.update(extra or {})
    return env


class ProcessCluster:
    """N ``distsync serve`` processes named ``node_0`` .. ``node_{n-1}``.

    :param n: number of nodes.
    :param base_dir: where data dirs, logs and the secret file go (default: a new
        temporary directory, removed on :meth:`close`).
    :param secret: the cluster secret; ``secrets`` overrides it per node id (to start a
        node with a wrong one).
    :param args: extra ``distsync serve`` flags for every node (e.g. ``--snapshot-entries``).
    """

    def __init__(
        self,
        n: int = 3,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        secret: bytes = b"process-cluster-secret-0123456789",
        secrets: dict[str, bytes] | None = None,
        args: Sequence[str] = (),
        metrics: bool = False,
    ) -> None:
        self.n = n
        self._own_dir = base_dir is None
        self.base_dir = Path(
            tempfile.mkdtemp(prefix="distsync-cluster-") if base_dir is None else base_dir
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.ids = [f"node_{i}" for i in range(n)]
        ports = free_ports(2 * n if metrics else n)
        self.ports = dict(zip(self.ids, ports[:n], strict=True))
        self.metrics_ports = dict(zip(self.ids, ports[n:], strict=True)) if metrics else {}
        self.args = list(args)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}
        self._secret_files: dict[str, Path] = {}
        for nid in self.ids:
            f = self.base_dir / f"{nid}.secret"
            f.write_bytes((secrets or {}).get(nid, secret))
            f.chmod(0o600)
            self._secret_files[nid] = f

    # -- processes ---------------------------------------------------------------------------------

    def address(self, nid: str) -> str:
        return f"{HOST}:{self.ports[nid]}"

    def data_dir(self, nid: str) -> Path:
        return self.base_dir / nid

    def log_path(self, nid: str) -> Path:
        return self.base_dir / f"{nid}.log"

    def command(self, nid: str) -> list[str]:
        peers = ",".join(f"{p}={self.address(p)}" for p in self.ids if p != nid)
        cmd = [
            sys.executable,
            "-m",
            "distsync",
            "serve",
            "--id",
            nid,
            "--listen",
            self.address(nid),
            "--peers",
            peers,
            "--data-dir",
            str(self.data_dir(nid)),
            "--secret-file",
            str(self._secret_files[nid]),
            *self.args,
        ]
        if nid in self.metrics_ports:
            cmd += ["--metrics-port", str(self.metrics_ports[nid])]
        return cmd

    def start(self, nid: str | None = None) -> None:
        """Start one node (or all not running)."""
        for i in [nid] if nid else self.ids:
            if i in self.procs and self.procs[i].poll() is None:
                continue
            logf = open(self.log_path(i), "ab")  # noqa: SIM115 - kept open for the child
            self._logs[i] = logf
            self.procs[i] = subprocess.Popen(
                self.command(i), stdout=logf, stderr=subprocess.STDOUT, env=_child_env()
            )

    def kill(self, nid: str, timeout: float = 10.0) -> None:
        """``kill -9`` the node and reap it (``subprocess.TimeoutExpired`` if it is not
        gone within ``timeout``): once this returns, its port and LMDB files are free."""
        p = self.procs.get(nid)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout)

    def restart(self, nid: str) -> None:
        self.kill(nid)
        self.start(nid)

    def is_running(self, nid: str) -> bool:
        p = self.procs.get(nid)
        return p is not None and p.poll() is None

    def stop(self, nid: str, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        p = self.procs.get(nid)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode

    def close(self) -> None:
        """Stop every node (killing any that will not stop) and remove a temporary dir."""
        for nid in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(nid, timeout=5.0)
        for p in self.procs.values():  # belt and braces: nothing may outlive the cluster
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in self._logs.values():
            f.close()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ProcessCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def logs(self, nid: str) -> str:
        with contextlib.suppress(OSError):
            return self.log_path(nid).read_text(errors="replace")
        return ""

    # -- status ------------------------------------------------------------------------------------

    async def astatus(self, nid: str, timeout: float = 1.0) -> dict[str, Any]:
        return await fetch_status(HOST, self.ports[nid], self.secret, timeout=timeout)

    async def astatuses(
        self, nids: Sequence[str] | None = None, timeout: float = 1.0
    ) -> dict[str, dict[str, Any]]:
        """Status of each node reached (unreachable ones are left out)."""
        nids = list(nids or self.ids)

        async def one(nid: str) -> dict[str, Any] | None:
            try:
                return await self.astatus(nid, timeout)
            except (DistSyncError, OSError, asyncio.TimeoutError):
                return None

        got = await asyncio.gather(*(one(n) for n in nids))
        return {n: s for n, s in zip(nids, got, strict=True) if s is not None}

    def status(self, nid: str, timeout: float = 1.0) -> dict[str, Any]:
        return asyncio.run(self.astatus(nid, timeout))

    def statuses(
        self, nids: Sequence[str] | None = None, timeout: float = 1.0
    ) -> dict[str, dict[str, Any]]:
        return asyncio.run(self.astatuses(nids, timeout))

    async def await_answering(self, nid: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until ``nid`` answers a ``status`` request; its status then.

        :raises TimeoutError: naming the node, if it does not answer within ``timeout``
            or its process exits meanwhile (with the exit code and the end of its log).
        """
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            p = self.procs.get(nid)
            if p is None or p.poll() is not None:
                code = None if p is None else p.returncode
                tail = self.logs(nid)[-800:]
                raise TimeoutError(f"node {nid} is not running (exit code {code}); log:\n{tail}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"node {nid} did not answer within {timeout}s: {last!r}")
            try:
                return await self.astatus(nid, timeout=min(0.5, left))
            except (DistSyncError, OSError, asyncio.TimeoutError) as exc:
                last = exc
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    async def await_leader(
        self, timeout: float = 10.0, among: Sequence[str] | None = None, min_term: int = 0
    ) -> tuple[str, int]:
        """Wait until a node of ``among`` reports itself leader of a term >= ``min_term``
        (and is running); returns ``(leader id, term)``. ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        nids = [n for n in (among or self.ids) if self.is_running(n)]
        while True:
            sts = await self.astatuses(nids, timeout=0.5)
            leaders = [
                (s["term"], n)
                for n, s in sts.items()
                if s["role"] == "leader" and s["term"] >= min_term
            ]
            if leaders:
                term, nid = max(leaders)
                return nid, term
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no leader among {nids} within {timeout}s: {sts}")
            await asyncio.sleep(0.02)

    def wait_for_leader(
        self, timeout: float = 10.0, among: Sequence[str] | None = None, min_term: int = 0
    ) -> tuple[str, int]:
        return asyncio.run(self.await_leader(timeout, among, min_term))

    async def await_applied(self, nid: str, index: int, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until ``nid`` has applied ``index``; its status then."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | BaseException = {}
        while time.monotonic() < deadline:
            try:
                last = await self.astatus(nid, timeout=0.5)
                if last["last_applied"] >= index:
                    return last
            except (DistSyncError, OSError, asyncio.TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{nid} did not apply {index} within {timeout}s (last: {last!r})")

    def client(self, client_id: str | None = None) -> ClusterClient:
        return ClusterClient(
            {n: (HOST, p) for n, p in self.ports.items()}, self.secret, client_id=client_id
        )


def _fail_all(queue: list[tuple[bytes, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, fut in queue:
        if not fut.done():
            fut.set_exception(exc)


class ClusterClient:
    """Proposes commands to a cluster's leader over one connection per node, many requests
    in flight on each (matched by ``msg_id``). Async; use from one event loop.

    Each command gets the next sequence number of ``client_id``; retries after a
    redirect, a lost connection or a timeout resend the same bytes, so the state machine's
    deduplication applies it once however often it is sent."""

    def __init__(
        self, nodes: dict[str, tuple[str, int]], secret: bytes, *, client_id: str | None = None
    ) -> None:
        self.nodes = dict(nodes)
        self.secret = secret
        self.client_id = client_id or f"client-{os.getpid()}-{random.getrandbits(32):08x}"
        self.ids = MsgIdGenerator(self.client_id)
        self._seq = itertools.count(1)
        self._pool: ConnectionPool[str] = ConnectionPool(self.ids, self.secret)
        self.leader: str | None = None
        # Commands waiting for the end of this event-loop turn, per node.
        self._queued: dict[str, list[tuple[bytes, asyncio.Future[tuple[int, Any]]]]] = {}
        # Sequences sent and not yet answered, and a min-heap of them with lazy deletion:
        # the lowest tells the state machine which results it may forget, and with many
        # proposals in flight a min() over the set per proposal would cost O(in flight).
        self._open_seqs: set[int] = set()
        self._open_heap: list[int] = []

    async def _conn(self, nid: str, timeout: float) -> Connection:
        return await self._pool.get(nid, self.nodes[nid], timeout, expected_peer_id=nid)

    async def propose(
        self, op: str = "incr", key: str = "", value: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """Propose one command; ``(index, result)`` once applied on the leader.

        :raises ClusterUnavailable: not applied within ``timeout`` (it may still be)."""
        seq = next(self._seq)
        self._open_seqs.add(seq)
        heap = self._open_heap
        heapq.heappush(heap, seq)
        while heap[0] not in self._open_seqs:
            heapq.heappop(heap)
        try:
            data = encode_command(op, key, value, self.client_id, seq, heap[0])
            return await self.propose_raw(data, timeout=timeout)
        finally:
            self._open_seqs.discard(seq)

    async def propose_raw(self, data: bytes, *, timeout: float = 10.0) -> tuple[int, Any]:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        candidates = list(self.nodes)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterUnavailable(
                    f"proposal not acknowledged within {timeout}s (last error: {last})"
                )
            nid = self.leader or candidates[attempt % len(candidates)]
            try:
                if self._pool.ready(nid) is None:
                    await self._conn(nid, min(left, 2.0))
                index, result = await self._submit(nid, data, min(left, 5.0))
                self.leader = nid
                return index, result
            except AuthError:
                raise
            except (DistSyncError, OSError, asyncio.TimeoutError) as exc:
                last = exc
                self.leader = None
                attempt += 1
                if getattr(exc, "code", None) == "not_leader":
                    # Redirect: the message names the leader; trying the others in turn
                    # finds it within one round without parsing text.
                    await asyncio.sleep(0 if attempt % len(candidates) else 0.02)
                else:
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _submit(self, nid: str, data: bytes, timeout: float) -> asyncio.Future[tuple[int, Any]]:
        """Queue one command for ``nid``; every command queued in this event-loop turn
        leaves in one ``propose`` message (``batch``), so that the node decodes, answers
        and the client matches one envelope per turn rather than one per command. Each
        command still is its own log entry, acknowledged with its own index and result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, Any]] = loop.create_future()
        queue = self._queued.get(nid)
        if queue is None:
            queue = self._queued[nid] = []
            loop.call_soon(self._flush, nid, timeout)
        queue.append((data, fut))
        return fut

    def _flush(self, nid: str, timeout: float) -> None:
        """Send the commands queued for ``nid`` in this turn as one ``propose`` (written
        now: the turn's batch is complete); their futures are settled by a callback on
        the reply, not by a task per batch."""
        queue = self._queued.pop(nid, None)
        if not queue:
            return
        try:
            conn = self._pool.ready(nid)
            if conn is None:
                raise ClusterUnavailable(f"connection to {nid} is down")
            env = Envelope.make(self.ids, "propose", nid, {"batch": [d for d, _ in queue]})
            reply = conn.start_request(env, timeout)
            conn.flush()
        except Exception as exc:
            _fail_all(queue, exc)
            return
        reply.add_done_callback(functools.partial(self._answered, nid, queue))

    @staticmethod
    def _answered(
        nid: str,
        queue: list[tuple[bytes, asyncio.Future[tuple[int, Any]]]],
        reply: asyncio.Future[Envelope],
    ) -> None:
        if reply.cancelled():
            _fail_all(queue, ClusterUnavailable(f"request to {nid} cancelled"))
            return
        exc = reply.exception()
        if exc is not None:
            _fail_all(queue, exc)
            return
        results = reply.result().payload.get("results")
        if not isinstance(results, list) or len(results) != len(queue):
            _fail_all(
                queue, ProtocolError(f"{nid} answered {len(queue)} proposals with {results!r:.80}")
            )
            return
        for (_, fut), res in zip(queue, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, list) and len(res) == 2:
                fut.set_result((int(res[0]), res[1]))
            else:
                code = res.get("error") if isinstance(res, dict) else None
                msg = f"{nid}: {res.get('message') if isinstance(res, dict) else res!r}"
                fut.set_exception(
                    NotLeaderError(None) if code == "not_leader" else DistSyncError(msg)
                )

    async def close(self) -> None:
        await self._pool.close(2.0)

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
