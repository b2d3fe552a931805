"""The lock table on every replica of a simulated Raft cluster, under faults (DESIGN §10).

The simulator (:mod:`distsync.testing.sim`) checks Raft on a digest of the applied
entries; :class:`LockCluster` gives it a state machine factory, so each node also feeds
its committed entries to its own :class:`~distsync.lock.LockTable`, puts the table in its
Raft snapshots, and rebuilds it from the snapshot on restart or InstallSnapshot. After every applied entry it checks:

- the table's own invariants (no two exclusive holders, no exclusive with shared, every
  waiter's wait-for edges as specified, no cycle in the graph);
- fencing tokens: each grant's token is the index of its entry and exceeds every earlier
  token of the resource on that replica;
- FIFO: the waiters an entry grants are the head of the queue as it was before the entry
  (less those the same entry removed), and a newcomer is granted only with nobody queued;
- every replica applying index ``i`` ends in the same table (same snapshot bytes) and
  returned the same effects (so the same grants, refusals and deadlock cycles).

The workload drives clients from the leader's view: sessions kept alive (or abandoned),
acquires in both modes with and without timeouts, releases (some by the wrong session or
with a stale token), cancels, closes; the leader extends sessions when elected and
proposes expiries from its clock, offset per node (clocks of different hosts disagree).
"""

from __future__ import annotations

import os
import random
import zlib
from collections import Counter
from typing import Any

import pytest

from distsync.lock import (
    Acquire,
    Cancel,
    Cancelled,
    CloseSession,
    ExpiryScheduler,
    Grant,
    KeepAlive,
    LeaderClock,
    LockTable,
    Mode,
    OpenSession,
    Release,
    TimedOut,
    encode_command,
    on_elected,
)
from distsync.testing.sim import Cluster, FaultConfig, SimulationError

SEEDS = int(os.environ.get("LOCK_SIM_SEEDS", "60"))
CLIENTS = [f"c{i}" for i in range(5)]
RESOURCES = ["r0", "r1", "r2"]
TTL = 0.4  # s: a few election timeouts (100-200 ms) -- sessions survive a leader change
ELECTION_S = 0.2


def replay(seed: int) -> str:
    return f"LOCK_SIM_SEED={seed} PYTHONPATH=src python -m pytest tests/sim/test_lock_sim.py"


