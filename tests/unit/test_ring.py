"""The consistent hash ring: both twins against a plain oracle and each other.

The oracle below is the placement contract written as directly as possible:
point ``i`` of node ``N`` is XXH3-64 (the ``xxhash`` package) of
``f"{N}#{i}"``; points sorted by ``(point, name)``; a key goes to the first
point ``>= hash(key)``, wrapping around.
"""

from __future__ import annotations

import copy
import os
import pickle
import random
import subprocess
import sys
import threading
from bisect import bisect_left
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distsync
from distsync._core import NO_EXTENSIONS, load

# -- oracle ------------------------------------------------------------------


def h64(data: str | bytes) -> int:
    return xxhash.xxh3_64_intdigest(data.encode() if isinstance(data, str) else data)


def oracle_table(nodes: list[str], vnodes: int) -> list[tuple[int, str]]:
    return sorted((h64(f"{n}#{i}"), n) for n in nodes for i in range(vnodes))


def oracle_start(table: list[tuple[int, str]], key: str | bytes) -> int:
    points = [p for p, _ in table]
    return bisect_left(points, h64(key)) % len(table)


def oracle_lookup(table: list[tuple[int, str]], key: str | bytes) -> str:
    return table[oracle_start(table, key)][1]


def oracle_preference(table: list[tuple[int, str]], key: str | bytes, n: int) -> list[str]:
    start = oracle_start(table, key)
    out: list[str] = []
    for step in range(len(table)):
        name = table[(start + step) % len(table)][1]
        if name not in out:
            out.append(name)
        if len(out) == n:
            break
    return out


# -- strategies --------------------------------------------------------------

# Valid Unicode only (no lone surrogates): those are rejected, tested apart.
names = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
node_sets = st.lists(names, min_size=1, max_size=8, unique=True)
vnode_counts = st.integers(1, 40)
keys = st.one_of(names, st.binary(max_size=40))
key_lists = st.lists(keys, max_size=60)


# ``mod`` is a module, not state: sharing it across a test's examples is safe.
stateless_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("ring", impl)


def both() -> tuple[ModuleType, ModuleType]:
    if NO_EXTENSIONS:
        pytest.skip("the compiled twin is not built")
    return load("ring", "c"), load("ring", "py")


# -- XXH3 --------------------------------------------------------------------


