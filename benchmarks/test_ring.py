"""pytest-benchmark: the hash ring's twins and their peers on the same work.

5 nodes x 150 vnodes; 100k distinct str keys for batches, 20k for per-call
loops (the per-call rate does not depend on the count). Group by ``group``
to compare: ``pytest benchmarks/test_ring.py --benchmark-group-by=group``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from distsync._core import NO_EXTENSIONS, load
from distsync.bench._ring import NODES, VNODES, NumpyRing, make_keys

IMPLS = ("py",) if NO_EXTENSIONS else ("c", "py")
KEYS = make_keys(100_000)
FEW_KEYS = KEYS[:20_000]


def _loop(fn: Callable[[str], object], keys: list[str]) -> Callable[[], None]:
    def run() -> None:
        for k in keys:
            fn(k)

    return run


@pytest.fixture(params=IMPLS)
def ring_mod(request: pytest.FixtureRequest) -> ModuleType:
    return load("ring", request.param)


@pytest.mark.benchmark(group="ring lookup_many 100k keys")
def test_lookup_many(benchmark: Any, ring_mod: ModuleType) -> None:
    ring = ring_mod.HashRing(NODES, vnodes=VNODES)
    out = benchmark.pedantic(ring.lookup_many, args=(KEYS,), rounds=5, iterations=1)
    assert len(out) == len(KEYS)


@pytest.mark.benchmark(group="ring lookup_many 100k keys")
def test_lookup_many_peer_numpy_ring(benchmark: Any) -> None:
    ring = NumpyRing(NODES, VNODES)
    out = benchmark.pedantic(ring.lookup_many, args=(KEYS,), rounds=5, iterations=1)
    assert len(out) == len(KEYS)


@pytest.mark.benchmark(group="ring lookup 20k calls")
def test_lookup(benchmark: Any, ring_mod: ModuleType) -> None:
    ring = ring_mod.HashRing(NODES, vnodes=VNODES)
    benchmark.pedantic(_loop(ring.lookup, FEW_KEYS), rounds=5, iterations=1)


@pytest.mark.benchmark(group="ring lookup 20k calls")
def test_lookup_peer_uhashring(benchmark: Any) -> None:
    uhashring = pytest.importorskip("uhashring")
    ring = uhashring.HashRing(NODES, vnodes=VNODES)
    benchmark.pedantic(_loop(ring.get_node, FEW_KEYS), rounds=3, iterations=1)


@pytest.mark.benchmark(group="ring lookup 20k calls")
def test_lookup_peer_numpy_ring(benchmark: Any) -> None:
    ring = NumpyRing(NODES, VNODES)
    benchmark.pedantic(_loop(ring.lookup, FEW_KEYS), rounds=3, iterations=1)
