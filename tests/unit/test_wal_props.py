"""Hypothesis on the WAL: both twins against a plain-list oracle, and fuzzed arguments."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from distsync._core import NO_EXTENSIONS, load
from distsync.errors import CorruptLogError

IMPLS = ("py",) if NO_EXTENSIONS else ("c", "py")


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("wal", impl)


class WalAgainstOracle(RuleBasedStateMachine):
    """Each twin keeps its own log; every step must match a list and the other twin.

    ``reopen`` swaps which twin opens which directory, so each twin keeps
    working on files the other wrote. Blocks are made small here so that
    batches split and truncations cut through blocks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="walprop-")
        self.saved = {impl: load("wal", impl).BLOCK_BYTES for impl in IMPLS}
        for impl in IMPLS:
            load("wal", impl).BLOCK_BYTES = 700
        self.dirs = [os.path.join(self.dir, f"log{i}") for i in range(len(IMPLS))]
        self.swap = 0
        self.wals = self._open()
        self.first = 1
        self.records: list[bytes] = []  # records[i] has seq first + i

    def _open(self) -> list[Any]:
        # Twin IMPLS[(i + swap) % n] opens directory i.
        n = len(IMPLS)
        return [
            load("wal", IMPLS[(i + self.swap) % n]).Wal(d, sync=False, map_size=32768)
            for i, d in enumerate(self.dirs)
        ]

    @property
    def last(self) -> int:
        return self.first + len(self.records) - 1

    @rule(batch=st.lists(st.binary(max_size=200), max_size=12))
    def append(self, batch: list[bytes]) -> None:
        for wal in self.wals:
            assert wal.append(batch) == self.last + len(batch)
        self.records.extend(batch)

    @rule(data=st.data())
    def truncate_prefix(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(max(0, self.first - 3), self.last))
        for wal in self.wals:
            wal.truncate_prefix(upto)
        if upto >= self.first:
            del self.records[: upto - self.first + 1]
            self.first = upto + 1

    @rule(data=st.data())
    def truncate_suffix(self, data: st.DataObject) -> None:
        from_seq = data.draw(st.integers(self.first, self.last + 1))
        for wal in self.wals:
            wal.truncate_suffix(from_seq)
        del self.records[from_seq - self.first :]

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(max(0, self.first - 2), self.last + 2))
        for wal in self.wals:
            if self.first <= seq <= self.last:
                assert wal.read(seq) == self.records[seq - self.first]
            else:
                with pytest.raises(IndexError):
                    wal.read(seq)

    @rule(data=st.data())
    def scan(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(self.first, self.last + 1))
        want = [(self.first + i, r) for i, r in enumerate(self.records)][start - self.first :]
        for wal in self.wals:
            assert list(wal.scan(start)) == want

    @rule()
    def reopen(self) -> None:
        for wal in self.wals:
            wal.close()
        self.swap += 1
        self.wals = self._open()

    @invariant()
    def bounds_match(self) -> None:
        for wal in self.wals:
            assert (wal.first_seq, wal.last_seq) == (self.first, self.last)

    def teardown(self) -> None:
        for wal in self.wals:
            wal.close()
        for impl, value in self.saved.items():
            load("wal", impl).BLOCK_BYTES = value
        shutil.rmtree(self.dir, ignore_errors=True)


TestWalAgainstOracle = WalAgainstOracle.TestCase
TestWalAgainstOracle.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 8),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(
        st.one_of(st.binary(max_size=4), st.integers(), st.text(max_size=2), st.none()),
        max_size=3,
    ),
    st.tuples(st.binary(max_size=3)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(object()),
)
METHODS = ("append", "read", "scan", "truncate_prefix", "truncate_suffix")


