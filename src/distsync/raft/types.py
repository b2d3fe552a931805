"""Plain data of the Raft core: entries, messages, hard state, snapshots, the Ready batch.

Every type here is a slotted dataclass: the commit path creates several per proposal, so
they stay small and cheap to build. None of them does I/O; the wire codec (``net/``) and
the storages translate them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "NodeId",
    "MessageType",
    "EntryKind",
    "Role",
    "Entry",
    "ConfState",
    "ConfChangeType",
    "ConfChange",
    "Snapshot",
    "HardState",
    "SoftState",
    "ReadState",
    "Message",
    "Ready",
    "EMPTY_HARD_STATE",
    "CAMPAIGN_TRANSFER",
]

#: A node's identity, e.g. ``"node_0"``: the seed's ``sender_id``/``receiver_id``.
NodeId = str

#: ``Message.context`` of a vote request sent because of ``timeout_now``: voters skip
#: their leader-lease check for it, since the old leader itself asked for the election.
CAMPAIGN_TRANSFER = b"campaign_transfer"


class MessageType(str, enum.Enum):
    """The peer messages of Raft. Values are the wire names (the seed's where they exist)."""

    #: candidate -> voters: vote for me in ``term``; ``index``/``log_term`` = my last entry.
    REQUEST_VOTE = "request_vote"
    #: voter -> candidate: ``reject`` says whether the vote was refused.
    VOTE_RESPONSE = "vote_response"
    #: like REQUEST_VOTE for ``term`` = my term + 1, but nobody changes term or vote for it.
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESPONSE = "pre_vote_response"
    #: leader -> follower: ``entries`` follow (``index``, ``log_term``); ``commit`` = leader's.
    APPEND_ENTRIES = "append_entries"
    #: follower -> leader: accepted up to ``index``, or ``reject`` with a backtracking hint.
    APPEND_RESPONSE = "append_response"
    #: leader -> follower: no entries; carries ``commit`` (capped at the follower's match)
    #: and, for ReadIndex, a ``context`` the follower echoes back.
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESPONSE = "heartbeat_response"
    #: leader -> follower whose next entry was compacted away: ``snapshot`` replaces its log.
    INSTALL_SNAPSHOT = "install_snapshot"
    #: leader -> transfer target: campaign now, skipping pre-vote and the election timeout.
    TIMEOUT_NOW = "timeout_now"
    #: follower -> leader: confirm leadership for a linearizable read with ``context``.
    READ_INDEX = "read_index"
    #: leader -> follower: the read with ``context`` may be served once applied >= ``index``.
    READ_INDEX_RESPONSE = "read_index_response"


class EntryKind(enum.IntEnum):
    """What an entry's ``data`` means to the layer that applies it."""

    NORMAL = 0  #: an application command
    CONFIG = 1  #: a membership change (applied by the core's owner; see ConfState)
    NOOP = 2  #: the empty entry a new leader appends to commit its predecessors' entries


class Role(enum.IntEnum):
    """The role of a node. PRE_CANDIDATE is a follower testing whether it could win."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(slots=True)
class Entry:
    """One log entry. Treated as immutable once created: logs, messages and ready batches
    share the same objects instead of copying them.

    Invariant: ``index >= 1``, ``term >= 1``; within one log, indexes are consecutive and
    terms never decrease.
    """

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(slots=True, frozen=True)
class ConfState:
    """Cluster membership as of some log index. ``voters`` count towards quorums;
    ``learners`` receive the log but never vote or count. The two are disjoint."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


class ConfChangeType(enum.IntEnum):
    """A single-server membership change (thesis §4.1): one node at a time, so any quorum
    of the old configuration overlaps any quorum of the new one."""

    ADD_VOTER = 0  #: add a voter, or promote a learner
    ADD_LEARNER = 1  #: add a learner, or demote a voter
    REMOVE_NODE = 2


@dataclass(slots=True, frozen=True)
class ConfChange:
    """The payload of a CONFIG entry. It takes effect when applied (in log order, on every
    node alike), and the leader allows one unapplied change at a time."""

    type: ConfChangeType
    node_id: NodeId

    def encode(self) -> bytes:
        return b"%d:%s" % (self.type, self.node_id.encode())

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        t, _, node = data.partition(b":")
        return cls(ConfChangeType(int(t)), node.decode())


@dataclass(slots=True, frozen=True)
class Snapshot:
    """The state machine as of entry ``index`` (of ``term``), plus the membership then.

    Invariant: ``index == 0`` means "no snapshot"; otherwise ``term >= 1`` and the
    snapshot covers exactly the entries ``1..index``.
    """

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on stable storage before any message it implies leaves the node.

    ``term`` never decreases; ``vote`` (None: no vote) is fixed once set for a term;
    ``commit`` never decreases and never exceeds the persisted last index.
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth reporting (not persisting): who leads and what this node is."""

    leader: NodeId | None
    role: Role


@dataclass(slots=True, frozen=True)
class ReadState:
    """A confirmed ReadIndex: the read with ``context`` is linearizable once the local
    state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Message:
    """One peer message. Fields a type does not use keep their defaults.

    ``term`` is the sender's term, except for vote requests and pre-vote replies, where it
    is the term being campaigned for. ``index``/``log_term``: for appends, the entry
    preceding ``entries``; for votes, the candidate's last entry; for append_response, the
    last index the follower now matches (accepted) or the probed index (rejected). A
    rejection carries a backtracking hint: ``log_term`` = the follower's term at the probed
    index and ``reject_hint`` = the first index of that term in its log, or, when the
    follower's log is too short, ``log_term`` = 0 and ``reject_hint`` = its last index.
    """

    type: MessageType
    to: NodeId
    sender: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(slots=True)
class Ready:
    """A batch of work the core hands its driver. The driver must do it in this order:

    1. **persist** ``snapshot`` (if any), ``entries`` and ``hard_state`` (if not None) to
       stable storage, fsync'd when ``must_sync``. A vote or an acknowledgement that
       leaves the node before its cause is durable can be contradicted after a crash:
       a node could vote twice in one term, or a leader could count a follower's
       acknowledgement for an entry the follower then forgets, and lose a committed entry.
    2. **send** ``messages``. They may promise what step 1 made durable (votes, appends
       acknowledged), which is why they wait for it.
    3. **apply** ``committed_entries`` to the state machine, in order, and serve the
       ``read_states`` once the applied index reaches theirs. Committed entries may be
       among this batch's ``entries``; step 1 has made them durable locally, so applying
       never gets ahead of the local log.
    4. **advance**: ``core.advance(ready)`` tells the core the batch is done, so it drops
       the persisted entries from its unstable tail and moves its applied index.
       Until then ``ready()`` must not be called again.

    One relaxation (thesis §10.2.1): when ``persist_first`` is False -- a leader whose term
    and vote are already durable -- step 2 may run before or during step 1, so the leader's
    fsync overlaps the followers'. It is safe because the core counts the leader's own
    entries towards commitment only once ``advance`` reports them persisted.

    ``soft_state`` and ``hard_state`` are None when unchanged since the previous batch.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
    persist_first: bool = True
