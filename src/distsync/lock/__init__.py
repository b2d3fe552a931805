"""The lock service's replicated state: the lock table, its commands and effects.

:class:`LockTable` is the Raft state machine (I/O-free, deterministic);
:mod:`~distsync.lock.commands` defines what the log carries and its encoding;
:mod:`~distsync.lock.effects` what applying returns for the node to answer clients;
:mod:`~distsync.lock.leader` the leader's expiry decisions.

Driving it from a node
----------------------
- **Proposing.** Build the command from the client's request with the leader's time as
  ``now`` (``LeaderClock.now(time.monotonic())``); constructing it validates it, so a bad
  request is answered with ``InvalidRequest`` and never reaches the log. Propose
  ``encode_command(cmd)``.
- **Applying.** For each committed NORMAL entry, ``effects = table.apply_entry(index,
  data)``. Wrapped in :class:`~distsync.raft.SessionTable` for ``(client_id, sequence)``
  deduplication, keep ``[effect_to_wire(e) for e in effects]`` as the result (plain
  data, fit for snapshots).
- **Answering.** An acquire ends with exactly one of Grant, Deadlock, Rejected or
  TimedOut at once, or Queued now and one of Grant, TimedOut or Cancelled in a later
  entry: keep the client's request pending under ``(session_id, request_id)`` and answer
  it from whichever entry carries its final effect -- for a hand-off, the entry of the
  release that caused it, so the waiter hears at once. After a leader change the client
  re-sends the acquire with the same ``request_id``: the table answers Queued again (or
  the Grant it got meanwhile), never a second place in the queue.
- **Leading.** On becoming leader, ``clock, first = on_elected(table, monotonic(),
  election_timeout)`` and propose ``first`` before any expiry; on each tick propose what
  ``ExpiryScheduler.poll(table, clock.now(monotonic()))`` returns. SessionExpired and
  SessionClosed effects tell the node to drop the session's pending requests (and,
  once a client has no session left, its deduplication record).
- **Reading.** ``lock_status`` is ``table.status(resource)`` after a ReadIndex (or on
  the leader with a lease); ``table.sessions()`` lists sessions.
- **Snapshots.** ``table.snapshot()`` is the state machine's part of a Raft snapshot;
  ``LockTable.restore(data)`` rebuilds it (the wait-for graph included).
"""

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
    decode_command,
    encode_command,
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
    effect_from_wire,
    effect_to_wire,
)
from distsync.lock.leader import ExpiryScheduler, LeaderClock, on_elected
from distsync.lock.table import LockStatus, LockTable, SessionInfo

__all__ = [
    "Acquire",
    "Cancel",
    "Cancelled",
    "CloseSession",
    "Command",
    "Deadlock",
    "Effect",
    "ExpireSessions",
    "ExpireWaits",
    "ExpiryScheduler",
    "ExtendSessions",
    "Grant",
    "KeepAlive",
    "LeaderClock",
    "LockStatus",
    "LockTable",
    "Mode",
    "OpenSession",
    "Queued",
    "Rejected",
    "Release",
    "Released",
    "SessionClosed",
    "SessionExpired",
    "SessionInfo",
    "SessionOpened",
    "SessionRenewed",
    "TimedOut",
    "decode_command",
    "effect_from_wire",
    "effect_to_wire",
    "encode_command",
    "on_elected",
]
