"""The package surface: version, exports, error hierarchy, bench table, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import distsync
from distsync import errors
from distsync.bench import Row, render_table, rows_to_json
from distsync.cli import main


def test_all_names_resolve() -> None:
    for name in distsync.__all__:
        assert hasattr(distsync, name), name


def test_version_is_single_sourced() -> None:
    from importlib.metadata import version

    assert distsync.__version__ == version("distsync")


@pytest.mark.parametrize("name", [n for n in errors.__all__ if n != "DistSyncError"])
def test_every_error_derives_from_the_base(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.DistSyncError)
    # Wire errors are told apart by their code, so no two may share one.
    codes = [getattr(errors, n).code for n in errors.__all__]
    assert codes.count(cls.code) == 1


def test_corrupt_log_error_carries_path_and_seq() -> None:
    err = errors.CorruptLogError("bad record", path="/x/data.mdb", seq=17)
    assert (err.path, err.seq) == ("/x/data.mdb", 17)
    assert isinstance(err, errors.StorageError)
    dl = errors.DeadlockError("cycle", cycle=["a", "b"])
    assert dl.cycle == ["a", "b"]


def test_ratio_means_times_better_for_rates_and_costs() -> None:
    rate = Row("k", "w", ours=30.0, peer="p", peer_value=10.0, unit="ops/s")
    cost = Row("k", "w", ours=1e-6, peer="p", peer_value=4e-6, unit="s", higher_is_better=False)
    assert rate.ratio == pytest.approx(3.0)
    assert cost.ratio == pytest.approx(4.0)
    assert math.isnan(Row("k", "w", 0.0, "p", 1.0, "ops/s").ratio)


def test_table_and_json_render_every_row() -> None:
    rows = [
        Row("ring", "lookup", 31e6, "numpy", 7e6, "ops/s", target=">= 30M/s", met=True),
        Row("wal", "append", 250e-6, "fsync", 205e-6, "s", higher_is_better=False, met=False),
    ]
    table = render_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert "31.00 M/s" in table and "250.0 µs" in table and "MISSED" in table
    data = json.loads(rows_to_json(rows))
    assert [d["kernel"] for d in data] == ["ring", "wal"]
    assert data[0]["ratio"] == pytest.approx(31 / 7)


def test_cli_rejects_unknown_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "kernels", "--only", "ring,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "distsync", "--version"], capture_output=True, text=True, check=True
    )
    assert distsync.__version__ in out.stdout
