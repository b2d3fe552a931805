"""Wait-for graph with deadlock detection: the pure-Python twin of ``_waitgraph_c``.

The lock service keeps one :class:`WaitForGraph` inside the Raft-replicated
state (DESIGN §5): an edge ``waiter -> holder`` means "waiter waits for a lock
that holder holds". A request that would close a cycle is refused with
``DeadlockError`` naming the cycle. Every replica must refuse the same requests
and name the same cycles, so every answer here is a function of the sequence of
calls alone -- never of hash seeds, set iteration order or memory addresses.

Determinism rests on three rules that the compiled twin follows exactly:

1. **Dense ids.** A name is interned to the smallest free integer id when it
   first touches an edge; the id is released when the node has no edge left
   and is reused smallest-first (a min-heap). Ids are therefore a function of
   the call sequence, and memory is bounded by the live graph, not history.
2. **Edge order.** A node's out-edges are kept in insertion order; removing
   one keeps the order of the others; re-adding appends.
3. **Search order.** Searches follow out-edges in edge order; where one must
   pick a starting node (:meth:`WaitForGraph.find_cycles`) it picks by name,
   never by id. So the cycles reported depend only on each waiter's ordered
   holders -- a replica rebuilt from a snapshot of the edges answers like one
   that lived through every call -- and ids only order ``nodes()``/``edges()``.

This module is also the reference the tests hold the compiled twin to.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

__all__ = ["WaitForGraph"]

#: A node name: exactly a ``str`` or an ``int``. Subclasses are refused:
#: ``bool`` because ``True == 1`` would silently merge two clients, and any
#: other because its ``__hash__``/``__eq__`` could differ between replicas
#: (or run code in the middle of an update).
Node = str | int


def _check_node(name: object, arg: str) -> None:
    """Raise ``TypeError`` naming ``arg`` unless ``name`` is a valid node name."""
    if type(name) is not str and type(name) is not int:
        raise TypeError(f"{arg} must be a str or int, not {type(name).__name__}")


def _check_holders(holders: object) -> list[Node]:
    """Materialise ``holders`` into a list of valid names, or raise ``TypeError``.

    A ``str`` is iterable but is never a list of holders: ``add_wait("a", "bc")``
    almost surely meant ``["bc"]``, so it is refused rather than split into
    characters. A ``set``/``frozenset`` is refused because the order of its
    strs changes with the hash seed of each process: edge order decides which
    cycle is reported, and every replica must report the same one.
    Validation completes before any change, so a bad element leaves the graph
    untouched.
    """
    t = type(holders)
    if isinstance(holders, str | bytes | bytearray):
        raise TypeError(f"holders must be an iterable of ids, not {t.__name__}")
    if isinstance(holders, set | frozenset):
        raise TypeError(
            f"holders must be an ordered iterable of ids, not {t.__name__} "
            "(set order differs between processes)"
        )
    try:
        items = list(holders)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"holders must be an iterable of ids, not {t.__name__}") from None
    for h in items:
        _check_node(h, "holders item")
    return items


def _name_key(name: Node) -> tuple[bool, Node]:
    """Sort key of names: ints first, by value, then strs, by code points."""
    return (isinstance(name, str), name)


class WaitForGraph:
    """A directed wait-for graph over client ids, with cycle (deadlock) detection.

    Edge ``w -> h`` means *w waits for h*. Node names are exactly ``str`` or
    ``int`` (subclasses such as ``bool`` or enums are refused, see
    :data:`Node`); ``"1"`` and ``1`` are different nodes. A node exists
    while it has at least one edge, in or out: a client that neither waits nor
    is waited on is not in the graph, which keeps memory bounded by the live
    waits however many clients come and go.

    Every result is deterministic. The cycles reported by
    :meth:`would_close_cycle` and :meth:`find_cycles` depend only on each
    waiter's ordered list of holders (:meth:`waits_of`), not on ids or on the
    history of calls; :meth:`nodes` and :meth:`edges` list in id order, which
    depends on the sequence of calls. Both twins give identical answers.
    """

    __slots__ = ("_ids", "_names", "_free", "_out", "_in", "_nedges")

    def __init__(self) -> None:
        """Create an empty graph."""
        # name -> dense id, and id -> name (None marks a free slot).
        self._ids: dict[Node, int] = {}
        self._names: list[Node | None] = []
        # Free ids, a min-heap: reusing the smallest keeps ids canonical.
        self._free: list[int] = []
        # Out-edges per id as an insertion-ordered dict (rule 2); in-edges as
        # a set, whose order is never observable (it only drives removals).
        self._out: list[dict[int, None]] = []
        self._in: list[set[int]] = []
        self._nedges = 0

    # -- interning ---------------------------------------------------------

    def _intern(self, name: Node) -> int:
        """The id of ``name``, allocating the smallest free id if it is new."""
        i = self._ids.get(name)
        if i is not None:
            return i
        if self._free:
            i = heapq.heappop(self._free)
            self._names[i] = name
        else:
            i = len(self._names)
            self._names.append(name)
            self._out.append({})
            self._in.append(set())
        self._ids[name] = i
        return i

    def _release_if_isolated(self, i: int) -> None:
        """Free id ``i`` if its node has no edge left (rule 1)."""
        if not self._out[i] and not self._in[i] and self._names[i] is not None:
            del self._ids[self._names[i]]  # type: ignore[arg-type]
            self._names[i] = None
            heapq.heappush(self._free, i)

    # -- mutation ----------------------------------------------------------

    def add_wait(self, waiter: Node, holders: Iterable[Node]) -> None:
        """Add the edges ``waiter -> h`` for each ``h`` in ``holders``.

        Existing edges and duplicates in ``holders`` are ignored. New edges
        are appended to ``waiter``'s edge order in the order of ``holders``.
        The waiter is interned first, then the holders in order. With no
        holders nothing changes (a node exists only with an edge).

        A self-wait (``waiter`` in ``holders``) is stored as a self-loop: the
        graph records what it is told, and :meth:`find_cycles` then reports
        ``[waiter]``. Callers that refuse deadlocks call
        :meth:`would_close_cycle` first, which reports it as ``[waiter]``.

        :param waiter: the client that waits.
        :param holders: the clients it waits for, in order (any iterable but
            ``str``/``bytes`` and ``set``/``frozenset``).
        :raises TypeError: if ``waiter`` or an item of ``holders`` is not a
            ``str``/``int``, or ``holders`` is not an iterable; the graph is
            then unchanged.
        """
        _check_node(waiter, "waiter")
        items = _check_holders(holders)
        if not items:
            return
        w = self._intern(waiter)
        out_w = self._out[w]
        for name in items:
            h = self._intern(name)
            if h not in out_w:
                out_w[h] = None
                self._in[h].add(w)
                self._nedges += 1

    def remove_waiter(self, waiter: Node) -> None:
        """Remove every out-edge of ``waiter`` (its wait ended).

        Edges into ``waiter`` stay. Nodes left without any edge are dropped.
        An unknown ``waiter`` is a no-op, so replaying a removal is harmless.

        :param waiter: the client whose wait ended.
        :raises TypeError: if ``waiter`` is not a ``str``/``int``.
        """
        _check_node(waiter, "waiter")
        w = self._ids.get(waiter)
        if w is None:
            return
        out_w = self._out[w]
        if not out_w:
            return
        holders = list(out_w)
        out_w.clear()
        self._nedges -= len(holders)
        for h in holders:
            self._in[h].discard(w)
        for h in holders:
            self._release_if_isolated(h)
        self._release_if_isolated(w)

    def remove_node(self, node: Node) -> None:
        """Remove ``node`` and every edge touching it (the client is gone).

        Neighbours left without any edge are dropped too. An unknown ``node``
        is a no-op.

        :param node: the client to forget.
        :raises TypeError: if ``node`` is not a ``str``/``int``.
        """
        _check_node(node, "node")
        n = self._ids.get(node)
        if n is None:
            return
        out_n = self._out[n]
        in_n = self._in[n]
        # Sorted only so the scan order is fixed; the end state does not
        # depend on it (deleting from a dict keeps the others' order).
        preds = sorted(in_n)
        succs = list(out_n)
        self_loop = n in out_n
        for p in preds:
            del self._out[p][n]
        for h in succs:
            self._in[h].discard(n)
        removed = len(preds) + len(succs)
        if self_loop:  # counted in both lists
            removed -= 1
        self._nedges -= removed
        out_n.clear()
        in_n.clear()
        for m in preds:
            self._release_if_isolated(m)
        for m in succs:
            self._release_if_isolated(m)
        self._release_if_isolated(n)

    def clear(self) -> None:
        """Remove every node and edge, and release all ids."""
        self._ids.clear()
        self._names.clear()
        self._free.clear()
        self._out.clear()
        self._in.clear()
        self._nedges = 0

    # -- queries -----------------------------------------------------------

    def would_close_cycle(self, waiter: Node, holders: Iterable[Node]) -> list[Node] | None:
        """The cycle that adding ``waiter -> holders`` would close, or ``None``.

        The graph is not modified. Only the new edges are searched from: for
        each holder ``h`` in order, a depth-first search (out-edges in edge
        order, nodes already searched for this call skipped) looks for a path
        ``h ->* waiter``. The first one found gives the cycle
        ``[waiter, h, ..., y]`` where ``y -> waiter`` is an existing edge. A
        holder equal to ``waiter`` gives ``[waiter]`` when its turn comes.

        :param waiter: the client that would wait.
        :param holders: the clients it would wait for.
        :returns: the cycle as a list of names starting at ``waiter``, or
            ``None`` if the new edges close no cycle.
        :raises TypeError: as for :meth:`add_wait`.
        """
        _check_node(waiter, "waiter")
        items = _check_holders(holders)
        w = self._ids.get(waiter)
        out = self._out
        seen: set[int] = set()
        for name in items:
            h = self._ids.get(name)
            if h is None:
                # An absent holder reaches nothing (it has no out-edge): only
                # a self-wait by an absent waiter closes a cycle here.
                if w is None and name == waiter:
                    return [waiter]
                continue
            if h == w:
                return [waiter]
            # Nothing reaches a waiter without in-edges (absent ones
            # included); a holder without out-edges reaches nothing.
            if w is None or not self._in[w] or not out[h] or h in seen:
                continue
            seen.add(h)
            # The stack is the current DFS path: (node, iterator over its
            # out-edges). When the waiter turns up, the path is the cycle.
            path: list[int] = [h]
            iters: list[Iterator[int]] = [iter(out[h])]
            while iters:
                x = next(iters[-1], -1)
                if x < 0:
                    iters.pop()
                    path.pop()
                elif x == w:
                    names = self._names
                    return [waiter] + [names[v] for v in path]  # type: ignore[misc]
                elif x not in seen:
                    seen.add(x)
                    path.append(x)
                    iters.append(iter(out[x]))
        return None

    def find_cycles(self) -> list[list[Node]]:
        """One cycle per strongly connected component that contains a cycle.

        A component contains a cycle when it has two or more nodes, or one
        node with a self-loop. For each such component let ``r`` be its
        smallest member by name (ints before strs; ints by value, strs by
        code points); the cycle reported is a shortest cycle through ``r`` --
        found by breadth-first search from ``r`` inside the component,
        out-edges in edge order, first parent wins -- as ``[r, ..., y]`` with
        ``y -> r``. The cycles are listed by ``r`` in the same name order. An
        acyclic graph gives ``[]``.

        The answer depends only on each waiter's ordered list of holders
        (:meth:`waits_of`), not on ids or history, so a replica rebuilt from
        :meth:`edges` reports the same cycles as one that lived through every
        call. Iterative throughout: a 100k-node chain or cycle is fine.

        :returns: the cycles, each a list of names.
        """
        out = self._out
        nslots = len(self._names)
        unseen = -1
        index = [unseen] * nslots
        low = [0] * nslots
        comp = [unseen] * nslots  # component number; unseen while on the stack
        # Tarjan's algorithm, iterative: call stack of (node, out-edge iterator);
        # a node is on Tarjan's stack iff index >= 0 and comp == unseen.
        counter = 0
        ncomp = 0
        tstack: list[int] = []
        roots: list[int] = []  # smallest id of each cyclic component
        names = self._names
        for s in range(nslots):
            if names[s] is None or index[s] != unseen:
                continue
            index[s] = low[s] = counter
            counter += 1
            tstack.append(s)
            calls: list[tuple[int, Iterator[int]]] = [(s, iter(out[s]))]
            while calls:
                v, it = calls[-1]
                x = next(it, -1)
                if x >= 0:
                    if index[x] == unseen:
                        index[x] = low[x] = counter
                        counter += 1
                        tstack.append(x)
                        calls.append((x, iter(out[x])))
                    elif comp[x] == unseen and index[x] < low[v]:
                        low[v] = index[x]
                    continue
                calls.pop()
                if calls:
                    u = calls[-1][0]
                    if low[v] < low[u]:
                        low[u] = low[v]
                if low[v] != index[v]:
                    continue
                # v roots a component: pop it; if it is cyclic, note its
                # member with the smallest name (not id: see the docstring).
                r = v
                rkey = _name_key(names[v])  # type: ignore[arg-type]
                size = 0
                while True:
                    m = tstack.pop()
                    comp[m] = ncomp
                    size += 1
                    if m == v:
                        break
                    mkey = _name_key(names[m])  # type: ignore[arg-type]
                    if mkey < rkey:
                        r, rkey = m, mkey
                ncomp += 1
                if size > 1 or v in out[v]:
                    roots.append(r)
        roots.sort(key=lambda i: _name_key(names[i]))  # type: ignore[arg-type]
        return [self._shortest_cycle(r, comp) for r in roots]

    def _shortest_cycle(self, r: int, comp: list[int]) -> list[Node]:
        """BFS from ``r`` within its component back to ``r``; the cycle as names."""
        out = self._out
        c = comp[r]
        parent = {r: -1}
        queue = [r]
        qi = 0
        while qi < len(queue):
            v = queue[qi]
            qi += 1
            for x in out[v]:
                if x == r:
                    path = []
                    while v >= 0:
                        path.append(v)
                        v = parent[v]
                    path.reverse()
                    names = self._names
                    return [names[i] for i in path]  # type: ignore[misc]
                if comp[x] == c and x not in parent:
                    parent[x] = v
                    queue.append(x)
        raise AssertionError("a cyclic component always has a cycle through its root")

    # -- introspection -----------------------------------------------------

    def __len__(self) -> int:
        """The number of nodes (clients with at least one edge)."""
        return len(self._ids)

    def __contains__(self, node: object) -> bool:
        """Whether ``node`` is in the graph; any object may be asked about."""
        if type(node) is not str and type(node) is not int:
            return False
        return node in self._ids

    @property
    def num_edges(self) -> int:
        """The number of edges (self-loops count once)."""
        return self._nedges

    def waits_of(self, waiter: Node) -> list[Node]:
        """The holders ``waiter`` waits for, in edge order (``[]`` if unknown).

        :raises TypeError: if ``waiter`` is not a ``str``/``int``.
        """
        _check_node(waiter, "waiter")
        w = self._ids.get(waiter)
        if w is None:
            return []
        names = self._names
        return [names[h] for h in self._out[w]]  # type: ignore[misc]

    def waiters_of(self, holder: Node) -> list[Node]:
        """The clients waiting for ``holder``, in node order (``[]`` if unknown).

        :raises TypeError: if ``holder`` is not a ``str``/``int``.
        """
        _check_node(holder, "holder")
        h = self._ids.get(holder)
        if h is None:
            return []
        names = self._names
        return [names[w] for w in sorted(self._in[h])]  # type: ignore[misc]

    def nodes(self) -> list[Node]:
        """Every node, in id order (the order :meth:`find_cycles` uses)."""
        return [n for n in self._names if n is not None]

    def edges(self) -> list[tuple[Node, Node]]:
        """Every edge ``(waiter, holder)``: waiters in node order, then edge order."""
        names = self._names
        return [
            (names[w], names[h])  # type: ignore[misc]
            for w in range(len(names))
            if names[w] is not None
            for h in self._out[w]
        ]

    def _slots(self) -> int:
        """Id slots allocated (live + free); bounded by the peak node count."""
        return len(self._names)

    def __repr__(self) -> str:
        return f"<WaitForGraph nodes={len(self)} edges={self._nedges}>"
