"""The MESI line table of the near-cache agent, on both twins.

The expected protocol table below is written from the MESI protocol as the
near-cache uses it (agent side, directory at the home node), not copied from
the kernel; every (state, event) pair is checked against it, then random
operation sequences are checked against a small oracle (a dict and a list of
keys in LRU order) and the two twins against each other.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distsync._core import NO_EXTENSIONS, load
from distsync.errors import DistSyncError, ProtocolError

# -- the protocol, written independently of the code ---------------------------

STATES = ("I", "S", "E", "M")
EVENTS = (
    "LOCAL_READ",
    "LOCAL_WRITE",
    "FILL_EXCLUSIVE",
    "FILL_SHARED",
    "UPGRADE",
    "REMOTE_READ",
    "INVALIDATE",
    "EVICT",
    "FLUSH",
    "CLEAN",
)
ACTIONS = ("NONE", "FETCH", "INVALIDATE_OTHERS", "WRITE_BACK")
STATE_CONST = {"I": "INVALID", "S": "SHARED", "E": "EXCLUSIVE", "M": "MODIFIED"}

# EXPECTED[event][state] = (next state, action), or None where the protocol
# forbids the event. Reasons, row by row:
# - a read hits in any valid state; in I it must fetch from home;
# - a write is local in M and E (E -> M silently: nobody else has a copy), in
#   S the home must invalidate the other sharers first, in I it is a miss;
# - the home sends data only to an agent without a copy (fills need I), and
#   confirms an upgrade only to a sharer (UPGRADE needs S);
# - a remote read downgrades an owner to S, a remote write / recall or our own
#   eviction drops the line, and dirty (M) data must reach home each time;
#   these arrive asynchronously, so on I they are harmless no-ops;
# - a flush writes dirty data home and keeps ownership (M -> E); a clean is
#   the acknowledgement of a write-through already at home (no write-back).
EXPECTED: dict[str, dict[str, tuple[str, str] | None]] = {
    "LOCAL_READ": {
        "I": ("I", "FETCH"),
        "S": ("S", "NONE"),
        "E": ("E", "NONE"),
        "M": ("M", "NONE"),
    },
    "LOCAL_WRITE": {
        "I": ("I", "FETCH"),
        "S": ("S", "INVALIDATE_OTHERS"),
        "E": ("M", "NONE"),
        "M": ("M", "NONE"),
    },
    "FILL_EXCLUSIVE": {"I": ("E", "NONE"), "S": None, "E": None, "M": None},
    "FILL_SHARED": {"I": ("S", "NONE"), "S": None, "E": None, "M": None},
    "UPGRADE": {"I": None, "S": ("E", "NONE"), "E": None, "M": None},
    "REMOTE_READ": {
        "I": ("I", "NONE"),
        "S": ("S", "NONE"),
        "E": ("S", "NONE"),
        "M": ("S", "WRITE_BACK"),
    },
    "INVALIDATE": {
        "I": ("I", "NONE"),
        "S": ("I", "NONE"),
        "E": ("I", "NONE"),
        "M": ("I", "WRITE_BACK"),
    },
    "EVICT": {
        "I": ("I", "NONE"),
        "S": ("I", "NONE"),
        "E": ("I", "NONE"),
        "M": ("I", "WRITE_BACK"),
    },
    "FLUSH": {
        "I": ("I", "NONE"),
        "S": ("S", "NONE"),
        "E": ("E", "NONE"),
        "M": ("E", "WRITE_BACK"),
    },
    "CLEAN": {
        "I": ("I", "NONE"),
        "S": ("S", "NONE"),
        "E": ("E", "NONE"),
        "M": ("E", "NONE"),
    },
}


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("mesi", impl)


def codes(m: ModuleType) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Name -> code maps of states, events and actions, read from the module."""
    states = {s: getattr(m, STATE_CONST[s]) for s in STATES}
    events = {e: getattr(m, e) for e in EVENTS}
    actions = {a: getattr(m, a) for a in ACTIONS}
    return states, events, actions


def in_state(m: ModuleType, table: Any, key: Any, state: str, value: Any = "v") -> None:
    """Put ``key`` in ``state`` through the public API only."""
    if state == "S":
        table.fill(key, value, False)
    elif state in ("E", "M"):
        table.fill(key, value, True)
        if state == "M":
            assert table.write(key, value) == m.NONE


# -- constants and the table -------------------------------------------------------


