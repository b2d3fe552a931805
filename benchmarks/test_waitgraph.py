"""pytest-benchmark: the wait-for graph kernel, its twin and the peers, same work.

Smaller than ``distsync bench kernels`` (20k clients instead of 100k) so the
file runs in seconds; the graph is the same kind: acyclic, edges upward.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from distsync._core import NO_EXTENSIONS, load
from distsync.bench._waitgraph import (
    adjacency,
    networkx_find_cycle,
    python_find_cycle,
    python_would_close,
    upward_edges,
)

N = 20_000
IMPLS = ["py"] if NO_EXTENSIONS else ["c", "py"]


@pytest.fixture(scope="module")
def edges() -> list[tuple[str, str]]:
    return upward_edges(N)


@pytest.fixture(scope="module")
def adj(edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    return adjacency(edges)


@pytest.fixture(scope="module")
def pairs(edges: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Random waits, one in ten of them an existing edge reversed (a sure cycle)."""
    rng = random.Random(2)
    names = [a for a, _ in edges]
    out = []
    for k in range(1000):
        if k % 10 == 0:
            a, b = rng.choice(edges)
            out.append((b, [a]))
        else:
            out.append((rng.choice(names), [rng.choice(names)]))
    return out


def build(impl: str, edges: list[tuple[str, str]]) -> Any:
    graph = load("waitgraph", impl).WaitForGraph()
    for a, b in edges:
        graph.add_wait(a, [b])
    return graph


@pytest.mark.parametrize("impl", IMPLS)
def test_find_cycles_ours(benchmark: Any, impl: str, edges: list[tuple[str, str]]) -> None:
    graph = build(impl, edges)
    result = benchmark.pedantic(graph.find_cycles, rounds=10, iterations=1)
    assert result == []


def test_find_cycles_python_dfs(benchmark: Any, adj: dict[str, list[str]]) -> None:
    result = benchmark.pedantic(python_find_cycle, args=(adj,), rounds=5, iterations=1)
    assert result is None


def test_find_cycles_networkx(benchmark: Any, edges: list[tuple[str, str]]) -> None:
    nx = pytest.importorskip("networkx")
    graph = nx.DiGraph()
    graph.add_edges_from(edges)  # built outside the timed region
    result = benchmark.pedantic(networkx_find_cycle, args=(graph,), rounds=3, iterations=1)
    assert result is None


@pytest.mark.parametrize("impl", IMPLS)
def test_would_close_cycle_ours(
    benchmark: Any,
    impl: str,
    edges: list[tuple[str, str]],
    adj: dict[str, list[str]],
    pairs: list[tuple[str, list[str]]],
) -> None:
    graph = build(impl, edges)
    check = graph.would_close_cycle

    def all_pairs() -> int:
        return sum(check(w, hs) is not None for w, hs in pairs)

    found = benchmark.pedantic(all_pairs, rounds=20, iterations=1)
    # A new edge closes a cycle when its holder already reaches its waiter.
    assert found == sum(python_would_close(adj, w, hs) for w, hs in pairs)


def test_would_close_cycle_python_dfs(
    benchmark: Any, adj: dict[str, list[str]], pairs: list[tuple[str, list[str]]]
) -> None:
    def all_pairs() -> int:
        return sum(python_would_close(adj, w, hs) for w, hs in pairs)

    found = benchmark.pedantic(all_pairs, rounds=20, iterations=1)
    assert found >= 100  # at least the reversed edges
