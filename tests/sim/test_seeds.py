"""Seeded whole-cluster simulation: safety under faults, then liveness once healed.

Each seed is a scenario, one of three profiles: "mixed" (3 or 5 nodes; drops, duplicates,
delays that reorder, symmetric/asymmetric partitions, isolation, crash-restart losing what
was not fsync'd, uneven tick rates, snapshots, ReadIndex, leader transfers, membership
changes), "churn" (5 nodes, one entry per append, faults every few tens of ms) and
"figure8" (plain Raft, leaders killed soon after winning). Leaders may overlap sending
with a slow fsync and crash before it completes. The invariants listed on
:class:`distsync.testing.sim.Cluster` are checked after every event; a failure names the
seed and the command that replays it. More seeds::

    SIM_SEEDS=20000 PYTHONPATH=src python -m pytest tests/sim/test_seeds.py -q
    PYTHONPATH=src python -m distsync.testing.sim --seeds 0:20000
    SIM_SEED=1234 PYTHONPATH=src python -m pytest tests/sim/test_seeds.py   # one seed
    PYTHONPATH=src python -m distsync.testing.sim --seed 1234               # the same
"""

from __future__ import annotations

import os

import pytest

from distsync.testing.sim import SimulationError, replay_command, run_seed

BLOCK = 100
if os.environ.get("SIM_SEED"):
    _start, _count = int(os.environ["SIM_SEED"]), 1
else:
    _start = int(os.environ.get("SIM_SEED_START", "0"))
    _count = int(os.environ.get("SIM_SEEDS", "2000"))
BLOCKS = [(lo, min(lo + BLOCK, _start + _count)) for lo in range(_start, _start + _count, BLOCK)]


@pytest.mark.parametrize("lo,hi", BLOCKS, ids=[f"seeds{lo}-{hi - 1}" for lo, hi in BLOCKS])
def test_seeds(lo: int, hi: int) -> None:
    failures = []
    for seed in range(lo, hi):
        try:
            run_seed(seed)
        except SimulationError as e:
            failures.append(str(e))
        except Exception as e:  # an exception inside the core is a failure of that seed
            failures.append(
                f"{type(e).__name__}: {e} (seed {seed})\nreplay: {replay_command(seed)}"
            )
    assert not failures, "\n\n".join(failures[:5]) + f"\n\n{len(failures)} seed(s) failed"


def test_a_seed_replays_exactly() -> None:
    """Determinism: the same seed gives the same run, event for event."""
    a, b = run_seed(7), run_seed(7)
    assert (a.events, a.messages_sent, a.now) == (b.events, b.messages_sent, b.now)
    assert a.digests == b.digests and a.leaders == b.leaders


def test_invariant_violation_names_the_replay_command() -> None:
    """The checker can fail, and says how to replay: corrupt one node's applied entry."""
    from distsync.testing.sim import Cluster

    c = Cluster(3, seed=5, replay=replay_command(5))
    assert c.run_until(lambda: c.leader() is not None, 2000)
    r = c.propose(b"x")
    assert r is not None
    c.run_for(100)
    c.digests[r[1]] ^= 1  # pretend another server applied something else there
    c.nodes[c.ids[0]].sm_index = r[1] - 1
    c.nodes[c.ids[0]].sm_digest = c.digests.get(r[1] - 1, 0)
    from distsync.raft import Entry, Ready

    with pytest.raises(SimulationError, match="state machine safety") as ei:
        c._apply(c.nodes[c.ids[0]], Ready(committed_entries=[Entry(r[2], r[1], b"x")]))
    assert "python -m distsync.testing.sim --seed 5" in str(ei.value)
