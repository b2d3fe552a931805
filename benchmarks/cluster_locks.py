"""Lock acquire+release pairs on a real 3-node cluster, against PySyncObj and etcd.

A thin wrapper: the benchmark lives in :mod:`distsync.bench._locks` (the module
docstring says what is measured and how), shared with ``distsync bench locks``.

    python benchmarks/cluster_locks.py [--quick] [--skip-peers] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import sys

from distsync.bench._locks import main

if __name__ == "__main__":
    sys.exit(main())
