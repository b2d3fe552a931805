"""The lock table: the replicated state machine of the lock service (DESIGN §5).

Every replica applies the same committed commands (:mod:`distsync.lock.commands`) in log
order to its own :class:`LockTable`; the table does no I/O and reads no clock, so every
replica ends in the same state and returns the same effects (:mod:`distsync.lock.effects`).
The node answers clients from the effects of the entries it applies.

Rules
-----
* **Modes.** A resource is free, held SHARED by one or more sessions, or held EXCLUSIVE by
  one session. Never two exclusive holders, never exclusive with shared.
* **FIFO.** Waiters queue per resource and are granted strictly in queue order: an acquire
  is granted at once only if nobody queues and it is compatible with the holders. A shared
  request behind a queued exclusive one waits (no writer starvation). When a release (or an
  expiry, a timeout, a cancel) makes the head grantable, the head group is granted *in the
  same entry* -- one exclusive waiter, or the whole run of consecutive shared waiters.
* **Fencing.** A grant's token is the Raft index of the entry that granted it. Indexes
  grow, and each entry runs at most one grant pass per resource, so tokens strictly
  increase per resource from one granting entry to the next; the shared waiters granted
  together by one entry share its token.
* **Owners are sessions.** A lock is held by a ``(client_id, session_id)``; only that pair
  may release it. A session is one thread of control, like a transaction in a database
  lock manager: while it waits for a resource it acquires nothing else (any other acquire
  is refused with ``already_waiting``), so a waiting session really is blocked -- which is
  what makes a wait-for edge mean "cannot move before". Clients that run concurrent
  workers open one session per worker. Session ids are unique cluster-wide.
* **No re-entrancy.** A session asking again for a resource it holds is refused with
  ``already_held`` (whatever the mode: neither upgrade nor downgrade), unless it repeats
  the ``request_id`` of the grant, which is a retry and gets the same grant again. This is
  ZooKeeper's lock recipe (not re-entrant), without etcd's pitfall where a second
  ``Mutex.Lock`` on the same session silently "succeeds" and the first ``Unlock`` frees
  both; and refusing upgrades avoids the classic two-readers-upgrade deadlock. A retried
  acquire that still waits gets its :class:`~distsync.lock.effects.Queued` again.
* **Sessions** live ``ttl`` seconds past their last keepalive, on the *leader's* clock: the
  leader stamps ``now`` into the commands, and the table keeps the highest ``now`` seen
  (:attr:`LockTable.clock`), which never goes back. Expiry is a committed command
  (:class:`~distsync.lock.commands.ExpireSessions`) that the table re-checks against the
  deadlines, so a keepalive committed just before it wins. An expired or closed session's
  wait is cancelled and its locks released (handing them off at once).
* **Timeouts.** An acquire's deadline is ``now + timeout``; an
  :class:`~distsync.lock.commands.ExpireWaits` past it removes the waiter. ``timeout=0``
  is a try-lock: granted now or refused now, never queued.
* **Deadlocks.** The wait-for graph (:class:`~distsync._core.waitgraph.WaitForGraph`,
  nodes are session ids) is part of the state. An acquire that would have to wait and
  whose edges would close a cycle is refused at once with a
  :class:`~distsync.lock.effects.Deadlock` naming the cycle; it is not queued.

Wait-for edges (why the detection is exact for FIFO queues)
-----------------------------------------------------------
Split a resource's queue into *groups* granted together: each exclusive waiter alone, and
each maximal run of consecutive shared waiters. Group ``G1`` (the head) waits for every
holder -- the head is incompatible with the holders, else it would have been granted, and
each holder must release before it can go. Group ``Gk`` (k > 1) waits for every member of
``G(k-1)``: FIFO grants ``G(k-1)`` first, and being incompatible with it (two different
groups are never both shared), ``Gk`` needs all of ``G(k-1)`` to release. So an edge
``w -> v`` always means "w cannot be granted before v releases" (no false positive), and
the transitive closure gives every holder or earlier-group waiter that ``w`` really waits
for (no false negative): a cycle exists exactly when there is a deadlock. Waiters of one
shared run get no edge to each other -- they are granted together, so "c waits for b"
would be false there, and a cycle named through it would name a session that blocks
nobody. The edge count is linear in the queue length (each group points only at the
previous one), so a long chain costs a linear check, not a quadratic graph.

Because a waiting session waits for nothing else (one wait per session), every path out
of a waiter stays inside its resource's queue until it reaches a holder of that resource;
so a cycle exists with these edges exactly when one exists with the plainer rule "every
waiter waits for every holder". The group edges decide the same requests, but name the
cycle through the waiters that really block (``c -> b -> a`` rather than ``c -> a``, when
c queues behind b's exclusive request) and keep the edge count linear where the plain
rule is quadratic (a long queue behind many shared holders).

Only adding a waiter can close a cycle: grants, releases, timeouts and expiries re-point
edges at nodes that were already reachable (when ``G1`` is granted, ``G2``'s targets are the
same sessions, now holders), so the graph stays acyclic and checking new waits suffices.

Determinism: every iteration that decides something is in a fixed order (queue order,
grant order, or sorted by name/deadline); a waiter's out-edges are always exactly its
computed target list, in that order, and the graph's answers depend only on those lists,
so a table restored from :meth:`LockTable.snapshot` decides exactly as the original.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from distsync._core.waitgraph import WaitForGraph
from distsync.errors import InvalidRequest
from distsync.lock.commands import (
    Acquire,
    Cancel,
    CloseSession,
    Command,
    ExpireSessions,
    ExpireWaits,
    ExtendSessions,
    KeepAlive,
    Mode,
    OpenSession,
    Release,
    RequestId,
    decode_command,
)
from distsync.lock.effects import (
    Cancelled,
    Deadlock,
    Effect,
    Grant,
    Queued,
    Rejected,
    Released,
    SessionClosed,
    SessionExpired,
    SessionOpened,
    SessionRenewed,
    TimedOut,
)

__all__ = ["LockTable", "LockStatus", "SessionInfo", "SNAPSHOT_VERSION"]

#: First field of :meth:`LockTable.snapshot`; bumped when the layout changes.
SNAPSHOT_VERSION = 1

_SHARED = Mode.SHARED
_EXCLUSIVE = Mode.EXCLUSIVE


@dataclass(frozen=True, slots=True)
class LockStatus:
    """One resource as the table sees it. ``mode`` is None when free; ``holders`` and
    ``waiters`` are client ids (grant order, queue order), with the sessions alongside;
    ``fencing_token`` is the newest token among the holders (0 when free)."""

    resource: str
    mode: Mode | None
    holders: tuple[str, ...]
    waiters: tuple[str, ...]
    fencing_token: int
    holder_sessions: tuple[str, ...] = ()
    waiter_sessions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One open session: ``held`` resources (sorted) and the resource it waits for."""

    session_id: str
    client_id: str
    ttl: float
    deadline: float
    held: tuple[str, ...]
    waiting: str | None


