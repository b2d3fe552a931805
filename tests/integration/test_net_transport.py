"""The wire layer over real TCP on 127.0.0.1: handshake, refusals, reconnects, TLS, matching.

Every test runs its own event loop under a hard timeout, listens on port 0 and closes
what it opened in ``finally``. Hostile peers are played by :class:`RawPeer`, which
speaks frames directly so it can send what a well-behaved :class:`Connection` never would.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from distsync.errors import (
    AuthError,
    ClusterUnavailable,
    DistSyncError,
    InvalidRequest,
    ProtocolError,
)
from distsync.net.auth import ClientHandshake, client_ssl_context, server_ssl_context
from distsync.net.envelope import Envelope, MsgIdGenerator, error_envelope
from distsync.net.framing import FrameDecoder, FrameEncoder
from distsync.net.transport import Backoff, Connection, PeerLink, Server, connect, serve

SECRET = b"integration-test-secret-0123456789"
HOST = "127.0.0.1"
TEST_TIMEOUT = 10.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT))


class Recorder:
    """A server handler that records every application envelope and answers requests:
    ``ack`` echoing the payload, or an ``error`` for ``msg_type == "lock_release"``."""

    def __init__(self) -> None:
        self.seen: list[Envelope] = []

    def __call__(self, conn: Connection, env: Envelope) -> None:
        self.seen.append(env)
        if env.msg_type == "lock_release":
            conn.send(
                error_envelope(
                    conn.ids, env.sender_id, InvalidRequest("not the holder"), reply_to=env.msg_id
                )
            )
        else:
            conn.send(env.reply(conn.ids, "ack", {"echo": env.payload}))


class RawPeer:
    """A client that writes frames by hand (asyncio streams are fine on the test side)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node_id: str
    ) -> None:
        self.reader, self.writer = reader, writer
        self.ids = MsgIdGenerator(node_id)
        self.enc = FrameEncoder()
        self.dec = FrameDecoder()

    @classmethod
    async def open(cls, port: int, node_id: str = "raw_client") -> RawPeer:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer, node_id)

    async def handshake(self, secret: bytes = SECRET) -> None:
        hs = ClientHandshake(self.ids, secret)
        self.send(hs.start())
        while not hs.done:
            env = await self.recv()
            assert env is not None, "server closed during the handshake"
            reply = hs.receive(env)
            if reply is not None:
                self.send(reply)

    def env(self, msg_type: str, payload: dict[str, Any] | None = None) -> Envelope:
        return Envelope.make(self.ids, msg_type, "node_1", payload or {})

    def send(self, *items: Envelope | bytes) -> None:
        """All ``items`` in one write (envelopes framed, bytes as they are)."""
        self.writer.write(
            b"".join(i if isinstance(i, bytes) else self.enc.encode(i) for i in items)
        )

    async def recv(self, timeout: float = 3.0) -> Envelope | None:
        """The next envelope, or ``None`` at EOF."""
        while True:
            env = self.dec.next_envelope()
            if env is not None:
                return env
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.dec.feed(data)

    async def expect_error_then_eof(self, match: str) -> Envelope:
        err = await self.recv()
        assert err is not None and err.msg_type == "error", err
        assert match in err.payload["message"], err.payload
        assert await self.recv() is None, "connection should be closed after the error"
        return err

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def start_server(recorder: Recorder | None = None, **kw: Any) -> Server:
    return await serve("node_1", SECRET, HOST, 0, handler=recorder or Recorder(), **kw)


# -- handshake --------------------------------------------------------------------------