@stateless_fixture
@given(data=st.integers(0, 2000).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_xxh3_matches_xxhash_package(mod: ModuleType, data: bytes) -> None:
    assert mod._xxh3_64(data) == xxhash.xxh3_64_intdigest(data)


def test_xxh3_every_length_up_to_2000(mod: ModuleType) -> None:
    # Hypothesis favours short inputs; this sweep hits every path boundary
    # (0, 1-3, 4-8, 9-16, 17-128, 129-240, 241+, block multiples of 1024).
    rng = random.Random(1234)
    for n in range(2001):
        data = rng.randbytes(n)
        assert mod._xxh3_64(data) == xxhash.xxh3_64_intdigest(data), n
    for n in (4095, 4096, 4097, 10_000):
        data = rng.randbytes(n)
        assert mod._xxh3_64(data) == xxhash.xxh3_64_intdigest(data), n


def test_xxh3_hook_rejects_non_bytes(mod: ModuleType) -> None:
    for bad in ("abc", bytearray(b"abc"), 3, None):
        with pytest.raises(TypeError, match="data"):
            mod._xxh3_64(bad)


# -- placement: oracle and twins ----------------------------------------------


@stateless_fixture
@given(nodes=node_sets, vnodes=vnode_counts, ks=key_lists, n=st.integers(1, 8))
def test_matches_oracle(
    mod: ModuleType, nodes: list[str], vnodes: int, ks: list[str | bytes], n: int
) -> None:
    ring = mod.HashRing(nodes, vnodes=vnodes)
    table = oracle_table(nodes, vnodes)
    expected = [oracle_lookup(table, k) for k in ks]
    assert [ring.lookup(k) for k in ks] == expected
    many = ring.lookup_many(ks)
    assert many.dtype in (np.intp, np.int64) and many.shape == (len(ks),)
    assert [nodes[i] for i in many] == expected
    n = min(n, len(nodes))
    for k in ks:
        assert ring.preference_list(k, n) == oracle_preference(table, k, n)


@given(nodes=node_sets, vnodes=vnode_counts, ks=key_lists, n=st.integers(1, 8))
def test_twins_agree(nodes: list[str], vnodes: int, ks: list[str | bytes], n: int) -> None:
    c, py = both()
    rc, rp = c.HashRing(nodes, vnodes=vnodes), py.HashRing(nodes, vnodes=vnodes)
    assert rc.nodes == rp.nodes
    assert [rc.lookup(k) for k in ks] == [rp.lookup(k) for k in ks]
    assert rc.lookup_many(ks).tolist() == rp.lookup_many(ks).tolist()
    n = min(n, len(nodes))
    assert [rc.preference_list(k, n) for k in ks] == [rp.preference_list(k, n) for k in ks]
    assert rc.balance() == rp.balance()
    if ks:
        assert rc.balance(ks) == rp.balance(ks)


@stateless_fixture
@given(nodes=node_sets, vnodes=st.integers(1, 5))
def test_a_points_own_label_maps_to_its_node(
    mod: ModuleType, nodes: list[str], vnodes: int
) -> None:
    # hash(label) == the point itself: "first point >= h" is inclusive.
    ring = mod.HashRing(nodes, vnodes=vnodes)
    for node in nodes:
        for i in range(vnodes):
            assert ring.lookup(f"{node}#{i}") == node


def test_many_keys_cross_chunks_and_any_iterable(mod: ModuleType) -> None:
    # More keys than one gather chunk, a mix of str and bytes; list, tuple,
    # generator and numpy object arrays must all give the same answer.
    nodes = [f"n{i}" for i in range(7)]
    ring = mod.HashRing(nodes, vnodes=20)
    table = oracle_table(nodes, 20)
    ks: list[str | bytes] = [f"k{i}" if i % 3 else f"k{i}".encode() for i in range(9000)]
    expected = [nodes.index(oracle_lookup(table, k)) for k in ks]
    assert ring.lookup_many(ks).tolist() == expected
    assert ring.lookup_many(tuple(ks)).tolist() == expected
    assert ring.lookup_many(k for k in ks).tolist() == expected
    assert ring.lookup_many(np.array(ks, dtype=object)).tolist() == expected
    assert ring.lookup_many([]).tolist() == []


def test_str_is_hashed_as_utf8(mod: ModuleType) -> None:
    ring = mod.HashRing([f"n{i}" for i in range(10)], vnodes=8)
    for key in ("plain", "é", "日本語", "🎉 emoji", ""):
        assert ring.lookup(key) == ring.lookup(key.encode("utf-8"))
        assert ring.preference_list(key, 3) == ring.preference_list(key.encode("utf-8"), 3)
    # Subclasses of str and bytes are keys too.

    class S(str):
        pass

    class B(bytes):
        pass

    assert ring.lookup(S("abc")) == ring.lookup("abc") == ring.lookup(B(b"abc"))
    assert (
        ring.lookup_many([S("abc"), B(b"abc")]).tolist()
        == [ring.nodes.index(ring.lookup("abc"))] * 2
    )


# -- membership changes --------------------------------------------------------


@stateless_fixture
@given(nodes=node_sets, new=names, vnodes=vnode_counts, ks=st.lists(keys, min_size=1, max_size=80))
def test_add_node_moves_only_keys_that_now_map_to_it(
    mod: ModuleType, nodes: list[str], new: str, vnodes: int, ks: list[str | bytes]
) -> None:
    if new in nodes:
        return
    ring = mod.HashRing(nodes, vnodes=vnodes)
    before = [ring.lookup(k) for k in ks]
    ring.add_node(new)
    after = [ring.lookup(k) for k in ks]
    for b, a in zip(before, after, strict=True):
        assert a == b or a == new
    assert ring.nodes == [*nodes, new]
    table = oracle_table([*nodes, new], vnodes)
    assert after == [oracle_lookup(table, k) for k in ks]


@stateless_fixture
@given(nodes=st.lists(names, min_size=2, max_size=8, unique=True), data=st.data())
def test_remove_node_moves_only_its_keys(
    mod: ModuleType, nodes: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(nodes))
    ks = data.draw(st.lists(keys, min_size=1, max_size=80))
    ring = mod.HashRing(nodes, vnodes=10)
    before = [ring.lookup(k) for k in ks]
    ring.remove_node(gone)
    after = [ring.lookup(k) for k in ks]
    for b, a in zip(before, after, strict=True):
        assert a == b if b != gone else a != gone
    rest = [n for n in nodes if n != gone]
    assert ring.nodes == rest
    # Indices of lookup_many follow the shifted node list.
    assert [rest[i] for i in ring.lookup_many(ks)] == after


def test_add_then_remove_restores_placement(mod: ModuleType) -> None:
    ring = mod.HashRing(["a", "b", "c"])
    ks = [f"key-{i}" for i in range(2000)]
    before = ring.lookup_many(ks).tolist()
    ring.add_node("d")
    assert ring.lookup_many(ks).tolist() != before  # d took some keys
    ring.remove_node("d")
    assert ring.lookup_many(ks).tolist() == before


def test_duplicate_and_unknown_nodes(mod: ModuleType) -> None:
    ring = mod.HashRing(["a", "b"])
    with pytest.raises(ValueError, match="already"):
        ring.add_node("a")
    with pytest.raises(ValueError, match="not in the ring"):
        ring.remove_node("zz")
    with pytest.raises(ValueError, match=r"nodes\[2\].*twice"):
        mod.HashRing(["a", "b", "a"])
    with pytest.raises(ValueError, match="twice"):
        ring.__init__(["x", "x"])  # type: ignore[misc]
    assert ring.nodes == ["a", "b"]  # failed calls changed nothing
    assert ring.lookup("k") in ("a", "b")
    assert len(ring) == 2 and "a" in ring and "zz" not in ring and 3 not in ring


def test_nodes_property_is_a_copy_in_insertion_order(mod: ModuleType) -> None:
    ring = mod.HashRing(["z", "a", "m"], vnodes=3)
    ring.add_node("b")
    got = ring.nodes
    assert got == ["z", "a", "m", "b"]
    got.append("x")
    assert ring.nodes == ["z", "a", "m", "b"]
    assert ring.vnodes == 3
    assert "HashRing" in repr(ring)


# -- preference lists ----------------------------------------------------------


def test_preference_list_bounds(mod: ModuleType) -> None:
    nodes = ["a", "b", "c", "d"]
    ring = mod.HashRing(nodes)
    for k in ("x", "y", b"z"):
        full = ring.preference_list(k, 4)
        assert sorted(full) == nodes
        assert full[0] == ring.lookup(k)
        assert ring.preference_list(k, 2) == full[:2]
    with pytest.raises(ValueError, match="exceeds"):
        ring.preference_list("x", 5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n must be"):
            ring.preference_list("x", bad)


# -- balance -------------------------------------------------------------------


@stateless_fixture
@given(nodes=node_sets, vnodes=vnode_counts)
def test_balance_sums_to_one(mod: ModuleType, nodes: list[str], vnodes: int) -> None:
    share = mod.HashRing(nodes, vnodes=vnodes).balance()
    assert list(share) == nodes
    assert all(0.0 <= s <= 1.0 for s in share.values())
    assert sum(share.values()) == pytest.approx(1.0, abs=1e-12)


def test_balance_arcs_from_known_hashes(mod: ModuleType) -> None:
    # Two nodes, one point each: each owns the arc ending at its point.
    pa, pb = h64("a#0"), h64("b#0")
    share = mod.HashRing(["a", "b"], vnodes=1).balance()
    assert share["a"] == pytest.approx(((pa - pb) % 2**64) / 2**64)
    assert share["b"] == pytest.approx(((pb - pa) % 2**64) / 2**64)
    assert mod.HashRing(["solo"], vnodes=1).balance() == {"solo": 1.0}


def test_balance_of_sample_keys(mod: ModuleType) -> None:
    nodes = ["a", "b", "c"]
    ring = mod.HashRing(nodes)
    ks = [f"key-{i}" for i in range(3000)]
    share = ring.balance(ks)
    table = oracle_table(nodes, 150)
    owners = [oracle_lookup(table, k) for k in ks]
    assert share == {n: owners.count(n) / len(ks) for n in nodes}
    assert sum(share.values()) == pytest.approx(1.0)
    # 150 points per node spread the space within a few percent of 1/3.
    assert all(abs(s - 1 / 3) < 0.1 for s in ring.balance().values())
    with pytest.raises(ValueError, match="empty"):
        ring.balance([])


# -- empty ring ------------------------------------------------------------------


def test_empty_ring(mod: ModuleType) -> None:
    ring = mod.HashRing()
    for call in (
        lambda: ring.lookup("k"),
        lambda: ring.lookup_many(["k"]),
        lambda: ring.lookup_many([]),
        lambda: ring.preference_list("k", 1),
        lambda: ring.balance(["k"]),
    ):
        with pytest.raises(LookupError, match="empty"):
            call()
    assert ring.balance() == {}
    ring.add_node("only")
    assert ring.lookup("k") == "only"
    if mod.__name__.endswith("_c"):
        # C reads the table without None checks: a ring whose __init__ never
        # ran must still be a valid empty ring, not a crash.
        bare = mod.HashRing.__new__(mod.HashRing)
        with pytest.raises(LookupError):
            bare.lookup_many(["k"])
    ring.remove_node("only")
    with pytest.raises(LookupError):
        ring.lookup("k")


# -- stability across processes --------------------------------------------------

_PROBE = """
import sys
from distsync._core import load
mod = load("ring", sys.argv[1])
ring = mod.HashRing(["alpha", "beta", "gamma", "delta"], vnodes=50)
keys = [f"key-{i}" for i in range(200)] + ["é", ""]
print(",".join(ring.lookup(k) for k in keys))
print(",".join(map(str, ring.lookup_many(keys).tolist())))
"""


_PACKAGE_ROOT = str(Path(distsync.__file__).resolve().parents[1])


def test_placement_is_stable_across_hash_seeds(impl: str) -> None:
    mod = load("ring", impl)
    ring = mod.HashRing(["alpha", "beta", "gamma", "delta"], vnodes=50)
    ks = [f"key-{i}" for i in range(200)] + ["é", ""]
    table = oracle_table(["alpha", "beta", "gamma", "delta"], 50)
    assert [ring.lookup(k) for k in ks] == [oracle_lookup(table, k) for k in ks]
    expected = ",".join(ring.lookup(k) for k in ks)
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        # The child imports the same distsync as we do (source tree or install).
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, env.get("PYTHONPATH", "")])
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, impl],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert out[0] == expected
        assert out[1] == ",".join(map(str, ring.lookup_many(ks).tolist()))


