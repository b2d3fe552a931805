"""One distsync server process: the Raft core driven by asyncio, over LMDB and the network.

:class:`Node` wires :class:`~distsync.raft.RaftCore` (I/O-free) to its effects:

- a **tick timer** (the driver owns time; the core only counts ticks),
- the **transport** (:mod:`distsync.net`): one listening :class:`~distsync.net.Server`
  for everything inbound (peers' Raft messages, client requests) and one reconnecting
  :class:`~distsync.net.PeerLink` per peer for this node's outbound Raft messages,
- the **storage** (:class:`~distsync.raft.lmdb_storage.LmdbStorage`: the log in segment
  files, one fdatasync per batch; hard state and snapshots in LMDB): every node writes
  its log inline, in its event loop (see below); snapshots are written in a worker
  thread,
- the **apply loop**: committed entries go to the replicated state machine
  (:class:`ServiceState`: the lock service's :class:`~distsync.lock.LockTable` beside a
  small counter/KV, :class:`CounterKV`) with client deduplication by ``(client_id,
  sequence)`` (:class:`~distsync.raft.SessionTable`),
- the **lock service** handlers (``on_lock_acquire``, ``on_lock_release``,
  ``on_lock_status``, ``on_session_open``, ``on_session_keepalive``,
  ``on_session_close``), driving the table as :mod:`distsync.lock` describes: a queued
  acquire is answered from the applied entry that grants it; ``lock_status`` is served
  after a ReadIndex; the leader extends every session when elected and proposes expiries
  on its ticks, stamped with its :class:`~distsync.lock.LeaderClock`; a follower answers
  ``not_leader`` naming the leader,
- **metrics** for Prometheus (:class:`NodeMetrics`, served on ``/metrics``).

The driver (:meth:`Node._pump`) follows the Ready contract of
:class:`~distsync.raft.Ready`: persist -> send -> apply -> advance, with the thesis
§10.2.1 relaxation: when ``persist_first`` is False (a leader whose term and vote are
already durable) the messages leave *before* the fsync, so the followers' fsyncs overlap
the leader's own; and such a leader applies the Ready's committed entries (durable on a
quorum already) before its own write, so their clients are answered without waiting for
the fsync of the entries that came after them.

Group commit
============
Everything that reaches the node (peer messages, proposals, ticks) is queued by the
transport callbacks and handed to the core only by the driver, between two Ready
batches. :meth:`LmdbStorage.save` runs inline: what arrives during the write waits in the
socket buffers and is read, all at once, in the next loop turn; the driver then feeds it
all to the core at once, so the next Ready holds every proposal that arrived meanwhile:
one append message per follower and one fsync for the whole batch (group commit, by the
kernel's queue). One fsync is in flight at a time, by construction.

A follower's write must complete before its answer leaves, so its loop would have
nothing to do but decode meanwhile. A leader's appends are on their way before its write
(see above) and the clients of the entries its Ready commits are answered before the
write blocks; what its loop could do during the fsync is to read and decode the next
requests early, which a worker thread for the write allowed, at the price of a wake-up
each way and the GIL handed over twice per batch. With a log that flushes once per batch
that price was the larger (measured on 2 cores: 64 lock clients ~9% more pairs/s, 64
proposers ~5% more commits/s inline), so the leader writes inline too.

The core tells followers a new commit index at once, with an empty append to each. The
driver holds those back for up to one tick (:meth:`Node._may_hold`): the next batch's
append carries the same news, and the followers learning the commit a little later
delays nothing a client waits for (clients are answered by the leader).

Queuing rather than stepping the core during the fsync has a second purpose: the storage
is not thread-safe, and the core reads it (terms, older entries) while it steps messages;
with the core idle until the write returns, the storage is only touched by one thread at
a time.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import logging
import os
import random
import ssl as _ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from distsync.errors import (
    ClusterUnavailable,
    DistSyncError,
    InvalidRequest,
    ProtocolError,
)
from distsync.lock import (
    Acquire,
    Cancel,
    Cancelled,
    CloseSession,
    ExpiryScheduler,
    Grant,
    KeepAlive,
    LeaderClock,
    LockTable,
    OpenSession,
    Rejected,
    Release,
    SessionClosed,
    SessionExpired,
    TimedOut,
    effect_to_wire,
    on_elected,
)
from distsync.lock import Command as LockCommand
from distsync.lock import encode_command as encode_lock_command
from distsync.net.auth import client_ssl_context, load_secret, server_ssl_context
from distsync.net.envelope import Envelope, MsgIdGenerator, error_envelope
from distsync.net.transport import Backoff, Connection, PeerLink, Server
from distsync.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    Ready,
    Role,
    SessionTable,
    Snapshot,
    StaleSequenceError,
)
from distsync.raft.lmdb_storage import LmdbStorage, check_log_format
from distsync.raft.progress import ProgressState

__all__ = [
    "TlsFiles",
    "NodeConfig",
    "Node",
    "CounterKV",
    "ServiceState",
    "LOCK_TAG",
    "encode_lock_entry",
    "NodeMetrics",
    "encode_command",
    "message_to_payload",
    "payload_to_message",
    "parse_address",
    "fetch_status",
    "install_uvloop",
]

log = logging.getLogger(__name__)

#: Wire names of the Raft peer messages (the envelope's ``msg_type``).
RAFT_MSG_TYPES: dict[str, MessageType] = {t.value: t for t in MessageType}


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:7400"`` for IPv6) as ``(host, port)``; ValueError names
    what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {text!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError(f"port {p} of {text!r} is out of range")
    return host, p


@dataclass(frozen=True)
class TlsFiles:
    """TLS for every connection of a node: its certificate and key, and the CA that signs
    every node's and client's certificate (both directions are verified)."""

    cert: str
    key: str | None
    ca: str
    #: Verify that a peer's certificate names the host connected to (needs IP SANs when
    #: peers are given by address).
    check_hostname: bool = True


@dataclass
class NodeConfig:
    """What one node needs to run. Times are in seconds; ``*_tick`` in ticks.

    Invariants: ``id`` not in ``peers``; ``election_tick > heartbeat_tick >= 1``.
    With the defaults (50 ms ticks, election after 10..20 ticks) a follower campaigns
    0.5 to 1 s after it last heard from a leader.
    """

    id: str
    listen: tuple[str, int]
    #: The other voters: node id -> (host, port).
    peers: dict[str, tuple[str, int]]
    data_dir: str
    #: The cluster secret (HMAC handshake). None: $DISTSYNC_SECRET, else the development
    #: default with a warning (see :func:`distsync.net.auth.load_secret`).
    secret: bytes | None = None
    tls: TlsFiles | None = None
    election_tick: int = 10
    heartbeat_tick: int = 1
    tick_interval: float = 0.05
    #: Port of the Prometheus ``/metrics`` endpoint (None: no endpoint; 0: any free port).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: fsync every write (False only for tests that do not care about power loss).
    sync: bool = True
    #: How the Raft log is stored: ``"segments"`` (one flush per commit) or ``"lmdb"``
    #: (see :mod:`distsync.raft.lmdb_storage`). An existing log is opened as found.
    log_format: str = "segments"
    #: Take a snapshot (and compact the log) after this many entries applied since the last.
    snapshot_entries: int = 10_000
    #: Entries kept in the log behind a snapshot, so a follower a little behind catches up
    #: by AppendEntries rather than a whole InstallSnapshot.
    snapshot_keep: int = 1_000
    #: How long a client's proposal may wait to be applied before it is answered with an
    #: error (it may still be applied later; the client's retry is deduplicated).
    propose_timeout: float = 5.0

    def validate(self) -> None:
        if self.id in self.peers:
            raise ValueError(f"node id {self.id!r} is also listed among its peers")
        if not self.id:
            raise ValueError("node id must not be empty")
        if self.tick_interval <= 0:
            raise ValueError("tick_interval must be > 0")
        check_log_format(self.log_format)
        if self.snapshot_entries < 1 or self.snapshot_keep < 0:
            raise ValueError("snapshot_entries must be >= 1 and snapshot_keep >= 0")
        Config(self.id, voters=(self.id,), election_tick=self.election_tick,
               heartbeat_tick=self.heartbeat_tick).validate()  # fmt: skip


# ==== the replicated state machine (for now) ====================================================


def encode_command(
    op: str,
    key: str = "",
    value: Any = None,
    client_id: str = "",
    sequence: int | None = None,
    first_unacked: int | None = None,
) -> bytes:
    """A command for :class:`CounterKV` as log entry data. ``client_id`` and ``sequence``
    make a retried command apply once (``sequence`` None: no deduplication)."""
    return msgpack.packb([op, key, value, client_id, sequence, first_unacked], use_bin_type=True)


def _apply_once(
    sessions: SessionTable,
    client_id: Any,
    seq: Any,
    first_unacked: Any,
    execute: Callable[[], Any],
) -> Any:
    """``execute()`` under ``(client_id, sequence)`` deduplication when the entry names
    both (a retried command returns the first result); a stale sequence is answered
    with an error and applies nothing."""
    if isinstance(client_id, str) and client_id and isinstance(seq, int):
        try:
            return sessions.apply(
                client_id, seq, execute, first_unacked if isinstance(first_unacked, int) else None
            )
        except StaleSequenceError as exc:
            return {"error": exc.code, "message": str(exc)}
    return execute()


class CounterKV:
    """A replicated counter and key-value map: the minimal state machine of the node until
    the lock table arrives. Deterministic: every replica applying the same entries in the
    same order ends in the same state and gives the same results.

    Commands (:func:`encode_command`): ``incr`` adds ``value`` (default 1) to the counter
    (or to the integer at ``key``) and returns the new value; ``set`` stores ``value`` at
    ``key``; ``get`` returns the value at ``key`` (a read through the log); anything else
    (including data that is no command) only counts as applied.
    """

    def __init__(self) -> None:
        self.counter = 0
        self.kv: dict[str, Any] = {}
        self.sessions = SessionTable()
        #: NORMAL entries applied, commands or not.
        self.applied_commands = 0

    def apply(self, data: bytes) -> Any:
        """Apply one committed entry's data; returns the command's result."""
        self.applied_commands += 1
        try:
            cmd = msgpack.unpackb(data, raw=False)
        except Exception:
            return None  # opaque data: counted, nothing else
        if not isinstance(cmd, list) or len(cmd) != 6:
            return None
        op, key, value, client_id, seq, first_unacked = cmd
        if not isinstance(key, str):
            return None

        def execute() -> Any:
            return self._execute(op, key, value)

        return _apply_once(self.sessions, client_id, seq, first_unacked, execute)

    def _execute(self, op: Any, key: str, value: Any) -> Any:
        if op == "incr":
            step = value if isinstance(value, int) else 1
            if key:
                cur = self.kv.get(key, 0)
                new = (cur if isinstance(cur, int) else 0) + step
                self.kv[key] = new
                return new
            self.counter += step
            return self.counter
        if op == "set":
            self.kv[key] = value
            return None
        if op == "get":
            return self.kv.get(key)
        return None

    def snapshot(self) -> bytes:
        """The whole state as bytes (goes into a Raft snapshot)."""
        return msgpack.packb(
            {
                "counter": self.counter,
                "kv": self.kv,
                "sessions": self.sessions.dump(),
                "applied_commands": self.applied_commands,
            },
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> None:
        """Replace the state by a snapshot's (the inverse of :meth:`snapshot`)."""
        if not data:
            self.__init__()  # type: ignore[misc]
            return
        # Session results are keyed by sequence numbers: integer map keys.
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.counter = int(obj["counter"])
        self.kv = dict(obj["kv"])
        self.sessions = SessionTable.load(obj["sessions"])
        self.applied_commands = int(obj["applied_commands"])


