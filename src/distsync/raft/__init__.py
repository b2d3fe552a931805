"""Raft: an I/O-free protocol core, its storage Protocol and the in-memory storage.

- :mod:`~distsync.raft.core`: :class:`RaftCore` (ticks, messages and proposals in;
  :class:`Ready` batches out): elections with randomized timeouts, pre-vote,
  check-quorum, pipelined and batched replication with flow control, fast backtracking,
  snapshots/InstallSnapshot, ReadIndex, leader transfer, single-server membership
  changes and learners.
- :mod:`~distsync.raft.storage`: the :class:`Storage` Protocol and :class:`MemoryStorage`.
- :mod:`~distsync.raft.dedup`: :class:`SessionTable`, applying a retried
  ``(client_id, sequence)`` command once.
- :mod:`~distsync.raft.types`: messages, entries, hard state, snapshots, Ready.

The asyncio driver and the LMDB storage build on these; :mod:`distsync.testing.sim`
runs clusters of cores on a simulated network.
"""

from distsync.raft.core import Config, NotLeaderError, ProposalDroppedError, RaftCore
from distsync.raft.dedup import SessionTable, StaleSequenceError
from distsync.raft.storage import (
    CompactedError,
    MemoryStorage,
    RaftStorageError,
    SnapshotOutOfDateError,
    Storage,
    UnavailableError,
)
from distsync.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "RaftCore",
    "Config",
    "NotLeaderError",
    "ProposalDroppedError",
    "SessionTable",
    "StaleSequenceError",
    "Storage",
    "MemoryStorage",
    "RaftStorageError",
    "CompactedError",
    "UnavailableError",
    "SnapshotOutOfDateError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MessageType",
    "NodeId",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
]