def test_constants_are_distinct_small_ints(mod: ModuleType) -> None:
    states, events, actions = codes(mod)
    for group in (states, events, actions):
        vals = list(group.values())
        assert all(type(v) is int and 0 <= v < 256 for v in vals)
        assert len(set(vals)) == len(vals)
    assert mod.REMOTE_WRITE == mod.INVALIDATE
    assert mod.OP_GET != mod.OP_PUT
    assert mod.STATE_NAMES[mod.MODIFIED] == "M"
    assert mod.EVENT_NAMES[mod.UPGRADE] == "UPGRADE"
    assert mod.ACTION_NAMES[mod.WRITE_BACK] == "WRITE_BACK"


def test_twins_share_constants() -> None:
    if NO_EXTENSIONS:
        pytest.skip("compiled twin not built")
    c, py = load("mesi", "c"), load("mesi", "py")
    for name in py.__all__:
        if name[0].isupper() and isinstance(getattr(py, name), int):
            assert getattr(c, name) == getattr(py, name), name
    assert c.IllegalTransition is py.IllegalTransition
    assert dict(c.TRANSITIONS) == dict(py.TRANSITIONS)


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("state", STATES)
def test_transition_function_matches_protocol(mod: ModuleType, state: str, event: str) -> None:
    states, events, actions = codes(mod)
    expected = EXPECTED[event][state]
    if expected is None:
        with pytest.raises(mod.IllegalTransition) as info:
            mod.transition(states[state], events[event])
        assert event in str(info.value) and state in str(info.value)
        assert (states[state], events[event]) not in mod.TRANSITIONS
        return
    want = (states[expected[0]], actions[expected[1]])
    assert mod.transition(states[state], events[event]) == want
    assert mod.TRANSITIONS[(states[state], events[event])] == want


def test_transitions_mapping_is_complete_and_read_only(mod: ModuleType) -> None:
    legal = sum(cell is not None for row in EXPECTED.values() for cell in row.values())
    assert len(mod.TRANSITIONS) == legal
    with pytest.raises(TypeError):
        mod.TRANSITIONS[(0, 0)] = (0, 0)


def test_illegal_transition_is_a_protocol_error(mod: ModuleType) -> None:
    assert issubclass(mod.IllegalTransition, ProtocolError)
    assert issubclass(mod.IllegalTransition, DistSyncError)
    t = mod.LineTable(4)
    t.fill("k", 1, True)
    with pytest.raises(mod.IllegalTransition) as info:
        t.apply("k", mod.FILL_SHARED, 2)
    err = info.value
    assert (err.state, err.event, err.key) == (mod.EXCLUSIVE, mod.FILL_SHARED, "k")
    assert t.peek("k") == 1 and t.state("k") == mod.EXCLUSIVE


# -- every pair of the table on a live line ----------------------------------------


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("state", STATES)
def test_apply_every_pair_on_a_line(mod: ModuleType, state: str, event: str) -> None:
    states, events, actions = codes(mod)
    t = mod.LineTable(8)
    in_state(mod, t, "other", "E")
    in_state(mod, t, "k", state, value="old")
    t.pop_write_backs()
    before = t.stats()
    expected = EXPECTED[event][state]
    if expected is None:
        with pytest.raises(mod.IllegalTransition):
            t.apply("k", events[event], "new")
        assert t.state("k") == states[state]
        assert t.stats() == before and t.pop_write_backs() == []
        return
    nxt, action = expected
    assert t.apply("k", events[event], "new") == actions[action]
    assert t.state("k") == states[nxt]
    assert ("k" in t) == (nxt != "I")
    assert len(t) == 1 + (nxt != "I")
    # Dirty data goes to the queue exactly when the protocol says WRITE_BACK.
    wb = t.pop_write_backs()
    assert wb == ([("k", "old")] if action == "WRITE_BACK" else [])
    after = t.stats()
    assert after["write_backs"] - before["write_backs"] == len(wb)
    valid_before = state != "I"
    assert after["invalidations"] - before["invalidations"] == (
        event == "INVALIDATE" and valid_before
    )
    assert after["evictions"] - before["evictions"] == (event == "EVICT" and valid_before)
    if event == "LOCAL_READ":
        assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (
            (1, 0) if valid_before else (0, 1)
        )
    # Values: a write in M/E stores the new value, a fill installs it.
    if nxt != "I":
        stored = t.peek("k")
        writes = event == "LOCAL_WRITE" and state in ("E", "M")
        assert stored == ("new" if writes or event.startswith("FILL") else "old")


def test_transition_rejects_bad_codes(mod: ModuleType) -> None:
    for bad in (-1, 4, 255, 2**70):
        with pytest.raises(ValueError, match="state"):
            mod.transition(bad, 0)
    for bad in (-1, 10, 2**70):
        with pytest.raises(ValueError, match="event"):
            mod.transition(0, bad)
    for bad in ("0", 1.0, None, True, [0]):
        with pytest.raises(TypeError, match="state"):
            mod.transition(bad, 0)
        with pytest.raises(TypeError, match="event"):
            mod.transition(0, bad)


# -- the local API -------------------------------------------------------------------


def test_get_hit_miss_and_counters(mod: ModuleType) -> None:
    t = mod.LineTable(4)
    sentinel = object()
    assert t.get("a") is None
    assert t.get("a", sentinel) is sentinel
    t.fill("a", [1], False)
    t.fill(b"a", "bytes", True)
    assert t.get("a") == [1] and t.get(b"a") == "bytes"
    assert (t.hits, t.misses) == (2, 2)
    assert t.stats() == {
        "hits": 2,
        "misses": 2,
        "invalidations": 0,
        "evictions": 0,
        "write_backs": 0,
    }
    # peek, state, contains, len touch no counter.
    assert t.peek("zz", 5) == 5 and t.state("zz") == mod.INVALID
    assert "a" in t and "zz" not in t and len(t) == 2
    assert (t.hits, t.misses) == (2, 2)
    assert t.capacity == 4


def test_write_follows_protocol(mod: ModuleType) -> None:
    t = mod.LineTable(4)
    assert t.write("k", 1) == mod.FETCH and "k" not in t  # write miss
    t.fill("k", 0, False)
    assert t.write("k", 1) == mod.INVALIDATE_OTHERS  # needs an upgrade
    assert t.state("k") == mod.SHARED and t.peek("k") == 0  # unchanged meanwhile
    assert t.apply("k", mod.UPGRADE) == mod.NONE
    assert t.state("k") == mod.EXCLUSIVE
    assert t.write("k", 1) == mod.NONE and t.state("k") == mod.MODIFIED
    assert t.write("k", 2) == mod.NONE and t.get("k") == 2
    # Downgrade by a remote reader: the dirty value goes home, the copy stays.
    assert t.apply("k", mod.REMOTE_READ) == mod.WRITE_BACK
    assert t.pop_write_backs() == [("k", 2)] and t.pop_write_backs() == []
    assert t.state("k") == mod.SHARED and t.get("k") == 2
    # Invalidation of a clean copy: no write-back, counted.
    assert t.invalidate("k") == mod.NONE and "k" not in t
    assert t.invalidations == 1 and t.write_backs == 1
    assert t.invalidate("k") == mod.NONE and t.invalidations == 1  # stale, harmless


def test_flush_and_clean(mod: ModuleType) -> None:
    t = mod.LineTable(4)
    in_state(mod, t, "a", "M", value=1)
    in_state(mod, t, "b", "M", value=2)
    assert t.apply("a", mod.FLUSH) == mod.WRITE_BACK
    assert t.apply("b", mod.CLEAN) == mod.NONE
    assert t.pop_write_backs() == [("a", 1)]
    assert t.state("a") == t.state("b") == mod.EXCLUSIVE
    # Both are clean now: dropping them writes nothing back.
    assert t.apply("a", mod.EVICT) == mod.NONE and t.apply("b", mod.INVALIDATE) == mod.NONE
    assert t.pop_write_backs() == [] and (t.evictions, t.invalidations) == (1, 1)


def test_lru_eviction_order_and_touch(mod: ModuleType) -> None:
    t = mod.LineTable(3)
    for k in "abc":
        t.fill(k, k.upper(), True)
    assert t.keys() == ["a", "b", "c"]
    t.get("a")  # a becomes most recently used
    assert t.keys() == ["b", "c", "a"]
    t.write("b", "B2")  # a local write is a use too
    assert t.keys() == ["c", "a", "b"]
    t.peek("c")  # peek is not
    t.fill("d", "D", False)
    assert t.keys() == ["a", "b", "d"] and "c" not in t
    assert t.evictions == 1 and t.pop_write_backs() == []


@pytest.mark.parametrize("victim_state", ["S", "E", "M"])
def test_evicting_modified_reports_write_back_once(mod: ModuleType, victim_state: str) -> None:
    t = mod.LineTable(2)
    in_state(mod, t, "victim", victim_state, value="dirty")
    t.fill("x", 1, True)
    t.fill("y", 2, True)  # evicts the victim, the LRU line
    assert "victim" not in t and t.evictions == 1
    wb = t.pop_write_backs()
    assert wb == ([("victim", "dirty")] if victim_state == "M" else [])
    assert t.write_backs == len(wb)
    # Exactly once: more traffic never reports it again.
    t.fill("z", 3, True)
    t.get("victim")
    assert t.pop_write_backs() == []


def test_batch_run_gets_and_puts(mod: ModuleType) -> None:
    t = mod.LineTable(3)
    t.fill("a", 1, False)
    G, P = mod.OP_GET, mod.OP_PUT
    ops = bytes([G, P, P, G, P, P, G])
    keys = ["a", "b", "a", "b", "c", "d", "b"]
    vals = [None, 2, 10, None, 3, 4, None]
    # a hit, b put (fill M), a put (S -> M, owned), b hit, c put, d put evicts
    # the LRU line (a, M, queued), b hit.
    assert t.run(ops, keys, vals) == 3
    assert t.keys() == ["c", "d", "b"]
    assert t.pop_write_backs() == [("a", 10)]
    assert all(t.state(k) == mod.MODIFIED for k in "bcd")
    assert (t.hits, t.misses, t.evictions, t.write_backs) == (3, 0, 1, 1)
    assert t.run(bytes([G]), ["zz"], [None]) == 0 and t.misses == 1
    assert t.run(b"", [], []) == 0
    # bytearray, memoryview and numpy uint8 are accepted too.
    np = pytest.importorskip("numpy")
    for ops2 in (bytearray([G]), memoryview(bytes([G])), np.zeros(1, dtype=np.uint8)):
        assert t.run(ops2, ["b"], [None]) == 1


def test_large_capacity_allocates_lazily(mod: ModuleType) -> None:
    t = mod.LineTable(2**31 - 1)
    for i in range(1000):
        t.fill(str(i), i, True)
    assert len(t) == 1000 and t.evictions == 0 and t.get("999") == 999


def test_slots_are_reused_after_invalidation(mod: ModuleType) -> None:
    t = mod.LineTable(3)
    for round_ in range(50):
        for k in "abc":
            t.fill(k, round_, False)
        t.invalidate("b")
        t.apply("a", mod.EVICT)
        t.fill("b", round_, True)
        assert t.keys() == ["c", "b"]
        t.invalidate("c")
        t.invalidate("b")
        assert len(t) == 0 and t.keys() == []


# -- no allocation on a hit ----------------------------------------------------------


def test_hit_allocates_nothing(impl: str) -> None:
    if impl == "py":
        pytest.skip("the pure-Python twin counts hits in a Python int, which allocates")
    m = load("mesi", impl)
    t = m.LineTable(1000)
    keys = [f"key{i}" for i in range(1000)]
    for k in keys:
        t.fill(k, k, True)
    hot = keys * 20
    get = t.get
    for k in hot:  # warm up: any lazy caches are filled before measuring
        get(k)
    gc.collect()
    # The same loop without the call calibrates what the measuring costs (the
    # int holding the block count is itself a block).
    blocks = sys.getallocatedblocks()
    for _k in hot:
        pass
    empty = sys.getallocatedblocks() - blocks
    blocks = sys.getallocatedblocks()
    for k in hot:
        get(k)
    assert sys.getallocatedblocks() - blocks <= empty

    def peak_during(call: bool) -> int:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            if call:
                for k in hot:
                    get(k)
            else:
                for _k in hot:
                    pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return int(peak - base)

    # Not a single block beyond what measuring itself costs, not even a
    # transient one, during 20000 hits (a tuple per hit would show here).
    # Each is run once first: the interpreter's one-time specialisation of
    # the loop's bytecode allocates on the first runs.
    peak_during(True), peak_during(False)
    assert peak_during(True) <= peak_during(False)
    assert t.hits == 4 * len(hot)


# -- bad input -------------------------------------------------------------------------


class StrSub(str):
    pass


@pytest.mark.parametrize("bad", [0, -1, 2**31, 2**80])
def test_capacity_out_of_range(mod: ModuleType, bad: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        mod.LineTable(bad)


@pytest.mark.parametrize("bad", [1.0, "3", None, True, [3]])
def test_capacity_wrong_type(mod: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError, match="capacity"):
        mod.LineTable(bad)


@pytest.mark.parametrize("bad", [1, None, 1.5, ("a",), ["a"], bytearray(b"a"), StrSub("a")])
def test_keys_must_be_str_or_bytes(mod: ModuleType, bad: Any) -> None:
    t = mod.LineTable(2)
    t.fill("a", 1, True)
    calls = [
        lambda: t.get(bad),
        lambda: t.peek(bad),
        lambda: t.state(bad),
        lambda: bad in t,
        lambda: t.fill(bad, 1, True),
        lambda: t.write(bad, 1),
        lambda: t.invalidate(bad),
        lambda: t.apply(bad, mod.LOCAL_READ),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="key"):
            call()
    assert t.keys() == ["a"] and t.stats()["misses"] == 0


def test_bad_event_and_exclusive(mod: ModuleType) -> None:
    t = mod.LineTable(2)
    for bad in (-1, 10, 200):
        with pytest.raises(ValueError, match="event"):
            t.apply("a", bad)
    for bad in (None, "LOCAL_READ", 0.0, False):
        with pytest.raises(TypeError, match="event"):
            t.apply("a", bad)
    for bad in (1, None, "yes"):
        with pytest.raises(TypeError, match="exclusive"):
            t.fill("a", 1, bad)
    assert len(t) == 0 and t.stats()["misses"] == 0


def test_malformed_batches_change_nothing(mod: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    t = mod.LineTable(2)
    t.fill("a", 1, True)
    G, P = mod.OP_GET, mod.OP_PUT
    cases: list[tuple[Any, Any, Any, type[Exception], str]] = [
        ([G], ["a"], [None], TypeError, "ops"),
        (None, ["a"], [None], TypeError, "ops"),
        ("x", ["a"], [None], TypeError, "ops"),
        (np.zeros(1, dtype=np.int64), ["a"], [None], ValueError, "ops"),
        (np.zeros((1, 1), dtype=np.uint8), ["a"], [None], ValueError, "ops"),
        (np.zeros(4, dtype=np.uint8)[::2], ["a", "a"], [1, 1], ValueError, "ops"),
        (bytes([P, 2]), ["b", "a"], [1, 1], ValueError, r"ops\[1\]"),
        (bytes([P, 255]), ["b", "a"], [1, 1], ValueError, r"ops\[1\]"),
        (bytes([P]), ("b",), [1], TypeError, "keys"),
        (bytes([P]), ["b"], (1,), TypeError, "values"),
        (bytes([P, P]), ["b"], [1, 1], ValueError, "keys"),
        (bytes([P, P]), ["b", "c"], [1], ValueError, "values"),
        (bytes([P, P]), ["b", 3], [1, 1], TypeError, r"keys\[1\]"),
        (bytes([P, P]), ["b", StrSub("c")], [1, 1], TypeError, r"keys\[1\]"),
    ]
    for ops, keys, vals, exc, name in cases:
        with pytest.raises(exc, match=name):
            t.run(ops, keys, vals)
        # The whole batch is checked first: nothing ran.
        assert t.keys() == ["a"] and t.peek("a") == 1
        assert t.stats() == {
            "hits": 0,
            "misses": 0,
            "invalidations": 0,
            "evictions": 0,
            "write_backs": 0,
        }


def test_finalizer_calling_back_into_table(mod: ModuleType) -> None:
    """A value whose __del__ uses the table while the table drops it."""
    t = mod.LineTable(2)

    class Reentrant:
        def __del__(self) -> None:
            t.get("x")
            if "late" not in t:
                t.fill("late", 0, False)

    t.fill("x", Reentrant(), True)
    t.fill("y", 1, True)
    t.fill("z", 2, True)  # evicts x; its finalizer fills another line
    t.run(bytes([mod.OP_PUT]), ["y"], [Reentrant()])
    t.run(bytes([mod.OP_PUT]), ["y"], [3])  # drops a Reentrant mid-batch
    t.write("y", Reentrant())
    t.write("y", 4)
    keys = t.keys()
    assert len(keys) == len(t) <= 2 and len(set(keys)) == len(keys)
    for k in keys:
        assert k in t and t.state(k) != mod.INVALID


# The impl fixture only names a module: nothing in it needs a reset per example.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- random operation sequences against an oracle ------------------------------------


class Oracle:
    """The line table in the plainest terms: a dict of lines and a list of keys.

    ``order`` is LRU first; a line is ``[state name, value]``. Transitions come
    from EXPECTED, not from the code under test.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.order: list[Any] = []
        self.lines: dict[Any, list[Any]] = {}
        self.pending: list[tuple[Any, Any]] = []
        self.stats = dict.fromkeys(
            ("hits", "misses", "invalidations", "evictions", "write_backs"), 0
        )

    def touch(self, key: Any) -> None:
        self.order.remove(key)
        self.order.append(key)

    def insert(self, key: Any, value: Any, state: str) -> None:
        if len(self.order) == self.capacity:
            victim = self.order.pop(0)
            vstate, vvalue = self.lines.pop(victim)
            if vstate == "M":
                self.pending.append((victim, vvalue))
                self.stats["write_backs"] += 1
            self.stats["evictions"] += 1
        self.order.append(key)
        self.lines[key] = [state, value]

    def state(self, key: Any) -> str:
        return self.lines[key][0] if key in self.lines else "I"

    def get(self, key: Any) -> Any:
        if key in self.lines:
            self.touch(key)
            self.stats["hits"] += 1
            return self.lines[key][1]
        self.stats["misses"] += 1
        return "<default>"

    def apply(self, key: Any, event: str, value: Any) -> str:
        st = self.state(key)
        cell = EXPECTED[event][st]
        if cell is None:
            return "IllegalTransition"
        nxt, action = cell
        if event == "LOCAL_READ":
            self.get(key)
            return action
        if event.startswith("FILL"):
            self.insert(key, value, nxt)
            return action
        if event == "LOCAL_WRITE" and nxt == "M":
            self.lines[key] = ["M", value]
            self.touch(key)
            return action
        if action == "WRITE_BACK":
            self.pending.append((key, self.lines[key][1]))
            self.stats["write_backs"] += 1
        if st != "I" and nxt == "I":
            del self.lines[key]
            self.order.remove(key)
            self.stats["invalidations" if event == "INVALIDATE" else "evictions"] += 1
        elif st != "I":
            self.lines[key][0] = nxt
        return action

    def run(self, batch: list[tuple[int, Any, Any]]) -> int:
        hits = 0
        for put, key, value in batch:
            if not put:
                hits += key in self.lines
                self.get(key)
            elif key in self.lines:
                self.lines[key] = ["M", value]
                self.touch(key)
            else:
                self.insert(key, value, "M")
        return hits


KEYS = st.sampled_from(["a", "b", "c", "d", "e", "", "é", b"a", b"b", b"\x00"])
STEP = st.one_of(
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("fill"), KEYS, st.integers(0, 99), st.booleans()),
    st.tuples(st.just("write"), KEYS, st.integers(0, 99)),
    st.tuples(st.just("apply"), KEYS, st.sampled_from(EVENTS), st.integers(0, 99)),
    st.tuples(
        st.just("run"),
        st.lists(st.tuples(st.integers(0, 1), KEYS, st.integers(0, 99)), max_size=12),
    ),
    st.tuples(st.just("pop")),
)


def do(m: ModuleType, t: Any, step: tuple[Any, ...]) -> Any:
    """One step on the real table; the outcome in the oracle's terms."""
    states, events, actions = codes(m)
    action_name = {v: k for k, v in actions.items()}
    kind = step[0]
    try:
        if kind == "get":
            return t.get(step[1], "<default>")
        if kind == "fill":
            return t.fill(step[1], step[2], step[3])
        if kind == "write":
            return action_name[t.write(step[1], step[2])]
        if kind == "apply":
            return action_name[t.apply(step[1], events[step[2]], step[3])]
        if kind == "run":
            batch = step[1]
            return t.run(
                bytes(m.OP_PUT if p else m.OP_GET for p, _, _ in batch),
                [k for _, k, _ in batch],
                [v for _, _, v in batch],
            )
        return t.pop_write_backs()
    except m.IllegalTransition:
        return "IllegalTransition"


def do_oracle(o: Oracle, step: tuple[Any, ...]) -> Any:
    kind = step[0]
    if kind == "get":
        return o.get(step[1])
    if kind == "fill":
        event = "FILL_EXCLUSIVE" if step[3] else "FILL_SHARED"
        out = o.apply(step[1], event, step[2])
        return None if out == "NONE" else out
    if kind == "write":
        return o.apply(step[1], "LOCAL_WRITE", step[2])
    if kind == "apply":
        return o.apply(step[1], step[2], step[3])
    if kind == "run":
        return o.run(step[1])
    out, o.pending = o.pending, []
    return out


def snapshot(m: ModuleType, t: Any) -> tuple[Any, ...]:
    states, _, _ = codes(m)
    name = {v: k for k, v in states.items()}
    return (
        t.keys(),
        [(name[t.state(k)], t.peek(k)) for k in t.keys()],
        t.stats(),
        len(t),
    )


@FIXTURE_OK
@given(capacity=st.integers(1, 5), steps=st.lists(STEP, max_size=40))
def test_random_sequences_match_oracle(impl: str, capacity: int, steps: list[Any]) -> None:
    m = load("mesi", impl)
    t = m.LineTable(capacity)
    o = Oracle(capacity)
    for step in steps:
        assert do(m, t, step) == do_oracle(o, step), step
        assert t.keys() == o.order
        assert [t.state(k) for k in o.order] == [codes(m)[0][o.lines[k][0]] for k in o.order]
        assert [t.peek(k) for k in o.order] == [o.lines[k][1] for k in o.order]
        assert t.stats() == o.stats and len(t) == len(o.order) <= capacity
    assert t.pop_write_backs() == o.pending


@pytest.mark.skipif(NO_EXTENSIONS, reason="compiled twin not built")
@FIXTURE_OK
@given(capacity=st.integers(1, 8), steps=st.lists(STEP, max_size=60))
def test_twins_agree(capacity: int, steps: list[Any]) -> None:
    c, py = load("mesi", "c"), load("mesi", "py")
    tc, tp = c.LineTable(capacity), py.LineTable(capacity)
    for step in steps:
        assert do(c, tc, step) == do(py, tp, step), step
        assert snapshot(c, tc) == snapshot(py, tp)
    assert tc.pop_write_backs() == tp.pop_write_backs()


@FIXTURE_OK
@given(
    data=st.lists(st.tuples(st.booleans(), st.integers(0, 300)), min_size=1, max_size=400),
    capacity=st.integers(1, 64),
)
def test_batch_equals_single_calls(impl: str, data: list[Any], capacity: int) -> None:
    """run() gives the same table as the equivalent calls one by one."""
    m = load("mesi", impl)
    batch, single = m.LineTable(capacity), m.LineTable(capacity)
    keys = [f"k{k}" for _, k in data]
    hits = batch.run(bytes(int(p) for p, _ in data), keys, list(range(len(data))))
    want = 0
    for i, ((put, _), key) in enumerate(zip(data, keys, strict=True)):
        if not put:
            want += single.get(key, single) is not single
        elif single.write(key, i) == m.FETCH:
            single.fill(key, None, True)
            single.write(key, i)
    # The single-call path got there through E -> M writes; the batch put is
    # an owned write. Both leave M lines, the same LRU order and write-backs.
    assert hits == want
    assert snapshot(m, batch) == snapshot(m, single)
    assert batch.pop_write_backs() == single.pop_write_backs()


# -- fuzz: nothing but the documented exceptions escapes ---------------------------

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.tuples(st.integers(0, 3)),
    st.builds(bytearray, st.binary(max_size=3)),
    st.builds(object),
)


@FIXTURE_OK
@given(
    capacity=ANYTHING | st.integers(1, 4),
    calls=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "get",
                    "peek",
                    "state",
                    "contains",
                    "fill",
                    "write",
                    "invalidate",
                    "apply",
                    "run",
                    "transition",
                ]
            ),
            st.lists(ANYTHING | KEYS | st.integers(0, 11), min_size=3, max_size=3),
        ),
        max_size=20,
    ),
)
def test_fuzz_public_api(impl: str, capacity: Any, calls: list[Any]) -> None:
    m = load("mesi", impl)
    allowed = (TypeError, ValueError, m.IllegalTransition)
    try:
        t = m.LineTable(capacity)
    except (TypeError, ValueError):
        t = m.LineTable(3)
    for name, (a, b, c) in calls:
        try:
            if name == "contains":
                _ = a in t
            elif name == "transition":
                m.transition(a, b)
            elif name in ("get", "peek"):
                getattr(t, name)(a, b)
            elif name in ("state", "invalidate"):
                getattr(t, name)(a)
            elif name == "run":
                t.run(a, b, c)
            else:
                getattr(t, name)(a, b, c) if name != "write" else t.write(a, b)
        except allowed:
            pass
        keys = t.keys()
        assert len(keys) == len(t) <= t.capacity
        assert all(t.state(k) != m.INVALID for k in keys)
    t.pop_write_backs()


