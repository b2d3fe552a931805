"""Focused tests of the Raft core, its log and MemoryStorage (no simulated clock)."""

from __future__ import annotations

import random

import pytest

from distsync.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    Role,
    SnapshotOutOfDateError,
    UnavailableError,
)
from distsync.raft.log import RaftLog
from distsync.raft.progress import ProgressState
from distsync.raft.storage import limit_size
from distsync.testing.sim import StepNetwork, drain, make_core

MT = MessageType
IDS = ("n1", "n2", "n3")
PLAIN = {"pre_vote": False, "check_quorum": False}


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, i, b"d%d" % i) for i, t in enumerate(terms, start)]


# ---- MemoryStorage -------------------------------------------------------------------------


def test_storage_append_truncates_a_divergent_tail() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2))
    st.append([Entry(3, 2, b"x")])
    assert st.last_index() == 2 and st.term(2) == 3 and st.term(1) == 1


def test_storage_append_with_a_gap_is_refused() -> None:
    st = MemoryStorage()
    st.append(ents(1))
    with pytest.raises(UnavailableError):
        st.append([Entry(1, 3)])


def test_storage_compact_keeps_the_compaction_point_term() -> None:
    st = MemoryStorage()
    st.append(ents(1, 2, 3, 4))
    st.create_snapshot(3, ConfState(IDS), b"s")
    st.compact(3)
    assert st.first_index() == 4 and st.last_index() == 4
    assert st.term(3) == 3  # the dummy entry answers for the snapshot point
    with pytest.raises(CompactedError):
        st.term(2)
    with pytest.raises(CompactedError):
        st.entries(3, 5)
    with pytest.raises(CompactedError):
        st.compact(2)
    assert [e.index for e in st.entries(4, 5)] == [4]


def test_storage_entries_respect_max_bytes_but_return_at_least_one() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, b"x" * 10) for i in range(1, 6)])
    assert len(st.entries(1, 6, max_bytes=25)) == 2
    assert len(st.entries(1, 6, max_bytes=1)) == 1
    with pytest.raises(UnavailableError):
        st.entries(1, 7)
    assert limit_size([], 5) == []


def test_storage_apply_snapshot_replaces_the_log_and_refuses_old_ones() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1))
    from distsync.raft import Snapshot

    st.apply_snapshot(Snapshot(10, 3, ConfState(IDS), b"s"))
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 3)
    assert st.initial_state()[1].voters == IDS
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(Snapshot(5, 2))


# ---- RaftLog -------------------------------------------------------------------------------


def test_log_duplicate_append_does_not_truncate_matching_entries() -> None:
    """A stale or duplicated append_entries must not cut off entries a later one added."""
    st = MemoryStorage()
    log = RaftLog(st)
    assert log.maybe_append(0, 0, 0, ents(1, 1, 1)) == 3
    # A duplicate of an earlier, shorter append: matches, so nothing is truncated.
    assert log.maybe_append(0, 0, 0, ents(1)) == 1
    assert log.last_index() == 3
    # A conflicting entry truncates from the conflict only.
    assert log.maybe_append(1, 1, 0, [Entry(1, 2, b"d2"), Entry(2, 3, b"new")]) == 3
    assert [log.term(i) for i in (1, 2, 3)] == [1, 1, 2]


def test_log_refuses_to_overwrite_committed_entries() -> None:
    log = RaftLog(MemoryStorage())
    log.maybe_append(0, 0, 2, ents(1, 1))
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.maybe_append(0, 0, 2, ents(2, 2))


def test_log_commit_only_to_what_the_append_proved() -> None:
    """A follower commits min(leader commit, last new index): its tail past the append may
    still be overwritten."""
    log = RaftLog(MemoryStorage())
    log.maybe_append(0, 0, 0, ents(1, 1, 1))
    log.maybe_append(0, 0, 3, ents(1))
    assert log.committed == 1


