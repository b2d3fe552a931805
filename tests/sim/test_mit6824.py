"""MIT 6.824 (6.5840) Raft lab tests, ported to the deterministic simulator.

Each test is named after its origin (``test_6824_<Name>`` for ``Test<Name>2X``) and keeps
its scenario. What differs, and why:

- Time is simulated: a tick is 10 ms and the election timeout 100-200 ms, so the lab's
  ``RaftElectionTimeout`` (1 s) is kept as the "long enough" wait, and the loops that
  run for many seconds in the lab run fewer iterations here.
- A new leader appends a no-op entry (§8 of the paper), so commands do not land at
  indexes 1, 2, 3...; tests check that indexes increase instead of their exact values.
- ``crash`` keeps what the server fsync'd (its MemoryStorage) and loses the rest, like
  the lab's persister; snapshots are taken by the simulated state machine every
  ``snapshot_every`` applied entries.
"""

from __future__ import annotations

import random

import pytest

from distsync.raft import MessageType, Role
from distsync.testing.sim import Cluster, FaultConfig

MT = MessageType
ELECTION_TIMEOUT = 1000.0  # ms: the lab's RaftElectionTimeout, "surely enough" for an election
UNRELIABLE = FaultConfig(drop=0.1, min_delay=0.5, max_delay=27.0)
LONG_REORDER = FaultConfig(drop=0.1, min_delay=0.5, max_delay=300.0)


class Tester:
    """The lab's ``config``: connect/disconnect/crash/start, one(), checkOneLeader()..."""

    __test__ = False  # not a test class

    def __init__(self, n: int, seed: int = 1, reliable: bool = True, **kw: object) -> None:
        self.c = Cluster(n, seed, **kw)  # type: ignore[arg-type]
        self.n = n
        self.ids = self.c.ids
        self.rng = random.Random(seed)
        if not reliable:
            self.c.faults = FaultConfig(UNRELIABLE.drop, UNRELIABLE.min_delay, UNRELIABLE.max_delay)

    # -- lab API --
    def connected(self, nid: str) -> bool:
        return nid not in self.c.disconnected and self.c.nodes[nid].alive

    def disconnect(self, nid: str) -> None:
        self.c.disconnect(nid)

    def connect(self, nid: str) -> None:
        self.c.connect(nid)

    def crash1(self, nid: str) -> None:
        self.c.disconnect(nid)
        self.c.crash(nid)

    def start1(self, nid: str) -> None:
        self.c.crash(nid)
        self.c.start(nid)

    def sleep(self, ms: float) -> None:
        self.c.run_for(ms)

    def start(self, nid: str, cmd: bytes) -> tuple[int, int, bool]:
        """The lab's rf.Start(cmd): (index, term, is_leader)."""
        node = self.c.nodes[nid]
        if not node.alive:
            return -1, -1, False
        r = self.c.propose(cmd, nid)
        if r is None:
            return -1, node.raft.term, False
        return r[1], r[2], True

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        return self.c.n_applied(index)

    def check_one_leader(self) -> str:
        for _ in range(10):
            self.sleep(self.rng.uniform(450, 550))
            leaders: dict[int, list[str]] = {}
            for nid in self.ids:
                if self.connected(nid) and self.c.nodes[nid].raft.role == Role.LEADER:
                    leaders.setdefault(self.c.nodes[nid].raft.term, []).append(nid)
            for term, ls in leaders.items():
                assert len(ls) <= 1, f"term {term} has {len(ls)} leaders"
            if leaders:
                return leaders[max(leaders)][0]
        raise AssertionError("expected one leader, got none")

    def check_terms(self) -> int:
        terms = {self.c.nodes[i].raft.term for i in self.ids if self.connected(i)}
        assert len(terms) == 1, f"servers disagree on term: {terms}"
        return terms.pop()

    def check_no_leader(self) -> None:
        for nid in self.ids:
            if self.connected(nid):
                assert self.c.nodes[nid].raft.role != Role.LEADER, f"{nid} leads"

    def one(self, cmd: bytes, expected: int, retry: bool) -> int:
        """Submit ``cmd`` until some leader takes it and ``expected`` servers apply it."""
        t0 = self.c.now
        k = 0
        while self.c.now - t0 < 10_000:
            index = -1
            for _ in range(self.n):
                k = (k + 1) % self.n
                nid = self.ids[k]
                if self.connected(nid):
                    i, _, ok = self.start(nid, cmd)
                    if ok:
                        index = i
                        break
            if index != -1:
                t1 = self.c.now
                while self.c.now - t1 < 2000:
                    nd, got = self.n_committed(index)
                    if nd > 0 and nd >= expected and got == cmd:
                        return index
                    self.sleep(20)
                assert retry, f"one({cmd!r}) failed to reach agreement"
            else:
                self.sleep(50)
        raise AssertionError(f"one({cmd!r}) failed to reach agreement")

    def rand_cmd(self) -> bytes:
        return b"%d" % self.rng.getrandbits(48)


