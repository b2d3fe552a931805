"""Consistent hash ring, pure-Python twin of the compiled ``_ring_c`` kernel.

The placement contract (every node and client of a cluster must agree on it,
so it never changes without a format version bump):

* A hash is XXH3-64 with seed 0 and the default secret of the given bytes;
  a ``str`` is hashed as its UTF-8 encoding. Never Python's ``hash()``: XXH3
  is the same in every process, platform and Python version.
* Node ``N`` (a ``str``) owns ``vnodes`` points on the ring; point ``i``
  (``0 <= i < vnodes``) is the hash of the label ``f"{N}#{i}"``. The label is
  unambiguous: ``i`` has no ``#``, so the last ``#`` splits it.
* Points are sorted by ``(point, node name)``. A key with hash ``h`` belongs
  to the first point ``p >= h``, wrapping past the top to the first point;
  of two equal points the one of the smaller node name (``str`` order) wins.
  Both twins apply exactly this rule.
* :meth:`HashRing.preference_list` walks clockwise from that point and
  collects distinct nodes; asking for more nodes than the ring has is a
  ``ValueError``.
* Any lookup on an empty ring raises ``LookupError``.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import xxhash

__all__ = ["HashRing", "DEFAULT_VNODES", "MAX_VNODES"]

#: Points per node unless told otherwise.
DEFAULT_VNODES = 150
#: Upper bound of ``vnodes``: guards against a typo allocating gigabytes.
MAX_VNODES = 65536

_EMPTY_RING = "the ring is empty: add a node before looking keys up"


def _xxh3_64(data: bytes) -> int:
    """XXH3-64 of ``data`` (seed 0); test hook matching the compiled kernel's."""
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    return xxhash.xxh3_64_intdigest(data)


def _key_hash(key: object, what: str) -> int:
    """The ring hash of one key; ``what`` names the argument in errors."""
    if isinstance(key, str):
        try:
            data = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not encodable as UTF-8") from None
    elif isinstance(key, bytes):
        data = key
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(key).__name__}")
    return xxhash.xxh3_64_intdigest(data)


def _check_node(node: object, what: str) -> str:
    if not isinstance(node, str):
        raise TypeError(f"{what} must be str, not {type(node).__name__}")
    try:
        node.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {node!r} is not encodable as UTF-8") from None
    return node


def _check_count(value: object, what: str) -> int:
    # bool is an int subclass, but True vnodes/replicas is always a mistake.
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None


def _as_key_list(keys: object) -> list[Any] | tuple[Any, ...]:
    if isinstance(keys, (list, tuple)):
        return keys
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        # Iterable, but surely not meant as one key per character.
        raise TypeError(f"keys must be an iterable of str or bytes, not {type(keys).__name__}")
    try:
        return list(keys)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"keys must be an iterable of str or bytes, not {type(keys).__name__}"
        ) from None


class _Table(NamedTuple):
    """One immutable snapshot of the sorted ring.

    Replaced as a whole on every add/remove, so a call that read it once
    works on a consistent ring even if another thread changes the ring.
    """

    names: tuple[str, ...]  # node names, insertion order
    points: list[int]  # sorted by (point, node name)
    owners: list[int]  # owners[i]: index into names of points[i]
    np_points: npt.NDArray[np.uint64]
    np_owners: npt.NDArray[np.intp]  # owners + [owners[0]]: a sentinel for wrap-around


