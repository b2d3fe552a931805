"""Frames and the msgpack body: round trips, every refusal, and fuzzing of the decoder.

The decoder's contract (framing.FrameDecoder): only ProtocolError escapes; after every
call its buffer offsets are consistent; a frame with a bad body is consumed and the next
one still decodes; an oversized length breaks the decoder for good.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distsync.errors import ProtocolError
from distsync.net.codec import pack_body, unpack_body
from distsync.net.envelope import MSG_TYPES, Envelope, MsgIdGenerator
from distsync.net.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameEncoder

IDS = MsgIdGenerator("node_0")


def env(i: int = 0, **payload: object) -> Envelope:
    return Envelope(
        f"node_0-{i}", "append_entries", "node_0", "node_1", dict(payload), "2025-10-25T10:30:00Z"
    )


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def wire(**overrides: object) -> dict[str, object]:
    w = env().to_wire()
    w.update(overrides)
    return w


def test_round_trip_keeps_bytes_and_types() -> None:
    e = env(1, entries=[b"\x00" * 100, b"\xff\x01"], term=3, commit=None, ok=True, ratio=0.5)
    dec = FrameDecoder()
    dec.feed(FrameEncoder().encode(e))
    assert dec.drain() == [e]
    assert dec.pending == 0
    assert unpack_body(pack_body(e)) == e


def test_a_batch_is_one_buffer_and_decodes_in_order() -> None:
    envs = [env(i, n=i) for i in range(50)]
    data = FrameEncoder().encode_batch(envs)
    dec = FrameDecoder()
    dec.feed(data)
    assert dec.drain() == envs


def test_every_split_point_gives_the_same_envelopes() -> None:
    envs = [env(i, data=bytes(range(i))) for i in range(4)]
    data = FrameEncoder().encode_batch(envs)
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        dec.feed(data[:cut])
        got = dec.drain()
        dec.feed(data[cut:])
        got += dec.drain()
        assert got == envs, cut
        dec.check_invariants()


def test_buffered_protocol_path_reuses_one_buffer() -> None:
    enc, dec = FrameEncoder(), FrameDecoder()
    data = enc.encode_batch(env(i, blob=b"x" * 100) for i in range(2000))
    first = dec.get_buffer(-1)
    buf_id = id(first.obj)
    first.release()
    got: list[Envelope] = []
    pos = 0
    while pos < len(data):
        view = dec.get_buffer(-1)
        n = min(len(view), 7000, len(data) - pos)  # reads that split frames
        view[:n] = data[pos : pos + n]
        view.release()
        dec.buffer_updated(n)
        pos += n
        got += dec.drain()
        dec.check_invariants()
    assert len(got) == 2000 and got[-1].payload == {"blob": b"x" * 100}
    view = dec.get_buffer(-1)
    assert id(view.obj) == buf_id, "small frames must not reallocate the receive buffer"


def test_a_large_frame_grows_the_buffer_and_it_shrinks_back_later() -> None:
    enc, dec = FrameEncoder(), FrameDecoder()
    initial = dec.capacity
    big = env(0, snapshot=b"s" * (4 * initial))
    dec.feed(enc.encode(big))
    assert dec.drain() == [big]
    assert dec.capacity > initial
    # Given back only after a whole window (256 frames) of small ones.
    for _ in range(3):
        dec.feed(enc.encode_batch(env(i) for i in range(200)))
        assert len(dec.drain()) == 200
    assert dec.capacity == initial


def test_oversized_length_breaks_the_decoder() -> None:
    dec = FrameDecoder(max_frame_size=1000)
    dec.feed(frame(pack_body(env())) + struct.pack(">I", 1001) + b"junk")
    assert dec.next_envelope() == env()
    with pytest.raises(ProtocolError, match="frame length 1001 exceeds max_frame_size 1000"):
        dec.next_envelope()
    assert dec.broken
    dec.feed(frame(pack_body(env())))
    with pytest.raises(ProtocolError, match="exceeds"):
        dec.next_envelope()


def test_default_max_frame_size_refuses_a_huge_length_without_allocating() -> None:
    dec = FrameDecoder()
    dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match=str(DEFAULT_MAX_FRAME_SIZE)):
        dec.next_envelope()
    assert dec.capacity < DEFAULT_MAX_FRAME_SIZE


def test_encoder_refuses_to_send_what_the_peer_would_refuse() -> None:
    enc = FrameEncoder(max_frame_size=200)
    with pytest.raises(ProtocolError, match="exceeds max_frame_size 200"):
        enc.encode(env(blob=b"x" * 300))
    bad = env()
    bad.msg_type = "nope"
    with pytest.raises(ProtocolError, match="unknown msg_type"):
        enc.encode(bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1", "undecodable msgpack"),  # reserved byte
        (b"", "undecodable msgpack"),  # empty frame
        (pack_body(env()) + b"\x00", "undecodable msgpack"),  # trailing bytes
        (b"\xa3\xff\xfe\xfd", "undecodable msgpack"),  # invalid UTF-8 string
        (msgpack.packb({"payload": msgpack.ExtType(5, b"x")}), "undecodable msgpack"),
        (msgpack.packb([1, 2]), "must be a map, got list"),
        (msgpack.packb(7), "must be a map, got int"),
        (msgpack.packb(wire(msg_type="lock_steal")), "unknown msg_type 'lock_steal'"),
        (
            msgpack.packb({k: v for k, v in wire().items() if k != "sender_id"}),
            "missing field 'sender_id'",
        ),
        (msgpack.packb(wire(payload=b"raw")), "field 'payload' must be a map"),
        (msgpack.packb(wire(msg_id=12)), "field 'msg_id'"),
        (msgpack.packb(wire(timestamp="yesterday")), "field 'timestamp'"),
        (b"\x91" * 5000, "undecodable msgpack"),  # nesting deeper than msgpack's stack
    ],
)
def test_bad_bodies_are_named_and_skipped(body: bytes, message: str) -> None:
    dec = FrameDecoder()
    dec.feed(frame(body) + frame(pack_body(env(2))))
    with pytest.raises(ProtocolError, match=message):
        dec.next_envelope()
    assert not dec.broken
    assert dec.next_envelope() == env(2)
    dec.check_invariants()


def test_truncated_frames_wait_for_more() -> None:
    data = frame(pack_body(env(blob=b"y" * 500)))
    for cut in (0, 1, 3, 4, 5, len(data) - 1):
        dec = FrameDecoder()
        dec.feed(data[:cut])
        assert dec.next_envelope() is None
        assert dec.pending == cut
        dec.check_invariants()


def test_buffer_updated_cannot_claim_more_than_lent() -> None:
    dec = FrameDecoder()
    view = dec.get_buffer(-1)
    with pytest.raises(ValueError):
        dec.buffer_updated(len(view) + 1)


# -- fuzzing ------------------------------------------------------------------------------

payload_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=64),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
envelopes = st.builds(
    Envelope,
    msg_id=st.text(min_size=1, max_size=20),
    msg_type=st.sampled_from(sorted(MSG_TYPES)),
    sender_id=st.text(min_size=1, max_size=10),
    receiver_id=st.text(max_size=10),
    payload=st.dictionaries(st.text(max_size=10), payload_values, max_size=5),
    timestamp=st.just("2025-10-25T10:30:00Z"),
)


def drain_all(dec: FrameDecoder) -> tuple[list[Envelope], int]:
    """Decode everything decodable; count the ProtocolErrors (nothing else may escape)."""
    got: list[Envelope] = []
    errors = 0
    for _ in range(10_000):  # bounded: each iteration consumes a frame or stops
        try:
            e = dec.next_envelope()
        except ProtocolError:
            errors += 1
            dec.check_invariants()
            if dec.broken:
                return got, errors
            continue
        dec.check_invariants()
        if e is None:
            return got, errors
        got.append(e)
    raise AssertionError("decoder did not make progress")


@given(st.lists(envelopes, max_size=8), st.lists(st.integers(0, 4000), max_size=6))
def test_valid_frames_decode_whatever_the_read_boundaries(
    envs: list[Envelope], cuts: list[int]
) -> None:
    data = FrameEncoder().encode_batch(envs)
    dec = FrameDecoder()
    got: list[Envelope] = []
    pos = 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        dec.feed(data[pos:cut])
        pos = max(pos, cut)
        more, errors = drain_all(dec)
        assert errors == 0
        got += more
    assert got == envs
    assert dec.pending == 0


@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 1 << 20))
def test_random_bytes_only_raise_protocol_error(chunks: list[bytes], max_frame: int) -> None:
    dec = FrameDecoder(max_frame_size=max_frame)
    for chunk in chunks:
        dec.feed(chunk)
        dec.check_invariants()
        drain_all(dec)
    assert dec.pending <= sum(map(len, chunks))


@given(
    st.lists(
        st.one_of(
            envelopes.map(lambda e: ("ok", frame(pack_body(e)), e)),
            st.binary(max_size=200).map(lambda b: ("body", frame(b), None)),
            st.dictionaries(
                st.sampled_from(
                    ["msg_id", "msg_type", "sender_id", "receiver_id", "payload", "timestamp"]
                ),
                payload_values,
            ).map(lambda d: ("body", frame(msgpack.packb(d)), None)),
        ),
        max_size=10,
    ),
    st.integers(1, 64),
)
def test_bad_bodies_between_good_frames_lose_only_themselves(
    items: list[tuple[str, bytes, Envelope | None]], step: int
) -> None:
    dec = FrameDecoder()
    data = b"".join(f for _, f, _ in items)
    got: list[Envelope] = []
    errors = 0
    for i in range(0, len(data) + 1, step):
        dec.feed(data[i : i + step])
        more, errs = drain_all(dec)
        got += more
        errors += errs
    good = [e for kind, _, e in items if kind == "ok"]
    # A random body may happen to be a valid envelope; every good one must come through,
    # in order, and every frame is accounted for as decoded or refused.
    assert [e for e in got if e in good] == good
    assert len(got) + errors == len(items)
    assert not dec.broken and dec.pending == 0


@given(st.integers(0, 2**32 - 1), st.binary(max_size=64), st.integers(1, 1 << 16))
def test_any_length_prefix_is_refused_or_awaited(length: int, rest: bytes, max_frame: int) -> None:
    dec = FrameDecoder(max_frame_size=max_frame)
    dec.feed(struct.pack(">I", length) + rest)
    if length > max_frame:
        with pytest.raises(ProtocolError):
            dec.next_envelope()
        assert dec.broken
    elif len(rest) < length:
        assert dec.next_envelope() is None
        assert dec.capacity >= length + 4
    else:
        try:
            dec.next_envelope()
        except ProtocolError:
            pass
        assert not dec.broken
    dec.check_invariants()
