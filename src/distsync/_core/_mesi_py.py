"""MESI cache-line table of a near-cache agent (pure-Python twin of ``_mesi_c``).

A client process keeps a near-cache of keys whose home is some node of the
cluster. This module is the agent-side line table: one cache line per key,
each in a MESI state (Modified, Exclusive, Shared, Invalid) with a value,
evicted in LRU order when the table is full. It does no I/O and reads no
clock: the driver feeds it *events* (local reads and writes, fills from the
home, recalls and invalidations from the home, evictions, flushes) and
carries out the *action* each event returns (fetch from home, ask the home to
invalidate the other copies, write a dirty value back).

The protocol is one table, :data:`TRANSITIONS`, mapping ``(state, event)`` to
``(next_state, action)``; pairs the protocol forbids are absent from it and
raise :class:`IllegalTransition`. Events (``S`` = the line's state):

``LOCAL_READ``
    The process reads. M/E/S: a hit, served locally. I: a miss, ``FETCH``.
``LOCAL_WRITE``
    The process writes. M/E: written locally, the line becomes M (E -> M
    needs no message: no one else holds a copy). S: ``INVALIDATE_OTHERS``;
    the line stays S until the home confirms with ``UPGRADE``. I: a write
    miss, ``FETCH`` (exclusive).
``FILL_EXCLUSIVE`` / ``FILL_SHARED``
    The home answered a fetch: I -> E (no other holder) or I -> S. Illegal on
    a valid line: the home never sends data to a holder.
``UPGRADE``
    The home invalidated the other copies after ``INVALIDATE_OTHERS``:
    S -> E, and the retried write makes it M. Illegal elsewhere (if our copy
    was invalidated meanwhile, the home answers with a fill instead).
``REMOTE_READ``
    Another agent reads, the home downgrades us: M/E -> S (M writes back).
``INVALIDATE`` (alias ``REMOTE_WRITE``)
    Another agent writes or the home recalls the line: -> I (M writes back).
``EVICT``
    The agent drops the line (capacity, or on request): -> I (M writes back).
``FLUSH``
    Write-back mode, periodic flush: M -> E with ``WRITE_BACK``.
``CLEAN``
    The driver already stored the value at home (write-through ack): M -> E,
    nothing to write back.

Invalid lines hold no slot: a line that goes to I leaves the table, so
``len(table)`` counts valid lines and "absent" and "I" are the same state.

A table belongs to one agent and takes no lock: its driver uses it from one
thread (or one event loop), like every I/O-free kernel of distsync.

Write-backs are never returned as a value that could be dropped: every
``WRITE_BACK`` the table performs (eviction of an M line, recall, downgrade,
flush) appends ``(key, value)`` to a queue the driver drains with
:meth:`LineTable.pop_write_backs`. The queue is the one place dirty data
goes, so a caller that ignores a return value cannot lose a write.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from distsync.errors import ProtocolError

__all__ = [
    "LineTable",
    "IllegalTransition",
    "transition",
    "TRANSITIONS",
    "STATE_NAMES",
    "EVENT_NAMES",
    "ACTION_NAMES",
    "INVALID",
    "SHARED",
    "EXCLUSIVE",
    "MODIFIED",
    "NONE",
    "FETCH",
    "INVALIDATE_OTHERS",
    "WRITE_BACK",
    "LOCAL_READ",
    "LOCAL_WRITE",
    "FILL_EXCLUSIVE",
    "FILL_SHARED",
    "UPGRADE",
    "REMOTE_READ",
    "INVALIDATE",
    "REMOTE_WRITE",
    "EVICT",
    "FLUSH",
    "CLEAN",
    "OP_GET",
    "OP_PUT",
]

# States. INVALID is 0 so that "absent" and "invalid" read the same.
INVALID = 0
SHARED = 1
EXCLUSIVE = 2
MODIFIED = 3

# Actions the driver must carry out after an event.
NONE = 0
FETCH = 1
INVALIDATE_OTHERS = 2
WRITE_BACK = 3

# Events.
LOCAL_READ = 0
LOCAL_WRITE = 1
FILL_EXCLUSIVE = 2
FILL_SHARED = 3
UPGRADE = 4
REMOTE_READ = 5
INVALIDATE = 6
REMOTE_WRITE = INVALIDATE
EVICT = 7
FLUSH = 8
CLEAN = 9

# Op codes of LineTable.run.
OP_GET = 0
OP_PUT = 1

_NSTATES = 4
_NEVENTS = 10

STATE_NAMES: Mapping[int, str] = MappingProxyType(
    {INVALID: "I", SHARED: "S", EXCLUSIVE: "E", MODIFIED: "M"}
)
ACTION_NAMES: Mapping[int, str] = MappingProxyType(
    {NONE: "NONE", FETCH: "FETCH", INVALIDATE_OTHERS: "INVALIDATE_OTHERS", WRITE_BACK: "WRITE_BACK"}
)
EVENT_NAMES: Mapping[int, str] = MappingProxyType(
    {
        LOCAL_READ: "LOCAL_READ",
        LOCAL_WRITE: "LOCAL_WRITE",
        FILL_EXCLUSIVE: "FILL_EXCLUSIVE",
        FILL_SHARED: "FILL_SHARED",
        UPGRADE: "UPGRADE",
        REMOTE_READ: "REMOTE_READ",
        INVALIDATE: "INVALIDATE",
        EVICT: "EVICT",
        FLUSH: "FLUSH",
        CLEAN: "CLEAN",
    }
)

_I, _S, _E, _M = INVALID, SHARED, EXCLUSIVE, MODIFIED
# The protocol, one row per event, columns in state order I, S, E, M. None
# marks a pair the protocol forbids. The compiled twin holds the same table
# as C arrays; a test checks both against a table written from the protocol.
_ROWS: dict[int, tuple[tuple[int, int] | None, ...]] = {
    # event: (I, S, E, M) -> (next state, action) per current state
    LOCAL_READ: ((_I, FETCH), (_S, NONE), (_E, NONE), (_M, NONE)),
    LOCAL_WRITE: ((_I, FETCH), (_S, INVALIDATE_OTHERS), (_M, NONE), (_M, NONE)),
    FILL_EXCLUSIVE: ((_E, NONE), None, None, None),
    FILL_SHARED: ((_S, NONE), None, None, None),
    UPGRADE: (None, (_E, NONE), None, None),
    REMOTE_READ: ((_I, NONE), (_S, NONE), (_S, NONE), (_S, WRITE_BACK)),
    INVALIDATE: ((_I, NONE), (_I, NONE), (_I, NONE), (_I, WRITE_BACK)),
    EVICT: ((_I, NONE), (_I, NONE), (_I, NONE), (_I, WRITE_BACK)),
    FLUSH: ((_I, NONE), (_S, NONE), (_E, NONE), (_E, WRITE_BACK)),
    CLEAN: ((_I, NONE), (_S, NONE), (_E, NONE), (_E, NONE)),
}

#: ``(state, event) -> (next_state, action)`` for every pair the protocol
#: allows; a missing pair is an illegal event in that state. Read-only.
TRANSITIONS: Mapping[tuple[int, int], tuple[int, int]] = MappingProxyType(
    {
        (state, event): cell
        for event, row in _ROWS.items()
        for state, cell in enumerate(row)
        if cell is not None
    }
)


class IllegalTransition(ProtocolError):
    """An event the MESI protocol forbids in the line's current state.

    For example a fill on a line that is already valid, or an upgrade
    confirmation for a line that is not Shared. ``state`` and ``event`` are
    the offending pair (ints); ``key`` is the line's key when known.
    """

    code = "illegal_transition"

    def __init__(self, message: str, state: int = INVALID, event: int = 0, key: Any = None):
        super().__init__(message)
        self.state = state
        self.event = event
        self.key = key


def _code(value: object, name: str, limit: int) -> int:
    """``value`` as an int in ``[0, limit)``; the errors name ``name``."""
    # bool is an int, but a True where a state or event belongs is a bug.
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        code = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not 0 <= code < limit:
        raise ValueError(f"{name} must be in 0..{limit - 1}, not {code}")
    return code


def _illegal(state: int, event: int, key: Any = None) -> IllegalTransition:
    where = "" if key is None else f" for key {key!r}"
    return IllegalTransition(
        f"event {EVENT_NAMES[event]} is illegal in state {STATE_NAMES[state]}{where}",
        state,
        event,
        key,
    )


def transition(state: int, event: int) -> tuple[int, int]:
    """The protocol's answer to ``event`` in ``state``.

    :param state: one of ``INVALID``, ``SHARED``, ``EXCLUSIVE``, ``MODIFIED``.
    :param event: one of the event constants (``LOCAL_READ`` ... ``CLEAN``).
    :returns: ``(next_state, action)``.
    :raises TypeError: ``state`` or ``event`` is not an int.
    :raises ValueError: ``state`` or ``event`` is out of range.
    :raises IllegalTransition: the protocol forbids ``event`` in ``state``.
    """
    s = _code(state, "state", _NSTATES)
    e = _code(event, "event", _NEVENTS)
    cell = _ROWS[e][s]
    if cell is None:
        raise _illegal(s, e)
    return cell


def _check_key(key: object) -> None:
    # Exact str/bytes only: keys cross the wire to the home node, and a
    # subclass could run Python code (__hash__/__eq__) in the middle of an
    # update of the compiled twin's structures.
    if type(key) is not str and type(key) is not bytes:
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


class LineTable:
    """The cache lines of one near-cache agent: MESI state, value, LRU order.

    Valid lines (M, E, S) hold a value; an Invalid line is absent. When a new
    line arrives in a full table, the least recently used line is evicted;
    if it was Modified its ``(key, value)`` joins the write-back queue
    (:meth:`pop_write_backs`). Reads that hit and local writes move a line to
    the most recently used end.

    Counters (also in :meth:`stats`): ``hits`` and ``misses`` count reads
    (:meth:`get`, ``LOCAL_READ``, batch gets); ``invalidations`` counts valid
    lines dropped by ``INVALIDATE``; ``evictions`` valid lines dropped for
    room or by ``EVICT``; ``write_backs`` the pairs queued for write-back.

    :param capacity: the most lines the table holds, an int in 1..2**31-1.
    :raises TypeError: ``capacity`` is not an int.
    :raises ValueError: ``capacity`` is out of range.
    """

    __slots__ = (
        "_capacity",
        "_values",
        "_states",
        "_pending",
        "_hits",
        "_misses",
        "_invalidations",
        "_evictions",
        "_write_backs",
    )

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if not 0 < capacity < 2**31:
            raise ValueError(f"capacity must be in 1..2**31-1, not {capacity}")
        self._capacity = capacity
        # key -> value in LRU order (first = least recently used).
        self._values: OrderedDict[str | bytes, Any] = OrderedDict()
        # key -> state; holds exactly the keys of _values (valid lines only).
        self._states: dict[str | bytes, int] = {}
        self._pending: list[tuple[str | bytes, Any]] = []
        self._hits = 0
        self._misses = 0
        self._invalidations = 0
        self._evictions = 0
        self._write_backs = 0

    # -- reading -----------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The most lines the table holds."""
        return self._capacity

    @property
    def hits(self) -> int:
        """Reads served from a valid line."""
        return self._hits

    @property
    def misses(self) -> int:
        """Reads that found no valid line."""
        return self._misses

    @property
    def invalidations(self) -> int:
        """Valid lines dropped by ``INVALIDATE``."""
        return self._invalidations

    @property
    def evictions(self) -> int:
        """Valid lines dropped for room or by ``EVICT``."""
        return self._evictions

    @property
    def write_backs(self) -> int:
        """``(key, value)`` pairs queued for write-back, ever."""
        return self._write_backs

    def stats(self) -> dict[str, int]:
        """The counters as a dict (a snapshot)."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "invalidations": self._invalidations,
            "evictions": self._evictions,
            "write_backs": self._write_backs,
        }

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        _check_key(key)
        return key in self._states

    def __repr__(self) -> str:
        return f"<LineTable {len(self._states)}/{self._capacity} lines>"

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """Read ``key``: its value on a hit (M/E/S), ``default`` on a miss.

        A hit moves the line to the most recently used end and counts in
        ``hits``; a miss counts in ``misses`` and changes nothing else (the
        driver fetches from home, then calls :meth:`fill`).

        :param key: a str or bytes.
        :param default: returned on a miss.
        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        values = self._values
        if key in values:
            values.move_to_end(key)
            self._hits += 1
            return values[key]
        self._misses += 1
        return default

    def peek(self, key: str | bytes, default: Any = None) -> Any:
        """The value of ``key`` without touching LRU order or counters.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        return self._values.get(key, default)

    def state(self, key: str | bytes) -> int:
        """The line's state; ``INVALID`` when absent.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        return self._states.get(key, INVALID)

    def keys(self) -> list[str | bytes]:
        """The valid keys from least to most recently used."""
        return list(self._values)

    def pop_write_backs(self) -> list[tuple[str | bytes, Any]]:
        """Take the queued write-backs, oldest first, and empty the queue.

        Each is ``(key, value)`` of a Modified line that left M: evicted,
        invalidated, downgraded by ``REMOTE_READ`` or flushed. The driver
        sends them to the home nodes; a pair is queued exactly once.
        """
        out = self._pending
        self._pending = []
        return out

    # -- changing ------------------------------------------------------------

    def fill(self, key: str | bytes, value: Any, exclusive: bool) -> None:
        """Install the home's answer to a fetch: the line becomes E or S.

        Evicts the least recently used line if the table is full (an M victim
        is queued for write-back).

        :param exclusive: True for E (no other holder), False for S.
        :raises TypeError: ``key`` is not str or bytes, ``exclusive`` not bool.
        :raises IllegalTransition: the line is already valid.
        """
        _check_key(key)
        if not isinstance(exclusive, bool):
            raise TypeError(f"exclusive must be a bool, not {type(exclusive).__name__}")
        self._fill(
            key,
            value,
            EXCLUSIVE if exclusive else SHARED,
            FILL_EXCLUSIVE if exclusive else FILL_SHARED,
        )

    def write(self, key: str | bytes, value: Any) -> int:
        """A local write of ``key``: what the protocol needs first.

        M/E: the value is stored, the line becomes M and most recently used;
        returns ``NONE``. S: returns ``INVALIDATE_OTHERS`` and changes nothing
        (retry after ``UPGRADE``). Absent/I: returns ``FETCH`` (a write miss;
        retry after ``FILL_EXCLUSIVE``).

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        st = self._states.get(key, INVALID)
        if st == MODIFIED or st == EXCLUSIVE:
            self._states[key] = MODIFIED
            self._values[key] = value
            self._values.move_to_end(key)
            return NONE
        return INVALIDATE_OTHERS if st == SHARED else FETCH

    def invalidate(self, key: str | bytes) -> int:
        """``apply(key, INVALIDATE)``: drop the line (an M line writes back)."""
        return self.apply(key, INVALIDATE)

    def apply(self, key: str | bytes, event: int, value: Any = None) -> int:
        """Feed one protocol event for ``key``; return the action to take.

        :param event: an event constant (see the module docstring).
        :param value: the new value, for ``LOCAL_WRITE`` and the fills;
            ignored by other events.
        :returns: ``NONE``, ``FETCH``, ``INVALIDATE_OTHERS`` or ``WRITE_BACK``;
            a ``WRITE_BACK`` has already queued ``(key, value)``.
        :raises TypeError: ``key`` is not str or bytes, ``event`` not an int.
        :raises ValueError: ``event`` is not an event code.
        :raises IllegalTransition: the protocol forbids ``event`` here.
        """
        _check_key(key)
        ev = _code(event, "event", _NEVENTS)
        if ev == LOCAL_READ:
            if key in self._states:
                self._values.move_to_end(key)
                self._hits += 1
                return NONE
            self._misses += 1
            return FETCH
        if ev == LOCAL_WRITE:
            return self.write(key, value)
        if ev == FILL_EXCLUSIVE or ev == FILL_SHARED:
            self._fill(key, value, EXCLUSIVE if ev == FILL_EXCLUSIVE else SHARED, ev)
            return NONE
        st = self._states.get(key, INVALID)
        cell = _ROWS[ev][st]
        if cell is None:
            raise _illegal(st, ev, key)
        nxt, action = cell
        if action == WRITE_BACK:
            self._pending.append((key, self._values[key]))
            self._write_backs += 1
        if st == INVALID:
            return action
        if nxt == INVALID:
            del self._states[key]
            del self._values[key]
            if ev == INVALIDATE:
                self._invalidations += 1
            else:
                self._evictions += 1
        else:
            self._states[key] = nxt
        return action

    def run(self, ops: Any, keys: list[Any], values: list[Any]) -> int:
        """Apply a batch of gets and puts; return how many gets hit.

        ``ops[i]`` is ``OP_GET`` (a :meth:`get` of ``keys[i]``) or ``OP_PUT``
        (an owned write: ``keys[i]`` becomes Modified with ``values[i]``, the
        line filled if absent, evicting the LRU line if full; the caller
        asserts that the home granted it ownership, so no upgrade is asked).
        The whole batch is checked before any op runs: a malformed batch
        changes nothing.

        :param ops: a C-contiguous bytes-like of unsigned bytes (``bytes``,
            ``bytearray``, a ``uint8`` array).
        :param keys: a list of str/bytes, ``len(ops)`` long.
        :param values: a list, ``len(ops)`` long (entries of gets unused).
        :raises TypeError: ``ops`` is not bytes-like, ``keys``/``values`` not
            lists, a key not str/bytes.
        :raises ValueError: lengths differ, an op code is unknown, ``ops``
            is not 1-D contiguous unsigned bytes.
        """
        codes = _ops_view(ops)
        n = len(codes)
        if not isinstance(keys, list):
            raise TypeError(f"keys must be a list, not {type(keys).__name__}")
        if not isinstance(values, list):
            raise TypeError(f"values must be a list, not {type(values).__name__}")
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} items, ops has {n}")
        if len(values) != n:
            raise ValueError(f"values has {len(values)} items, ops has {n}")
        for i in range(n):
            if codes[i] > OP_PUT:
                raise ValueError(f"ops[{i}] is {codes[i]}, not OP_GET (0) or OP_PUT (1)")
            k = keys[i]
            if type(k) is not str and type(k) is not bytes:
                raise TypeError(f"keys[{i}] must be str or bytes, not {type(k).__name__}")
        hits = 0
        lines = self._values
        states = self._states
        for i in range(n):
            k = keys[i]
            if codes[i] == OP_GET:
                if k in lines:
                    lines.move_to_end(k)
                    hits += 1
                else:
                    self._misses += 1
            elif k in lines:
                lines[k] = values[i]
                lines.move_to_end(k)
                states[k] = MODIFIED
            else:
                self._insert(k, values[i], MODIFIED)
        self._hits += hits
        return hits

    # -- internals -------------------------------------------------------------

    def _fill(self, key: str | bytes, value: Any, state: int, event: int) -> None:
        st = self._states.get(key, INVALID)
        if st != INVALID:
            raise _illegal(st, event, key)
        self._insert(key, value, state)

    def _insert(self, key: str | bytes, value: Any, state: int) -> None:
        # Precondition: key absent. Make room first, so the table never holds
        # more than capacity lines, even for a moment.
        if len(self._states) >= self._capacity:
            victim, old = self._values.popitem(last=False)
            if self._states.pop(victim) == MODIFIED:
                self._pending.append((victim, old))
                self._write_backs += 1
            self._evictions += 1
        self._values[key] = value
        self._states[key] = state


def _ops_view(ops: Any) -> memoryview:
    try:
        mv = memoryview(ops)
    except TypeError:
        raise TypeError(f"ops must be a bytes-like object, not {type(ops).__name__}") from None
    if mv.ndim != 1 or mv.format != "B" or not mv.c_contiguous:
        raise ValueError(
            f"ops must be 1-D contiguous unsigned bytes, not format {mv.format!r} ndim {mv.ndim}"
        )
    return mv