# -- the compiled layout at scale: growth, probing, deletion, queue compaction -----


def test_equal_keys_that_are_different_objects(mod: ModuleType) -> None:
    t = mod.LineTable(4)
    stored = "".join(["ke", "y"])
    t.fill(stored, 1, True)
    probe = "".join(["k", "ey"])
    assert probe is not stored
    assert t.get(probe) == 1 and probe in t and t.write(probe, 2) == mod.NONE
    assert t.get(b"key") is None  # same hash as "key" in CPython, other type
    t.fill(b"key", 3, False)
    assert t.get("key") == 2 and t.get(b"key") == 3 and len(t) == 2


@pytest.mark.skipif(NO_EXTENSIONS, reason="compiled twin not built")
@pytest.mark.parametrize("seed", range(4))
def test_twins_agree_at_scale(seed: int) -> None:
    """Thousands of random ops over hundreds of keys, c and py in lockstep.

    Capacities from 1 to a few hundred make the compiled table grow its
    arrays, collide in its index, delete from probe runs and compact its use
    queue many times over.
    """
    import random

    rng = random.Random(seed)
    c, py = load("mesi", "c"), load("mesi", "py")
    capacity = [1, 7, 150, 700][seed]
    tc, tp = c.LineTable(capacity), py.LineTable(capacity)
    universe = [f"k{i}" for i in range(3 * capacity + 5)] + [b"b%d" % i for i in range(20)]
    for step in range(6000):
        key = rng.choice(universe)
        r = rng.random()
        if r < 0.35:
            assert tc.get(key, -1) == tp.get(key, -1)
        elif r < 0.55:
            excl = rng.random() < 0.5
            outs = []
            for t in (tc, tp):
                try:
                    t.fill(key, step, excl)
                    outs.append("ok")
                except c.IllegalTransition:
                    outs.append("illegal")
            assert outs[0] == outs[1]
        elif r < 0.65:
            assert tc.write(key, step) == tp.write(key, step)
        elif r < 0.8:
            ev = rng.choice([c.INVALIDATE, c.EVICT, c.REMOTE_READ, c.FLUSH, c.CLEAN])
            assert tc.apply(key, ev) == tp.apply(key, ev)
        else:
            batch = [rng.choice(universe) for _ in range(20)]
            ops = bytes(rng.choice([c.OP_GET, c.OP_PUT]) for _ in batch)
            vals = list(range(step, step + 20))
            assert tc.run(ops, batch, vals) == tp.run(ops, batch, vals)
        if step % 250 == 0:
            assert tc.keys() == tp.keys()
            assert [tc.state(k) for k in tc.keys()] == [tp.state(k) for k in tp.keys()]
            assert tc.stats() == tp.stats()
            assert tc.pop_write_backs() == tp.pop_write_backs()
    assert tc.keys() == tp.keys() and tc.stats() == tp.stats()
    assert all(tc.peek(k) == tp.peek(k) for k in universe)


def test_hot_line_survives_long_runs_of_hits(mod: ModuleType) -> None:
    """LRU order stays exact across many use-queue compactions."""
    t = mod.LineTable(100)
    keys = [f"k{i}" for i in range(100)]
    for k in keys:
        t.fill(k, k, True)
    for _ in range(30):
        for k in reversed(keys):
            t.get(k)
    assert t.keys() == list(reversed(keys))
    t.get("k50")
    t.fill("new", 0, True)  # evicts the LRU line: k99, used first each round
    assert "k99" not in t and t.keys()[-2:] == ["k50", "new"]


def test_reference_cycle_through_a_value_is_collected(mod: ModuleType) -> None:
    import weakref

    class Holder:
        table: Any = None

    t = mod.LineTable(4)
    h = Holder()
    h.table = t  # table -> value -> table
    t.fill("k", h, True)
    ref = weakref.ref(h)
    del t, h
    gc.collect()
    assert ref() is None
