"""Three :class:`Node` objects in one event loop, over real TCP on 127.0.0.1 and real LMDB:
the in-process API (``propose``, ``status``), the ``propose`` wire request and its
``not_leader`` redirect, and a full-cluster restart that rebuilds the state from disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from distsync.errors import DistSyncError, InvalidRequest, ProtocolError, StorageError
from distsync.net.envelope import Envelope
from distsync.net.transport import connect
from distsync.node import Node, NodeConfig, encode_command
from distsync.raft import NotLeaderError
from distsync.testing.cluster import free_ports

SECRET = b"in-process-node-test-secret-012345"
TEST_TIMEOUT = 30.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT))


def make_nodes(tmp: Path, ports: list[int], **kw: object) -> list[Node]:
    ids = [f"node_{i}" for i in range(len(ports))]
    addr = {n: ("127.0.0.1", p) for n, p in zip(ids, ports, strict=True)}
    return [
        Node(
            NodeConfig(
                id=n,
                listen=addr[n],
                peers={p: a for p, a in addr.items() if p != n},
                data_dir=str(tmp / n),
                secret=SECRET,
                tick_interval=0.02,
                **kw,
            )
        )
        for n in ids
    ]


@contextlib.asynccontextmanager
async def running(tmp: Path, ports: list[int], **kw: object) -> AsyncIterator[list[Node]]:
    """The nodes of :func:`make_nodes`, started, and stopped on the way out."""
    nodes = make_nodes(tmp, ports, **kw)
    try:
        for n in nodes:
            await n.start()
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


async def leader_of(nodes: list[Node], timeout: float = 10.0) -> Node:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        leaders = [n for n in nodes if n.status()["role"] == "leader"]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no leader: {[n.status() for n in nodes]}")


def test_propose_in_process_and_over_the_wire_with_redirect(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(tmp_path, free_ports(3)) as nodes:
            leader = await leader_of(nodes)
            follower = next(n for n in nodes if n is not leader)
            index, result = await leader.propose(encode_command("incr", value=3), timeout=5)
            assert index >= 2 and result == 3
            with pytest.raises(NotLeaderError) as err:
                await follower.propose(encode_command("incr"), timeout=5)
            assert err.value.leader == leader.id

            # Over the wire: a single command to the leader ...
            conn = await connect("127.0.0.1", leader.port, "client-a", SECRET)
            try:
                env = Envelope.make(
                    conn.ids, "propose", leader.id, {"data": encode_command("incr")}
                )
                reply = await conn.request(env, 5)
                assert reply.msg_type == "ack" and reply.payload["result"] == 4
                assert reply.payload["index"] > index
                bad = Envelope.make(conn.ids, "propose", leader.id, {"data": "text"})
                with pytest.raises(InvalidRequest):
                    await conn.request(bad, 5)
            finally:
                conn.close()
            # ... and to a follower, which names the leader (raw envelope: payload.leader).
            conn = await connect("127.0.0.1", follower.port, "client-b", SECRET)
            try:
                env = Envelope.make(
                    conn.ids, "propose", follower.id, {"batch": [encode_command("incr")]}
                )
                conn.send(env)  # not request(): the error envelope itself lands in the inbox
                reply = await asyncio.wait_for(conn.inbox.get(), 5)
                assert reply.msg_type == "error" and reply.payload["code"] == "not_leader"
                assert reply.payload["leader"] == leader.id
                assert reply.payload["leader_addr"] == f"127.0.0.1:{leader.port}"
            finally:
                conn.close()
            # A client holding the secret cannot pose as a voter: refused, term unchanged.
            term = leader.status()["term"]
            conn = await connect("127.0.0.1", leader.port, "client-c", SECRET)
            try:
                vote = Envelope.make(conn.ids, "request_vote", leader.id, {"t": term + 5, "i": 99})
                with pytest.raises(ProtocolError, match="Raft message from 'client-c'"):
                    await conn.request(vote, 5)
            finally:
                conn.close()
            st = leader.status()
            assert st["term"] == term and st["role"] == "leader"
            assert st["counter"] == 4 and st["role"] == "leader" and st["leader_id"] == leader.id
            assert set(st["peers"]) == {n.id for n in nodes if n is not leader}
            assert all(p["match"] <= st["last_index"] for p in st["peers"].values())

    run(body)


def test_whole_cluster_restart_rebuilds_state_from_disk(tmp_path: Path) -> None:
    ports = free_ports(3)

    async def body() -> None:
        # Small snapshot threshold: the restart goes through snapshot + log replay.
        async with running(tmp_path, ports, snapshot_entries=50, snapshot_keep=5) as nodes:
            leader = await leader_of(nodes)
            for k in range(120):
                await leader.propose(encode_command("incr", client_id="c", sequence=k), timeout=5)
            assert leader.status()["snapshots_taken"] >= 2
        async with running(tmp_path, ports, snapshot_entries=50, snapshot_keep=5) as nodes:
            leader = await leader_of(nodes)
            # A retry of an applied command is answered from the session table.
            _, result = await leader.propose(
                encode_command("incr", client_id="c", sequence=119), timeout=5
            )
            assert result == 120
            _, result = await leader.propose(
                encode_command("incr", client_id="c", sequence=120), timeout=5
            )
            assert result == 121
            assert {
                n.sm.counter
                for n in nodes
                if n.status()["last_applied"] == leader.status()["last_applied"]
            } == {121}

    run(body)


def test_a_failing_log_write_stops_the_node_and_fails_its_waiters(tmp_path: Path) -> None:
    """The leader's log write fails (its segment file turned read-only under it): the node
    records the failure, answers the waiting proposal with an error instead of an
    acknowledgement, and stops; the others elect a new leader and go on."""

    async def body() -> None:
        async with running(tmp_path, free_ports(3)) as nodes:
            leader = await leader_of(nodes)
            await leader.propose(encode_command("incr"), timeout=5)
            storage = leader._storage
            assert storage is not None
            wal = storage._wal
            segments = sorted(Path(wal.path).glob("seg-*.log"))
            fds = list(wal._fds.values())
            for fd in fds:
                ro = os.open(segments[0], os.O_RDONLY)
                os.dup2(ro, fd)
                os.close(ro)
            with pytest.raises(DistSyncError):
                await leader.propose(encode_command("incr"), timeout=5)
            assert leader.stopped is not None
            await asyncio.wait_for(asyncio.shield(leader.stopped), 5)
            assert isinstance(leader.failure, StorageError), leader.failure
            others = [n for n in nodes if n is not leader]
            new = await leader_of(others)
            _, result = await new.propose(encode_command("incr"), timeout=5)
            # 3 if the failed proposal still commits: its append left for the followers
            # before the leader's write failed (its client was not told it succeeded).
            assert result in (2, 3)

    run(body)