#: First byte of a lock-service entry. A counter/KV command is a msgpack array (first
#: byte 0x90..0x9f), so one byte tells the two services' entries apart on every replica
#: without decoding, and an old log of counter commands still applies unchanged.
LOCK_TAG = b"L"


def encode_lock_entry(
    cmd: LockCommand,
    client_id: str = "",
    sequence: int | None = None,
    first_unacked: int | None = None,
) -> bytes:
    """A lock command as log entry data: :data:`LOCK_TAG`, then ``[client_id, sequence,
    first_unacked, command bytes]``. ``sequence`` None (the leader's own expiry and
    extension commands): no deduplication."""
    body: bytes = msgpack.packb(
        [client_id, sequence, first_unacked, encode_lock_command(cmd)], use_bin_type=True
    )
    return LOCK_TAG + body


class ServiceState(CounterKV):
    """The node's replicated state: the counter/KV commands of :class:`CounterKV` and the
    lock service's :class:`~distsync.lock.LockTable`, with its own ``(client_id,
    sequence)`` deduplication (a lock client numbers its own commands).

    A lock entry's result is the list of its effects as plain data
    (:func:`~distsync.lock.effect_to_wire`), which is what deduplication keeps and what a
    snapshot stores; :attr:`last_effects` holds the effects of the entry just applied
    when it really ran (empty for a duplicate), for the node to answer waiters from.
    """

    def __init__(self) -> None:
        super().__init__()
        self.locks = LockTable()
        self.lock_sessions = SessionTable()
        self.last_effects: list[Any] = []

    def apply(self, data: bytes, index: int = 0) -> Any:
        """Apply one committed entry (``index`` is its Raft index: lock grants carry it as
        their fencing token); returns the command's result."""
        if data[:1] != LOCK_TAG:
            self.last_effects = []
            return super().apply(data)
        self.applied_commands += 1
        effects: list[Any] = []
        self.last_effects = effects
        try:
            client_id, seq, first_unacked, cmd = msgpack.unpackb(data[1:], raw=False)
        except Exception:
            # Only a leader writes these, from validated commands: count it, touch nothing.
            return None

        def execute() -> Any:
            # The table decodes and re-validates; an entry it refuses applies as a Rejected.
            try:
                got = self.locks.apply_entry(index, cmd)
            except InvalidRequest as exc:
                got = [Rejected("bad_command", str(exc))]
            effects.extend(got)
            return [effect_to_wire(e) for e in got]

        result = _apply_once(self.lock_sessions, client_id, seq, first_unacked, execute)
        # A client with no session left cannot be waiting for any answer: forget its
        # deduplication record (every replica decides this from the same entry).
        for e in effects:
            if isinstance(e, (SessionExpired, SessionClosed)) and not any(
                s.client_id == e.client_id for s in self.locks.sessions()
            ):
                self.lock_sessions.expire(e.client_id)
        return result

    def snapshot(self) -> bytes:
        out: bytes = msgpack.packb(
            {
                "kv": super().snapshot(),
                "locks": self.locks.snapshot(),
                "lock_sessions": self.lock_sessions.dump(),
            },
            use_bin_type=True,
        )
        return out

    def restore(self, data: bytes) -> None:
        if not data:
            self.__init__()  # type: ignore[misc]
            return
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if "locks" not in obj:
            # A snapshot written before the lock service: the counter/KV part only.
            super().restore(data)
            self.locks = LockTable()
            self.lock_sessions = SessionTable()
            return
        super().restore(obj["kv"])
        self.locks = LockTable.restore(obj["locks"])
        self.lock_sessions = SessionTable.load(obj["lock_sessions"])


# ==== Raft messages in envelopes ================================================================


def message_to_payload(m: Message) -> dict[str, Any]:
    """The envelope payload of a Raft message: short keys, fields at their default left
    out (an append carries mostly entries; a heartbeat only a term and a commit).

    Entries travel as ``[term, kind, data]`` triples after ``f``, the index of the first
    (entries in one message are consecutive)."""
    p: dict[str, Any] = {"t": m.term}
    if m.log_term:
        p["lt"] = m.log_term
    if m.index:
        p["i"] = m.index
    if m.entries:
        p["f"] = m.entries[0].index
        p["e"] = [(e.term, int(e.kind), e.data) for e in m.entries]
    if m.commit:
        p["c"] = m.commit
    if m.reject:
        p["r"] = True
    if m.reject_hint:
        p["h"] = m.reject_hint
    if m.context:
        p["x"] = m.context
    s = m.snapshot
    if s is not None:
        p["s"] = (s.index, s.term, list(s.conf.voters), list(s.conf.learners), s.data)
    return p


