"""``distsync bench commit --quick`` and ``benchmarks/cluster_commit.py`` end to end in a
subprocess: a real 3-node cluster and PySyncObj's (which the benchmark's own setup step
installs with pip when it is missing), the table on stdout, the JSON file. Each run is bounded by a timeout and
stops the processes it started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from distsync.testing.cluster import _child_env

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, cwd=cwd, env=_child_env()
    )


def check_rows(rows: list[dict[str, Any]], system: str, proposers: list[int]) -> None:
    mine = [r for r in rows if r["system"].startswith(system)]
    assert [r["proposers"] for r in mine] == proposers, rows
    for r in mine:
        assert r["rate"] > 0 and r["count"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"], r
        assert len(r["runs"]) == 1  # --quick: one run per configuration


def test_bench_commit_quick_distsync_only(tmp_path: Path) -> None:
    out = tmp_path / "commit.json"
    cmd = [sys.executable, "-m", "distsync", "bench", "commit", "--quick", "--skip-pysyncobj"]
    proc = run([*cmd, "--proposers", "1,8", "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["peer"] is None and result["meta"]["reps"] == 1
    check_rows(result["rows"], "distsync", [1, 8])
    assert all(r["fsync"] for r in result["rows"])
    table = proc.stdout.splitlines()
    assert table[0].split()[:3] == ["system", "fsync", "proposers"]
    assert len(table) == 2 + 2  # header, rule, one row per proposer count
    assert "distsync  P=8" in proc.stderr  # progress on stderr, the table alone on stdout


def test_script_runs_both_systems(tmp_path: Path) -> None:
    # No --skip-pysyncobj: the benchmark's own setup step installs the peer when missing.
    out = tmp_path / "commit.json"
    script = str(ROOT / "benchmarks" / "cluster_commit.py")
    proc = run(
        [sys.executable, script, "--quick", "--proposers", "4", "--json", str(out)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["peer"].startswith("pysyncobj ")
    check_rows(result["rows"], "distsync", [4])
    check_rows(result["rows"], "PySyncObj", [4])
    peer = next(r for r in result["rows"] if r["system"].startswith("PySyncObj"))
    assert peer["fsync"] is False and isinstance(peer["batch"], bool)


def test_bad_settings_are_a_usage_error(tmp_path: Path) -> None:
    proc = run([sys.executable, "-m", "distsync", "bench", "commit", "--proposers", "0"], tmp_path)
    assert proc.returncode == 2 and "proposer counts" in proc.stderr
