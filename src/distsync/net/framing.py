"""Length-prefixed frames: a 4-byte big-endian body length, then the msgpack body.

:class:`FrameDecoder` is incremental and parses in place. It owns one receive buffer per
connection, lends its free tail to the socket (``asyncio.BufferedProtocol.get_buffer``, so
the kernel copies straight into it: no ``bytes`` object per read), and msgpack decodes
each body from a ``memoryview`` slice of it. Nothing allocates a buffer per message: a
large per-message buffer is what costs PySyncObj an ``madvise`` per message and half its
speed under glibc's default heap-trim threshold (DESIGN.md §12).

:class:`FrameEncoder` turns one or many envelopes into bytes for one ``write``: the
transport encodes everything queued during an event-loop turn as one batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import msgpack

from distsync.errors import ProtocolError
from distsync.net.codec import new_packer, unpack_body
from distsync.net.envelope import Envelope

__all__ = [
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameDecoder",
    "FrameEncoder",
]

#: Bytes of the length prefix.
HEADER_SIZE = 4
#: Default largest body accepted or sent, in bytes. Large enough for an InstallSnapshot
#: chunk or a batch of AppendEntries, small enough that a hostile length cannot make a
#: node allocate gigabytes.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: The length prefix can express at most this.
_MAX_EXPRESSIBLE = 2**32 - 1

_HEADER = struct.Struct(">I")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack

# The receive buffer starts at this size: well under glibc's mmap threshold ceiling, big
# enough that a busy connection reads many frames per recv.
_INITIAL_CAPACITY = 64 * 1024
# Lend the socket at least this much free space per read (compacting first if needed).
_MIN_READ = 16 * 1024
# A buffer grown for a large frame is given back after this many frames that all fit the
# initial size: one snapshot must not pin megabytes for the connection's life, yet a
# stream of large frames must not reallocate per frame either.
_SHRINK_WINDOW = 256


class FrameDecoder:
    """Incremental frame parser over one reused buffer.

    Two ways in: ``get_buffer``/``buffer_updated`` (the ``BufferedProtocol`` pair; the
    socket writes into the buffer) or ``feed(data)`` (copies; for tests and other
    transports). Frames come out one at a time from :meth:`next_envelope` (or raw from
    :meth:`next_frame`), so a bad frame never hides the good frames before it.

    Invariants, after every call: ``0 <= start <= end <= capacity``; bytes
    ``[start, end)`` are received but not yet consumed; a frame is consumed before its
    body is decoded, so an undecodable body is skipped and the next frame still parses.
    A length above ``max_frame_size`` cannot be skipped (the stream has lost its framing):
    the decoder is then *broken* and every later call raises the same error.
    """

    __slots__ = (
        "max_frame_size",
        "_buf",
        "_view",
        "_start",
        "_end",
        "_error",
        "_frames",
        "_window_peak",
    )

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= _MAX_EXPRESSIBLE:
            raise ValueError(f"max_frame_size must be in 1..{_MAX_EXPRESSIBLE}")
        #: Largest body accepted; may be changed between frames (the transport keeps it
        #: small until the handshake is done).
        self.max_frame_size = max_frame_size
        self._buf = bytearray(_INITIAL_CAPACITY)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._error: ProtocolError | None = None
        self._frames = 0
        self._window_peak = 0

    # -- state, for tests and metrics ---------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes received and not yet consumed."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Size of the receive buffer."""
        return len(self._buf)

    @property
    def broken(self) -> bool:
        """True once the framing is lost (length over the limit); nothing more parses."""
        return self._error is not None

    def check_invariants(self) -> None:
        """Assert the documented invariants (tests call this after every step)."""
        assert 0 <= self._start <= self._end <= len(self._buf), (
            self._start,
            self._end,
            len(self._buf),
        )
        assert len(self._view) == len(self._buf)

    # -- input ----------------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """The free tail of the buffer for the socket to fill (``BufferedProtocol``)."""
        self._make_room(max(sizehint, _MIN_READ))
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last :meth:`get_buffer` view."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise ValueError(f"buffer_updated({nbytes}) beyond the lent buffer")
        self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (copied) to the buffer."""
        n = len(data)
        if n == 0:
            return
        self._make_room(n)
        self._view[self._end : self._end + n] = data
        self._end += n

    # -- output ---------------------------------------------------------------------------

    def next_frame(self) -> memoryview | None:
        """The next complete body as a view into the buffer, or ``None`` if incomplete.

        The view is valid until the next ``feed``/``get_buffer``: decode it before reading
        more. :class:`ProtocolError` if the length prefix exceeds ``max_frame_size``."""
        if self._error is not None:
            raise self._error
        start = self._start
        avail = self._end - start
        if avail < HEADER_SIZE:
            if avail == 0:
                # Empty: rewind for free, so the next read lands at the front.
                self._start = self._end = 0
            return None
        (length,) = _unpack_header(self._buf, start)
        if length > self.max_frame_size:
            self._error = ProtocolError(
                f"frame length {length} exceeds max_frame_size {self.max_frame_size}"
            )
            raise self._error
        total = HEADER_SIZE + length
        if avail < total:
            # Incomplete: make sure the whole frame will fit, so later reads complete it.
            if len(self._buf) - start < total:
                self._make_room(total - avail)
            return None
        body = self._view[start + HEADER_SIZE : start + total]
        self._start = start + total
        if self._start == self._end:
            # Nothing left: rewind now. The returned view still reads the same bytes, since
            # nothing writes into the buffer before the caller's next feed/get_buffer.
            self._start = self._end = 0
        self._count(length)
        return body

    def next_envelope(self) -> Envelope | None:
        """The next complete envelope, or ``None`` if the buffer holds no complete frame.

        :class:`ProtocolError` for an oversized length (the decoder is then broken) or a
        bad body (that frame is consumed; calling again goes on with the next one)."""
        body = self.next_frame()
        if body is None:
            return None
        try:
            return unpack_body(body)
        finally:
            body.release()

    def drain(self) -> list[Envelope]:
        """Every complete envelope now buffered (stops at, and raises, the first error)."""
        out: list[Envelope] = []
        while (env := self.next_envelope()) is not None:
            out.append(env)
        return out

    # -- buffer management -----------------------------------------------------------------

    def _make_room(self, need: int) -> None:
        """Ensure ``need`` free bytes after ``end``: compact in place, grow if still short."""
        free = len(self._buf) - self._end
        if free >= need:
            return
        pending = self._end - self._start
        if self._start and len(self._buf) - pending >= need:
            # Slide the unconsumed bytes to the front. Same-size slice assignment through the
            # memoryview: a memmove, and allowed while the socket still holds a view.
            self._view[0:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
            return
        # Grow into a new buffer (a bytearray with live exports cannot be resized; the old
        # one is freed when the last view into it goes).
        capacity = max(2 * len(self._buf), pending + need)
        buf = bytearray(capacity)
        view = memoryview(buf)
        view[0:pending] = self._view[self._start : self._end]
        self._buf, self._view = buf, view
        self._start, self._end = 0, pending

    def _count(self, length: int) -> None:
        # Shrink policy (see _SHRINK_WINDOW): cheap bookkeeping per frame.
        if length > self._window_peak:
            self._window_peak = length
        self._frames += 1
        if self._frames < _SHRINK_WINDOW:
            return
        if (
            len(self._buf) > _INITIAL_CAPACITY
            and self._window_peak + HEADER_SIZE <= _INITIAL_CAPACITY // 2
            and self.pending <= _INITIAL_CAPACITY // 2
        ):
            buf = bytearray(_INITIAL_CAPACITY)
            view = memoryview(buf)
            pending = self.pending
            view[0:pending] = self._view[self._start : self._end]
            self._buf, self._view = buf, view
            self._start, self._end = 0, pending
        self._frames = 0
        self._window_peak = 0


class FrameEncoder:
    """Envelopes to frames. One per connection (it owns a msgpack packer, which is not
    thread-safe). Refuses to send a body the peer would refuse: :class:`ProtocolError`
    if it exceeds ``max_frame_size``."""

    __slots__ = ("max_frame_size", "_packer")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= _MAX_EXPRESSIBLE:
            raise ValueError(f"max_frame_size must be in 1..{_MAX_EXPRESSIBLE}")
        self.max_frame_size = max_frame_size
        self._packer: msgpack.Packer = new_packer()

    def encode_into(self, env: Envelope, parts: list[bytes]) -> None:
        """Append ``env``'s header and body to ``parts`` (join them once per batch).

        Validates ``env`` first: a local bug should fail here, at the sender, not make the
        peer close the connection."""
        env.validate()
        body = self._packer.pack(env.to_wire())
        if len(body) > self.max_frame_size:
            raise ProtocolError(
                f"{env.msg_type} message of {len(body)} bytes exceeds "
                f"max_frame_size {self.max_frame_size}"
            )
        parts.append(_pack_header(len(body)))
        parts.append(body)

    def encode(self, env: Envelope) -> bytes:
        """One frame."""
        parts: list[bytes] = []
        self.encode_into(env, parts)
        return b"".join(parts)

    def encode_batch(self, envs: Iterable[Envelope]) -> bytes:
        """Many frames as one ``bytes``, for one ``write`` per event-loop turn."""
        parts: list[bytes] = []
        for env in envs:
            self.encode_into(env, parts)
        return b"".join(parts)
