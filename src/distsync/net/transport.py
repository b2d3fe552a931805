"""Connections over asyncio: a server, outbound links that reconnect, request matching.

Built on ``asyncio.BufferedProtocol`` rather than streams (DESIGN.md §12): the socket
reads straight into the connection's :class:`FrameDecoder` buffer and frames are parsed
in place, with no ``StreamReader`` copy or coroutine switch per message.

Life of a :class:`Connection`:

1. *handshake*: the client sends ``hello``; both sides run the :mod:`distsync.net.auth`
   state machine. Frames are limited to :data:`HANDSHAKE_MAX_FRAME` and nothing reaches
   the application. A failure (wrong secret, bad message, timeout) sends the peer an
   ``error`` envelope and closes the connection.
2. *open*: envelopes go to the handler (or the ``inbox`` queue); replies
   (``payload["reply_to"]``) to this side's :meth:`Connection.request` resolve it instead.
   Sends queued during one event-loop turn leave in one ``write``; replies queued by
   handlers while a read is processed leave at the end of that read.
3. *closed*: pending requests fail with :class:`ClusterUnavailable`.

A protocol error (oversized frame, undecodable body, unknown type, bad field, a sender id
other than the authenticated one) sends an ``error`` envelope naming the problem and
closes that connection only; the server and its other connections go on.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random as _random
import ssl as _ssl
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from distsync.errors import AuthError, ClusterUnavailable, DistSyncError, ProtocolError
from distsync.net.auth import HANDSHAKE_MAX_FRAME, ClientHandshake, ServerHandshake
from distsync.net.envelope import Envelope, MsgIdGenerator, error_envelope, remote_error
from distsync.net.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameEncoder

__all__ = [
    "Handler",
    "Connection",
    "Server",
    "serve",
    "connect",
    "close_connections",
    "ConnectionPool",
    "Backoff",
    "PeerLink",
]

log = logging.getLogger(__name__)

#: Receives each application envelope with the connection it came on (reply through it).
Handler = Callable[["Connection", Envelope], None]

#: Seconds an unauthenticated connection may take to finish the handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
# After an error envelope, how long the peer gets to read it before the socket is cut.
_LINGER = 1.0


class Connection(asyncio.BufferedProtocol):
    """One authenticated, framed connection (either side). Made by :func:`serve` and
    :func:`connect`; not constructed directly.

    ``peer_id`` is the peer's authenticated id (``None`` until the handshake is done).
    ``ids`` makes this node's message ids (shared by all its connections)."""

    def __init__(
        self,
        ids: MsgIdGenerator,
        handshake: ClientHandshake | ServerHandshake,
        *,
        handler: Handler | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        on_made: Callable[[Connection], None] | None = None,
        on_open: Callable[[Connection], None] | None = None,
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        self.ids = ids
        self.peer_id: str | None = None
        self._handshake: ClientHandshake | ServerHandshake | None = handshake
        self._handler = handler
        self._max_frame_size = max_frame_size
        self._handshake_timeout = handshake_timeout
        self._on_made = on_made
        self._on_open = on_open
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        # Until authenticated a peer may only send small handshake frames.
        self._decoder = FrameDecoder(min(HANDSHAKE_MAX_FRAME, max_frame_size))
        self._encoder = FrameEncoder(max_frame_size)
        self._transport: asyncio.Transport | None = None
        self._outbox: list[Envelope] = []
        self._flush_handle: asyncio.Handle | None = None
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._writable = asyncio.Event()
        self._writable.set()
        #: Application envelopes, when no handler was given.
        self.inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        #: Resolves when the handshake is done (or fails with its error).
        self.opened: asyncio.Future[None] = self._loop.create_future()
        #: Resolves when the connection is closed; its value is the reason (or ``None``).
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()
        #: The error that made this side close the connection, if any.
        self.error: BaseException | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Authenticated and not closing: :meth:`send` will be attempted."""
        return self._handshake is None and not self._closing

    @property
    def in_flight(self) -> int:
        """Requests sent on this connection and not answered yet."""
        return len(self._pending)

    def peername(self) -> Any:
        """The peer's socket address (``(host, port)`` for TCP), ``None`` before connect."""
        return None if self._transport is None else self._transport.get_extra_info("peername")

    def sockname(self) -> Any:
        """This side's socket address, ``None`` before connect."""
        return None if self._transport is None else self._transport.get_extra_info("sockname")

    # -- asyncio.BufferedProtocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not subclasses.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        if self._on_made is not None:
            self._on_made(self)
        if isinstance(self._handshake, ClientHandshake):
            self._write_now(self._handshake.start())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        decoder = self._decoder
        # Every complete frame now buffered, in order; stop at the first error, so
        # nothing after a bad frame (or a failed handshake) is ever acted on.
        while not self._closing:
            try:
                env = decoder.next_envelope()
            except ProtocolError as exc:
                self._fail(exc)
                return
            if env is None:
                break
            if self._handshake is not None:
                self._step_handshake(env)
            else:
                self._dispatch(env)
        # Replies the handlers queued on this connection for this read go out now, as one
        # write, rather than one loop iteration later: a request's round trip is then one
        # read and one write on this side.
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._outbox.clear()
        reason: BaseException | None = self.error or exc
        if not self.opened.done():
            if isinstance(exc, _ssl.SSLError):
                reason = AuthError(f"TLS handshake failed: {exc}")
            elif reason is None:
                tls = self._transport is not None and self._transport.get_extra_info("sslcontext")
                reason = ClusterUnavailable(
                    "connection closed during the handshake"
                    + (" (TLS: the peer may have refused this side's certificate)" if tls else "")
                )
            self.opened.set_exception(reason)
            self.opened.exception()  # retrieved: nobody may be awaiting it
        lost = ClusterUnavailable(
            f"connection to {self.peer_id or 'peer'} closed"
            + (f": {reason}" if reason is not None else "")
        )
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(lost)
        self._writable.set()
        if not self.closed.done():
            self.closed.set_result(reason)
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- sending ----------------------------------------------------------------------------

    def send(self, env: Envelope) -> None:
        """Queue ``env``; everything queued in this event-loop turn leaves in one write
        (sends made by handlers while a read is processed leave at the end of that read).
        Never waits; see :meth:`drain` for backpressure.

        :class:`ClusterUnavailable` if the connection is closed or not yet open."""
        if not self.is_open:
            raise ClusterUnavailable(f"connection to {self.peer_id or 'peer'} is not open")
        self._outbox.append(env)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what :meth:`send` queued now, in one write, instead of at the end of this
        event-loop turn (for a caller about to block the loop, or on a latency path)."""
        if self._outbox and not self._closing:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()

    async def request(self, env: Envelope, timeout: float | None = None) -> Envelope:
        """Send ``env`` and wait for the envelope whose ``payload["reply_to"]`` is its
        ``msg_id``; many may be in flight at once on one connection.

        An ``error`` reply raises the error it names (:func:`remote_error`);
        ``TimeoutError`` after ``timeout`` seconds; :class:`ClusterUnavailable` if the
        connection closes first."""
        return await self.start_request(env, timeout)

    def start_request(
        self, env: Envelope, timeout: float | None = None
    ) -> asyncio.Future[Envelope]:
        """:meth:`request` without a coroutine: queue ``env`` and return the future of
        its reply (for a caller that would rather attach a callback than run a task per
        request). Cancelling the future abandons the request."""
        if env.msg_id in self._pending:
            raise ValueError(f"msg_id {env.msg_id!r} is already in flight")
        self.send(env)  # raises if the connection is not open: nothing registered yet
        fut: asyncio.Future[Envelope] = self._loop.create_future()
        self._pending[env.msg_id] = fut
        # A timer on the future rather than asyncio.wait_for, which wraps it in another
        # task and costs a few microseconds per request on the hot path.
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, fut, timeout)
        fut.add_done_callback(functools.partial(self._request_done, env.msg_id, timer))
        return fut

    def _request_done(
        self, msg_id: str, timer: asyncio.TimerHandle | None, fut: asyncio.Future[Envelope]
    ) -> None:
        if timer is not None:
            timer.cancel()
        if self._pending.get(msg_id) is fut:
            del self._pending[msg_id]

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        await self._writable.wait()

    def close(self) -> None:
        """Flush what is queued and close; pending requests fail."""
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    def _flush(self) -> None:
        self._flush_handle = None
        outbox, self._outbox = self._outbox, []
        if not outbox or self._transport is None or self._transport.is_closing():
            return
        parts: list[bytes] = []
        for env in outbox:
            try:
                self._encoder.encode_into(env, parts)
            except (DistSyncError, TypeError, ValueError, OverflowError) as exc:
                # The message is unsendable (too big, bad field, a payload msgpack
                # cannot carry): fail its request if it is one, drop it, keep the rest.
                fut = self._pending.get(env.msg_id)
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                else:
                    log.error("dropping unsendable %s to %s: %s", env.msg_type, self.peer_id, exc)
        if parts:
            self._transport.write(b"".join(parts))

    def _write_now(self, env: Envelope) -> None:
        # Handshake and error messages: written at once, ahead of nothing (the outbox is
        # empty before the handshake ends and abandoned after an error).
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._encoder.encode(env))

    # -- receiving --------------------------------------------------------------------------

    def _step_handshake(self, env: Envelope) -> None:
        handshake = self._handshake
        assert handshake is not None
        try:
            reply = handshake.receive(env)
        except DistSyncError as exc:
            # An ``error`` from the peer (it refused us) needs no answer; anything else
            # gets one naming the problem.
            self._fail(exc, notify=env.msg_type != "error")
            return
        if reply is not None:
            self._write_now(reply)
        if handshake.done:
            self.peer_id = handshake.peer_id
            self._handshake = None
            self._decoder.max_frame_size = self._max_frame_size
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self.opened.done():  # connect() may have given up (and cancelled it)
                self.opened.set_result(None)
            if self._on_open is not None:
                self._on_open(self)

    def _dispatch(self, env: Envelope) -> None:
        if env.sender_id != self.peer_id:
            # The handshake authenticated one id; a message claiming another is forged
            # (a client acting for another: releasing its lock, say). The error answers
            # that request, so the sender learns why rather than just losing the line.
            self._fail(
                ProtocolError(
                    f"field 'sender_id' is {env.sender_id!r} on a connection "
                    f"authenticated as {self.peer_id!r}"
                ),
                reply_to=env.msg_id,
            )
            return
        reply_to = env.reply_to
        if reply_to is not None:
            fut = self._pending.pop(reply_to, None)
            if fut is not None:
                if fut.done():  # timed out meanwhile
                    return
                if env.msg_type == "error":
                    fut.set_exception(remote_error(env))
                else:
                    fut.set_result(env)
                return
        if env.msg_type == "error" and reply_to is None:
            log.warning("error from %s: %s", self.peer_id, env.payload.get("message"))
        if self._handler is None:
            self.inbox.put_nowait(env)
            return
        try:
            self._handler(self, env)
        except Exception:
            # A handler bug is not the peer's fault: log it and keep the connection.
            log.exception("handler failed on %s from %s", env.msg_type, self.peer_id)

    def _fail(
        self, exc: BaseException, *, notify: bool = True, reply_to: str | None = None
    ) -> None:
        """Close this connection because of ``exc``; tell the peer why unless ``notify``
        is false (the peer itself reported an error), as the answer to its message
        ``reply_to`` when the fault is in one request."""
        if self._closing:
            return
        log.warning("closing connection to %s: %s", self.peer_id or self.peername(), exc)
        self.error = exc
        self._closing = True
        self._outbox.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if notify:
            try:
                err = error_envelope(self.ids, self.peer_id or "", exc, reply_to=reply_to)
                self._write_now(err)
            except Exception:  # never let the error report hide the error
                log.exception("could not send the error message")
        if self._transport is not None:
            transport = self._transport
            transport.close()  # sends what is buffered (the error message), then closes
            # A peer that does not read must not keep the socket open forever.
            self._loop.call_later(_LINGER, transport.abort)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._handshake is not None:
            self._fail(AuthError(f"handshake not completed within {self._handshake_timeout}s"))


def _expire(fut: asyncio.Future[Envelope], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError(f"no reply within {timeout}s"))


class Server:
    """A listening node: accepts connections, authenticates them, hands their envelopes
    to ``handler(conn, env)`` (or to :attr:`inbox` as ``(conn, env)`` pairs).

    One bad connection never affects the others: each has its own decoder and fails
    alone. Use :func:`serve` to make and start one."""

    def __init__(
        self,
        node_id: str,
        secret: bytes,
        *,
        handler: Handler | None = None,
        ssl: _ssl.SSLContext | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        allowed_peers: Container[str] | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        ids: MsgIdGenerator | None = None,
    ) -> None:
        self.ids = ids or MsgIdGenerator(node_id)
        self.node_id = node_id
        self._secret = secret
        self._handler = handler
        self._ssl = ssl
        self._max_frame_size = max_frame_size
        self._allowed = allowed_peers
        self._handshake_timeout = handshake_timeout
        self._server: asyncio.base_events.Server | None = None
        self._all: set[Connection] = set()
        #: Authenticated connections, open now.
        self.connections: set[Connection] = set()
        #: ``(connection, envelope)`` pairs, when no handler was given.
        self.inbox: asyncio.Queue[tuple[Connection, Envelope]] = asyncio.Queue()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make, host, port, ssl=self._ssl)

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self._server is not None and self._server.sockets, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    def _make(self) -> Connection:
        handler = self._handler if self._handler is not None else self._to_inbox
        conn = Connection(
            self.ids,
            ServerHandshake(self.ids, self._secret, self._allowed),
            handler=handler,
            max_frame_size=self._max_frame_size,
            handshake_timeout=self._handshake_timeout,
            # Tracked from connection_made: with TLS, a connection whose TLS handshake
            # fails is made by this factory but never started, and never lost either.
            on_made=self._all.add,
            on_open=self.connections.add,
            on_close=self._forget,
        )
        return conn

    def _to_inbox(self, conn: Connection, env: Envelope) -> None:
        self.inbox.put_nowait((conn, env))

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._all.discard(conn)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection and wait (up to ``timeout``) for them."""
        if self._server is not None:
            self._server.close()
        await close_connections(list(self._all), timeout)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def close_connections(conns: Iterable[Connection], timeout: float) -> None:
    """Close ``conns`` (flushing what each has queued) and wait, up to ``timeout`` seconds
    in all, for them to be closed."""
    conns = list(conns)
    for conn in conns:
        conn.close()
    if conns:
        await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in conns], timeout=timeout)