def test_log_slice_limits_bytes_across_storage_and_unstable_entries() -> None:
    """Entries 1-6 persisted, 7-10 not yet: every slice, with any byte limit, is the
    limit_size prefix of the same entries read in one piece."""
    st = MemoryStorage()
    log = RaftLog(st)
    es = [Entry(1, i, b"x" * (i % 4 + 1)) for i in range(1, 11)]
    log.append(es)
    st.append(es[:6])
    log.stable_to(6, 1)
    assert log.unstable.offset == 7
    for lo in range(1, 11):
        for hi in range(lo, 12):
            for mb in (None, 0, 1, 3, 5, 8, 12, 100):
                want = limit_size(es[lo - 1 : hi - 1], mb)
                assert log.slice(lo, hi, mb) == want, (lo, hi, mb)


def test_unstable_stable_to_ignores_a_replaced_entry() -> None:
    log = RaftLog(MemoryStorage())
    log.append(ents(1, 1))
    log.append([Entry(2, 2)])  # replaces index 2 before the first batch was persisted
    log.stable_to(2, 1)  # the persisted batch's entry 2 was of term 1: not this one
    assert [e.term for e in log.unstable.entries] == [1, 2]


# ---- elections -----------------------------------------------------------------------------


def test_single_node_becomes_leader_and_commits_its_noop_once_persisted() -> None:
    core, st = make_core("n1", ("n1",))
    core.campaign()
    assert core.role == Role.LEADER and core.term == 1
    rd = core.ready()
    assert rd.soft_state is not None and rd.soft_state.role == Role.LEADER
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP]
    # The leader's own copy counts only once persisted: nothing is committed yet, and the
    # new term and vote must be durable before anything is sent.
    assert rd.committed_entries == [] and rd.persist_first and rd.must_sync
    st.append(rd.entries)
    core.advance(rd)
    rd = core.ready()
    assert [e.kind for e in rd.committed_entries] == [EntryKind.NOOP]
    assert rd.hard_state == HardState(1, "n1", 1)
    core.advance(rd)
    # A later proposal: term and vote are durable, so it may be sent before persisting.
    core.propose(b"x")
    rd = core.ready()
    assert not rd.persist_first and rd.must_sync and rd.committed_entries == []


def test_leader_counts_its_own_entry_only_after_advance() -> None:
    """Thesis §10.2.1: the leader's appends may go out before its fsync; its own copy
    must then not count towards a quorum until persisted."""
    net = leader_of_three()
    ld = net["n1"]
    i = ld.propose(b"x")
    rd = ld.ready()
    assert not rd.persist_first
    # Sent before the leader persisted anything; only n2 answers (n3's answer is lost).
    to_n2 = [m for m in rd.messages if m.to == "n2"]
    for m in to_n2:
        net["n2"].step(m)
    for m in drain(net["n2"], net.storages["n2"]):
        ld.step(m)
    assert ld.commit_index < i  # n2 + an unpersisted leader is not a durable quorum
    net.storages["n1"].append(rd.entries)
    ld.advance(rd)
    assert ld.commit_index >= i  # now it is


@pytest.mark.parametrize("seed", range(5))
def test_randomized_election_timeout_is_in_et_to_2et(seed: int) -> None:
    core, _ = make_core("n1", IDS, seed=seed, election_tick=10)
    seen = set()
    for _ in range(200):
        core._become_follower(core.term + 1, None)
        seen.add(core.randomized_election_timeout)
    assert seen <= set(range(10, 20)) and len(seen) > 5


def test_vote_is_in_the_same_ready_as_the_response_and_must_sync() -> None:
    """Ready contract: the vote's hard state is persisted before its vote_response goes."""
    core, _ = make_core("n2", IDS, **PLAIN)
    core.step(drain_vote_request("n1", 1))
    rd = core.ready()
    assert rd.hard_state == HardState(1, "n1", 0)
    assert rd.must_sync
    assert [(m.type, m.reject) for m in rd.messages] == [(MT.VOTE_RESPONSE, False)]
    with pytest.raises(RuntimeError):
        core.ready()
    core.advance(rd)
    assert not core.has_ready()


def drain_vote_request(sender: str, term: int, li: int = 0, lt: int = 0):  # type: ignore[no-untyped-def]
    from distsync.raft import Message

    return Message(MT.REQUEST_VOTE, "n2", sender, term, lt, li)


