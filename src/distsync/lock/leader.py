"""Leader-side timekeeping of the lock service: when to propose expiry, and on what clock.

Replicas never read a clock (DESIGN §2); the leader does, and writes what it decided into
the log. This module is that decision as pure functions of ``(table, now)``: the node
calls them on each tick with its monotonic clock and proposes the commands they return.

Clock. The table keeps the highest time any applied command carried
(:attr:`LockTable.clock <distsync.lock.table.LockTable.clock>`). Monotonic clocks of two
hosts share no epoch, so a new leader does not use its own raw: :class:`LeaderClock`
offsets it to continue from the table's clock at the moment it took over. Time during the
election is not counted -- sessions only gain by it -- and :func:`on_elected` then gives
every session a full ttl plus one election timeout (etcd's lessor on promotion), because
keepalives the old leader received may never have been committed. The extension is
proposed first, so in log order it precedes any expiry this leader proposes: even an
expiry decided before the extension was applied finds the extended deadlines.
"""

from __future__ import annotations

from distsync.lock.commands import ExpireSessions, ExpireWaits, ExtendSessions
from distsync.lock.table import LockTable

__all__ = ["LeaderClock", "ExpiryScheduler", "on_elected"]


class LeaderClock:
    """The leader's local clock, shifted to continue the table's replicated clock.

    Invariant: ``now(local)`` never returns less than the table clock at takeover, and
    grows exactly as the local monotonic clock does.
    """

    __slots__ = ("offset",)

    def __init__(self, table_clock: float, local_now: float) -> None:
        self.offset = table_clock - local_now

    def now(self, local_now: float) -> float:
        return local_now + self.offset


def on_elected(
    table: LockTable, local_now: float, election_timeout: float
) -> tuple[LeaderClock, ExtendSessions]:
    """What a node does on becoming leader: its clock, and the first command to propose.

    :param table: the leader's table (applied up to what it knows).
    :param local_now: the leader's monotonic clock (s).
    :param election_timeout: the extension every session gets (s).
    """
    clock = LeaderClock(table.clock, local_now)
    return clock, ExtendSessions(clock.now(local_now), election_timeout)


class ExpiryScheduler:
    """Decides, on each tick, whether to propose :class:`ExpireSessions` or
    :class:`ExpireWaits`.

    A command is due when the table holds a deadline ``<= now``. Until it is applied the
    deadline stays in the table, so the same kind is proposed again only after ``retry``
    seconds (the proposal may have been lost with a leader change): one proposal per due
    batch, not one per tick. The table re-checks every deadline when applying, so a
    duplicate or early proposal is harmless -- only late ones cost, in lock availability.

    :param retry: seconds before proposing the same kind of expiry again.
    """

    __slots__ = ("retry", "_sessions_at", "_waits_at")

    def __init__(self, retry: float = 0.5) -> None:
        if retry <= 0:
            raise ValueError(f"retry must be > 0, not {retry!r}")
        self.retry = retry
        self._sessions_at: float | None = None
        self._waits_at: float | None = None

    def poll(self, table: LockTable, now: float) -> list[ExpireSessions | ExpireWaits]:
        """The commands to propose at leader time ``now`` (``LeaderClock.now``)."""
        out: list[ExpireSessions | ExpireWaits] = []
        d = table.next_session_deadline()
        if d is not None and d <= now and self._may(self._sessions_at, now):
            self._sessions_at = now
            out.append(ExpireSessions(now))
        d = table.next_wait_deadline()
        if d is not None and d <= now and self._may(self._waits_at, now):
            self._waits_at = now
            out.append(ExpireWaits(now))
        return out

    def _may(self, last: float | None, now: float) -> bool:
        return last is None or now - last >= self.retry or now < last

    def next_wakeup(self, table: LockTable) -> float | None:
        """The earliest leader time at which :meth:`poll` may return something."""
        ds = [
            d for d in (table.next_session_deadline(), table.next_wait_deadline()) if d is not None
        ]
        return min(ds, default=None)
