"""The Raft protocol core: a state machine with no I/O, no clock and no threads.

Inputs: :meth:`RaftCore.tick` (one unit of logical time), :meth:`RaftCore.step` (a peer
message), :meth:`RaftCore.propose`, :meth:`RaftCore.read_index`,
:meth:`RaftCore.transfer_leader`. Output: :meth:`RaftCore.ready` batches (entries and
hard state to persist, messages to send, committed entries and read states), handed back
through :meth:`RaftCore.advance`. The order a driver must follow is on
:class:`~distsync.raft.types.Ready`.

The structure follows etcd-io/raft (``raft.go`` + ``rawnode.go`` in one class), the rules
the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm", extended version) and Ongaro's thesis (pre-vote §9.6, check-quorum §6.2,
leader transfer §3.10, ReadIndex §6.4). Comments cite them as "§n".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from distsync.errors import DistSyncError
from distsync.raft.log import RaftLog
from distsync.raft.progress import Progress, ProgressState
from distsync.raft.storage import Storage
from distsync.raft.types import (
    CAMPAIGN_TRANSFER,
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
    SoftState,
)

__all__ = ["Config", "RaftCore", "NotLeaderError", "ProposalDroppedError"]

MT = MessageType


class NotLeaderError(DistSyncError):
    """The request needs the leader and this node is not it. ``leader`` is the node this
    one believes leads (None if it knows of none): retry there."""

    code = "not_leader"

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader; leader is {leader!r}")
        self.leader = leader


class ProposalDroppedError(DistSyncError):
    """The leader refused the proposal for now (a leader transfer is in progress)."""

    code = "proposal_dropped"


@dataclass(slots=True)
class Config:
    """Parameters of one core. Ticks are the driver's unit of time.

    Invariants (checked by :meth:`validate`): ``heartbeat_tick >= 1``,
    ``election_tick > heartbeat_tick``; ``id`` is in ``voters`` or ``learners``, which
    are disjoint. Membership persisted in storage (a snapshot's ConfState) overrides
    ``voters``/``learners``.
    """

    id: NodeId
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    #: A follower campaigns after a random number of ticks in [election_tick, 2*election_tick).
    election_tick: int = 10
    #: A leader sends heartbeats every heartbeat_tick ticks.
    heartbeat_tick: int = 1
    #: Batching: at most this many bytes of entry data per append (at least one entry).
    max_bytes_per_msg: int = 1 << 20
    #: Batching: at most this many entries per append.
    max_entries_per_msg: int = 4096
    #: Flow control: at most this many unanswered appends per follower in REPLICATE.
    max_inflight_msgs: int = 256
    #: §6.2: a leader that has not heard from a quorum for an election timeout steps down,
    #: and a follower that heard from a leader within one ignores vote requests.
    check_quorum: bool = True
    #: §9.6: campaign only after a pre-vote round shows a quorum would vote for us.
    pre_vote: bool = True
    #: The state machine's applied index on restart (entries up to it are not replayed).
    applied: int = 0

    def validate(self) -> None:
        if self.heartbeat_tick < 1:
            raise ValueError("heartbeat_tick must be >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be > heartbeat_tick")
        if set(self.voters) & set(self.learners):
            raise ValueError("a node cannot be both voter and learner")
        if self.max_inflight_msgs < 1 or self.max_entries_per_msg < 1:
            raise ValueError("max_inflight_msgs and max_entries_per_msg must be >= 1")


class _ReadRequest:
    """A pending ReadIndex: confirmed once a quorum acknowledged a heartbeat carrying
    ``context`` sent after the request arrived (§6.4)."""

    __slots__ = ("index", "sender", "context", "acks")

    def __init__(self, index: int, sender: NodeId, context: bytes) -> None:
        self.index = index
        self.sender = sender
        self.context = context
        self.acks: set[NodeId] = set()


class RaftCore:
    """One Raft peer. Not thread-safe; one driver calls it.

    Invariants: ``term`` never decreases; at most one ``vote`` per term and it is
    persisted (through Ready) before the vote is sent; ``lead`` is None or the leader of
    ``term``; in LEADER, ``progress`` holds every voter and learner, this node included.
    """

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        config.validate()
        self.id = config.id
        self.rng = rng
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.max_bytes_per_msg = config.max_bytes_per_msg
        self.max_entries_per_msg = config.max_entries_per_msg
        self.max_inflight = config.max_inflight_msgs
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote

        hs, cs = storage.initial_state()
        # Membership from storage (a snapshot) wins over the static configuration.
        if cs.voters:
            voters, learners = cs.voters, cs.learners
        else:
            voters, learners = config.voters, config.learners
        # A node may start outside the membership: a joining node learns it is a member
        # from the log (or a snapshot). Until then it only follows and never campaigns.
        if not voters:
            raise ValueError("no voters: give Config.voters or a storage with a snapshot")
        self.voters: tuple[NodeId, ...] = tuple(voters)
        self.learners: tuple[NodeId, ...] = tuple(learners)
        self.quorum = len(self.voters) // 2 + 1

        self.log = RaftLog(storage)
        self.term = hs.term
        self.vote: NodeId | None = hs.vote
        self.lead: NodeId | None = None
        self.role = Role.FOLLOWER
        if hs.commit:
            self.log.commit_to(hs.commit)
        if config.applied:
            self.log.applied_to(config.applied)

        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.lead_transferee: NodeId | None = None
        # Leader: index of the last CONFIG entry it proposed; another one may only be
        # proposed once this is applied (one membership change at a time).
        self.pending_conf_index = 0
        # ReadIndex requests waiting for a heartbeat quorum, in arrival order.
        self._reads: dict[bytes, _ReadRequest] = {}
        self._read_queue: list[bytes] = []
        # ReadIndex requests that arrived before this leader committed an entry of its
        # term: its commit index may be stale until then (§6.4 step 1), so they wait.
        self._reads_before_commit: list[Message] = []
        # Proposals since the last Ready: broadcast once per Ready, not once per proposal.
        self._bcast_pending = False
        self._ready_outstanding = False

        self._become_follower(self.term, None)
        self._prev_soft = SoftState(self.lead, self.role)
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)

    # ==== inputs ===============================================================================

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had passed."""
        if self.role != Role.LEADER:
            self._hup(transfer=False)

    def propose(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> int:
        """Append a command to the leader's log; returns its index. It is committed when a
        later Ready lists it among ``committed_entries`` with this node's ``term`` (a new
        leader may overwrite it otherwise). Raises NotLeaderError on a non-leader,
        ProposalDroppedError while a leader transfer is in progress (§3.10)."""
        self._check_proposable()
        index = self._append_entries([Entry(self.term, 0, data, kind)])
        # Many proposals between two Ready batches travel in one append per follower.
        self._bcast_pending = True
        return index

    def propose_many(self, data: list[bytes]) -> int:
        """:meth:`propose` for several commands at once, in order: one append to the log
        instead of one per command. Returns the index of the first (the others follow it
        one by one); raises like :meth:`propose`, before appending any."""
        self._check_proposable()
        if not data:
            raise ValueError("propose_many needs at least one command")
        term, normal = self.term, EntryKind.NORMAL
        last = self._append_entries([Entry(term, 0, d, normal) for d in data])
        self._bcast_pending = True
        return last - len(data) + 1

    def _check_proposable(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDroppedError(f"transferring leadership to {self.lead_transferee!r}")

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point. A later Ready carries a ``ReadState`` with
        this ``context`` (which must be unique among pending reads); the read may be served
        once the state machine has applied its index. Raises NotLeaderError when no
        leader is known; on a follower the request goes to the leader."""
        if self.role == Role.LEADER:
            self._on_read_index(
                Message(MT.READ_INDEX, self.id, self.id, self.term, context=context)
            )
        elif self.lead is not None:
            self._send(Message(MT.READ_INDEX, self.lead, self.id, self.term, context=context))
        else:
            raise NotLeaderError(None)

    def transfer_leader(self, to: NodeId) -> None:
        """§3.10: hand leadership to ``to``. The leader stops taking proposals, brings
        ``to`` up to date, then sends it ``timeout_now``; it gives up after an election
        timeout."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead)
        if to == self.id or self.lead_transferee == to:
            return
        if to not in self.voters:
            raise ValueError(f"cannot transfer leadership to non-voter {to!r}")
        self.lead_transferee = to
        # The transfer must complete within one election timeout, counted from now.
        self.election_elapsed = 0
        if self.progress[to].match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to, self.id, self.term))
        else:
            self._send_append(to)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a single-server membership change; returns its index. It takes effect on
        each node when the driver applies the entry and calls :meth:`apply_conf_change`.
        Raises ProposalDroppedError while a previous change is unapplied, or before this
        leader has committed an entry of its own term: a change proposed earlier could
        overlap one an earlier leader left uncommitted, and two changes in flight at once
        can produce disjoint majorities (the bug Ongaro's thesis errata fixes this way)."""
        self._check_proposable()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError(
                f"membership change at {self.pending_conf_index} not applied yet"
            )
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDroppedError("no entry of this leader's term committed yet")
        index = self._append_entries([Entry(self.term, 0, cc.encode(), EntryKind.CONFIG)])
        self.pending_conf_index = index
        self._bcast_pending = True
        return index

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONFIG entry (the driver calls this while applying it, in log
        order, on every node). Returns the new membership, which the driver records with
        its next snapshot."""
        voters, learners = list(self.voters), list(self.learners)
        nid = cc.node_id
        if cc.type == ConfChangeType.ADD_VOTER:
            if nid in learners:
                learners.remove(nid)
            if nid not in voters:
                voters.append(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if nid in voters and len(voters) > 1:
                voters.remove(nid)
            if nid not in voters and nid not in learners:
                learners.append(nid)
        elif nid in voters and len(voters) > 1:
            # Removing the last voter would leave nobody to commit anything: ignored (on
            # every node alike, so the replicas stay identical).
            voters.remove(nid)
        elif nid in learners:
            learners.remove(nid)
        self.voters, self.learners = tuple(voters), tuple(learners)
        self.quorum = len(self.voters) // 2 + 1
        if self.role == Role.LEADER:
            if self.id not in self.voters:
                # Removed (or demoted): stop leading; the remaining voters elect a leader.
                self._become_follower(self.term, None)
            else:
                nxt = self.log.last_index() + 1
                for p in self.voters + self.learners:
                    if p not in self.progress:
                        self.progress[p] = Progress(nxt, self.max_inflight)
                for p in list(self.progress):
                    if p not in self.voters and p not in self.learners:
                        del self.progress[p]
                    else:
                        self.progress[p].is_learner = p in self.learners
                if self.lead_transferee is not None and self.lead_transferee not in self.voters:
                    self.lead_transferee = None
                # A smaller quorum may commit more right away.
                if self._maybe_commit():
                    self._bcast_append()
        return self.conf_state()

    def conf_state(self) -> ConfState:
        """The membership as of the last applied CONFIG entry (or snapshot)."""
        return ConfState(self.voters, self.learners)

    def step(self, m: Message) -> None:
        """Handle one peer message."""
        # ---- term checks, common to every role (§5.1) ----
        if m.term > self.term:
            if m.type is MT.REQUEST_VOTE or m.type is MT.PRE_VOTE:
                # §6.2 (check-quorum) lease: if we heard from a live leader less than an
                # election timeout ago, a vote request is from a node that cannot see it;
                # ignore it rather than let it depose a healthy leader. timeout_now
                # elections are exempt: the leader itself asked for them.
                in_lease = (
                    self.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    return
            if m.type is MT.PRE_VOTE:
                pass  # a pre-vote never changes our term (§9.6): that is its point
            elif m.type is MT.PRE_VOTE_RESPONSE and not m.reject:
                pass  # a granted pre-vote carries the future term; we move to it on winning
            elif m.type in (MT.APPEND_ENTRIES, MT.HEARTBEAT, MT.INSTALL_SNAPSHOT):
                self._become_follower(m.term, m.sender)
            else:
                # §5.2 resets the election timer only on hearing from the leader or granting
                # a vote; stepping down for a higher-term vote request must not reset it.
                # Otherwise nodes with stale logs (which lose every election) that time out
                # sooner keep the up-to-date ones from ever campaigning: a livelock.
                elapsed = self.election_elapsed
                self._become_follower(m.term, None)
                if m.type is MT.REQUEST_VOTE:
                    self.election_elapsed = elapsed
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.APPEND_ENTRIES, MT.HEARTBEAT):
                # A stale leader (e.g. one that was partitioned) would otherwise never learn
                # our term: with pre-vote or check-quorum, our term may have grown while it
                # could not reach us, and dropping its messages would leave it leading
                # forever in its minority. Answer so it steps down.
                self._send(Message(MT.APPEND_RESPONSE, m.sender, self.id, self.term))
            elif m.type is MT.PRE_VOTE:
                # Reject explicitly with our term so the pre-candidate learns it.
                self._send(Message(MT.PRE_VOTE_RESPONSE, m.sender, self.id, self.term, reject=True))
            # Anything else from an old term is obsolete.
            return

        t = m.type
        if t is MT.REQUEST_VOTE or t is MT.PRE_VOTE:
            self._on_request_vote(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # ==== Ready / advance ========================================================================

    def has_ready(self) -> bool:
        """Whether :meth:`ready` would return any work."""
        if self._bcast_pending:
            self._bcast_pending = False
            self._bcast_append()
        if self.msgs or self.read_states:
            return True
        if self.log.unstable.entries or self.log.unstable.snapshot is not None:
            return True
        if self.log.has_next_committed_entries():
            return True
        if self.lead != self._prev_soft.leader or self.role != self._prev_soft.role:
            return True
        hs = self._prev_hard
        return self.term != hs.term or self.vote != hs.vote or self.log.committed != hs.commit

    def ready(self) -> Ready:
        """Cut the next batch of work; see :class:`~distsync.raft.types.Ready` for what to
        do with it. Must be followed by :meth:`advance` before the next call."""
        if self._ready_outstanding:
            raise RuntimeError("ready() called again before advance()")
        if self._bcast_pending:
            self._bcast_pending = False
            self._bcast_append()
        log = self.log
        rd = Ready(
            entries=list(log.unstable.entries),
            snapshot=log.unstable.snapshot,
            committed_entries=log.next_committed_entries(),
            messages=self.msgs,
            read_states=self.read_states,
        )
        self.msgs = []
        self.read_states = []
        if self.lead != self._prev_soft.leader or self.role != self._prev_soft.role:
            rd.soft_state = self._prev_soft = SoftState(self.lead, self.role)
        prev = self._prev_hard
        if self.term != prev.term or self.vote != prev.vote or log.committed != prev.commit:
            rd.hard_state = self._prev_hard = HardState(self.term, self.vote, log.committed)
        # A leader whose term and vote are already durable may send before persisting:
        # its appends promise nothing about its own disk (it counts itself on advance).
        rd.persist_first = not (
            self.role == Role.LEADER
            and rd.snapshot is None
            and (
                rd.hard_state is None
                or (rd.hard_state.term, rd.hard_state.vote) == (prev.term, prev.vote)
            )
        )
        # A changed term or vote, or new entries, must be durable before the messages
        # that depend on them leave; a commit index alone may be lost (it is re-learnt).
        rd.must_sync = (
            bool(rd.entries)
            or rd.snapshot is not None
            or (
                rd.hard_state is not None
                and (rd.hard_state.term != prev.term or rd.hard_state.vote != prev.vote)
            )
        )
        self._ready_outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        self._ready_outstanding = False
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            own = self.progress.get(self.id) if self.role == Role.LEADER else None
            # Now durable here: our copy joins the count, which may commit (at once, in a
            # single-voter cluster); the next Ready carries the result.
            if own is not None and own.maybe_update(self.log.unstable.offset - 1):
                if self._maybe_commit():
                    self._bcast_append()
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.index)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        elif rd.snapshot is not None and rd.snapshot.index > self.log.applied:
            # The snapshot is the state machine up to its index: that counts as applied.
            self.log.applied_to(rd.snapshot.index)

    def report_snapshot(self, to: NodeId, ok: bool) -> None:
        """The driver tells the leader whether sending a snapshot to ``to`` worked. On
        failure, probing resumes at once instead of after the retry delay."""
        pr = self.progress.get(to) if self.role == Role.LEADER else None
        if pr is not None and pr.state == ProgressState.SNAPSHOT and not ok:
            pr.pending_snapshot = 0
            pr.become_probe()

    # ==== state read-outs =======================================================================

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def __repr__(self) -> str:
        return (
            f"RaftCore({self.id!r} {self.role.name} term={self.term} lead={self.lead!r}"
            f" last={self.log.last_index()} commit={self.log.committed})"
        )

    # ==== role changes ==========================================================================

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None  # a new term: no vote cast in it yet
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # §5.2: a fresh random timeout in [et, 2et) each time, so split votes resolve.
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = None
        self.votes = {}
        self._reads = {}
        self._read_queue = []
        self._reads_before_commit = []
        self._bcast_pending = False
        nxt = self.log.last_index() + 1
        learners = self.learners
        self.progress = {
            p: Progress(nxt, self.max_inflight, p in learners) for p in self.voters + learners
        }
        own = self.progress.get(self.id)
        if own is not None:
            # Our own match counts only what is persisted (below the unstable offset).
            own.match = min(nxt - 1, self.log.unstable.offset - 1)

    def _become_follower(self, term: int, lead: NodeId | None) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-vote round must leave no trace (§9.6).
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        # Our own log is, by definition, replicated to ourselves.
        self.progress[self.id].become_replicate()
        # Unapplied entries may include a CONFIG one we cannot see cheaply: treat the
        # whole unapplied tail as a pending change (as etcd does).
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 / §8: a leader cannot commit earlier terms' entries by counting, and does
        # not know its commit index until it commits something of its own term; the no-op
        # does both (and unblocks ReadIndex).
        self._append_entries([Entry(self.term, 0, b"", EntryKind.NOOP)])

    def _promotable(self) -> bool:
        return self.id in self.voters

    # ==== elections =============================================================================

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum and not self._quorum_active():
                # §6.2: we cannot reach a quorum, so we could be deposed without knowing;
                # stepping down stops us serving clients from a minority.
                self._become_follower(self.term, None)
                return
            if self.lead_transferee is not None:
                # The transfer did not finish in an election timeout: take proposals again.
                self.lead_transferee = None
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = 0
        for p in self.voters:
            pr = self.progress[p]
            if p == self.id or pr.recent_active:
                active += 1
        # Each round starts afresh: a peer must be heard from again in the next one.
        for p, pr in self.progress.items():
            pr.recent_active = p == self.id
        return active >= self.quorum

    def _hup(self, transfer: bool) -> None:
        if self.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if not self._promotable():
            return
        if pre:
            self._become_pre_candidate()
            vote_type, resp_type, term = MT.PRE_VOTE, MT.PRE_VOTE_RESPONSE, self.term + 1
        else:
            self._become_candidate()
            vote_type, resp_type, term = MT.REQUEST_VOTE, MT.VOTE_RESPONSE, self.term
        # Vote for ourselves; a single-voter cluster wins at once.
        if self._poll(self.id, resp_type, True) > 0:
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        li, lt = self.log.last_index(), self.log.last_term()
        for p in self.voters:
            if p != self.id:
                self._send(Message(vote_type, p, self.id, term, lt, li, context=ctx))

    def _poll(self, sender: NodeId, resp_type: MessageType, granted: bool) -> int:
        """Record a vote; returns 1 if the election is won, -1 if lost, 0 if pending."""
        if sender not in self.voters:
            return 0  # e.g. a removed node still answering: its vote does not count
        self.votes.setdefault(sender, granted)
        yes = sum(1 for v in self.votes.values() if v)
        no = len(self.votes) - yes
        if yes >= self.quorum:
            return 1
        if no > len(self.voters) - self.quorum:
            return -1
        return 0

    def _on_request_vote(self, m: Message) -> None:
        """request_vote / pre_vote (§5.2, §5.4.1, §9.6)."""
        pre = m.type is MT.PRE_VOTE
        resp = MT.PRE_VOTE_RESPONSE if pre else MT.VOTE_RESPONSE
        can_vote = (
            self.vote == m.sender  # a repeat of a vote we already cast (e.g. duplicated)
            or (self.vote is None and self.lead is None)  # free to vote in this term
            or (pre and m.term > self.term)  # a pre-vote for a future term binds nothing
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Grants carry the campaign's term, so the candidate counts them for it.
            self._send(Message(resp, m.sender, self.id, m.term))
            if not pre:
                # A real vote: it resets our timer (we expect this candidate to lead) and
                # is persisted, via the Ready's hard state, before this response leaves.
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(Message(resp, m.sender, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESPONSE if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESPONSE
        if t is MT.APPEND_ENTRIES:
            # A leader of our term exists (§5.2): follow it.
            self._become_follower(m.term, m.sender)
            self._on_append_entries(m)
        elif t is MT.HEARTBEAT:
            self._become_follower(m.term, m.sender)
            self._on_heartbeat(m)
        elif t is MT.INSTALL_SNAPSHOT:
            self._become_follower(m.term, m.sender)
            self._on_install_snapshot(m)
        elif t is my_resp:
            r = self._poll(m.sender, t, not m.reject)
            if r > 0:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif r < 0:
                # Lost: wait for the winner (or the next timeout) as a follower. A lost
                # pre-vote leaves the term unchanged.
                self._become_follower(self.term, None)
        # timeout_now while campaigning, stray responses: nothing to do.

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APPEND_ENTRIES:
            self.election_elapsed = 0
            self.lead = m.sender
            self._on_append_entries(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.sender
            self._on_heartbeat(m)
        elif t is MT.INSTALL_SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.sender
            self._on_install_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            # §3.10: our leader wants us to take over; skip pre-vote (we know a quorum is
            # reachable) and tell voters to ignore their lease.
            if self._promotable():
                self._hup(transfer=True)
        elif t is MT.READ_INDEX_RESPONSE:
            self.read_states.append(ReadState(m.index, m.context))
        elif t is MT.READ_INDEX and self.lead is not None:
            # A request that reached us late (we followed a new leader since): pass it on.
            self._send(Message(MT.READ_INDEX, self.lead, m.sender, self.term, context=m.context))

    # ==== replication, follower side ================================================================

    def _on_append_entries(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to committed already matches the leader (Log Matching + leader
            # completeness); say so, so the leader can move on.
            self._send(
                Message(MT.APPEND_RESPONSE, m.sender, self.id, self.term, index=log.committed)
            )
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(MT.APPEND_RESPONSE, m.sender, self.id, self.term, index=last))
            return
        # §5.3 rejection, with a hint so the leader skips a whole term per round trip
        # instead of one entry.
        li = log.last_index()
        if m.index > li:
            # Our log is too short: the leader should continue right after our last entry.
            hint_term, hint_index = 0, li
        else:
            hint_term = log.term(m.index)
            # The first entry of the conflicting term: terms never decrease along a log, so
            # binary-search (floor, m.index] for the first index with term >= hint_term.
            # Entries at or below committed match the leader, so the search starts above.
            lo = max(log.committed, log.first_index() - 1) + 1
            hi = m.index
            while lo < hi:
                mid = (lo + hi) // 2
                if log.term(mid) >= hint_term:
                    hi = mid
                else:
                    lo = mid + 1
            hint_index = lo
        self._send(
            Message(
                MT.APPEND_RESPONSE,
                m.sender,
                self.id,
                self.term,
                log_term=hint_term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
            )
        )

    def _on_heartbeat(self, m: Message) -> None:
        # The leader caps a heartbeat's commit at our match, so it is in our log.
        self.log.commit_to(m.commit)
        self._send(Message(MT.HEARTBEAT_RESPONSE, m.sender, self.id, self.term, context=m.context))

    def _on_install_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self.log
        if snap.index <= log.committed:
            # Old news (we have at least that much committed): report what we have.
            self._send(
                Message(MT.APPEND_RESPONSE, m.sender, self.id, self.term, index=log.committed)
            )
            return
        if log.match_term(snap.index, snap.term):
            # We already hold the snapshot's last entry, so the log up to it matches: just
            # commit up to it and keep the entries after it.
            log.commit_to(snap.index)
        else:
            log.restore(snap)
            # Membership travels with the snapshot.
            if snap.conf.voters:
                self.voters, self.learners = snap.conf.voters, snap.conf.learners
                self.quorum = len(self.voters) // 2 + 1
        self._send(
            Message(MT.APPEND_RESPONSE, m.sender, self.id, self.term, index=log.last_index())
        )

    # ==== replication, leader side ==================================================================

    def _append_entries(self, ents: list[Entry]) -> int:
        """Leader: stamp ``ents`` with our term and the next indexes and append them."""
        li = self.log.last_index()
        for k, e in enumerate(ents, 1):
            e.term = self.term
            e.index = li + k
        # Our own copy counts towards the quorum only once persisted (see advance()): a
        # quorum must hold the entry durably, and the leader's disk is one of them. This
        # lets a driver send a leader's appends while its fsync runs (thesis §10.2.1).
        return self.log.append(ents)

    def _maybe_commit(self) -> bool:
        # The quorum-th highest match among voters is replicated on a quorum.
        matches = sorted((self.progress[p].match for p in self.voters), reverse=True)
        if self.log.maybe_commit(matches[self.quorum - 1], self.term):
            if self._reads_before_commit:
                pending, self._reads_before_commit = self._reads_before_commit, []
                for req in pending:
                    self._on_read_index(req)
            return True
        return False

    def _bcast_append(self) -> None:
        for p in self.progress:
            if p != self.id and self._send_append(p):
                # Pipelining: in REPLICATE keep sending batches until flow control stops
                # us (in PROBE the first append pauses the peer, so this ends at once).
                while self._send_append(p, send_if_empty=False):
                    pass

    def _bcast_heartbeat(self) -> None:
        ctx = self._read_queue[-1] if self._read_queue else b""
        committed = self.log.committed
        for p, pr in self.progress.items():
            if p != self.id:
                # Never tell a follower to commit past what it is known to hold.
                self._send(
                    Message(
                        MT.HEARTBEAT,
                        p,
                        self.id,
                        self.term,
                        commit=min(pr.match, committed),
                        context=ctx,
                    )
                )

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        """Send ``to`` its next batch of entries if flow control allows; False if nothing
        was sent."""
        pr = self.progress[to]
        log = self.log
        if not send_if_empty and pr.next > log.last_index():
            return False  # nothing new for it (the common case when filling the pipeline)
        if pr.is_paused():
            return False
        if pr.next < log.first_index():
            return self._send_snapshot(to, pr)
        prev = pr.next - 1
        # Batching: at most max_entries_per_msg entries and max_bytes_per_msg bytes. The
        # slice is bounded first, so a follower far behind costs one batch, not its lag.
        hi = min(log.last_index() + 1, pr.next + self.max_entries_per_msg)
        ents = log.slice(pr.next, hi, self.max_bytes_per_msg)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APPEND_ENTRIES, to, self.id, self.term, log.term(prev), prev, ents, log.committed
            )
        )
        if pr.state == ProgressState.REPLICATE:
            if ents:
                # Pipelining: assume success and let the next append follow at once.
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.append(last)
        else:
            # PROBE: one append at a time until we learn where the follower's log matches.
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.log.snapshot()
        if snap.index == 0:
            raise AssertionError("entries compacted but no snapshot to send")
        pr.become_snapshot(snap.index)
        self._send(Message(MT.INSTALL_SNAPSHOT, to, self.id, self.term, snapshot=snap))
        return True

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.progress.get(m.sender)
        if t is MT.APPEND_RESPONSE:
            if pr is not None:
                self._on_append_response(m, pr)
        elif t is MT.HEARTBEAT_RESPONSE:
            if pr is not None:
                self._on_heartbeat_response(m, pr)
        elif t is MT.READ_INDEX:
            self._on_read_index(m)
        # Another node's append/heartbeat in our own term cannot happen (election safety);
        # vote responses after winning and timeout_now are moot.

    def _on_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # Fast backtracking: with a term hint, skip to just after our last entry of that
            # term (we share the log up to there, if we have that term at all), else to the
            # first entry of that term in the follower's log; with no term, the follower's
            # log ends at reject_hint.
            if m.log_term == 0:
                nxt = m.reject_hint + 1
            else:
                nxt = self._after_last_of_term(m.log_term, m.index, m.reject_hint)
            if pr.maybe_decrease_to(m.index, nxt):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                    pr.next = max(pr.match + 1, min(m.index, nxt))
                self._send_append(m.sender)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            # A duplicate or reordered answer: still frees its in-flight slot.
            if pr.state == ProgressState.REPLICATE:
                pr.free_inflights_to(m.index)
            return
        if pr.state == ProgressState.PROBE:
            # The follower matches us up to m.index: switch to pipelining.
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                # It installed the snapshot (or caught up otherwise): resume the log.
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.free_inflights_to(m.index)
        if self._maybe_commit():
            # Followers learn the new commit index with the next append.
            self._bcast_append()
        elif was_paused:
            self._send_append(m.sender)
        # Fill the pipeline as far as flow control allows.
        while self._send_append(m.sender, send_if_empty=False):
            pass
        if m.sender == self.lead_transferee and pr.match == self.log.last_index():
            # §3.10: the target is up to date; tell it to campaign now.
            self._send(Message(MT.TIMEOUT_NOW, m.sender, self.id, self.term))

    def _after_last_of_term(self, term: int, at_most: int, otherwise: int) -> int:
        """One past our last entry of ``term`` at or below ``at_most``, or ``otherwise`` if
        we have no entry of that term there. Terms never decrease along the log, so this
        is a binary search for the last index whose term is <= ``term``."""
        log = self.log
        lo, hi = log.first_index() - 1, min(at_most, log.last_index())
        if lo > hi or log.term(lo) > term:
            return otherwise
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if log.term(mid) <= term:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1 if lo > 0 and log.term(lo) == term else otherwise

    def _on_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False  # it is alive: a lost probe can be retried now
        if pr.state == ProgressState.REPLICATE and len(pr.inflights) >= pr.max_inflight:
            # A full pipeline whose answers were lost would stall forever: free one slot
            # so an append goes out and its answer (or rejection) resynchronises us.
            pr.inflights.popleft()
        if pr.state == ProgressState.SNAPSHOT:
            # The snapshot (or its answer) may have been lost: retry after a while.
            pr.snapshot_wait += 1
            if pr.snapshot_wait >= self.election_timeout:
                pr.become_probe()
        if pr.match < self.log.last_index():
            self._send_append(m.sender)
        if m.context:
            self._on_read_ack(m.sender, m.context)

    # ==== ReadIndex (§6.4) ======================================================================

    def _on_read_index(self, m: Message) -> None:
        if len(self.voters) == 1:
            # We are the quorum: our commit index is the read point.
            self._deliver_read(m.sender, self.log.committed, m.context)
            return
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits, our commit index may lag the true one.
            self._reads_before_commit.append(m)
            return
        if m.context in self._reads:
            return  # a duplicate of a pending request
        req = _ReadRequest(self.log.committed, m.sender, m.context)
        req.acks.add(self.id)
        self._reads[m.context] = req
        self._read_queue.append(m.context)
        # A heartbeat round sent now proves we were still leader when the request came.
        self._bcast_heartbeat()

    def _on_read_ack(self, sender: NodeId, context: bytes) -> None:
        req = self._reads.get(context)
        if req is None or sender not in self.voters:
            return
        req.acks.add(sender)
        if len(req.acks) < self.quorum:
            return
        # A quorum answered a heartbeat sent after every request queued before this one,
        # so those are confirmed too.
        k = self._read_queue.index(context)
        done, self._read_queue = self._read_queue[: k + 1], self._read_queue[k + 1 :]
        for ctx in done:
            r = self._reads.pop(ctx)
            self._deliver_read(r.sender, r.index, r.context)

    def _deliver_read(self, to: NodeId, index: int, context: bytes) -> None:
        if to == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESPONSE, to, self.id, self.term, index=index, context=context
                )
            )

    # ==== output ==================================================================================

    def _send(self, m: Message) -> None:
        self.msgs.append(m)
