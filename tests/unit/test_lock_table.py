"""The lock table (DESIGN §5): each rule as a unit test, then a stateful test against an
oracle. Every test runs on both wait-for graph twins through the ``impl`` fixture.

Clients are single letters; client ``a`` always uses session ``s-a``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from distsync._core import NO_EXTENSIONS, load
from distsync.errors import DeadlockError, InvalidRequest, LockTimeout
from distsync.lock import (
    Acquire,
    Cancel,
    Cancelled,
    CloseSession,
    Deadlock,
    ExpireSessions,
    ExpireWaits,
    ExpiryScheduler,
    ExtendSessions,
    Grant,
    KeepAlive,
    LeaderClock,
    LockTable,
    Mode,
    OpenSession,
    Queued,
    Rejected,
    Release,
    Released,
    SessionClosed,
    SessionExpired,
    SessionOpened,
    SessionRenewed,
    TimedOut,
    decode_command,
    effect_from_wire,
    effect_to_wire,
    encode_command,
    on_elected,
)
from distsync.lock.commands import MAX_NAME

X, S = Mode.EXCLUSIVE, Mode.SHARED


class Harness:
    """A table fed one command per entry (index = 1, 2, ...), checked after each."""

    def __init__(self, impl: str) -> None:
        self.impl = impl
        self.graph = load("waitgraph", impl).WaitForGraph
        self.t = LockTable(self.graph)
        self.index = 0
        self.now = 0.0
        self.rid = 0

    def do(self, cmd: Any) -> list[Any]:
        self.index += 1
        effects = self.t.apply(self.index, cmd)
        self.t.check_invariants()
        return effects

    def open(self, *clients: str, ttl: float = 10.0) -> None:
        for c in clients:
            assert isinstance(self.do(OpenSession(f"s-{c}", c, ttl, self.now))[0], SessionOpened)

    def acq(
        self,
        c: str,
        res: str = "r",
        mode: Mode = X,
        timeout: float | None = None,
        rid: Any = None,
    ) -> list[Any]:
        if rid is None:
            self.rid += 1
            rid = self.rid
        return self.do(Acquire(res, mode, c, f"s-{c}", rid, self.now, timeout))

    def rel(self, c: str, res: str = "r", token: int | None = None) -> list[Any]:
        return self.do(Release(res, c, f"s-{c}", token))

    def holders(self, res: str = "r") -> tuple[str, ...]:
        return self.t.status(res).holders

    def waiters(self, res: str = "r") -> tuple[str, ...]:
        return self.t.status(res).waiters


@pytest.fixture
def h(impl: str) -> Harness:
    return Harness(impl)


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def state(t: LockTable) -> Any:
    """The snapshot's content without its version and applied index."""
    return msgpack.unpackb(t.snapshot())[2:]


def granted(effects: list[Any]) -> list[str]:
    return [e.client_id for e in effects if isinstance(e, Grant)]


# ==== modes ===========================================================================================


def test_shared_holders_coexist(h: Harness) -> None:
    h.open("a", "b", "c")
    assert kinds(h.acq("a", mode=S)) == ["Grant"]
    assert kinds(h.acq("b", mode=S)) == ["Grant"]
    st_ = h.t.status("r")
    assert st_.mode is S and st_.holders == ("a", "b") and st_.waiters == ()


