"""Commands of the lock table: small typed records, and their compact log encoding.

A command is what a Raft entry of the lock service carries. The leader builds one from a
client request (or from its own clock, for expiry), encodes it with :func:`encode_command`
and proposes the bytes; every replica decodes them with :func:`decode_command` and applies
the record to its :class:`~distsync.lock.table.LockTable`.

Encoding (version 1): a msgpack array ``[1, opcode, field, ...]`` with the fields in the
order the record declares them; a mode is ``0`` (shared) or ``1`` (exclusive); times are
floats in seconds; absent optional fields are ``nil``. The version comes first so that a
later layout can be told apart from this one by any replica that has to read an old log;
opcodes are never reused.

Every record validates itself when built (``__post_init__``), so a command that exists is
well-formed: the leader turns a bad client request into :class:`~distsync.errors.InvalidRequest`
*before* proposing it, and a replica decoding a log entry gets either a valid record or an
``InvalidRequest`` naming the bad field -- never a half-checked one. Time is always an
argument (``now``, stamped by the leader from its clock): replicas never read a clock.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from distsync.errors import InvalidRequest

__all__ = [
    "ENCODING_VERSION",
    "MAX_NAME",
    "Mode",
    "RequestId",
    "Command",
    "OpenSession",
    "KeepAlive",
    "CloseSession",
    "Acquire",
    "Release",
    "Cancel",
    "ExpireSessions",
    "ExpireWaits",
    "ExtendSessions",
    "encode_command",
    "decode_command",
]

#: The first element of every encoded command.
ENCODING_VERSION = 1

#: Longest resource, client or session id (characters). Ids live in every replica's memory
#: and in every snapshot; an unbounded one would let one client bloat all of them.
MAX_NAME = 1024

#: A client's correlation id for one acquire: an int or a short str, echoed in the effects.
RequestId = int | str


class Mode(str, enum.Enum):
    """Lock modes. Many SHARED holders may coexist; an EXCLUSIVE holder is alone."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


# ---- field checks: each raises InvalidRequest naming the field ----------------------------