# ---- internal records: mutable, slotted, never handed out -----------------------------------


class _Hold:
    """One grant: ``session`` holds the resource in ``mode`` since entry ``token``."""

    __slots__ = ("session", "mode", "token", "request_id")

    def __init__(self, session: str, mode: Mode, token: int, request_id: RequestId) -> None:
        self.session = session
        self.mode = mode
        self.token = token
        self.request_id = request_id


class _Wait:
    """One queued acquire. Its session's ``wait`` points back at it, and it is in
    exactly one queue: the one of ``resource``."""

    __slots__ = ("session", "resource", "mode", "request_id", "deadline", "targets")

    def __init__(
        self,
        session: str,
        resource: str,
        mode: Mode,
        request_id: RequestId,
        deadline: float | None,
    ) -> None:
        self.session = session
        self.resource = resource
        self.mode = mode
        self.request_id = request_id
        #: None: waits until granted, cancelled or its session ends.
        self.deadline = deadline
        #: Its out-edges in the wait-for graph, in graph order (kept equal to the graph's).
        self.targets: tuple[str, ...] = ()


class _Session:
    """One open session. Every hold in ``holds`` is also in its resource's holders (and
    the reverse); ``wait``, if any, is in its resource's queue."""

    __slots__ = ("sid", "cid", "ttl", "deadline", "holds", "wait")

    def __init__(self, sid: str, cid: str, ttl: float, deadline: float) -> None:
        self.sid = sid
        self.cid = cid
        self.ttl = ttl
        self.deadline = deadline
        #: resource -> hold. Iterated only sorted, so its order never shows.
        self.holds: dict[str, _Hold] = {}
        #: At most one wait per session (see the module docstring).
        self.wait: _Wait | None = None


class _Resource:
    """A resource with a holder or a waiter; a free one with no waiter is deleted, so
    memory is bounded by the live locks, not by every name ever locked."""

    __slots__ = ("name", "holders", "queue", "dirty")

    def __init__(self, name: str) -> None:
        self.name = name
        #: session -> hold, in grant order. All SHARED, or exactly one EXCLUSIVE.
        self.holders: dict[str, _Hold] = {}
        #: FIFO. Invariant after every apply: the head is incompatible with the holders.
        self.queue: deque[_Wait] = deque()
        #: An upper bound of the queue positions changed since the last rewire (0 when
        #: only the head changed): where :meth:`LockTable._rewire` may stop looking.
        self.dirty = 0


