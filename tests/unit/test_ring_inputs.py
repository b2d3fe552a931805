"""Bad input to the hash ring: only the documented exceptions, naming the argument.

Every public call is fuzzed with values of random types; nothing but
TypeError, ValueError or LookupError may escape, and the interpreter must not
crash. Where both twins are present they must raise the same type with the
same message.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distsync._core import NO_EXTENSIONS, load

DOCUMENTED = (TypeError, ValueError, LookupError)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),  # may hold lone surrogates: not valid as UTF-8
    st.binary(max_size=20),
    st.builds(bytearray, st.binary(max_size=5)),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.binary(max_size=3)), max_size=4),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    st.just(3 + 4j),
)


# ``mod`` is a module, not state: sharing it across a test's examples is safe.
stateless_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)


@pytest.fixture
def mod(impl: str) -> ModuleType:
    return load("ring", impl)


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """("ok", repr(result)) or (exception type, message)."""
    try:
        result = call()
    except DOCUMENTED as exc:
        return type(exc).__name__, str(exc)
    if hasattr(result, "tolist"):
        result = result.tolist()
    return "ok", repr(result)


def ring_of(mod: ModuleType) -> Any:
    return mod.HashRing(["a", "b", "c"], vnodes=8)


CALLS: dict[str, Callable[[ModuleType, Any], Any]] = {
    "init-nodes": lambda m, v: m.HashRing(v),
    "init-vnodes": lambda m, v: m.HashRing(["a"], vnodes=v),
    "lookup": lambda m, v: ring_of(m).lookup(v),
    "lookup_many": lambda m, v: ring_of(m).lookup_many(v),
    "lookup_many-item": lambda m, v: ring_of(m).lookup_many(["ok", b"ok", v]),
    "add_node": lambda m, v: ring_of(m).add_node(v),
    "remove_node": lambda m, v: ring_of(m).remove_node(v),
    "preference_list-key": lambda m, v: ring_of(m).preference_list(v, 2),
    "preference_list-n": lambda m, v: ring_of(m).preference_list("k", v),
    "balance": lambda m, v: ring_of(m).balance(v),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@stateless_fixture
@given(value=anything)
def test_fuzz_raises_only_documented_errors(mod: ModuleType, name: str, value: Any) -> None:
    outcome(lambda: CALLS[name](mod, value))


@pytest.mark.parametrize("name", sorted(CALLS))
@given(value=anything)
def test_fuzz_twins_fail_alike(name: str, value: Any) -> None:
    if NO_EXTENSIONS:
        pytest.skip("the compiled twin is not built")
    c, py = load("ring", "c"), load("ring", "py")
    assert outcome(lambda: CALLS[name](c, value)) == outcome(lambda: CALLS[name](py, value))


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [
        (lambda m: m.HashRing([1]), TypeError, r"nodes\[0\] must be str"),
        (lambda m: m.HashRing("abc"), TypeError, "nodes must be an iterable"),
        (lambda m: m.HashRing(5), TypeError, "nodes must be an iterable"),
        (lambda m: m.HashRing(["a\ud800"]), ValueError, r"nodes\[0\].*UTF-8"),
        (lambda m: m.HashRing(["a"], vnodes=0), ValueError, "vnodes"),
        (lambda m: m.HashRing(["a"], vnodes=-3), ValueError, "vnodes"),
        (lambda m: m.HashRing(["a"], vnodes=10**30), ValueError, "vnodes"),
        (lambda m: m.HashRing(["a"], vnodes=1.5), TypeError, "vnodes must be an int"),
        (lambda m: m.HashRing(["a"], vnodes="3"), TypeError, "vnodes must be an int"),
        (lambda m: m.HashRing(["a"], vnodes=True), TypeError, "vnodes must be an int"),
        (lambda m: ring_of(m).lookup(1), TypeError, "key must be str or bytes"),
        (lambda m: ring_of(m).lookup(bytearray(b"x")), TypeError, "key must be str or bytes"),
        (lambda m: ring_of(m).lookup("\udcff"), ValueError, "key is not encodable"),
        (lambda m: ring_of(m).lookup_many(3), TypeError, "keys must be an iterable"),
        (lambda m: ring_of(m).lookup_many("abc"), TypeError, "keys must be an iterable"),
        (lambda m: ring_of(m).lookup_many(["a", None]), TypeError, r"keys\[1\] must be str"),
        (lambda m: ring_of(m).lookup_many(("a", "b", 7)), TypeError, r"keys\[2\] must be str"),
        (lambda m: ring_of(m).lookup_many(["a", "\ud800"]), ValueError, r"keys\[1\].*UTF-8"),
        (lambda m: m.HashRing().lookup_many(["a", 4]), TypeError, r"keys\[1\]"),
        (lambda m: ring_of(m).add_node(b"a"), TypeError, "node must be str"),
        (lambda m: ring_of(m).add_node("x\udfff"), ValueError, "node.*UTF-8"),
        (lambda m: ring_of(m).remove_node(None), TypeError, "node must be str"),
        (lambda m: ring_of(m).preference_list("k", 2.0), TypeError, "n must be an int"),
        (lambda m: ring_of(m).preference_list("k", False), TypeError, "n must be an int"),
        (lambda m: ring_of(m).preference_list("k", 0), ValueError, "n must be >= 1"),
        (lambda m: ring_of(m).preference_list("k", -(10**30)), ValueError, "n must be >= 1"),
        (lambda m: ring_of(m).preference_list("k", 10**30), ValueError, "exceeds"),
        (lambda m: ring_of(m).preference_list(1.0, 1), TypeError, "key must be"),
        (lambda m: ring_of(m).balance(5), TypeError, "keys must be an iterable"),
        (lambda m: ring_of(m).balance([1]), TypeError, r"keys\[0\]"),
    ],
)
def test_errors_name_the_argument(
    mod: ModuleType, call: Callable[[ModuleType], Any], exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        call(mod)


def test_numpy_integers_are_counts(mod: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    ring = mod.HashRing(["a", "b", "c"], vnodes=np.int64(4))
    assert ring.vnodes == 4
    assert len(ring.preference_list("k", np.int32(2))) == 2
