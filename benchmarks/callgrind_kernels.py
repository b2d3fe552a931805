"""Instruction counts per operation of each compiled kernel, under callgrind.

Wall-clock figures drift on a shared machine; instruction counts do not. This
runs each kernel's workload twice under ``valgrind --tool=callgrind`` (one
repetition and three) and divides the difference by the operations in two
repetitions, so interpreter start-up and set-up cancel out.

    python benchmarks/callgrind_kernels.py            # all kernels
    python benchmarks/callgrind_kernels.py ring mesi  # some

Needs valgrind on PATH (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Each workload: set-up, then `reps` repetitions of OPS operations.
WORKLOADS: dict[str, tuple[str, int, str]] = {
    "ring.lookup_many": (
        "from distsync._core.ring import HashRing\n"
        "r = HashRing([f'node_{i}' for i in range(5)])\n"
        "keys = [f'key-{i}' for i in range(100_000)]\n",
        100_000,
        "r.lookup_many(keys)",
    ),
    "ring.lookup": (
        "from distsync._core.ring import HashRing\n"
        "r = HashRing([f'node_{i}' for i in range(5)])\n"
        "keys = [f'key-{i}' for i in range(100_000)]\n"
        "lk = r.lookup\n",
        100_000,
        "for k in keys: lk(k)",
    ),
    "waitgraph.find_cycles": (
        "import random\n"
        "from distsync._core.waitgraph import WaitForGraph\n"
        "rng = random.Random(1); g = WaitForGraph(); N = 100_000\n"
        "for i in range(N - 1): g.add_wait(i, [rng.randrange(i + 1, N)])\n",
        1,
        "g.find_cycles()",
    ),
    "mesi.get_hit": (
        "from distsync._core.mesi import LineTable\n"
        "t = LineTable(100_000)\n"
        "keys = [f'k{i}' for i in range(100_000)]\n"
        "for k in keys: t.fill(k, b'v', True)\n"
        "get = t.get\n",
        100_000,
        "for k in keys: get(k)",
    ),
    "wal.append_nosync_1000x100B": (
        "import tempfile\n"
        "from distsync._core.wal import Wal\n"
        "w = Wal(tempfile.mkdtemp(), sync=False)\n"
        "batch = [b'x' * 100] * 1000\n",
        1000,
        "w.append(batch)",
    ),
}


def _refs(script: str, out: Path) -> int:
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if not match:
        raise RuntimeError(f"no instruction count in valgrind output:\n{proc.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str]) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH", file=sys.stderr)
        return 2
    names = argv or list(WORKLOADS)
    unknown = [n for n in names if not any(w.startswith(n) for w in WORKLOADS)]
    if unknown:
        print(f"unknown workload(s): {unknown}; choose from {list(WORKLOADS)}", file=sys.stderr)
        return 2
    print(f"{'workload':32} {'instructions/op':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (setup, ops, body) in WORKLOADS.items():
            if not any(name.startswith(n) for n in names):
                continue
            counts = []
            for reps in (1, 3):
                script = setup + f"for _ in range({reps}):\n    " + body.replace("\n", "\n    ")
                counts.append(_refs(script, Path(tmp) / f"{name}.{reps}"))
            per_op = (counts[1] - counts[0]) / (2 * ops)
            print(f"{name:32} {per_op:16,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
