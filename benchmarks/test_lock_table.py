"""pytest-benchmark: LockTable.apply on the commit path, on both wait-for graph twins.

- ``uncontended``: one session acquires and releases one resource, 1000 pairs a round
  (typed commands, and the same through ``apply_entry``, decoding the msgpack bytes);
- ``contended_16``: 16 sessions on one exclusive resource: each round every session asks
  (one grant, 15 queued, each a deadlock check), then each holder releases, handing off in
  the releasing entry -- 16 acquire/release pairs;
- ``deadlock_chain``: the deadlock check of the acquire that would close a cycle through a
  chain of N sessions (each holds one resource and waits for the previous one's); the
  refusal changes nothing, so each round repeats the same check.

Per-pair figures are the round time divided by the pairs in it. Run::

    PYTHONPATH=src python -m pytest benchmarks/test_lock_table.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

import pytest

from distsync._core import NO_EXTENSIONS, load
from distsync.lock import (
    Acquire,
    Deadlock,
    Grant,
    LockTable,
    Mode,
    OpenSession,
    Queued,
    Release,
    encode_command,
)

IMPLS = ["py"] if NO_EXTENSIONS else ["c", "py"]
X = Mode.EXCLUSIVE


class Feed:
    """A table and its next log index."""

    def __init__(self, impl: str) -> None:
        self.t = LockTable(load("waitgraph", impl).WaitForGraph)
        self.i = 0

    def apply(self, cmd: Any) -> list[Any]:
        self.i += 1
        return self.t.apply(self.i, cmd)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("decoding", [False, True], ids=["commands", "encoded_entries"])
def test_uncontended_acquire_release(benchmark: Any, impl: str, decoding: bool) -> None:
    """1,000 acquire+release pairs on one resource; ``decoding``: from the encoded log
    entries (``apply_entry``, what a replica does) rather than from command objects."""
    f = Feed(impl)
    f.apply(OpenSession("s", "c", 10.0, 0.0))
    acq: Any = Acquire("r", X, "c", "s", 1, 0.0)
    rel: Any = Release("r", "c", "s")
    apply: Any = f.t.apply
    if decoding:
        acq, rel, apply = encode_command(acq), encode_command(rel), f.t.apply_entry

    def pairs() -> None:
        i = f.i
        for _ in range(1000):
            apply(i + 1, acq)
            apply(i + 2, rel)
            i += 2
        f.i = i

    benchmark.pedantic(pairs, rounds=20, iterations=1)
    assert f.t.resources() == []
    benchmark.extra_info["pairs_per_round"] = 1000


@pytest.mark.parametrize("impl", IMPLS)
def test_contended_16_clients_one_resource(benchmark: Any, impl: str) -> None:
    f = Feed(impl)
    n = 16
    for k in range(n):
        f.apply(OpenSession(f"s{k}", f"c{k}", 10.0, 0.0))
    acqs = [Acquire("r", X, f"c{k}", f"s{k}", k, 0.0) for k in range(n)]
    rels = [Release("r", f"c{k}", f"s{k}") for k in range(n)]
    apply = f.t.apply

    def round_() -> None:
        i = f.i
        for a in acqs:
            i += 1
            apply(i, a)
        for r in rels:  # FIFO: the holders release in queue order
            i += 1
            apply(i, r)
        f.i = i

    benchmark.pedantic(round_, rounds=200, iterations=1)
    assert f.t.resources() == []
    benchmark.extra_info["pairs_per_round"] = n
    # The shape measured: one grant, then 15 queued; each release hands off.
    i = f.i
    assert isinstance(f.t.apply(i + 1, acqs[0])[0], Grant)
    assert isinstance(f.t.apply(i + 2, acqs[1])[0], Queued)
    assert [type(e).__name__ for e in f.t.apply(i + 3, rels[0])] == ["Released", "Grant"]


@pytest.mark.parametrize("n", [1000, 10_000])
@pytest.mark.parametrize("impl", IMPLS)
def test_deadlock_check_on_a_long_chain(benchmark: Any, impl: str, n: int) -> None:
    f = Feed(impl)
    for k in range(n):
        f.apply(OpenSession(f"s{k}", f"c{k}", 10.0, 0.0))
        f.apply(Acquire(f"r{k}", X, f"c{k}", f"s{k}", 0, 0.0))
    for k in range(1, n):
        assert isinstance(f.apply(Acquire(f"r{k - 1}", X, f"c{k}", f"s{k}", 1, 0.0))[0], Queued)
    closing = Acquire(f"r{n - 1}", X, "c0", "s0", 1, 0.0)

    def check() -> list[Any]:
        return f.apply(closing)

    effects = benchmark.pedantic(check, rounds=20, iterations=1)
    assert isinstance(effects[0], Deadlock) and len(effects[0].cycle) == n


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_off_down_a_long_mixed_queue(benchmark: Any, impl: str) -> None:
    """1000 waiters alternating two shared, one exclusive: each release hands off while
    999 others wait. Rewiring touches the groups that changed, not the queue."""
    n = 1000
    f = Feed(impl)
    modes = [Mode.SHARED, Mode.SHARED, X]
    for k in range(n):
        f.apply(OpenSession(f"s{k}", f"c{k}", 10.0, 0.0))
    acqs = [Acquire("r", modes[k % 3], f"c{k}", f"s{k}", k, 0.0) for k in range(n)]
    rels = [Release("r", f"c{k}", f"s{k}") for k in range(n)]

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        for a in acqs:
            f.apply(a)
        return (), {}

    def drain() -> None:
        for r in rels:
            f.apply(r)

    benchmark.pedantic(drain, setup=setup, rounds=5, iterations=1)
    assert f.t.resources() == []
    benchmark.extra_info["releases_per_round"] = n