# -- concurrency -----------------------------------------------------------------


def test_lookup_many_survives_concurrent_changes(mod: ModuleType) -> None:
    # lookup_many hashes without the GIL while another thread changes the
    # ring and the key list: no crash, and every answer is a valid index.
    ring = mod.HashRing([f"n{i}" for i in range(4)], vnodes=50)
    ks = [f"key-{i}" for i in range(20_000)]
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            ring.add_node(f"extra{i}")
            ks[i % len(ks)] = f"changed-{i}"
            ring.remove_node(f"extra{i}")
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(20):
            got = ring.lookup_many(ks)
            assert got.min() >= 0 and got.max() < 5
    finally:
        stop.set()
        t.join()


def test_pickle_and_copy_rebuild_an_equal_independent_ring(mod: ModuleType) -> None:
    ring = mod.HashRing(["a", "b", "c"], vnodes=7)
    ring.remove_node("b")
    ring.add_node("d")
    ks = [f"key-{i}" for i in range(500)]
    for clone in (pickle.loads(pickle.dumps(ring)), copy.copy(ring), copy.deepcopy(ring)):
        assert type(clone) is type(ring)
        assert clone.nodes == ["a", "c", "d"] and clone.vnodes == 7
        assert clone.lookup_many(ks).tolist() == ring.lookup_many(ks).tolist()
        clone.add_node("e")
        assert ring.nodes == ["a", "c", "d"]
