"""Effects of applying a lock command: plain data the node turns into replies.

:meth:`LockTable.apply <distsync.lock.table.LockTable.apply>` never answers anyone itself;
it returns these records, in a deterministic order, and the node that applied the entry
(the one the client waits on) answers each waiting client from them. An acquire's outcome
is exactly one of :class:`Grant`, :class:`Queued` (then later exactly one of Grant,
:class:`TimedOut`, :class:`Cancelled`), :class:`Deadlock` or :class:`Rejected`; a waiter is
matched by ``(session_id, request_id)``.

Records carrying a failure have ``error()``, the :mod:`distsync.errors` exception the
client should see. :func:`effect_to_wire` and :func:`effect_from_wire` turn a record into
plain msgpack-able data and back: for replies, and for results the node keeps for
deduplication (which go into snapshots).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from distsync.errors import DeadlockError, DistSyncError, InvalidRequest, LockTimeout
from distsync.lock.commands import Mode, RequestId

__all__ = [
    "Effect",
    "Grant",
    "Queued",
    "Deadlock",
    "Rejected",
    "Released",
    "TimedOut",
    "Cancelled",
    "SessionOpened",
    "SessionRenewed",
    "SessionClosed",
    "SessionExpired",
    "effect_to_wire",
    "effect_from_wire",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """``session_id`` now holds ``resource`` in ``mode``. ``token`` is the fencing token:
    the Raft index of the entry that granted, so it strictly increases per resource from
    one granting entry to the next (shared requests granted together by one entry share
    it; an exclusive grant never shares its entry's token with another grant)."""

    resource: str
    client_id: str
    session_id: str
    mode: Mode
    token: int
    request_id: RequestId


@dataclass(frozen=True, slots=True)
class Queued:
    """The acquire waits; ``position`` is its 0-based place in the FIFO queue."""

    resource: str
    client_id: str
    session_id: str
    mode: Mode
    request_id: RequestId
    position: int


@dataclass(frozen=True, slots=True)
class Deadlock:
    """The acquire was refused: waiting would close ``cycle`` in the wait-for graph.
    ``cycle`` names client ids starting with the requester; ``cycle_sessions`` the
    sessions behind them (the graph's nodes)."""

    resource: str
    client_id: str
    session_id: str
    request_id: RequestId
    cycle: tuple[str, ...]
    cycle_sessions: tuple[str, ...]

    def error(self) -> DeadlockError:
        path = " -> ".join(self.cycle + self.cycle[:1])
        return DeadlockError(
            f"acquiring {self.resource!r} would deadlock: {path}", list(self.cycle)
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was refused and changed nothing. ``code`` is machine-readable
    (``no_session``, ``not_owner``, ``not_holder``, ``stale_token``, ``already_held``,
    ``already_waiting``, ``not_waiting``, ``session_taken``, ``bad_command``);
    ``message`` names the bad field or value."""

    code: str
    message: str
    client_id: str | None = None
    session_id: str | None = None
    resource: str | None = None
    request_id: RequestId | None = None

    def error(self) -> DistSyncError:
        exc = InvalidRequest(self.message)
        exc.code = self.code  # the specific reason, for the wire error
        return exc


@dataclass(frozen=True, slots=True)
class Released:
    """``session_id`` no longer holds ``resource`` (grant ``token``). ``reason``:
    ``release``, ``session_closed`` or ``session_expired``."""

    resource: str
    client_id: str
    session_id: str
    token: int
    reason: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The acquire's timeout passed (or a try-lock found the lock taken): no grant."""

    resource: str
    client_id: str
    session_id: str
    request_id: RequestId

    def error(self) -> LockTimeout:
        return LockTimeout(f"acquiring {self.resource!r} timed out")


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The wait ended without a grant. ``reason``: ``cancelled`` (by the client),
    ``session_closed`` or ``session_expired``."""

    resource: str
    client_id: str
    session_id: str
    request_id: RequestId
    reason: str

    def error(self) -> DistSyncError:
        exc = InvalidRequest(f"acquiring {self.resource!r} was cancelled: {self.reason}")
        exc.code = self.reason
        return exc


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session_id: str
    client_id: str
    ttl: float
    deadline: float


@dataclass(frozen=True, slots=True)
class SessionRenewed:
    """A keepalive (or a reopen) moved the deadline to ``deadline``."""

    session_id: str
    client_id: str
    deadline: float


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session_id: str
    client_id: str


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The leader's clock passed the session's deadline; its locks went with it."""

    session_id: str
    client_id: str


Effect = (
    Grant
    | Queued
    | Deadlock
    | Rejected
    | Released
    | TimedOut
    | Cancelled
    | SessionOpened
    | SessionRenewed
    | SessionClosed
    | SessionExpired
)


_KINDS: dict[str, type] = {
    "grant": Grant,
    "queued": Queued,
    "deadlock": Deadlock,
    "rejected": Rejected,
    "released": Released,
    "timed_out": TimedOut,
    "cancelled": Cancelled,
    "session_opened": SessionOpened,
    "session_renewed": SessionRenewed,
    "session_closed": SessionClosed,
    "session_expired": SessionExpired,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _NAMES}
#: Per effect, its fields in order with what :func:`effect_to_wire` may have to convert,
#: from the declared types: 1 a mode (to its string), 2 a tuple (to a list), 0 nothing,
#: so that the fields declared str or int are not tested value by value.
_WIRE_FIELDS = {
    cls: tuple(
        (f.name, 1 if f.type == "Mode" else 2 if str(f.type).startswith("tuple") else 0)
        for f in dataclasses.fields(cls)
    )
    for cls in _NAMES
}


def effect_to_wire(effect: Effect) -> dict[str, Any]:
    """``effect`` as a plain dict: ``{"effect": "grant", "resource": ..., ...}``, the mode
    as its string and tuples as lists."""
    cls = type(effect)
    out: dict[str, Any] = {"effect": _NAMES[cls]}
    for name, convert in _WIRE_FIELDS[cls]:
        v = getattr(effect, name)
        if convert:
            if isinstance(v, Mode):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
        out[name] = v
    return out


def effect_from_wire(data: dict[str, Any]) -> Effect:
    """The inverse of :func:`effect_to_wire`.

    :raises ValueError: naming the problem, if ``data`` is no effect.
    """
    if not isinstance(data, dict):
        raise ValueError(f"an effect is a dict, not {type(data).__name__}")
    cls = _KINDS.get(data.get("effect"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown effect {data.get('effect')!r}")
    names = _FIELDS[cls]
    missing = [n for n in names if n not in data and _required(cls, n)]
    if missing:
        raise ValueError(f"{_NAMES[cls]} effect lacks {', '.join(missing)}")
    kw = {n: data[n] for n in names if n in data}
    if "mode" in kw:
        kw["mode"] = Mode(kw["mode"])
    for n in ("cycle", "cycle_sessions"):
        if n in kw:
            kw[n] = tuple(kw[n])
    effect: Effect = cls(**kw)
    return effect


def _required(cls: type, name: str) -> bool:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default is dataclasses.MISSING