def _int(p: dict[str, Any], key: str) -> int:
    v = p.get(key, 0)
    if type(v) is not int or v < 0:
        raise ProtocolError(f"field {key!r} of a Raft message must be a non-negative integer")
    return v


#: Wire value -> EntryKind: a dict lookup per entry instead of ``EntryKind(kind)``, whose
#: enum machinery was a few percent of a follower's CPU at 64 proposers.
_ENTRY_KINDS: dict[Any, EntryKind] = {int(k): k for k in EntryKind}


def payload_to_message(env: Envelope) -> Message:
    """The Raft message an envelope carries; :class:`ProtocolError` names a bad field."""
    mtype = RAFT_MSG_TYPES[env.msg_type]
    p = env.payload
    m = Message(mtype, env.receiver_id, env.sender_id, _int(p, "t"))
    if "lt" in p:
        m.log_term = _int(p, "lt")
    if "i" in p:
        m.index = _int(p, "i")
    if "c" in p:
        m.commit = _int(p, "c")
    if "h" in p:
        m.reject_hint = _int(p, "h")
    if p.get("r"):
        m.reject = True
    ctx = p.get("x")
    if ctx is not None:
        if not isinstance(ctx, bytes):
            raise ProtocolError("field 'x' (context) of a Raft message must be bytes")
        m.context = ctx
    ents = p.get("e")
    if ents is not None:
        first = _int(p, "f")
        if not isinstance(ents, list) or first < 1:
            raise ProtocolError("field 'e' (entries) of a Raft message must be a list")
        out = []
        try:
            for k, (term, kind, data) in enumerate(ents):
                ek = _ENTRY_KINDS.get(kind)
                if type(term) is not int or not isinstance(data, bytes) or ek is None:
                    raise ProtocolError(f"entry {first + k} of a Raft message is malformed")
                out.append(Entry(term, first + k, data, ek))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"entries of a Raft message are malformed: {exc}") from None
        m.entries = out
    snap = p.get("s")
    if snap is not None:
        try:
            index, term, voters, learners, data = snap
            if not (
                type(index) is int
                and type(term) is int
                and isinstance(data, bytes)
                and all(isinstance(v, str) for v in voters)
                and all(isinstance(v, str) for v in learners)
            ):
                raise ValueError("wrong field types")
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"field 's' (snapshot) of a Raft message is malformed: {exc}"
            ) from None
        m.snapshot = Snapshot(index, term, ConfState(tuple(voters), tuple(learners)), data)
    return m


# ==== metrics =====================================================================================

#: Upper bounds (seconds) of the fsync latency histogram: 50 us .. 1 s.
FSYNC_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class NodeMetrics:
    """The counters of one node, rendered in the Prometheus text format (0.0.4).

    Written by hand rather than with ``prometheus-client``: a dozen series do not justify
    a dependency, its default registry is process-global (two nodes in one test process
    would clash), and its HTTP server is a thread while the node already has an event
    loop to serve ``/metrics`` from."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.proposals = 0
        self.proposals_failed = 0
        self.applied_entries = 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.fsync_counts = [0] * (len(FSYNC_BUCKETS) + 1)
        self.fsync_sum = 0.0
        self.fsync_count = 0
        self.batch_entries = 0
        self.messages: dict[tuple[str, str], int] = {}

    def observe_fsync(self, seconds: float, entries: int) -> None:
        self.fsync_counts[bisect.bisect_left(FSYNC_BUCKETS, seconds)] += 1
        self.fsync_sum += seconds
        self.fsync_count += 1
        self.batch_entries += entries

    def count_message(self, direction: str, msg_type: str) -> None:
        key = (direction, msg_type)
        self.messages[key] = self.messages.get(key, 0) + 1

    def render(self, status: dict[str, Any]) -> str:
        """The exposition text; ``status`` is :meth:`Node.status`."""
        nid = self.node_id
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = f'node="{nid}"' + (f",{labels}" if labels else "")
                lines.append(f"{name}{{{lab}}} {value}")

        role = status["role"]
        metric(
            "distsync_raft_role",
            "gauge",
            "1 for the role this node has now.",
            [
                (f'role="{r}"', 1 if r == role else 0)
                for r in ("leader", "follower", "candidate", "learner")
            ],
        )
        metric("distsync_raft_term", "gauge", "Current Raft term.", [("", status["term"])])
        metric("distsync_raft_commit_index", "gauge", "Highest committed log index known.",
               [("", status["commit_index"])])  # fmt: skip
        metric("distsync_raft_applied_index", "gauge", "Highest log index applied.",
               [("", status["last_applied"])])  # fmt: skip
        metric("distsync_raft_last_index", "gauge", "Last index in the local log.",
               [("", status["last_index"])])  # fmt: skip
        metric("distsync_proposals_total", "counter", "Client proposals accepted into the log.",
               [("", self.proposals)])  # fmt: skip
        metric("distsync_proposals_failed_total", "counter",
               "Client proposals refused (not leader, dropped, overwritten, timed out).",
               [("", self.proposals_failed)])  # fmt: skip
        metric("distsync_applied_entries_total", "counter", "Log entries applied.",
               [("", self.applied_entries)])  # fmt: skip
        metric("distsync_snapshots_total", "counter", "Snapshots taken or installed.",
               [('kind="taken"', self.snapshots_taken),
                ('kind="installed"', self.snapshots_installed)])  # fmt: skip
        metric("distsync_fsync_entries_total", "counter",
               "Log entries made durable (divide by the fsync count: the group-commit batch).",
               [("", self.batch_entries)])  # fmt: skip
        name = "distsync_fsync_seconds"
        lines.append(f"# HELP {name} Latency of one durable storage write (one Ready batch).")
        lines.append(f"# TYPE {name} histogram")
        acc = 0
        for bound, n in zip(FSYNC_BUCKETS, self.fsync_counts[:-1], strict=True):
            acc += n
            lines.append(f'{name}_bucket{{node="{nid}",le="{bound}"}} {acc}')
        acc += self.fsync_counts[-1]
        lines.append(f'{name}_bucket{{node="{nid}",le="+Inf"}} {acc}')
        lines.append(f'{name}_sum{{node="{nid}"}} {self.fsync_sum:.9f}')
        lines.append(f'{name}_count{{node="{nid}"}} {self.fsync_count}')
        metric(
            "distsync_messages_total",
            "counter",
            "Messages received (in) and sent (out), by type.",
            [(f'direction="{d}",type="{t}"', n) for (d, t), n in sorted(self.messages.items())],
        )
        return "\n".join(lines) + "\n"


async def _serve_http(
    render: Callable[[], str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A minimal HTTP/1.0 responder for ``GET /metrics`` (Prometheus scrapes only that)."""
    try:
        request = await asyncio.wait_for(reader.readline(), 5.0)
        # Skip the headers; the answer does not depend on them.
        while True:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            if line in (b"\r\n", b"\n", b""):
                break
        parts = request.split()
        if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
            body = render().encode()
            head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        else:
            body = b"not found: try /metrics\n"
            head = b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def _ignore(index: int, result: Any, exc: BaseException | None) -> None:
    """The waiter of the leader's own proposals (expiry, session extension): nobody to
    answer; a lost one is proposed again by the scheduler."""


# ==== the node ===================================================================================

_ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",
    Role.FOLLOWER: "follower",
}

#: Messages not queued for a peer that is down (the small ones are: votes, heartbeats).
_BULKY = (MessageType.APPEND_ENTRIES, MessageType.INSTALL_SNAPSHOT)

#: Called with (index, result) once a proposal is applied, or (index, error) if it failed.
_Waiter = Callable[[int, Any, "BaseException | None"], None]


