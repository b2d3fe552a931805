"""``distsync debug`` against a real ``distsync serve`` process on 127.0.0.1: the request
and the reply printed as the seed's JSON rendering, a proposal sent with a ``base64:``
payload, an ``error`` reply shown as an envelope, and a refused handshake. The cluster is
one node (it elects itself), started in a ``with`` block that kills it however the test
ends."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distsync.cli import main
from distsync.net.envelope import FIELDS
from distsync.node import encode_command
from distsync.testing.cluster import ProcessCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProcessCluster]:
    with ProcessCluster(1) as c:
        c.wait_for_leader(timeout=15.0)
        yield c


def debug(
    c: ProcessCluster, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``distsync debug --peer <node_0>``; its exit code, printed envelopes, stderr."""
    secret = str(c.base_dir / "node_0.secret")
    code = main(["debug", "--peer", c.address("node_0"), "--secret-file", secret, *argv])
    out, err = capsys.readouterr()
    return code, documents(out), err


def documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after another (one per line, or indented)."""
    dec, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        doc, pos = dec.raw_decode(text, pos)
        docs.append(doc)
    return docs


def test_status_request_and_reply_in_the_seed_shape(
    cluster: ProcessCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, (sent, got), _ = debug(cluster, capsys)
    assert code == 0
    for env in (sent, got):
        assert list(env) == [name for name, _ in FIELDS]  # the seed's six keys, in its order
        assert time.strptime(env["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
    assert sent["msg_type"] == "status" and sent["receiver_id"] == "node_0"
    assert got["msg_type"] == "status" and got["sender_id"] == "node_0"
    assert got["payload"]["reply_to"] == sent["msg_id"]
    assert got["payload"]["role"] == "leader"


def test_a_proposal_with_a_bytes_payload_is_applied(
    cluster: ProcessCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    data = "base64:" + base64.b64encode(encode_command("incr", "k")).decode()
    payload = json.dumps({"data": data})
    code, (sent, got), _ = debug(cluster, capsys, "--send", "propose", "--payload", payload)
    assert code == 0, got
    assert sent["payload"] == {"data": data}  # rendered back exactly as given
    assert got["msg_type"] == "ack" and got["payload"]["index"] >= 1
    code2, (_, again), _ = debug(cluster, capsys, "--send", "propose", "--payload", payload)
    assert again["payload"]["result"] == got["payload"]["result"] + 1


def test_an_error_reply_is_shown_as_its_envelope(
    cluster: ProcessCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, (sent, got), _ = debug(
        cluster, capsys, "--send", "propose", "--payload", '{"data": 5}', "--pretty"
    )
    assert code == 1
    assert got["msg_type"] == "error" and got["payload"]["reply_to"] == sent["msg_id"]
    assert "'data'" in got["payload"]["message"]


def test_a_wrong_secret_is_refused_with_the_reason(
    cluster: ProcessCluster, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"not-the-cluster-secret-0123456789")
    code = main(["debug", "--peer", cluster.address("node_0"), "--secret-file", str(wrong)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "AuthError" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["debug", "--peer", "127.0.0.1:1", "--send", "no_such_type"]) == 2
    assert "no message type" in capsys.readouterr().err
    assert main(["debug", "--peer", "127.0.0.1:1", "--payload", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err
