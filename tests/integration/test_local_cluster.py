"""``distsync.LocalCluster``'s node control (DESIGN §11): ``restart`` returns once the
node answers, as ``start`` returns once a leader is there; a node that cannot come back
is named in the error instead of being reported as restarted."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import distsync
from distsync.node import fetch_status

WAIT = 20.0


def _status_once(cluster: distsync.LocalCluster, node_id: str) -> dict[str, object]:
    """One status request to ``node_id``, no retry: it answers now or this raises."""
    host, port = cluster.address(node_id).rsplit(":", 1)
    return asyncio.run(fetch_status(host, int(port), cluster.secret, timeout=5.0))


def test_restart_waits_until_the_node_answers_and_names_a_node_that_cannot_start() -> None:
    with distsync.LocalCluster(nodes=3) as cluster:
        leader = cluster.leader()
        follower, other = (n for n in cluster.node_ids if n != leader)
        c = cluster.client(timeout=WAIT)
        g = c.acquire("restarted", timeout=WAIT)

        cluster.restart(follower)
        # Answering at once: no retry loop in the caller is needed after restart().
        st = _status_once(cluster, follower)
        assert st["node_id"] == follower
        assert cluster.is_running(follower)

        # kill() returns once the process is gone: nothing answers on its port.
        cluster.kill(other)
        assert not cluster.is_running(other)
        with pytest.raises((OSError, distsync.ClusterUnavailable)):
            _status_once(cluster, other)

        # A node that cannot start (its data dir is a file now) is named, with why.
        data = Path(cluster.data_dir(other))
        shutil.rmtree(data)
        data.write_bytes(b"not a directory")
        with pytest.raises(distsync.ClusterUnavailable) as info:
            cluster.restart(other, timeout=WAIT)
        assert other in str(info.value) and "not running" in str(info.value)
        assert not cluster.is_running(other)

        # The two others still make a majority: the lock is still there.
        assert c.lock_status("restarted", timeout=WAIT).holders == (c.client_id,)
        g.release()
