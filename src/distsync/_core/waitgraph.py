"""Wait-for graph with deadlock detection: the compiled kernel or its Python twin."""

from typing import TYPE_CHECKING

from distsync._core._dispatch import pick

if TYPE_CHECKING:
    from distsync._core._waitgraph_py import WaitForGraph
else:
    _impl = pick("waitgraph")
    WaitForGraph = _impl.WaitForGraph

__all__ = ["WaitForGraph"]
