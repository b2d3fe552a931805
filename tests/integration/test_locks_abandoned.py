"""Waits that nobody listens for any more, against a real :class:`distsync.LocalCluster`
(DESIGN §5, §8; the rules in the :mod:`distsync.lock` and :mod:`distsync.client`
docstrings):

- the leader withdraws a queued acquire whose connection closed and was not replaced
  within one election timeout, and keeps it when the client re-sends it on a new
  connection;
- a client that gives up an acquire (a cancelled task) withdraws its wait, or releases
  the lock if the grant won the race, also when no leader answers at that moment, so it
  never ends up holding a lock it was told it did not get.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import distsync
from distsync import AsyncClient
from distsync.net.envelope import Envelope
from distsync.net.transport import Connection, connect

#: Upper bound for any single wait in these tests (s).
WAIT = 20.0
#: Longer than a node's election timeout (10 ticks of 50 ms) by a wide margin.
GRACE = 1.5


@pytest.fixture(scope="module")
def cluster() -> Iterator[distsync.LocalCluster]:
    with distsync.LocalCluster(nodes=3) as c:
        yield c


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.05)


class RawClient:
    """A lock client speaking the wire directly, to drop its connection at will."""

    def __init__(self, cluster: distsync.LocalCluster, client_id: str) -> None:
        self.cluster = cluster
        self.client_id = client_id
        self.leader = cluster.leader()

    async def connect(self) -> Connection:
        host, port = self.cluster.address(self.leader).rsplit(":", 1)
        return await connect(host, int(port), self.client_id, self.cluster.secret, timeout=5.0)

    def request(self, conn: Connection, msg_type: str, payload: dict[str, Any]) -> Any:
        env = Envelope.make(conn.ids, msg_type, self.leader, payload)
        return asyncio.ensure_future(conn.request(env, WAIT))


async def _status(c: AsyncClient, resource: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    st = await c.lock_status(resource, timeout=WAIT)
    return st.holders, st.waiters


def test_a_wait_whose_connection_closed_is_withdrawn_unless_the_client_comes_back(
    cluster: distsync.LocalCluster,
) -> None:
    async def body() -> None:
        async with AsyncClient(cluster.addresses, secret=cluster.secret) as holder:
            g = await holder.acquire("abandoned", timeout=WAIT)
            ghost = RawClient(cluster, "ghost")
            phoenix = RawClient(cluster, "phoenix")
            # Sessions with a long ttl: their expiry cannot be what ends a wait here.
            acquires = {}
            for raw in (ghost, phoenix):
                conn = await raw.connect()
                opened = await raw.request(
                    conn, "session_open", {"session_id": f"{raw.client_id}/s", "ttl": 120.0,
                                           "seq": 1})  # fmt: skip
                assert opened.payload["effect"]["effect"] == "session_opened"
                acquire = {"resource": "abandoned", "mode": "exclusive", "request_id": 1,
                           "session_id": f"{raw.client_id}/s", "timeout": None, "seq": 2}  # fmt: skip
                pending = raw.request(conn, "lock_acquire", acquire)
                acquires[raw.client_id] = (conn, acquire, pending)
            waiters = ("ghost", "phoenix")

            async def queued() -> bool:
                return (await _status(holder, "abandoned"))[1] == waiters

            await until(queued, "both raw clients queued")

            # Both connections drop; phoenix comes back at once with the same request
            # (as distsync.Client does), ghost never does.
            for conn, _, pending in acquires.values():
                conn.close()
                with pytest.raises(distsync.ClusterUnavailable):
                    await pending
            conn2 = await phoenix.connect()
            again = phoenix.request(conn2, "lock_acquire", acquires["phoenix"][1])

            async def ghost_gone() -> bool:
                return (await _status(holder, "abandoned"))[1] == ("phoenix",)

            await until(ghost_gone, "the abandoned wait withdrawn")
            # Well past the grace, phoenix still waits, re-attached.
            await asyncio.sleep(GRACE)
            assert await _status(holder, "abandoned") == ((holder.client_id,), ("phoenix",))
            assert not again.done()

            # The hand-off goes to phoenix, answered on its new connection.
            await g.release()
            got = (await asyncio.wait_for(again, WAIT)).payload["effect"]
            assert got["effect"] == "grant" and got["token"] > g.fencing_token
            assert await _status(holder, "abandoned") == (("phoenix",), ())
            rel = await phoenix.request(
                conn2, "lock_release", {"resource": "abandoned", "session_id": "phoenix/s",
                                        "token": got["token"], "seq": 3})  # fmt: skip
            assert rel.payload["effect"]["effect"] == "released"
            # Nothing was handed to ghost: the lock is free.
            assert await _status(holder, "abandoned") == ((), ())
            conn2.close()

    asyncio.run(asyncio.wait_for(body(), 3 * WAIT))


def test_a_cancelled_acquire_withdraws_its_wait_or_releases_the_lock(
    cluster: distsync.LocalCluster,
) -> None:
    # The caller gives up (task cancelled) while its connection stays up: only the
    # client can withdraw the wait. Cancelled at different moments around the hand-off,
    # so in some rounds the grant wins the race and must be released instead.
    rng = random.Random(7)

    async def body() -> None:
        async with (
            AsyncClient(cluster.addresses, secret=cluster.secret) as a,
            AsyncClient(cluster.addresses, secret=cluster.secret) as b,
        ):
            for k in range(10):
                name = f"given-up-{k}"
                g = await a.acquire(name, timeout=WAIT)
                task = asyncio.ensure_future(b.acquire(name, timeout=None))

                async def queued(name: str = name) -> bool:
                    return (await _status(a, name))[1] == (b.client_id,)

                await until(queued, "b queued")
                if k == 0:
                    task.cancel()  # before any hand-off: the wait must go
                    await until(
                        lambda name=name: _is(a, name, ((a.client_id,), ())), "wait withdrawn"
                    )
                    await g.release()
                elif k % 3 == 1:
                    # Cancel and release at once: b's Cancel races a's Release in the log.
                    task.cancel()
                    await g.release()
                else:
                    # Around the hand-off: the grant may reach b before the cancel does.
                    release = asyncio.ensure_future(g.release())
                    await asyncio.sleep(rng.uniform(0.0, 0.02))
                    task.cancel()
                    await release
                try:
                    await task
                    outcome = "granted"  # it finished before the cancel landed
                except asyncio.CancelledError:
                    outcome = "cancelled"
                if outcome == "granted":
                    await task.result().release()
                # Whatever won, b holds nothing it does not know of: the lock ends free.
                await until(lambda name=name: _is(a, name, ((), ())), f"{name} free ({outcome})")
                # And b can take it next, as anyone could.
                async with b.lock(name, timeout=WAIT) as g2:
                    assert g2.fencing_token > g.fencing_token

    asyncio.run(asyncio.wait_for(body(), 6 * WAIT))


def test_a_client_that_comes_back_too_late_queues_again(cluster: distsync.LocalCluster) -> None:
    # b's connection to the leader drops and its way back is slow: the address it tries
    # next accepts TCP but never answers the handshake (b gives up on it after 2 s). The
    # leader withdraws the abandoned wait meanwhile; b, back with the same request, hears
    # the wait ended before its timeout (none) and queues again instead of failing.
    leader = cluster.leader()
    silent = socket.create_server(("127.0.0.1", 0))
    silent_addr = f"127.0.0.1:{silent.getsockname()[1]}"

    async def body() -> None:
        async with (
            AsyncClient(cluster.addresses, secret=cluster.secret) as a,
            AsyncClient([cluster.address(leader), silent_addr], secret=cluster.secret) as b,
        ):
            g = await a.acquire("late", timeout=WAIT)
            task = asyncio.ensure_future(b.acquire("late", timeout=None))
            await until(lambda: _is(a, "late", ((a.client_id,), (b.client_id,))), "b queued")
            b._pool.open[0].close()  # the network drops b's connection to the leader
            await until(lambda: _is(a, "late", ((a.client_id,), ())), "withdrawn")
            await until(lambda: _is(a, "late", ((a.client_id,), (b.client_id,))), "b queued again")
            assert not task.done()
            await g.release()
            got = await asyncio.wait_for(task, WAIT)
            assert got.fencing_token > g.fencing_token
            await got.release()

    try:
        asyncio.run(asyncio.wait_for(body(), 3 * WAIT))
    finally:
        silent.close()


async def _is(c: AsyncClient, name: str, want: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
    return await _status(c, name) == want


def test_an_acquire_given_up_while_no_leader_answers_is_withdrawn_once_one_does() -> None:
    # The caller gives up while the cluster has no majority: the withdrawal cannot reach
    # anyone then, and must happen once a leader answers again -- before the lock is
    # handed to the waiter nobody listens for.
    with distsync.LocalCluster(nodes=3) as cluster:

        async def body() -> None:
            async with (
                AsyncClient(cluster.addresses, secret=cluster.secret, timeout=WAIT) as a,
                AsyncClient(cluster.addresses, secret=cluster.secret, timeout=WAIT) as b,
            ):
                g = await a.acquire("outage", timeout=WAIT)
                task = asyncio.ensure_future(b.acquire("outage", timeout=None))
                await until(lambda: _is(a, "outage", ((a.client_id,), (b.client_id,))), "b queued")
                leader = cluster.leader()
                down = [leader, next(n for n in cluster.node_ids if n != leader)]
                for n in down:
                    cluster.kill(n)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(3.0)  # the first withdrawal attempt (2 s) fails
                for n in down:
                    await asyncio.to_thread(cluster.restart, n, timeout=WAIT)
                await until(lambda: _is(a, "outage", ((a.client_id,), ())), "b's wait withdrawn")
                await g.release()
                assert await _status(a, "outage") == ((), ())

        asyncio.run(asyncio.wait_for(body(), 6 * WAIT))
