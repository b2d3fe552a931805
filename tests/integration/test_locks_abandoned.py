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
