"""``distsync.LocalCluster``: a real cluster on this host, for trying distsync and in tests.

It is :class:`~distsync.testing.cluster.ProcessCluster` (real ``distsync serve``
processes on 127.0.0.1, free ports, one temporary data directory each) with the public
API of DESIGN §11: ``client()``, ``addresses``, ``node_ids``, ``leader()``, ``kill()``,
``restart()``, and everything stopped and removed on exit, also when the body raised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import subprocess
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from distsync.client import Client
from distsync.errors import ClusterUnavailable
from distsync.testing.cluster import ProcessCluster

__all__ = ["LocalCluster"]

T = TypeVar("T")


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when this thread already runs an
    event loop (an async test using the cluster): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalCluster:
    """``nodes`` node processes on loopback; use as a context manager::

        with distsync.LocalCluster(nodes=3) as cluster:
            client = cluster.client()

    :param nodes: how many nodes (voters).
    :param timeout: seconds to wait for a leader on start and in :meth:`leader`.
    :param args: extra ``distsync serve`` flags for every node (e.g. ``--no-sync``).
    """

    def __init__(self, nodes: int = 3, *, timeout: float = 15.0, args: Sequence[str] = ()) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, not {nodes}")
        self.timeout = timeout
        # A fresh secret per cluster: nothing else on the host can talk to it.
        self.secret = secrets.token_hex(16).encode()
        self._procs = ProcessCluster(nodes, secret=self.secret, args=args)
        self._clients: list[Client] = []
        self._started = False

    @property
    def addresses(self) -> list[str]:
        """``"host:port"`` of every node, in :attr:`node_ids` order."""
        return [self._procs.address(n) for n in self._procs.ids]

    @property
    def node_ids(self) -> list[str]:
        """The nodes' ids: ``node_0`` .. ``node_{n-1}``."""
        return list(self._procs.ids)

    def address(self, node_id: str) -> str:
        """``"host:port"`` of one node."""
        return self._procs.address(node_id)

    def start(self, *, timeout: float | None = None) -> None:
        """Start every node that is not running and wait until one leads.

        :param timeout: seconds to wait for a leader (default: the cluster's ``timeout``).
        :raises ClusterUnavailable: no leader in time (the nodes keep running).
        """
        self._started = True
        self._procs.start()
        self.leader(timeout=timeout)

    def client(self, **kwargs: Any) -> Client:
        """A :class:`~distsync.Client` of this cluster (closed with it); ``kwargs`` go to
        the client (``client_id``, ``session_ttl``, ``timeout``)."""
        c = Client(self.addresses, secret=self.secret, **kwargs)
        self._clients.append(c)
        return c

    def leader(self, *, timeout: float | None = None) -> str:
        """The id of the current Raft leader, waiting for one if an election is running.

        :param timeout: seconds to wait (default: the cluster's ``timeout``).
        :raises ClusterUnavailable: no leader within ``timeout``.
        """
        t = self.timeout if timeout is None else timeout
        try:
            nid, _ = _run_blocking(self._procs.await_leader(timeout=t))
        except TimeoutError as exc:
            raise ClusterUnavailable(str(exc)) from None
        return nid

    def kill(self, node_id: str, *, timeout: float | None = None) -> None:
        """``kill -9`` the node (it leaves its data dir as a crash would). Returns once
        the process is gone, so its port and data dir are free for :meth:`restart`.

        :param timeout: seconds to wait for the process to go (default: the cluster's
            ``timeout``).
        :raises ClusterUnavailable: naming the node, if it is still there after that.
        """
        self._check(node_id)
        t = self.timeout if timeout is None else timeout
        try:
            self._procs.kill(node_id, timeout=t)
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(f"node {node_id} still running {t}s after SIGKILL") from None

    def restart(self, node_id: str, *, timeout: float | None = None) -> None:
        """Start the node again on the same data dir (killing it first if it runs) and
        wait until it is up and answering requests, as :meth:`start` waits for a leader.
        It may still be catching up with the leader's log when this returns; it does
        not wait for a leader (with a majority down there is none to wait for).

        :param timeout: seconds to wait for the node to answer (default: the cluster's
            ``timeout``).
        :raises ClusterUnavailable: naming the node, if it exits or does not answer in
            time (a node that is merely slow keeps running).
        """
        self._check(node_id)
        t = self.timeout if timeout is None else timeout
        self.kill(node_id, timeout=t)
        self._procs.start(node_id)
        try:
            _run_blocking(self._procs.await_answering(node_id, timeout=t))
        except TimeoutError as exc:
            raise ClusterUnavailable(f"restarting {node_id}: {exc}") from None

    def data_dir(self, node_id: str) -> str:
        """The node's data directory (kept across :meth:`restart`, removed on exit)."""
        self._check(node_id)
        return str(self._procs.data_dir(node_id))

    def is_running(self, node_id: str) -> bool:
        return self._procs.is_running(node_id)

    def logs(self, node_id: str) -> str:
        """What the node printed (for a failing test's report)."""
        return self._procs.logs(node_id)

    def _check(self, node_id: str) -> None:
        if node_id not in self._procs.ids:
            raise ValueError(f"no node {node_id!r}; the nodes are {self._procs.ids}")

    def close(self) -> None:
        """Close the clients, stop every node and remove the data dirs. Idempotent."""
        clients, self._clients = self._clients, []
        try:
            for c in clients:
                try:
                    c.close(timeout=1.0)
                except Exception:  # noqa: BLE001 - a dead cluster must still be removed
                    pass
        finally:
            self._procs.close()

    def __enter__(self) -> LocalCluster:
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