def nth(ids: list[str], nid: str, k: int) -> str:
    """The lab's (i + k) % n on server ids."""
    return ids[(ids.index(nid) + k) % len(ids)]


# ==== 2A: leader election ========================================================================


def test_6824_InitialElection() -> None:
    t = Tester(3)
    t.check_one_leader()
    t.sleep(50)
    term1 = t.check_terms()
    assert term1 >= 1
    # No failures: the leader and term must stay put.
    t.sleep(2 * ELECTION_TIMEOUT)
    assert t.check_terms() == term1
    t.check_one_leader()


def test_6824_ReElection() -> None:
    t = Tester(3)
    leader1 = t.check_one_leader()
    t.disconnect(leader1)
    t.check_one_leader()  # a new leader once the old one is gone
    t.connect(leader1)  # the old leader rejoins: must not disturb the new one
    leader2 = t.check_one_leader()
    t.disconnect(leader2)
    t.disconnect(nth(t.ids, leader2, 1))
    t.sleep(2 * ELECTION_TIMEOUT)
    t.check_no_leader()  # no quorum, no leader
    t.connect(nth(t.ids, leader2, 1))
    t.check_one_leader()
    t.connect(leader2)
    t.check_one_leader()


def test_6824_ManyElections() -> None:
    t = Tester(7)
    t.check_one_leader()
    for _ in range(10):
        out = t.rng.sample(t.ids, 3)
        for nid in out:
            t.disconnect(nid)
        t.check_one_leader()  # four of seven can still elect
        for nid in out:
            t.connect(nid)
    t.check_one_leader()


# ==== 2B: log replication ========================================================================


def test_6824_BasicAgree() -> None:
    t = Tester(3)
    last = 0
    for k in range(1, 4):
        cmd = b"%d" % (k * 100)
        index = t.one(cmd, 3, False)
        assert index > last  # (the lab expects index == k; our leaders add no-ops)
        last = index


def test_6824_RPCBytes() -> None:
    """Each command is sent to each follower once, not once per heartbeat or retry."""
    t = Tester(3)
    t.one(b"99", 3, False)
    before = t.c.bytes_sent
    sent = 0
    for _ in range(10):
        cmd = bytes(t.rng.getrandbits(8) for _ in range(5000))
        t.one(cmd, 3, False)
        sent += len(cmd)
    got = t.c.bytes_sent - before
    assert got <= sent * 2 + 50_000, f"too many bytes sent: {got} for {sent} x 2 followers"


def test_6824_FollowerFailure() -> None:
    t = Tester(3)
    t.one(b"101", 3, False)
    leader1 = t.check_one_leader()
    t.disconnect(nth(t.ids, leader1, 1))
    # The leader and the remaining follower still agree.
    t.one(b"102", 2, False)
    t.sleep(ELECTION_TIMEOUT)
    t.one(b"103", 2, False)
    leader2 = t.check_one_leader()
    t.disconnect(nth(t.ids, leader2, 1))
    t.disconnect(nth(t.ids, leader2, 2))
    index, _, ok = t.start(leader2, b"104")
    assert ok
    t.sleep(2 * ELECTION_TIMEOUT)
    assert t.n_committed(index)[0] == 0  # a lone leader commits nothing


def test_6824_LeaderFailure() -> None:
    t = Tester(3)
    t.one(b"101", 3, False)
    leader1 = t.check_one_leader()
    t.disconnect(leader1)
    t.one(b"102", 2, False)
    t.sleep(ELECTION_TIMEOUT)
    t.one(b"103", 2, False)
    leader2 = t.check_one_leader()
    t.disconnect(leader2)
    indexes = [t.start(nid, b"104")[0] for nid in t.ids]
    t.sleep(2 * ELECTION_TIMEOUT)
    for index in indexes:
        if index > 0:
            assert t.n_committed(index)[0] == 0 or t.n_committed(index)[1] != b"104"