class _PendingAcquire:
    """A queued acquire whose client waits on this leader: called with the effect that
    ends it (as plain data) to answer the client on ``conn``, the connection its latest
    request came on (see "Abandoned waits" in :meth:`Node.on_lock_acquire`)."""

    __slots__ = ("conn", "resource", "client_id", "answer")

    def __init__(
        self,
        conn: Connection,
        resource: str,
        client_id: str,
        answer: Callable[[dict[str, Any]], None],
    ) -> None:
        self.conn = conn
        self.resource = resource
        self.client_id = client_id
        self.answer = answer

    def __call__(self, effect: dict[str, Any]) -> None:
        self.answer(effect)


class Node:
    """One Raft node: see the module docstring. Use from one event loop::

    node = Node(config)
    await node.start()
    index, result = await node.propose(encode_command("incr"), timeout=1.0)
    await node.stop()
    """

    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.ids = MsgIdGenerator(config.id)
        self.metrics = NodeMetrics(config.id)
        self.sm = ServiceState()
        self._secret = config.secret
        self._storage: LmdbStorage | None = None
        self._core: RaftCore | None = None
        self._server: Server | None = None
        self._links: dict[str, PeerLink] = {}
        self._http: asyncio.base_events.Server | None = None
        # Snapshots (the whole state, not one batch) are written here, so the loop keeps
        # serving meanwhile (None with sync=False: they are then written inline).
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One driver pass is scheduled (call_soon) and not yet run.
        self._kicked = False
        # The snapshot being written: no driver pass runs until it is done.
        self._snapshotting: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        # Inputs queued for the driver (see "Group commit" in the module docstring).
        self._ticks_due = 0
        self._expire_due = False
        self._in_msgs: list[Message] = []
        self._in_props: list[tuple[bytes, _Waiter]] = []
        # Commit notices (empty appends) held back for at most a tick, per peer.
        self._held: dict[str, Message] = {}
        # index -> (term the entry was proposed in, waiter)
        self._waiting: dict[int, tuple[int, _Waiter]] = {}
        # index -> monotonic deadline of its waiter; insertion order is index order.
        self._deadline_of: dict[int, float] = {}
        self._applied = 0
        self._snapshot_index = 0
        # The lock service's leader state (module docstring of distsync.lock): the clock
        # stamped into commands and the expiry decisions; None/idle while not leading.
        self._lock_clock: LeaderClock | None = None
        self._expiry = ExpiryScheduler()
        # Acquires that queued, answered from the entry that grants (or ends) them:
        # (session_id, request_id) -> answer(effect as plain data).
        self._acquires: dict[tuple[str, Any], _PendingAcquire] = {}
        # Client connections whose close is watched: a queued acquire waits on them.
        self._watched: set[Connection] = set()
        # ReadIndex (lock_status): requests queued for the driver, requests the core
        # holds (context -> answer), and confirmed ones awaiting the apply of their index.
        self._in_reads: list[tuple[bytes, Callable[[BaseException | None], None]]] = []
        self._reads: dict[bytes, Callable[[BaseException | None], None]] = {}
        self._reads_ready: list[tuple[int, bytes]] = []
        self._read_counter = 0
        # While committed entries are applied: the connections answered meanwhile, to be
        # flushed once the batch is applied (see _apply_committed).
        self._replied: dict[Connection, None] | None = None
        #: Set when the node stopped because of an error (e.g. storage failure).
        self.failure: BaseException | None = None
        #: Resolves when the node has stopped (for ``serve``: exit then).
        self.stopped: asyncio.Future[None] | None = None

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage, restore the state machine, start listening and driving."""
        cfg = self.config
        loop = self._loop = asyncio.get_running_loop()
        self.stopped = loop.create_future()
        if self._secret is None:
            self._secret = load_secret()
        os.makedirs(cfg.data_dir, exist_ok=True)
        storage = self._storage = LmdbStorage(
            os.path.join(cfg.data_dir, "raft"), sync=cfg.sync, log_format=cfg.log_format
        )
        snap = storage.snapshot()
        if snap.index:
            self.sm.restore(snap.data)
        self._applied = self._snapshot_index = snap.index
        voters = tuple(sorted({cfg.id, *cfg.peers}))
        self._core = RaftCore(
            Config(
                cfg.id,
                voters=voters,
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                applied=snap.index,
            ),
            storage,
            random.Random(),
        )
        if cfg.sync:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"distsync-fsync-{cfg.id}"
            )
        server_ssl = client_ssl = None
        if cfg.tls is not None:
            server_ssl = server_ssl_context(cfg.tls.cert, cfg.tls.key, cfg.tls.ca)
            client_ssl = client_ssl_context(
                cfg.tls.ca, cfg.tls.cert, cfg.tls.key, check_hostname=cfg.tls.check_hostname
            )
        self._server = Server(
            cfg.id, self._secret, handler=self._on_envelope, ssl=server_ssl, ids=self.ids
        )
        await self._server.start(*cfg.listen)
        for pid, (host, port) in cfg.peers.items():
            link = PeerLink(
                self.ids,
                self._secret,
                pid,
                host,
                port,
                handler=self._on_envelope,
                ssl=client_ssl,
                # A restarted peer should be reachable again within a few ticks.
                backoff=Backoff(base=0.02, cap=0.5),
                connect_timeout=2.0,
                max_queued=1024,
            )
            link.start()
            self._links[pid] = link
        if cfg.metrics_port is not None:
            self._http = await asyncio.start_server(
                lambda r, w: _serve_http(self._render_metrics, r, w),
                cfg.metrics_host,
                cfg.metrics_port,
            )
        self._schedule_tick(loop.time(), 0)
        self._kick()

    @property
    def port(self) -> int:
        """The port the node listens on (useful with port 0)."""
        assert self._server is not None
        return self._server.port

    @property
    def metrics_port(self) -> int | None:
        if self._http is None or not self._http.sockets:
            return None
        return int(self._http.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop driving, close every connection and the storage. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._snapshotting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._snapshotting), 10.0)
        if self._http is not None:
            self._http.close()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.close()
        if self._server is not None:
            await self._server.close(timeout=2.0)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.wait_closed(), 2.0)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._storage is not None:
            self._storage.close()
        self._fail_waiting(ClusterUnavailable(f"node {self.id} stopped"))
        self._drop_lock_requests(ClusterUnavailable(f"node {self.id} stopped"))
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    def _driver_failed(self, exc: BaseException) -> None:
        if self._stopping:
            return
        # A storage failure or a bug: the node must not go on serving from a state it
        # cannot trust; stop and let the operator see why.
        log.critical("node %s stops: %r", self.id, exc, exc_info=exc)
        self.failure = exc  # no driver pass runs from here on
        assert self._loop is not None
        self._loop.create_task(self.stop())

    # -- time ---------------------------------------------------------------------------------------

    def _schedule_tick(self, start: float, n: int) -> None:
        # Drift-free: tick n is due at start + n * interval, however late this one ran.
        loop = asyncio.get_running_loop()
        due = start + (n + 1) * self.config.tick_interval
        self._tick_handle = loop.call_at(due, self._on_tick, start, n + 1)

    def _on_tick(self, start: float, n: int) -> None:
        if self._stopping:
            return
        self._ticks_due += 1
        # Proposal deadlines are seconds long: checked once a tick, not on every pass.
        self._expire_due = True
        self._kick()
        self._schedule_tick(start, n)

    # -- inputs ------------------------------------------------------------------------------------

    def _on_envelope(self, conn: Connection, env: Envelope) -> None:
        """Every application envelope from any connection lands here."""
        t = env.msg_type
        self.metrics.count_message("in", t)
        if t in RAFT_MSG_TYPES:
            try:
                m = payload_to_message(env)
            except ProtocolError as exc:
                self._refuse(conn, env, exc, close=True)
                return
            if env.receiver_id != self.id or env.sender_id not in self.config.peers:
                # Only the configured peers speak Raft to us (a client holding the secret
                # must not pose as a voter), and only to us.
                self._refuse(
                    conn,
                    env,
                    ProtocolError(
                        f"Raft message from {env.sender_id!r} to {env.receiver_id!r}: "
                        f"this is {self.id!r}, its peers are {sorted(self.config.peers)}"
                    ),
                    close=True,
                )
                return
            self._in_msgs.append(m)
            self._kick()
        elif t == "propose":
            self._on_propose(conn, env)
        elif t in self._LOCK_HANDLERS:
            self._LOCK_HANDLERS[t](self, conn, env)
        elif t == "status":
            self._reply(conn, env.reply(self.ids, "status", self.status()))
        elif t == "error":
            pass  # already logged by the connection
        else:
            self._refuse(conn, env, InvalidRequest(f"this node does not serve {t!r} yet"))

    def _refuse(
        self, conn: Connection, env: Envelope, exc: DistSyncError, close: bool = False
    ) -> None:
        self._reply(conn, error_envelope(self.ids, env.sender_id, exc, reply_to=env.msg_id))
        if close:
            conn.close()

    def _reply(self, conn: Connection, env: Envelope) -> None:
        if conn.is_open:
            self.metrics.count_message("out", env.msg_type)
            conn.send(env)
            if self._replied is not None:
                self._replied[conn] = None

    def _on_propose(self, conn: Connection, env: Envelope) -> None:
        """``propose``: ``data`` (one command, bytes) or ``batch`` (a list of them: a
        client sends the commands issued in one turn of its event loop together). Each
        command is its own log entry with its own result; the ``ack`` comes once all are
        applied: ``{"index", "result"}`` for ``data``, ``{"results": [...]}`` for
        ``batch`` with ``[index, result]`` or ``{"error": code, "message"}`` per command."""
        payload = env.payload
        if "batch" in payload:
            self._on_propose_batch(conn, env, payload["batch"])
            return
        data = payload.get("data")
        if not isinstance(data, bytes):
            self._refuse(conn, env, InvalidRequest("field 'data' of propose must be bytes"))
            return
        core = self._core
        if core is None or core.role != Role.LEADER:
            self._refuse_not_leader(conn, env)
            return

        def answer(index: int, result: Any, exc: BaseException | None) -> None:
            if exc is None:
                self._reply(conn, env.reply(self.ids, "ack", {"index": index, "result": result}))
            elif isinstance(exc, NotLeaderError):
                self._refuse_not_leader(conn, env)
            else:
                err = exc if isinstance(exc, DistSyncError) else DistSyncError(str(exc))
                self._refuse(conn, env, err)

        self._in_props.append((data, answer))
        self._kick()

    def _on_propose_batch(self, conn: Connection, env: Envelope, batch: Any) -> None:
        if not isinstance(batch, list) or not batch or not all(isinstance(d, bytes) for d in batch):
            self._refuse(
                conn,
                env,
                InvalidRequest("field 'batch' of propose must be a non-empty list of bytes"),
            )
            return
        core = self._core
        if core is None or core.role != Role.LEADER:
            self._refuse_not_leader(conn, env)
            return
        results: list[Any] = [None] * len(batch)
        left = len(batch)

        def answer_for(k: int) -> _Waiter:
            def answer(index: int, result: Any, exc: BaseException | None) -> None:
                nonlocal left
                if exc is None:
                    results[k] = [index, result]
                else:
                    code = exc.code if isinstance(exc, DistSyncError) else DistSyncError.code
                    results[k] = {"error": code, "message": str(exc)}
                left -= 1
                if left == 0:
                    self._reply(conn, env.reply(self.ids, "ack", {"results": results}))

            return answer

        self._in_props.extend((data, answer_for(k)) for k, data in enumerate(batch))
        self._kick()

    def _refuse_not_leader(self, conn: Connection, env: Envelope) -> None:
        leader = None if self._core is None else self._core.lead
        reply = error_envelope(self.ids, env.sender_id, NotLeaderError(leader), reply_to=env.msg_id)
        # Clients reading the raw envelope get the redirect without parsing the message.
        reply.payload["leader"] = leader
        addr = self.config.peers.get(leader) if leader else None
        if addr is not None:
            reply.payload["leader_addr"] = f"{addr[0]}:{addr[1]}"
        self.metrics.proposals_failed += 1
        self._reply(conn, reply)

    async def propose(self, data: bytes, timeout: float | None = None) -> Any:
        """Propose ``data`` (e.g. :func:`encode_command`) on this node, which must lead;
        resolves to ``(index, result)`` once applied here.

        :raises NotLeaderError: this node does not lead (its ``leader`` says who does).
        :raises ProposalDroppedError: a leader transfer is in progress, or the entry was
            overwritten by a new leader (it was never committed).
        :raises TimeoutError: not applied within ``timeout`` seconds (it may still be).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, Any]] = loop.create_future()

        def done(index: int, result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result((index, result))

        self._in_props.append((data, done))
        self._kick()
        return await asyncio.wait_for(fut, timeout)

    # -- the driver -------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Run one driver pass at the end of this event-loop turn (once, however many
        inputs arrive in the turn): by then every socket read in the turn has queued
        its messages, so one pass feeds them all to the core and one Ready holds them."""
        if not self._kicked and self._loop is not None:
            self._kicked = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        """The driver: the only code that calls the core. Feed queued inputs, then handle
        every Ready in order (persist -> send -> apply -> advance) until none is left.

        A plain callback rather than a task awaiting an event: nothing in a pass waits
        but the inline write, so a task's wake-up per pass would be pure overhead. The
        one thing that does wait, writing a snapshot, runs as a task of its own, and no
        pass runs until it is done."""
        self._kicked = False
        if self._stopping or self.failure is not None or self._snapshotting is not None:
            return
        core = self._core
        assert core is not None
        try:
            self._feed()
            while core.has_ready() and not self._stopping:
                if self._handle_ready(core.ready()):
                    assert self._loop is not None
                    self._snapshotting = self._loop.create_task(self._snapshot_then_pump())
                    return
                # What arrived during the fsync joins the next batch.
                self._feed()
            if self._expire_due:
                self._expire_due = False
                self._expire_waiting()
        except Exception as exc:
            self._driver_failed(exc)

    async def _snapshot_then_pump(self) -> None:
        try:
            await self._take_snapshot()
        except Exception as exc:
            self._snapshotting = None
            self._driver_failed(exc)
            return
        self._snapshotting = None
        self._pump()

    def _feed(self) -> None:
        core = self._core
        assert core is not None
        ticks, self._ticks_due = self._ticks_due, 0
        for _ in range(ticks):
            core.tick()
        if ticks and self._held:
            self._send_held()
        if ticks and self._lock_clock is not None and core.role == Role.LEADER:
            # Expiry is the leader's decision on its clock, committed through the log.
            now = self._lock_clock.now(time.monotonic())
            for cmd in self._expiry.poll(self.sm.locks, now):
                self._in_props.append((encode_lock_entry(cmd), _ignore))
        if self._in_reads:
            reads, self._in_reads = self._in_reads, []
            for ctx, answer in reads:
                try:
                    core.read_index(ctx)
                except NotLeaderError as exc:
                    answer(exc)
                    continue
                self._reads[ctx] = answer
        if self._in_msgs:
            msgs, self._in_msgs = self._in_msgs, []
            for m in msgs:
                try:
                    core.step(m)
                except Exception:
                    # A message the core cannot handle is the sender's problem; the
                    # others in the batch must still be stepped.
                    log.exception("node %s: cannot step %s from %s", self.id, m.type, m.sender)
        if self._in_props:
            props, self._in_props = self._in_props, []
            term = core.term
            try:
                first = core.propose_many([data for data, _ in props])
            except (NotLeaderError, ProposalDroppedError) as exc:
                for _, waiter in props:
                    self.metrics.proposals_failed += 1
                    waiter(0, None, exc)
                return
            deadline = time.monotonic() + self.config.propose_timeout
            waiting, deadline_of = self._waiting, self._deadline_of
            for index, (_, waiter) in enumerate(props, first):
                if waiter is not _ignore:  # the leader's own commands are no client's
                    self.metrics.proposals += 1
                old = waiting.get(index)
                if old is not None:
                    # Leader again after our log was cut below an entry we proposed in an
                    # earlier term and never saw applied: that entry is gone.
                    self.metrics.proposals_failed += 1
                    old[1](index, None, ProposalDroppedError(f"entry {index} was overwritten"))
                    deadline_of.pop(index, None)
                waiting[index] = (term, waiter)
                deadline_of[index] = deadline

    def _handle_ready(self, rd: Ready) -> bool:
        """One Ready through persist -> send -> apply -> advance; True if a snapshot is
        due (the caller writes it before handling anything else)."""
        core = self._core
        storage = self._storage
        assert core is not None and storage is not None
        if rd.soft_state is not None:
            self._on_role(rd.soft_state.role)
        if not rd.persist_first:
            # Thesis §10.2.1: the leader's appends leave now; its fsync overlaps theirs.
            # The writes are made here, not at the end of the loop turn: the save below
            # blocks the loop.
            self._send(rd.messages)
            self._flush_links()
        # 1. persist. A commit index alone (must_sync False, no entries) is not written:
        # it may be lost in a crash and is learnt again from the leader, and writing it
        # would cost an fsync per heartbeat.
        applied_early = False
        if rd.snapshot is not None or rd.entries or rd.must_sync:
            # The committed entries of this Ready are already durable on a quorum,
            # whatever this write holds: a leader applies them (and answers their
            # clients, a granted waiter first of all) before the write blocks, not
            # after it. Only the state machine is touched, never the storage or the
            # core -- hence not with a configuration change, which the core applies.
            if (
                not rd.persist_first
                and rd.committed_entries
                and not any(e.kind == EntryKind.CONFIG for e in rd.committed_entries)
            ):
                applied_early = True
                self._apply_committed(rd)
            # Inline, leader and follower alike (see "Group commit" above): what arrives
            # meanwhile waits in the socket buffers and is read in the next loop turn,
            # all at once -- the next batch.
            t0 = time.perf_counter()
            storage.save(rd.hard_state, rd.entries, rd.snapshot)
            self.metrics.observe_fsync(time.perf_counter() - t0, len(rd.entries))
        # 2. send
        if rd.persist_first:
            self._send(rd.messages)
            # The answers to the leader are on the commit path: they leave now, before
            # this node applies (and before the loop turn ends), not after.
            self._flush_links()
        # 3. apply
        if rd.snapshot is not None and rd.snapshot.index > self._applied:
            self.sm.restore(rd.snapshot.data)
            self._applied = self._snapshot_index = rd.snapshot.index
            self.metrics.snapshots_installed += 1
            self._fail_waiting(
                ProposalDroppedError("replaced by a snapshot"), upto=rd.snapshot.index
            )
        if not applied_early:
            self._apply_committed(rd)
        # 4. advance
        core.advance(rd)
        return self._applied - self._snapshot_index >= self.config.snapshot_entries

    def _apply_committed(self, rd: Ready) -> None:
        """Apply ``rd``'s committed entries, then answer the reads they make servable.

        The answers leave at once, one write per client connection, rather than at the
        end of the loop turn: the turn would first read (and decode) whatever every
        socket holds, or block in a leader's inline write, and a waiter granted the lock
        by these entries is the next link of a hand-off chain."""
        self._replied = {}
        try:
            if rd.committed_entries:
                self._apply(rd.committed_entries)
            if rd.read_states:
                self._reads_ready.extend((rs.index, rs.context) for rs in rd.read_states)
            if self._reads_ready:
                self._serve_reads()
        finally:
            replied, self._replied = self._replied, None
            for conn in replied:
                conn.flush()

    def _send(self, msgs: list[Message], hold: bool = True) -> None:
        core = self._core
        assert core is not None
        count = self.metrics.count_message
        for m in msgs:
            link = self._links.get(m.to)
            if link is None:
                log.warning("node %s: no link to %r; dropping %s", self.id, m.to, m.type.value)
                continue
            if m.type is MessageType.APPEND_ENTRIES:
                if not m.entries and hold and self._may_hold(m):
                    self._held[m.to] = m
                    continue
                # A later append carries a commit index at least as high.
                self._held.pop(m.to, None)
            if link.connection is None and m.type in _BULKY:
                # The peer is down: Raft resends what it needs once it answers again (a
                # probe from where its log really ends, or a snapshot), so queueing
                # entries for it would only replay stale batches on reconnect.
                if m.type is MessageType.INSTALL_SNAPSHOT:
                    # Told now, the core probes again instead of awaiting an answer.
                    core.report_snapshot(m.to, False)
                continue
            env = Envelope(self.ids(), m.type.value, self.id, m.to, message_to_payload(m))
            count("out", env.msg_type)
            link.send(env)

    def _flush_links(self) -> None:
        for link in self._links.values():
            conn = link.connection
            if conn is not None:
                conn.flush()

    def _may_hold(self, m: Message) -> bool:
        """Whether an empty append may wait: it only tells a follower the new commit
        index (the follower is replicating, so it is no probe), and the next append
        (under load, the next batch's, a round trip later) tells it as well; if none
        comes, it leaves at the next tick. Holding it back is only a network delay to
        Raft, and it saves the leader two writes and the followers two reads and two
        answers per commit: on two cores, ~15% more commits/s at 64 proposers and
        ~0.1 ms off the p50 at one (measured here)."""
        core = self._core
        assert core is not None
        pr = core.progress.get(m.to) if core.role == Role.LEADER else None
        # match >= m.index: the follower is known to hold everything the append would
        # check, so its answer could teach the leader nothing. Otherwise appends with
        # entries are in flight to it and their answers (or their rejection, from a
        # follower that restarted behind an optimistic ``next``) teach the leader the same;
        # if they were lost with a connection, the held append leaves at the next tick.
        # With nothing in flight and match below, it must leave now: it is the probe.
        return (
            pr is not None
            and pr.state == ProgressState.REPLICATE
            and (pr.match >= m.index or bool(pr.inflights))
        )

    def _send_held(self) -> None:
        core = self._core
        assert core is not None
        held, self._held = self._held, {}
        if core.role == Role.LEADER:
            self._send([m for m in held.values() if m.term == core.term], hold=False)

    def _apply(self, entries: list[Entry]) -> None:
        core = self._core
        assert core is not None
        sm = self.sm
        waiting = self._waiting
        for e in entries:
            result: Any = None
            if e.kind == EntryKind.NORMAL:
                result = sm.apply(e.data, e.index)
                if self._acquires and sm.last_effects:
                    self._answer_acquires(sm.last_effects)
            elif e.kind == EntryKind.CONFIG:
                core.apply_conf_change(ConfChange.decode(e.data))
            self._applied = e.index
            w = waiting.pop(e.index, None) if waiting else None
            if w is not None:
                self._deadline_of.pop(e.index, None)
                term, waiter = w
                if term == e.term:
                    waiter(e.index, result, None)
                else:
                    # A new leader overwrote our entry: it was never committed.
                    self.metrics.proposals_failed += 1
                    waiter(e.index, None, ProposalDroppedError(f"entry {e.index} was overwritten"))
        self.metrics.applied_entries += len(entries)

    def _expire_waiting(self) -> None:
        if not self._deadline_of:
            return
        now = time.monotonic()
        deadlines = self._deadline_of
        # Deadlines grow with the index (proposed in order): stop at the first live one.
        while deadlines:
            index = next(iter(deadlines))
            if deadlines[index] > now:
                break
            del deadlines[index]
            w = self._waiting.pop(index, None)
            if w is not None:
                self.metrics.proposals_failed += 1
                w[1](index, None, ClusterUnavailable(f"entry {index} not applied in time"))

    def _fail_waiting(self, exc: BaseException, upto: int | None = None) -> None:
        for index in sorted(self._waiting):
            if upto is not None and index > upto:
                break
            _, waiter = self._waiting.pop(index)
            self._deadline_of.pop(index, None)
            waiter(index, None, exc)

    async def _take_snapshot(self) -> None:
        """Record the state machine as of the applied index, then drop old log entries
        (keeping ``snapshot_keep`` for followers a little behind)."""
        core, storage = self._core, self._storage
        assert core is not None and storage is not None
        index = self._applied
        data = self.sm.snapshot()
        conf = core.conf_state()
        keep = self.config.snapshot_keep
        # Commit-only hard states are not written (see _handle_ready), so the stored
        # commit may lag the applied index; a restart would then find a snapshot beyond
        # its commit index. Writing the current one first keeps commit >= snapshot.
        hs = core.hard_state()

        def write() -> None:
            storage.set_hard_state(hs)
            storage.create_snapshot(index, conf, data)
            upto = index - keep
            if upto >= storage.first_index():
                storage.compact(upto)

        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, write)
        else:
            write()
        self._snapshot_index = index
        self.metrics.snapshots_taken += 1

    # -- the lock service --------------------------------------------------------------------------

    def _on_role(self, role: Role) -> None:
        """Start or stop leading the lock service when the Raft role changes."""
        core = self._core
        assert core is not None
        if role == Role.LEADER and self._lock_clock is None:
            cfg = self.config
            clock, first = on_elected(
                self.sm.locks, time.monotonic(), cfg.election_tick * cfg.tick_interval
            )
            self._lock_clock = clock
            self._expiry = ExpiryScheduler(retry=max(0.1, 2 * cfg.tick_interval))
            # First in the queue, so in log order the extension precedes every expiry and
            # every client command this leader proposes.
            self._in_props.insert(0, (encode_lock_entry(first), _ignore))
            self._kick()
        elif role != Role.LEADER and self._lock_clock is not None:
            self._lock_clock = None
            # Whoever waits here must ask the new leader (with the same request, which
            # the table and deduplication answer from where it stands).
            self._drop_lock_requests(NotLeaderError(core.lead))

    def _drop_lock_requests(self, exc: DistSyncError) -> None:
        acquires, self._acquires = self._acquires, {}
        for answer in acquires.values():
            answer({"effect": "error", "code": exc.code, "message": str(exc)})
        reads, self._reads = self._reads, {}
        self._reads_ready.clear()
        in_reads, self._in_reads = self._in_reads, []
        for _, read in [*reads.items(), *in_reads]:
            read(exc)

    def _answer_acquires(self, effects: list[Any]) -> None:
        """Answer the queued acquires this entry ended: a hand-off grant, a timeout or a
        cancel (an expired or closed session's wait)."""
        acquires = self._acquires
        for e in effects:
            if isinstance(e, (Grant, TimedOut, Cancelled)):
                answer = acquires.pop((e.session_id, e.request_id), None)
                if answer is not None:
                    answer(effect_to_wire(e))

    def _serve_reads(self) -> None:
        keep = []
        for index, ctx in self._reads_ready:
            if index > self._applied:
                keep.append((index, ctx))
                continue
            answer = self._reads.pop(ctx, None)
            if answer is not None:
                answer(None)
        self._reads_ready = keep

    def _leading(self, conn: Connection, env: Envelope) -> LeaderClock | None:
        """The lock clock if this node leads; otherwise answers ``not_leader``."""
        core = self._core
        if core is None or core.role != Role.LEADER or self._lock_clock is None:
            self._refuse_not_leader(conn, env)
            return None
        return self._lock_clock

    def _propose_lock(
        self,
        conn: Connection,
        env: Envelope,
        build: Callable[[float], Any],
        then: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        """Build a command from the request (``build(now)``; ``InvalidRequest`` refuses it
        before it reaches the log), propose it with the request's ``seq`` and
        ``first_unacked`` for deduplication, and call ``then(effects)`` once applied."""
        clock = self._leading(conn, env)
        if clock is None:
            return
        p = env.payload
        seq, first = p.get("seq"), p.get("first_unacked")
        try:
            if seq is not None and (type(seq) is not int or seq < 0):
                raise InvalidRequest(f"field 'seq' must be a non-negative int, not {seq!r}")
            if first is not None and type(first) is not int:
                raise InvalidRequest(f"field 'first_unacked' must be an int, not {first!r}")
            cmd = build(clock.now(time.monotonic()))
        except InvalidRequest as exc:
            self._refuse(conn, env, exc)
            return
        data = encode_lock_entry(cmd, env.sender_id, seq, first)

        def applied(index: int, result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                if isinstance(exc, NotLeaderError):
                    self._refuse_not_leader(conn, env)
                else:
                    err = exc if isinstance(exc, DistSyncError) else DistSyncError(str(exc))
                    self._refuse(conn, env, err)
            elif isinstance(result, dict):  # a stale sequence
                err = InvalidRequest(str(result.get("message")))
                err.code = str(result.get("error"))
                self._refuse(conn, env, err)
            elif not isinstance(result, list) or not result:
                self._refuse(conn, env, InvalidRequest("the command applied to nothing"))
            else:
                then(result)

        self._in_props.append((data, applied))
        self._kick()

    def _ack_effect(self, conn: Connection, env: Envelope, effect: dict[str, Any]) -> None:
        if effect.get("effect") == "error":
            # A waiter dropped by this node (it stopped leading): the client retries.
            if effect.get("code") == NotLeaderError.code:
                self._refuse_not_leader(conn, env)
            else:
                self._refuse(conn, env, ClusterUnavailable(str(effect.get("message"))))
            return
        self._reply(conn, env.reply(self.ids, "ack", {"effect": effect}))

    def on_lock_acquire(self, conn: Connection, env: Envelope) -> None:
        """``lock_acquire`` ``{resource, mode, session_id, request_id, timeout, seq,
        first_unacked}``: answered once with ``ack {"effect": ...}`` -- a grant, or the
        refusal (deadlock, rejected, timed_out, cancelled) -- when the acquire ends, which
        for a queued one is the entry that hands it the lock.

        Abandoned waits: when the connection a queued acquire waits on closes and no
        retry of it (same client, session and request id, which the client sends on
        reconnecting) arrives on another connection within one election timeout, this
        leader proposes a ``Cancel`` of it (:meth:`_cancel_abandoned`), so a waiter
        nobody listens for leaves the queue instead of blocking it until its timeout or
        its session's expiry, or being granted a lock nobody will use or release."""
        p = env.payload
        sid, rid = p.get("session_id"), p.get("request_id")
        if type(sid) is str and type(rid) in (int, str) and self._lock_clock is not None:
            # A retry of a queued acquire (same client, session and request) re-attaches
            # it to this connection as soon as it arrives: see _cancel_abandoned.
            pending = self._acquires.get((sid, rid))
            if pending is not None and pending.client_id == env.sender_id:
                pending.conn = conn

        def build(now: float) -> Acquire:
            return Acquire(
                p.get("resource"),  # type: ignore[arg-type]
                p.get("mode", "exclusive"),
                env.sender_id,
                p.get("session_id"),  # type: ignore[arg-type]
                p.get("request_id"),  # type: ignore[arg-type]
                now,
                p.get("timeout"),
            )

        def then(effects: list[dict[str, Any]]) -> None:
            sid, name = p.get("session_id"), p.get("resource")
            rid: Any = p.get("request_id")
            mine = [e for e in effects if e.get("session_id") == sid and e.get("request_id") == rid]
            eff = mine[0] if mine else effects[0]
            if eff["effect"] != "queued":
                self._ack_effect(conn, env, eff)
                return
            # Queued -- now, or when it was first applied (a deduplicated retry). Where
            # the wait stands now decides: still queued, granted meanwhile, or ended.
            table = self.sm.locks
            info = table.session(str(sid))
            if info is not None and info.waiting == name:
                self._acquires[(str(sid), rid)] = _PendingAcquire(
                    conn, str(name), env.sender_id, lambda e: self._ack_effect(conn, env, e)
                )
                self._watch(conn)
                return
            grant = table.hold(str(sid), str(name))
            if grant is not None and grant.request_id == rid:
                self._ack_effect(conn, env, effect_to_wire(grant))
            elif info is None:
                ended = Cancelled(str(name), env.sender_id, str(sid), rid, "session_expired")
                self._ack_effect(conn, env, effect_to_wire(ended))
            else:
                # Timed out, or cancelled (by the client, or abandoned): the table keeps no
                # trace of which. The client tells them apart by its own deadline.
                ended_t = TimedOut(str(name), env.sender_id, str(sid), rid)
                self._ack_effect(conn, env, effect_to_wire(ended_t))

        self._propose_lock(conn, env, build, then)

    def _watch(self, conn: Connection) -> None:
        """Check the queued acquires waiting on ``conn`` once it closes."""
        if conn not in self._watched:
            self._watched.add(conn)
            conn.closed.add_done_callback(lambda _: self._on_waiter_closed(conn))

    def _on_waiter_closed(self, conn: Connection) -> None:
        self._watched.discard(conn)
        if self._stopping or self._lock_clock is None:
            return
        if any(p.conn is conn for p in self._acquires.values()):
            cfg = self.config
            grace = cfg.election_tick * cfg.tick_interval
            asyncio.get_running_loop().call_later(grace, self._cancel_abandoned, conn)

    def _cancel_abandoned(self, conn: Connection) -> None:
        """One election timeout after ``conn`` closed: withdraw (through the log) every
        acquire still queued for a client that was waiting on it and has not come back.
        A client that is alive re-sends its acquire on reconnecting, which re-attaches
        it (:meth:`on_lock_acquire`); one that comes back later finds the wait ended and
        asks again. Only the leader decides; every replica applies the same ``Cancel``,
        which refuses harmlessly if the grant won the race."""
        if self._stopping or self._lock_clock is None:
            return  # not leading any more: the pending acquires were dropped
        table = self.sm.locks
        proposed = False
        for (sid, rid), p in list(self._acquires.items()):
            if p.conn is not conn:
                continue
            info = table.session(sid)
            if info is None or info.waiting != p.resource:
                continue  # ended meanwhile: its own entry answers it
            cmd = Cancel(p.resource, p.client_id, sid, rid)
            self._in_props.append((encode_lock_entry(cmd), _ignore))
            proposed = True
        if proposed:
            self._kick()

    def on_lock_release(self, conn: Connection, env: Envelope) -> None:
        """``lock_release`` ``{resource, session_id, token, seq, first_unacked}``; with
        ``cancel: request_id`` instead, withdraws that waiting acquire. Answered with
        ``ack {"effect": released | cancelled | rejected}``."""
        p = env.payload

        def build(now: float) -> Release | Cancel:
            if "cancel" in p:
                return Cancel(p.get("resource"), env.sender_id, p.get("session_id"), p["cancel"])  # type: ignore[arg-type]
            return Release(p.get("resource"), env.sender_id, p.get("session_id"), p.get("token"))  # type: ignore[arg-type]

        self._propose_lock(
            conn, env, build, lambda effects: self._ack_effect(conn, env, effects[0])
        )

    def on_session_open(self, conn: Connection, env: Envelope) -> None:
        """``session_open`` ``{session_id, ttl, seq, first_unacked}``."""
        p = env.payload

        def build(now: float) -> OpenSession:
            return OpenSession(p.get("session_id"), env.sender_id, p.get("ttl"), now)  # type: ignore[arg-type]

        self._propose_lock(
            conn, env, build, lambda effects: self._ack_effect(conn, env, effects[0])
        )

    def on_session_keepalive(self, conn: Connection, env: Envelope) -> None:
        """``session_keepalive`` ``{session_id}``: the deadline moves to now + ttl (a
        keepalive is idempotent, so it needs no sequence)."""
        p = env.payload

        def build(now: float) -> KeepAlive:
            return KeepAlive(p.get("session_id"), env.sender_id, now)  # type: ignore[arg-type]

        self._propose_lock(
            conn, env, build, lambda effects: self._ack_effect(conn, env, effects[0])
        )

    def on_session_close(self, conn: Connection, env: Envelope) -> None:
        """``session_close`` ``{session_id, seq, first_unacked}``: its locks are released."""
        p = env.payload

        def build(now: float) -> CloseSession:
            return CloseSession(p.get("session_id"), env.sender_id)  # type: ignore[arg-type]

        self._propose_lock(
            conn, env, build, lambda effects: self._ack_effect(conn, env, effects[0])
        )

    def on_lock_status(self, conn: Connection, env: Envelope) -> None:
        """``lock_status`` ``{resource}``: a linearizable read (ReadIndex) answered with
        ``ack {resource, mode, holders, waiters, fencing_token}`` (client ids)."""
        resource = env.payload.get("resource")
        if type(resource) is not str or not resource:
            self._refuse(conn, env, InvalidRequest("field 'resource' must be a non-empty str"))
            return
        if self._leading(conn, env) is None:
            return

        def answer(exc: BaseException | None) -> None:
            if exc is not None:
                if isinstance(exc, NotLeaderError):
                    self._refuse_not_leader(conn, env)
                else:
                    err = exc if isinstance(exc, DistSyncError) else DistSyncError(str(exc))
                    self._refuse(conn, env, err)
                return
            st = self.sm.locks.status(resource)
            self._reply(
                conn,
                env.reply(
                    self.ids,
                    "ack",
                    {
                        "resource": st.resource,
                        "mode": None if st.mode is None else st.mode.value,
                        "holders": list(st.holders),
                        "waiters": list(st.waiters),
                        "fencing_token": st.fencing_token,
                    },
                ),
            )

        self._read_counter += 1
        ctx = b"%d" % self._read_counter
        self._in_reads.append((ctx, answer))
        self._kick()

        def expire() -> None:
            late = self._reads.pop(ctx, None)
            if late is not None:
                late(ClusterUnavailable(f"lock_status of {resource!r} not confirmed in time"))

        asyncio.get_running_loop().call_later(self.config.propose_timeout, expire)

    _LOCK_HANDLERS: dict[str, Callable[[Node, Connection, Envelope], None]] = {
        "lock_acquire": on_lock_acquire,
        "lock_release": on_lock_release,
        "lock_status": on_lock_status,
        "session_open": on_session_open,
        "session_keepalive": on_session_keepalive,
        "session_close": on_session_close,
    }

    # -- read-outs ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Role, term, indexes and (on a leader) each peer's replication progress."""
        core = self._core
        if core is None:
            return {"node_id": self.id, "role": "follower", "term": 0, "commit_index": 0,
                    "last_applied": 0, "last_index": 0, "leader_id": None, "peers": {}}  # fmt: skip
        role = _ROLE_NAMES[core.role]
        if self.id in core.learners:
            role = "learner"
        peers: dict[str, Any] = {}
        if core.role == Role.LEADER:
            for pid, pr in core.progress.items():
                if pid != self.id:
                    peers[pid] = {
                        "match": pr.match,
                        "next": pr.next,
                        "state": pr.state.name.lower(),
                    }
        else:
            peers = {pid: {} for pid in self.config.peers}
        for pid, link in self._links.items():
            peers.setdefault(pid, {})["connected"] = link.connection is not None
        storage = self._storage
        return {
            "node_id": self.id,
            "role": role,
            "term": core.term,
            "commit_index": core.commit_index,
            "last_applied": self._applied,
            "last_index": core.log.last_index(),
            "first_index": storage.first_index() if storage is not None else 0,
            "snapshot_index": self._snapshot_index,
            "leader_id": core.lead,
            "voters": list(core.voters),
            "listen": f"{self.config.listen[0]}:{self.port if self._server else self.config.listen[1]}",
            "peers": peers,
            "counter": self.sm.counter,
            "applied_commands": self.sm.applied_commands,
            "snapshots_taken": self.metrics.snapshots_taken,
            "snapshots_installed": self.metrics.snapshots_installed,
        }

    def _render_metrics(self) -> str:
        return self.metrics.render(self.status())


# ==== helpers for the command line, tests and benchmarks ==========================================


async def fetch_status(
    host: str,
    port: int,
    secret: bytes,
    *,
    timeout: float = 2.0,
    client_id: str | None = None,
    ssl: _ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Ask the node at ``host:port`` for its :meth:`Node.status` over the wire.

    :raises AuthError: wrong secret. :raises ClusterUnavailable: unreachable.
    :raises TimeoutError: no answer within ``timeout``."""
    from distsync.net.transport import connect

    cid = client_id or f"status-{os.getpid()}-{random.getrandbits(32):08x}"
    conn = await connect(host, port, cid, secret, timeout=timeout, ssl=ssl)
    try:
        reply = await conn.request(Envelope.make(conn.ids, "status", conn.peer_id or ""), timeout)
        return dict(reply.payload)
    finally:
        conn.close()


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed (an optional extra: it
    makes the transport markedly faster); True if it is now in use."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