def test_pre_vote_does_not_change_term_or_vote() -> None:
    net = StepNetwork(3, pre_vote=True, check_quorum=False)
    net.ignore(MT.PRE_VOTE_RESPONSE)  # the pre-candidate never wins
    net.campaign("n1")
    assert net["n1"].role == Role.PRE_CANDIDATE
    assert [net[i].term for i in net.ids] == [0, 0, 0]
    assert all(net[i].vote is None for i in net.ids)
    net.recover()
    net.campaign("n1")
    assert net["n1"].role == Role.LEADER and net["n1"].term == 1


def test_follower_propose_raises_not_leader_with_hint() -> None:
    net = StepNetwork(3, **PLAIN)
    net.campaign("n1")
    with pytest.raises(NotLeaderError) as ei:
        net["n2"].propose(b"x")
    assert ei.value.leader == "n1"


# ---- replication ---------------------------------------------------------------------------


def leader_of_three(**cfg: object) -> StepNetwork:
    net = StepNetwork(3, **{**PLAIN, **cfg})
    net.campaign("n1")
    assert net["n1"].role == Role.LEADER
    return net


def test_proposals_between_readies_travel_in_one_append() -> None:
    net = leader_of_three()
    ld = net["n1"]
    for k in range(10):
        ld.propose(b"p%d" % k)
    rd = ld.ready()
    apps = [m for m in rd.messages if m.type is MT.APPEND_ENTRIES]
    assert sorted(m.to for m in apps) == ["n2", "n3"]
    assert all(len(m.entries) == 10 for m in apps)
    ld.advance(rd)


def test_propose_many_appends_in_order_and_commits_like_single_proposals() -> None:
    net = leader_of_three()
    ld = net["n1"]
    before = ld.log.last_index()
    first = ld.propose_many([b"a", b"b", b"c"])
    assert first == before + 1 and ld.log.last_index() == before + 3
    assert ld.propose(b"d") == before + 4
    net.flush("n1")
    for nid in net.ids:
        tail = [(i, d) for i, _, d in net.applied[nid] if i > before]
        assert tail == [
            (before + 1, b"a"),
            (before + 2, b"b"),
            (before + 3, b"c"),
            (before + 4, b"d"),
        ]
    with pytest.raises(NotLeaderError):
        net["n2"].propose_many([b"x"])
    with pytest.raises(ValueError, match="at least one"):
        ld.propose_many([])
    assert ld.log.last_index() == before + 4


def test_batching_limits_entries_and_bytes_per_append() -> None:
    net = leader_of_three(max_entries_per_msg=3, max_inflight_msgs=100)
    net.ignore(MT.APPEND_RESPONSE)
    for _ in range(7):
        net["n1"].propose(b"x" * 10)
    net.flush("n1")
    sizes = [len(m.entries) for m in net.delivered if m.type is MT.APPEND_ENTRIES and m.to == "n2"]
    assert sizes[-3:] == [3, 3, 1]
    net2 = leader_of_three(max_bytes_per_msg=25)
    net2.ignore(MT.APPEND_RESPONSE)
    for _ in range(4):
        net2["n1"].propose(b"x" * 10)
    net2.flush("n1")
    sizes = [len(m.entries) for m in net2.delivered if m.type is MT.APPEND_ENTRIES and m.to == "n2"]
    assert sizes[-2:] == [2, 2]


def test_flow_control_caps_appends_in_flight_and_pipelines_below_the_cap() -> None:
    net = leader_of_three(max_inflight_msgs=2, max_entries_per_msg=1)
    ld = net["n1"]
    net.ignore(MT.APPEND_RESPONSE)  # answers never come back
    before = len(net.delivered)
    for k in range(5):
        ld.propose(b"p%d" % k)
        net.flush("n1")
    to_n2 = [m for m in net.delivered[before:] if m.type is MT.APPEND_ENTRIES and m.to == "n2"]
    # Replicate state: two appends went out without waiting (pipelining), then it paused.
    assert ld.progress["n2"].state == ProgressState.REPLICATE
    assert len(to_n2) == 2 and ld.progress["n2"].is_paused()
    net.recover()
    net.tick("n1")  # heartbeat answers unstick the pipeline
    for _ in range(10):
        net.tick("n1")
    assert net["n2"].log.last_index() == ld.log.last_index()


