"""``distsync demo``: the lock service on a throwaway 3-node cluster, told as a story.

It starts :class:`~distsync.LocalCluster` (three ``distsync serve`` processes on
127.0.0.1, fsync on, temporary data dirs) and plays three short scenes with real
clients, printing what happened in words a newcomer can follow:

1. **Shared and exclusive.** Two readers hold one resource together; a writer queues
   behind them and is handed the lock by the leader the moment the last reader leaves.
2. **Deadlock.** alice holds ``accounts`` and waits for ``ledger``; bob holds ``ledger``
   and asks for ``accounts``. The cluster refuses bob at once with the cycle it found,
   instead of letting both wait forever.
3. **Failover.** carol holds ``orders`` with two clients queued behind her; the leader is
   killed with SIGKILL. A new leader is elected, carol still holds the lock (it lives in
   the replicated log, not in the dead process), and the queue drains in order with
   fencing tokens still increasing.

Every claim printed is also checked: if one does not hold, the demo says which and
exits non-zero, so it doubles as a smoke test of an installation. Everything it starts is
stopped before it returns.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TextIO, TypeVar

from distsync.client import LockGrant
from distsync.cluster import LocalCluster
from distsync.errors import DeadlockError

T = TypeVar("T")

__all__ = ["DemoFailed", "run_demo", "main"]

#: Upper bound of any single wait in the demo (s): generous for a slow CI machine, yet
#: a hang ends with a message instead of a stuck terminal.
WAIT = 15.0


class DemoFailed(Exception):
    """Something the demo shows did not happen as it should (the message says what)."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise DemoFailed(what)


def _wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``cond`` (a lock_status read, typically) until true; bounded."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting until {what}")
        time.sleep(0.02)


