"""``distsync bench locks --quick --skip-peers --fsync-off-bound --shared-client`` end to
end in a subprocess: a real 3-node cluster (fsync on), the workloads, then the same on a
cluster with fsync off (the bound rows) and with the clients as tasks of one client, the
table on stdout, the JSON rows and the PNG. Nothing is installed (no peers); the run is
bounded by a timeout and stops its clusters."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from distsync.bench._locks import FSYNC_OFF, SHARED, TARGETS, WORKLOADS
from distsync.testing.cluster import _child_env


def test_bench_locks_quick_distsync_only(tmp_path: Path) -> None:
    out = tmp_path / "locks.json"
    cmd = [sys.executable, "-m", "distsync", "bench", "locks", "--quick", "--skip-peers"]
    cmd += ["--fsync-off-bound", "--shared-client", "--json", str(out)]
    plot = tmp_path / "locks.png"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    if has_matplotlib:  # the `bench` extra; the test extra does not require it
        cmd += ["--plot", str(plot)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=_child_env()
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["peers"] == {} and result["meta"]["reps"] == 1
    rows = [r for r in result["rows"] if r["system"] == "distsync"]
    # One row per workload, ours only, in the order and shape; and one more per
    # workload for each extra run (fsync off; one shared client), with no target and no
    # ratio: they are beside the workloads the targets are for, not contenders.
    shape = [(w.name, w.clients, w.resources) for w in WORKLOADS]
    assert [(r["workload"], r["clients"], r["resources"]) for r in rows] == shape
    for system, fsync in ((FSYNC_OFF, False), (SHARED, True)):
        extra = [r for r in result["rows"] if r["system"] == system]
        assert [(r["workload"], r["clients"], r["resources"]) for r in extra] == shape
        for r in extra:
            assert r["fsync"] is fsync and r["rate"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"], r
            assert "target" not in r and "ratio_vs" not in r, r
    assert len(result["rows"]) == 3 * len(WORKLOADS)
    for r in rows:
        assert r["system"] == "distsync" and r["fsync"] is True and r["available"] is True
        assert r["rate"] > 0 and r["count"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"], r
        assert len(r["runs"]) == 1  # --quick: one run per workload
        assert r["ratio_vs"] == {}  # no peer measured, no ratio invented
        if r["workload"] not in TARGETS:  # the plot's middle point
            assert r["target"] is None and r["met"] is None, r
            continue
        # The verdict follows from the figures and the target.
        assert r["target"].startswith(">= ")
        min_rate, max_p50, max_p99 = TARGETS[r["workload"]]
        expected = r["rate"] >= min_rate
        expected = expected and (max_p50 is None or r["p50_ms"] <= max_p50)
        expected = expected and (max_p99 is None or r["p99_ms"] <= max_p99)
        assert r["met"] is expected, r
    table = proc.stdout.splitlines()
    assert table[0].split()[:2] == ["system", "workload"]
    assert len(table) == 2 + 3 * len(WORKLOADS)
    assert sum(line.startswith(FSYNC_OFF) for line in table) == len(WORKLOADS)
    assert sum(line.startswith(SHARED) for line in table) == len(WORKLOADS)
    assert "16 clients / 1 lock" in proc.stdout
    if has_matplotlib:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
