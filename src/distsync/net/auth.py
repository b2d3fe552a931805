"""Peer authentication: the cluster-secret handshake, secret loading, TLS contexts.

Handshake (mutual HMAC-SHA256 challenge-response, four messages, before anything else)::

    client -> server  hello  {version, nonce: Nc}          sender_id = client id
    server -> client  hello  {version, nonce: Ns}          sender_id = server id
    client -> server  auth   {proof: HMAC(K, "client", C, S, Nc, Ns)}
    server -> client  auth   {proof: HMAC(K, "server", C, S, Nc, Ns)}

Both sides prove they know the secret ``K`` without sending it. Fresh 32-byte nonces
from :mod:`secrets` on both sides make every proof single-use (a recorded proof is worthless
on the next connection); the role label and both node ids inside the MAC bind a proof to
this pair and direction, so it cannot be reflected back or replayed to another node. Proofs
are compared with :func:`hmac.compare_digest` (constant time). The client proves first:
the party that anyone can reach (the listening server) never hands out a proof for a
challenge before the caller has proven itself. (A client that connects to an impostor does
give that impostor one proof to attack offline, which is why the secret must be long and
random; the development default is neither, and says so.)

The classes here are I/O-free state machines: :mod:`distsync.net.transport` feeds them
envelopes and sends what they return. A failure raises :class:`AuthError` (wrong secret,
wrong peer) or :class:`ProtocolError` (a message that does not belong in a handshake).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import secrets
import ssl
import warnings
from collections.abc import Callable, Container, Mapping
from pathlib import Path

from distsync.errors import AuthError, ProtocolError
from distsync.net.envelope import Envelope, MsgIdGenerator, remote_error

__all__ = [
    "PROTOCOL_VERSION",
    "NONCE_BYTES",
    "HANDSHAKE_MAX_FRAME",
    "SECRET_ENV",
    "DEV_SECRET",
    "InsecureSecretWarning",
    "load_secret",
    "compute_proof",
    "ClientHandshake",
    "ServerHandshake",
    "server_ssl_context",
    "client_ssl_context",
]

log = logging.getLogger(__name__)

#: Handshake/wire protocol version, sent in ``hello``; a peer with another is refused.
PROTOCOL_VERSION = 1
#: Bytes of each side's challenge.
NONCE_BYTES = 32
#: Largest frame an unauthenticated peer may send: a handshake message is ~150 bytes, and
#: a stranger must not make a node buffer megabytes.
HANDSHAKE_MAX_FRAME = 4096
#: Environment variable holding the cluster secret.
SECRET_ENV = "DISTSYNC_SECRET"
#: Used when no secret is configured, with :class:`InsecureSecretWarning`. Public, so it
#: protects nothing: it only lets a local development cluster start without setup.
DEV_SECRET = b"distsync-development-secret-not-for-production"

_DOMAIN = b"distsync-handshake-v1"


class InsecureSecretWarning(UserWarning):
    """No cluster secret was configured; the public development default is in use."""


def load_secret(
    value: str | bytes | None = None,
    *,
    file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """The cluster secret, from the first source that gives one:

    1. ``value`` (config), 2. ``file`` (its contents, trailing newline stripped, so
    ``echo secret > f`` works), 3. the ``DISTSYNC_SECRET`` environment variable
    (``environ``, default ``os.environ``), 4. :data:`DEV_SECRET` with an
    :class:`InsecureSecretWarning`.

    ``ValueError`` if both ``value`` and ``file`` are given (which one was meant?) or the
    chosen source is empty (an empty HMAC key would authenticate anyone who guesses it).
    ``OSError`` if the file cannot be read.
    """
    if value is not None and file is not None:
        raise ValueError("give a secret value or a secret file, not both")
    if value is not None:
        secret = value.encode() if isinstance(value, str) else bytes(value)
        source = "the configured value"
    elif file is not None:
        secret = Path(file).read_bytes().rstrip(b"\r\n")
        source = f"secret file {os.fspath(file)!r}"
    else:
        env_value = (os.environ if environ is None else environ).get(SECRET_ENV)
        if env_value is None:
            message = (
                "no cluster secret configured (value, secret file or $DISTSYNC_SECRET): "
                "using the public development default; anyone can join this cluster"
            )
            warnings.warn(message, InsecureSecretWarning, stacklevel=2)
            log.warning(message)
            return DEV_SECRET
        secret = env_value.encode()
        source = f"${SECRET_ENV}"
    if not secret:
        raise ValueError(f"cluster secret from {source} is empty")
    return secret


def compute_proof(
    secret: bytes,
    role: str,
    client_id: str,
    server_id: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    """HMAC-SHA256 over the domain label, ``role`` and the handshake's ids and nonces.

    Every part is length-prefixed, so no two different tuples give the same MAC input
    (ids are free-form strings and could otherwise be shifted across a separator)."""
    mac = hmac.new(secret, _DOMAIN, hashlib.sha256)
    for part in (role.encode(), client_id.encode(), server_id.encode(), client_nonce, server_nonce):
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.digest()


class _State(enum.Enum):
    START = "start"
    AWAIT_HELLO = "await_hello"
    AWAIT_PROOF = "await_proof"
    DONE = "done"
    FAILED = "failed"


def _nonce_of(env: Envelope) -> bytes:
    version = env.payload.get("version")
    if version != PROTOCOL_VERSION:
        raise AuthError(f"peer speaks protocol version {version!r}, this node {PROTOCOL_VERSION}")
    nonce = env.payload.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ProtocolError(f"field 'payload.nonce' must be {NONCE_BYTES} bytes")
    return nonce


def _proof_of(env: Envelope) -> bytes:
    proof = env.payload.get("proof")
    if not isinstance(proof, bytes):
        raise ProtocolError("field 'payload.proof' must be bytes")
    return proof


def _expect(env: Envelope, msg_type: str) -> None:
    if env.msg_type == "error":
        # The peer refused us and said why: surface its reason.
        raise remote_error(env)
    if env.msg_type != msg_type:
        raise ProtocolError(
            f"expected a {msg_type!r} message during the handshake, got {env.msg_type!r}"
        )


class ClientHandshake:
    """The connecting side. ``start()`` gives the first message; feed every received
    envelope to ``receive()`` and send what it returns, until ``done``.

    ``expected_server_id``: refuse a server that names itself otherwise (``None``: any,
    e.g. a client that only knows an address). After ``done``, ``peer_id`` is the
    server's id."""

    def __init__(
        self,
        ids: MsgIdGenerator,
        secret: bytes,
        expected_server_id: str | None = None,
        *,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._ids = ids
        self._secret = secret
        self._expected = expected_server_id
        self._token_bytes = token_bytes
        self._state = _State.START
        self._nonce = b""
        self._server_nonce = b""
        self.peer_id: str | None = None

    @property
    def done(self) -> bool:
        """Both sides proved the secret; other messages may flow."""
        return self._state is _State.DONE

    def start(self) -> Envelope:
        """The client's ``hello``."""
        if self._state is not _State.START:
            raise RuntimeError("handshake already started")
        self._nonce = self._token_bytes(NONCE_BYTES)
        self._state = _State.AWAIT_HELLO
        return Envelope.make(
            self._ids,
            "hello",
            self._expected or "",
            {"version": PROTOCOL_VERSION, "nonce": self._nonce},
        )

    def receive(self, env: Envelope) -> Envelope | None:
        """Step with the server's message; the reply to send, or ``None``."""
        try:
            return self._receive(env)
        except BaseException:
            self._state = _State.FAILED
            raise

    def _receive(self, env: Envelope) -> Envelope | None:
        me = self._ids.sender_id
        if self._state is _State.AWAIT_HELLO:
            _expect(env, "hello")
            if self._expected is not None and env.sender_id != self._expected:
                raise AuthError(f"connected to {env.sender_id!r}, expected {self._expected!r}")
            if env.receiver_id != me:
                raise AuthError(f"server answered {env.receiver_id!r}, this is {me!r}")
            self._server_nonce = _nonce_of(env)
            if hmac.compare_digest(self._server_nonce, self._nonce):
                # Only a reflection of our own hello echoes our nonce.
                raise AuthError("server echoed the client's nonce")
            self.peer_id = env.sender_id
            self._state = _State.AWAIT_PROOF
            proof = compute_proof(
                self._secret, "client", me, env.sender_id, self._nonce, self._server_nonce
            )
            return Envelope.make(self._ids, "auth", env.sender_id, {"proof": proof})
        if self._state is _State.AWAIT_PROOF:
            _expect(env, "auth")
            assert self.peer_id is not None
            if env.sender_id != self.peer_id:
                raise AuthError(f"proof from {env.sender_id!r}, expected {self.peer_id!r}")
            expected = compute_proof(
                self._secret, "server", me, self.peer_id, self._nonce, self._server_nonce
            )
            if not hmac.compare_digest(_proof_of(env), expected):
                raise AuthError(f"server {self.peer_id!r} failed to prove the cluster secret")
            self._state = _State.DONE
            return None
        raise ProtocolError(
            f"unexpected {env.msg_type!r} message: handshake is {self._state.value}"
        )


class ServerHandshake:
    """The accepting side. Feed every received envelope to ``receive()`` and send what
    it returns, until ``done``; nothing else may be read before.

    ``allowed_peers``: ids that may connect (``None``: anyone with the secret, which is
    what clients need). After ``done``, ``peer_id`` is the authenticated peer's id."""

    def __init__(
        self,
        ids: MsgIdGenerator,
        secret: bytes,
        allowed_peers: Container[str] | None = None,
        *,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._ids = ids
        self._secret = secret
        self._allowed = allowed_peers
        self._token_bytes = token_bytes
        self._state = _State.AWAIT_HELLO
        self._client_nonce = b""
        self._nonce = b""
        self.peer_id: str | None = None

    @property
    def done(self) -> bool:
        """The peer proved the secret and has our proof; other messages may flow."""
        return self._state is _State.DONE

    def receive(self, env: Envelope) -> Envelope | None:
        """Step with the client's message; the reply to send (always one here)."""
        try:
            return self._receive(env)
        except BaseException:
            self._state = _State.FAILED
            raise

    def _receive(self, env: Envelope) -> Envelope | None:
        me = self._ids.sender_id
        if self._state is _State.AWAIT_HELLO:
            _expect(env, "hello")
            if env.receiver_id not in ("", me):
                raise AuthError(f"hello addressed to {env.receiver_id!r}, this is {me!r}")
            if env.sender_id == me:
                # Our own id coming back: a reflection, or a misconfigured twin.
                raise AuthError(f"peer claims this node's own id {me!r}")
            if self._allowed is not None and env.sender_id not in self._allowed:
                raise AuthError(f"peer {env.sender_id!r} is not a member of this cluster")
            self._client_nonce = _nonce_of(env)
            self._nonce = self._token_bytes(NONCE_BYTES)
            self.peer_id = env.sender_id
            self._state = _State.AWAIT_PROOF
            return Envelope.make(
                self._ids,
                "hello",
                env.sender_id,
                {"version": PROTOCOL_VERSION, "nonce": self._nonce},
            )
        if self._state is _State.AWAIT_PROOF:
            _expect(env, "auth")
            assert self.peer_id is not None
            if env.sender_id != self.peer_id:
                raise AuthError(f"proof from {env.sender_id!r}, hello from {self.peer_id!r}")
            expected = compute_proof(
                self._secret, "client", self.peer_id, me, self._client_nonce, self._nonce
            )
            if not hmac.compare_digest(_proof_of(env), expected):
                # Say no more than this: which part differed would help an attacker.
                raise AuthError("authentication failed: wrong cluster secret")
            self._state = _State.DONE
            proof = compute_proof(
                self._secret, "server", self.peer_id, me, self._client_nonce, self._nonce
            )
            return Envelope.make(self._ids, "auth", self.peer_id, {"proof": proof})
        raise ProtocolError(
            f"unexpected {env.msg_type!r} message: handshake is {self._state.value}"
        )


def server_ssl_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str] | None,
    cafile: str | os.PathLike[str],
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A TLS server context: this node's certificate chain, and (by default) a required
    client certificate signed by ``cafile``'s CA. TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.load_verify_locations(cafile)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_ssl_context(
    cafile: str | os.PathLike[str],
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS client context: the server's certificate must be signed by ``cafile``'s CA
    (and, with ``check_hostname``, name the host connected to); ``certfile``/``keyfile``
    are this side's client certificate. TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx
