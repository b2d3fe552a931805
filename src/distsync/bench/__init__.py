"""Benchmarks shipped with distsync: ``distsync bench ...``.

Every benchmark measures distsync and its peer in the same run, on the same
work, and reports the ratio; absolute figures drift on a shared machine, ratios
much less.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TextIO

__all__ = ["Row", "render_table", "best_of", "Progress", "rows_to_json"]


@dataclass
class Row:
    """One line of a benchmark table: our figure against the peer's.

    ``higher_is_better`` says whether the unit is a rate (ops/s) or a cost
    (seconds); ``ratio`` is always "times better than the peer", so > 1 means
    distsync wins. ``target`` is the goal in words and ``met`` whether our
    figure reached it (``None`` when there is no target).
    """

    kernel: str
    work: str
    ours: float
    peer: str
    peer_value: float
    unit: str
    higher_is_better: bool = True
    target: str = ""
    met: bool | None = None
    impl: str = "c"
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.ours <= 0 or self.peer_value <= 0:
            return float("nan")
        if self.higher_is_better:
            return self.ours / self.peer_value
        return self.peer_value / self.ours


def _fmt(value: float, unit: str) -> str:
    """A number in a unit people read at a glance (M/s, µs, ...)."""
    if unit == "ops/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f} M/s"
        if value >= 1e3:
            return f"{value / 1e3:.1f} k/s"
        return f"{value:.0f} /s"
    if unit == "s":
        if value < 1e-6:
            return f"{value * 1e9:.0f} ns"
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    return f"{value:.3g} {unit}"


def render_table(rows: Iterable[Row]) -> str:
    """A fixed-width table: kernel, work, ours, peer, ratio, target."""
    header = ("kernel", "work", "distsync", "peer", "peer figure", "ratio", "target")
    lines = [header]
    for r in rows:
        verdict = "" if r.met is None else ("met" if r.met else "MISSED")
        target = f"{r.target} {verdict}".strip()
        lines.append(
            (
                f"{r.kernel}[{r.impl}]",
                r.work,
                _fmt(r.ours, r.unit),
                r.peer,
                _fmt(r.peer_value, r.unit),
                f"{r.ratio:.2f}x",
                target,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def rows_to_json(rows: Iterable[Row]) -> str:
    return json.dumps([dict(asdict(r), ratio=r.ratio) for r in rows], indent=2)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Fastest wall time of ``repeat`` calls of ``fn``, in seconds.

    The minimum is the figure least disturbed by the other tenants of a shared
    machine; the benchmarks compare ours and the peer's both this way.
    """
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Progress:
    """Prints one line per step to stderr, so long runs show they are alive."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.t0
            print(f"[{elapsed:6.1f}s] {message}", file=self.stream, flush=True)
