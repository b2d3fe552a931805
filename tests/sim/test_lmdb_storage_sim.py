"""Seeded cluster simulations with every node on an LmdbStorage (real LMDB files).

The simulator builds each node's storage with the cluster's storage factory;
:class:`LmdbStorages` is one that opens an LmdbStorage when a node first starts and,
when a node restarts after a crash, closes it and reopens it from disk: a real restart of
the storage on top of the simulator's own crash model (which has already rolled back
what was not fsync'd). Storage semantics are the only difference, so a seed must replay
*exactly* as it does on MemoryStorage: same events, same messages, same leaders, same
applied digests. Any divergence in what the storage returns (an entry, a term, a
recovered hard state) changes the run, so this compares the two storages over thousands
of Raft-generated operations with crashes, snapshots and log conflicts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from distsync.raft.lmdb_storage import LmdbStorage
from distsync.raft.storage import MemoryStorage
from distsync.testing import sim

SEEDS = range(0, 24)


def open_storage(path: Path, log_format: str = "segments") -> LmdbStorage:
    # Small segments: rollovers happen within a run, and opening one is quick.
    return LmdbStorage(path, sync=False, log_format=log_format, segment_bytes=1 << 16)


class LmdbStorages:
    """A :data:`sim.StorageFactory`: each node on LmdbStorage(sync=False) under ``root``."""

    def __init__(self, root: Path, log_format: str = "segments") -> None:
        self.root = root
        self.log_format = log_format
        self.opened: list[LmdbStorage] = []

    def __call__(self, nid: str, previous: sim.SimStorage | None) -> sim.SimStorage:
        if previous is not None:
            # A restart after a crash: the process really died, only what is on disk
            # comes back.
            assert isinstance(previous, LmdbStorage)
            previous.close()
        s = open_storage(self.root / nid, self.log_format)
        if previous is None:
            assert s.last_index() == 0, "a node must start on LMDB from scratch"
        self.opened.append(s)
        return s

    def close(self) -> None:
        for s in self.opened:
            s.close()


def fingerprint(c: sim.Cluster) -> tuple[object, ...]:
    return (c.events, c.messages_sent, c.now, c.digests, c.leaders, c.log_entries)


@pytest.mark.parametrize(
    ("seed", "log_format"),
    [(seed, "segments") for seed in SEEDS] + [(seed, "lmdb") for seed in SEEDS[:6]],
)
def test_seed_replays_identically_on_lmdb(seed: int, log_format: str) -> None:
    on_memory = sim.run_seed(seed)
    root = Path(tempfile.mkdtemp(prefix="sim-lmdb-"))
    storages = LmdbStorages(root, log_format)
    try:
        on_lmdb = sim.run_seed(seed, storage_factory=storages)
        for nid, node in on_lmdb.nodes.items():
            assert isinstance(node.storage, LmdbStorage), nid
        assert fingerprint(on_lmdb) == fingerprint(on_memory)
        # And each node's storage, reopened from disk, holds what its peer on memory holds.
        for nid, node in on_lmdb.nodes.items():
            mine, ref = node.storage, on_memory.nodes[nid].storage
            assert isinstance(mine, LmdbStorage) and isinstance(ref, MemoryStorage)
            mine.close()
            with open_storage(root / nid, log_format) as again:
                assert again.snapshot() == ref.snapshot(), nid
                assert (again.first_index(), again.last_index()) == (
                    ref.first_index(),
                    ref.last_index(),
                ), nid
                lo, hi = ref.first_index(), ref.last_index() + 1
                assert again.entries(lo, hi) == ref.entries(lo, hi), nid
                assert again.hard_state == ref.hard_state, nid
    finally:
        storages.close()
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
            net.storages[nid] = open_storage(root / nid)
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
                net.storages[nid] = open_storage(root / nid)
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
            with open_storage(tmp_path / nid) as again:
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
