"""Membership changes on the simulated cluster (single-server changes, thesis §4.1)."""

from __future__ import annotations

from distsync.raft import ConfChange, ConfChangeType, ProposalDroppedError
from distsync.testing.sim import Cluster, FaultConfig

ADD_LEARNER, ADD_VOTER, REMOVE = (
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.ADD_VOTER,
    ConfChangeType.REMOVE_NODE,
)


def change(c: Cluster, t: ConfChangeType, nid: str) -> None:
    """Propose on the leader until it is accepted, then wait until it is applied."""
    for _ in range(200):
        ld = c.leader()
        if ld is not None:
            try:
                index = ld.raft.propose_conf_change(ConfChange(t, nid))
            except ProposalDroppedError:
                pass
            else:
                c._drain(ld)

                # Applied by the leader (or it was the node removed, and is shut down).
                def applied(ld=ld, index=index) -> bool:  # type: ignore[no-untyped-def]
                    return not ld.alive or ld.raft.applied_index >= index

                if c.run_until(applied, 1000):
                    return
        c.run_for(20)
    raise AssertionError(f"change {t.name} {nid} never applied")


def commit_on_members(c: Cluster, data: bytes) -> None:
    def done() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        if not want or want[1] != ld.id:
            r = c.propose(data)
            if r is not None:
                want[:] = [r[1], r[0]]
            return False
        return all(c.nodes[i].sm_index >= want[0] for i in c.members())

    want: list = []
    assert c.run_until(done, 5000), f"{data!r} not applied on every member"


def test_grow_from_three_to_five_then_remove_the_leader_under_faults() -> None:
    c = Cluster(3, seed=11)
    c.faults = FaultConfig(drop=0.05, duplicate=0.05, max_delay=8.0)
    assert c.run_until(lambda: c.leader() is not None, 2000)
    for _ in range(2):
        nid = c.add_node()
        change(c, ADD_LEARNER, nid)
        commit_on_members(c, b"learner " + nid.encode())  # the learner catches up
        change(c, ADD_VOTER, nid)
    ld = c.leader()
    assert ld is not None and len(ld.raft.voters) == 5 and ld.raft.quorum == 3
    commit_on_members(c, b"five voters")
    old = ld.id
    change(c, REMOVE, old)
    c.run_for(10)
    assert old in c.removed and not c.nodes[old].alive
    commit_on_members(c, b"four voters")
    new = c.leader()
    assert new is not None and new.id != old and old not in new.raft.voters


def test_a_partitioned_minority_cannot_change_membership() -> None:
    """A leader cut off from its majority may append a change but never commit it."""
    c = Cluster(3, seed=12)
    assert c.run_until(lambda: c.leader() is not None, 2000)
    commit_on_members(c, b"x")
    ld = c.leader()
    assert ld is not None
    c.isolate(ld.id)
    index = ld.raft.propose_conf_change(ConfChange(REMOVE, [i for i in c.ids if i != ld.id][0]))
    c._drain(ld)
    c.run_for(500)
    assert ld.raft.commit_index < index
    c.heal()
    commit_on_members(c, b"healed")
    assert all(len(c.nodes[i].raft.voters) == 3 for i in c.ids)