async def serve(
    node_id: str,
    secret: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Server:
    """Make a :class:`Server` (``kwargs`` as its constructor) and start listening."""
    server = Server(node_id, secret, **kwargs)
    await server.start(host, port)
    return server


async def connect(
    host: str,
    port: int,
    ids: MsgIdGenerator | str,
    secret: bytes,
    *,
    expected_peer_id: str | None = None,
    handler: Handler | None = None,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    on_close: Callable[[Connection], None] | None = None,
) -> Connection:
    """Connect, authenticate, and return the open :class:`Connection`.

    ``ids``: this side's id generator (or just its id). ``timeout`` bounds TCP connect,
    TLS and the handshake together. Raises :class:`AuthError` (wrong secret, wrong peer,
    TLS refused), :class:`ClusterUnavailable` (refused, closed, timed out) or
    :class:`ProtocolError`."""
    gen = MsgIdGenerator(ids) if isinstance(ids, str) else ids
    loop = asyncio.get_running_loop()
    conn: Connection | None = None

    def make() -> Connection:
        nonlocal conn
        conn = Connection(
            gen,
            ClientHandshake(gen, secret, expected_peer_id),
            handler=handler,
            max_frame_size=max_frame_size,
            handshake_timeout=timeout,
            on_close=on_close,
        )
        return conn

    async def establish() -> None:
        try:
            await loop.create_connection(
                make,
                host,
                port,
                ssl=ssl,
                server_hostname=(server_hostname or host) if ssl is not None else None,
            )
        except _ssl.SSLError as exc:
            raise AuthError(f"TLS handshake with {host}:{port} failed: {exc}") from exc
        except OSError as exc:
            raise ClusterUnavailable(f"cannot connect to {host}:{port}: {exc}") from exc
        assert conn is not None
        await conn.opened

    try:
        await asyncio.wait_for(establish(), timeout)
    except asyncio.TimeoutError:
        if conn is not None:
            conn.close()
        raise ClusterUnavailable(f"no handshake with {host}:{port} within {timeout}s") from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    assert conn is not None
    return conn


_K = TypeVar("_K")


class ConnectionPool(Generic[_K]):
    """A client's connections, one per node (keyed by ``_K``), opened on first use; the
    callers that ask for one while it is being opened share that attempt.

    A hot path asks :meth:`ready` (no coroutine) and awaits :meth:`get` only when that
    finds no open connection."""

    def __init__(self, ids: MsgIdGenerator, secret: bytes) -> None:
        self._ids = ids
        self._secret = secret
        self.open: dict[_K, Connection] = {}
        self._connecting: dict[_K, asyncio.Future[Connection]] = {}

    def ready(self, key: _K) -> Connection | None:
        """The open connection for ``key``, or None if there is none (yet or any more)."""
        conn = self.open.get(key)
        return conn if conn is not None and conn.is_open else None

    async def get(
        self,
        key: _K,
        address: tuple[str, int],
        timeout: float,
        *,
        expected_peer_id: str | None = None,
    ) -> Connection:
        """The open connection for ``key``, connecting to ``address`` if there is none."""
        conn = self.ready(key)
        if conn is not None:
            return conn
        fut = self._connecting.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        host, port = address
        fut = asyncio.ensure_future(
            connect(
                host,
                port,
                self._ids,
                self._secret,
                expected_peer_id=expected_peer_id,
                timeout=timeout,
            )
        )
        self._connecting[key] = fut
        try:
            conn = await fut
        finally:
            self._connecting.pop(key, None)
        self.open[key] = conn
        return conn

    async def close(self, timeout: float) -> None:
        """Close every connection (see :func:`close_connections`)."""
        await close_connections(self.open.values(), timeout)
        self.open.clear()


@dataclass
class Backoff:
    """Reconnect delays: exponential from ``base`` by ``factor`` up to ``cap`` seconds,
    with "equal jitter" (half fixed, half uniform random) so that peers restarted together
    do not reconnect in lockstep, yet never retry at once. ``rand`` (uniform in [0, 1))
    is injectable for deterministic tests."""

    base: float = 0.05
    cap: float = 5.0
    factor: float = 2.0
    rand: Callable[[], float] = field(default=_random.random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        # min() before the power would overflow for a long outage.
        exp = min(attempt, 64)
        d = min(self.cap, self.base * self.factor**exp)
        return d / 2 + self.rand() * d / 2


class PeerLink:
    """The outbound side to one peer: keeps an authenticated connection up, reconnecting
    with :class:`Backoff` after failures or drops.

    :meth:`send` never waits: while disconnected, envelopes wait in a bounded queue
    (oldest dropped first; Raft and the other protocols retransmit) and go out, as one
    write, when the link is up again. :meth:`request` waits for the link (within its
    timeout). Received envelopes that answer no request go to ``handler`` like a
    server's, or, without one, to :attr:`inbox` (one queue for the link's whole life,
    across reconnects)."""

    def __init__(
        self,
        ids: MsgIdGenerator,
        secret: bytes,
        peer_id: str | None,
        host: str,
        port: int,
        *,
        handler: Handler | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backoff: Backoff | None = None,
        connect_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_queued: int = 10_000,
    ) -> None:
        self.ids = ids
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self._secret = secret
        #: Envelopes received when no handler was given.
        self.inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        self._handler: Handler = handler if handler is not None else self._to_inbox
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._max_frame_size = max_frame_size
        self.backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._queue: collections.deque[Envelope] = collections.deque(maxlen=max_queued)
        self._conn: Connection | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Counters for metrics and tests.
        self.connects = 0
        self.failures = 0
        self.dropped = 0
        #: The last connect failure (``None`` once connected).
        self.last_error: BaseException | None = None

    def _to_inbox(self, conn: Connection, env: Envelope) -> None:
        self.inbox.put_nowait(env)

    @property
    def connection(self) -> Connection | None:
        """The open connection, or ``None`` while down."""
        conn = self._conn
        return conn if conn is not None and conn.is_open else None

    def start(self) -> None:
        """Begin connecting (in the background)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait_connected(self, timeout: float | None = None) -> Connection:
        """The open connection, waiting up to ``timeout``; :class:`ClusterUnavailable`
        if it is not up by then."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except asyncio.TimeoutError:
            raise ClusterUnavailable(
                f"{self.peer_id or self.host}:{self.port} unreachable"
                + (f": {self.last_error}" if self.last_error else "")
            ) from None
        conn = self.connection
        if conn is None:  # dropped in the same turn
            raise ClusterUnavailable(f"{self.peer_id or self.host} disconnected")
        return conn

    def send(self, env: Envelope) -> None:
        """Send now if up, else queue (bounded; the oldest is dropped when full)."""
        conn = self.connection
        if conn is not None:
            conn.send(env)
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(env)

    async def request(self, env: Envelope, timeout: float) -> Envelope:
        """:meth:`Connection.request` on the link, first waiting for it to be up; the
        whole call, waiting included, takes at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        conn = await self.wait_connected(timeout)
        return await conn.request(env, max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        conn, self._conn = self._conn, None
        self._up.clear()
        if conn is not None:
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), 5.0)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                conn = await connect(
                    self.host,
                    self.port,
                    self.ids,
                    self._secret,
                    expected_peer_id=self.peer_id,
                    handler=self._handler,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                    max_frame_size=self._max_frame_size,
                    timeout=self._connect_timeout,
                )
            except (DistSyncError, OSError) as exc:
                self.failures += 1
                self.last_error = exc
                level = logging.ERROR if isinstance(exc, AuthError) else logging.DEBUG
                log.log(level, "connect to %s:%s failed: %s", self.host, self.port, exc)
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            self.connects += 1
            self.last_error = None
            self._conn = conn
            since = time.monotonic()
            # Queued envelopes go out first, in order, in the connection's first write.
            while self._queue:
                conn.send(self._queue.popleft())
            self._up.set()
            try:
                await conn.wait_closed()
            finally:
                self._up.clear()
                self._conn = None
            # A link that drops right after coming up (a crashing peer) keeps backing off;
            # one that was up for a while retries quickly.
            attempt = attempt + 1 if time.monotonic() - since < self.backoff.cap else 0
            if not self._stopping:
                await asyncio.sleep(self.backoff.delay(attempt))