def test_handshake_then_requests_and_error_replies() -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET, expected_peer_id="node_1")
            assert conn.peer_id == "node_1" and conn.is_open
            reply = await conn.request(
                Envelope.make(
                    conn.ids, "lock_acquire", "node_1", {"resource": "db", "data": b"\x00\xff"}
                ),
                2.0,
            )
            assert reply.msg_type == "ack" and reply.payload["echo"] == {
                "resource": "db",
                "data": b"\x00\xff",
            }
            assert reply.sender_id == "node_1" and reply.receiver_id == "client_a"
            with pytest.raises(InvalidRequest, match="node_1: not the holder"):
                await conn.request(Envelope.make(conn.ids, "lock_release", "node_1"), 2.0)
            assert [e.sender_id for e in rec.seen] == ["client_a", "client_a"]
            assert len(server.connections) == 1
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_wrong_secret_is_refused_before_any_message_reaches_the_application() -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec)
        raw = None
        try:
            with pytest.raises(AuthError, match="wrong cluster secret"):
                await connect(HOST, server.port, "client_a", b"not-the-secret")
            # A hostile client pipelines an application message right behind its bad proof.
            raw = await RawPeer.open(server.port)
            hs = ClientHandshake(raw.ids, b"not-the-secret")
            raw.send(hs.start())
            server_hello = await raw.recv()
            assert server_hello is not None and server_hello.msg_type == "hello"
            auth = hs.receive(server_hello)
            assert auth is not None
            raw.send(auth, raw.env("lock_acquire", {"resource": "db"}))
            err = await raw.expect_error_then_eof("wrong cluster secret")
            assert err.payload["code"] == "auth"
            await asyncio.sleep(0.05)
            assert rec.seen == []
            assert not server.connections
        finally:
            if raw is not None:
                await raw.close()
            await server.close()

    run(body)


def test_an_application_message_before_the_handshake_is_refused() -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec)
        raw = await RawPeer.open(server.port)
        try:
            raw.send(raw.env("lock_acquire", {"resource": "db"}))
            await raw.expect_error_then_eof("expected a 'hello'")
            assert rec.seen == []
        finally:
            await raw.close()
            await server.close()

    run(body)


def test_a_silent_peer_is_cut_at_the_handshake_timeout() -> None:
    async def body() -> None:
        server = await start_server(handshake_timeout=0.2)
        raw = await RawPeer.open(server.port)
        try:
            await raw.expect_error_then_eof("handshake not completed within 0.2s")
        finally:
            await raw.close()
            await server.close()

    run(body)


# -- protocol errors close one connection only --------------------------------------------


def test_oversized_frame_gets_an_error_and_closes_only_that_connection() -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec, max_frame_size=64 * 1024)
        good = None
        raw = await RawPeer.open(server.port, "bad_client")
        try:
            good = await connect(HOST, server.port, "good_client", SECRET)
            await raw.handshake()
            raw.send(struct.pack(">I", 64 * 1024 + 1) + b"x" * 100)
            err = await raw.expect_error_then_eof("frame length 65537 exceeds max_frame_size 65536")
            assert err.payload["code"] == "protocol"
            # The other connection and the server itself are unaffected.
            reply = await good.request(Envelope.make(good.ids, "status", "node_1", {"n": 1}), 2.0)
            assert reply.payload["echo"] == {"n": 1}
            again = await connect(HOST, server.port, "another_client", SECRET)
            again.close()
            assert all(e.sender_id != "bad_client" for e in rec.seen)
        finally:
            await raw.close()
            if good is not None:
                good.close()
            await server.close()

    run(body)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "undecodable msgpack"),
        (None, "unknown msg_type 'lock_steal'"),
        (None, "field 'sender_id' is 'someone_else'"),
    ],
    ids=["garbage", "unknown-type", "spoofed-sender"],
)
def test_bad_messages_are_named_to_the_sender(frame: bytes | None, message: str) -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec)
        raw = await RawPeer.open(server.port)
        try:
            await raw.handshake()
            if frame is not None:
                raw.send(frame)
            elif "lock_steal" in message:
                bad = raw.env("status")
                bad.msg_type = "lock_steal"
                raw.send(FrameEncoder().encode_batch([]) + _frame_unchecked(bad))
            else:
                spoof = raw.env("lock_acquire")
                spoof.sender_id = "someone_else"
                raw.send(spoof)
            err = await raw.expect_error_then_eof(message)
            if frame is None and "sender_id" in message:
                # The refusal answers the forged request itself.
                assert err.reply_to == spoof.msg_id
            assert rec.seen == []
        finally:
            await raw.close()
            await server.close()

    run(body)


def _frame_unchecked(env: Envelope) -> bytes:
    import msgpack

    body = msgpack.packb(env.to_wire())
    return struct.pack(">I", len(body)) + body


def count_writes(conn: Connection) -> list[int]:
    """From now on, record the size of every ``write`` on ``conn``'s transport."""
    transport = conn._transport
    assert transport is not None
    writes: list[int] = []
    real_write = transport.write

    def counting_write(data: Any) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write  # type: ignore[method-assign,unused-ignore]
    return writes


# -- requests -------------------------------------------------------------------------