def test_reject_moves_follower_to_probe_and_backtracks_with_the_hint() -> None:
    """Fast backtracking: one rejection skips the follower's whole divergent term."""
    # The follower has a long divergent tail of term 2; the leader's log is term 1 then 3.
    leader, _ = make_core("n1", IDS, log_terms=[1] * 3 + [3] * 10, term=3, **PLAIN)
    follower, _ = make_core("n2", IDS, log_terms=[1] * 3 + [2] * 20, term=2, **PLAIN)
    leader._become_candidate()
    leader._become_leader()
    drain(leader)
    pr = leader.progress["n2"]
    from distsync.raft import Message

    # The leader probes at its last index; the follower rejects (term 2 there, not 3).
    follower.step(Message(MT.APPEND_ENTRIES, "n2", "n1", leader.term, 3, 13, [], 0))
    rej = drain(follower)[-1]
    assert rej.reject and rej.log_term == 2 and rej.reject_hint == 4
    pr.probe_sent = True
    pr.next = 14
    leader.step(rej)
    # The leader has no term-2 entry: it jumps straight to the follower's first term-2 index.
    assert pr.state == ProgressState.PROBE and pr.next == 4
    app = [m for m in drain(leader) if m.to == "n2"][-1]
    assert (app.index, app.log_term) == (3, 1)
    follower.step(app)
    ok = drain(follower)[-1]
    assert not ok.reject and ok.index == leader.log.last_index()


def test_short_follower_log_hint_is_its_last_index() -> None:
    from distsync.raft import Message

    follower, _ = make_core("n2", IDS, log_terms=[1, 1], term=1, **PLAIN)
    follower.step(Message(MT.APPEND_ENTRIES, "n2", "n1", 1, 1, 9, [], 0))
    rej = drain(follower)[-1]
    assert rej.reject and rej.log_term == 0 and rej.reject_hint == 2


def test_stale_rejection_is_ignored() -> None:
    net = leader_of_three()
    pr = net["n1"].progress["n2"]
    assert pr.state == ProgressState.REPLICATE
    from distsync.raft import Message

    match = pr.match
    net["n1"].step(
        Message(MT.APPEND_RESPONSE, "n1", "n2", net["n1"].term, index=match, reject=True)
    )
    assert pr.state == ProgressState.REPLICATE and pr.match == match


# ---- ReadIndex, leader transfer, check-quorum, snapshots -------------------------------------


def test_read_index_needs_a_heartbeat_quorum() -> None:
    net = leader_of_three()
    ld = net["n1"]
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    ld.read_index(b"r1")
    net.flush("n1")
    assert net.read_states["n1"] == []  # no quorum confirmed leadership
    net.recover()
    ld.read_index(b"r2")
    net.flush("n1")
    # r2's heartbeat round confirms r1 (queued before it) too, at the commit index then.
    assert [(rs.context, rs.index) for rs in net.read_states["n1"]] == [(b"r1", 1), (b"r2", 1)]


def test_read_index_from_a_follower_goes_through_the_leader() -> None:
    net = leader_of_three()
    net["n2"].read_index(b"f1")
    net.flush("n2")
    assert any(m.type is MT.READ_INDEX and m.to == "n1" for m in net.delivered)
    assert [(rs.context, rs.index) for rs in net.read_states["n2"]] == [(b"f1", 1)]


def test_read_index_without_a_known_leader_raises() -> None:
    core, _ = make_core("n1", IDS, **PLAIN)
    with pytest.raises(NotLeaderError):
        core.read_index(b"x")


def test_read_index_waits_for_a_commit_in_the_leaders_term() -> None:
    net = leader_of_three()
    net.ignore(MT.APPEND_ENTRIES)
    net["n2"].campaign()  # n2 wins term 2 but cannot replicate its no-op
    net.flush()
    ld = net["n2"]
    assert ld.role == Role.LEADER and ld.commit_index < ld.log.last_index()
    ld.read_index(b"early")
    net.flush("n2")
    assert ld._reads_before_commit and not ld._reads
    net.recover()
    net.tick("n2")
    assert [(rs.context, rs.index) for rs in net.read_states["n2"]] == [(b"early", 2)]


