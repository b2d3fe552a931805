"""The Raft paper's rules, one test each (ported from etcd-io/raft's raft_paper_test.go).

Each test quotes the rule it checks: §5.1-§5.4.2 of "In Search of an Understandable
Consensus Algorithm" (extended version), plus pre-vote (thesis §9.6) and check-quorum
(thesis §6.2). These run the core with pre-vote and check-quorum off unless the test is
about them, as the paper describes plain Raft.
"""

from __future__ import annotations

import pytest

from distsync.raft import Entry, Message, MessageType, RaftCore, Role
from distsync.testing.sim import StepNetwork, drain, make_core

MT = MessageType
IDS = ("n1", "n2", "n3")
PLAIN = {"pre_vote": False, "check_quorum": False}


def core_in_role(role: Role, term: int = 1) -> RaftCore:
    """n1 of a 3-node cluster, in ``role`` at ``term``."""
    core, _ = make_core("n1", IDS, term=term - 1 if role != Role.FOLLOWER else term, **PLAIN)
    if role in (Role.CANDIDATE, Role.LEADER):
        core.campaign()
    if role == Role.LEADER:
        core.step(Message(MT.VOTE_RESPONSE, "n1", "n2", core.term))
    drain(core)
    assert core.role == role and core.term == term
    return core


def tick_all(net: StepNetwork, n: int) -> None:
    for _ in range(n):
        for i in net.ids:
            net.tick(i)


def pump(cores: dict[str, RaftCore], msgs: list[Message]) -> None:
    """Deliver messages among ``cores`` until quiet (others are dropped)."""
    while msgs:
        m = msgs.pop(0)
        if m.to in cores:
            cores[m.to].step(m)
            msgs.extend(drain(cores[m.to]))


# ---- §5.1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_paper_5_1_update_term_from_message(role: Role) -> None:
    """§5.1: "If one server's current term is smaller than the other's, then it updates
    its current term to the larger value. If a candidate or leader discovers that its term
    is out of date, it immediately reverts to follower state." """
    core = core_in_role(role)
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", 2))
    assert core.term == 2 and core.role == Role.FOLLOWER


def test_paper_5_1_reject_stale_term_message() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." (Our term is 2; an append of term 1 changes nothing.)"""
    core, _ = make_core("n1", IDS, term=2, **PLAIN)
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", 1, 0, 0, [Entry(1, 1)], 1))
    assert core.log.last_index() == 0 and core.commit_index == 0 and core.lead is None
    assert drain(core) == []


# ---- §5.2 ---------------------------------------------------------------------------------


def test_paper_5_2_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers." """
    core, _ = make_core("n1", IDS, **PLAIN)
    assert core.role == Role.FOLLOWER


def test_paper_5_2_leader_bcast_beat() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    core = core_in_role(Role.LEADER)
    for _ in range(core.heartbeat_timeout):
        core.tick()
    beats = [m for m in drain(core) if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in beats) == ["n2", "n3"]
    assert all(not m.entries and m.term == 1 for m in beats)


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE])
def test_paper_5_2_start_new_election_on_timeout(role: Role) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout, then it ... begins an election ... it increments its current term and
    transitions to candidate state. It then votes for itself and issues RequestVote RPCs in
    parallel to each of the other servers." A candidate that times out does the same."""
    core = core_in_role(role)
    term = core.term
    for _ in range(2 * core.election_timeout):
        core.tick()
    assert core.role == Role.CANDIDATE and core.term == term + 1 and core.vote == "n1"
    reqs = [m for m in drain(core) if m.type is MT.REQUEST_VOTE]
    assert sorted(m.to for m in reqs) == ["n2", "n3"]
    assert all(m.term == term + 1 for m in reqs)


