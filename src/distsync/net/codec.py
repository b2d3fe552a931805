"""The body codec: an :class:`Envelope` as one msgpack map, and back.

msgpack because it is binary-safe (Raft entries and queue bodies are ``bytes`` and travel
as bytes, not base64), compact, and its C implementation packs and unpacks an envelope in
a few microseconds. Framing (the length prefix, the receive buffer) is in
:mod:`distsync.net.framing`.

Decoding rules, every one a :class:`ProtocolError` naming the problem: the body must be
one complete msgpack object (no trailing bytes), strings valid UTF-8, no msgpack extension
types (distsync defines none), and it must be a map that :meth:`Envelope.from_wire`
accepts.
"""

from __future__ import annotations

from typing import Any

import msgpack

from distsync.errors import ProtocolError
from distsync.net.envelope import Envelope

__all__ = ["new_packer", "pack_body", "unpack_body"]


def new_packer() -> msgpack.Packer:
    """A reusable packer (cheaper than ``msgpack.packb``, which builds one per call).

    Not thread-safe: one per encoder, and an encoder belongs to one event loop."""
    # use_bin_type: bytes stay bytes on the other side (str and bytes are distinct types).
    return msgpack.Packer(use_bin_type=True, autoreset=True)


def pack_body(env: Envelope, packer: msgpack.Packer | None = None) -> bytes:
    """The msgpack body of ``env`` (no length prefix); ``TypeError`` if the payload holds
    something msgpack cannot carry, which is the sender's bug, not the peer's."""
    wire = env.to_wire()
    if packer is None:
        return msgpack.packb(wire, use_bin_type=True)
    return packer.pack(wire)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def unpack_body(body: bytes | bytearray | memoryview) -> Envelope:
    """Decode and validate one body. ``body`` may be a ``memoryview`` into a receive
    buffer: msgpack reads it in place and the envelope holds no reference to it."""
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=_refuse_ext, strict_map_key=True)
    except Exception as exc:
        # msgpack signals bad input with ValueError subclasses (ExtraData, FormatError,
        # StackError, UnicodeDecodeError), TypeError (unhashable map key) and others;
        # every one means the same thing here: the peer sent bytes that are not a message.
        raise ProtocolError(f"undecodable msgpack body: {type(exc).__name__}: {exc}") from None
    return Envelope.from_wire(obj)
