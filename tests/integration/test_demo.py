"""``distsync demo`` end to end, as a newcomer runs it: a subprocess of ``python -m
distsync demo`` must exit 0 within its time budget and its output must state the facts
the demo is there to show -- the deadlock detected with its cycle, the new leader after
the kill, and fencing tokens that kept increasing. And when something goes wrong it says
so in one line and exits 1."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from distsync import demo
from distsync.errors import ClusterUnavailable
from distsync.testing.cluster import _child_env


def test_demo_runs_and_tells_what_happened() -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "distsync", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        # The same distsync as this test, whether installed or from the checkout.
        env=_child_env({}),
    )
    took = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    assert took < 60, f"the demo took {took:.0f} s"
    assert "FAILED" not in out + proc.stderr

    assert "deadlock detected: cycle bob -> alice -> bob" in out

    killed = re.search(r"(node_\d) killed, new leader elected: (node_\d)", out)
    assert killed, out
    assert killed.group(1) != killed.group(2)
    # The new leader named in the summary is the one the story reported on.
    assert f"New leader elected: {killed.group(2)}" in out

    m = re.search(r"fencing tokens increasing across the failover: ([\d <]+)", out)
    assert m, out
    tokens = [int(t) for t in m.group(1).split("<")]
    assert len(tokens) == 3 and tokens == sorted(set(tokens)), tokens
    # Every scene's token, in the order printed, grows too (one resource per scene, but
    # the Raft index behind the tokens grows across them all).
    holds = [int(t) for t in re.findall(r"fencing token (\d+)", out)]
    assert holds and holds == sorted(holds), holds


def test_demo_failure_is_one_clear_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cluster that never elects a leader: the demo must not raise a traceback at a
    # newcomer but say what went wrong, and exit non-zero.
    class NoLeader:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __enter__(self) -> NoLeader:
            raise ClusterUnavailable("no leader elected within 15 s")

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(demo, "LocalCluster", NoLeader)
    assert demo.main() == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "distsync demo: FAILED: ClusterUnavailable: no leader elected within 15 s"
    )