@pytest.mark.parametrize(
    "size,votes,want",
    [
        (1, {}, Role.LEADER),
        (3, {"n2": True, "n3": True}, Role.LEADER),
        (3, {"n2": True}, Role.LEADER),
        (5, {"n2": True, "n3": True, "n4": True, "n5": True}, Role.LEADER),
        (5, {"n2": True, "n3": True, "n4": True}, Role.LEADER),
        (5, {"n2": True, "n3": True}, Role.LEADER),
        # return to follower state if it receives a majority of rejections
        (3, {"n2": False, "n3": False}, Role.FOLLOWER),
        (5, {"n2": False, "n3": False, "n4": False, "n5": False}, Role.FOLLOWER),
        (5, {"n2": True, "n3": False, "n4": False, "n5": False}, Role.FOLLOWER),
        # stay in candidate if it does not obtain the majority
        (3, {}, Role.CANDIDATE),
        (5, {"n2": True}, Role.CANDIDATE),
        (5, {"n2": False, "n3": False}, Role.CANDIDATE),
        (5, {}, Role.CANDIDATE),
    ],
)
def test_paper_5_2_leader_election_in_one_round_rpc(
    size: int, votes: dict[str, bool], want: Role
) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." ... "while waiting for votes, ... if
    it loses (a majority rejects) it returns to follower; else it stays candidate." """
    ids = tuple(f"n{i}" for i in range(1, size + 1))
    core, _ = make_core("n1", ids, **PLAIN)
    core.campaign()
    for voter, granted in votes.items():
        core.step(Message(MT.VOTE_RESPONSE, "n1", voter, 1, reject=not granted))
    assert core.role == want and core.term == 1


@pytest.mark.parametrize(
    "vote,candidate,reject",
    [(None, "n2", False), (None, "n3", False), ("n2", "n2", False), ("n3", "n3", False),
     ("n2", "n3", True), ("n3", "n2", True)],
)  # fmt: skip
def test_paper_5_2_follower_vote(vote: str | None, candidate: str, reject: bool) -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    core, _ = make_core("n1", IDS, term=1, vote=vote, **PLAIN)
    core.step(Message(MT.REQUEST_VOTE, "n1", candidate, 1))
    msgs = drain(core)
    assert [(m.type, m.to, m.reject) for m in msgs] == [(MT.VOTE_RESPONSE, candidate, reject)]


@pytest.mark.parametrize("term", [1, 2])
def test_paper_5_2_candidate_fallback(term: int) -> None:
    """§5.2: "If the leader's term (included in its RPC) is at least as large as the
    candidate's current term, then the candidate recognizes the leader as legitimate and
    returns to follower state." """
    core = core_in_role(Role.CANDIDATE)
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", term))
    assert core.role == Role.FOLLOWER and core.term == term and core.lead == "n2"


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE])
def test_paper_5_2_election_timeout_randomized(role: Role) -> None:
    """§5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed
    interval" (here [et, 2et))."""
    timeouts = set()
    for seed in range(60):
        core, _ = make_core("n1", IDS, seed=seed, term=0, **PLAIN)
        if role == Role.CANDIDATE:
            core.campaign()
        term = core.term
        ticks = 0
        while core.term == term:
            core.tick()
            ticks += 1
        timeouts.add(ticks)
    et = 10
    assert timeouts <= set(range(et, 2 * et)) and len(timeouts) >= et // 2


def test_paper_5_2_followers_election_timeout_nonconflict() -> None:
    """§5.2: "In most cases only a single server (follower or candidate) will time out." """
    conflicts, rounds = 0, 500
    for seed in range(rounds):
        net = StepNetwork(5, seed=seed, **PLAIN)
        timed_out = 0
        while not timed_out:
            for i in net.ids:
                net[i].tick()
                if net[i].role == Role.CANDIDATE:
                    timed_out += 1
        conflicts += timed_out > 1
    assert conflicts / rounds <= 0.3


# ---- §5.3 ---------------------------------------------------------------------------------