def test_leader_transfer_hands_over_with_timeout_now() -> None:
    net = leader_of_three()
    net["n1"].transfer_leader("n3")
    net.flush("n1")
    assert net["n3"].role == Role.LEADER and net["n1"].role == Role.FOLLOWER
    assert any(m.type is MT.TIMEOUT_NOW for m in net.delivered)


def test_leader_transfer_waits_for_the_target_to_catch_up_and_drops_proposals() -> None:
    net = leader_of_three()
    net.isolate("n3")
    net.propose("n1", b"a")
    net.recover()
    net.ignore(MT.APPEND_ENTRIES)
    net["n1"].transfer_leader("n3")
    net.flush("n1")
    assert net["n1"].role == Role.LEADER and net["n1"].lead_transferee == "n3"
    with pytest.raises(ProposalDroppedError):
        net["n1"].propose(b"b")
    net.recover()
    net.tick("n1")  # the heartbeat answer triggers the catch-up append, then timeout_now
    assert net["n3"].role == Role.LEADER


def test_leader_transfer_aborts_after_an_election_timeout() -> None:
    net = leader_of_three(election_tick=10)
    net.isolate("n3")
    net["n1"].transfer_leader("n3")
    net.tick("n1", 10)
    assert net["n1"].lead_transferee is None
    net["n1"].propose(b"ok")


def test_check_quorum_leader_steps_down_without_a_quorum() -> None:
    net = StepNetwork(3, pre_vote=False, check_quorum=True, election_tick=10)
    net.campaign("n1")
    net.isolate("n1")
    net.tick("n1", 10)
    assert net["n1"].role == Role.LEADER  # the first round still saw the followers
    net.tick("n1", 10)
    assert net["n1"].role == Role.FOLLOWER


def test_snapshot_is_sent_when_the_follower_needs_compacted_entries() -> None:
    net = leader_of_three()
    net.isolate("n3")
    for k in range(5):
        net.propose("n1", b"p%d" % k)
    st = net.storages["n1"]
    ci = net["n1"].commit_index
    st.create_snapshot(ci, ConfState(IDS), b"state")
    st.compact(ci)
    net.recover()
    net.tick("n1")
    snaps = [m for m in net.delivered if m.type is MT.INSTALL_SNAPSHOT]
    assert snaps and snaps[0].snapshot is not None and snaps[0].snapshot.index == ci
    assert net.storages["n3"].snapshot().index == ci
    assert net["n3"].log.last_index() == net["n1"].log.last_index()
    assert net["n1"].progress["n3"].state == ProgressState.REPLICATE


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RaftCore(Config("n1", IDS, election_tick=1), MemoryStorage(), random.Random(0))
    with pytest.raises(ValueError):
        RaftCore(Config("n1", ()), MemoryStorage(), random.Random(0))
    with pytest.raises(ValueError):
        RaftCore(Config("n1", IDS, learners=("n1",)), MemoryStorage(), random.Random(0))
    # A joining node starts outside the membership and never campaigns.
    outsider = RaftCore(Config("n9", IDS), MemoryStorage(), random.Random(0))
    for _ in range(100):
        outsider.tick()
    assert outsider.role == Role.FOLLOWER and outsider.term == 0


def test_restart_recovers_term_vote_and_commit() -> None:
    net = leader_of_three()
    net.propose("n1", b"a")
    net.tick("n1")
    hs = net["n2"].hard_state()
    core = net.start("n2")
    assert core.hard_state() == hs and core.role == Role.FOLLOWER
    assert core.log.last_index() == net["n1"].log.last_index()


# ---- client command deduplication (thesis §6.3) ------------------------------------------------


def test_dedup_a_retried_command_applies_once_on_every_replica() -> None:
    """A client retries (client_id, sequence) after a leader change; the log holds the
    command twice, and every replica executes it once and answers the retry from its table."""
    from distsync.raft.dedup import SessionTable

    net = leader_of_three()
    cmd = b"c1|7|incr"
    net.propose("n1", cmd)
    net.isolate("n1")  # the client hears nothing back and retries on the new leader
    net.campaign("n2")
    net.propose("n2", cmd)
    net.recover()
    net.tick("n2")
    for nid in IDS:
        assert [d for _, _, d in net.applied[nid]].count(cmd) == 2  # in the log twice
        table, executed, answers = SessionTable(), [], []
        for _index, _term, data in net.applied[nid]:
            if data:
                client, seq, op = data.split(b"|")
                answers.append(
                    table.apply(
                        client.decode(),
                        int(seq),
                        lambda op=op, ex=executed: ex.append(op) or len(ex),
                    )
                )
        assert executed == [b"incr"], nid
        assert answers == [1, 1]  # the retry got the first execution's answer


