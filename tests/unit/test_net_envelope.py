"""The seed's envelope: JSON shape, field validation, ids, timestamps, error messages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from distsync.errors import AuthError, DistSyncError, InvalidRequest, ProtocolError
from distsync.net.envelope import (
    EXTRA_MSG_TYPES,
    MSG_TYPES,
    SEED_MSG_TYPES,
    Envelope,
    MsgIdGenerator,
    error_envelope,
    remote_error,
    utc_timestamp,
)

SEED_EXAMPLE = {
    "msg_id": "node_0-12345",
    "msg_type": "lock_acquire",
    "sender_id": "node_0",
    "receiver_id": "node_1",
    "payload": {"resource": "db_table", "lock_type": "EXCLUSIVE", "client_id": "client_abc"},
    "timestamp": "2025-10-25T10:30:00Z",
}


def seed_envelope() -> Envelope:
    return Envelope.from_wire(dict(SEED_EXAMPLE))


def test_to_json_is_exactly_the_seed_example() -> None:
    text = seed_envelope().to_json()
    assert text == json.dumps(SEED_EXAMPLE)
    # Same keys in the same order, not merely equal dicts.
    assert list(json.loads(text)) == list(SEED_EXAMPLE)


def test_to_json_renders_bytes_as_base64_strings() -> None:
    env = seed_envelope()
    payload: dict[Any, Any] = {
        "entries": [b"\x00\xffdata", b""],
        b"raw": 1,
    }  # msgpack allows bytes keys
    env.payload = payload
    rendered = json.loads(env.to_json())
    assert rendered["payload"] == {"entries": ["base64:AP9kYXRh", "base64:"], "base64:cmF3": 1}


def test_seed_message_types_are_registered_with_the_design_additions() -> None:
    assert set(SEED_MSG_TYPES) <= MSG_TYPES
    assert set(EXTRA_MSG_TYPES) <= MSG_TYPES
    for name in (
        "install_snapshot",
        "timeout_now",
        "session_keepalive",
        "ack",
        "error",
        "topology",
        "pre_vote",
        "pre_vote_response",
        "read_index",
        "read_index_response",
        "status",
        "hello",
        "auth",
    ):
        assert name in MSG_TYPES
    assert len(SEED_MSG_TYPES) == 13


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("msg_id", 7),
        ("msg_id", ""),
        ("msg_type", b"lock_acquire"),
        ("sender_id", None),
        ("sender_id", ""),
        ("receiver_id", 1.5),
        ("payload", [1, 2]),
        ("timestamp", 1761388200),
        ("timestamp", "2025-10-25 10:30:00"),
        ("timestamp", "2025-10-25T10:30:00+00:00"),
    ],
)
def test_a_bad_field_is_named(field: str, value: object) -> None:
    wire: dict[str, object] = dict(SEED_EXAMPLE)
    wire[field] = value
    with pytest.raises(ProtocolError, match=re.escape(repr(field))):
        Envelope.from_wire(wire)
    env = seed_envelope()
    setattr(env, field, value)
    with pytest.raises(ProtocolError, match=re.escape(repr(field))):
        env.validate()


@pytest.mark.parametrize("field", list(SEED_EXAMPLE))
def test_a_missing_field_is_named(field: str) -> None:
    wire = dict(SEED_EXAMPLE)
    del wire[field]
    with pytest.raises(ProtocolError, match=f"missing field '{field}'"):
        Envelope.from_wire(wire)


def test_unknown_msg_type_is_named() -> None:
    wire = dict(SEED_EXAMPLE, msg_type="lock_steal")
    with pytest.raises(ProtocolError, match="unknown msg_type 'lock_steal'"):
        Envelope.from_wire(wire)


def test_non_map_body_is_refused() -> None:
    with pytest.raises(ProtocolError, match="must be a map, got list"):
        Envelope.from_wire([1, 2, 3])


def test_extra_keys_are_ignored_for_rolling_upgrades() -> None:
    env = Envelope.from_wire(dict(SEED_EXAMPLE, trace_id="abc"))
    assert env == seed_envelope()


def test_fractional_seconds_and_empty_receiver_are_accepted() -> None:
    Envelope.from_wire(dict(SEED_EXAMPLE, timestamp="2025-10-25T10:30:00.123456Z"))
    Envelope.from_wire(dict(SEED_EXAMPLE, receiver_id=""))


def test_msg_ids_are_sender_dash_counter_and_increase() -> None:
    ids = MsgIdGenerator("node_0", start=12345)
    assert [ids() for _ in range(3)] == ["node_0-12345", "node_0-12346", "node_0-12347"]
    with pytest.raises(ValueError):
        MsgIdGenerator("")


def test_timestamps_are_iso_utc_with_z() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00Z"
    assert utc_timestamp(1761388200.9) == "2025-10-25T10:30:00Z"
    assert utc_timestamp(1761388201) == "2025-10-25T10:30:01Z"  # the cache moves on
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_timestamp())


def test_make_and_reply() -> None:
    a, b = MsgIdGenerator("client_a"), MsgIdGenerator("node_1")
    req = Envelope.make(a, "lock_status", "node_1", {"resource": "r"}, now=0)
    assert (req.msg_id, req.sender_id, req.timestamp) == (
        "client_a-1",
        "client_a",
        "1970-01-01T00:00:00Z",
    )
    assert req.reply_to is None
    rep = req.reply(b, "ack", {"holders": []})
    rep.validate()
    assert (rep.receiver_id, rep.reply_to, rep.sender_id) == ("client_a", "client_a-1", "node_1")
    assert rep.payload == {"holders": [], "reply_to": "client_a-1"}


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (ProtocolError("field 'payload' must be a map"), ProtocolError),
        (AuthError("wrong cluster secret"), AuthError),
        (InvalidRequest("not the holder"), InvalidRequest),
        (RuntimeError("boom"), DistSyncError),
    ],
)
def test_error_envelopes_name_the_problem_and_map_back(exc: Exception, cls: type) -> None:
    ids = MsgIdGenerator("node_1")
    env = error_envelope(ids, "client_a", exc, reply_to="client_a-9")
    env.validate()
    assert env.msg_type == "error"
    assert env.payload["message"] == str(exc)
    assert env.reply_to == "client_a-9"
    err = remote_error(env)
    assert type(err) is cls
    assert str(err) == f"node_1: {exc}"
