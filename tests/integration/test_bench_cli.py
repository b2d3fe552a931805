"""The README's main job, ``distsync bench kernels``, end to end in a subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from distsync._core import KERNELS


@pytest.mark.parametrize("kernel", KERNELS)
def test_bench_kernels_quick_prints_a_row_per_measurement(kernel: str, tmp_path: Path) -> None:
    out_json = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distsync",
            "bench",
            "kernels",
            "--quick",
            "--only",
            kernel,
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out_json.read_text())
    assert rows, "no rows"
    for row in rows:
        assert row["kernel"] == kernel
        assert row["ours"] > 0 and row["peer_value"] > 0
        assert math.isfinite(row["ratio"])
        # The table on stdout names the peer of every row.
        assert row["peer"] in proc.stdout
    # Progress lines go to stderr so the table on stdout stays clean.
    assert kernel in proc.stderr
