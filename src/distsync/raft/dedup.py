"""Client command deduplication (Raft thesis §6.3): a retried command applies once.

A client that times out cannot know whether its command was committed, so it retries, and
the log may then hold the command twice. Each command carries ``(client_id, sequence)``;
the replicated state machine keeps, per client, the results of the sequences it applied
and answers a duplicate from there instead of executing it again. Every replica applies
the same log in the same order, so every replica makes the same decision.

The table is part of the replicated state: it goes into snapshots (:meth:`SessionTable.dump`)
and expires with the client's session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distsync.errors import DistSyncError

__all__ = ["SessionTable", "StaleSequenceError"]


class StaleSequenceError(DistSyncError):
    """A command older than what the client already acknowledged: its result is gone, and
    the client cannot be waiting for it (it said so), so it is refused, not re-executed."""

    code = "stale_sequence"


class _Session:
    __slots__ = ("floor", "results")

    def __init__(self) -> None:
        #: Every sequence below ``floor`` was acknowledged by the client: forgotten.
        self.floor = 0
        #: sequence -> result, for applied sequences >= floor.
        self.results: dict[int, Any] = {}


class SessionTable:
    """Per-client record of applied commands.

    Invariant: for each client, every applied sequence ``>= floor`` has its result in
    ``results``; sequences ``< floor`` are never applied again. Clients may pipeline (many
    commands in flight); each command tells the table the lowest sequence the client still
    waits for (``first_unacked``), which bounds the memory kept.
    """

    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def apply(
        self,
        client_id: str,
        sequence: int,
        execute: Callable[[], Any],
        first_unacked: int | None = None,
    ) -> Any:
        """Run ``execute()`` for this command unless it already ran; return its result
        either way. ``first_unacked`` (default: ``sequence``) lets the table forget results
        the client has seen. Raises StaleSequenceError for an acknowledged sequence."""
        s = self._sessions.get(client_id)
        if s is None:
            s = self._sessions[client_id] = _Session()
        if sequence < s.floor:
            raise StaleSequenceError(
                f"client {client_id!r} sequence {sequence} is below its acknowledged {s.floor}"
            )
        if sequence in s.results:
            return s.results[sequence]  # a retry: the same answer, no second execution
        result = execute()
        s.results[sequence] = result
        floor = sequence if first_unacked is None else min(first_unacked, sequence)
        if floor > s.floor:
            old, s.floor = s.floor, floor
            results = s.results
            # Drop what the client has acknowledged. Every result kept is >= the old
            # floor, so the ones to drop are those in [old, floor): usually one or two,
            # found by key rather than by scanning every result in flight (with 64 in
            # flight that scan was a few percent of each replica's CPU). A jump wider
            # than what is kept scans instead.
            if floor - old <= len(results):
                for q in range(old, floor):
                    results.pop(q, None)
            else:
                for q in [q for q in results if q < floor]:
                    del results[q]
        return result

    def applied(self, client_id: str, sequence: int) -> bool:
        s = self._sessions.get(client_id)
        return s is not None and (sequence < s.floor or sequence in s.results)

    def expire(self, client_id: str) -> None:
        """Forget a client whose session expired (decided through the log)."""
        self._sessions.pop(client_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def dump(self) -> dict[str, tuple[int, dict[int, Any]]]:
        """Plain data for a snapshot."""
        return {c: (s.floor, dict(s.results)) for c, s in self._sessions.items()}

    @classmethod
    def load(cls, data: dict[str, tuple[int, dict[int, Any]]]) -> SessionTable:
        t = cls()
        for c, (floor, results) in data.items():
            s = t._sessions[c] = _Session()
            # Only results >= floor are kept (the invariant ``apply`` relies on).
            s.floor, s.results = floor, {q: r for q, r in results.items() if q >= floor}
        return t