def test_6824_FailAgree() -> None:
    t = Tester(3)
    t.one(b"101", 3, False)
    leader = t.check_one_leader()
    t.disconnect(nth(t.ids, leader, 1))
    for cmd in (b"102", b"103"):
        t.one(cmd, 2, False)
    t.sleep(ELECTION_TIMEOUT)
    for cmd in (b"104", b"105"):
        t.one(cmd, 2, False)
    t.connect(nth(t.ids, leader, 1))  # it must catch up
    t.one(b"106", 3, True)
    t.sleep(ELECTION_TIMEOUT)
    t.one(b"107", 3, True)


def test_6824_FailNoAgree() -> None:
    t = Tester(5)
    t.one(b"10", 5, False)
    leader = t.check_one_leader()
    for k in (1, 2, 3):
        t.disconnect(nth(t.ids, leader, k))
    index, _, ok = t.start(leader, b"20")
    assert ok
    t.sleep(2 * ELECTION_TIMEOUT)
    assert t.n_committed(index)[0] == 0  # 2 of 5 cannot commit
    for k in (1, 2, 3):
        t.connect(nth(t.ids, leader, k))
    leader2 = t.check_one_leader()
    index2, _, ok2 = t.start(leader2, b"30")
    assert ok2 and index2 >= index  # the uncommitted 20 may be overwritten or kept
    t.one(b"1000", 5, True)


def test_6824_ConcurrentStarts() -> None:
    t = Tester(3)
    for _attempt in range(5):
        leader = t.check_one_leader()
        _, term, ok = t.start(leader, b"1")
        if not ok:
            continue
        # Five commands started together in one term all commit, at distinct indexes.
        started = [t.start(leader, b"%d" % (100 + k)) for k in range(5)]
        if not all(ok and tm == term for _, tm, ok in started):
            continue
        t.sleep(ELECTION_TIMEOUT)
        if any(t.c.nodes[i].raft.term != term for i in t.ids):
            continue  # the term moved on: try again, as the lab does
        got = {t.n_committed(i)[1] for i, _, _ in started}
        assert got == {b"%d" % (100 + k) for k in range(5)}
        return
    raise AssertionError("term changed too often")


def test_6824_Rejoin() -> None:
    t = Tester(3)
    t.one(b"101", 3, True)
    leader1 = t.check_one_leader()
    t.disconnect(leader1)
    for cmd in (b"102", b"103", b"104"):  # the partitioned leader takes commands it cannot commit
        t.start(leader1, cmd)
    t.one(b"103", 2, True)
    leader2 = t.check_one_leader()
    t.disconnect(leader2)
    t.connect(leader1)  # the old leader rejoins with its uncommitted tail
    t.one(b"104", 2, True)
    t.connect(leader2)
    t.one(b"105", 3, True)


def test_6824_Backup() -> None:
    """A leader brings back followers with long divergent logs quickly (fast backtracking)."""
    t = Tester(5)
    t.one(t.rand_cmd(), 5, True)
    leader1 = t.check_one_leader()
    for k in (2, 3, 4):
        t.disconnect(nth(t.ids, leader1, k))
    for _ in range(50):  # commands that will not commit
        t.start(leader1, t.rand_cmd())
    t.sleep(ELECTION_TIMEOUT / 2)
    t.disconnect(leader1)
    t.disconnect(nth(t.ids, leader1, 1))
    for k in (2, 3, 4):
        t.connect(nth(t.ids, leader1, k))
    for _ in range(50):  # these commit in the other partition
        t.one(t.rand_cmd(), 3, True)
    leader2 = t.check_one_leader()
    other = next(nth(t.ids, leader1, k) for k in (2, 3, 4) if nth(t.ids, leader1, k) != leader2)
    t.disconnect(other)
    for _ in range(50):  # more commands that will not commit
        t.start(leader2, t.rand_cmd())
    t.sleep(ELECTION_TIMEOUT / 2)
    for nid in t.ids:
        t.disconnect(nid)
    for nid in (leader1, nth(t.ids, leader1, 1), other):
        t.connect(nid)
    for _ in range(50):
        t.one(t.rand_cmd(), 3, True)
    for nid in t.ids:
        t.connect(nid)
    t.one(t.rand_cmd(), 5, True)