def test_paper_5_3_leader_start_replication() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry."
    Also: the RPC carries the index and term of the entry that precedes the new ones."""
    core = core_in_role(Role.LEADER)
    li = core.log.last_index()
    for p in ("n2", "n3"):  # the followers accept the no-op: replication state known
        core.step(Message(MT.APPEND_RESPONSE, "n1", p, 1, index=li))
    drain(core)
    core.propose(b"some data")
    assert core.log.last_index() == li + 1
    apps = [m for m in drain(core) if m.type is MT.APPEND_ENTRIES and m.entries]
    assert sorted(m.to for m in apps) == ["n2", "n3"]
    for m in apps:
        assert m.entries[-1].data == b"some data" and m.entries[-1].index == li + 1
        assert m.entries[0].index == m.index + 1 and core.log.term(m.index) == m.log_term


def test_paper_5_3_leader_commit_entry() -> None:
    """§5.3: "When the entry has been safely replicated, the leader applies the entry to its
    state machine and returns the result ... The leader keeps track of the highest index it
    knows to be committed, and it includes that index in future AppendEntries RPCs."""
    net = StepNetwork(3, **PLAIN)
    net.campaign("n1")
    i = net.propose("n1", b"x")
    assert net["n1"].commit_index == i
    assert (i, 1, b"x") in net.applied["n1"]
    commits = [m.commit for m in net.delivered if m.type is MT.APPEND_ENTRIES and m.to == "n2"]
    assert commits[-1] == i


@pytest.mark.parametrize(
    "size,acks,committed",
    [(1, set(), True), (3, set(), False), (3, {"n2"}, True), (3, {"n2", "n3"}, True),
     (5, set(), False), (5, {"n2"}, False), (5, {"n2", "n3"}, True)],
)  # fmt: skip
def test_paper_5_3_leader_acknowledge_commit(size: int, acks: set[str], committed: bool) -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers." """
    ids = tuple(f"n{i}" for i in range(1, size + 1))
    core, _ = make_core("n1", ids, **PLAIN)
    core.campaign()
    for p in ids[1:]:
        core.step(Message(MT.VOTE_RESPONSE, "n1", p, 1))
    drain(core)
    li = core.propose(b"x")
    drain(core)
    for p in acks:
        core.step(Message(MT.APPEND_RESPONSE, "n1", p, 1, index=li))
    assert (core.commit_index >= li) == committed


@pytest.mark.parametrize("prev", [[], [2], [1, 1], [1, 2]])
def test_paper_5_3_leader_commit_preceding_entries(prev: list[int]) -> None:
    """§5.3: "This also commits all preceding entries in the leader's log, including
    entries created by previous leaders." """
    core, _ = make_core("n1", IDS, log_terms=prev, term=2, **PLAIN)
    core.campaign()
    core.step(Message(MT.VOTE_RESPONSE, "n1", "n2", 3))
    li = core.propose(b"x")
    drain(core)
    core.step(Message(MT.APPEND_RESPONSE, "n1", "n2", 3, index=li))
    got = [(e.index, e.term) for e in core.ready().committed_entries]
    assert got == [(i, t) for i, t in enumerate(prev, 1)] + [(len(prev) + 1, 3), (li, 3)]


def test_paper_5_3_follower_commit_entry() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry to
    its local state machine (in log order)." """
    core, _ = make_core("n1", IDS, term=1, **PLAIN)
    ents = [Entry(1, 1, b"a"), Entry(1, 2, b"b")]
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", 1, 0, 0, ents, 1))
    assert core.commit_index == 1
    assert [e.data for e in core.ready().committed_entries] == [b"a"]


@pytest.mark.parametrize(
    "term,index,reject",
    [(0, 0, False), (1, 1, False), (2, 2, False),  # match
     (1, 2, True), (3, 3, True)],  # term mismatch / index beyond the log
)  # fmt: skip
def test_paper_5_3_follower_check_append(term: int, index: int, reject: bool) -> None:
    """§5.3: "When sending an AppendEntries RPC, the leader includes the index and term of
    the entry in its log that immediately precedes the new entries. If the follower does
    not find an entry in its log with the same index and term, then it refuses the new
    entries." """
    core, _ = make_core("n1", IDS, log_terms=[1, 2], term=2, **PLAIN)
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", 2, term, index, [], 0))
    (resp,) = drain(core)
    assert resp.type is MT.APPEND_RESPONSE and resp.reject == reject


