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
- **Abandoned waits.** A queued acquire is answered on the connection its latest request
  came on. When that connection closes, the leader waits one election timeout for the
  client to re-send the same acquire (same ``client_id``, ``sequence`` and ``request_id``:
  what a client does on reconnecting), which re-attaches the wait, queue place and all, to
  the new connection. If none comes, the leader proposes a ``Cancel`` of the wait, which
  every replica applies like the client's own (a grant that won the race stands: the
  ``Cancel`` is refused). A waiter nobody listens for thus leaves the queue within about
  an election timeout, instead of blocking it until its timeout or its session's expiry
  (ttl), or being granted a lock that nobody would use or release. This is the leader's
  memory of connections, not replicated: waits inherited by a new leader are withdrawn
  only by their clients, their timeouts or their sessions' expiry. A client that comes
  back after the ``Cancel`` is answered that the wait ended, and asks again at the tail
  of the queue (ZooKeeper and etcd keep the place for the whole session instead; they
  also leave a dead waiter in the queue for the whole session ttl).
- **Giving up.** A client that stops waiting on its own (its timeout, a cancelled call)
  cancels the wait -- or releases the lock, if the grant won the race -- before the
  session serves another acquire, so it never holds a lock it was told it did not get.
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