def test_6824_Count() -> None:
    """Message counts stay small: an election, agreement, and an idle second."""
    t = Tester(3)
    # The lab allows 30 RPCs for the first election (pre-votes, votes, the no-op append).
    assert t.c.run_until(lambda: t.c.leader() is not None, 5000, poll_ms=0.5)
    assert t.c.messages_sent <= 30, f"{t.c.messages_sent} messages to elect a leader"
    t.check_one_leader()
    # Agreement: per command, an append to each follower and its answer, plus the append
    # that carries the new commit index (with its answer).
    counted: list[int] = []
    orig = t.c._send

    def counting(m):  # type: ignore[no-untyped-def]
        if m.type not in (MT.HEARTBEAT, MT.HEARTBEAT_RESPONSE):
            counted.append(1)
        orig(m)

    t.c._send = counting  # type: ignore[method-assign]
    iters = 10
    for k in range(iters):
        t.one(b"%d" % (k + 1), 3, False)
    assert len(counted) <= (iters + 3) * 4 * 2, f"{len(counted)} messages for {iters} commands"
    # Idle: only heartbeats, one round per heartbeat interval.
    counted.clear()
    before = t.c.messages_sent
    t.sleep(1000)
    beats = t.c.messages_sent - before
    assert not counted, "an idle leader sent more than heartbeats"
    ticks = 1000 / 10
    assert beats <= ticks * 2 * 2 + 10


# ==== 2C: persistence ============================================================================


def test_6824_Persist1() -> None:
    t = Tester(3)
    t.one(b"11", 3, True)
    for nid in t.ids:  # crash and restart all
        t.start1(nid)
    for nid in t.ids:
        t.disconnect(nid)
        t.connect(nid)
    t.one(b"12", 3, True)
    leader1 = t.check_one_leader()
    t.disconnect(leader1)
    t.start1(leader1)
    t.connect(leader1)
    t.one(b"13", 3, True)
    leader2 = t.check_one_leader()
    t.disconnect(leader2)
    t.one(b"14", 2, True)
    t.start1(leader2)
    t.connect(leader2)
    # Wait for leader2 to join before killing i3.
    t.one(b"15", 3, True)
    i3 = nth(t.ids, t.check_one_leader(), 1)
    t.disconnect(i3)
    t.one(b"15", 2, True)
    t.start1(i3)
    t.connect(i3)
    t.one(b"16", 3, True)


def test_6824_Persist2() -> None:
    t = Tester(5)
    index = 1
    for _ in range(5):
        t.one(b"%d" % (10 + index), 5, True)
        index += 1
        leader1 = t.check_one_leader()
        t.disconnect(nth(t.ids, leader1, 1))
        t.disconnect(nth(t.ids, leader1, 2))
        t.one(b"%d" % (10 + index), 3, True)
        index += 1
        for k in (0, 3, 4):
            t.disconnect(nth(t.ids, leader1, k))
        for k in (1, 2):
            t.start1(nth(t.ids, leader1, k))
            t.connect(nth(t.ids, leader1, k))
        t.sleep(ELECTION_TIMEOUT)
        t.start1(nth(t.ids, leader1, 3))
        t.connect(nth(t.ids, leader1, 3))
        t.one(b"%d" % (10 + index), 3, True)
        index += 1
        t.connect(nth(t.ids, leader1, 4))
        t.connect(leader1)
    t.one(b"1000", 5, True)


def test_6824_Persist3() -> None:
    """Partitioned leader and one peer crash, then the leader restarts: it must have
    persisted what it acknowledged."""
    t = Tester(3)
    t.one(b"101", 3, True)
    leader = t.check_one_leader()
    t.disconnect(nth(t.ids, leader, 2))
    t.one(b"102", 2, True)
    t.crash1(leader)
    t.crash1(nth(t.ids, leader, 1))
    t.connect(nth(t.ids, leader, 2))
    t.start1(leader)
    t.connect(leader)
    t.one(b"103", 2, True)
    t.start1(nth(t.ids, leader, 1))
    t.connect(nth(t.ids, leader, 1))
    t.one(b"104", 3, True)


