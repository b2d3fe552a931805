"""The lock service through :class:`distsync.Client` against a real 3-node
:class:`distsync.LocalCluster` (processes, TCP on 127.0.0.1, fsync on): contention,
shared/exclusive mixes, FIFO hand-off, deadlock detection, refused releases,
``lock_status`` and acquire timeouts (DESIGN §5, §11)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import distsync
from distsync import AsyncClient, Client, DeadlockError, InvalidRequest, LockTimeout
from distsync.lock import effect_from_wire

#: Upper bound for any single wait in these tests (s).
WAIT = 15.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[distsync.LocalCluster]:
    with distsync.LocalCluster(nodes=3) as c:
        yield c


@pytest.fixture
def clients(cluster: distsync.LocalCluster) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**kw: Any) -> Client:
        c = cluster.client(**kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close(timeout=2.0)


def run_threads(targets: list[Callable[[], None]], timeout: float = WAIT) -> None:
    """Run each target in a thread; re-raise the first error; fail if one hangs."""
    errors: list[BaseException] = []

    def wrap(f: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                f()
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(f), daemon=True) for f in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_exclusive_contention_never_overlaps_and_tokens_increase(
    clients: Callable[..., Client],
) -> None:
    # 6 clients x 5 rounds on one exclusive lock: at most one inside at any time, and
    # the grants' tokens strictly increase in the order they were held.
    inside = 0
    guard = threading.Lock()
    held: list[tuple[int, str]] = []

    def worker(c: Client) -> Callable[[], None]:
        def run() -> None:
            nonlocal inside
            for _ in range(5):
                with c.lock("contended", timeout=WAIT) as g:
                    with guard:
                        inside += 1
                        assert inside == 1, "two exclusive holders at once"
                        held.append((g.fencing_token, c.client_id))
                    time.sleep(0.002)
                    with guard:
                        inside -= 1

        return run

    run_threads([worker(clients()) for _ in range(6)], timeout=60)
    tokens = [t for t, _ in held]
    assert len(tokens) == 30
    assert tokens == sorted(tokens) and len(set(tokens)) == 30, tokens


def test_threads_of_one_client_contend_like_clients(clients: Callable[..., Client]) -> None:
    # Each thread is its own session: the threads of one client exclude each other too.
    c = clients()
    inside = 0
    guard = threading.Lock()
    tokens: list[int] = []

    def run() -> None:
        nonlocal inside
        for _ in range(4):
            with c.lock("threads", timeout=WAIT) as g:
                with guard:
                    inside += 1
                    assert inside == 1
                    tokens.append(g.fencing_token)
                time.sleep(0.002)
                with guard:
                    inside -= 1

    run_threads([run] * 4, timeout=60)
    assert len(tokens) == 16 and tokens == sorted(set(tokens))


def test_shared_holders_coexist_and_exclusive_waits_for_all(
    clients: Callable[..., Client],
) -> None:
    a, b, w = clients(), clients(), clients()
    ga = a.acquire("mix", mode="shared", timeout=WAIT)
    gb = b.acquire("mix", mode="shared", timeout=WAIT)
    st = a.lock_status("mix")
    assert st.mode == "shared" and set(st.holders) == {a.client_id, b.client_id}
    got: list[distsync.LockGrant] = []
    t = threading.Thread(target=lambda: got.append(w.acquire("mix", timeout=WAIT)))
    t.start()
    try:
        wait_until(lambda: a.lock_status("mix").waiters == (w.client_id,))
        ga.release()
        time.sleep(0.2)
        assert not got, "exclusive granted while a shared holder remains"
        gb.release()
        t.join(WAIT)
        assert got and got[0].mode == "exclusive"
        assert got[0].fencing_token > max(ga.fencing_token, gb.fencing_token)
        st = a.lock_status("mix")
        assert st.mode == "exclusive" and st.holders == (w.client_id,)
        assert st.fencing_token == got[0].fencing_token
    finally:
        t.join(WAIT)
        for g in got:
            g.release()


def test_fifo_hand_off_and_no_writer_starvation(clients: Callable[..., Client]) -> None:
    # Holder H (exclusive); queued: X (exclusive), then S (shared). S must wait behind X
    # even though... the order of grants is the order of the queue.
    h, x, s = clients(), clients(), clients()
    order: list[tuple[str, int]] = []
    gh = h.acquire("fifo", timeout=WAIT)

    def take(c: Client, mode: str) -> Callable[[], None]:
        def run() -> None:
            g = c.acquire("fifo", mode=mode, timeout=WAIT)
            order.append((c.client_id, g.fencing_token))
            time.sleep(0.1)
            g.release()

        return run

    tx = threading.Thread(target=take(x, "exclusive"))
    tx.start()
    wait_until(lambda: h.lock_status("fifo").waiters == (x.client_id,))
    ts = threading.Thread(target=take(s, "shared"))
    ts.start()
    wait_until(lambda: h.lock_status("fifo").waiters == (x.client_id, s.client_id))
    gh.release()
    tx.join(WAIT)
    ts.join(WAIT)
    assert [cid for cid, _ in order] == [x.client_id, s.client_id]
    assert order[0][1] > gh.fencing_token and order[1][1] > order[0][1]


def test_deadlock_is_refused_with_the_cycle_named(clients: Callable[..., Client]) -> None:
    # alice holds r1 and waits for r2 (one thread: one thread of control); bob holds r2
    # and asks for r1, which would close bob -> alice -> bob.
    a, b = clients(client_id="alice"), clients(client_id="bob")
    gb = b.acquire("r2", timeout=WAIT)
    holding = threading.Event()
    outcome: list[BaseException | distsync.LockGrant] = []

    def alice() -> None:
        try:
            with a.lock("r1", timeout=WAIT):
                holding.set()
                g = a.acquire("r2", timeout=WAIT)
                outcome.append(g)
                g.release()
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    t = threading.Thread(target=alice)
    t.start()
    try:
        assert holding.wait(WAIT)
        wait_until(lambda: a.lock_status("r2").waiters == ("alice",))
        with pytest.raises(DeadlockError) as info:
            b.acquire("r1", timeout=WAIT)
        assert info.value.cycle == ["bob", "alice"]
        # The refusal changed nothing: bob still holds r2, alice still waits for it.
        st = b.lock_status("r2")
        assert st.holders == ("bob",) and st.waiters == ("alice",)
        assert b.lock_status("r1").waiters == ()
        gb.release()
        t.join(WAIT)
        assert isinstance(outcome[0], distsync.LockGrant), outcome
    finally:
        if not gb.released:
            gb.release()
        t.join(WAIT)


def _raw_release(c: Client, resource: str, session_id: str) -> None:
    """A release as the wire carries it, naming any session (to test the refusals)."""
    ac = c._async
    reply = c._run(
        ac._call(
            "lock_release",
            {"resource": resource, "session_id": session_id},
            ac._deadline(None),
            sequenced=True,
        )
    )
    effect = effect_from_wire(reply["effect"])
    if hasattr(effect, "error"):
        raise effect.error()


def test_release_by_a_non_holder_is_refused(clients: Callable[..., Client]) -> None:
    owner, other = clients(), clients()
    g = owner.acquire("guarded", timeout=WAIT)
    with other.lock("elsewhere", timeout=WAIT) as og:
        # Another client naming the owner's session: not its session.
        with pytest.raises(InvalidRequest) as info:
            _raw_release(other, "guarded", g.session_id)
        assert info.value.code == "not_owner"
        # Another client's own session, which holds something else: not the holder.
        with pytest.raises(InvalidRequest) as info:
            _raw_release(other, "guarded", og.session_id)
        assert info.value.code == "not_holder"
    st = owner.lock_status("guarded")
    assert st.holders == (owner.client_id,) and st.fencing_token == g.fencing_token
    g.release()
    assert owner.lock_status("guarded").holders == ()


def test_a_connection_cannot_act_for_another_client_or_its_sessions(
    cluster: distsync.LocalCluster, clients: Callable[..., Client]
) -> None:
    # The client id of a lock command is the id its connection authenticated as: a
    # request on that connection claiming another id is refused, answered with an error
    # naming both, and the connection closed; with its own id, another client's session
    # is not its to keep alive, close, or withdraw a wait of.
    from distsync.net.envelope import Envelope
    from distsync.net.transport import connect

    a, b = clients(), clients()
    g = a.acquire("spoof-target", timeout=WAIT)
    waiting: list[Any] = []
    t = threading.Thread(target=lambda: waiting.append(b.acquire("spoof-target", timeout=WAIT)))
    t.start()
    try:
        wait_until(lambda: a.lock_status("spoof-target").waiters == (b.client_id,))
        leader = cluster.leader()
        host, port = cluster.address(leader).rsplit(":", 1)
        sessions = {s.id for s in b._async._sessions}  # b's wait is on one of them

        async def body() -> None:
            conn = await connect(host, int(port), "mallory", cluster.secret, timeout=5.0)
            try:
                for msg_type, payload in [
                    ("session_keepalive", {"session_id": g.session_id}),
                    ("session_close", {"session_id": g.session_id, "seq": 1}),
                    *[
                        ("lock_release", {"resource": "spoof-target", "session_id": s,
                                          "cancel": 1, "seq": 2})
                        for s in sorted(sessions)
                    ],
                ]:  # fmt: skip
                    env = Envelope.make(conn.ids, msg_type, leader, payload)
                    reply = await conn.request(env, WAIT)
                    effect = reply.payload["effect"]
                    assert effect["effect"] == "rejected", (msg_type, effect)
                    assert effect["code"] == "not_owner", (msg_type, effect)
                spoof = Envelope.make(
                    conn.ids,
                    "lock_release",
                    leader,
                    {"resource": "spoof-target", "session_id": g.session_id, "seq": 3},
                )
                spoof.sender_id = a.client_id
                with pytest.raises(distsync.ProtocolError) as info:
                    await conn.request(spoof, WAIT)
                assert repr(a.client_id) in str(info.value) and "'mallory'" in str(info.value)
                await asyncio.wait_for(conn.wait_closed(), WAIT)
            finally:
                conn.close()

        asyncio.run(body())
        st = a.lock_status("spoof-target")
        assert st.holders == (a.client_id,) and st.fencing_token == g.fencing_token
        assert st.waiters == (b.client_id,)
    finally:
        g.release()
        t.join(WAIT)
    assert waiting and waiting[0].fencing_token > g.fencing_token
    waiting[0].release()


def test_lock_status_contents(clients: Callable[..., Client]) -> None:
    a, b = clients(), clients()
    free = a.lock_status("status-r")
    assert (free.mode, free.holders, free.waiters, free.fencing_token) == (None, (), (), 0)
    g = a.acquire("status-r", timeout=WAIT)
    got: list[distsync.LockGrant] = []
    t = threading.Thread(target=lambda: got.append(b.acquire("status-r", "shared", WAIT)))
    t.start()
    try:
        wait_until(lambda: a.lock_status("status-r").waiters == (b.client_id,))
        st = b.lock_status("status-r")
        assert st.mode == "exclusive"
        assert st.holders == (a.client_id,)
        assert st.waiters == (b.client_id,)
        assert st.fencing_token == g.fencing_token
        g.release()
        t.join(WAIT)
        st = a.lock_status("status-r")
        assert (st.mode, st.holders, st.waiters) == ("shared", (b.client_id,), ())
        assert st.fencing_token == got[0].fencing_token > g.fencing_token
    finally:
        t.join(WAIT)
        for x in got:
            x.release()


def test_acquire_timeout_raises_and_removes_the_waiter(clients: Callable[..., Client]) -> None:
    a, b = clients(), clients()
    g = a.acquire("slow", timeout=WAIT)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockTimeout):
            b.acquire("slow", timeout=0.5)
        assert 0.4 <= time.monotonic() - t0 < 3.0
        assert a.lock_status("slow").waiters == ()
        # A try-lock (timeout 0) never queues either.
        with pytest.raises(LockTimeout):
            b.acquire("slow", timeout=0)
    finally:
        g.release()
    # Nothing of b's is left in the queue: the next acquire is granted at once.
    with b.lock("slow", timeout=0) as g2:
        assert g2.fencing_token > g.fencing_token


def test_async_client_same_api(cluster: distsync.LocalCluster) -> None:
    async def body() -> None:
        async with (
            AsyncClient(cluster.addresses, secret=cluster.secret) as c1,
            AsyncClient(cluster.addresses, secret=cluster.secret) as c2,
        ):
            async with c1.lock("async-r", timeout=WAIT) as g1:
                with pytest.raises(LockTimeout):
                    await c2.acquire("async-r", timeout=0.3)
                st = await c2.lock_status("async-r")
                assert st.holders == (c1.client_id,) and st.fencing_token == g1.fencing_token
            g2 = await c2.acquire("async-r", mode="shared", timeout=WAIT)
            assert g2.fencing_token > g1.fencing_token
            await g2.release()
            assert (await c1.lock_status("async-r")).holders == ()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_close_releases_the_clients_locks(clients: Callable[..., Client]) -> None:
    a, b = clients(), clients()
    a.acquire("closing", timeout=WAIT)
    a.close()
    # Released by the session's close, not after its ttl (10 s by default).
    with b.lock("closing", timeout=3.0) as g:
        assert b.lock_status("closing").holders == (b.client_id,)
        assert g.fencing_token > 0


def test_keepalives_hold_a_lock_past_the_session_ttl(clients: Callable[..., Client]) -> None:
    a, b = clients(session_ttl=1.0), clients()
    g = a.acquire("kept-alive", timeout=WAIT)
    time.sleep(2.5)  # > 2 ttls: only keepalives can have kept the session
    st = b.lock_status("kept-alive")
    assert st.holders == (a.client_id,) and st.fencing_token == g.fencing_token
    with pytest.raises(LockTimeout):
        b.acquire("kept-alive", timeout=0)
    g.release()


def test_a_follower_answers_not_leader_naming_the_leader(cluster: distsync.LocalCluster) -> None:
    from distsync.net.envelope import Envelope
    from distsync.net.transport import connect

    leader = cluster.leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    host, port = cluster.address(follower).rsplit(":", 1)

    async def body() -> None:
        conn = await connect(host, int(port), "raw-client", cluster.secret, timeout=5.0)
        try:
            for msg_type, payload in [
                ("lock_status", {"resource": "r"}),
                ("lock_acquire", {"resource": "r", "session_id": "s", "request_id": 1}),
            ]:
                env = Envelope.make(conn.ids, msg_type, follower, payload)
                with pytest.raises(distsync.DistSyncError) as info:
                    await conn.request(env, 5.0)
                assert info.value.code == "not_leader"
                details = info.value.details
                assert details["leader"] == leader
                assert details["leader_addr"] == cluster.address(leader)
        finally:
            conn.close()

    asyncio.run(asyncio.wait_for(body(), 30))
