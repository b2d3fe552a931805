"""Benchmark of the consistent hash ring against uhashring and a numpy ring.

Work: 5 nodes x 150 points, distinct str keys ``"key-%d"`` (1M; 100k with
``quick``), built before any timing. Every figure is the best of several
repetitions, ours and the peers' in the same run.

Rows:

* lookup_many: all keys in one ``HashRing.lookup_many`` call, against a numpy
  ring: ``np.fromiter`` of ``xxhash.xxh64_intdigest(k.encode())`` and one
  ``np.searchsorted`` over its 750 sorted points. Target >= 30M keys/s.
* lookup: ``ring.lookup(k)`` per key in a Python loop, against
  ``uhashring.HashRing(nodes, vnodes=150).get_node`` in the same loop.
  Target >= 5M calls/s.
* lookup (context): the same loop against the numpy ring asked one key at a
  time, the way a service would without a batch API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import xxhash

from distsync._core import ring
from distsync.bench import Row, best_of

__all__ = ["run", "NumpyRing", "make_keys", "NODES", "VNODES"]

NODES = [f"node-{i}" for i in range(5)]
VNODES = 150
MANY_TARGET = 30e6  # keys/s
LOOKUP_TARGET = 5e6  # calls/s


class NumpyRing:
    """The numpy peer: sorted XXH64 points and ``np.searchsorted``."""

    def __init__(self, nodes: Sequence[str], vnodes: int) -> None:
        pairs = sorted(
            (xxhash.xxh64_intdigest(f"{n}#{i}".encode()), idx)
            for idx, n in enumerate(nodes)
            for i in range(vnodes)
        )
        self.nodes = list(nodes)
        self.points = np.array([p for p, _ in pairs], dtype=np.uint64)
        self.owners = np.array([o for _, o in pairs], dtype=np.intp)

    def lookup_many(self, keys: Sequence[str]) -> npt.NDArray[np.intp]:
        h = xxhash.xxh64_intdigest
        hashes = np.fromiter((h(k.encode()) for k in keys), dtype=np.uint64, count=len(keys))
        pos = np.searchsorted(self.points, hashes) % len(self.points)
        return self.owners[pos]

    def lookup(self, key: str) -> str:
        pos = int(np.searchsorted(self.points, np.uint64(xxhash.xxh64_intdigest(key.encode()))))
        return self.nodes[self.owners[pos % len(self.points)]]


def make_keys(n: int) -> list[str]:
    """``n`` distinct keys ``"key-0"``, ``"key-1"``, ..."""
    return [f"key-{i}" for i in range(n)]


def _per_call_rate(fn: Callable[[str], object], keys: list[str], repeat: int) -> float:
    """Calls per second of ``fn(k)`` for each key in a plain Python loop."""

    def loop() -> None:
        for k in keys:
            fn(k)

    return len(keys) / best_of(loop, repeat)


def run(impl: str, quick: bool, progress: Callable[[str], None]) -> list[Row]:
    """Measure the dispatcher's ``HashRing`` (``impl`` names it) and the peers."""
    import uhashring

    n_keys = 100_000 if quick else 1_000_000
    # The slow peers are timed on a prefix: their per-call rate does not
    # depend on how many keys there are, and the whole run stays short.
    n_slow = 20_000 if quick else 200_000
    repeat = 3 if quick else 5
    work = f"{len(NODES)} nodes x {VNODES} vnodes, {n_keys:,} str keys"

    progress(f"ring: building {n_keys:,} keys and the three rings")
    keys = make_keys(n_keys)
    ours = ring.HashRing(NODES, vnodes=VNODES)
    numpy_ring = NumpyRing(NODES, VNODES)
    uhr = uhashring.HashRing(NODES, vnodes=VNODES)
    rows: list[Row] = []

    progress("ring: lookup_many against the numpy ring")
    many = n_keys / best_of(lambda: ours.lookup_many(keys), repeat)
    numpy_many = n_keys / best_of(lambda: numpy_ring.lookup_many(keys), repeat)
    rows.append(
        Row(
            kernel="ring",
            work=f"lookup_many, {work}",
            ours=many,
            peer="numpy ring (xxh64 + searchsorted)",
            peer_value=numpy_many,
            unit="ops/s",
            target=">= 30M keys/s",
            met=many >= MANY_TARGET,
            impl=impl,
        )
    )

    progress("ring: lookup per call against uhashring")
    per_call_keys = keys if impl == "c" else keys[:n_slow]
    single = _per_call_rate(ours.lookup, per_call_keys, repeat)
    uhr_single = _per_call_rate(uhr.get_node, keys[:n_slow], max(2, repeat - 2))
    rows.append(
        Row(
            kernel="ring",
            work=f"lookup per call, {work}",
            ours=single,
            peer="uhashring get_node",
            peer_value=uhr_single,
            unit="ops/s",
            target=">= 5M calls/s",
            met=single >= LOOKUP_TARGET,
            impl=impl,
        )
    )

    progress("ring: lookup per call against the numpy ring (context)")
    np_single = _per_call_rate(numpy_ring.lookup, keys[:n_slow], max(2, repeat - 2))
    rows.append(
        Row(
            kernel="ring",
            work=f"lookup per call, {work}",
            ours=single,
            peer="numpy ring, one key per call",
            peer_value=np_single,
            unit="ops/s",
            impl=impl,
        )
    )
    return rows
