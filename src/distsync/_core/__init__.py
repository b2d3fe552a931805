"""Native kernels of distsync.

Each kernel ``x`` has a Cython implementation ``_x_c`` and a pure-Python
twin ``_x_py`` with the same API; ``x`` (e.g. :mod:`distsync._core.ring`)
picks one. Set ``DISTSYNC_NO_EXTENSIONS=1`` to force the twins.

Kernels touch no sockets, clocks or threads; the only I/O is LMDB in ``wal``.
"""

from distsync._core._dispatch import KERNELS, NO_EXTENSIONS, implementation, load

__all__ = ["KERNELS", "NO_EXTENSIONS", "implementation", "load"]
