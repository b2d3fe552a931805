"""pytest-benchmark: the wire layer's cost per message (DESIGN.md §12 budget: well under the
~205 us of one fsync).

- encode / decode of an append_entries-like envelope: 64 entries x 100 B;
- a batch of 100 small envelopes through encode_batch and the decoder (per-message cost);
- a loopback TCP round trip (request -> reply on one authenticated connection), one at a
  time and 500 in flight.

The loopback figures include both sides on one event loop, so one round trip is two
sends, two reads and two decodes on the same core. The peer for the round trip is the
same framing and codec over asyncio streams (``readexactly`` per header and body, no
handshake), the design this transport chose not to use (DESIGN.md §12).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from distsync.net.codec import unpack_body
from distsync.net.envelope import Envelope, MsgIdGenerator
from distsync.net.framing import FrameDecoder, FrameEncoder
from distsync.net.transport import Connection, Server, connect, serve

SECRET = b"benchmark-secret-0123456789abcdef"
ENTRIES = 64
ENTRY_BYTES = 100


def append_entries(ids: MsgIdGenerator) -> Envelope:
    entries = [
        {"index": 1000 + i, "term": 7, "kind": 0, "data": bytes([i]) * ENTRY_BYTES}
        for i in range(ENTRIES)
    ]
    payload = {"term": 7, "index": 999, "log_term": 7, "commit": 990, "entries": entries}
    return Envelope.make(ids, "append_entries", "node_1", payload)


def small(ids: MsgIdGenerator, i: int) -> Envelope:
    return Envelope.make(ids, "lock_acquire", "node_1", {"resource": f"r{i}", "mode": "exclusive"})


def test_encode_append_entries(benchmark: Any) -> None:
    enc = FrameEncoder()
    env = append_entries(MsgIdGenerator("node_0"))
    data = benchmark(enc.encode, env)
    assert len(data) > ENTRIES * ENTRY_BYTES
    benchmark.extra_info["frame_bytes"] = len(data)


def test_decode_append_entries(benchmark: Any) -> None:
    env = append_entries(MsgIdGenerator("node_0"))
    data = FrameEncoder().encode(env)
    dec = FrameDecoder()

    def decode() -> Envelope | None:
        dec.feed(data)
        return dec.next_envelope()

    assert benchmark(decode) == env


def test_encode_decode_batch_of_100_small(benchmark: Any) -> None:
    ids = MsgIdGenerator("node_0")
    envs = [small(ids, i) for i in range(100)]
    enc, dec = FrameEncoder(), FrameDecoder()

    def round_trip() -> int:
        dec.feed(enc.encode_batch(envs))
        return len(dec.drain())

    assert benchmark(round_trip) == 100


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[asyncio.AbstractEventLoop, Connection]]:
    loop = asyncio.new_event_loop()

    def echo(conn: Connection, env: Envelope) -> None:
        conn.send(env.reply(conn.ids, "ack"))

    async def up() -> tuple[Server, Connection]:
        server = await serve("node_1", SECRET, "127.0.0.1", 0, handler=echo)
        conn = await connect("127.0.0.1", server.port, "client_a", SECRET)
        return server, conn

    server, conn = loop.run_until_complete(up())
    try:
        yield loop, conn
    finally:
        conn.close()
        loop.run_until_complete(server.close())
        loop.close()


def test_loopback_round_trip(
    benchmark: Any, loopback: tuple[asyncio.AbstractEventLoop, Connection]
) -> None:
    loop, conn = loopback
    n = 200

    async def ping_pong() -> None:
        for i in range(n):
            await conn.request(small(conn.ids, i), 5.0)

    benchmark.pedantic(lambda: loop.run_until_complete(ping_pong()), rounds=10, warmup_rounds=1)
    benchmark.extra_info["round_trips_per_round"] = n
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["us_per_round_trip"] = benchmark.stats.stats.median / n * 1e6


def test_loopback_500_in_flight(
    benchmark: Any, loopback: tuple[asyncio.AbstractEventLoop, Connection]
) -> None:
    loop, conn = loopback
    n = 500

    async def burst() -> None:
        await asyncio.gather(*(conn.request(small(conn.ids, i), 5.0) for i in range(n)))

    benchmark.pedantic(lambda: loop.run_until_complete(burst()), rounds=10, warmup_rounds=1)
    benchmark.extra_info["requests_per_round"] = n
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["requests_per_s"] = n / benchmark.stats.stats.median


@pytest.fixture(scope="module")
def streams_loopback() -> Iterator[
    tuple[asyncio.AbstractEventLoop, asyncio.StreamReader, asyncio.StreamWriter]
]:
    loop = asyncio.new_event_loop()
    enc = FrameEncoder()
    ids = MsgIdGenerator("node_1")

    async def read_frame(reader: asyncio.StreamReader) -> Envelope:
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        return unpack_body(await reader.readexactly(length))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                env = await read_frame(reader)
                writer.write(enc.encode(env.reply(ids, "ack")))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def up() -> tuple[asyncio.base_events.Server, asyncio.StreamReader, asyncio.StreamWriter]:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        return server, reader, writer

    server, reader, writer = loop.run_until_complete(up())
    try:
        yield loop, reader, writer
    finally:
        writer.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_loopback_round_trip_peer_streams(
    benchmark: Any,
    streams_loopback: tuple[asyncio.AbstractEventLoop, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    loop, reader, writer = streams_loopback
    enc = FrameEncoder()
    ids = MsgIdGenerator("client_a")
    n = 200

    async def ping_pong() -> None:
        for i in range(n):
            writer.write(enc.encode(small(ids, i)))
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            unpack_body(await reader.readexactly(length))

    benchmark.pedantic(lambda: loop.run_until_complete(ping_pong()), rounds=10, warmup_rounds=1)
    benchmark.extra_info["round_trips_per_round"] = n
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["us_per_round_trip"] = benchmark.stats.stats.median / n * 1e6