class LockCluster(Cluster):
    """A simulated cluster whose nodes apply their committed entries to lock tables,
    through the simulator's state-machine hook (a :class:`ReplicaTable` per node)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before Cluster.__init__, which starts the nodes.
        self.tables: dict[str, LockTable] = {}
        #: Per node: resource -> highest token granted (since its table was rebuilt).
        self.last_token: dict[str, dict[str, int]] = {}
        #: index -> (crc of the table after it, crc of its effects): the first replica's.
        self.table_at: dict[int, tuple[int, int]] = {}
        self.counts: Counter[str] = Counter()
        super().__init__(*args, state_machine_factory=lambda nid: ReplicaTable(self, nid), **kwargs)

    # ---- what ReplicaTable calls -----------------------------------------------------------

    def _load(self, nid: str, data: bytes | None) -> None:
        t = LockTable.restore(data) if data is not None else LockTable()
        t.check_invariants()
        self.tables[nid] = t
        self.last_token[nid] = {r: t.status(r).fencing_token for r in t.resources()}

    def _apply_one(self, nid: str, index: int, data: bytes) -> None:
        t = self.tables[nid]
        queues = {r: t.status(r).waiter_sessions for r in t.resources()}
        effects = t.apply_entry(index, data)
        try:
            t.check_invariants()
        except AssertionError as exc:
            self.fail(f"{nid} lock table at {index}: {exc}")
        removed = {
            (e.resource, e.session_id) for e in effects if isinstance(e, Cancelled | TimedOut)
        }
        granted: dict[str, list[Grant]] = {}
        for e in effects:
            self.counts[type(e).__name__] += 1
            if isinstance(e, Grant) and e.token != index:
                # A retried acquire answered with its existing grant, nothing new.
                if t.status(e.resource).fencing_token < e.token:
                    self.fail(f"{nid} at {index}: a repeated grant of {e.resource} is not held")
                continue
            if isinstance(e, Grant):
                granted.setdefault(e.resource, []).append(e)
        last = self.last_token[nid]
        for res, gs in granted.items():
            if len(gs) > 1 and any(g.mode is Mode.EXCLUSIVE for g in gs):
                self.fail(f"{nid} at {index}: one entry granted {res} exclusively and more")
            for g in gs:
                if g.token <= last.get(res, 0):
                    self.fail(f"{nid} at {index}: token {g.token} of {res} after {last.get(res)}")
            last[res] = index
            before = [s for s in queues.get(res, ()) if (res, s) not in removed]
            from_queue = [g.session_id for g in gs if g.session_id in before]
            if from_queue != before[: len(from_queue)]:
                self.fail(f"{nid} at {index}: FIFO broken on {res}: {from_queue} of {before}")
            if len(from_queue) < len(gs) and before:
                self.fail(f"{nid} at {index}: a newcomer overtook the queue of {res}: {before}")
        mine = (zlib.crc32(t.snapshot()), zlib.crc32(repr(effects).encode()))
        first = self.table_at.setdefault(index, mine)
        if first != mine:
            what = "table" if first[0] != mine[0] else "effects"
            self.fail(f"{nid} at {index}: its {what} differ from another replica's")


class ReplicaTable:
    """One node's :class:`sim.StateMachine`: its lock table, kept in the cluster's
    ``tables`` so the workload and the checks see the current one."""

    def __init__(self, c: LockCluster, nid: str) -> None:
        self.c, self.nid = c, nid
        c._load(nid, None)  # a (re)started node: empty until its snapshot is restored

    def apply(self, index: int, data: bytes) -> None:
        self.c._apply_one(self.nid, index, data)

    def snapshot(self) -> bytes:
        return self.c.tables[self.nid].snapshot()

    def restore(self, data: bytes) -> None:
        self.c._load(self.nid, data)


class Workload:
    """Clients and the leader's timekeeping, driven from the simulator's events."""

    def __init__(self, c: LockCluster, rng: random.Random) -> None:
        self.c = c
        self.rng = rng
        #: Each node's clock is off by its own skew: the table must not care.
        self.skew = {nid: rng.uniform(0, 1000.0) for nid in c.ids}
        self.leader_term: dict[str, int] = {}
        self.clocks: dict[str, LeaderClock] = {}
        self.sched: dict[str, ExpiryScheduler] = {}
        self.incarnation = dict.fromkeys(CLIENTS, 0)
        self.dead: set[str] = set()  # clients that stopped sending keepalives
        self.rid = 0
        #: Set when the faulty phase ends: clients and faults stop, the leader's ticks go on.
        self.stopped = False

    def local(self, nid: str) -> float:
        return self.c.now / 1000.0 + self.skew[nid]

    def leader_now(self) -> tuple[str, LockTable, float] | None:
        """The leader, its table and its time; a newly elected leader first proposes the
        session extension (and gets its clock)."""
        ld = self.c.leader()
        if ld is None:
            return None
        nid, term = ld.id, ld.raft.term
        table = self.c.tables[nid]
        if self.leader_term.get(nid) != term:
            self.leader_term[nid] = term
            clock, extend = on_elected(table, self.local(nid), ELECTION_S)
            self.clocks[nid] = clock
            self.sched[nid] = ExpiryScheduler(retry=0.05)
            self.c.propose(encode_command(extend), nid)
        return nid, table, self.clocks[nid].now(self.local(nid))

    def tick(self) -> None:
        """The leader's periodic expiry check (every tick of a real node)."""
        got = self.leader_now()
        if got is not None:
            nid, table, now = got
            for cmd in self.sched[nid].poll(table, now):
                self.c.propose(encode_command(cmd), nid)
        self.c.call_at(10.0, self.tick)

    def client(self) -> None:
        """One random client request, built from the leader's view of the table."""
        if self.stopped:
            return
        self.c.call_at(self.rng.uniform(1.0, 8.0), self.client)
        got = self.leader_now()
        if got is None:
            return
        nid, t, now = got
        rng = self.rng
        cid = rng.choice(CLIENTS)
        sid = f"s-{cid}-{self.incarnation[cid]}"
        info = t.session(sid)
        r = rng.random()
        if info is None:
            if cid in self.dead:
                self.dead.discard(cid)
                self.incarnation[cid] += 1  # a restarted client opens a new session
                sid = f"s-{cid}-{self.incarnation[cid]}"
            cmd: Any = OpenSession(sid, cid, TTL, now)
        elif r < 0.25:
            cmd = KeepAlive(sid, cid, now)
        elif r < 0.68:
            self.rid += 1
            timeout = rng.choice((None, None, 0.0, 0.05, 0.3))
            mode = rng.choice((Mode.SHARED, Mode.EXCLUSIVE))
            cmd = Acquire(rng.choice(RESOURCES), mode, cid, sid, self.rid, now, timeout)
        elif r < 0.85 and info.held:
            res = rng.choice(info.held)
            token = t.status(res).fencing_token if rng.random() < 0.9 else 1
            if rng.random() < 0.05:  # someone else's session
                other = rng.choice(CLIENTS)
                cmd = Release(res, other, f"s-{other}-{self.incarnation[other]}", None)
            else:
                cmd = Release(res, cid, sid, token if rng.random() < 0.5 else None)
        elif r < 0.9 and info.waiting is not None:
            cmd = Cancel(info.waiting, cid, sid, self.rid)  # often not its request id
        elif r < 0.91:
            cmd = CloseSession(sid, cid)
        elif r < 0.95 and cid not in self.dead:
            self.dead.add(cid)  # the client crashes: no more keepalives, expiry frees it
            return
        else:
            cmd = KeepAlive(sid, cid, now)
        if cid in self.dead and isinstance(cmd, KeepAlive | Acquire | Release | Cancel):
            return
        self.c.propose(encode_command(cmd), nid)


