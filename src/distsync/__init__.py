"""distsync: distributed locks, durable queues and a coherent near-cache.

The public names are listed in ``__all__``; everything else is internal.
"""

from distsync._version import __version__
from distsync.client import AsyncClient, AsyncLockGrant, Client, LockGrant
from distsync.cluster import LocalCluster
from distsync.errors import (
    AuthError,
    ClusterUnavailable,
    CorruptLogError,
    DeadlockError,
    DistSyncError,
    InvalidRequest,
    LockTimeout,
    ProtocolError,
    StorageError,
)

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "LockGrant",
    "AsyncLockGrant",
    "LocalCluster",
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
