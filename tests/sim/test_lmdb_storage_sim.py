"""Seeded cluster simulations with every node on an LmdbStorage (real LMDB files).

The simulator keeps each node's storage in ``SimNode.storage`` and builds clusters through
``distsync.testing.sim.Cluster``; :class:`LmdbCluster` swaps in an LmdbStorage when a node
first starts, and makes a crash a real restart of the storage (close, reopen from disk)
on top of the simulator's own crash model. Storage semantics are the only difference, so
a seed must replay *exactly* as it does on MemoryStorage: same events, same messages,
same leaders, same applied digests. Any divergence in what the storage returns (an entry,
a term, a recovered hard state) changes the run, so this compares the two storages over
thousands of Raft-generated operations with crashes, snapshots and log conflicts.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from distsync.raft.lmdb_storage import LmdbStorage
from distsync.raft.storage import MemoryStorage
from distsync.testing import sim

SEEDS = range(0, 24)


class LmdbCluster(sim.Cluster):
    """A Cluster whose nodes persist to LmdbStorage(sync=False) under ``root``."""

    root: Path = Path(".")
    _dirs = itertools.count()

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.data_dir = self.root / f"cluster{next(self._dirs)}"
        self.opened: list[LmdbStorage] = []
        super().__init__(*a, **kw)

    def _open(self, nid: str) -> LmdbStorage:
        s = LmdbStorage(self.data_dir / nid, sync=False)
        self.opened.append(s)
        return s

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        if isinstance(node.storage, MemoryStorage):
            assert node.storage.last_index() == 0, "a node must start on LMDB from scratch"
            node.storage = self._open(nid)
        super().start(nid)

    def crash(self, nid: str) -> None:
        node = self.nodes[nid]
        was_alive = node.alive
        super().crash(nid)  # the simulator's model: what was not fsync'd is rolled back
        if was_alive:
            # ... then the process really dies: only what is on disk comes back.
            st = node.storage
            assert isinstance(st, LmdbStorage)
            st.close()
            node.storage = self._open(nid)

    def close(self) -> None:
        for s in self.opened:
            s.close()


def fingerprint(c: sim.Cluster) -> tuple[object, ...]:
    return (c.events, c.messages_sent, c.now, c.digests, c.leaders, c.log_entries)


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_replays_identically_on_lmdb(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    on_memory = sim.run_seed(seed)
    root = Path(tempfile.mkdtemp(prefix="sim-lmdb-"))
    monkeypatch.setattr(LmdbCluster, "root", root)
    monkeypatch.setattr(sim, "Cluster", LmdbCluster)  # run_seed builds its cluster by name
    try:
        on_lmdb = sim.run_seed(seed)
        assert isinstance(on_lmdb, LmdbCluster)
        for nid, node in on_lmdb.nodes.items():
            assert isinstance(node.storage, LmdbStorage), nid
        assert fingerprint(on_lmdb) == fingerprint(on_memory)
        # And each node's storage, reopened from disk, holds what its peer on memory holds.
        for nid, node in on_lmdb.nodes.items():
            mine, ref = node.storage, on_memory.nodes[nid].storage
            assert isinstance(mine, LmdbStorage) and isinstance(ref, MemoryStorage)
            mine.close()
            with LmdbStorage(on_lmdb.data_dir / nid, sync=False) as again:
                assert again.snapshot() == ref.snapshot(), nid
                assert (again.first_index(), again.last_index()) == (
                    ref.first_index(),
                    ref.last_index(),
                ), nid
                lo, hi = ref.first_index(), ref.last_index() + 1
                assert again.entries(lo, hi) == ref.entries(lo, hi), nid
                assert again.hard_state == ref.hard_state, nid
        on_lmdb.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ==== the driver's path: one save() per Ready ===============================================


class SaveNetwork(sim.StepNetwork):
    """A StepNetwork whose nodes persist each Ready with one ``LmdbStorage.save`` (as the
    asyncio driver does), or with the three MemoryStorage writes for the reference run."""

    def _collect(self, nid: str) -> list[sim.Message]:
        core, st = self.cores[nid], self.storages[nid]
        out: list[sim.Message] = []
        while core.has_ready():
            rd = core.ready()
            if isinstance(st, LmdbStorage):
                st.save(rd.hard_state, rd.entries, rd.snapshot)
            else:
                if rd.snapshot is not None:
                    st.apply_snapshot(rd.snapshot)
                st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
            out.extend(rd.messages)
            for e in rd.committed_entries:
                self.applied[nid].append((e.index, e.term, e.data))
            self.read_states[nid].extend(rd.read_states)
            core.advance(rd)
        return out


def scenario(seed: int, root: Path | None) -> SaveNetwork:
    """Random elections, proposals, partitions, restarts and compactions on 3 nodes; with
    ``root``, every node stores to LmdbStorage and a restart reopens it from disk."""
    rng = __import__("random").Random(f"save-{seed}")
    net = SaveNetwork(3, seed, pre_vote=True, check_quorum=False)
    for nid in net.ids:
        if root is not None:
            net.storages[nid] = LmdbStorage(root / nid, sync=False)
        net.start(nid)  # in both runs: a start draws from the network's RNG
    for step in range(800):
        nid = rng.choice(net.ids)
        r = rng.random()
        if r < 0.35:
            ld = net.leader()
            if ld is not None:
                try:
                    net.propose(ld, b"s%d.%d" % (seed, step))
                except Exception:  # noqa: BLE001 - a stale leader may refuse; same in both
                    pass
        elif r < 0.65:
            net.tick(nid, rng.randint(1, 12))
        elif r < 0.72:
            net.isolate(nid)
        elif r < 0.8:
            net.recover()
        elif r < 0.9:
            st = net.storages[nid]
            if isinstance(st, LmdbStorage):
                st.close()
                assert root is not None
                net.storages[nid] = LmdbStorage(root / nid, sync=False)
            net.start(nid)
        else:
            st, core = net.storages[nid], net.cores[nid]
            upto = min(core.applied_index, st.last_index())
            if upto > st.snapshot().index and upto >= st.first_index():
                st.create_snapshot(upto, core.conf_state(), b"sm%d" % upto)
                st.compact(upto)
    return net


@pytest.mark.parametrize("seed", range(16))
def test_save_path_replays_identically_on_lmdb(seed: int, tmp_path: Path) -> None:
    ref = scenario(seed, None)
    net = scenario(seed, tmp_path)
    try:
        assert [(m.type, m.sender, m.to, m.term, m.index) for m in net.delivered] == [
            (m.type, m.sender, m.to, m.term, m.index) for m in ref.delivered
        ]
        assert net.applied == ref.applied
        assert max(len(a) for a in net.applied.values()) > 20  # the scenario did commit
        for nid in net.ids:
            mine, theirs = net.storages[nid], ref.storages[nid]
            assert isinstance(mine, LmdbStorage)
            mine.close()
            with LmdbStorage(tmp_path / nid, sync=False) as again:
                lo, hi = theirs.first_index(), theirs.last_index() + 1
                assert (again.hard_state, again.snapshot()) == (
                    theirs.initial_state()[0],
                    theirs.snapshot(),
                )
                assert again.entries(lo, hi) == theirs.entries(lo, hi)
    finally:
        for st in net.storages.values():
            if isinstance(st, LmdbStorage):
                st.close()