class _Actor:
    """One person of the story: a client and one thread of its own. A lock's owner is the
    thread that took it (one session per thread), so everything one person does runs on
    its single worker thread, while the demo's main thread watches and narrates."""

    def __init__(self, cluster: LocalCluster, name: str) -> None:
        self.name = name
        self.client = cluster.client(client_id=name, timeout=WAIT)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        # A daemon thread, not an executor's: if the demo fails while this person waits
        # on a cluster that is gone, the process must still exit at once.
        threading.Thread(target=self._work, name=f"demo-{name}", daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on fut
                fut.set_exception(exc)

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    def start_acquire(self, resource: str, mode: str = "exclusive") -> Future[LockGrant]:
        """Ask for ``resource`` without waiting for the answer."""
        return self._submit(lambda: self.client.acquire(resource, mode, WAIT))

    def acquire(self, resource: str, mode: str = "exclusive") -> LockGrant:
        return self.granted(self.start_acquire(resource, mode))

    def granted(self, fut: Future[LockGrant]) -> LockGrant:
        """The grant ``fut`` brings, within the demo's bound."""
        try:
            return fut.result(WAIT * 2)
        except FutureTimeout:
            raise DemoFailed(f"{self.name} was never granted its lock") from None

    def release(self, grant: LockGrant) -> None:
        try:
            self._submit(grant.release).result(WAIT * 2)
        except FutureTimeout:
            raise DemoFailed(f"{self.name}'s release was never answered") from None

    def close(self) -> None:
        self._jobs.put(None)


def _scene_shared_exclusive(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    say('1. Shared and exclusive locks on "inventory"')
    r1, r2 = _Actor(cluster, "reader-1"), _Actor(cluster, "reader-2")
    w = _Actor(cluster, "writer")
    g1 = r1.acquire("inventory", "shared")
    g2 = r2.acquire("inventory", "shared")
    say(
        f"   reader-1 and reader-2 both hold it shared (fencing tokens {g1.fencing_token} "
        f"and {g2.fencing_token}):"
    )
    say("   readers do not exclude each other.")
    wf = w.start_acquire("inventory", "exclusive")
    status = w.client.lock_status
    _wait_until(lambda: status("inventory").waiters == ("writer",), "writer queued")
    st = status("inventory")
    _check(st.holders == ("reader-1", "reader-2"), f"unexpected holders {st.holders}")
    say("   writer asks for it exclusive and waits. lock_status says: held shared by")
    say(f"   {' and '.join(st.holders)}, waiting: {', '.join(st.waiters)}.")
    r1.release(g1)
    _check(not wf.done(), "writer got the lock while reader-2 still held it")
    say("   reader-1 releases: writer still waits, reader-2 holds it.")
    r2.release(g2)
    gw = w.granted(wf)
    _check(gw.fencing_token > max(g1.fencing_token, g2.fencing_token), "token did not grow")
    say("   reader-2 releases; the leader hands the lock to writer in that same log entry")
    say(f"   (no polling): writer holds it exclusive, fencing token {gw.fencing_token}.")
    w.release(gw)
    for a in (r1, r2, w):
        a.close()
    say("")


def _scene_deadlock(cluster: LocalCluster, say: Callable[[str], None]) -> list[str]:
    say("2. A deadlock, detected: alice and bob each want the other's lock")
    alice, bob = _Actor(cluster, "alice"), _Actor(cluster, "bob")
    ga = alice.acquire("accounts")
    gb = bob.acquire("ledger")
    say(f'   alice holds "accounts" (token {ga.fencing_token}); '
        f'bob holds "ledger" (token {gb.fencing_token}).')  # fmt: skip
    af = alice.start_acquire("ledger")
    status = bob.client.lock_status
    _wait_until(lambda: status("ledger").waiters == ("alice",), "alice waits for ledger")
    say('   alice asks for "ledger" and waits for bob.')
    try:
        bg = bob.acquire("accounts")
    except DeadlockError as exc:
        cycle = exc.cycle
    else:
        bob.release(bg)
        raise DemoFailed("bob's request closing the cycle was granted, not refused")
    _check(cycle == ["bob", "alice"], f"unexpected cycle {cycle}")
    say('   bob asks for "accounts": deadlock detected, refused at once with DeadlockError,')
    say(
        f"   cycle {' -> '.join([*cycle, cycle[0]])} (bob would wait for alice, who waits for bob)."
    )
    say("   Every replica decides this the same way, from the replicated wait-for graph.")
    st = status("ledger")
    _check(st.holders == ("bob",) and st.waiters == ("alice",), f"state changed: {st}")
    bob.release(gb)
    gl = alice.granted(af)
    say(
        f'   bob backs off and releases "ledger"; alice gets it (token {gl.fencing_token}) '
        "and finishes."
    )
    alice.release(gl)
    alice.release(ga)
    alice.close()
    bob.close()
    say("")
    return cycle


def _scene_failover(
    cluster: LocalCluster, say: Callable[[str], None]
) -> tuple[str, str, list[int]]:
    say('3. The leader is killed while carol holds "orders" and dave and erin wait')
    carol, dave, erin = (_Actor(cluster, n) for n in ("carol", "dave", "erin"))
    gc = carol.acquire("orders")
    df = dave.start_acquire("orders")
    status = carol.client.lock_status
    _wait_until(lambda: status("orders").waiters == ("dave",), "dave queued")
    ef = erin.start_acquire("orders")
    _wait_until(lambda: status("orders").waiters == ("dave", "erin"), "erin queued")
    say(
        f'   carol holds "orders" (fencing token {gc.fencing_token}); dave, then erin, wait '
        "in line."
    )
    old = cluster.leader()
    cluster.kill(old)
    t_kill = time.monotonic()
    say(f"   {old}, the leader, is killed with SIGKILL.")
    new = cluster.leader()
    _check(new != old, f"{old} still reported as leader after it was killed")
    st = status("orders")
    took = time.monotonic() - t_kill
    say(
        f"   New leader elected: {new}, {took:.1f} s later. lock_status from it: held by "
        f"{', '.join(st.holders)},"
    )
    say(
        f"   waiting: {', '.join(st.waiters)}. Nobody lost a lock or a place in line: they "
        "live in the"
    )
    say("   replicated log, not in the dead process.")
    _check(st.holders == ("carol",), f"carol lost the lock: holders {st.holders}")
    _check(st.waiters == ("dave", "erin"), f"the queue changed: {st.waiters}")
    carol.release(gc)
    gd = dave.granted(df)
    dave.release(gd)
    ge = erin.granted(ef)
    erin.release(ge)
    tokens = [gc.fencing_token, gd.fencing_token, ge.fencing_token]
    _check(tokens == sorted(set(tokens)), f"fencing tokens did not increase: {tokens}")
    say("   carol releases; dave gets it, then erin. Fencing tokens kept increasing across")
    say(
        f"   the failover: carol {tokens[0]} < dave {tokens[1]} < erin {tokens[2]}, so storage "
        "that refuses"
    )
    say("   older tokens can never be written by a stale holder.")
    for a in (carol, dave, erin):
        a.close()
    say("")
    return old, new, tokens


def run_demo(out: TextIO = sys.stdout) -> None:
    """Play the three scenes on a fresh LocalCluster of 3, printing to ``out``.

    :raises DemoFailed: something shown did not happen as it should.
    :raises DistSyncError: the cluster or a client failed.
    """

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    t0 = time.monotonic()
    say("Starting a 3-node distsync cluster on 127.0.0.1 (3 processes, fsync on,")
    say("temporary data dirs)...")
    with LocalCluster(nodes=3, timeout=WAIT) as cluster:
        leader = cluster.leader()
        nodes = ", ".join(f"{n} {cluster.address(n)}" for n in cluster.node_ids)
        say(f"   nodes: {nodes}")
        say(
            f"   leader: {leader}. Every lock command goes through its Raft log and is fsync'd on a"
        )
        say("   majority of the nodes before it is answered.")
        say("")
        _scene_shared_exclusive(cluster, say)
        cycle = _scene_deadlock(cluster, say)
        old, new, tokens = _scene_failover(cluster, say)
    say(f"Cluster stopped and its data removed ({time.monotonic() - t0:.1f} s). In short:")
    say("   - shared holders coexisted; the exclusive writer was handed the lock after them")
    say(f"   - deadlock detected: cycle {' -> '.join([*cycle, cycle[0]])}, refused at once")
    say(f"   - {old} killed, new leader elected: {new}; no lock or waiter was lost")
    say(f"   - fencing tokens increasing across the failover: {' < '.join(map(str, tokens))}")
    say("Next: take a lock from Python -- see the README's 'Locks from Python'.")


def main() -> int:
    """``distsync demo``: 0 when every scene went as described, 1 otherwise."""
    try:
        run_demo()
    except Exception as exc:  # noqa: BLE001 - any failure becomes one clear line
        # Everything is stopped by now (LocalCluster's exit ran on the way out).
        kind = "" if isinstance(exc, DemoFailed) else f"{type(exc).__name__}: "
        sys.stdout.flush()
        print(f"distsync demo: FAILED: {kind}{exc}", file=sys.stderr, flush=True)
        return 1
    return 0