def test_many_requests_in_flight_are_matched_by_msg_id() -> None:
    n = 300

    async def body() -> None:
        held: list[tuple[Connection, Envelope]] = []

        def answer_all_at_once_in_reverse(conn: Connection, env: Envelope) -> None:
            held.append((conn, env))
            if len(held) == n:
                for c, e in reversed(held):
                    c.send(e.reply(c.ids, "ack", {"i": e.payload["i"]}))

        server = await serve("node_1", SECRET, HOST, 0, handler=answer_all_at_once_in_reverse)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET)
            c = conn
            (server_side,) = server.connections
            server_writes = count_writes(server_side)
            requests = [Envelope.make(c.ids, "lock_status", "node_1", {"i": i}) for i in range(n)]
            tasks = [asyncio.ensure_future(c.request(r, 5.0)) for r in requests]
            for _ in range(100):
                if len(held) == n:
                    break
                await asyncio.sleep(0.01)
            # All n were in flight at once: the server answers none before it has them all.
            assert len(held) == n
            replies = await asyncio.gather(*tasks)
            assert [r.payload["i"] for r in replies] == list(range(n))
            assert [r.reply_to for r in replies] == [r.msg_id for r in requests]
            assert conn.in_flight == 0
            # The n replies, queued by the handler during one read, left in one write.
            assert len(server_writes) == 1
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_request_timeout_and_connection_loss_fail_pending_requests() -> None:
    async def body() -> None:
        server = await serve("node_1", SECRET, HOST, 0, handler=lambda conn, env: None)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET)
            c = conn
            with pytest.raises(asyncio.TimeoutError):
                await c.request(Envelope.make(c.ids, "status", "node_1"), 0.1)
            assert c.in_flight == 0
            pending = asyncio.ensure_future(
                c.request(Envelope.make(c.ids, "status", "node_1"), 5.0)
            )
            await asyncio.sleep(0.05)
            assert c.in_flight == 1
            await server.close()
            with pytest.raises(ClusterUnavailable, match="closed"):
                await pending
            with pytest.raises(ClusterUnavailable):
                c.send(Envelope.make(c.ids, "status", "node_1"))
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_start_request_gives_the_reply_future_and_forgets_what_ends() -> None:
    """The coroutine-free form of request(): the reply arrives on the future; a timed-out,
    cancelled or answered request leaves nothing pending (a late answer to a cancelled
    one is dropped); a connection that is not open refuses before registering anything."""

    async def body() -> None:
        held: list[tuple[Connection, Envelope]] = []
        server = await serve(
            "node_1", SECRET, HOST, 0, handler=lambda conn, env: held.append((conn, env))
        )
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET)
            c = conn
            answered = c.start_request(Envelope.make(c.ids, "status", "node_1", {"k": 1}), 5.0)
            cancelled = c.start_request(Envelope.make(c.ids, "status", "node_1", {"k": 2}), 5.0)
            timed_out = c.start_request(Envelope.make(c.ids, "status", "node_1", {"k": 3}), 0.05)
            assert c.in_flight == 3
            with pytest.raises(asyncio.TimeoutError):
                await timed_out
            cancelled.cancel()
            await asyncio.sleep(0)
            assert c.in_flight == 1
            for _ in range(100):
                if len(held) == 3:
                    break
                await asyncio.sleep(0.01)
            for sc, env in held:  # answer all three, the cancelled one's answer is dropped
                sc.send(env.reply(sc.ids, "ack", {"k": env.payload["k"]}))
            reply = await asyncio.wait_for(answered, 5.0)
            assert reply.payload["k"] == 1
            await asyncio.sleep(0.05)
            assert c.in_flight == 0 and cancelled.cancelled()
            c.close()
            with pytest.raises(ClusterUnavailable):
                c.start_request(Envelope.make(c.ids, "status", "node_1"), 1.0)
            assert c.in_flight == 0
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_sends_in_one_loop_turn_leave_in_one_write() -> None:
    async def body() -> None:
        rec = Recorder()
        server = await start_server(rec)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET)
            writes = count_writes(conn)
            for i in range(100):
                conn.send(Envelope.make(conn.ids, "enqueue", "node_1", {"i": i}))
            for _ in range(100):
                if len(rec.seen) == 100:
                    break
                await asyncio.sleep(0.01)
            assert len(writes) == 1
            assert [e.payload["i"] for e in rec.seen] == list(range(100))
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


# -- reconnect --------------------------------------------------------------------------


