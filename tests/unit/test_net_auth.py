"""The HMAC handshake state machines, secret loading and reconnect backoff, without I/O.

Every handshake message here also goes through the real frame codec, so what is tested
is what would cross the wire.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distsync.errors import AuthError, DistSyncError, ProtocolError
from distsync.net.auth import (
    DEV_SECRET,
    NONCE_BYTES,
    SECRET_ENV,
    ClientHandshake,
    InsecureSecretWarning,
    ServerHandshake,
    compute_proof,
    load_secret,
)
from distsync.net.envelope import Envelope, MsgIdGenerator, error_envelope
from distsync.net.framing import FrameDecoder, FrameEncoder
from distsync.net.transport import Backoff

SECRET = b"correct horse battery staple"


def wire(e: Envelope) -> Envelope:
    """``e`` after encoding and decoding, as the peer sees it."""
    dec = FrameDecoder()
    dec.feed(FrameEncoder().encode(e))
    out = dec.next_envelope()
    assert out is not None
    return out


def pair(
    client_secret: bytes = SECRET,
    server_secret: bytes = SECRET,
    *,
    expected: str | None = None,
    allowed_peers: set[str] | None = None,
) -> tuple[ClientHandshake, ServerHandshake]:
    return (
        ClientHandshake(MsgIdGenerator("client_a"), client_secret, expected),
        ServerHandshake(MsgIdGenerator("node_1"), server_secret, allowed_peers),
    )


def run(client: ClientHandshake, server: ServerHandshake) -> None:
    hello = wire(client.start())
    server_hello = server.receive(hello)
    assert server_hello is not None and not server.done
    auth = client.receive(wire(server_hello))
    assert auth is not None and not client.done
    server_auth = server.receive(wire(auth))
    assert server_auth is not None and server.done
    assert client.receive(wire(server_auth)) is None


def test_same_secret_authenticates_both_ways_and_binds_ids() -> None:
    client, server = pair(expected="node_1")
    run(client, server)
    assert client.done and server.done
    assert client.peer_id == "node_1" and server.peer_id == "client_a"


def test_wrong_client_secret_is_refused_by_the_server() -> None:
    client, server = pair(client_secret=b"guess")
    server_hello = server.receive(wire(client.start()))
    assert server_hello is not None
    auth = client.receive(wire(server_hello))
    assert auth is not None
    with pytest.raises(AuthError, match="wrong cluster secret"):
        server.receive(wire(auth))
    assert not server.done
    # A failed handshake stays failed: a second try on the same connection is refused.
    with pytest.raises(ProtocolError):
        server.receive(wire(auth))


def test_client_refuses_a_server_that_cannot_prove_the_secret() -> None:
    client, server = pair()
    server_hello = server.receive(wire(client.start()))
    assert server_hello is not None
    client.receive(wire(server_hello))
    forged = Envelope.make(MsgIdGenerator("node_1"), "auth", "client_a", {"proof": b"\x00" * 32})
    with pytest.raises(AuthError, match="failed to prove"):
        client.receive(wire(forged))
    assert not client.done


def test_proofs_are_bound_to_role_ids_and_nonces() -> None:
    n1, n2 = b"\x01" * 32, b"\x02" * 32
    base = compute_proof(SECRET, "client", "a", "b", n1, n2)
    assert base != compute_proof(SECRET, "server", "a", "b", n1, n2)  # no reflection
    assert base != compute_proof(SECRET, "client", "c", "b", n1, n2)  # other client
    assert base != compute_proof(SECRET, "client", "a", "c", n1, n2)  # other server
    assert base != compute_proof(SECRET, "client", "a", "b", n2, n1)  # other session
    assert base != compute_proof(SECRET, "client", "ab", "", n1, n2)  # no id shifting
    assert base != compute_proof(b"other", "client", "a", "b", n1, n2)
    assert base == compute_proof(SECRET, "client", "a", "b", n1, n2)


def test_a_recorded_proof_does_not_replay_on_a_new_connection() -> None:
    client, server = pair()
    server_hello = server.receive(wire(client.start()))
    assert server_hello is not None
    recorded = client.receive(wire(server_hello))
    assert recorded is not None
    # The attacker replays hello + auth to a fresh server: its new nonce breaks the proof.
    attacker_view = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    replay_hello = Envelope.make(
        MsgIdGenerator("client_a"),
        "hello",
        "node_1",
        {"version": 1, "nonce": b"\x07" * NONCE_BYTES},
    )
    attacker_view.receive(wire(replay_hello))
    with pytest.raises(AuthError):
        attacker_view.receive(wire(recorded))


def test_expected_server_id_and_allowed_peers() -> None:
    client, server = pair(expected="node_2")
    hello = wire(client.start())
    assert hello.receiver_id == "node_2"
    # The server refuses a hello addressed to another node ...
    with pytest.raises(AuthError, match="addressed to 'node_2'"):
        server.receive(hello)
    # ... and the client refuses a server that names itself otherwise.
    client, _ = pair(expected="node_2")
    client.start()
    other = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    reply = other.receive(wire(ClientHandshake(MsgIdGenerator("client_a"), SECRET).start()))
    assert reply is not None
    with pytest.raises(AuthError, match="expected 'node_2'"):
        client.receive(wire(reply))
    client, server = pair(allowed_peers={"node_0", "node_2"})
    with pytest.raises(AuthError, match="not a member"):
        server.receive(wire(client.start()))


def test_handshake_refuses_messages_that_do_not_belong() -> None:
    ids = MsgIdGenerator("client_a")
    server = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    with pytest.raises(ProtocolError, match="expected a 'hello'"):
        server.receive(wire(Envelope.make(ids, "lock_acquire", "node_1", {"resource": "r"})))
    server = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    with pytest.raises(AuthError, match="version"):
        server.receive(wire(Envelope.make(ids, "hello", "", {"version": 99, "nonce": b"n" * 32})))
    server = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    with pytest.raises(ProtocolError, match="nonce"):
        server.receive(wire(Envelope.make(ids, "hello", "", {"version": 1, "nonce": "short"})))
    server = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    with pytest.raises(AuthError, match="own id"):
        server.receive(
            wire(
                Envelope.make(
                    MsgIdGenerator("node_1"), "hello", "", {"version": 1, "nonce": b"n" * 32}
                )
            )
        )


def test_client_surfaces_the_servers_error_message() -> None:
    client = ClientHandshake(MsgIdGenerator("client_a"), SECRET)
    client.start()
    refusal = error_envelope(MsgIdGenerator("node_1"), "client_a", AuthError("not a member"))
    with pytest.raises(AuthError, match="node_1: not a member"):
        client.receive(wire(refusal))


def test_nonces_come_from_the_injected_source() -> None:
    counter = itertools.count()

    def token_bytes(n: int) -> bytes:
        return bytes([next(counter)]) * n

    client = ClientHandshake(MsgIdGenerator("client_a"), SECRET, token_bytes=token_bytes)
    assert client.start().payload["nonce"] == b"\x00" * NONCE_BYTES


# -- secrets ----------------------------------------------------------------------------


def test_secret_from_value_file_env_in_that_order(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"from-file\n")
    env = {SECRET_ENV: "from-env"}
    assert load_secret("from-value", environ=env) == b"from-value"
    assert load_secret(b"raw\x00bytes", environ=env) == b"raw\x00bytes"
    assert load_secret(file=f, environ=env) == b"from-file"
    assert load_secret(environ=env) == b"from-env"
    f.write_bytes(b"crlf\r\n")
    assert load_secret(file=str(f)) == b"crlf"


def test_secret_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(ValueError, match="not both"):
        load_secret("a", file=empty)
    with pytest.raises(ValueError, match="empty"):
        load_secret(file=empty)
    with pytest.raises(ValueError, match="empty"):
        load_secret(environ={SECRET_ENV: ""})
    with pytest.raises(OSError):
        load_secret(file=tmp_path / "missing")


def test_no_secret_means_the_development_default_with_a_warning() -> None:
    with pytest.warns(InsecureSecretWarning, match="development default"):
        assert load_secret(environ={}) == DEV_SECRET


# -- backoff ----------------------------------------------------------------------------


def test_backoff_grows_exponentially_to_the_cap_with_injected_jitter() -> None:
    low = Backoff(base=0.1, cap=2.0, rand=lambda: 0.0)
    high = Backoff(base=0.1, cap=2.0, rand=lambda: 0.999999)
    assert [low.delay(a) for a in range(6)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0])
    assert high.delay(0) == pytest.approx(0.1)
    assert high.delay(10_000) == pytest.approx(2.0)  # no overflow after a long outage
    for attempt in range(20):
        assert 0 < low.delay(attempt) <= high.delay(attempt) <= 2.0


# -- fuzzing the handshake ----------------------------------------------------------------

handshake_payloads = st.dictionaries(
    st.sampled_from(["version", "nonce", "proof", "code", "message", "reply_to"]),
    st.one_of(
        st.none(),
        st.integers(-2, 3),
        st.text(max_size=8),
        st.binary(min_size=0, max_size=40),
        st.just(b"\x00" * NONCE_BYTES),
    ),
)
handshake_envelopes = st.builds(
    Envelope,
    msg_id=st.just("x-1"),
    msg_type=st.sampled_from(["hello", "auth", "error", "ack", "lock_acquire"]),
    sender_id=st.sampled_from(["client_a", "node_1", "mallory"]),
    receiver_id=st.sampled_from(["", "node_1", "client_a", "node_9"]),
    payload=handshake_payloads,
)


@given(st.lists(handshake_envelopes, max_size=5))
def test_server_handshake_on_arbitrary_messages_never_authenticates_without_the_secret(
    msgs: list[Envelope],
) -> None:
    server = ServerHandshake(MsgIdGenerator("node_1"), SECRET)
    for msg in msgs:
        try:
            server.receive(msg)
        except DistSyncError:  # AuthError, ProtocolError, or the peer's own error
            return
    # Without a proof made with the secret over the server's fresh nonce it cannot finish.
    assert not server.done


@given(st.lists(handshake_envelopes, max_size=5))
def test_client_handshake_on_arbitrary_messages_never_authenticates_without_the_secret(
    msgs: list[Envelope],
) -> None:
    client = ClientHandshake(MsgIdGenerator("client_a"), SECRET)
    client.start()
    for msg in msgs:
        try:
            client.receive(msg)
        except DistSyncError:
            return
    assert not client.done