class LockTable:
    """The lock service's replicated state: sessions, holders, FIFO queues, wait-for graph.

    Invariants after every :meth:`apply` (checked by :meth:`check_invariants`):
    a resource's holders are all shared or one exclusive; a resource exists only while it
    has a holder or a waiter; its queue head is incompatible with its holders; a session
    waits for at most one resource and never for one it holds; each waiter's out-edges in
    the wait-for graph are exactly its group targets (module docstring) and the graph has
    no cycle; every hold and wait belongs to an open session.

    :param graph_factory: builds the wait-for graph (tests pass either twin).
    """

    __slots__ = ("_graph_factory", "_graph", "_sessions", "_resources", "_clock", "_applied")

    def __init__(self, graph_factory: Callable[[], WaitForGraph] = WaitForGraph) -> None:
        self._graph_factory = graph_factory
        self._graph = graph_factory()
        self._sessions: dict[str, _Session] = {}
        self._resources: dict[str, _Resource] = {}
        #: Highest leader time seen; effective "now" of a command is max(clock, cmd.now).
        self._clock = 0.0
        #: Index of the last entry applied (0: none).
        self._applied = 0

    # ==== applying ===============================================================================

    def apply(self, index: int, cmd: Command) -> list[Effect]:
        """Apply ``cmd``, the command of committed entry ``index``; return its effects.

        Effects about the command's own requester come first, then those of others (the
        hand-offs of released locks), resources in name order. A refused command changes
        nothing but the applied index and returns one :class:`Rejected`.

        :raises ValueError: if ``index`` does not exceed the last applied index (a driver
            bug: entries apply once, in order).
        :raises TypeError: if ``cmd`` is not a lock command.
        """
        # Indexes may skip (no-op and membership entries are not ours) but never repeat:
        # a repeated index would mint a second grant with an existing fencing token.
        if type(index) is not int or index <= self._applied:
            raise ValueError(f"entry index {index!r} must exceed the applied {self._applied}")
        # Exact type, not isinstance: a subclass could behave differently per replica.
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            raise TypeError(f"not a lock command: {type(cmd).__name__}")
        self._applied = index
        return handler(self, index, cmd)

    def apply_entry(self, index: int, data: bytes) -> list[Effect]:
        """Decode and apply one committed entry's data. Undecodable data applies as a
        no-op with one ``Rejected("bad_command")``: a committed entry must not stop the
        replicas (all of them would stop on it, and the log could never move past it)."""
        try:
            cmd = decode_command(data)
        except InvalidRequest as exc:
            if type(index) is not int or index <= self._applied:
                raise ValueError(
                    f"entry index {index!r} must exceed the applied {self._applied}"
                ) from None
            self._applied = index
            return [Rejected("bad_command", str(exc))]
        return self.apply(index, cmd)

    # ---- sessions --------------------------------------------------------------------------

    def _advance(self, now: float) -> float:
        # The replicated clock never goes back: a new leader whose clock lags cannot make
        # a deadline earlier than one already granted.
        if now > self._clock:
            self._clock = now
        return self._clock

    def _owned(
        self,
        sid: str,
        cid: str,
        resource: str | None = None,
        request_id: RequestId | None = None,
    ) -> _Session | Rejected:
        """The session, if it is open and belongs to ``cid``; else the refusal."""
        s = self._sessions.get(sid)
        if s is None:
            return Rejected(
                "no_session",
                f"session {sid!r} is not open (expired, closed or never opened)",
                cid,
                sid,
                resource,
                request_id,
            )
        if s.cid != cid:
            return Rejected(
                "not_owner",
                f"session {sid!r} belongs to another client, not {cid!r}",
                cid,
                sid,
                resource,
                request_id,
            )
        return s

    def _open(self, index: int, c: OpenSession) -> list[Effect]:
        now = self._advance(c.now)
        s = self._sessions.get(c.session_id)
        if s is not None:
            if s.cid != c.client_id:
                return [
                    Rejected(
                        "session_taken",
                        f"session id {c.session_id!r} is in use by another client",
                        c.client_id,
                        c.session_id,
                    )
                ]
            # Reopening is a retry or a renewal: same session, new ttl, later deadline.
            s.ttl = c.ttl
            s.deadline = max(s.deadline, now + c.ttl)
            return [SessionRenewed(s.sid, s.cid, s.deadline)]
        s = _Session(c.session_id, c.client_id, c.ttl, now + c.ttl)
        self._sessions[s.sid] = s
        return [SessionOpened(s.sid, s.cid, s.ttl, s.deadline)]

    def _keepalive(self, index: int, c: KeepAlive) -> list[Effect]:
        s = self._owned(c.session_id, c.client_id)
        if isinstance(s, Rejected):
            return [s]
        now = self._advance(c.now)
        # Never shortens: an old keepalive applied late must not cut a session short.
        s.deadline = max(s.deadline, now + s.ttl)
        return [SessionRenewed(s.sid, s.cid, s.deadline)]

    def _close(self, index: int, c: CloseSession) -> list[Effect]:
        s = self._owned(c.session_id, c.client_id)
        if isinstance(s, Rejected):
            return [s]
        effects: list[Effect] = []
        touched: set[str] = set()
        self._end_session(s, "session_closed", effects, touched)
        effects.append(SessionClosed(s.sid, s.cid))
        self._settle(touched, index, effects)
        return effects

    def _expire_sessions(self, index: int, c: ExpireSessions) -> list[Effect]:
        now = self._advance(c.now)
        # Re-checked here, not trusted from the leader's view: a keepalive committed
        # between the leader's decision and this entry keeps its session alive.
        due = sorted((s.deadline, s.sid) for s in self._sessions.values() if s.deadline <= now)
        effects: list[Effect] = []
        touched: set[str] = set()
        # All expired sessions leave before any hand-off, so a lock never passes to a
        # waiter expiring in the same entry (and one pass per resource keeps tokens
        # strictly increasing).
        for _, sid in due:
            s = self._sessions[sid]
            self._end_session(s, "session_expired", effects, touched)
            effects.append(SessionExpired(s.sid, s.cid))
        self._settle(touched, index, effects)
        return effects

    def _extend_sessions(self, index: int, c: ExtendSessions) -> list[Effect]:
        now = self._advance(c.now)
        # etcd's lessor on promotion: the new leader cannot know which keepalives reached
        # the old one, so every session gets a full ttl from now, plus one election timeout.
        for s in self._sessions.values():
            s.deadline = max(s.deadline, now + s.ttl) + c.by
        return []

    def _end_session(
        self, s: _Session, reason: str, effects: list[Effect], touched: set[str]
    ) -> None:
        """Remove ``s`` with its wait and holds; hand-offs are left to :meth:`_settle`."""
        w = s.wait
        if w is not None:
            self._drop_wait(w, s)
            touched.add(w.resource)
            effects.append(Cancelled(w.resource, s.cid, s.sid, w.request_id, reason))
        # Sorted: the holds' insertion order is history, which a restored table lacks.
        for name in sorted(s.holds):
            h = s.holds[name]
            del self._resources[name].holders[s.sid]
            touched.add(name)
            effects.append(Released(name, s.cid, s.sid, h.token, reason))
        s.holds.clear()
        del self._sessions[s.sid]

    # ---- locks -------------------------------------------------------------------------------

    def _acquire(self, index: int, c: Acquire) -> list[Effect]:
        sid, name, rid = c.session_id, c.resource, c.request_id
        s = self._owned(sid, c.client_id, name, rid)
        if isinstance(s, Rejected):
            return [s]
        now = self._advance(c.now)
        # Re-entrancy (module docstring): the same request again is a retry and gets the
        # same answer; anything else on a held resource is refused, never stacked.
        h = s.holds.get(name)
        if h is not None:
            if h.request_id == rid and h.mode is c.mode:
                # A retry of the acquire that got this grant: the same answer again.
                return [Grant(name, s.cid, sid, h.mode, h.token, rid)]
            return [
                Rejected(
                    "already_held",
                    f"session {sid!r} already holds {name!r} ({h.mode.value}, token "
                    f"{h.token}); locks are not re-entrant and not upgraded: release first",
                    s.cid,
                    sid,
                    name,
                    rid,
                )
            ]
        # A waiting session is blocked: one more request from it is either the retry of
        # its wait or a second thread of control sharing the session, which would make
        # its wait-for edges lie (it could release while "waiting").
        w = s.wait
        if w is not None:
            if w.resource == name and w.request_id == rid and w.mode is c.mode:
                res = self._resources[name]
                return [Queued(name, s.cid, sid, w.mode, rid, res.queue.index(w))]
            return [
                Rejected(
                    "already_waiting",
                    f"session {sid!r} already waits for {w.resource!r}; a session waits "
                    "for one lock at a time (open one session per concurrent worker)",
                    s.cid,
                    sid,
                    name,
                    rid,
                )
            ]
        # A new resource is free, so it is granted below and never left empty.
        res = self._resources.get(name) or self._new_resource(name)
        # FIFO: even a compatible request waits if anybody queues (no writer starvation).
        if not res.queue and _compatible(res, c.mode):
            return [self._grant(res, s, c.mode, index, rid)]
        if c.timeout == 0.0:
            # Try-lock: refused now, never queued (so it cannot deadlock either).
            return [TimedOut(name, s.cid, sid, rid)]
        # It must wait. Only new edges can close a cycle, and only through this waiter:
        # check exactly the edges it would get, before anything changes, so a refusal
        # leaves the table as it was.
        targets = self._tail_targets(res, c.mode)
        cycle = self._graph.would_close_cycle(sid, targets)
        if cycle is not None:
            sessions = tuple(str(n) for n in cycle)
            clients = tuple(self._client_of(n) for n in sessions)
            return [Deadlock(name, s.cid, sid, rid, clients, sessions)]
        deadline = None if c.timeout is None else now + c.timeout
        w = _Wait(sid, name, c.mode, rid, deadline)
        res.queue.append(w)
        s.wait = w
        # The same targets _rewire would compute for a tail waiter, so no rewire needed.
        self._graph.add_wait(sid, targets)
        w.targets = targets
        return [Queued(name, s.cid, sid, c.mode, rid, len(res.queue) - 1)]

    def _release(self, index: int, c: Release) -> list[Effect]:
        sid, name = c.session_id, c.resource
        s = self._owned(sid, c.client_id, name)
        if isinstance(s, Rejected):
            return [s]
        h = s.holds.get(name)
        if h is None:
            why = (
                "it is still waiting for it (cancel the acquire instead)"
                if s.wait is not None and s.wait.resource == name
                else "it does not hold it"
            )
            return [
                Rejected(
                    "not_holder",
                    f"session {sid!r} cannot release {name!r}: {why}",
                    s.cid,
                    sid,
                    name,
                )
            ]
        if c.token is not None and c.token != h.token:
            # A release of an older grant (say, retried after a re-acquire) must not
            # free the newer one.
            return [
                Rejected(
                    "stale_token",
                    f"release of {name!r} names token {c.token}, but the grant is {h.token}",
                    s.cid,
                    sid,
                    name,
                )
            ]
        del s.holds[name]
        del self._resources[name].holders[sid]
        effects: list[Effect] = [Released(name, s.cid, sid, h.token, "release")]
        # The hand-off happens in this same entry: the next group's grants carry this
        # entry's index and the node answers those waiters as soon as it applies it.
        self._settle((name,), index, effects)
        return effects

    def _cancel(self, index: int, c: Cancel) -> list[Effect]:
        sid, name, rid = c.session_id, c.resource, c.request_id
        s = self._owned(sid, c.client_id, name, rid)
        if isinstance(s, Rejected):
            return [s]
        w = s.wait
        if w is None or w.resource != name or w.request_id != rid:
            # Typically the grant won the race: the client must release instead.
            held = name in s.holds
            return [
                Rejected(
                    "not_waiting",
                    f"session {sid!r} has no waiting acquire {rid!r} on {name!r}"
                    + (" (it holds the lock: release it)" if held else ""),
                    s.cid,
                    sid,
                    name,
                    rid,
                )
            ]
        self._drop_wait(w, s)
        effects: list[Effect] = [Cancelled(name, s.cid, sid, rid, "cancelled")]
        # The cancelled waiter may have blocked compatible ones behind it.
        self._settle((name,), index, effects)
        return effects

    def _expire_waits(self, index: int, c: ExpireWaits) -> list[Effect]:
        now = self._advance(c.now)
        due = sorted(
            (s.wait.deadline, s.sid)
            for s in self._sessions.values()
            if s.wait is not None and s.wait.deadline is not None and s.wait.deadline <= now
        )
        effects: list[Effect] = []
        touched: set[str] = set()
        for _, sid in due:
            s = self._sessions[sid]
            w = s.wait
            assert w is not None
            self._drop_wait(w, s)
            touched.add(w.resource)
            effects.append(TimedOut(w.resource, s.cid, sid, w.request_id))
        self._settle(touched, index, effects)
        return effects

    # ---- the mechanics shared by the commands -----------------------------------------------

    def _new_resource(self, name: str) -> _Resource:
        res = self._resources[name] = _Resource(name)
        return res

    def _client_of(self, sid: str) -> str:
        s = self._sessions.get(sid)
        return s.cid if s is not None else sid

    def _grant(self, res: _Resource, s: _Session, mode: Mode, token: int, rid: RequestId) -> Grant:
        # Callers have checked compatibility; the hold is recorded on both sides.
        h = _Hold(s.sid, mode, token, rid)
        res.holders[s.sid] = h
        s.holds[res.name] = h
        return Grant(res.name, s.cid, s.sid, mode, token, rid)

    def _drop_wait(self, w: _Wait, s: _Session) -> None:
        """Take ``w`` out of its queue and the graph (its resource is re-settled later)."""
        # O(queue) removal; queues are short and cancels rare next to grants.
        res = self._resources[w.resource]
        i = res.queue.index(w)
        del res.queue[i]
        # Later removals only shift positions down, so the max stays an upper bound.
        if i > res.dirty:
            res.dirty = i
        s.wait = None
        self._graph.remove_waiter(s.sid)
        w.targets = ()

    def _settle(self, touched: Iterable[str], index: int, effects: list[Effect]) -> None:
        """After holders or queues changed: grant what FIFO now allows, re-point the
        waiters' edges, drop resources left empty. Resources in name order, so the
        effects' order is the same on every replica."""
        for name in sorted(touched):
            res = self._resources[name]
            q = res.queue
            # One pass grants at most one group: an exclusive head, or a shared run
            # (after which the next waiter, exclusive, is incompatible).
            while q and _compatible(res, q[0].mode):
                # The head only: FIFO never grants past a waiter that must still wait.
                w = q.popleft()
                s = self._sessions[w.session]
                s.wait = None
                self._graph.remove_waiter(s.sid)
                w.targets = ()
                effects.append(self._grant(res, s, w.mode, index, w.request_id))
            if q:
                # Holders and the head may have changed: targets follow (never a cycle,
                # module docstring: they only point at nodes reachable before).
                self._rewire(res, res.dirty)
                res.dirty = 0
            elif not res.holders:
                del self._resources[name]  # free and unwanted: forget it

    def _rewire(self, res: _Resource, changed_upto: int) -> None:
        """Make each waiter's out-edges its group targets (module docstring): the holders
        for the head group, the previous group's members for the others.

        Only groups up to position ``changed_upto`` (an upper bound of where the queue
        changed) and the group right after can have new targets: a group that starts
        past it with unchanged targets has unchanged members too, so every later group
        is unchanged. A hand-off thus rewires the first two groups, not the whole queue.
        """
        graph = self._graph
        targets: tuple[str, ...] = tuple(res.holders)
        group: list[str] = []
        shared_run = False
        start = 0
        changed = False
        for i, w in enumerate(res.queue):
            if not (shared_run and w.mode is _SHARED):
                # A new group starts: it waits for the whole group before it.
                if group:
                    if start > changed_upto and not changed:
                        return
                    targets = tuple(group)
                    group = []
                    start = i
                    changed = False
                shared_run = w.mode is _SHARED
            group.append(w.session)
            if w.targets != targets:
                graph.remove_waiter(w.session)
                graph.add_wait(w.session, targets)
                w.targets = targets
                changed = True

    def _tail_targets(self, res: _Resource, mode: Mode) -> tuple[str, ...]:
        """The targets a new waiter in ``mode`` would get at the tail of ``res``."""
        q = res.queue
        if not q:
            return tuple(res.holders)
        last = q[-1]
        # Must match _group_targets for the waiter once appended, or the checked edges
        # would not be the edges added.
        if mode is _SHARED and last.mode is _SHARED:
            return last.targets  # it joins the last shared run
        if last.mode is _EXCLUSIVE:
            return (last.session,)
        # The last group is a shared run: collect it, back to its first member.
        run: list[str] = []
        for w in reversed(q):
            if w.mode is not _SHARED:
                break
            run.append(w.session)
        run.reverse()
        return tuple(run)

    # ==== queries ================================================================================

    @property
    def applied_index(self) -> int:
        """Index of the last entry applied (0: none)."""
        return self._applied

    @property
    def clock(self) -> float:
        """The highest leader time any applied command carried (seconds)."""
        return self._clock

    def status(self, resource: str) -> LockStatus:
        """The holders and waiters of ``resource`` (a free one is simply free)."""
        res = self._resources.get(resource)
        if res is None:
            return LockStatus(resource, None, (), (), 0)
        holds = list(res.holders.values())
        # A resource with only waiters cannot exist after an apply, but stay total.
        mode = holds[0].mode if holds else None
        cid = self._client_of
        return LockStatus(
            resource,
            mode,
            tuple(cid(h.session) for h in holds),
            tuple(cid(w.session) for w in res.queue),
            max((h.token for h in holds), default=0),
            tuple(h.session for h in holds),
            tuple(w.session for w in res.queue),
        )

    def resources(self) -> list[str]:
        """Names of the resources held or waited for, sorted."""
        return sorted(self._resources)

    def session(self, session_id: str) -> SessionInfo | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        w = s.wait
        return SessionInfo(
            s.sid, s.cid, s.ttl, s.deadline, tuple(sorted(s.holds)), w.resource if w else None
        )

    def hold(self, session_id: str, resource: str) -> Grant | None:
        """The grant by which ``session_id`` holds ``resource`` now (None: it does not):
        what a node answers an acquire retried after its grant was applied."""
        s = self._sessions.get(session_id)
        h = s.holds.get(resource) if s is not None else None
        if s is None or h is None:
            return None
        return Grant(resource, s.cid, s.sid, h.mode, h.token, h.request_id)

    def sessions(self) -> list[SessionInfo]:
        """Every open session, by session id."""
        return [self.session(sid) for sid in sorted(self._sessions)]  # type: ignore[misc]

    def next_session_deadline(self) -> float | None:
        """The earliest session deadline (None: no session). The leader's cue to expire."""
        return min((s.deadline for s in self._sessions.values()), default=None)

    def next_wait_deadline(self) -> float | None:
        """The earliest acquire deadline among the waiters (None: none has one)."""
        return min(
            (
                s.wait.deadline
                for s in self._sessions.values()
                if s.wait is not None and s.wait.deadline is not None
            ),
            default=None,
        )

    def waits_for(self, session_id: str) -> list[str]:
        """The sessions ``session_id`` waits for (its wait-for graph out-edges)."""
        return [str(n) for n in self._graph.waits_of(session_id)]

    # ==== snapshots ===============================================================================

    def _dump(self) -> list[Any]:
        # Canonical: sessions and resources sorted by name; holders in grant order and
        # queues in FIFO order, the only orders that decide anything.
        sessions = [
            [s.sid, s.cid, s.ttl, s.deadline] for s in sorted(self._sessions.values(), key=_sid)
        ]
        resources = []
        for name in sorted(self._resources):
            res = self._resources[name]
            holders = [[h.session, h.mode is _EXCLUSIVE, h.token, h.request_id] for h in
                       res.holders.values()]  # fmt: skip
            queue = [[w.session, w.mode is _EXCLUSIVE, w.request_id, w.deadline] for w in
                     res.queue]  # fmt: skip
            resources.append([name, holders, queue])
        return [SNAPSHOT_VERSION, self._applied, self._clock, sessions, resources]

    def snapshot(self) -> bytes:
        """The whole table as bytes (for a Raft snapshot). Equal tables give equal bytes.
        The wait-for graph is not stored: it is a function of the queues and holders."""
        out: bytes = msgpack.packb(self._dump(), use_bin_type=True)
        return out

    @classmethod
    def restore(
        cls, data: bytes, graph_factory: Callable[[], WaitForGraph] = WaitForGraph
    ) -> LockTable:
        """A table equal to the one that produced ``data`` with :meth:`snapshot`: same
        state, same graph edges in the same order, hence the same future decisions.

        :raises ValueError: if ``data`` is not a lock table snapshot of a known version.
        """
        try:
            obj = msgpack.unpackb(data, raw=False, use_list=True)
            version, applied, clock, sessions, resources = obj
        except Exception as exc:
            raise ValueError(f"not a lock table snapshot: {exc}") from None
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"unknown lock table snapshot version {version!r}")
        try:
            return cls._rebuild(graph_factory, applied, clock, sessions, resources)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"damaged lock table snapshot: {exc!r}") from None

    @classmethod
    def _rebuild(
        cls,
        graph_factory: Callable[[], WaitForGraph],
        applied: Any,
        clock: Any,
        sessions: Any,
        resources: Any,
    ) -> LockTable:
        t = cls(graph_factory)
        # Holds and waits are linked to their sessions as they are read, so a reference
        # to a session that is not in the snapshot is a KeyError: "damaged".
        t._applied = int(applied)
        t._clock = float(clock)
        for sid, cid, ttl, deadline in sessions:
            t._sessions[sid] = _Session(sid, cid, float(ttl), float(deadline))
        for name, holders, queue in resources:
            res = t._resources[name] = _Resource(name)
            for sid, excl, token, rid in holders:
                h = _Hold(sid, _EXCLUSIVE if excl else _SHARED, token, rid)
                res.holders[sid] = h
                t._sessions[sid].holds[name] = h
            for sid, excl, rid, deadline in queue:
                w = _Wait(sid, name, _EXCLUSIVE if excl else _SHARED, rid, deadline)
                res.queue.append(w)
                t._sessions[sid].wait = w
            # Edges in a fixed order (resources by name, queue order), each waiter's list
            # exactly as the live table had it: the graph answers only from those lists.
            t._rewire(res, len(res.queue))
        return t

    def __eq__(self, other: object) -> bool:
        """Same state, same wait-for edges (in order)."""
        if not isinstance(other, LockTable):
            return NotImplemented
        return self._dump() == other._dump() and self._edges() == other._edges()

    __hash__ = None  # type: ignore[assignment]

    def _edges(self) -> list[tuple[str, list[Any]]]:
        return [(sid, self._graph.waits_of(sid)) for sid in sorted(self._sessions)]

    def __repr__(self) -> str:
        return (
            f"<LockTable applied={self._applied} sessions={len(self._sessions)} "
            f"resources={len(self._resources)}>"
        )

    # ==== self-check (tests, simulation) =============================================================

    def check_invariants(self) -> None:
        """Raise AssertionError naming the first broken invariant (see the class docs)."""
        seen_waits: set[str] = set()
        for name, res in self._resources.items():
            assert res.holders or res.queue, f"{name}: empty resource kept"
            modes = [h.mode for h in res.holders.values()]
            if _EXCLUSIVE in modes:
                assert len(modes) == 1, f"{name}: exclusive with other holders {modes}"
            if res.queue:
                assert not _compatible(res, res.queue[0].mode), f"{name}: grantable head waits"
            for sid, h in res.holders.items():
                s = self._sessions.get(sid)
                assert s is not None and s.holds.get(name) is h, f"{name}: orphan hold {sid}"
            for w in res.queue:
                s = self._sessions.get(w.session)
                assert s is not None and s.wait is w, f"{name}: orphan wait {w.session}"
                assert name not in s.holds, f"{name}: {w.session} waits for what it holds"
                assert w.session not in seen_waits, f"{w.session} waits twice"
                seen_waits.add(w.session)
            for w, exp in zip(res.queue, _group_targets(res), strict=True):
                assert w.targets == exp, f"{name}: {w.session} targets {w.targets} != {exp}"
                got = tuple(str(n) for n in self._graph.waits_of(w.session))
                assert got == exp, f"{name}: graph edges of {w.session} {got} != {exp}"
        for sid, s in self._sessions.items():
            for name, h in s.holds.items():
                assert self._resources[name].holders.get(sid) is h, f"{sid}: lost hold {name}"
            if s.wait is None:
                assert not self._graph.waits_of(sid), f"{sid}: edges without a wait"
        waiting = {str(n) for n, _ in self._graph.edges()}
        assert waiting <= seen_waits, f"graph has waiters {waiting - seen_waits} with no wait"
        holders = {str(h) for _, h in self._graph.edges()}
        assert holders <= set(self._sessions), f"edges into closed sessions {holders}"
        assert not self._graph.find_cycles(), f"wait-for cycle {self._graph.find_cycles()}"