@pytest.mark.parametrize(
    "index,term,new,want",
    [
        (2, 2, [(3, 3)], [1, 2, 3]),
        (1, 1, [(2, 3), (3, 4)], [1, 3, 4]),
        (0, 0, [(1, 1)], [1, 2]),
        (0, 0, [(1, 3)], [3]),
    ],
)
def test_paper_5_3_follower_append_entries(
    index: int, term: int, new: list[tuple[int, int]], want: list[int]
) -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it; append any new entries not
    already in the log." """
    core, st = make_core("n1", IDS, log_terms=[1, 2], term=2, **PLAIN)
    ents = [Entry(t, i, b"") for i, t in new]
    core.step(Message(MT.APPEND_ENTRIES, "n1", "n2", 2, term, index, ents, 0))
    drain(core, st)
    assert [core.log.term(i) for i in range(1, core.log.last_index() + 1)] == want


LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "follower_log",
    [
        [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing entries
        [1, 1, 1, 4],  # (b)
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) extra entries
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d)
        [1, 1, 1, 4, 4, 4, 4],  # (e) missing and extra
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f)
    ],
    ids="abcdef",
)
def test_paper_5_3_leader_sync_follower_log(follower_log: list[int]) -> None:
    """§5.3 (Figure 7): "the leader handles inconsistencies by forcing the followers' logs
    to duplicate its own ... the leader must find the latest log entry where the two logs
    agree, delete any entries in the follower's log after that point, and send the
    follower all of the leader's entries after that point." """
    lead, _ = make_core("n1", IDS, log_terms=LEADER_LOG, term=8, **PLAIN)
    fol, fst = make_core("n2", IDS, log_terms=follower_log, term=7, **PLAIN)
    lead.campaign()
    # n3 (not in the exchange) grants the vote the follower may refuse.
    lead.step(Message(MT.VOTE_RESPONSE, "n1", "n3", lead.term))
    assert lead.role == Role.LEADER
    cores = {"n1": lead, "n2": fol}
    pump(cores, drain(lead))
    lead.propose(b"")
    pump(cores, drain(lead))
    want = [lead.log.term(i) for i in range(1, lead.log.last_index() + 1)]
    assert [fol.log.term(i) for i in range(1, fol.log.last_index() + 1)] == want
    assert fol.log.committed == lead.log.committed


# ---- §5.4 ---------------------------------------------------------------------------------


def test_paper_5_4_1_vote_request_carries_last_log_position() -> None:
    """§5.4.1: "The RequestVote RPC ... includes information about the candidate's log" (the
    index and term of its last entry)."""
    core, _ = make_core("n1", IDS, log_terms=[1, 2], term=2, **PLAIN)
    core.campaign()
    reqs = drain(core)
    assert {(m.to, m.index, m.log_term, m.term) for m in reqs} == {
        ("n2", 2, 2, 3),
        ("n3", 2, 2, 3),
    }


@pytest.mark.parametrize(
    "log,last_index,last_term,reject",
    [
        # same last term: the longer (or equal) log is up to date
        ([1], 1, 1, False), ([1], 2, 1, False), ([1, 1], 1, 1, True),
        # candidate's last term higher: up to date regardless of length
        ([1], 1, 2, False), ([1], 2, 2, False), ([1, 1], 1, 2, False),
        # candidate's last term lower: not up to date
        ([2], 1, 1, True), ([2], 2, 1, True), ([2, 2], 1, 1, True),
    ],
)  # fmt: skip
def test_paper_5_4_1_voter(log: list[int], last_index: int, last_term: int, reject: bool) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate ... If the logs have last entries with different terms, then the log with the
    later term is more up-to-date. If the logs end with the same term, then whichever log is
    longer is more up-to-date." """
    core, _ = make_core("n1", IDS, log_terms=log, term=2, **PLAIN)
    core.step(Message(MT.REQUEST_VOTE, "n1", "n2", 3, last_term, last_index))
    (resp,) = drain(core)
    assert resp.type is MT.VOTE_RESPONSE and resp.reject == reject