def _name(value: object, field: str) -> str:
    # Exactly str: a subclass could hash or compare differently on another replica.
    if type(value) is not str:
        raise InvalidRequest(f"{field} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{field} must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidRequest(f"{field} is longer than {MAX_NAME} characters")
    return value


_INF = math.inf


def _time(value: object, field: str, *, positive: bool = False, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    # bool is an int subclass; True seconds is surely a bug, so it is refused.
    if type(value) not in (int, float):
        raise InvalidRequest(f"{field} must be a number, not {type(value).__name__}")
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v):
        raise InvalidRequest(f"{field} must be finite, not {v!r}")
    if v < 0 or (positive and v == 0):
        raise InvalidRequest(f"{field} must be {'> 0' if positive else '>= 0'}, not {v!r}")
    return v


def _fix_time(obj: object, field: str, *, positive: bool = False, optional: bool = False) -> None:
    # Stores the float only when it differs from what was given (an int, say): setting a
    # frozen field costs more than the check, and this runs for every decoded entry.
    v = getattr(obj, field)
    # The usual value, a finite float in range, passes with three comparisons (NaN fails
    # them all, and infinity the last; both go on to _time, which names the problem).
    if type(v) is float and (v > 0.0 if positive else v >= 0.0) and v < _INF:
        return
    t = _time(v, field, positive=positive, optional=optional)
    if t is not v:
        object.__setattr__(obj, field, t)


def _request_id(value: object) -> RequestId:
    if type(value) is int:
        return value
    if type(value) is str:
        if len(value) > MAX_NAME:
            raise InvalidRequest(f"request_id is longer than {MAX_NAME} characters")
        return value
    raise InvalidRequest(f"request_id must be an int or a str, not {type(value).__name__}")


def _mode(value: object) -> Mode:
    if isinstance(value, Mode):
        return value
    if type(value) is str:
        try:
            return Mode(value)
        except ValueError:
            pass
    raise InvalidRequest(f"mode must be 'shared' or 'exclusive', not {value!r}")


# ---- the records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open session ``session_id`` for ``client_id``; it lives ``ttl`` s past ``now`` and
    past each keepalive. Opening an open session of the same client renews it."""

    session_id: str
    client_id: str
    ttl: float
    now: float

    def __post_init__(self) -> None:
        _name(self.session_id, "session_id")
        _name(self.client_id, "client_id")
        _fix_time(self, "ttl", positive=True)
        _fix_time(self, "now")


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Push the session's deadline to ``now + ttl`` (never earlier than it was)."""

    session_id: str
    client_id: str
    now: float

    def __post_init__(self) -> None:
        _name(self.session_id, "session_id")
        _name(self.client_id, "client_id")
        _fix_time(self, "now")


@dataclass(frozen=True, slots=True)
class CloseSession:
    """End the session now: its locks are released and its wait cancelled."""

    session_id: str
    client_id: str

    def __post_init__(self) -> None:
        _name(self.session_id, "session_id")
        _name(self.client_id, "client_id")


@dataclass(frozen=True, slots=True)
class Acquire:
    """Ask for ``resource`` in ``mode``. ``timeout`` (s from ``now``): ``None`` waits until
    the session ends, ``0`` is a try-lock that never queues."""

    resource: str
    mode: Mode
    client_id: str
    session_id: str
    request_id: RequestId
    now: float
    timeout: float | None = None

    def __post_init__(self) -> None:
        _name(self.resource, "resource")
        if type(self.mode) is not Mode:
            object.__setattr__(self, "mode", _mode(self.mode))
        _name(self.client_id, "client_id")
        _name(self.session_id, "session_id")
        _request_id(self.request_id)
        _fix_time(self, "now")
        _fix_time(self, "timeout", optional=True)


@dataclass(frozen=True, slots=True)
class Release:
    """Give back ``resource``. With ``token``, only the grant of that fencing token is
    released (a late release of an older grant is refused rather than freeing a newer)."""

    resource: str
    client_id: str
    session_id: str
    token: int | None = None

    def __post_init__(self) -> None:
        _name(self.resource, "resource")
        _name(self.client_id, "client_id")
        _name(self.session_id, "session_id")
        if self.token is not None and (type(self.token) is not int or self.token < 1):
            raise InvalidRequest(f"token must be a positive int or None, not {self.token!r}")


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw the waiting acquire ``request_id`` (the client gave up before a grant)."""

    resource: str
    client_id: str
    session_id: str
    request_id: RequestId

    def __post_init__(self) -> None:
        _name(self.resource, "resource")
        _name(self.client_id, "client_id")
        _name(self.session_id, "session_id")
        _request_id(self.request_id)


@dataclass(frozen=True, slots=True)
class ExpireSessions:
    """Leader's decision: every session whose deadline is ``<= now`` has expired."""

    now: float

    def __post_init__(self) -> None:
        _fix_time(self, "now")


@dataclass(frozen=True, slots=True)
class ExpireWaits:
    """Leader's decision: every wait whose deadline is ``<= now`` has timed out."""

    now: float

    def __post_init__(self) -> None:
        _fix_time(self, "now")


@dataclass(frozen=True, slots=True)
class ExtendSessions:
    """A new leader's first command: every session's deadline becomes at least
    ``now + ttl``, plus ``by`` (one election timeout), as etcd's lessor does on promotion:
    keepalives sent to the old leader may have been lost with it."""

    now: float
    by: float

    def __post_init__(self) -> None:
        _fix_time(self, "now")
        _fix_time(self, "by")


Command = (
    OpenSession
    | KeepAlive
    | CloseSession
    | Acquire
    | Release
    | Cancel
    | ExpireSessions
    | ExpireWaits
    | ExtendSessions
)

# Opcodes are part of the log format: never renumber or reuse one.
_OPCODES: dict[type, int] = {
    OpenSession: 1,
    KeepAlive: 2,
    CloseSession: 3,
    Acquire: 4,
    Release: 5,
    Cancel: 6,
    ExpireSessions: 7,
    ExpireWaits: 8,
    ExtendSessions: 9,
}
_BY_OPCODE: dict[int, type] = {op: cls for cls, op in _OPCODES.items()}
#: Field names per opcode, in declaration (= encoding) order.
_FIELDS: dict[int, tuple[str, ...]] = {
    op: tuple(f.name for f in dataclasses.fields(cls)) for cls, op in _OPCODES.items()
}
_MODE_CODE = {Mode.SHARED: 0, Mode.EXCLUSIVE: 1}
_CODE_MODE = {0: Mode.SHARED, 1: Mode.EXCLUSIVE}


def encode_command(cmd: Command) -> bytes:
    """The log entry bytes of ``cmd`` (see the module docstring for the layout)."""
    op = _OPCODES.get(type(cmd))
    if op is None:
        raise TypeError(f"not a lock command: {type(cmd).__name__}")
    fields: list[Any] = [ENCODING_VERSION, op]
    for name in _FIELDS[op]:
        v = getattr(cmd, name)
        fields.append(_MODE_CODE[v] if isinstance(v, Mode) else v)
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def decode_command(data: bytes) -> Command:
    """The command in ``data``; raises :class:`InvalidRequest` naming what is wrong."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types; all mean "not msgpack"
        raise InvalidRequest(f"lock command is not valid msgpack: {exc}") from None
    if type(obj) is not list or len(obj) < 2:
        raise InvalidRequest("lock command must be an array [version, opcode, ...]")
    if obj[0] != ENCODING_VERSION or type(obj[0]) is not int:
        raise InvalidRequest(f"unknown lock command encoding version {obj[0]!r}")
    cls = _BY_OPCODE.get(obj[1]) if type(obj[1]) is int else None
    if cls is None:
        raise InvalidRequest(f"unknown lock command opcode {obj[1]!r}")
    names = _FIELDS[obj[1]]
    args = obj[2:]
    if len(args) != len(names):
        raise InvalidRequest(
            f"{cls.__name__} takes {len(names)} fields ({', '.join(names)}), got {len(args)}"
        )
    if cls is Acquire:
        m = args[1]
        if type(m) is not int or m not in _CODE_MODE:
            raise InvalidRequest(f"mode must be 0 (shared) or 1 (exclusive), not {m!r}")
        args[1] = _CODE_MODE[m]
    # Positional, in declaration order: the layout of the encoding.
    cmd: Command = cls(*args)
    return cmd
