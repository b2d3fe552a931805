"""The node's pure parts: Raft messages in envelopes, the counter/KV state machine with
deduplication, the metrics text, addresses, and ``distsync serve``'s configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distsync.cli import build_parser
from distsync.errors import ProtocolError
from distsync.net.codec import pack_body, unpack_body
from distsync.net.envelope import Envelope
from distsync.node import (
    CounterKV,
    NodeMetrics,
    encode_command,
    message_to_payload,
    parse_address,
    payload_to_message,
)
from distsync.raft import ConfState, Entry, EntryKind, Message, MessageType, Snapshot


def through_wire(m: Message) -> Message:
    env = Envelope("n0-1", m.type.value, m.sender, m.to, message_to_payload(m))
    return payload_to_message(unpack_body(pack_body(env)))


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_raft_message_type_is_a_registered_wire_type(mtype: MessageType) -> None:
    m = Message(mtype, "node_1", "node_0", 3)
    assert through_wire(m) == m


def test_append_entries_round_trip_keeps_every_field() -> None:
    ents = [
        Entry(2, 8, b"a"),
        Entry(3, 9, b"", EntryKind.NOOP),
        Entry(3, 10, b"\x00" * 5, EntryKind.CONFIG),
    ]
    m = Message(
        MessageType.APPEND_ENTRIES,
        "node_1",
        "node_0",
        3,
        log_term=2,
        index=7,
        entries=ents,
        commit=6,
    )
    assert through_wire(m) == m
    r = Message(
        MessageType.APPEND_RESPONSE,
        "node_0",
        "node_1",
        3,
        log_term=1,
        index=9,
        reject=True,
        reject_hint=4,
    )
    assert through_wire(r) == r
    h = Message(MessageType.HEARTBEAT, "node_1", "node_0", 3, commit=5, context=b"ctx")
    assert through_wire(h) == h


def test_install_snapshot_round_trip() -> None:
    snap = Snapshot(100, 4, ConfState(("node_0", "node_1", "node_2"), ("node_3",)), b"state")
    m = Message(MessageType.INSTALL_SNAPSHOT, "node_2", "node_0", 5, snapshot=snap)
    assert through_wire(m) == m


@pytest.mark.parametrize(
    "payload",
    [
        {"t": -1},
        {"t": "3"},
        {"t": 1, "i": 1.5},
        {"t": 1, "x": "not bytes"},
        {"t": 1, "f": 2, "e": [[1, 0, "str data"]]},
        {"t": 1, "f": 2, "e": [[1, 99, b""]]},
        {"t": 1, "f": 2, "e": [[1, 0]]},
        {"t": 1, "e": [[1, 0, b""]]},
        {"t": 1, "s": [1, 1, ["a"], [], "str"]},
        {"t": 1, "s": [1, 1]},
    ],
)
def test_malformed_raft_payloads_are_protocol_errors(payload: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        payload_to_message(Envelope("n0-1", "append_entries", "node_0", "node_1", payload))


def test_counter_kv_applies_commands_and_deduplicates_retries() -> None:
    sm = CounterKV()
    assert sm.apply(encode_command("incr", client_id="c", sequence=1)) == 1
    # The same (client, sequence) again: same answer, not applied twice.
    assert sm.apply(encode_command("incr", client_id="c", sequence=1)) == 1
    assert sm.counter == 1
    assert sm.apply(encode_command("incr", value=5, client_id="c", sequence=2)) == 6
    assert sm.apply(encode_command("set", "k", b"v", "c", 3)) is None
    assert sm.apply(encode_command("get", "k", None, "c", 4)) == b"v"
    assert sm.apply(encode_command("incr", "n", 2)) == 2  # no client: no deduplication
    assert sm.apply(encode_command("incr", "n", 2)) == 4
    assert sm.apply(b"\xc1 not msgpack") is None  # opaque data only counts
    assert sm.applied_commands == 8  # entries applied, the duplicate included
    # A sequence below what the client acknowledged is refused, not re-executed.
    sm.apply(encode_command("incr", client_id="d", sequence=10, first_unacked=10))
    assert sm.apply(encode_command("incr", client_id="d", sequence=3))["error"] == "stale_sequence"


def test_counter_kv_snapshot_restores_the_same_state() -> None:
    sm = CounterKV()
    for i in range(5):
        sm.apply(encode_command("incr", client_id="c", sequence=i))
        sm.apply(encode_command("set", f"k{i}", i))
    copy = CounterKV()
    copy.restore(sm.snapshot())
    assert (copy.counter, copy.kv, copy.applied_commands) == (
        sm.counter,
        sm.kv,
        sm.applied_commands,
    )
    # Deduplication survives the snapshot: a retry of sequence 4 is answered, not applied.
    assert copy.apply(encode_command("incr", client_id="c", sequence=4)) == 5
    assert copy.counter == 5
    copy.restore(b"")
    assert copy.counter == 0 and copy.kv == {}


def test_metrics_text_format() -> None:
    m = NodeMetrics("node_0")
    m.observe_fsync(0.00025, 10)
    m.observe_fsync(2.0, 1)
    m.count_message("in", "append_entries")
    m.proposals = 7
    text = m.render(
        {"role": "leader", "term": 3, "commit_index": 9, "last_applied": 9, "last_index": 10}
    )
    assert 'distsync_raft_role{node="node_0",role="leader"} 1' in text
    assert 'distsync_raft_role{node="node_0",role="follower"} 0' in text
    assert 'distsync_raft_term{node="node_0"} 3' in text
    assert 'distsync_proposals_total{node="node_0"} 7' in text
    assert 'distsync_fsync_seconds_bucket{node="node_0",le="0.0002"} 0' in text
    assert 'distsync_fsync_seconds_bucket{node="node_0",le="0.0003"} 1' in text
    assert 'distsync_fsync_seconds_bucket{node="node_0",le="1.0"} 1' in text
    assert 'distsync_fsync_seconds_bucket{node="node_0",le="+Inf"} 2' in text
    assert 'distsync_fsync_seconds_count{node="node_0"} 2' in text
    assert 'distsync_messages_total{node="node_0",direction="in",type="append_entries"} 1' in text
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:7400") == ("127.0.0.1", 7400)
    assert parse_address("[::1]:7400") == ("::1", 7400)
    for bad in ("127.0.0.1", ":7400", "host:port", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_serve_config_from_toml_with_flags_on_top(tmp_path: Path) -> None:
    from distsync.cli import _serve_config

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    conf = tmp_path / "node.toml"
    conf.write_text(
        f"""