def _sid(s: _Session) -> str:
    return s.sid


def _group_targets(res: _Resource) -> list[tuple[str, ...]]:
    """Each waiter's targets, in queue order: a new group (an exclusive waiter, or the
    first of a shared run) waits for the whole group before it -- the holders, for the
    head group; a shared waiter continuing a run shares the run's targets."""
    out: list[tuple[str, ...]] = []
    targets: tuple[str, ...] = tuple(res.holders)
    group: list[str] = []
    shared_run = False
    for w in res.queue:
        if not (shared_run and w.mode is _SHARED):
            if group:
                targets = tuple(group)
                group = []
            shared_run = w.mode is _SHARED
        group.append(w.session)
        out.append(targets)
    return out


def _compatible(res: _Resource, mode: Mode) -> bool:
    """Whether a request in ``mode`` may join the current holders of ``res``."""
    if not res.holders:
        return True
    if mode is _EXCLUSIVE:
        return False
    # Holders are all shared or one exclusive, so the first tells the mode.
    return next(iter(res.holders.values())).mode is _SHARED


_HANDLERS: dict[type, Callable[[LockTable, int, Any], list[Effect]]] = {
    OpenSession: LockTable._open,
    KeepAlive: LockTable._keepalive,
    CloseSession: LockTable._close,
    Acquire: LockTable._acquire,
    Release: LockTable._release,
    Cancel: LockTable._cancel,
    ExpireSessions: LockTable._expire_sessions,
    ExpireWaits: LockTable._expire_waits,
    ExtendSessions: LockTable._extend_sessions,
}