def test_exclusive_excludes_exclusive_and_shared(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a")
    q = h.acq("b")
    assert kinds(q) == ["Queued"] and q[0].position == 0
    q = h.acq("c", mode=S)
    assert kinds(q) == ["Queued"] and q[0].position == 1
    assert h.holders() == ("a",) and h.waiters() == ("b", "c")


def test_exclusive_waits_for_every_shared_holder(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a", mode=S)
    h.acq("b", mode=S)
    assert kinds(h.acq("c")) == ["Queued"]
    assert granted(h.rel("a")) == []
    assert granted(h.rel("b")) == ["c"]


# ==== FIFO ============================================================================================


def test_shared_behind_queued_exclusive_waits(h: Harness) -> None:
    """No writer starvation: a reader arriving after a queued writer does not overtake it,
    even though it is compatible with the current readers."""
    h.open("a", "b", "c")
    h.acq("a", mode=S)
    h.acq("b", mode=X)
    assert kinds(h.acq("c", mode=S)) == ["Queued"]
    assert h.holders() == ("a",) and h.waiters() == ("b", "c")
    assert granted(h.rel("a")) == ["b"]
    assert granted(h.rel("b")) == ["c"]


def test_fifo_order_of_grants(h: Harness) -> None:
    h.open(*"abcde")
    h.acq("a")
    for c in "bcde":
        h.acq(c)
    order = []
    for c in "abcd":
        order += granted(h.rel(c))
    assert order == list("bcde")


def test_shared_run_granted_together_in_the_releasing_entry(h: Harness) -> None:
    """The hand-off happens in the entry that releases: its index is the new token, and a
    run of shared waiters goes in together, stopping at the next exclusive one."""
    h.open(*"abcde")
    h.acq("a")
    h.acq("b", mode=S)
    h.acq("c", mode=S)
    h.acq("d", mode=X)
    h.acq("e", mode=S)
    effects = h.rel("a")
    assert kinds(effects) == ["Released", "Grant", "Grant"]
    assert [g.token for g in effects[1:]] == [h.index, h.index]
    assert h.holders() == ("b", "c") and h.waiters() == ("d", "e")


def test_compatible_request_is_granted_when_nobody_queues(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a", mode=S)
    assert kinds(h.acq("b", mode=S)) == ["Grant"]


# ==== fencing tokens ====================================================================================


def test_token_is_the_index_of_the_granting_entry_and_strictly_increases(h: Harness) -> None:
    h.open("a", "b", "c")
    g = h.acq("a")[0]
    assert g.token == h.index
    h.acq("b")
    h.acq("c")
    tokens = [g.token]
    for c in "ab":
        hand = [e for e in h.rel(c) if isinstance(e, Grant)]
        assert hand[0].token == h.index  # the release's own entry
        tokens.append(hand[0].token)
    assert tokens == sorted(set(tokens))
    assert h.t.status("r").fencing_token == tokens[-1]


def test_tokens_increase_across_a_resource_freed_and_taken_again(h: Harness) -> None:
    h.open("a")
    t1 = h.acq("a")[0].token
    h.rel("a")
    assert h.t.status("r").fencing_token == 0 and h.t.resources() == []
    t2 = h.acq("a")[0].token
    assert t2 > t1


def test_one_expiry_never_hands_a_lock_twice(h: Harness) -> None:
    """a holds r, b and c queue; a and b expire in one entry: c gets the lock, b never
    does (b must not be granted and released inside the entry with c's token)."""
    h.open("a", "b", ttl=5.0)
    h.open("c", ttl=50.0)
    h.acq("a")
    h.acq("b")
    h.acq("c")
    effects = h.do(ExpireSessions(6.0))
    grants = [e for e in effects if isinstance(e, Grant)]
    assert [(g.client_id, g.token) for g in grants] == [("c", h.index)]


# ==== release ===============================================================================================


def test_release_by_non_holder_is_refused(h: Harness) -> None:
    h.open("a", "b")
    tok = h.acq("a")[0].token
    before = state(h.t)
    r = h.rel("b")[0]
    assert isinstance(r, Rejected) and r.code == "not_holder"
    assert isinstance(r.error(), InvalidRequest) and "'s-b'" in str(r.error())
    # The right session, claimed by another client.
    r = h.do(Release("r", "b", "s-a"))[0]
    assert isinstance(r, Rejected) and r.code == "not_owner"
    # A session that is not open.
    r = h.do(Release("r", "zz", "s-zz"))[0]
    assert isinstance(r, Rejected) and r.code == "no_session"
    # The holder with another grant's token.
    r = h.rel("a", token=tok + 1)[0]
    assert isinstance(r, Rejected) and r.code == "stale_token"
    assert state(h.t) == before
    assert kinds(h.rel("a", token=tok)) == ["Released"]


def test_a_waiter_cannot_release(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a")
    h.acq("b")
    r = h.rel("b")[0]
    assert r.code == "not_holder" and "cancel" in r.message
    assert h.waiters() == ("b",)


# ==== sessions ================================================================================================


def test_session_expiry_releases_locks_cancels_waits_and_hands_off(h: Harness) -> None:
    h.open("a", "b", ttl=5.0)
    h.open("c", ttl=100.0)
    h.acq("a", "r")
    h.acq("b", "q")
    h.acq("c", "q")  # c waits behind b
    h.acq("b", "r")  # b waits behind a
    effects = h.do(ExpireSessions(5.0))
    assert kinds(effects) == [
        "Released",
        "SessionExpired",
        "Cancelled",
        "Released",
        "SessionExpired",
        "Grant",
    ]
    assert effects[2].reason == "session_expired"
    assert granted(effects) == ["c"] and effects[-1].resource == "q"
    assert h.t.session("s-a") is None and h.t.session("s-b") is None
    assert h.t.resources() == ["q"]


def test_keepalive_postpones_expiry_and_expiry_is_rechecked(h: Harness) -> None:
    h.open("a", ttl=5.0)
    h.acq("a")
    assert h.do(ExpireSessions(4.9)) == []  # not yet due
    h.now = 4.0
    assert isinstance(h.do(KeepAlive("s-a", "a", 4.0))[0], SessionRenewed)
    # The leader decided at 5.0 on a stale view; the keepalive committed first wins.
    assert h.do(ExpireSessions(5.0)) == []
    assert h.holders() == ("a",)
    # The keepalive counted from the clock (4.9, not its stale 4.0): due at 9.9.
    assert h.do(ExpireSessions(9.8)) == []
    assert kinds(h.do(ExpireSessions(9.9))) == ["Released", "SessionExpired"]


def test_keepalive_never_shortens_and_clock_never_goes_back(h: Harness) -> None:
    h.open("a", ttl=5.0)
    h.do(KeepAlive("s-a", "a", 20.0))
    assert h.t.session("s-a").deadline == 25.0  # type: ignore[union-attr]
    h.do(KeepAlive("s-a", "a", 1.0))  # late, from a lagging clock
    assert h.t.session("s-a").deadline == 25.0  # type: ignore[union-attr]
    assert h.t.clock == 20.0


def test_keepalive_and_close_check_the_owner(h: Harness) -> None:
    h.open("a")
    assert h.do(KeepAlive("s-a", "b", 1.0))[0].code == "not_owner"
    assert h.do(CloseSession("s-a", "b"))[0].code == "not_owner"
    assert h.do(KeepAlive("s-x", "x", 1.0))[0].code == "no_session"
    assert h.do(OpenSession("s-a", "b", 5.0, 0.0))[0].code == "session_taken"
    # The owner reopening is a renewal (a retry of the open, say).
    assert isinstance(h.do(OpenSession("s-a", "a", 30.0, 1.0))[0], SessionRenewed)
    assert h.t.session("s-a").ttl == 30.0  # type: ignore[union-attr]


def test_another_client_cannot_use_acquire_on_or_cancel_for_a_session(h: Harness) -> None:
    # Session ids are not secrets (lock_status lists them): the owner check, not the id,
    # keeps b from acting for a's session.
    h.open("a", "b")
    h.acq("b")
    assert isinstance(h.acq("a")[0], Queued)
    before = state(h.t)
    r = h.do(Acquire("other", X, "b", "s-a", 99, h.now, None))[0]
    assert isinstance(r, Rejected) and r.code == "not_owner"
    # a's waiting acquire is rid 2: b naming it cannot withdraw it.
    r = h.do(Cancel("r", "b", "s-a", 2))[0]
    assert isinstance(r, Rejected) and r.code == "not_owner"
    assert state(h.t) == before
    assert h.waiters() == ("a",)


def test_close_session_releases_and_cancels(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a", "r")
    h.acq("b", "q")
    h.acq("a", "q")
    h.acq("c", "r")
    effects = h.do(CloseSession("s-a", "a"))
    assert kinds(effects) == ["Cancelled", "Released", "SessionClosed", "Grant"]
    assert effects[0].reason == "session_closed" and granted(effects) == ["c"]
    assert h.waiters("q") == ()


def test_new_leader_extends_sessions(h: Harness) -> None:
    h.open("a", ttl=5.0)  # deadline 5
    h.do(ExtendSessions(3.0, 1.0))  # full ttl from now, plus one election timeout
    assert h.t.session("s-a").deadline == 9.0  # type: ignore[union-attr]
    assert h.do(ExpireSessions(8.9)) == []


# ==== timeouts ================================================================================================


def test_acquire_timeout_removes_the_waiter(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a")
    h.now = 1.0
    h.acq("b", timeout=2.0)
    h.acq("c", timeout=5.0)
    assert h.t.next_wait_deadline() == 3.0
    effects = h.do(ExpireWaits(3.0))
    assert kinds(effects) == ["TimedOut"] and effects[0].client_id == "b"
    assert isinstance(effects[0].error(), LockTimeout)
    assert h.waiters() == ("c",)
    assert granted(h.rel("a")) == ["c"]


def test_timed_out_head_lets_compatible_waiters_in(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a", mode=S)
    h.acq("b", mode=X, timeout=1.0)
    h.acq("c", mode=S)
    effects = h.do(ExpireWaits(1.0))
    assert kinds(effects) == ["TimedOut", "Grant"]
    assert h.holders() == ("a", "c")


def test_timeout_zero_is_a_try_lock(h: Harness) -> None:
    h.open("a", "b")
    assert kinds(h.acq("a", timeout=0.0)) == ["Grant"]
    assert kinds(h.acq("b", timeout=0.0)) == ["TimedOut"]
    assert h.waiters() == ()


def test_cancel_removes_the_wait_and_refuses_otherwise(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a")
    h.acq("b", rid=7)
    assert h.do(Cancel("r", "b", "s-b", 8))[0].code == "not_waiting"
    assert kinds(h.do(Cancel("r", "b", "s-b", 7))) == ["Cancelled"]
    assert h.waiters() == ()
    r = h.do(Cancel("r", "a", "s-a", 1))[0]
    assert r.code == "not_waiting" and "release" in r.message


# ==== re-entrancy ===============================================================================================


def test_holder_acquiring_again_is_refused_not_reentrant(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a", mode=X, rid=1)
    assert h.acq("a", mode=X, rid=2)[0].code == "already_held"
    assert h.acq("a", mode=S, rid=3)[0].code == "already_held"  # no downgrade
    h.acq("b", "q", mode=S, rid=1)
    assert h.acq("b", "q", mode=X, rid=2)[0].code == "already_held"  # no upgrade
    assert h.acq("b", "q", mode=S, rid=3)[0].code == "already_held"


def test_retried_acquire_gets_the_same_answer(h: Harness) -> None:
    h.open("a", "b")
    g = h.acq("a", rid="req-1")[0]
    assert h.acq("a", rid="req-1") == [g]
    q = h.acq("b", rid=5)[0]
    again = h.acq("b", rid=5)
    assert again == [q] and h.waiters() == ("b",)


def test_a_session_waits_for_one_lock_at_a_time(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a", "r")
    h.acq("a", "q")
    h.acq("b", "r")
    assert h.acq("b", "q")[0].code == "already_waiting"
    # Even a free lock: a waiting session is blocked (what makes the edges exact).
    assert h.acq("b", "free")[0].code == "already_waiting"
    h.rel("a", "r")
    assert kinds(h.acq("b", "free")) == ["Grant"]


# ==== deadlocks =================================================================================================


def test_two_party_deadlock_is_refused_with_the_cycle(h: Harness) -> None:
    h.open("a", "b")
    h.acq("a", "r")
    h.acq("b", "q")
    h.acq("a", "q")
    before = state(h.t)
    d = h.acq("b", "r")[0]
    assert isinstance(d, Deadlock)
    assert d.cycle == ("b", "a") and d.cycle_sessions == ("s-b", "s-a")
    err = d.error()
    assert isinstance(err, DeadlockError) and err.cycle == ["b", "a"]
    assert "b -> a -> b" in str(err)
    # Refused, not queued: only the applied index moved.
    assert state(h.t) == before
    assert h.waiters("r") == ()


def test_three_party_deadlock(h: Harness) -> None:
    h.open("a", "b", "c")
    for c, res in zip("abc", "pqr", strict=True):
        h.acq(c, res)
    h.acq("a", "q")
    h.acq("b", "r")
    d = h.acq("c", "p")[0]
    assert isinstance(d, Deadlock) and d.cycle == ("c", "a", "b")


def test_deadlock_through_a_fifo_queue(h: Harness) -> None:
    """c's shared request is compatible with a's shared hold but queues behind b's
    exclusive one, so c waits for b: a then asking for c's lock closes a real cycle."""
    h.open("a", "b", "c")
    h.acq("a", "r", mode=S)
    h.acq("c", "q")
    h.acq("b", "r", mode=X)
    h.acq("c", "r", mode=S)
    d = h.acq("a", "q")[0]
    assert isinstance(d, Deadlock) and d.cycle == ("a", "c", "b")


def test_shared_run_members_do_not_wait_for_each_other(h: Harness) -> None:
    h.open("x", "a", "b", "c")
    h.acq("x", "r", mode=X)
    h.acq("a", "r", mode=S)
    h.acq("b", "r", mode=S)
    h.acq("c", "r", mode=X)
    assert h.t.waits_for("s-a") == ["s-x"]
    assert h.t.waits_for("s-b") == ["s-x"]  # not s-a: granted together
    assert h.t.waits_for("s-c") == ["s-a", "s-b"]


def test_long_chain_has_no_false_positive_and_the_closing_wait_is_caught(h: Harness) -> None:
    n = 200
    clients = [f"c{i}" for i in range(n)]
    h.open(*clients)
    for i, c in enumerate(clients):
        assert kinds(h.acq(c, f"r{i}")) == ["Grant"]
    # c{i} waits for r{i-1}, held by c{i-1}: a chain, no cycle.
    for i in range(1, n):
        assert kinds(h.acq(clients[i], f"r{i - 1}")) == ["Queued"]
    # Another waiter behind the chain's end is still no cycle ...
    h.open("late")
    assert kinds(h.acq("late", f"r{n - 1}")) == ["Queued"]
    # ... but c0 waiting for the last resource closes one through all n clients, and
    # through "late": FIFO puts c0 behind it, so c0 waits for late, late for c199.
    d = h.acq(clients[0], f"r{n - 1}")[0]
    assert isinstance(d, Deadlock)
    assert d.cycle == (clients[0], "late", *reversed(clients[1:]))


def test_deadlock_after_a_timeout_merged_two_shared_runs(h: Harness) -> None:
    h.open("h", "b", "x", "c")
    h.acq("c", "q")
    h.acq("h", "r", mode=X)
    h.acq("b", "r", mode=S)
    h.acq("x", "r", mode=X, timeout=1.0)
    h.acq("c", "r", mode=S)
    assert h.t.waits_for("s-c") == ["s-x"]
    h.do(ExpireWaits(1.0))
    assert h.t.waits_for("s-c") == ["s-h"]  # one run with b now
    d = h.acq("h", "q")[0]
    assert isinstance(d, Deadlock) and d.cycle == ("h", "c")


def test_no_deadlock_when_the_request_would_be_granted(h: Harness) -> None:
    h.open("a", "b", "c")
    h.acq("a", "r", mode=S)
    h.acq("b", "r", mode=S)
    h.acq("c", "q")
    h.acq("a", "q")  # a waits for c
    assert kinds(h.acq("c", "r", mode=S)) == ["Grant"]  # compatible, nobody queues


# ==== snapshots ==============================================================================================


def _busy(h: Harness) -> None:
    h.open(*"abcdef")
    h.acq("a", "r", mode=S)
    h.acq("b", "r", mode=S)
    h.acq("c", "r", mode=X, timeout=3.0)
    h.acq("d", "r", mode=S)
    h.acq("e", "q")
    h.acq("a", "q", mode=S)
    h.acq("f", "p", mode=S)
    h.now = 2.0
    h.do(KeepAlive("s-b", "b", 2.0))


def _future(h: Harness, t: LockTable, start: int) -> list[Any]:
    cmds: list[Any] = [
        Acquire("p", X, "e", "s-e", 90, 2.0),  # e waits for f
        Acquire("q", X, "f", "s-f", 91, 2.0),  # would close f -> e -> f
        Release("r", "b", "s-b"),
        ExpireWaits(5.0),
        Release("r", "a", "s-a"),  # a still waits on q: refused
        ExpireSessions(10.5),
        Acquire("r", S, "f", "s-f", 92, 11.0),
    ]
    return [t.apply(start + k, c) for k, c in enumerate(cmds, 1)]


def test_snapshot_restore_is_equal_and_decides_the_same(h: Harness, impl: str) -> None:
    _busy(h)
    data = h.t.snapshot()
    other = "py" if impl == "c" or NO_EXTENSIONS else "c"
    for graph_impl in {impl, other}:
        r = LockTable.restore(data, load("waitgraph", graph_impl).WaitForGraph)
        r.check_invariants()
        assert r == h.t and r.snapshot() == data
        assert r.applied_index == h.t.applied_index and r.clock == h.t.clock
    r = LockTable.restore(data, h.graph)
    ours, theirs = _future(h, h.t, h.index), _future(h, r, h.index)
    assert ours == theirs
    assert any(isinstance(e, Deadlock) for es in ours for e in es)
    assert r == h.t and r.snapshot() == h.t.snapshot()


def test_equal_state_reached_differently_snapshots_equal(h: Harness) -> None:
    """Sessions opened in another order: the same table, the same snapshot bytes."""
    h.open("a", "b")
    h.acq("b", "q")
    h.acq("a", "r")
    t2 = LockTable(h.graph)
    t2.apply(1, OpenSession("s-b", "b", 10.0, 0.0))
    t2.apply(2, OpenSession("s-a", "a", 10.0, 0.0))
    t2.apply(3, Acquire("q", X, "b", "s-b", 1, 0.0))
    t2.apply(4, Acquire("r", X, "a", "s-a", 2, 0.0))
    assert t2 == h.t and t2.snapshot() == h.t.snapshot()
    t2.apply(5, KeepAlive("s-a", "a", 1.0))
    assert t2 != h.t


def test_restore_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a lock table snapshot"):
        LockTable.restore(b"\xc1")
    with pytest.raises(ValueError, match="version"):
        LockTable.restore(msgpack.packb([99, 0, 0.0, [], []]))


# ==== commands and their encoding ================================================================================

ALL_COMMANDS = [
    OpenSession("s", "c", 2.5, 1.0),
    KeepAlive("s", "c", 3),
    CloseSession("s", "c"),
    Acquire("r", S, "c", "s", "rid", 1.0, None),
    Acquire("r", X, "c", "s", 7, 1.0, 0.25),
    Release("r", "c", "s", None),
    Release("r", "c", "s", 42),
    Cancel("r", "c", "s", 7),
    ExpireSessions(9.0),
    ExpireWaits(9.5),
    ExtendSessions(10.0, 1.5),
]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_encoding_round_trips(cmd: Any) -> None:
    data = encode_command(cmd)
    assert decode_command(data) == cmd
    assert msgpack.unpackb(data)[0] == 1  # versioned
    assert len(data) < 40 + sum(len(str(v)) for v in msgpack.unpackb(data))


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Acquire("r", "write", "c", "s", 1, 0.0), "mode"),  # type: ignore[arg-type]
        (lambda: Acquire("", X, "c", "s", 1, 0.0), "resource"),
        (lambda: Acquire("r" * (MAX_NAME + 1), X, "c", "s", 1, 0.0), "resource"),
        (lambda: Acquire("r", X, "c", "s", 1.5, 0.0), "request_id"),  # type: ignore[arg-type]
        (lambda: Acquire("r", X, "c", "s", 1, 0.0, -1.0), "timeout"),
        (lambda: Acquire("r", X, "c", "s", 1, math.nan), "now"),
        (lambda: Acquire("r", X, "c", b"s", 1, 0.0), "session_id"),  # type: ignore[arg-type]
        (lambda: OpenSession("s", "c", 0.0, 0.0), "ttl"),
        (lambda: OpenSession("s", "c", True, 0.0), "ttl"),
        (lambda: Release("r", "c", "s", 0), "token"),
        (lambda: ExtendSessions(0.0, math.inf), "by"),
        # Floats at the edges of the quick check for a valid time.
        (lambda: OpenSession("s", "c", math.inf, 0.0), "ttl"),
        (lambda: OpenSession("s", "c", -0.5, 0.0), "ttl"),
        (lambda: Acquire("r", X, "c", "s", 1, -math.inf), "now"),
        (lambda: Acquire("r", X, "c", "s", 1, 0.0, math.nan), "timeout"),
        (lambda: ExpireSessions(-1e-9), "now"),
    ],
)
def test_bad_command_fields_are_named(make: Any, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        make()


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb({"op": 1}), "array"),
        (msgpack.packb([2, 1, "s", "c", 1.0, 0.0]), "version"),
        (msgpack.packb([1, 99]), "opcode"),
        (msgpack.packb([1, 3, "s"]), "CloseSession takes 2 fields"),
        (msgpack.packb([1, 4, "r", 5, "c", "s", 1, 0.0, None]), "mode"),
        (msgpack.packb([1, 1, "s", "c", "ten", 0.0]), "ttl"),
    ],
)
def test_bad_entries_decode_to_clear_errors(data: bytes, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        decode_command(data)


def test_a_bad_committed_entry_is_a_rejected_no_op(h: Harness) -> None:
    h.open("a")
    before = state(h.t)
    effects = h.t.apply_entry(5, b"\x93garbage")
    assert (
        len(effects) == 1 and isinstance(effects[0], Rejected) and effects[0].code == "bad_command"
    )
    assert h.t.applied_index == 5
    assert state(h.t) == before
    assert kinds(h.t.apply_entry(6, encode_command(Acquire("r", X, "a", "s-a", 1, 0.0)))) == [
        "Grant"
    ]


def test_driver_errors_raise(h: Harness) -> None:
    h.open("a")
    with pytest.raises(ValueError, match="must exceed"):
        h.t.apply(h.index, KeepAlive("s-a", "a", 0.0))
    with pytest.raises(ValueError, match="must exceed"):
        h.t.apply_entry(0, b"")
    with pytest.raises(TypeError, match="not a lock command"):
        h.t.apply(h.index + 1, "acquire r")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_command("acquire r")  # type: ignore[arg-type]


# ==== queries ===============================================================================================


def test_status_and_sessions_listing(h: Harness) -> None:
    h.open("b", "a")
    h.acq("a", "r", mode=S)
    h.acq("b", "r", mode=X, timeout=4.0)
    st_ = h.t.status("r")
    assert (st_.mode, st_.holders, st_.waiters) == (S, ("a",), ("b",))
    assert st_.holder_sessions == ("s-a",) and st_.waiter_sessions == ("s-b",)
    assert h.t.status("nothing").mode is None
    infos = h.t.sessions()
    assert [i.session_id for i in infos] == ["s-a", "s-b"]
    assert infos[0].held == ("r",) and infos[1].waiting == "r"
    assert h.t.next_session_deadline() == 10.0 and h.t.next_wait_deadline() == 4.0
    assert "sessions=2" in repr(h.t)


# ==== leader-side decisions ====================================================================================


def test_leader_clock_continues_the_table_clock(h: Harness) -> None:
    h.open("a", ttl=5.0)
    h.do(KeepAlive("s-a", "a", 100.0))
    clock, extend = on_elected(h.t, local_now=3.0, election_timeout=1.0)
    assert clock.now(3.0) == 100.0 and clock.now(4.5) == 101.5
    assert extend == ExtendSessions(100.0, 1.0)
    h.do(extend)
    assert h.t.session("s-a").deadline == 106.0  # type: ignore[union-attr]
    assert LeaderClock(0.0, 10.0).now(10.0) == 0.0


def test_expiry_scheduler_proposes_once_per_due_batch(h: Harness) -> None:
    sched = ExpiryScheduler(retry=1.0)
    assert sched.poll(h.t, 0.0) == []
    h.open("a", ttl=5.0)
    h.open("b")
    h.acq("a")
    h.acq("b", timeout=2.0)
    assert sched.next_wakeup(h.t) == 2.0
    assert sched.poll(h.t, 1.0) == []
    assert sched.poll(h.t, 2.0) == [ExpireWaits(2.0)]
    assert sched.poll(h.t, 2.5) == []  # in flight
    assert sched.poll(h.t, 3.0) == [ExpireWaits(3.0)]  # lost? try again
    h.do(ExpireWaits(3.0))
    assert sched.poll(h.t, 5.0) == [ExpireSessions(5.0)]
    assert kinds(h.do(ExpireSessions(5.0))) == ["Released", "SessionExpired"]
    assert sched.poll(h.t, 6.5) == []
    with pytest.raises(ValueError):
        ExpiryScheduler(retry=0)


# ==== stateful: the table against a plain oracle =====================================================================

CLIENTS = ["a", "b", "c", "d"]
RESOURCES = ["r", "q", "p"]


class Oracle:
    """The rules written as plainly as possible: lists, full scans, and deadlock decided
    on the literal definition (a waiter waits for every holder and for every waiter ahead
    of it that FIFO grants in an earlier batch), by depth-first search."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[Any]] = {}  # sid -> [cid, ttl, deadline]
        self.holders: dict[str, list[list[Any]]] = {}  # res -> [[sid, mode, token, rid]]
        self.queue: dict[str, list[list[Any]]] = {}  # res -> [[sid, mode, rid, deadline]]
        self.clock = 0.0

    def waits(self, sid: str) -> tuple[str, list[Any]] | None:
        for res, q in self.queue.items():
            for w in q:
                if w[0] == sid:
                    return res, w
        return None

    def holds(self, sid: str, res: str) -> list[Any] | None:
        return next((x for x in self.holders.get(res, []) if x[0] == sid), None)

    def compatible(self, res: str, mode: Mode) -> bool:
        hs = self.holders.get(res, [])
        return not hs or (mode is S and all(x[1] is S for x in hs))

    def blockers(self, res: str, pos: int, mode: Mode) -> set[str]:
        """Whom a request at queue position ``pos`` (len = a new one) waits for."""
        out = {x[0] for x in self.holders.get(res, [])}
        q = self.queue.get(res, [])
        # Waiters ahead that are granted in an earlier batch: everything ahead except
        # the shared run directly ahead, when this request is shared too.
        k = pos
        if mode is S:
            while k > 0 and q[k - 1][1] is S:
                k -= 1
        out |= {w[0] for w in q[:k]}
        return out

    def relation(self) -> dict[str, set[str]]:
        rel: dict[str, set[str]] = {}
        for res, q in self.queue.items():
            for i, w in enumerate(q):
                rel[w[0]] = self.blockers(res, i, w[1])
        return rel

    def reaches(self, rel: dict[str, set[str]], src: set[str], dst: str) -> bool:
        seen, stack = set(), list(src)
        while stack:
            x = stack.pop()
            if x == dst:
                return True
            if x not in seen:
                seen.add(x)
                stack.extend(rel.get(x, ()))
        return False

    def settle(self, touched: set[str], index: int, out: list[tuple[Any, ...]]) -> None:
        for res in sorted(touched):
            q = self.queue.get(res, [])
            while q and self.compatible(res, q[0][1]):
                sid, mode, rid, _ = q.pop(0)
                self.holders.setdefault(res, []).append([sid, mode, index, rid])
                out.append(("Grant", res, sid, mode, index))
            for d in (self.queue, self.holders):
                if not d.get(res):
                    d.pop(res, None)

    def end(self, sid: str, reason: str, out: list[tuple[Any, ...]], touched: set[str]) -> None:
        w = self.waits(sid)
        if w is not None:
            self.queue[w[0]].remove(w[1])
            touched.add(w[0])
            out.append(("Cancelled", w[0], sid, reason))
        for res in sorted(self.holders):
            x = self.holds(sid, res)
            if x is not None:
                self.holders[res].remove(x)
                touched.add(res)
                out.append(("Released", res, sid, x[2], reason))
        del self.sessions[sid]


def norm(e: Any) -> tuple[Any, ...]:
    """An effect as the oracle writes it."""
    if isinstance(e, Grant):
        return ("Grant", e.resource, e.session_id, e.mode, e.token)
    if isinstance(e, Queued):
        return ("Queued", e.resource, e.session_id, e.position)
    if isinstance(e, Released):
        return ("Released", e.resource, e.session_id, e.token, e.reason)
    if isinstance(e, Cancelled):
        return ("Cancelled", e.resource, e.session_id, e.reason)
    if isinstance(e, TimedOut):
        return ("TimedOut", e.resource, e.session_id)
    if isinstance(e, Rejected):
        return ("Rejected", e.code)
    if isinstance(e, Deadlock):
        return ("Deadlock", e.resource, e.session_id)
    if isinstance(e, SessionExpired | SessionClosed):
        return (type(e).__name__, e.session_id)
    return (type(e).__name__, getattr(e, "session_id", None))


class LockTableVsOracle(RuleBasedStateMachine):
    impl = "py"

    @initialize()
    def setup(self) -> None:
        self.t = LockTable(load("waitgraph", self.impl).WaitForGraph)
        self.o = Oracle()
        self.index = 0
        self.now = 0.0
        self.rid = 0
        for c in CLIENTS:  # mostly long-lived sessions, so that locks pile up
            self.open(c, 30.0)

    def run(self, cmd: Any, expected: list[tuple[Any, ...]]) -> list[Any]:
        self.index += 1
        got = self.t.apply(self.index, cmd)
        assert [norm(e) for e in got] == expected, (cmd, got)
        return got

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 4.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(c=st.sampled_from(CLIENTS), ttl=st.sampled_from([2.0, 30.0]))
    def open(self, c: str, ttl: float) -> None:
        sid, o = f"s-{c}", self.o
        o.clock = max(o.clock, self.now)
        if sid in o.sessions:
            s = o.sessions[sid]
            s[1], s[2] = ttl, max(s[2], o.clock + ttl)
            self.run(OpenSession(sid, c, ttl, self.now), [("SessionRenewed", sid)])
        else:
            o.sessions[sid] = [c, ttl, o.clock + ttl]
            self.run(OpenSession(sid, c, ttl, self.now), [("SessionOpened", sid)])

    @rule(c=st.sampled_from(CLIENTS))
    def keepalive(self, c: str) -> None:
        sid, o = f"s-{c}", self.o
        if sid not in o.sessions:
            self.run(KeepAlive(sid, c, self.now), [("Rejected", "no_session")])
            return
        o.clock = max(o.clock, self.now)
        s = o.sessions[sid]
        s[2] = max(s[2], o.clock + s[1])
        self.run(KeepAlive(sid, c, self.now), [("SessionRenewed", sid)])

    @rule(
        c=st.sampled_from(CLIENTS),
        res=st.sampled_from(RESOURCES),
        mode=st.sampled_from([S, X]),
        timeout=st.sampled_from([None, 0.0, 1.0, 4.0]),
        retry=st.booleans(),
    )
    def acquire_any(self, c: str, res: str, mode: Mode, timeout: float | None, retry: bool) -> None:
        self.acquire(c, res, mode, timeout, retry)

    def acquire(self, c: str, res: str, mode: Mode, timeout: float | None, retry: bool) -> None:
        sid, o = f"s-{c}", self.o
        if not retry:
            self.rid += 1
        rid = self.rid
        cmd = Acquire(res, mode, c, sid, rid, self.now, timeout)
        if sid not in o.sessions:
            self.run(cmd, [("Rejected", "no_session")])
            return
        o.clock = max(o.clock, self.now)
        held = o.holds(sid, res)
        w = o.waits(sid)
        if held is not None:
            if held[3] == rid and held[1] is mode:
                self.run(cmd, [("Grant", res, sid, mode, held[2])])
            else:
                self.run(cmd, [("Rejected", "already_held")])
            return
        if w is not None:
            if w[0] == res and w[1][2] == rid and w[1][1] is mode:
                self.run(cmd, [("Queued", res, sid, o.queue[res].index(w[1]))])
            else:
                self.run(cmd, [("Rejected", "already_waiting")])
            return
        q = o.queue.get(res, [])
        if not q and o.compatible(res, mode):
            o.holders.setdefault(res, []).append([sid, mode, self.index + 1, rid])
            self.run(cmd, [("Grant", res, sid, mode, self.index + 1)])
            return
        if timeout == 0.0:
            self.run(cmd, [("TimedOut", res, sid)])
            return
        rel = o.relation()
        blockers = o.blockers(res, len(q), mode)
        if o.reaches(rel, blockers, sid):
            got = self.run(cmd, [("Deadlock", res, sid)])
            cyc = list(got[0].cycle_sessions)
            # The named cycle is real: each member waits for the next, the last for sid.
            rel[sid] = blockers
            for x, y in zip(cyc, cyc[1:] + cyc[:1], strict=True):
                assert y in rel[x], (cyc, x, y, rel)
            return
        deadline = None if timeout is None else o.clock + timeout
        pos = len(q)
        o.queue.setdefault(res, []).append([sid, mode, rid, deadline])
        self.run(cmd, [("Queued", res, sid, pos)])

    # Drawn twice as often as the other rules: acquires make the interesting states.
    @rule(
        c=st.sampled_from(CLIENTS),
        res=st.sampled_from(RESOURCES),
        mode=st.sampled_from([S, X]),
        timeout=st.sampled_from([None, 1.0, 4.0]),
    )
    def acquire_new(self, c: str, res: str, mode: Mode, timeout: float | None) -> None:
        self.acquire(c, res, mode, timeout, False)

    @rule(c=st.sampled_from(CLIENTS), res=st.sampled_from(RESOURCES), stale=st.booleans())
    def release(self, c: str, res: str, stale: bool) -> None:
        sid, o = f"s-{c}", self.o
        x = o.holds(sid, res)
        token = (x[2] + 1 if stale else x[2]) if x is not None else None
        cmd = Release(res, c, sid, token)
        if sid not in o.sessions:
            self.run(cmd, [("Rejected", "no_session")])
        elif x is None:
            self.run(cmd, [("Rejected", "not_holder")])
        elif stale:
            self.run(cmd, [("Rejected", "stale_token")])
        else:
            o.holders[res].remove(x)
            out: list[tuple[Any, ...]] = [("Released", res, sid, x[2], "release")]
            o.settle({res}, self.index + 1, out)
            self.run(cmd, out)

    @rule(c=st.sampled_from(CLIENTS))
    def cancel(self, c: str) -> None:
        sid, o = f"s-{c}", self.o
        w = o.waits(sid)
        if w is None:
            if sid in o.sessions:
                self.run(Cancel("r", c, sid, 0), [("Rejected", "not_waiting")])
            return
        o.queue[w[0]].remove(w[1])
        out: list[tuple[Any, ...]] = [("Cancelled", w[0], sid, "cancelled")]
        o.settle({w[0]}, self.index + 1, out)
        self.run(Cancel(w[0], c, sid, w[1][2]), out)

    @rule(c=st.sampled_from(CLIENTS))
    def close(self, c: str) -> None:
        sid, o = f"s-{c}", self.o
        if sid not in o.sessions:
            self.run(CloseSession(sid, c), [("Rejected", "no_session")])
            return
        out: list[tuple[Any, ...]] = []
        touched: set[str] = set()
        o.end(sid, "session_closed", out, touched)
        out.append(("SessionClosed", sid))
        o.settle(touched, self.index + 1, out)
        self.run(CloseSession(sid, c), out)

    @rule()
    def expire_sessions(self) -> None:
        o = self.o
        o.clock = max(o.clock, self.now)
        out: list[tuple[Any, ...]] = []
        touched: set[str] = set()
        for _, sid in sorted((s[2], sid) for sid, s in o.sessions.items() if s[2] <= o.clock):
            o.end(sid, "session_expired", out, touched)
            out.append(("SessionExpired", sid))
        o.settle(touched, self.index + 1, out)
        self.run(ExpireSessions(self.now), out)

    @rule()
    def expire_waits(self) -> None:
        o = self.o
        o.clock = max(o.clock, self.now)
        due = sorted(
            (w[3], w[0], res)
            for res, q in o.queue.items()
            for w in q
            if w[3] is not None and w[3] <= o.clock
        )
        out: list[tuple[Any, ...]] = []
        for _, sid, res in due:
            o.queue[res] = [w for w in o.queue[res] if w[0] != sid]
            out.append(("TimedOut", res, sid))
        o.settle({res for _, _, res in due}, self.index + 1, out)
        self.run(ExpireWaits(self.now), out)

    @rule(by=st.sampled_from([0.0, 1.0]))
    def extend(self, by: float) -> None:
        o = self.o
        o.clock = max(o.clock, self.now)
        for s in o.sessions.values():
            s[2] = max(s[2], o.clock + s[1]) + by
        self.run(ExtendSessions(self.now, by), [])

    @precondition(lambda self: self.index > 0)
    @rule()
    def snapshot_and_restore(self) -> None:
        r = LockTable.restore(self.t.snapshot(), load("waitgraph", self.impl).WaitForGraph)
        assert r == self.t
        self.t = r

    @invariant()
    def same_state(self) -> None:
        t, o = self.t, self.o
        t.check_invariants()
        assert t.clock == o.clock
        assert [(i.session_id, i.client_id, i.ttl, i.deadline) for i in t.sessions()] == [
            (sid, *o.sessions[sid]) for sid in sorted(o.sessions)
        ]
        assert t.resources() == sorted(set(o.holders) | set(o.queue))
        for res in RESOURCES:
            s = t.status(res)
            assert s.holder_sessions == tuple(x[0] for x in o.holders.get(res, []))
            assert s.waiter_sessions == tuple(w[0] for w in o.queue.get(res, []))
            exclusive = [x for x in o.holders.get(res, []) if x[1] is X]
            assert not exclusive or len(o.holders[res]) == 1


@pytest.mark.parametrize("impl_", ["c", "py"])
def test_table_against_oracle(impl_: str) -> None:
    if impl_ == "c" and NO_EXTENSIONS:
        pytest.skip("compiled twin disabled")
    LockTableVsOracle.impl = impl_
    run_state_machine_as_test(
        LockTableVsOracle,
        settings=settings(max_examples=120, stateful_step_count=50, deadline=None),
    )


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@given(st.integers(0, 12), st.lists(_values, max_size=9))
def test_decoding_any_entry_gives_a_command_or_invalid_request(op: int, fields: list[Any]) -> None:
    """Whatever a log entry holds, decoding it raises nothing but InvalidRequest, and what
    it returns encodes back to a command that decodes equal."""
    data = msgpack.packb([1, op, *fields])
    try:
        cmd = decode_command(data)
    except InvalidRequest:
        return
    assert decode_command(encode_command(cmd)) == cmd


@given(st.binary(max_size=64))
def test_apply_entry_never_raises_on_garbage(data: bytes) -> None:
    t = LockTable()
    t.apply_entry(1, data)
    t.check_invariants()


def test_restore_refuses_a_damaged_snapshot() -> None:
    with pytest.raises(ValueError, match="damaged"):
        LockTable.restore(msgpack.packb([1, 3, 0.0, [["s", "c", 1.0]], []]))
    with pytest.raises(ValueError, match="damaged"):
        LockTable.restore(msgpack.packb([1, 3, 0.0, [], [["r", [["s", 1, 3, 1]], []]]]))


def test_long_mixed_queues_keep_exact_edges(h: Harness) -> None:
    """Random traffic on long queues of mixed modes, with waiters leaving from the middle
    (cancels, timeouts): after every entry each waiter's edges equal the full
    recomputation (check_invariants), though only the changed groups are rewired."""
    rng = random.Random(11)
    clients = [f"k{i}" for i in range(24)]
    h.open(*clients, ttl=1e9)
    waiting: dict[str, Any] = {}  # client -> request id of its wait
    longest = 0
    for _ in range(3000):
        c = rng.choice(clients)
        info = h.t.session(f"s-{c}")
        assert info is not None
        x = rng.random()
        if info.waiting is None and x < 0.6:
            mode = S if rng.random() < 0.6 else X
            effects = h.acq(c, rng.choice("rq"), mode=mode, timeout=rng.choice((None, 3.0)))
        elif info.held and x < 0.8:
            effects = h.rel(c, rng.choice(info.held))
        elif info.waiting is not None and x < 0.9:
            effects = h.do(Cancel(info.waiting, c, f"s-{c}", waiting[c]))
        else:
            h.now += 1.0
            effects = h.do(ExpireWaits(h.now))
        for e in effects:
            if isinstance(e, Queued):
                waiting[e.client_id] = e.request_id
        longest = max(longest, *(len(h.waiters(r)) for r in "rq"))
    assert longest >= 10  # the queues did get long


def test_effects_round_trip_through_plain_data(h: Harness) -> None:
    """Every kind of effect survives effect_to_wire -> msgpack -> effect_from_wire."""
    _busy(h)
    seen: list[Any] = []
    future = _future(h, h.t, h.index)
    h.index += len(future)
    for es in future:
        seen += es
    seen += h.do(OpenSession("s-z", "z", 1.0, 20.0))
    seen += h.do(KeepAlive("s-z", "z", 20.5))
    seen += h.do(CloseSession("s-z", "z"))
    seen += h.do(Cancel("r", "zz", "s-zz", 1))
    seen.append(Queued("r", "a", "s-a", S, "x", 3))
    seen.append(Cancelled("r", "a", "s-a", 1, "cancelled"))
    kinds_seen = {type(e).__name__ for e in seen}
    assert len(kinds_seen) == 11, kinds_seen
    for e in seen:
        wire = msgpack.unpackb(msgpack.packb(effect_to_wire(e)))
        assert effect_from_wire(wire) == e
    with pytest.raises(ValueError, match="unknown effect"):
        effect_from_wire({"effect": "nope"})
    with pytest.raises(ValueError, match="lacks token"):
        effect_from_wire(
            {"effect": "released", "resource": "r"}
            | dict.fromkeys(["client_id", "session_id", "reason"], "x")
        )