def run_lock_seed(seed: int, duration_ms: float = 3000.0) -> LockCluster:
    rng = random.Random(f"lock-{seed}")
    c = LockCluster(
        rng.choice((3, 3, 5)),
        seed,
        uneven_ticks=True,
        snapshot_every=rng.choice((0, 10, 40)),
        parallel_writes=rng.random() < 0.5,
        replay=replay(seed),
    )
    c.crash_in_ready = rng.choice((0.0, 0.002))
    c.faults = FaultConfig(
        drop=rng.choice((0.0, 0.02, 0.1)),
        duplicate=rng.choice((0.0, 0.05)),
        max_delay=rng.choice((2.0, 8.0)),
    )
    w = Workload(c, rng)
    ids = c.ids

    def fault() -> None:
        if w.stopped:
            return
        x = rng.random()
        if x < 0.2:
            order = ids[:]
            rng.shuffle(order)
            cut = rng.randrange(1, len(order))
            c.partition(order[:cut], order[cut:])
        elif x < 0.5:
            c.heal()
        elif x < 0.6:
            live = c.live_ids()
            ld = c.leader()
            if live:
                c.crash(ld.id if ld is not None and rng.random() < 0.5 else rng.choice(live))
        else:
            for nid in ids:
                if not c.nodes[nid].alive:
                    c.start(nid)
                    break
        c.call_at(rng.uniform(60.0, 300.0), fault)

    c.call_at(0.0, w.tick)
    c.call_at(rng.uniform(0.0, 20.0), w.client)
    c.call_at(rng.uniform(100.0, 300.0), fault)
    c.run_for(duration_ms)
    # Heal and settle: every replica catches up through the same checked states.
    w.stopped = True
    c.heal()
    c.faults = FaultConfig()
    c.crash_in_ready = 0.0
    for nid in ids:
        c.start(nid)

    def caught_up() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        return all(c.nodes[n].sm_index == ld.sm_index for n in ids)

    c.run_for(300.0)
    if not c.run_until(caught_up, 3000.0):
        c.fail("liveness: the replicas did not catch up after healing")
    return c


def _seeds() -> list[int]:
    if os.environ.get("LOCK_SIM_SEED"):
        return [int(os.environ["LOCK_SIM_SEED"])]
    return list(range(SEEDS))


def test_lock_table_on_every_replica_under_faults() -> None:
    totals: Counter[str] = Counter()
    failures = []
    for seed in _seeds():
        try:
            c = run_lock_seed(seed)
        except SimulationError as e:
            failures.append(str(e))
            continue
        totals.update(c.counts)
        # After healing, every replica holds the same table at the same index.
        tables = [c.tables[n] for n in c.live_ids()]
        if len({t.applied_index for t in tables}) == 1:
            assert all(t == tables[0] for t in tables), f"seed {seed}: replicas differ"
    assert not failures, "\n\n".join(failures[:3]) + f"\n\n{len(failures)} seed(s) failed"
    if len(_seeds()) >= 10:
        # The run must have exercised the rules it checks (each is an effect type).
        for kind in ("Grant", "Queued", "Released", "Deadlock", "TimedOut", "Cancelled"):
            assert totals[kind] > 0, f"no {kind} in {len(_seeds())} seeds: {totals}"
        assert totals["SessionExpired"] > 0 and totals["Rejected"] > 0, totals


def test_a_replica_that_diverges_is_caught() -> None:
    """The check can fail: one replica applies an entry the others did not."""
    c = LockCluster(3, seed=3, replay=replay(3))
    assert c.run_until(lambda: c.leader() is not None, 2000)
    ld = c.leader()
    assert ld is not None
    r = c.propose(encode_command(OpenSession("s", "c", 5.0, 0.0)))
    assert r is not None
    c.run_for(100)
    other = next(n for n in c.ids if n != ld.id)
    c.tables[other].apply(r[1] + 100, KeepAlive("s", "c", 3.0))  # its own, unlogged change
    c.table_at[r[1] + 101] = (0, 0)  # and another replica's record for the next index
    with pytest.raises(SimulationError, match="differ from another replica"):
        c._apply_one(other, r[1] + 101, encode_command(CloseSession("s", "c")))


def test_a_seed_replays_exactly() -> None:
    a, b = run_lock_seed(5, 600.0), run_lock_seed(5, 600.0)
    assert a.table_at == b.table_at and a.counts == b.counts
