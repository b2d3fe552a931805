"""Deterministic simulation of a Raft cluster: N real :class:`~distsync.raft.RaftCore`
instances in one process, on a simulated clock and network, driven by one seed.

Everything random (message loss, delays, partitions, crashes, election timeouts) comes
from ``random.Random(seed)``, and nothing reads a real clock, so a seed replays exactly::

    PYTHONPATH=src python -m distsync.testing.sim --seed 1234      # one seed, verbose
    PYTHONPATH=src python -m distsync.testing.sim --seeds 0:20000  # a range

Safety invariants are checked after every event (see :class:`Cluster`); :func:`run_seed`
adds a fault-free liveness phase at the end.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from distsync.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

__all__ = [
    "Cluster",
    "FaultConfig",
    "SimulationError",
    "SimNode",
    "SimStorage",
    "StateMachine",
    "StorageFactory",
    "StateMachineFactory",
    "memory_storage",
    "StepNetwork",
    "drain",
    "make_core",
    "run_seed",
    "replay_command",
]

_TICK, _MSG, _CALL, _FSYNC = 0, 1, 2, 3


class SimStorage(Protocol):
    """What the simulator's driver needs of a node's storage: the core's read side
    (:class:`~distsync.raft.Storage`) plus the writes of the Ready contract and of
    compaction. :class:`MemoryStorage` and ``LmdbStorage`` both are one."""

    @property
    def hard_state(self) -> HardState: ...
    def initial_state(self) -> tuple[HardState, ConfState]: ...
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...
    def term(self, i: int) -> int: ...
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def snapshot(self) -> Snapshot: ...
    def set_hard_state(self, hs: HardState) -> None: ...
    def append(self, ents: list[Entry]) -> None: ...
    def apply_snapshot(self, snap: Snapshot) -> None: ...
    def create_snapshot(
        self, index: int, conf: ConfState | None = None, data: bytes = b""
    ) -> Snapshot: ...
    def compact(self, index: int) -> None: ...


class StateMachine(Protocol):
    """A replicated state machine run on every simulated node, next to the simulator's
    own digest of the applied prefix (which is what state machine safety is checked on).

    ``apply`` gets every committed NORMAL entry that carries data, in index order, once
    per incarnation of the node (a new leader's empty entry is no command); ``snapshot``
    is put in the node's Raft snapshots; ``restore`` replaces the whole state with one
    (at a restart from a snapshot, and at an InstallSnapshot)."""

    def apply(self, index: int, data: bytes) -> Any: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


#: ``factory(node_id, previous)`` -> the storage a node (re)starts on. ``previous`` is
#: None at the first start, else the storage it ran on before its crash, already rolled
#: back to what was fsync'd: a disk-backed storage can close and reopen it from disk,
#: as a real process restart would.
StorageFactory = Callable[[str, "SimStorage | None"], "SimStorage"]
#: ``factory(node_id)`` -> a fresh, empty state machine, made at every (re)start (a
#: restarted process has lost its memory; its snapshot is then restored into it).
StateMachineFactory = Callable[[str], StateMachine]


def memory_storage(node_id: str, previous: SimStorage | None) -> SimStorage:
    """The default :data:`StorageFactory`: one MemoryStorage per node, kept across
    crashes (the crash itself rolls back what was not fsync'd)."""
    return previous if previous is not None else MemoryStorage()


def replay_command(seed: int) -> str:
    """The one command that replays ``seed`` (run from the repository root)."""
    return f"PYTHONPATH=src python -m distsync.testing.sim --seed {seed}"


class SimulationError(AssertionError):
    """An invariant broke (or liveness failed). The message names the invariant, the
    simulated time and, for seeded runs, the command that replays it."""


@dataclass(slots=True)
class FaultConfig:
    """Per-message network behaviour. Delays are in simulated milliseconds; a delay range
    wider than the gap between messages reorders them."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: float = 0.5
    max_delay: float = 2.0


def _digest(prev: int, index: int, term: int, data: bytes) -> int:
    # A running checksum of everything applied: equal digests at an index mean (with
    # overwhelming probability) equal applied prefixes, so one int per index checks State
    # Machine Safety for the whole history.
    return zlib.crc32(data, zlib.crc32(b"%d:%d:" % (index, term), prev))


class SimNode:
    """One simulated server: its durable storage survives crashes; its core does not."""

    __slots__ = (
        "id",
        "storage",
        "sm",
        "synced_hs",
        "core",
        "alive",
        "incarnation",
        "tick_period",
        "sm_digest",
        "sm_index",
        "applied",
        "read_states",
        "last_commit",
        "last_term",
        "leader_checked_term",
        "pending_ready",
    )

    def __init__(self, node_id: str, tick_period: float) -> None:
        self.id = node_id
        #: What the node has written; on a crash, whatever was not fsync'd is rolled back.
        #: Made by the cluster's storage factory when the node starts.
        self.storage: SimStorage = MemoryStorage()
        #: The cluster's state machine of this incarnation (None without a factory).
        self.sm: StateMachine | None = None
        #: The hard state as of the last fsync.
        self.synced_hs = HardState()
        self.core: RaftCore | None = None
        self.alive = False
        self.incarnation = 0
        self.tick_period = tick_period
        #: The state machine: a digest of the applied prefix and its last index.
        self.sm_digest = 0
        self.sm_index = 0
        #: index -> data of every NORMAL entry this server ever applied (kept across
        #: restarts, like the 6.824 tester's logs, to check re-applies agree).
        self.applied: dict[int, bytes] = {}
        self.read_states: list[ReadState] = []
        self.last_commit = 0
        self.last_term = 0
        self.leader_checked_term = 0
        #: A leader's Ready whose messages went out and whose fsync is still running.
        self.pending_ready: Ready | None = None

    @property
    def raft(self) -> RaftCore:
        assert self.core is not None, f"{self.id} is down"
        return self.core


class Cluster:
    """N Raft cores on a simulated network and clock.

    After every event it checks, and raises :class:`SimulationError` on violation:
    election safety (at most one leader per term), log matching (an (index, term) pair
    identifies the entry and its predecessor's term, hence the whole prefix), leader
    completeness (a leader of term T holds every entry committed in a term < T), state
    machine safety (no two servers apply different entries at an index; checked by a
    digest of the applied prefix), commit index and term that never go back (also across
    crash-restart, for what was fsync'd), and ReadIndex linearizability (a read point is
    at least the highest commit index any node had when the read was requested).

    Two hooks put real components under the same runs, seeds unchanged:
    ``storage_factory`` (:data:`StorageFactory`) gives each node its storage, e.g. an
    LmdbStorage reopened from disk at each restart; ``state_machine_factory``
    (:data:`StateMachineFactory`) runs a :class:`StateMachine` on every node, fed the
    committed commands, snapshotted with the Raft snapshots and restored from them.
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        tick_ms: float = 10.0,
        uneven_ticks: bool = False,
        snapshot_every: int = 0,
        max_inflight_msgs: int = 256,
        max_entries_per_msg: int = 4096,
        max_bytes_per_msg: int = 1 << 20,
        parallel_writes: bool = False,
        replay: str | None = None,
        storage_factory: StorageFactory | None = None,
        state_machine_factory: StateMachineFactory | None = None,
    ) -> None:
        self.seed = seed
        # Neither factory may draw from self.rng: a seed must replay the same whatever
        # storage or state machine runs under it.
        self.storage_factory: StorageFactory = storage_factory or memory_storage
        self.state_machine_factory = state_machine_factory
        self.replay = replay
        self.rng = random.Random(seed)
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        #: The membership every node starts from; CONFIG entries change it from there.
        self.initial = tuple(self.ids)
        #: Nodes whose removal committed: shut down for good, as an operator would.
        self.removed: set[str] = set()
        self._tick_ms = tick_ms
        self._uneven = uneven_ticks
        self.now = 0.0
        self._events: list[tuple[float, int, int, object, object]] = []
        self._seq = 0
        self.faults = FaultConfig()
        #: Directed links that deliver nothing.
        self.blocked: set[tuple[str, str]] = set()
        #: Nodes cut off from everyone (6.824's disconnect).
        self.disconnected: set[str] = set()
        self.snapshot_every = snapshot_every
        #: Leaders send a batch before persisting it when the Ready allows it.
        self.parallel_writes = parallel_writes
        #: Probability of a crash in the middle of handling a Ready.
        self.crash_in_ready = 0.0
        #: Upper bound of a leader's fsync time when it overlaps sending (ms); comparable
        #: to message delays, as on real hardware (fsync ~0.2 ms, loopback RTT ~0.1 ms).
        self.fsync_ms = 3.0
        self._cfg = dict(
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight_msgs=max_inflight_msgs,
            max_entries_per_msg=max_entries_per_msg,
            max_bytes_per_msg=max_bytes_per_msg,
        )
        # ---- invariant bookkeeping ----
        self.leaders: dict[int, str] = {}  # term -> the leader of that term
        self.log_entries: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.committed: dict[int, list[int]] = {}  # index -> [entry term, lowest commit term]
        self.digests: dict[int, int] = {}  # index -> digest of the applied prefix
        self.pending_reads: dict[bytes, int] = {}  # context -> lowest valid read index
        self.messages_sent = 0
        self.bytes_sent = 0
        self.events = 0
        self.nodes: dict[str, SimNode] = {}
        for nid in self.ids:
            period = tick_ms * (self.rng.uniform(0.6, 1.4) if uneven_ticks else 1.0)
            self.nodes[nid] = SimNode(nid, period)
        for nid in self.ids:
            self.start(nid)

    # ==== failures ==============================================================================

    def fail(self, what: str) -> None:
        msg = f"{what} (t={self.now:.1f}ms, seed {self.seed})"
        if self.replay:
            msg += f"\nreplay: {self.replay}"
        raise SimulationError(msg)

    # ==== node lifecycle ========================================================================

    def start(self, nid: str) -> None:
        """Start (or restart) ``nid`` from its durable storage."""
        node = self.nodes[nid]
        if node.alive or nid in self.removed:
            return
        node.storage = self.storage_factory(nid, node.storage if node.incarnation else None)
        cfg = Config(nid, self.initial, **self._cfg)  # type: ignore[arg-type]
        core = RaftCore(cfg, node.storage, random.Random(self.rng.getrandbits(64)))
        node.core = core
        node.alive = True
        node.incarnation += 1
        # The state machine is rebuilt from the snapshot; the log replays the rest.
        snap = node.storage.snapshot()
        node.sm_digest, node.sm_index = self._decode_snapshot(snap)
        if self.state_machine_factory is not None:
            node.sm = self.state_machine_factory(nid)
            if snap.index:
                node.sm.restore(snap.data[4:])
        if core.commit_index < node.synced_hs.commit:
            self.fail(
                f"{nid} restarted with commit {core.commit_index} < fsync'd {node.synced_hs.commit}"
            )
        node.last_commit = core.commit_index
        # A term held only in memory may be lost (nothing was sent in it: Ready order);
        # the persisted term never goes back (checked in _persist).
        node.last_term = core.term
        node.leader_checked_term = 0
        self._schedule(self.rng.uniform(0, node.tick_period), _TICK, nid, node.incarnation)

    def add_node(self) -> str:
        """Start a new, empty node outside the membership; a CONFIG entry adds it."""
        nid = f"n{len(self.ids) + 1}"
        period = self._tick_ms * (self.rng.uniform(0.6, 1.4) if self._uneven else 1.0)
        self.nodes[nid] = SimNode(nid, period)
        self.ids.append(nid)
        self.start(nid)
        return nid

    def members(self) -> list[str]:
        """Voters and learners as the current leader (else the first live node) sees them."""
        ld = self.leader()
        if ld is None:
            live = [self.nodes[i] for i in self.ids if self.nodes[i].alive]
            if not live:
                return []
            ld = live[0]
        core = ld.raft
        return list(core.voters + core.learners)

    def crash(self, nid: str) -> None:
        """Kill ``nid``: its core and everything not fsync'd are lost."""
        node = self.nodes[nid]
        if not node.alive:
            return
        node.alive = False
        node.core = None
        node.pending_ready = None  # its fsync never completes
        node.storage.set_hard_state(node.synced_hs)

    def restart(self, nid: str) -> None:
        self.crash(nid)
        self.start(nid)

    # ==== network ===============================================================================

    def link_up(self, a: str, b: str) -> bool:
        return (
            a not in self.disconnected and b not in self.disconnected and (a, b) not in self.blocked
        )

    def partition(self, *groups: list[str] | tuple[str, ...]) -> None:
        """Symmetric partition: links between different groups are cut both ways."""
        self.blocked.clear()
        where = {nid: k for k, g in enumerate(groups) for nid in g}
        for a in self.ids:
            for b in self.ids:
                if a != b and where.get(a, -1) != where.get(b, -2):
                    self.blocked.add((a, b))

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def cut(self, a: str, b: str) -> None:
        """Asymmetric: ``a`` can no longer reach ``b`` (``b`` still reaches ``a``)."""
        self.blocked.add((a, b))

    def heal(self) -> None:
        self.blocked.clear()
        self.disconnected.clear()

    def disconnect(self, nid: str) -> None:
        self.disconnected.add(nid)

    def connect(self, nid: str) -> None:
        self.disconnected.discard(nid)

    def _send(self, m: Message) -> None:
        self.messages_sent += 1
        self.bytes_sent += sum(len(e.data) for e in m.entries)
        f = self.faults
        rng = self.rng
        if f.drop and rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        for _ in range(copies):
            self._schedule(rng.uniform(f.min_delay, f.max_delay), _MSG, m, None)

    # ==== event loop ============================================================================

    def _schedule(self, delay: float, kind: int, a: object, b: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, kind, a, b))

    def call_at(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` simulated ms (workloads, fault schedules)."""
        self._schedule(delay, _CALL, fn, None)

    def step(self) -> bool:
        """Process one event; False if there are none."""
        if not self._events:
            return False
        when, _, kind, a, b = heapq.heappop(self._events)
        self.now = when
        self.events += 1
        if kind == _MSG:
            assert isinstance(a, Message)
            node = self.nodes[a.to]
            # The link is checked on delivery, so a partition also eats packets in flight.
            if node.alive and self.link_up(a.sender, a.to):
                node.raft.step(a)
                self._drain(node)
        elif kind == _TICK:
            assert isinstance(a, str)
            node = self.nodes[a]
            if node.alive and node.incarnation == b:
                node.raft.tick()
                self._drain(node)
                self._schedule(node.tick_period, _TICK, a, b)
        elif kind == _FSYNC:
            assert isinstance(a, str) and isinstance(b, tuple)
            node = self.nodes[a]
            rd = node.pending_ready
            if node.alive and node.incarnation == b[0] and rd is not None and rd is b[1]:
                self._fsync_done(node, rd)
        else:
            assert callable(a)
            a()
        return True

    def run_for(self, ms: float) -> None:
        end = self.now + ms
        events = self._events
        while events and events[0][0] <= end:
            self.step()
        self.now = end

    def run_until(self, pred: Callable[[], bool], max_ms: float, poll_ms: float = 5.0) -> bool:
        """Run until ``pred()`` holds (checked every ``poll_ms``); False on timeout."""
        end = self.now + max_ms
        while self.now < end:
            if pred():
                return True
            self.run_for(min(poll_ms, end - self.now))
        return pred()

    # ==== the driver: Ready handling ================================================================

    def _drain(self, node: SimNode) -> None:
        core = node.raft
        rng = self.rng
        while node.pending_ready is None and core.has_ready():
            rd = core.ready()
            # Before the apply step may compact the log away.
            self._record_commits(node)
            if self.parallel_writes and not rd.persist_first:
                # A leader sends at once and its fsync completes later (thesis §10.2.1);
                # meanwhile it keeps stepping messages, and it may crash before the fsync
                # is done, losing this batch.
                for m in rd.messages:
                    self._send(m)
                node.pending_ready = rd
                self._schedule(
                    rng.uniform(0.2, self.fsync_ms), _FSYNC, node.id, (node.incarnation, rd)
                )
                break
            self._persist(node, rd)  # 1. persist (fsync)
            if self.crash_in_ready and rng.random() < self.crash_in_ready:
                self.crash(node.id)  # durable, but nothing was sent
                return
            for m in rd.messages:  # 2. send
                self._send(m)
            self._finish(node, rd)
        self._check_node(node)

    def _finish(self, node: SimNode, rd: Ready) -> None:
        self._apply(node, rd)  # 3. apply
        node.raft.advance(rd)  # 4. advance
        self._maybe_snapshot(node)

    def _fsync_done(self, node: SimNode, rd: Ready) -> None:
        node.pending_ready = None
        if self.crash_in_ready and self.rng.random() < self.crash_in_ready * 10:
            self.crash(node.id)  # died before the fsync completed: the batch is lost
            return
        self._persist(node, rd)
        self._finish(node, rd)
        self._drain(node)

    def _persist(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
            self._check_log_matching(node, rd)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        if rd.must_sync or rd.snapshot is not None:
            # An fsync makes everything written so far durable, earlier commits included.
            hs = st.hard_state
            old = node.synced_hs
            if hs.term < old.term or (hs.term == old.term and old.vote not in (None, hs.vote)):
                self.fail(f"{node.id} persisted term/vote went back: {old} -> {hs}")
            node.synced_hs = hs

    def _apply(self, node: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.sm_digest, node.sm_index = self._decode_snapshot(rd.snapshot)
        for e in rd.committed_entries:
            if e.index != node.sm_index + 1:
                self.fail(f"{node.id} applies {e.index} after {node.sm_index}")
            node.sm_digest = _digest(node.sm_digest, e.index, e.term, e.data)
            node.sm_index = e.index
            g = self.digests.setdefault(e.index, node.sm_digest)
            if g != node.sm_digest:
                self.fail(f"state machine safety: {node.id} applied a different entry at {e.index}")
            if e.kind == EntryKind.CONFIG:
                cc = ConfChange.decode(e.data)
                conf = node.raft.apply_conf_change(cc)
                gone = cc.node_id
                if (
                    cc.type == ConfChangeType.REMOVE_NODE
                    and gone not in conf.voters
                    and gone not in self.removed
                ):
                    # Committed: shut the removed server down (after this event).
                    self.removed.add(gone)
                    self.call_at(0.0, lambda gone=gone: self.crash(gone))  # type: ignore[misc]
            elif e.kind == EntryKind.NORMAL:
                prev = node.applied.setdefault(e.index, e.data)
                if prev != e.data:
                    self.fail(f"state machine safety: {node.id} re-applied {e.index} differently")
        for rs in rd.read_states:
            low = self.pending_reads.pop(rs.context, None)
            if low is not None and rs.index < low:
                self.fail(f"ReadIndex {rs.context!r} at {rs.index} < commit {low} at request")
            node.read_states.append(rs)
        # The user's state machine follows Raft's checks of the whole Ready, so a safety
        # violation is reported as such, not as whatever it does to the state machine.
        sm = node.sm
        if sm is not None:
            if rd.snapshot is not None:
                sm.restore(rd.snapshot.data[4:])
            for e in rd.committed_entries:
                if e.kind == EntryKind.NORMAL and e.data:
                    sm.apply(e.index, e.data)

    def _decode_snapshot(self, snap: Snapshot) -> tuple[int, int]:
        if snap.index == 0:
            return 0, 0
        digest = int.from_bytes(snap.data[:4], "big")
        g = self.digests.setdefault(snap.index, digest)
        if g != digest:
            self.fail(f"state machine safety: snapshot at {snap.index} differs")
        return digest, snap.index

    def _maybe_snapshot(self, node: SimNode) -> None:
        st = node.storage
        if self.snapshot_every and node.sm_index - st.first_index() + 1 > self.snapshot_every:
            # The digest first (checked across nodes), then the state machine's state.
            data = node.sm_digest.to_bytes(4, "big")
            if node.sm is not None:
                data += node.sm.snapshot()
            st.create_snapshot(node.sm_index, node.raft.conf_state(), data)
            st.compact(node.sm_index)

    # ==== invariants ==============================================================================

    def _check_log_matching(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        first = rd.entries[0]
        try:
            prev_term = st.term(first.index - 1)
        except Exception:
            prev_term = -1  # compacted: its prefix is committed and checked elsewhere
        reg = self.log_entries
        for e in rd.entries:
            key = (e.index, e.term)
            val = (e.data, int(e.kind), prev_term)
            old = reg.setdefault(key, val)
            if old != val and old[2] != -1 and prev_term != -1:
                self.fail(f"log matching: {node.id} has a different entry {key}")
            elif old[:2] != val[:2]:
                self.fail(f"log matching: {node.id} has a different entry {key}")
            prev_term = e.term

    def _record_commits(self, node: SimNode) -> None:
        core = node.raft
        c = core.commit_index
        if c < node.last_commit:
            self.fail(f"{node.id} commit index went back {node.last_commit} -> {c}")
        if c > node.last_commit:
            log = core.log
            term = core.term
            # Entries below first_index arrived by snapshot: committed by someone else,
            # whose commit was recorded (and the snapshot digest is checked).
            for i in range(max(node.last_commit + 1, log.first_index()), c + 1):
                t = log.term(i)
                rec = self.committed.get(i)
                if rec is None:
                    self.committed[i] = [t, term]
                elif rec[0] != t:
                    self.fail(f"{node.id} committed term {t} at {i}, another node term {rec[0]}")
                elif term < rec[1]:
                    rec[1] = term
            node.last_commit = c

    def _check_node(self, node: SimNode) -> None:
        core = node.raft
        term = core.term
        if term < node.last_term:
            self.fail(f"{node.id} term went back {node.last_term} -> {term}")
        node.last_term = term
        self._record_commits(node)
        if core.role == Role.LEADER and node.leader_checked_term != term:
            node.leader_checked_term = term
            other = self.leaders.setdefault(term, node.id)
            if other != node.id:
                self.fail(f"election safety: {other} and {node.id} both lead term {term}")
            log = core.log
            first = log.first_index()
            for i, (t, ct) in self.committed.items():
                if ct < term and i >= first and log.term(i) != t:
                    self.fail(
                        f"leader completeness: leader {node.id} of term {term} lacks entry"
                        f" {i} (term {t}) committed in term {ct}"
                    )

    # ==== client side =========================================================================

    def leader(self) -> SimNode | None:
        """The live node that believes it leads with the highest term, if any."""
        best = None
        for node in self.nodes.values():
            if node.alive and node.raft.role == Role.LEADER:
                if best is None or node.raft.term > best.raft.term:
                    best = node
        return best

    def propose(self, data: bytes, nid: str | None = None) -> tuple[str, int, int] | None:
        """Propose on ``nid`` (default: the leader). Returns (node, index, term) or None if
        it is not the leader (6.824's Start())."""
        node = self.nodes[nid] if nid is not None else self.leader()
        if node is None or not node.alive:
            return None
        core = node.raft
        try:
            index = core.propose(data)
        except (NotLeaderError, ProposalDroppedError):
            return None
        term = core.term
        self._drain(node)
        return node.id, index, term

    def read_index(self, nid: str, context: bytes) -> bool:
        """Ask ``nid`` for a read point; the ReadState lands in its ``read_states``."""
        node = self.nodes[nid]
        if not node.alive:
            return False
        try:
            node.raft.read_index(context)
        except NotLeaderError:
            return False
        # Linearizability: the read point must cover everything committed anywhere now.
        self.pending_reads[context] = max(
            (n.raft.commit_index for n in self.nodes.values() if n.alive), default=0
        )
        self._drain(node)
        return True

    def n_applied(self, index: int) -> tuple[int, bytes | None]:
        """How many servers applied ``index``, and its data (6.824's nCommitted). A server
        whose state machine got past ``index`` by installing a snapshot counts too: the
        snapshot digest check has already proven it holds the same entry."""
        count, data = 0, None
        for node in self.nodes.values():
            d = node.applied.get(index)
            if d is not None:
                if data is not None and d != data:
                    self.fail(f"servers applied different data at {index}")
                count, data = count + 1, d
            elif node.sm_index >= index and self.digests.get(index) is not None:
                count += 1
        return (count, data) if data is not None else (0, None)

    def live_ids(self) -> list[str]:
        return [nid for nid in self.ids if self.nodes[nid].alive]


def make_core(
    nid: str,
    voters: list[str] | tuple[str, ...],
    *,
    log_terms: list[int] | tuple[int, ...] = (),
    term: int = 0,
    vote: str | None = None,
    commit: int = 0,
    seed: int = 0,
    **cfg: object,
) -> tuple[RaftCore, MemoryStorage]:
    """A core whose stable log holds entries of ``log_terms`` (indexes 1, 2, ...) and whose
    hard state is (``term``, ``vote``, ``commit``): the starting point of paper tests."""
    st = MemoryStorage()
    st.append([Entry(t, i, b"e%d" % i) for i, t in enumerate(log_terms, 1)])
    st.set_hard_state(HardState(term, vote, commit))
    core = RaftCore(Config(nid, tuple(voters), **cfg), st, random.Random(seed))  # type: ignore[arg-type]
    return core, st


def drain(core: RaftCore, storage: MemoryStorage | None = None) -> list[Message]:
    """Handle every pending Ready of ``core``, persisting to ``storage`` (default: the
    core's own, if it is a MemoryStorage), and return the messages it wanted sent."""
    if storage is None and isinstance(core.log.storage, MemoryStorage):
        storage = core.log.storage
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        if storage is not None:
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
        out.extend(rd.messages)
        core.advance(rd)
    return out


class StepNetwork:
    """A synchronous network of cores for focused tests (etcd raft's ``network``): no
    clock; messages are delivered in order until none are left. Links can be cut,
    nodes isolated, message types ignored; every Ready is persisted to a MemoryStorage
    and its committed entries recorded in ``applied``."""

    def __init__(self, ids: list[str] | int, seed: int = 0, **cfg: object) -> None:
        self.ids = [f"n{i}" for i in range(1, ids + 1)] if isinstance(ids, int) else list(ids)
        self.initial = tuple(self.ids)  # the membership every node starts from
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.cores: dict[str, RaftCore] = {}
        self.applied: dict[str, list[tuple[int, int, bytes]]] = {i: [] for i in self.ids}
        self.read_states: dict[str, list[ReadState]] = {i: [] for i in self.ids}
        self.cut_links: set[tuple[str, str]] = set()
        self.ignored: set[object] = set()
        self.drop_filter: Callable[[Message], bool] | None = None
        self.delivered: list[Message] = []
        for i in self.ids:
            self.start(i)

    def add(self, nid: str) -> RaftCore:
        """A new, empty node outside the membership (it joins by a CONFIG entry)."""
        self.ids.append(nid)
        self.storages[nid] = MemoryStorage()
        self.applied[nid] = []
        self.read_states[nid] = []
        return self.start(nid)

    def start(self, nid: str) -> RaftCore:
        """(Re)start ``nid`` from its storage."""
        cfg = Config(nid, tuple(self.initial), **self.cfg)  # type: ignore[arg-type]
        core = RaftCore(cfg, self.storages[nid], random.Random(self.rng.getrandbits(64)))
        self.cores[nid] = core
        return core

    def __getitem__(self, nid: str) -> RaftCore:
        return self.cores[nid]

    def _collect(self, nid: str) -> list[Message]:
        core, st = self.cores[nid], self.storages[nid]
        out: list[Message] = []
        while core.has_ready():
            rd = core.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            out.extend(rd.messages)
            for e in rd.committed_entries:
                self.applied[nid].append((e.index, e.term, e.data))
                if e.kind == EntryKind.CONFIG:
                    core.apply_conf_change(ConfChange.decode(e.data))
            self.read_states[nid].extend(rd.read_states)
            core.advance(rd)
        return out

    def send(self, msgs: list[Message]) -> None:
        """Deliver ``msgs`` and everything they cause, breadth first."""
        queue = list(msgs)
        while queue:
            m = queue.pop(0)
            if (
                (m.sender, m.to) in self.cut_links
                or m.type in self.ignored
                or (self.drop_filter is not None and self.drop_filter(m))
            ):
                continue
            self.delivered.append(m)
            self.cores[m.to].step(m)
            queue.extend(self._collect(m.to))

    def flush(self, nid: str | None = None) -> None:
        """Send whatever ``nid`` (or every node) has pending."""
        for i in [nid] if nid else self.ids:
            self.send(self._collect(i))

    def campaign(self, nid: str) -> None:
        self.cores[nid].campaign()
        self.flush(nid)

    def propose(self, nid: str, data: bytes) -> int:
        index = self.cores[nid].propose(data)
        self.flush(nid)
        return index

    def tick(self, nid: str, n: int = 1) -> None:
        for _ in range(n):
            self.cores[nid].tick()
            self.flush(nid)

    def cut(self, a: str, b: str) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def isolate(self, nid: str) -> None:
        for o in self.ids:
            if o != nid:
                self.cut(nid, o)

    def ignore(self, t: object) -> None:
        self.ignored.add(t)

    def recover(self) -> None:
        self.cut_links.clear()
        self.ignored.clear()
        self.drop_filter = None

    def leader(self) -> str | None:
        ls = [i for i in self.ids if self.cores[i].role == Role.LEADER]
        return max(ls, key=lambda i: self.cores[i].term) if ls else None


# ==== seeded runs =================================================================================


def run_seed(
    seed: int,
    *,
    safety_ms: float = 2500.0,
    liveness_ms: float = 4000.0,
    storage_factory: StorageFactory | None = None,
    state_machine_factory: StateMachineFactory | None = None,
) -> Cluster:
    """One randomized run: a safety phase under faults, then a liveness phase on a healed
    network that must elect a leader and commit a fresh proposal on every node within
    ``liveness_ms``. Raises SimulationError (with the replay command) on failure.

    The factories go to :class:`Cluster`; they draw nothing from the seed's streams, so
    a seed runs the same events on any storage or state machine."""
    # Separate streams: the cluster's (network, timeouts) and the scenario's (faults, load).
    rng = random.Random(f"scenario-{seed}")
    # Three kinds of scenario:
    # - "mixed": every fault at moderate rates, random configuration.
    # - "churn": five nodes, one entry per append, faults every few tens of ms.
    # - "figure8": the paper's Figure 8 hunt: plain Raft (no pre-vote/check-quorum), one
    #   entry and one append in flight at a time, leaders killed soon after they win and
    #   restarted at once, so old-term entries reach a majority under a new leader whose
    #   own entries have not (the case the §5.4.2 commit rule exists for).
    profile = rng.choices(("mixed", "churn", "figure8"), (0.55, 0.25, 0.2))[0]
    plain = profile == "figure8"
    n = 5 if profile != "mixed" else rng.choice((3, 3, 5))
    c = Cluster(
        n,
        seed,
        pre_vote=not plain and rng.random() < (0.3 if profile == "churn" else 0.75),
        check_quorum=not plain and rng.random() < (0.3 if profile == "churn" else 0.75),
        uneven_ticks=True,
        snapshot_every=0 if plain else rng.choice((0, 0, 8, 30)),
        max_inflight_msgs=1 if plain else rng.choice((1, 4, 256)),
        max_entries_per_msg=1 if profile != "mixed" else rng.choice((1, 3, 64)),
        parallel_writes=rng.random() < 0.5,
        replay=replay_command(seed),
        storage_factory=storage_factory,
        state_machine_factory=state_machine_factory,
    )
    c.crash_in_ready = rng.choice((0.0, 0.001, 0.005))
    c.fsync_ms = rng.choice((1.0, 3.0, 10.0))  # 10: a slow disk, slower than the network
    if plain:
        c.faults = FaultConfig(drop=0.05, max_delay=rng.choice((2.0, 8.0)))
    else:
        c.faults = FaultConfig(
            drop=rng.choice((0.0, 0.02, 0.1, 0.25)),
            duplicate=rng.choice((0.0, 0.05, 0.2)),
            max_delay=rng.choice((2.0, 8.0, 30.0)),
        )
    # Some mixed scenarios also change the membership: grow by a learner then promote it,
    # or remove a voter (the leader included), one change at a time.
    membership = profile == "mixed" and rng.random() < 0.4
    fault_gap = {"mixed": (20.0, 250.0), "churn": (5.0, 60.0), "figure8": (5.0, 60.0)}[profile]
    load_gap = (1.0, 10.0) if plain else (2.0, 25.0)
    ids = c.ids
    load = [0]  # proposals so far
    phase = ["safety"]

    def workload() -> None:
        if phase[0] != "safety":
            return
        load[0] += 1
        k = load[0]
        leader = c.leader()
        if leader is not None:
            r = rng.random()
            if r < 0.15:
                c.read_index(rng.choice(c.live_ids()) if c.live_ids() else leader.id, b"r%d" % k)
            elif r < 0.17 and not plain:
                # Leader transfer to a random voter (it may be down, partitioned or behind).
                others = [v for v in leader.raft.voters if v != leader.id]
                if others:
                    leader.raft.transfer_leader(rng.choice(others))
                    c._drain(leader)
            else:
                for j in range(rng.choice((1, 1, 1, 4))):
                    c.propose(b"p%d.%d" % (k, j), leader.id)
        c.call_at(rng.uniform(*load_gap), workload)

    def change_membership() -> None:
        ld = c.leader()
        if ld is None:
            return
        core = ld.raft
        try:
            if core.learners:
                core.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, core.learners[0]))
            elif len(core.voters) < 5 and len(ids) < 9 and rng.random() < 0.6:
                core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, c.add_node()))
            elif len(core.voters) > 3:
                victim = rng.choice(core.voters)
                core.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, victim))
        except (ProposalDroppedError, NotLeaderError):
            return
        c._drain(ld)

    def fault() -> None:
        if phase[0] != "safety":
            return
        if plain:
            ld = c.leader()
            if ld is not None and rng.random() < 0.7:
                c.crash(ld.id)
            dead = [i for i in ids if not c.nodes[i].alive]
            if dead and (len(dead) > 2 or rng.random() < 0.5):
                c.start(rng.choice(dead))
            c.call_at(rng.uniform(*fault_gap), fault)
            return
        if membership and rng.random() < 0.3:
            change_membership()
            c.call_at(rng.uniform(*fault_gap), fault)
            return
        r = rng.random()
        if r < 0.15:
            order = ids[:]
            rng.shuffle(order)
            cut = rng.randrange(1, len(order))
            c.partition(order[:cut], order[cut:])
        elif r < 0.25:
            c.isolate(rng.choice(ids))
        elif r < 0.35:
            a, b = rng.sample(ids, 2)
            c.cut(a, b)
        elif r < 0.55:
            c.heal()
        elif r < 0.7:
            live = c.live_ids()
            if live:
                # Prefer the leader: that is where the interesting crashes are.
                ld = c.leader()
                c.crash(ld.id if ld is not None and rng.random() < 0.5 else rng.choice(live))
        elif r < 0.9:
            for nid in ids:
                if not c.nodes[nid].alive:
                    c.start(nid)
                    break
        else:
            c.faults.drop = rng.choice((0.0, 0.05, 0.3))
        c.call_at(rng.uniform(*fault_gap), fault)

    c.call_at(rng.uniform(0, 20), workload)
    c.call_at(rng.uniform(*fault_gap), fault)
    # Figure 8 needs several leader generations to line up: give it longer.
    c.run_for(safety_ms * 2 if plain else safety_ms)

    # ---- liveness: everyone up, network healed and reliable ----
    phase[0] = "liveness"
    c.heal()
    c.faults = FaultConfig()
    c.crash_in_ready = 0.0
    for nid in ids:
        c.start(nid)
    data = b"live-%d" % seed
    want: list = []  # [index, term, node] of the fresh proposal in flight

    def done() -> bool:
        if want:
            index, term, nid = want
            rec = c.committed.get(index)
            node = c.nodes[nid]
            if rec is None and not (
                node.alive and node.raft.term == term and node.raft.role == Role.LEADER
            ):
                # Its leader is gone (a stale leader may have taken it): propose again.
                want.clear()
                rec = None
            if rec is not None and rec[0] == term:
                # Committed; done once every node's state machine has it (by applying it
                # or by installing a snapshot that covers it).
                members = c.members()
                return bool(members) and all(
                    c.nodes[i].alive and c.nodes[i].sm_index >= index for i in members
                )
            if rec is not None:
                want.clear()  # a newer leader overwrote it before commit: propose again
        if not want or c.leader() is None:
            r = c.propose(data)
            if r is not None:
                want[:] = [r[1], r[2], r[0]]
        return False

    if not c.run_until(done, liveness_ms, poll_ms=10.0):
        ld = c.leader()
        c.fail(
            f"liveness: no commit of a fresh proposal on all members within {liveness_ms}ms"
            f" of healing (leader {ld.id if ld else None}; "
            + ", ".join(repr(c.nodes[i].core) for i in ids)
            + ")"
        )
    return c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run seeded Raft cluster simulations.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seed", type=int, help="replay one seed")
    g.add_argument("--seeds", help="a range START:STOP of seeds")
    args = p.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        lo, hi = (int(x) for x in args.seeds.split(":"))
        seeds = range(lo, hi)
    t0 = time.perf_counter()
    failed = 0
    for s in seeds:
        try:
            c = run_seed(s)
        except Exception as e:  # noqa: BLE001 - an exception in the core is a failure too
            failed += 1
            print(f"FAIL seed {s}: {type(e).__name__}: {e}", file=sys.stderr)
            if not isinstance(e, SimulationError):
                print(f"replay: {replay_command(s)}", file=sys.stderr)
            continue
        if len(seeds) == 1:
            print(
                f"seed {s}: ok; {c.events} events, {c.messages_sent} messages,"
                f" {len(c.committed)} entries committed, {len(c.leaders)} terms with a leader"
            )
    dt = time.perf_counter() - t0
    print(f"{len(seeds)} seeds, {failed} failed, {dt:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