class HashRing:
    """A consistent hash ring of named nodes with ``vnodes`` points each.

    :param nodes: initial node names (``str``, distinct), in order; this order
        is :attr:`nodes` and the meaning of :meth:`lookup_many`'s indices.
    :param vnodes: points per node, ``1 <= vnodes <= MAX_VNODES``.
    :raises TypeError: a node is not a ``str``, ``nodes`` is not an iterable,
        ``vnodes`` is not an int.
    :raises ValueError: a duplicate node, a node name that is not valid
        Unicode, ``vnodes`` out of range.

    Threads: lookups may run while another thread adds or removes nodes; each
    call sees the ring wholly before or wholly after a change (changes swap in
    a new immutable table). Changes themselves must not race each other.
    """

    def __init__(self, nodes: Iterable[str] = (), vnodes: int = DEFAULT_VNODES) -> None:
        vnodes = _check_count(vnodes, "vnodes")
        if not 1 <= vnodes <= MAX_VNODES:
            raise ValueError(f"vnodes must be between 1 and {MAX_VNODES}, not {vnodes}")
        if isinstance(nodes, (str, bytes)):
            raise TypeError(f"nodes must be an iterable of str, not {type(nodes).__name__}")
        try:
            initial = list(nodes)
        except TypeError:
            raise TypeError(
                f"nodes must be an iterable of str, not {type(nodes).__name__}"
            ) from None
        # Validate everything before touching self: a failed call changes nothing.
        checked: list[str] = []
        seen: set[str] = set()
        for i, node in enumerate(initial):
            node = _check_node(node, f"nodes[{i}]")
            if node in seen:
                raise ValueError(f"nodes[{i}]: node {node!r} is listed twice")
            seen.add(node)
            checked.append(node)
        self._vnodes = vnodes
        self._nodes = checked
        # name -> the node's points, in label order; kept so a rebuild after
        # add/remove does not rehash the other nodes.
        self._node_points = {node: self._points_of(node) for node in checked}
        self._rebuild()

    # -- the ring ----------------------------------------------------------

    def _points_of(self, node: str) -> list[int]:
        h = xxhash.xxh3_64_intdigest
        return [h(f"{node}#{i}".encode()) for i in range(self._vnodes)]

    def _rebuild(self) -> None:
        """Recompute the sorted points and their owners from ``_node_points``.

        The tables are replaced, never mutated, so a lookup that holds the old
        ones finishes on a consistent (if stale) ring.
        """
        entries = sorted(
            (point, name, idx)
            for idx, name in enumerate(self._nodes)
            for point in self._node_points[name]
        )
        points = [p for p, _, _ in entries]
        owners = [idx for _, _, idx in entries]
        # numpy copies for lookup_many; owners has a sentinel after the last
        # point, equal to the first owner, so "past the top" needs no branch.
        self._table = _Table(
            names=tuple(self._nodes),
            points=points,
            owners=owners,
            np_points=np.array(points, dtype=np.uint64),
            np_owners=np.array(owners + owners[:1], dtype=np.intp),
        )

    @staticmethod
    def _position(table: _Table, h: int) -> int:
        pos = bisect_left(table.points, h)
        return 0 if pos == len(table.points) else pos

    # -- public API --------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Node names in insertion order (a copy); :meth:`lookup_many` indexes it."""
        return list(self._nodes)

    @property
    def vnodes(self) -> int:
        """Points per node."""
        return self._vnodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return isinstance(node, str) and node in self._node_points

    def __repr__(self) -> str:
        return f"HashRing({self._nodes!r}, vnodes={self._vnodes})"

    def __reduce__(self) -> tuple[type[HashRing], tuple[list[str], int]]:
        # Nodes and vnodes define the ring: pickle those, rebuild on load.
        return (HashRing, (list(self._nodes), self._vnodes))

    def add_node(self, node: str) -> None:
        """Add ``node`` (at the end of :attr:`nodes`) with ``vnodes`` points.

        Only keys that now map to ``node`` move.

        :raises TypeError: ``node`` is not a ``str``.
        :raises ValueError: ``node`` is already in the ring or not valid Unicode.
        """
        node = _check_node(node, "node")
        if node in self._node_points:
            raise ValueError(f"node {node!r} is already in the ring")
        self._node_points[node] = self._points_of(node)
        self._nodes.append(node)
        self._rebuild()

    def remove_node(self, node: str) -> None:
        """Remove ``node``; later nodes shift down one place in :attr:`nodes`.

        Only the keys ``node`` owned move.

        :raises TypeError: ``node`` is not a ``str``.
        :raises ValueError: ``node`` is not in the ring.
        """
        if not isinstance(node, str):
            raise TypeError(f"node must be str, not {type(node).__name__}")
        if node not in self._node_points:
            raise ValueError(f"node {node!r} is not in the ring")
        del self._node_points[node]
        self._nodes.remove(node)
        self._rebuild()

    def lookup(self, key: str | bytes) -> str:
        """The node that owns ``key``.

        :param key: ``str`` (hashed as UTF-8) or ``bytes``.
        :raises TypeError: ``key`` is neither.
        :raises ValueError: ``key`` is a ``str`` that is not valid Unicode.
        :raises LookupError: the ring is empty.
        """
        h = _key_hash(key, "key")
        table = self._table
        if not table.points:
            raise LookupError(_EMPTY_RING)
        return table.names[table.owners[self._position(table, h)]]

    def lookup_many(self, keys: Iterable[str | bytes]) -> npt.NDArray[np.intp]:
        """Owners of many keys at once, as indices into :attr:`nodes`.

        :param keys: a list or tuple (or other iterable) of ``str``/``bytes``.
        :returns: an ``intp`` array, ``result[i]`` the owner of ``keys[i]``.
        :raises TypeError: ``keys`` is not an iterable, or ``keys[i]`` is not
            ``str``/``bytes`` (the message names ``i``).
        :raises ValueError: ``keys[i]`` is not valid Unicode.
        :raises LookupError: the ring is empty.
        """
        return self._lookup_many_in(self._table, keys)

    @staticmethod
    def _lookup_many_in(table: _Table, keys: object) -> npt.NDArray[np.intp]:
        items = _as_key_list(keys)
        hashes = np.fromiter(
            (_key_hash(k, f"keys[{i}]") for i, k in enumerate(items)),
            dtype=np.uint64,
            count=len(items),
        )
        if not table.points:
            raise LookupError(_EMPTY_RING)
        # Same rule as lookup: first point >= h; position len wraps to the
        # first point through the sentinel owner.
        pos = np.searchsorted(table.np_points, hashes, side="left")
        return table.np_owners[pos]

    def preference_list(self, key: str | bytes, n: int) -> list[str]:
        """``n`` distinct nodes for ``key``: its owner, then clockwise successors.

        The replicas of a key live on these nodes; the first is
        :meth:`lookup`'s answer.

        :raises TypeError: bad ``key`` type, ``n`` not an int.
        :raises ValueError: ``n < 1`` or ``n`` larger than the number of nodes.
        :raises LookupError: the ring is empty.
        """
        h = _key_hash(key, "key")
        n = _check_count(n, "n")
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        table = self._table
        if not table.points:
            raise LookupError(_EMPTY_RING)
        if n > len(table.names):
            raise ValueError(f"n={n} exceeds the {len(table.names)} nodes in the ring")
        start = self._position(table, h)
        count = len(table.points)
        seen: set[int] = set()
        out: list[str] = []
        # Every node has >= 1 point, so one lap finds n <= len(names) nodes.
        for step in range(count):
            owner = table.owners[(start + step) % count]
            if owner not in seen:
                seen.add(owner)
                out.append(table.names[owner])
                if len(out) == n:
                    break
        return out

    def balance(self, sample_keys: Iterable[str | bytes] | None = None) -> dict[str, float]:
        """Each node's share of the ring, in :attr:`nodes` order; shares sum to 1.

        Without ``sample_keys``: the fraction of the 2**64 hash space each node
        owns (the arcs ending at its points), i.e. the share of uniformly
        random keys it would get. With ``sample_keys``: the fraction of those
        keys that map to each node.

        :returns: ``{node: share}`` with every node (0.0 if it owns nothing);
            ``{}`` for an empty ring without ``sample_keys``.
        :raises TypeError, ValueError: as :meth:`lookup_many` for bad keys.
        :raises ValueError: ``sample_keys`` is empty.
        :raises LookupError: ``sample_keys`` given and the ring is empty.
        """
        table = self._table
        if sample_keys is not None:
            owners = self._lookup_many_in(table, sample_keys)
            if len(owners) == 0:
                raise ValueError("sample_keys is empty")
            counts = np.bincount(owners, minlength=len(table.names))
            return {name: int(c) / len(owners) for name, c in zip(table.names, counts, strict=True)}
        arcs = [0] * len(table.names)
        points = table.points
        for i, point in enumerate(points):
            # Point i owns (points[i-1], points[i]]; the first point's arc
            # wraps through 2**64 (with a single point: the whole ring).
            # Python ints, so the sums are exact.
            prev = points[i - 1] - (1 << 64) if i == 0 else points[i - 1]
            arcs[table.owners[i]] += point - prev
        return {name: arc / (1 << 64) for name, arc in zip(table.names, arcs, strict=True)}