def _figure8(t: Tester, iters: int, unreliable: bool) -> None:
    t.one(t.rand_cmd(), 1, True)
    nup = t.n
    for it in range(iters):
        if unreliable and it == iters // 5:
            t.c.faults = FaultConfig(
                LONG_REORDER.drop, LONG_REORDER.min_delay, LONG_REORDER.max_delay
            )
        leader = None
        for nid in t.ids:
            if t.c.nodes[nid].alive and t.start(nid, t.rand_cmd())[2]:
                leader = nid
        if t.rng.random() < 0.1:
            t.sleep(t.rng.uniform(0, ELECTION_TIMEOUT / 2))
        else:
            t.sleep(t.rng.uniform(0, 13))
        if unreliable:
            if leader is not None and t.rng.random() < 0.5:
                t.disconnect(leader)
                nup -= 1
            if nup < 3:
                s = t.rng.choice(t.ids)
                if s in t.c.disconnected:
                    t.connect(s)
                    nup += 1
        else:
            if leader is not None:
                t.crash1(leader)
                nup -= 1
            if nup < 3:
                s = t.rng.choice(t.ids)
                if not t.c.nodes[s].alive:
                    t.start1(s)
                    t.connect(s)
                    nup += 1
    t.c.faults = FaultConfig()
    for nid in t.ids:
        if not t.c.nodes[nid].alive:
            t.start1(nid)
        t.connect(nid)
    t.one(t.rand_cmd(), t.n, True)


@pytest.mark.parametrize("seed", range(3))
def test_6824_Figure8(seed: int) -> None:
    """Figure 8 of the paper: leaders crash with entries on a minority, and a later leader
    must not commit an old-term entry by counting."""
    _figure8(Tester(5, seed=seed), 1000, unreliable=False)


def test_6824_UnreliableAgree() -> None:
    t = Tester(5, reliable=False)
    for it in range(1, 20):
        for j in range(4):
            t.one(b"%d" % (100 * it + j), 1, True)
        t.one(b"%d" % it, 1, True)
    t.c.faults = FaultConfig()
    t.one(b"100", 5, True)


@pytest.mark.parametrize("seed", range(2))
def test_6824_Figure8Unreliable(seed: int) -> None:
    _figure8(Tester(5, seed=seed, reliable=False), 1000, unreliable=True)


def _churn(t: Tester, unreliable: bool) -> None:
    """Clients submit commands while servers crash, restart and get cut off; every
    command a client saw committed must be in the final log."""
    committed: list[tuple[int, bytes]] = []
    stop = [False]

    def client(cid: int) -> None:
        if stop[0]:
            return
        cmd = b"c%d-%d" % (cid, t.rng.getrandbits(32))
        nid = t.rng.choice(t.ids)
        index, _, ok = t.start(nid, cmd)
        if ok:
            t.c.call_at(t.rng.uniform(50, 300), lambda: check(index, cmd))
        t.c.call_at(t.rng.uniform(1, 30), lambda: client(cid))

    def check(index: int, cmd: bytes) -> None:
        nd, got = t.n_committed(index)
        if nd > 0 and got == cmd:
            committed.append((index, cmd))

    for cid in range(3):
        t.c.call_at(0, lambda cid=cid: client(cid))  # type: ignore[misc]
    # The lab: 20 rounds of 0.7 election timeouts with these odds. Our elections are
    # faster than the lab's, so run more, shorter rounds and hit the leader more often.
    for _ in range(60):
        if t.rng.random() < 0.2:
            t.disconnect(t.rng.choice(t.ids))
        if t.rng.random() < 0.5:
            i = t.rng.choice(t.ids)
            if not t.c.nodes[i].alive:
                t.start1(i)
            t.connect(i)
        if t.rng.random() < 0.2:
            i = t.rng.choice(t.ids)
            if t.c.nodes[i].alive:
                t.crash1(i)
        if t.rng.random() < 0.2:
            ld = t.c.leader()
            if ld is not None:
                t.crash1(ld.id)
        t.sleep(t.rng.uniform(50, 300))
    stop[0] = True
    t.c.faults = FaultConfig()
    for nid in t.ids:
        if not t.c.nodes[nid].alive:
            t.start1(nid)
        t.connect(nid)
    last = t.one(t.rand_cmd(), t.n, True)
    assert committed, "no command committed during churn"
    for index, cmd in committed:
        assert index < last
        assert t.n_committed(index) == (t.n, cmd), f"committed {cmd!r} at {index} was lost"


def test_6824_ReliableChurn() -> None:
    _churn(Tester(5, seed=3), unreliable=False)


def test_6824_UnreliableChurn() -> None:
    _churn(Tester(5, seed=4, reliable=False), unreliable=True)


# ==== 2D: snapshots ==============================================================================

SNAPSHOT_INTERVAL = 10


