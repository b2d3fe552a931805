"""The wire layer (DESIGN.md §3): the seed's envelope, msgpack bodies in length-prefixed
frames, the cluster-secret handshake and TLS, and asyncio connections.

- :mod:`~distsync.net.envelope`: :class:`Envelope`, the message-type registry, msg ids.
- :mod:`~distsync.net.codec`: an envelope as a msgpack map.
- :mod:`~distsync.net.framing`: length-prefixed frames; the in-place incremental decoder.
- :mod:`~distsync.net.auth`: the HMAC handshake, secret loading, TLS contexts.
- :mod:`~distsync.net.transport`: connections, the server, reconnecting peer links.
"""

from distsync.net.auth import (
    ClientHandshake,
    InsecureSecretWarning,
    ServerHandshake,
    client_ssl_context,
    load_secret,
    server_ssl_context,
)
from distsync.net.codec import pack_body, unpack_body
from distsync.net.envelope import (
    MSG_TYPES,
    Envelope,
    MsgIdGenerator,
    error_envelope,
    remote_error,
    utc_timestamp,
)
from distsync.net.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameEncoder
from distsync.net.transport import Backoff, Connection, PeerLink, Server, connect, serve

__all__ = [
    "MSG_TYPES",
    "Envelope",
    "MsgIdGenerator",
    "utc_timestamp",
    "error_envelope",
    "remote_error",
    "pack_body",
    "unpack_body",
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameDecoder",
    "FrameEncoder",
    "load_secret",
    "InsecureSecretWarning",
    "ClientHandshake",
    "ServerHandshake",
    "server_ssl_context",
    "client_ssl_context",
    "Connection",
    "Server",
    "serve",
    "connect",
    "Backoff",
    "PeerLink",
]
