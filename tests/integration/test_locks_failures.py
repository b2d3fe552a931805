"""The lock service under failures, through :class:`distsync.Client` against
:class:`distsync.LocalCluster`: the leader killed (SIGKILL) while clients contend for one
lock, and a client process killed while it holds a lock (DESIGN §8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import distsync
from distsync import Client

WAIT = 20.0


def test_leader_killed_during_contention_no_overlapping_holds() -> None:
    # 4 clients take one exclusive lock in turns; the leader is killed mid-run. Nobody
    # may hold it together with anyone else, tokens keep increasing across the new
    # leader, and every client finishes its rounds (retries apply once).
    rounds = 12
    with distsync.LocalCluster(nodes=3) as cluster:
        clients = [cluster.client(timeout=WAIT) for _ in range(4)]
        guard = threading.Lock()
        inside = 0
        holds: list[tuple[int, float, float]] = []
        done = [0] * len(clients)
        errors: list[BaseException] = []

        def worker(k: int, c: Client) -> Callable[[], None]:
            def run() -> None:
                nonlocal inside
                try:
                    for _ in range(rounds):
                        with c.lock("failover", timeout=WAIT) as g:
                            t0 = time.monotonic()
                            with guard:
                                inside += 1
                                assert inside == 1, "two holders at once"
                            time.sleep(0.01)
                            with guard:
                                inside -= 1
                            holds.append((g.fencing_token, t0, time.monotonic()))
                        done[k] += 1
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            return run

        threads = [
            threading.Thread(target=worker(k, c), daemon=True) for k, c in enumerate(clients)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + WAIT
        while len(holds) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        old = cluster.leader()
        cluster.kill(old)
        for t in threads:
            t.join(max(0.0, deadline + 40 - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client hung after the failover"
        assert not errors, errors
        new = cluster.leader()
        assert new != old
        assert done == [rounds] * len(clients)
        holds.sort()
        tokens = [h[0] for h in holds]
        assert len(set(tokens)) == len(tokens) == rounds * len(clients)
        # Ordered by token, the holds are ordered in time and never overlap.
        for (_, _, end), (_, start, _) in zip(holds, holds[1:], strict=False):
            assert end <= start, "holds overlap"


CHILD = textwrap.dedent(
    """
    import sys, time, distsync
    addresses, secret = sys.argv[1].split(","), sys.argv[2].encode()
    c = distsync.Client(addresses, secret=secret, session_ttl=2.0, client_id="doomed")
    g = c.acquire("orphan", timeout=10)
    print(g.fencing_token, flush=True)
    time.sleep(120)
    """
)


def test_killed_client_loses_its_locks_after_the_session_ttl(tmp_path: Path) -> None:
    with distsync.LocalCluster(nodes=3) as cluster:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(distsync.__file__).resolve().parent.parent)
        child = subprocess.Popen(
            [sys.executable, str(script), ",".join(cluster.addresses), cluster.secret.decode()],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip().isdigit(), line
            token = int(line)
            c = cluster.client()
            st = c.lock_status("orphan")
            assert st.holders == ("doomed",) and st.fencing_token == token
            child.kill()
            child.wait(10)
            t0 = time.monotonic()
            with c.lock("orphan", timeout=10.0) as g:
                waited = time.monotonic() - t0
                assert g.fencing_token > token
                assert c.lock_status("orphan").holders == (c.client_id,)
            # Freed by the session's expiry: not before it could have expired (a
            # keepalive may have just been sent), not long after the 2 s ttl.
            assert 0.5 <= waited <= 5.0, waited
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)


def test_local_cluster_restart_keeps_the_data_and_exit_removes_everything() -> None:
    cluster = distsync.LocalCluster(nodes=3)
    dirs: list[Path] = []
    try:
        with cluster:
            c = cluster.client()
            g = c.acquire("kept", timeout=WAIT)
            old = cluster.leader()
            cluster.kill(old)
            assert not cluster.is_running(old)
            cluster.restart(old)
            assert cluster.is_running(old)
            # The lock survived the leader's crash; the restarted node rejoined.
            assert c.lock_status("kept", timeout=WAIT).holders == (c.client_id,)
            g.release()
            others = [n for n in cluster.node_ids if n != old]
            for n in others:
                cluster.kill(n)
            cluster.restart(others[0])  # a majority again, with old's recovered log
            assert cluster.leader(timeout=WAIT) in (old, others[0])
            with c.lock("kept", timeout=WAIT) as g2:
                assert g2.fencing_token > g.fencing_token
            dirs = [Path(cluster.data_dir(n)) for n in cluster.node_ids]
            assert all(d.is_dir() for d in dirs)
            raise RuntimeError("the body fails")
    except RuntimeError as exc:
        assert str(exc) == "the body fails"
    assert len(dirs) == 3
    assert not any(cluster.is_running(n) for n in cluster.node_ids)
    assert not any(d.exists() for d in dirs)