def _snapcommon(disconnect: bool, reliable: bool, crash: bool, seed: int = 1) -> None:
    t = Tester(3, seed=seed, reliable=reliable, snapshot_every=SNAPSHOT_INTERVAL)
    t.one(t.rand_cmd(), t.n, True)
    leader1 = t.check_one_leader()
    for i in range(20):
        victim, sender = nth(t.ids, leader1, 1), leader1
        if i % 3 == 1:
            sender, victim = victim, sender
        if disconnect:
            t.disconnect(victim)
            t.one(t.rand_cmd(), t.n - 1, True)
        if crash:
            t.crash1(victim)
            t.one(t.rand_cmd(), t.n - 1, True)
        # Enough commands for the victim to fall behind the leader's snapshot.
        for _ in range(SNAPSHOT_INTERVAL // 2 + t.rng.randrange(SNAPSHOT_INTERVAL)):
            t.start(sender, t.rand_cmd())
        t.one(t.rand_cmd(), t.n - 1 if (disconnect or crash) else t.n, True)
        # The log stays short: snapshots compact it.
        for nid in t.ids:
            st = t.c.nodes[nid].storage
            assert st.last_index() - st.first_index() + 1 <= 4 * SNAPSHOT_INTERVAL + 30
        if disconnect:
            t.connect(victim)  # it catches up, by InstallSnapshot if needed
            t.one(t.rand_cmd(), t.n, True)
            leader1 = t.check_one_leader()
        if crash:
            t.start1(victim)
            t.connect(victim)
            t.one(t.rand_cmd(), t.n, True)
            leader1 = t.check_one_leader()


def test_6824_SnapshotBasic() -> None:
    _snapcommon(False, True, False)


def test_6824_SnapshotInstall() -> None:
    _snapcommon(True, True, False)
    # (InstallSnapshot is exercised: see test_6824_SnapshotInstall_sends_snapshots)


def test_6824_SnapshotInstall_sends_snapshots() -> None:
    t = Tester(3, snapshot_every=SNAPSHOT_INTERVAL)
    t.one(b"1", 3, True)
    leader = t.check_one_leader()
    victim = nth(t.ids, leader, 1)
    t.disconnect(victim)
    for k in range(3 * SNAPSHOT_INTERVAL):
        t.one(b"%d" % (k + 2), 2, True)
    sent: list[int] = []
    orig = t.c._send

    def spy(m):  # type: ignore[no-untyped-def]
        if m.type is MT.INSTALL_SNAPSHOT:
            sent.append(m.snapshot.index)
        orig(m)

    t.c._send = spy  # type: ignore[method-assign]
    t.connect(victim)
    t.one(b"last", 3, True)
    assert sent, "the lagging follower should have been sent a snapshot"
    assert t.c.nodes[victim].storage.snapshot().index >= sent[0]


def test_6824_SnapshotInstallUnreliable() -> None:
    _snapcommon(True, False, False)


def test_6824_SnapshotInstallCrash() -> None:
    _snapcommon(False, True, True)


def test_6824_SnapshotInstallUnCrash() -> None:
    _snapcommon(False, False, True)


def test_6824_SnapshotAllCrash() -> None:
    """Crash and restart every server, each with a snapshot: they come back from it."""
    t = Tester(3, snapshot_every=SNAPSHOT_INTERVAL)
    t.one(t.rand_cmd(), t.n, True)
    for _ in range(5):
        for _ in range(SNAPSHOT_INTERVAL // 2 + t.rng.randrange(SNAPSHOT_INTERVAL)):
            t.one(t.rand_cmd(), t.n, True)
        index1 = t.one(t.rand_cmd(), t.n, True)
        for nid in t.ids:
            t.crash1(nid)
        for nid in t.ids:
            t.start1(nid)
            t.connect(nid)
        index2 = t.one(t.rand_cmd(), t.n, True)
        assert index2 > index1


def test_6824_SnapshotInit() -> None:
    """A server restarted from a snapshot serves it, and can restart from it again."""
    t = Tester(3, snapshot_every=SNAPSHOT_INTERVAL)
    t.one(t.rand_cmd(), t.n, True)
    for _ in range(SNAPSHOT_INTERVAL + 1):
        t.one(t.rand_cmd(), t.n, True)
    for _round in range(2):
        for nid in t.ids:
            t.crash1(nid)
        for nid in t.ids:
            t.start1(nid)
            t.connect(nid)
            assert t.c.nodes[nid].storage.snapshot().index > 0
        t.one(t.rand_cmd(), t.n, True)
