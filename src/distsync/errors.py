"""The one error hierarchy of distsync.

Every error distsync raises on purpose derives from :class:`DistSyncError`.
Errors that travel over the wire carry a short machine-readable ``code``
(the class attribute) and a message that names the bad field or value.
Argument errors in the kernels stay plain ``TypeError``/``ValueError``, as
Python users expect.
"""

from __future__ import annotations

__all__ = [
    "DistSyncError",
    "LockTimeout",
    "DeadlockError",
    "ClusterUnavailable",
    "ProtocolError",
    "AuthError",
    "InvalidRequest",
    "StorageError",
    "CorruptLogError",
]


class DistSyncError(Exception):
    """Base class of every distsync error."""

    code = "error"


class LockTimeout(DistSyncError):
    """An acquire did not get the lock within its ``timeout``."""

    code = "lock_timeout"


class DeadlockError(DistSyncError):
    """Granting the wait would close a cycle in the wait-for graph.

    ``cycle`` lists the client ids around the cycle, starting with the
    requester.
    """

    code = "deadlock"

    def __init__(self, message: str, cycle: list[str] | None = None) -> None:
        super().__init__(message)
        self.cycle = list(cycle or [])


class ClusterUnavailable(DistSyncError):
    """No leader or owner could be reached within the timeout."""

    code = "unavailable"


class ProtocolError(DistSyncError):
    """A frame or message broke the wire protocol (size, type, field)."""

    code = "protocol"


class AuthError(DistSyncError):
    """The peer failed the handshake (wrong secret or certificate)."""

    code = "auth"


class InvalidRequest(DistSyncError):
    """A request was well-formed but not allowed (e.g. release by a non-holder)."""

    code = "invalid_request"


class StorageError(DistSyncError):
    """Durable storage failed: a write could not be made durable."""

    code = "storage"


class CorruptLogError(StorageError):
    """A log holds a bad record followed by valid ones.

    A torn tail (bad records only at the end) is repaired by truncation;
    damage in the middle cannot be, and nothing is served from the log.
    ``path`` is the file and ``seq`` the first bad sequence number.
    """

    code = "corrupt_log"

    def __init__(self, message: str, path: str = "", seq: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.seq = seq