@pytest.mark.parametrize("acked,committed", [(1, 0), (2, 0), (3, 3)])
def test_paper_5_4_2_leader_only_commits_log_from_current_term(acked: int, committed: int) -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting replicas." """
    core, _ = make_core("n1", IDS, log_terms=[1, 2], term=2, **PLAIN)
    core.campaign()
    core.step(Message(MT.VOTE_RESPONSE, "n1", "n2", 3))
    assert core.role == Role.LEADER and core.log.last_index() == 3  # + the no-op of term 3
    drain(core)
    core.step(Message(MT.APPEND_RESPONSE, "n1", "n2", 3, index=acked))
    assert core.commit_index == committed


# ---- pre-vote and check-quorum ----------------------------------------------------------------


def test_prevote_partitioned_node_rejoins_without_disrupting_the_leader() -> None:
    """Thesis §9.6 (pre-vote): a server partitioned away does not raise its term, because
    its pre-vote rounds never win; when it rejoins, the leader keeps leading."""
    net = StepNetwork(3, pre_vote=True, check_quorum=True)
    net.campaign("n1")
    net.isolate("n3")
    net.tick("n3", 100)
    assert net["n3"].term == 1 and net["n3"].role == Role.PRE_CANDIDATE
    net.recover()
    tick_all(net, 30)
    assert net["n1"].role == Role.LEADER and net["n1"].term == 1
    assert net["n3"].role == Role.FOLLOWER and net["n3"].lead == "n1"


def test_without_prevote_a_rejoining_node_disrupts() -> None:
    """The problem pre-vote solves (§9.6), shown with plain Raft: the partitioned node's
    term grew, and its first message after rejoining deposes the leader."""
    net = StepNetwork(3, pre_vote=False, check_quorum=False)
    net.campaign("n1")
    net.isolate("n3")
    net.tick("n3", 100)
    assert net["n3"].term > 1
    net.recover()
    net.tick("n3", 30)
    assert net["n1"].term > 1  # the old leader was forced out of term 1


def test_check_quorum_followers_ignore_vote_requests_within_the_lease() -> None:
    """Thesis §6.2 (check-quorum): "if a server receives a RequestVote request within the
    minimum election timeout of hearing from a current leader, it does not update its term
    or grant its vote." """
    net = StepNetwork(3, pre_vote=False, check_quorum=True)
    net.campaign("n1")
    net.tick("n1")
    net["n2"].step(Message(MT.REQUEST_VOTE, "n2", "n3", 5, 1, 99))
    assert net["n2"].term == 1 and net["n2"].vote == "n1" and drain(net["n2"]) == []


def test_check_quorum_frees_a_stuck_candidate() -> None:
    """Check-quorum without pre-vote (etcd TestFreeStuckCandidateWithCheckQuorum): a node
    whose term grew in a partition gets its vote requests ignored by the lease; the leader
    learns the higher term from its answer to a heartbeat and steps down, so the cluster
    moves to the higher term instead of leaving the node stuck."""
    net = StepNetwork(3, pre_vote=False, check_quorum=True)
    net.campaign("n1")
    net.isolate("n3")
    net.tick("n3", 50)
    stuck = net["n3"].term
    assert stuck > 1 and net["n3"].role == Role.CANDIDATE
    net.recover()
    net.tick("n1")  # heartbeat -> n3 answers with its higher term
    assert net["n1"].role == Role.FOLLOWER and net["n1"].term == stuck
    for _ in range(60):
        for i in net.ids:
            net.tick(i)
        if net.leader():
            break
    ld = net.leader()
    assert ld is not None and net[ld].term > stuck


def test_check_quorum_minority_leader_steps_down_and_majority_elects() -> None:
    """Thesis §6.2: a leader that cannot reach a quorum steps down within an election
    timeout; the majority side elects a new leader and commits."""
    net = StepNetwork(3, pre_vote=True, check_quorum=True)
    net.campaign("n1")
    net.isolate("n1")
    tick_all(net, 40)
    assert net["n1"].role != Role.LEADER
    ld = net.leader()
    assert ld in ("n2", "n3")
    i = net.propose(ld, b"x")
    assert net[ld].commit_index >= i
