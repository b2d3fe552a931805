"""What a leader knows about each follower's log, and how fast it may send to it.

Modelled on etcd-io/raft's ``tracker/progress.go``.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["ProgressState", "Progress"]


class ProgressState(enum.IntEnum):
    #: Next is a guess: send one append at a time and wait for its answer.
    PROBE = 0
    #: Next is known: stream appends optimistically, up to ``max_inflight`` unanswered.
    REPLICATE = 1
    #: The follower needs entries we compacted: a snapshot is on its way; send nothing.
    SNAPSHOT = 2


class Progress:
    """Replication state of one peer, kept by the leader.

    Invariants: ``match < next``; ``match`` only grows while this node leads; in
    REPLICATE, ``inflights`` holds the last index of each unanswered append, ascending.
    """

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "snapshot_wait",
        "recent_active",
        "inflights",
        "max_inflight",
        "is_learner",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: In PROBE: an append is out and unanswered, so do not send another.
        self.probe_sent = False
        #: In SNAPSHOT: index of the snapshot sent.
        self.pending_snapshot = 0
        #: In SNAPSHOT: heartbeat answers seen since; a lost snapshot is resent after a few.
        self.snapshot_wait = 0
        #: Heard from since the last check-quorum round.
        self.recent_active = False
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        self.is_learner = is_learner

    def _reset(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_wait = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        # Coming back from a snapshot, the follower has at least the snapshot.
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        self.next = snapshot_index + 1

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged entries up to ``n``. Returns whether match grew (a
        duplicate or reordered answer does not move it back)."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        """Pipelining: assume the append up to ``n`` will succeed and send the next one."""
        self.next = n + 1

    def maybe_decrease_to(self, rejected: int, next_hint: int) -> bool:
        """The follower rejected the append after ``rejected``; ``next_hint`` is where the
        backtracking hint says to try next. Returns False for a stale rejection (one that
        answers an append sent before a later answer already moved us on)."""
        if self.state == ProgressState.REPLICATE:
            # Entries up to match are known to match: a rejection at or below it is stale.
            if rejected <= self.match:
                return False
            # Go back, but never below what is known to match.
            self.next = max(self.match + 1, min(rejected, next_hint))
            return True
        # PROBE/SNAPSHOT: only the answer to the probe outstanding (at next - 1) counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(self.match + 1, min(rejected, next_hint))
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Flow control: whether an append to this peer must wait."""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def free_inflights_to(self, index: int) -> None:
        """Answers arrived up to ``index``: those appends are no longer in flight."""
        q = self.inflights
        while q and q[0] <= index:
            q.popleft()

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f" inflight={len(self.inflights)})"
        )