def test_peer_link_reconnects_after_the_server_restarts() -> None:
    async def body() -> None:
        rec1, rec2 = Recorder(), Recorder()
        server = await start_server(rec1)
        port = server.port
        link = PeerLink(
            MsgIdGenerator("node_0"),
            SECRET,
            "node_1",
            HOST,
            port,
            backoff=Backoff(base=0.02, cap=0.2),
            connect_timeout=1.0,
        )
        server2: Server | None = None
        try:
            link.start()
            reply = await link.request(Envelope.make(link.ids, "status", "node_1", {"n": 1}), 3.0)
            assert reply.payload["echo"] == {"n": 1}
            await server.close()
            for _ in range(200):
                if link.connection is None:
                    break
                await asyncio.sleep(0.01)
            assert link.connection is None
            # Sent while down: queued, delivered after the reconnect.
            link.send(Envelope.make(link.ids, "append_entries", "node_1", {"queued": True}))
            await asyncio.sleep(0.1)  # let a few connect attempts fail
            assert link.failures >= 1
            server2 = await serve("node_1", SECRET, HOST, port, handler=rec2)
            await link.wait_connected(3.0)
            reply = await link.request(Envelope.make(link.ids, "status", "node_1", {"n": 2}), 3.0)
            assert reply.payload["echo"] == {"n": 2}
            assert [e.payload for e in rec2.seen] == [{"queued": True}, {"n": 2}]
            assert link.connects == 2
            # The server may also push on the link: it lands in the link's inbox.
            (server_side,) = server2.connections
            server_side.send(Envelope.make(server_side.ids, "topology", "node_0", {"epoch": 2}))
            # (The ack to the queued one-way send is in there first: it answers no request.)
            ack = await asyncio.wait_for(link.inbox.get(), 2.0)
            assert ack.msg_type == "ack" and ack.payload["echo"] == {"queued": True}
            pushed = await asyncio.wait_for(link.inbox.get(), 2.0)
            assert pushed.payload == {"epoch": 2}
        finally:
            await link.close()
            await server.close()
            if server2 is not None:
                await server2.close()

    run(body)


def test_peer_link_request_fails_cleanly_when_nobody_listens() -> None:
    async def body() -> None:
        server = await start_server()
        port = server.port
        await server.close()  # a port that was just free: nothing listens there now
        link = PeerLink(
            MsgIdGenerator("node_0"),
            SECRET,
            "node_1",
            HOST,
            port,
            backoff=Backoff(base=0.01, cap=0.05),
        )
        try:
            link.start()
            with pytest.raises(ClusterUnavailable, match="unreachable"):
                await link.request(Envelope.make(link.ids, "status", "node_1"), 0.3)
            assert link.failures >= 2
        finally:
            await link.close()

    run(body)


# -- TLS --------------------------------------------------------------------------------