id = "node_0"
listen = "127.0.0.1:7400"
data_dir = "{tmp_path / "data"}"
secret_file = "{secret}"
metrics_port = 9100
election_tick = 12
snapshot_entries = 500

[peers]
node_1 = "127.0.0.1:7401"
node_2 = "127.0.0.1:7402"
"""
    )
    cfg = _serve_config(serve_args("--config", str(conf), "--listen", "127.0.0.1:7500"))
    assert cfg.id == "node_0"
    assert cfg.listen == ("127.0.0.1", 7500)  # the flag wins
    assert cfg.peers == {"node_1": ("127.0.0.1", 7401), "node_2": ("127.0.0.1", 7402)}
    assert cfg.secret == b"s3cret"
    assert (cfg.metrics_port, cfg.election_tick, cfg.snapshot_entries) == (9100, 12, 500)
    assert cfg.sync is True


def test_serve_config_from_flags_only_and_errors(tmp_path: Path) -> None:
    from distsync.cli import _serve_config

    cfg = _serve_config(
        serve_args(
            "--id", "node_1", "--listen", "127.0.0.1:7401",
            "--peers", "node_0=127.0.0.1:7400,node_2=127.0.0.1:7402",
            "--data-dir", str(tmp_path),
        )
    )  # fmt: skip
    assert cfg.peers == {"node_0": ("127.0.0.1", 7400), "node_2": ("127.0.0.1", 7402)}
    assert cfg.secret is None  # decided at start: $DISTSYNC_SECRET or the dev default
    with pytest.raises(ValueError, match="--listen"):
        _serve_config(serve_args("--id", "n", "--data-dir", str(tmp_path)))
    with pytest.raises(ValueError, match="id=host:port"):
        _serve_config(serve_args("--id", "n", "--listen", "h:1", "--data-dir", "d", "--peers", "x"))
    with pytest.raises(ValueError, match="also listed"):
        _serve_config(
            serve_args("--id", "n", "--listen", "h:1", "--data-dir", "d", "--peers", "n=h:2")
        )