def test_dedup_pipelined_client_and_stale_sequences() -> None:
    from distsync.raft.dedup import SessionTable, StaleSequenceError

    t = SessionTable()
    runs = []
    for seq in (1, 2, 3):
        t.apply("c", seq, lambda seq=seq: runs.append(seq) or seq, first_unacked=1)
    assert t.apply("c", 2, lambda: runs.append(99), first_unacked=1) == 2
    assert runs == [1, 2, 3]
    # The client acknowledged everything below 3: 1 and 2 are forgotten and refused.
    t.apply("c", 4, lambda: 4, first_unacked=3)
    with pytest.raises(StaleSequenceError):
        t.apply("c", 2, lambda: runs.append(98))
    assert t.applied("c", 1) and t.applied("c", 3) and not t.applied("c", 5)
    restored = SessionTable.load(t.dump())
    assert restored.apply("c", 3, lambda: runs.append(97)) == 3 and 97 not in runs
    restored.expire("c")
    assert len(restored) == 0


# ---- membership changes (single-server, through the log) ------------------------------------


def cc(t: ConfChangeType, nid: str) -> ConfChange:
    return ConfChange(t, nid)


def change(net: StepNetwork, leader: str, c: ConfChange) -> None:
    net.flush()
    net[leader].propose_conf_change(c)
    net.flush(leader)
    net.tick(leader)  # the commit index reaches the followers, which apply it too


def test_conf_change_add_learner_replicates_but_never_counts() -> None:
    net = leader_of_three()
    net.add("n4")
    change(net, "n1", cc(ConfChangeType.ADD_LEARNER, "n4"))
    assert net["n1"].learners == ("n4",) and net["n4"].learners == ("n4",)
    assert net["n4"].log.last_index() == net["n1"].log.last_index()
    # With both voters cut off, the learner's acknowledgement does not make a quorum.
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    i = net.propose("n1", b"x")
    assert net["n4"].log.last_index() == i and net["n1"].commit_index < i
    # A learner never campaigns.
    net.tick("n4", 100)
    assert net["n4"].role == Role.FOLLOWER


def test_conf_change_promote_learner_then_quorum_is_three_of_four() -> None:
    net = leader_of_three()
    net.add("n4")
    change(net, "n1", cc(ConfChangeType.ADD_LEARNER, "n4"))
    change(net, "n1", cc(ConfChangeType.ADD_VOTER, "n4"))
    assert net["n1"].voters == ("n1", "n2", "n3", "n4") and net["n1"].quorum == 3
    net.cut("n1", "n3")
    net.cut("n1", "n4")
    i = net.propose("n1", b"two of four")
    assert net["n1"].commit_index < i  # n1 + n2 is no longer a majority
    net.recover()
    net.tick("n1")
    assert net["n1"].commit_index >= i


def test_conf_change_remove_voter_shrinks_the_quorum() -> None:
    net = leader_of_three()
    change(net, "n1", cc(ConfChangeType.REMOVE_NODE, "n3"))
    assert net["n1"].voters == ("n1", "n2") and "n3" not in net["n1"].progress
    net.isolate("n3")
    i = net.propose("n1", b"y")
    assert net["n1"].commit_index >= i