def test_fuzzed_arguments_raise_only_documented_errors(mod: ModuleType, tmp_path: Path) -> None:
    with mod.Wal(tmp_path / "log", sync=False) as wal:
        wal.append([b"a", b"b", b"c", b"d", b"e"])
        oracle = {s: r for s, r in wal.scan()}

        @settings(max_examples=300, deadline=None)
        @given(method=st.sampled_from(METHODS), arg=ANYTHING)
        def check(method: str, arg: Any) -> None:
            first, last = wal.first_seq, wal.last_seq
            try:
                result = getattr(wal, method)(arg)
                if method == "scan":
                    result = list(result)
            except (TypeError, ValueError, IndexError):
                assert (wal.first_seq, wal.last_seq) == (first, last)  # nothing half-done
            else:
                if method == "append":
                    batch = [bytes(memoryview(x)) for x in arg]
                    for i, r in enumerate(batch):
                        oracle[last + 1 + i] = r
                    assert result == last + len(batch)
                elif method == "truncate_prefix":
                    for s in range(first, arg + 1):
                        oracle.pop(s, None)
                elif method == "truncate_suffix":
                    for s in range(arg, last + 1):
                        oracle.pop(s, None)
                elif method == "read":
                    assert result == oracle[arg]
                if len(oracle) < 3:  # keep something to read
                    wal.append([b"x", b"y", b"z"])
                    for i in range(3):
                        oracle[wal.last_seq - 2 + i] = b"xyz"[i : i + 1]
            assert dict(wal.scan()) == oracle

        check()


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.binary(max_size=3000), max_size=6), min_size=1, max_size=5))
def test_twins_write_the_same_blocks_for_any_batches(batches: list[list[bytes]]) -> None:
    if NO_EXTENSIONS:
        pytest.skip("compiled twin not built")
    c, py = load("wal", "c"), load("wal", "py")
    seq = 1
    for batch in batches:
        if batch:
            assert c.encode_block(seq, batch) == py.encode_block(seq, batch)
            seq += len(batch)


def test_fuzzed_constructor_arguments(mod: ModuleType, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    @settings(max_examples=80, deadline=None)
    @given(
        sync=st.one_of(st.booleans(), ANYTHING),
        map_size=st.one_of(st.integers(-(2**70), 2**70), st.integers(4096, 1 << 24), ANYTHING),
        readonly=st.one_of(st.just(False), ANYTHING),
    )
    def check(sync: Any, map_size: Any, readonly: Any) -> None:
        path = tmp_path / f"log{next(counter)}"
        try:
            wal = mod.Wal(path, sync=sync, map_size=map_size, readonly=readonly)
        except (TypeError, ValueError, FileNotFoundError):
            return
        with wal:
            assert wal.append([b"ok"]) == 1
            assert wal.read(1) == b"ok"

    check()


def _payload(seq: int) -> bytes:
    head = f"rec-{seq:06d}-".encode()
    return (head * 10)[:100]


def test_any_damaged_byte_in_a_block_is_caught_never_served(
    mod: ModuleType, tmp_path: Path
) -> None:
    """Flip any byte of any block (header, table, frame, payload): the log either
    refuses to open or serves a prefix of what was written, never other bytes."""
    counter = iter(range(10**6))
    batches = [(1, 60), (61, 100), (101, 150)]  # blocks of 60, 40, 50 records
    blocks = [mod.encode_block(lo, [_payload(s) for s in range(lo, hi + 1)]) for lo, hi in batches]

    @settings(max_examples=60, deadline=None)
    @given(
        which=st.integers(0, 2), where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255)
    )
    def check(which: int, where: float, xor: int) -> None:
        path = tmp_path / f"log{next(counter)}"
        with mod.Wal(path, sync=False) as wal:
            for lo, hi in batches:
                wal.append([_payload(s) for s in range(lo, hi + 1)])
        raw = bytearray((path / "data.mdb").read_bytes())
        at = raw.find(blocks[which])  # blocks live in overflow pages, written once
        assert at >= 0 and raw.find(blocks[which], at + 1) < 0
        raw[at + int(where * len(blocks[which]))] ^= xor
        (path / "data.mdb").write_bytes(bytes(raw))
        try:
            wal = mod.Wal(path, sync=False)
        except CorruptLogError as exc:
            assert exc.path.endswith("data.mdb")
            assert batches[which][0] <= exc.seq <= batches[which][1]
            assert exc.seq < 150  # record 150 has no follower: damage there is a torn tail
            return
        with wal:
            got = list(wal.scan())
            assert wal.first_seq == 1
            assert got == [(s, _payload(s)) for s in range(1, wal.last_seq + 1)]
            assert wal.last_seq >= batches[which][0] - 1  # only the damaged block is cut
            assert which == 2 or wal.last_seq == 150  # earlier damage cannot be a torn tail

    check()