def _make_pki_openssl(root: Path, name: str) -> dict[str, Path]:
    """As :func:`_make_pki`, with the ``openssl`` command line."""
    ext = root / f"{name}-ext.cnf"
    ext.write_text(
        "".join(
            f"[{label}]\nsubjectAltName = IP:{HOST}\nextendedKeyUsage = {usage}\n"
            "basicConstraints = CA:FALSE\nsubjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
            for label, usage in (("server", "serverAuth"), ("client", "clientAuth"))
        )
    )
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    out = {"ca_cert": root / f"{name}-ca.pem"}
    ca_key = root / f"{name}-ca.key"

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)

    openssl(
        "req", "-x509", *curve, "-keyout", ca_key, "-out", out["ca_cert"], "-days", "1",
        "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for label in ("server", "client"):
        key, csr = root / f"{name}-{label}.key", root / f"{name}-{label}.csr"
        cert = root / f"{name}-{label}.pem"
        openssl("req", *curve, "-keyout", key, "-out", csr, "-subj", f"/CN={name}-{label}")
        openssl(
            "x509", "-req", "-in", csr, "-CA", out["ca_cert"], "-CAkey", ca_key,
            "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext, "-extensions", label,
        )  # fmt: skip
        out[f"{label}_cert"], out[f"{label}_key"] = cert, key
    return out


def _make_pki(root: Path, name: str) -> dict[str, Path]:
    """A throwaway CA plus a server certificate (for 127.0.0.1) and a client certificate,
    made with the ``cryptography`` package (a test-only dependency, not a runtime one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject(f"{name} CA"))
        .issuer_name(subject(f"{name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out: dict[str, Path] = {}

    def write(label: str, cert: x509.Certificate, k: ec.EllipticCurvePrivateKey | None) -> None:
        out[f"{label}_cert"] = root / f"{name}-{label}.pem"
        out[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            out[f"{label}_key"] = root / f"{name}-{label}.key"
            out[f"{label}_key"].write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    write("ca", ca, None)
    for label, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        k = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject(f"{name}-{label}"))
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(label, cert, k)
    return out


@pytest.mark.parametrize("maker", ["cryptography", "openssl"])
def test_tls_with_client_certificates(tmp_path: Path, maker: str) -> None:
    if maker == "cryptography":
        pytest.importorskip(
            "cryptography", reason="cryptography (in the test extra) makes the certificates"
        )
        make = _make_pki
    else:
        if shutil.which("openssl") is None:
            pytest.skip("no openssl command")
        make = _make_pki_openssl
    pki = make(tmp_path, "cluster")
    rogue = make(tmp_path, "rogue")

    async def body() -> None:
        rec = Recorder()
        server_ctx = server_ssl_context(pki["server_cert"], pki["server_key"], pki["ca_cert"])
        server = await start_server(rec, ssl=server_ctx)
        conn = None
        try:
            ctx = client_ssl_context(pki["ca_cert"], pki["client_cert"], pki["client_key"])
            conn = await connect(HOST, server.port, "client_a", SECRET, ssl=ctx)
            assert conn._transport is not None
            assert conn._transport.get_extra_info("ssl_object") is not None
            reply = await conn.request(Envelope.make(conn.ids, "status", "node_1", {"tls": 1}), 3.0)
            assert reply.payload["echo"] == {"tls": 1}
            refused: list[BaseException] = []
            for bad_ctx in (
                client_ssl_context(pki["ca_cert"]),  # no client certificate
                client_ssl_context(
                    pki["ca_cert"], rogue["client_cert"], rogue["client_key"]
                ),  # other CA
                client_ssl_context(
                    rogue["ca_cert"], pki["client_cert"], pki["client_key"]
                ),  # distrusts server
            ):
                with pytest.raises(DistSyncError) as info:
                    await connect(HOST, server.port, "intruder", SECRET, ssl=bad_ctx, timeout=2.0)
                assert isinstance(info.value, (AuthError, ClusterUnavailable))
                refused.append(info.value)
            assert len(refused) == 3
            assert [e.sender_id for e in rec.seen] == ["client_a"]
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_local_mistakes_fail_locally_and_the_connection_stays_open() -> None:
    async def body() -> None:
        calls = 0

        def flaky(conn: Connection, env: Envelope) -> None:
            nonlocal calls
            calls += 1
            if env.payload.get("boom"):
                raise RuntimeError("handler bug")
            conn.send(env.reply(conn.ids, "ack"))

        server = await serve("node_1", SECRET, HOST, 0, handler=flaky, max_frame_size=4096)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET, max_frame_size=4096)
            c = conn
            # Too big to send: refused before it leaves, only this request fails.
            with pytest.raises(ProtocolError, match="exceeds max_frame_size 4096"):
                await c.request(
                    Envelope.make(c.ids, "enqueue", "node_1", {"body": b"x" * 5000}), 2.0
                )
            # A handler that raises is the server's bug, not the client's: no disconnect.
            c.send(Envelope.make(c.ids, "enqueue", "node_1", {"boom": True}))
            reply = await c.request(Envelope.make(c.ids, "enqueue", "node_1", {"body": b"ok"}), 2.0)
            assert reply.msg_type == "ack" and calls == 2 and c.is_open
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)


def test_without_a_handler_envelopes_wait_in_the_inbox() -> None:
    async def body() -> None:
        server = await serve("node_1", SECRET, HOST, 0)
        conn = None
        try:
            conn = await connect(HOST, server.port, "client_a", SECRET)
            sent = Envelope.make(conn.ids, "cache_write", "node_1", {"key": "k", "value": b"v"})
            conn.send(sent)
            server_conn, got = await asyncio.wait_for(server.inbox.get(), 2.0)
            assert got == sent and server_conn.peer_id == "client_a"
            server_conn.send(
                Envelope.make(server_conn.ids, "cache_invalidate", "client_a", {"key": "k"})
            )
            pushed = await asyncio.wait_for(conn.inbox.get(), 2.0)
            assert pushed.msg_type == "cache_invalidate" and pushed.sender_id == "node_1"
        finally:
            if conn is not None:
                conn.close()
            await server.close()

    run(body)