def test_conf_change_one_at_a_time_and_only_after_a_commit_in_term() -> None:
    net = leader_of_three()
    net.add("n4")
    net.ignore(MT.APPEND_RESPONSE)  # the first change cannot commit
    net["n1"].propose_conf_change(cc(ConfChangeType.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDroppedError):
        net["n1"].propose_conf_change(cc(ConfChangeType.ADD_VOTER, "n4"))
    net.recover()
    # A new leader must first commit an entry of its own term.
    net.ignore(MT.APPEND_ENTRIES)
    net.campaign("n2")
    assert net["n2"].role == Role.LEADER
    with pytest.raises(ProposalDroppedError):
        net["n2"].propose_conf_change(cc(ConfChangeType.REMOVE_NODE, "n3"))
    with pytest.raises(NotLeaderError):
        net["n3"].propose_conf_change(cc(ConfChangeType.REMOVE_NODE, "n1"))


def test_conf_change_removed_leader_steps_down_and_the_rest_elect() -> None:
    net = leader_of_three()
    change(net, "n1", cc(ConfChangeType.REMOVE_NODE, "n1"))
    assert net["n1"].role == Role.FOLLOWER and net["n1"].voters == ("n2", "n3")
    net.campaign("n2")
    assert net["n2"].role == Role.LEADER
    i = net.propose("n2", b"after")
    assert net["n2"].commit_index >= i
    net.tick("n1", 100)  # no longer a voter: never campaigns
    assert net["n1"].role == Role.FOLLOWER


def test_conf_change_roundtrip_and_snapshot_carries_membership() -> None:
    c = cc(ConfChangeType.ADD_VOTER, "node_7")
    assert ConfChange.decode(c.encode()) == c
    net = leader_of_three()
    net.add("n4")
    change(net, "n1", cc(ConfChangeType.ADD_LEARNER, "n4"))
    st = net.storages["n1"]
    ci = net["n1"].commit_index
    st.create_snapshot(ci, net["n1"].conf_state(), b"")
    st.compact(ci)
    restarted = net.start("n1")
    assert restarted.learners == ("n4",) and restarted.voters == IDS


def test_higher_term_vote_request_that_is_refused_does_not_reset_the_election_timer() -> None:
    """Stale-log candidates that time out sooner must not keep up-to-date nodes from ever
    campaigning: stepping down to their term keeps our timer running (§5.2 resets it only
    on hearing from a leader or granting a vote)."""
    from distsync.raft import Message

    core, _ = make_core("n2", IDS, log_terms=[1, 1], term=1, **PLAIN)
    for _ in range(5):
        core.tick()
    core.step(Message(MT.REQUEST_VOTE, "n2", "n3", 2, 1, 1))  # shorter log: refused
    assert core.term == 2 and core.vote is None and core.election_elapsed == 5
    core.step(Message(MT.REQUEST_VOTE, "n2", "n1", 3, 1, 2))  # up to date: granted
    assert core.vote == "n1" and core.election_elapsed == 0


def test_heartbeat_commit_is_capped_at_the_followers_match() -> None:
    """A follower whose log is not known to match must not be told to commit past it."""
    net = leader_of_three()
    net.isolate("n3")
    i = net.propose("n1", b"x")
    assert net["n1"].commit_index == i
    net.recover()
    net.ignore(MT.APPEND_ENTRIES)  # n3 only gets heartbeats
    net.tick("n1")
    beats = [m for m in net.delivered if m.type is MT.HEARTBEAT and m.to == "n3"]
    assert beats and beats[-1].commit == net["n1"].progress["n3"].match < i
    assert net["n3"].commit_index < i


def test_memory_storage_satisfies_the_storage_protocol() -> None:
    from distsync.raft import Storage

    st: Storage = MemoryStorage()  # checked by mypy as well: a structural match
    assert st.first_index() == 1 and st.last_index() == 0 and st.term(0) == 0
    assert st.initial_state() == (HardState(), ConfState())


def test_follower_restarts_from_an_installed_snapshot() -> None:
    """After InstallSnapshot, the follower's storage holds the snapshot; a restart resumes
    from it (commit and applied at the snapshot index, membership from it)."""
    net = leader_of_three()
    net.isolate("n3")
    for k in range(4):
        net.propose("n1", b"p%d" % k)
    st = net.storages["n1"]
    ci = net["n1"].commit_index
    st.create_snapshot(ci, ConfState(IDS), b"state")
    st.compact(ci)
    net.recover()
    net.tick("n1")
    assert net.storages["n3"].snapshot().index == ci
    core = net.start("n3")
    assert core.commit_index >= ci and core.applied_index == ci
    assert core.voters == IDS and core.log.first_index() == ci + 1
