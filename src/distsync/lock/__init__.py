"""The lock service's replicated state: the lock table, its commands and effects.

:class:`LockTable` is the Raft state machine (I/O-free, deterministic);
:mod:`~distsync.lock.commands` defines what the log carries and its encoding;
:mod:`~distsync.lock.effects` what applying returns for the node to answer clients;
:mod:`~distsync.lock.leader` the leader's expiry decisions.
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
