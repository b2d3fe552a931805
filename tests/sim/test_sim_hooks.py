"""The simulator's public hooks keep their contract: a state machine made by the factory
gets every committed command once, in index order, and after a restart exactly the state
its snapshot held plus the log after it; the storage factory is asked at every start,
with the crashed node's storage at a restart."""

from __future__ import annotations

import json
from typing import Any

from distsync.raft import MemoryStorage
from distsync.testing import sim


class Recorder:
    """A state machine that is the list of the commands it applied."""

    def __init__(self, log: list[tuple[str, str, Any]], nid: str) -> None:
        self.log, self.nid = log, nid
        self.applied: list[tuple[int, bytes]] = []

    def apply(self, index: int, data: bytes) -> int:
        assert not self.applied or index > self.applied[-1][0], "out of order"
        self.applied.append((index, data))
        return len(self.applied)

    def snapshot(self) -> bytes:
        return json.dumps([[i, d.hex()] for i, d in self.applied]).encode()

    def restore(self, data: bytes) -> None:
        self.log.append(("restore", self.nid, len(data)))
        self.applied = [(i, bytes.fromhex(d)) for i, d in json.loads(data)]


def test_state_machine_sees_every_command_once_across_snapshots_and_restarts() -> None:
    events: list[tuple[str, str, Any]] = []
    machines: dict[str, Recorder] = {}

    def make(nid: str) -> Recorder:
        machines[nid] = Recorder(events, nid)
        return machines[nid]

    c = sim.Cluster(3, seed=7, snapshot_every=5, state_machine_factory=make)
    assert c.run_until(lambda: c.leader() is not None, 2000)
    sent = []
    for i in range(30):
        data = b"cmd%d" % i
        assert c.propose(data) is not None
        sent.append(data)
        c.run_for(5)
        if i == 12:
            c.crash("n3")  # misses entries that get compacted: InstallSnapshot later
        if i == 25:
            c.start("n3")
    assert c.run_until(lambda: all(len(m.applied) == len(sent) for m in machines.values()), 3000)
    for nid, m in machines.items():
        assert [d for _, d in m.applied] == sent, nid
        assert m is c.nodes[nid].sm
    # n3 came back through a snapshot (at its restart, at an InstallSnapshot, or both).
    assert any(e[:2] == ("restore", "n3") for e in events), events


def test_storage_factory_is_asked_at_every_start() -> None:
    calls: list[tuple[str, bool]] = []

    def storage(nid: str, previous: sim.SimStorage | None) -> sim.SimStorage:
        calls.append((nid, previous is not None))
        return previous if previous is not None else MemoryStorage()

    c = sim.Cluster(3, seed=1, storage_factory=storage)
    assert calls == [("n1", False), ("n2", False), ("n3", False)]
    before = c.nodes["n2"].storage
    c.restart("n2")
    assert calls[-1] == ("n2", True) and c.nodes["n2"].storage is before
