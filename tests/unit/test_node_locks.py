"""The node's replicated state with the lock service (:class:`ServiceState`): lock entries
beside counter/KV commands, their deduplication, and snapshots of both parts."""

from __future__ import annotations

import msgpack

from distsync.lock import Acquire, CloseSession, ExpireSessions, OpenSession, Release
from distsync.node import CounterKV, ServiceState, encode_command, encode_lock_entry


def effects(result: object) -> list[str]:
    assert isinstance(result, list)
    return [e["effect"] for e in result]


def test_lock_and_counter_entries_apply_side_by_side() -> None:
    sm = ServiceState()
    assert sm.apply(encode_command("incr", client_id="k", sequence=1), 1) == 1
    r = sm.apply(encode_lock_entry(OpenSession("s1", "c", 5.0, 0.0), "c", 1), 2)
    assert effects(r) == ["session_opened"]
    r = sm.apply(encode_lock_entry(Acquire("db", "exclusive", "c", "s1", 7, 1.0), "c", 2), 3)
    assert effects(r) == ["grant"] and r[0]["token"] == 3  # the entry's index
    assert sm.counter == 1
    assert sm.locks.status("db").holders == ("c",)
    assert sm.applied_commands == 3


def test_a_retried_lock_command_applies_once() -> None:
    sm = ServiceState()
    sm.apply(encode_lock_entry(OpenSession("s1", "c", 5.0, 0.0), "c", 1), 1)
    sm.apply(encode_lock_entry(OpenSession("s2", "d", 5.0, 0.0), "d", 1), 2)
    sm.apply(encode_lock_entry(Acquire("db", "exclusive", "c", "s1", 1, 0.0), "c", 2), 3)
    queued = encode_lock_entry(Acquire("db", "exclusive", "d", "s2", 1, 0.0), "d", 2)
    assert effects(sm.apply(queued, 4)) == ["queued"]
    release = encode_lock_entry(Release("db", "c", "s1"), "c", 3)
    first = sm.apply(release, 5)
    assert effects(first) == ["released", "grant"]
    assert [e.__class__.__name__ for e in sm.last_effects] == ["Released", "Grant"]
    # The same (client, sequence) again: the recorded answer, nothing executed.
    assert sm.apply(release, 6) == first
    assert sm.last_effects == []
    assert sm.apply(queued, 7)[0]["effect"] == "queued"
    assert sm.locks.status("db").holders == ("d",)
    assert sm.locks.status("db").fencing_token == 5


def test_a_client_without_sessions_loses_its_deduplication_record() -> None:
    sm = ServiceState()
    sm.apply(encode_lock_entry(OpenSession("s1", "c", 1.0, 0.0), "c", 1), 1)
    sm.apply(encode_lock_entry(OpenSession("s2", "d", 1.0, 0.0), "d", 1), 2)
    assert sm.lock_sessions.applied("c", 1)
    sm.apply(encode_lock_entry(CloseSession("s1", "c"), "c", 2), 3)
    assert not sm.lock_sessions.applied("c", 1)
    r = sm.apply(encode_lock_entry(ExpireSessions(5.0)), 4)  # the leader's: no sequence
    assert effects(r) == ["session_expired"]
    assert len(sm.lock_sessions) == 0


def test_a_damaged_lock_entry_is_counted_and_changes_nothing() -> None:
    sm = ServiceState()
    assert sm.apply(b"L\xc1", 1) is None
    r = sm.apply(b"L" + msgpack.packb(["c", 1, None, b"\x93\x01\x63\x00"]), 2)
    assert effects(r) == ["rejected"] and r[0]["code"] == "bad_command"
    assert sm.applied_commands == 2 and sm.locks.resources() == []


def test_snapshot_holds_both_parts_and_restores_old_counter_snapshots() -> None:
    sm = ServiceState()
    sm.apply(encode_command("set", "k", b"v"), 1)
    sm.apply(encode_lock_entry(OpenSession("s1", "c", 5.0, 0.0), "c", 1), 2)
    sm.apply(encode_lock_entry(Acquire("db", "shared", "c", "s1", 1, 0.0), "c", 2), 3)
    copy = ServiceState()
    copy.restore(sm.snapshot())
    assert copy.kv == {"k": b"v"}
    assert copy.locks == sm.locks
    assert copy.lock_sessions.applied("c", 2)
    # A snapshot written by the counter-only state machine still loads.
    old = CounterKV()
    old.apply(encode_command("incr", value=4))
    again = ServiceState()
    again.restore(old.snapshot())
    assert again.counter == 4 and again.locks.resources() == []
