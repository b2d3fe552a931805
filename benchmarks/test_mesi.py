"""pytest-benchmark: the MESI line table's twins and the OrderedDict LRU peer.

Smaller than ``distsync bench kernels`` (10k lines, 100k mixed ops, 90% of
them on resident lines) so the file runs in seconds. Group by ``group`` to
compare: ``pytest benchmarks/test_mesi.py --benchmark-group-by=group``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from distsync._core import NO_EXTENSIONS, load
from distsync.bench._mesi import OrderedDictLRU, make_workload

IMPLS = ("py",) if NO_EXTENSIONS else ("c", "py")
CAPACITY = 10_000
RESIDENT, OPS, KEYS, VALUES = make_workload(CAPACITY, 100_000)
OPS_LIST = OPS.tolist()
HOT = [k for k in KEYS if k.startswith("line:")][:20_000]


@pytest.fixture(params=IMPLS)
def mesi_mod(request: pytest.FixtureRequest) -> ModuleType:
    return load("mesi", request.param)


def _table(mod: ModuleType) -> Any:
    t = mod.LineTable(CAPACITY)
    for k in RESIDENT:
        t.fill(k, k, True)
    return t


def _peer() -> OrderedDictLRU:
    p = OrderedDictLRU(CAPACITY)
    for k in RESIDENT:
        p.put(k, k)
    return p


def _loop(fn: Callable[[Any], object], keys: list[Any]) -> Callable[[], None]:
    def run() -> None:
        for k in keys:
            fn(k)

    return run


@pytest.mark.benchmark(group="mesi 100k mixed ops, 10k lines")
def test_batch_run(benchmark: Any, mesi_mod: ModuleType) -> None:
    # A fresh prefilled table per round (setup is not timed).
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (_table(mesi_mod), OPS, KEYS, VALUES), {}

    def run(t: Any, ops: Any, keys: list[str], values: list[str]) -> int:
        return int(t.run(ops, keys, values))

    hits = benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    assert hits > 0.85 * (len(OPS_LIST) - sum(OPS_LIST))


@pytest.mark.benchmark(group="mesi 100k mixed ops, 10k lines")
def test_batch_peer_ordereddict(benchmark: Any) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (_peer(),), {}

    def run(p: OrderedDictLRU) -> int:
        get, put = p.get, p.put
        hits = 0
        for op, k, v in zip(OPS_LIST, KEYS, VALUES, strict=True):
            if op:
                put(k, v)
            elif get(k) is not None:
                hits += 1
        return hits

    hits = benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    assert hits > 0.85 * (len(OPS_LIST) - sum(OPS_LIST))


@pytest.mark.benchmark(group="mesi get() hit, 20k calls")
def test_get(benchmark: Any, mesi_mod: ModuleType) -> None:
    t = _table(mesi_mod)
    benchmark.pedantic(_loop(t.get, HOT), rounds=5, iterations=1)
    assert t.misses == 0


@pytest.mark.benchmark(group="mesi get() hit, 20k calls")
def test_get_peer_ordereddict(benchmark: Any) -> None:
    p = _peer()
    benchmark.pedantic(_loop(p.get, HOT), rounds=5, iterations=1)
