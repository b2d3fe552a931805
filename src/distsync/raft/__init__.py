"""Raft: an I/O-free protocol core (:class:`RaftCore`), its storage Protocol and the
in-memory reference storage. The asyncio driver and the LMDB storage build on these."""

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
