"""The seed's envelope: the one shape of every message distsync sends (DESIGN.md §3).

An :class:`Envelope` has exactly the six fields of the seed's example, in its order::

    {"msg_id": "node_0-12345", "msg_type": "lock_acquire", "sender_id": "node_0",
     "receiver_id": "node_1", "payload": {...}, "timestamp": "2025-10-25T10:30:00Z"}

Field invariants (checked by :meth:`Envelope.validate` and on every decoded frame):

- ``msg_id``: non-empty ``str``, ``"<sender>-<counter>"`` when made by :class:`MsgIdGenerator`.
- ``msg_type``: one of :data:`MSG_TYPES` (the single registry; extend it there).
- ``sender_id``: non-empty ``str``, the node or client id of the sender.
- ``receiver_id``: ``str``; empty only when the sender does not know it yet (a client's
  first ``hello`` to an address).
- ``payload``: ``dict`` (keys are strings by convention; msgpack also allows ``bytes``);
  values are anything msgpack carries natively, including ``bytes`` (Raft entry data
  travels as raw bytes, not base64). Handlers check their own payload fields.
- ``timestamp``: ISO-8601 UTC ending in ``Z`` (``2025-10-25T10:30:00Z``, fractional
  seconds accepted).

Replies: a message answering a request carries the request's ``msg_id`` in
``payload["reply_to"]`` (see :meth:`Envelope.reply`); that is how a client matches many
in-flight requests on one connection. The envelope itself stays the seed's six fields.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from distsync.errors import DistSyncError, ProtocolError

__all__ = [
    "SEED_MSG_TYPES",
    "EXTRA_MSG_TYPES",
    "HANDSHAKE_MSG_TYPES",
    "MSG_TYPES",
    "FIELDS",
    "REPLY_TO",
    "Envelope",
    "MsgIdGenerator",
    "utc_timestamp",
    "jsonable",
    "error_envelope",
    "remote_error",
]

#: The seed's message types, with the seed's meanings.
SEED_MSG_TYPES: tuple[str, ...] = (
    "request_vote",
    "vote_response",
    "append_entries",
    "append_response",
    "lock_acquire",
    "lock_release",
    "lock_status",
    "enqueue",
    "dequeue",
    "redistribute",
    "cache_read",
    "cache_write",
    "cache_invalidate",
)

#: What the design adds (DESIGN.md §3, §4): snapshots, leader transfer, sessions,
#: replies, membership, pre-vote, linearizable reads, status, Raft heartbeats and
#: client commands for the replicated log (``propose``). Add new types here.
EXTRA_MSG_TYPES: tuple[str, ...] = (
    "install_snapshot",
    "timeout_now",
    "session_keepalive",
    "session_open",
    "session_close",
    "ack",
    "error",
    "topology",
    "pre_vote",
    "pre_vote_response",
    "read_index",
    "read_index_response",
    "status",
    "heartbeat",
    "heartbeat_response",
    "propose",
)

#: The connection handshake (:mod:`distsync.net.auth`); valid only before it completes.
HANDSHAKE_MSG_TYPES: tuple[str, ...] = ("hello", "auth")

#: Every message type a peer may send: the one registry the decoder checks against.
MSG_TYPES: frozenset[str] = frozenset(SEED_MSG_TYPES + EXTRA_MSG_TYPES + HANDSHAKE_MSG_TYPES)

#: The envelope's fields in the seed's order, with the Python type each must have.
FIELDS: tuple[tuple[str, type], ...] = (
    ("msg_id", str),
    ("msg_type", str),
    ("sender_id", str),
    ("receiver_id", str),
    ("payload", dict),
    ("timestamp", str),
)

#: Payload key of a reply naming the request it answers.
REPLY_TO = "reply_to"

# ISO-8601 UTC as the seed writes it, optionally with fractional seconds. A regex rather
# than datetime.fromisoformat: Python 3.10's parser refuses the 'Z' suffix, and this is
# on every decoded frame, where a precompiled match is the cheaper check.
_TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\Z")

# The last timestamp that passed the regex (see _check_fields).
_last_good_timestamp = ""

# Formatting a time costs ~1 us; many messages share a second, so keep the last one.
_ts_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """``now`` (seconds since the epoch; default: the current time) as the seed writes it:
    ISO-8601 UTC, whole seconds, ``Z`` suffix, e.g. ``"2025-10-25T10:30:00Z"``."""
    global _ts_cache
    sec = int(time.time() if now is None else now)
    cached_sec, text = _ts_cache
    if sec != cached_sec:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))
        _ts_cache = (sec, text)
    return text


class MsgIdGenerator:
    """Makes ``"<sender>-<counter>"`` message ids, the counter strictly increasing.

    One generator per sender and process; ids are unique per sender for the process's
    life, which is what reply matching needs (pending requests die with the connection).
    """

    __slots__ = ("sender_id", "_counter")

    def __init__(self, sender_id: str, start: int = 1) -> None:
        if not sender_id:
            raise ValueError("sender_id must be a non-empty string")
        self.sender_id = sender_id
        self._counter = itertools.count(start)

    def __call__(self) -> str:
        return f"{self.sender_id}-{next(self._counter)}"


@dataclass(slots=True)
class Envelope:
    """One message: the seed's six fields (see the module docstring for the invariants).

    Construction does not validate (senders build envelopes on the hot path and mypy
    checks their types); :meth:`validate` does, and the decoder validates every frame
    through :meth:`from_wire` before an envelope exists.
    """

    msg_id: str
    msg_type: str
    sender_id: str
    receiver_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=utc_timestamp)

    @classmethod
    def make(
        cls,
        ids: MsgIdGenerator,
        msg_type: str,
        receiver_id: str,
        payload: dict[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Envelope:
        """A new envelope from ``ids.sender_id``, with the next id and the current time."""
        return cls(
            ids(),
            msg_type,
            ids.sender_id,
            receiver_id,
            {} if payload is None else payload,
            utc_timestamp(now),
        )

    def reply(
        self,
        ids: MsgIdGenerator,
        msg_type: str,
        payload: dict[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Envelope:
        """An answer to this envelope: addressed to its sender, ``payload["reply_to"]``
        set to its ``msg_id`` so the requester can match it."""
        body = {} if payload is None else dict(payload)
        body[REPLY_TO] = self.msg_id
        return Envelope.make(ids, msg_type, self.sender_id, body, now=now)

    @property
    def reply_to(self) -> str | None:
        """The ``msg_id`` this envelope answers, or ``None`` if it answers nothing."""
        value = self.payload.get(REPLY_TO)
        return value if isinstance(value, str) else None

    def validate(self) -> None:
        """Raise :class:`ProtocolError` naming the first field that breaks its invariant."""
        _check_fields(
            self.msg_id,
            self.msg_type,
            self.sender_id,
            self.receiver_id,
            self.payload,
            self.timestamp,
        )

    def to_wire(self) -> dict[str, Any]:
        """The map that goes on the wire (msgpack): the six fields in the seed's order."""
        return {
            "msg_id": self.msg_id,
            "msg_type": self.msg_type,
            "sender_id": self.sender_id,
            "receiver_id": self.receiver_id,
            "payload": self.payload,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Envelope:
        """Validate a decoded map and build the envelope; :class:`ProtocolError` names the
        problem (not a map, missing field, wrong type, unknown ``msg_type``).

        Keys other than the six are ignored, so a newer peer may add fields without
        breaking older ones (rolling upgrades)."""
        if not isinstance(obj, dict):
            raise ProtocolError(f"message body must be a map, got {type(obj).__name__}")
        try:
            msg_id = obj["msg_id"]
            msg_type = obj["msg_type"]
            sender_id = obj["sender_id"]
            receiver_id = obj["receiver_id"]
            payload = obj["payload"]
            timestamp = obj["timestamp"]
        except KeyError as exc:
            raise ProtocolError(f"missing field {exc.args[0]!r}") from None
        _check_fields(msg_id, msg_type, sender_id, receiver_id, payload, timestamp)
        return cls(msg_id, msg_type, sender_id, receiver_id, payload, timestamp)

    def to_json(self, *, indent: int | None = None) -> str:
        """The JSON rendering for logs and ``distsync debug``: exactly the seed's shape
        (same keys, same order, same value types).

        Payload ``bytes`` have no JSON type; they are rendered as the string
        ``"base64:<standard base64>"`` (``bytes`` dict keys likewise). The rendering is for
        people; the wire form is msgpack, which carries bytes as bytes.
        """
        return json.dumps(jsonable(self.to_wire()), indent=indent, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """``value`` with every ``bytes`` as ``"base64:..."`` and tuples as lists; anything
    else JSON cannot hold (a msgpack extension type) becomes its ``repr``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str) else str(jsonable(k))): jsonable(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _check_fields(
    msg_id: object,
    msg_type: object,
    sender_id: object,
    receiver_id: object,
    payload: object,
    timestamp: object,
) -> None:
    # Plain isinstance checks in field order: this runs once per received frame.
    if not isinstance(msg_id, str) or not msg_id:
        raise ProtocolError(_bad("msg_id", msg_id, "a non-empty string"))
    if not isinstance(msg_type, str):
        raise ProtocolError(_bad("msg_type", msg_type, "a string"))
    if msg_type not in MSG_TYPES:
        raise ProtocolError(f"unknown msg_type {msg_type[:64]!r}")
    if not isinstance(sender_id, str) or not sender_id:
        raise ProtocolError(_bad("sender_id", sender_id, "a non-empty string"))
    if not isinstance(receiver_id, str):
        raise ProtocolError(_bad("receiver_id", receiver_id, "a string"))
    if not isinstance(payload, dict):
        raise ProtocolError(_bad("payload", payload, "a map"))
    if not isinstance(timestamp, str):
        raise ProtocolError(_bad("timestamp", timestamp, "ISO-8601 UTC ending in 'Z'"))
    global _last_good_timestamp
    # Messages arriving together mostly share a timestamp (whole seconds): a string
    # comparison then stands in for the regex.
    if timestamp != _last_good_timestamp:
        if _TIMESTAMP_RE.match(timestamp) is None:
            raise ProtocolError(_bad("timestamp", timestamp, "ISO-8601 UTC ending in 'Z'"))
        _last_good_timestamp = timestamp


def _bad(name: str, value: object, expected: str) -> str:
    shown = repr(value)
    if len(shown) > 64:
        shown = shown[:61] + "..."
    return f"field {name!r} must be {expected}, got {type(value).__name__} {shown}"


def error_envelope(
    ids: MsgIdGenerator,
    receiver_id: str,
    exc: BaseException,
    *,
    reply_to: str | None = None,
) -> Envelope:
    """An ``error`` message telling the peer what went wrong: ``payload`` holds ``code``
    (the :class:`~distsync.errors.DistSyncError` code, ``"error"`` for anything else),
    ``message`` (names the bad field or value) and, if it answers a request, ``reply_to``."""
    code = exc.code if isinstance(exc, DistSyncError) else DistSyncError.code
    payload: dict[str, Any] = {"code": code, "message": str(exc) or type(exc).__name__}
    if reply_to is not None:
        payload[REPLY_TO] = reply_to
    return Envelope.make(ids, "error", receiver_id, payload)


def _error_classes() -> dict[str, type[DistSyncError]]:
    classes: dict[str, type[DistSyncError]] = {}
    todo: list[type[DistSyncError]] = [DistSyncError]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return classes


def remote_error(env: Envelope) -> DistSyncError:
    """The exception an ``error`` envelope stands for: the class whose ``code`` it names
    (plain :class:`DistSyncError` for an unknown code), its message prefixed by the
    sender so logs say which side refused. ``details`` on the exception is the whole
    payload, for fields beyond the message (a ``not_leader`` error's ``leader_addr``)."""
    code = env.payload.get("code")
    message = env.payload.get("message")
    cls = _error_classes().get(code if isinstance(code, str) else "", DistSyncError)
    text = f"{env.sender_id}: {message if isinstance(message, str) else 'error'}"
    try:
        exc = cls(text)
    except TypeError:  # a subclass with a different constructor
        exc = DistSyncError(text)
    exc.details = dict(env.payload)  # type: ignore[attr-defined]
    return exc
