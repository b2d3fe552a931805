"""The lock client's own behaviour without a cluster: arguments, ids, and a bounded
failure when nothing answers."""

from __future__ import annotations

import time

import pytest

import distsync
from distsync import AsyncClient, Client, ClusterUnavailable
from distsync.testing.cluster import free_ports

SECRET = b"client-unit-test-secret-0123456789"


def test_addresses_as_a_list_or_a_comma_separated_string() -> None:
    a = AsyncClient(["127.0.0.1:7400", "[::1]:7401"], secret=SECRET)
    b = AsyncClient("127.0.0.1:7400, [::1]:7401", secret=SECRET)
    assert a._addresses == b._addresses == [("127.0.0.1", 7400), ("::1", 7401)]
    with pytest.raises(ValueError, match="host:port"):
        AsyncClient(["localhost"], secret=SECRET)
    with pytest.raises(ValueError):
        AsyncClient([], secret=SECRET)
    with pytest.raises(ValueError):
        AsyncClient(["127.0.0.1:1"], secret=SECRET, session_ttl=0)


def test_client_ids_are_unique_unless_given() -> None:
    ids = {AsyncClient(["127.0.0.1:1"], secret=SECRET).client_id for _ in range(50)}
    assert len(ids) == 50
    assert AsyncClient(["127.0.0.1:1"], secret=SECRET, client_id="me").client_id == "me"


def test_an_unreachable_cluster_fails_within_the_timeout() -> None:
    (port,) = free_ports(1)  # nothing listens there
    with Client([f"127.0.0.1:{port}"], secret=SECRET, timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            c.lock_status("r")
        with pytest.raises(ClusterUnavailable):
            c.acquire("r", timeout=0.3)
        assert time.monotonic() - t0 < 5.0
    with pytest.raises(ClusterUnavailable):  # closed
        c.lock_status("r")


def test_the_public_names() -> None:
    for name in ("Client", "AsyncClient", "LocalCluster", "LockGrant", "AsyncLockGrant"):
        assert name in distsync.__all__ and hasattr(distsync, name)
