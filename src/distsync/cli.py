"""The ``distsync`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from distsync._version import __version__

__all__ = ["main"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from distsync._core import KERNELS
    from distsync.bench import Progress, render_table, rows_to_json
    from distsync.bench.kernels import run_kernels

    if args.what != "kernels":
        print(f"distsync bench: unknown benchmark {args.what!r} (choose: kernels)", file=sys.stderr)
        return 2
    names = tuple(args.only.split(",")) if args.only else KERNELS
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        print(
            f"distsync bench: --only names unknown kernel(s) {', '.join(unknown)}; "
            f"choose from {', '.join(KERNELS)}",
            file=sys.stderr,
        )
        return 2
    rows = run_kernels(names, quick=args.quick, progress=Progress(quiet=args.quiet))
    print(render_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(rows_to_json(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distsync", description=__doc__)
    parser.add_argument("--version", action="version", version=f"distsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="measure distsync against its peers")
    bench.add_argument("what", choices=["kernels"], help="which benchmark to run")
    bench.add_argument("--only", help="comma-separated kernels (ring,wal,mesi,waitgraph)")
    bench.add_argument("--quick", action="store_true", help="smaller work, for a smoke run")
    bench.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
