"""Committed proposals per second on a real 3-node cluster, against PySyncObj's.

A thin wrapper: the benchmark lives in :mod:`distsync.bench._commit` (the module
docstring says what is measured and how), shared with ``distsync bench commit``.

    python benchmarks/cluster_commit.py [--duration 3] [--reps 3] [--quick] [--json out.json]
"""

from __future__ import annotations

import sys

from distsync.bench._commit import main

if __name__ == "__main__":
    sys.exit(main())
