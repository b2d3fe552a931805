"""The ``distsync`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from distsync._version import __version__

__all__ = ["main"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from distsync._core import KERNELS
    from distsync.bench import Progress, render_table, rows_to_json
    from distsync.bench.kernels import run_kernels

    if args.what == "commit":
        return _bench_commit(args)
    if args.what == "locks":
        from distsync.bench._locks import run_cli

        return run_cli(args)
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


def _bench_commit(args: argparse.Namespace) -> int:
    import json

    from distsync.bench import Progress
    from distsync.bench._commit import QUICK, CommitSettings, render_commit_table, run_commit

    base = QUICK if args.quick else CommitSettings()
    try:
        settings = CommitSettings(
            tuple(int(p) for p in args.proposers.split(",")),
            base.duration if args.duration is None else args.duration,
            base.reps if args.reps is None else args.reps,
            base.warmup,
            base.log_formats if args.log_formats is None else tuple(args.log_formats.split(",")),
        )
    except ValueError as exc:
        print(f"distsync bench commit: {exc}", file=sys.stderr)
        return 2
    result = run_commit(settings, peer=not args.skip_pysyncobj, log=Progress(quiet=args.quiet))
    print(render_commit_table(result["rows"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from distsync.demo import main as demo_main

    return demo_main()


def _load_toml(path: str) -> dict[str, Any]:
    # tomllib is stdlib from 3.11; on 3.10 the same parser is the ``tomli`` package (a
    # dependency there).
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise SystemExit(
                "distsync serve --config needs Python 3.11+ or `pip install tomli`"
            ) from None
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _parse_peers(value: str | dict[str, str] | None) -> dict[str, tuple[str, int]]:
    from distsync.node import parse_address

    if not value:
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for part in value.split(","):
            name, sep, addr = part.strip().partition("=")
            if not sep or not name:
                raise ValueError(f"peer {part!r} must be id=host:port")
            items.append((name, addr))
    return {name: parse_address(addr) for name, addr in items}


def _serve_config(args: argparse.Namespace) -> Any:
    """The NodeConfig from the TOML file (if any) with the flags on top."""
    from distsync.node import NodeConfig, TlsFiles, parse_address

    conf: dict[str, Any] = _load_toml(args.config) if args.config else {}
    for key in (
        "id",
        "listen",
        "peers",
        "data_dir",
        "secret_file",
        "metrics_port",
        "election_tick",
        "heartbeat_tick",
        "tick_interval",
        "snapshot_entries",
        "snapshot_keep",
        "log_format",
    ):
        value = getattr(args, key)
        if value is not None:
            conf[key] = value
    if args.no_sync:
        conf["sync"] = False
    # --tls-* set single keys of the file's [tls] table, so a flag can replace one file.
    tls_flags = {k: getattr(args, "tls_" + k) for k in ("cert", "key", "ca")}
    if any(v is not None for v in tls_flags.values()):
        table = dict(conf.get("tls") or {})
        table.update({k: v for k, v in tls_flags.items() if v is not None})
        conf["tls"] = table
    missing = [k for k in ("id", "listen", "data_dir") if not conf.get(k)]
    if missing:
        raise ValueError("missing " + ", ".join("--" + k.replace("_", "-") for k in missing))
    tls = conf.get("tls")
    if tls is not None:
        if not isinstance(tls, dict) or not tls.get("cert") or not tls.get("ca"):
            raise ValueError("TLS needs a certificate and a CA: --tls-cert and --tls-ca")
        tls.setdefault("key", None)
    secret_file = conf.get("secret_file")
    secret_value = conf.get("secret")
    from distsync.net.auth import load_secret

    secret = load_secret(secret_value, file=secret_file) if (secret_file or secret_value) else None
    cfg = NodeConfig(
        id=str(conf["id"]),
        listen=parse_address(str(conf["listen"])),
        peers=_parse_peers(conf.get("peers")),
        data_dir=str(conf["data_dir"]),
        secret=secret,
        tls=TlsFiles(**tls) if isinstance(tls, dict) else None,
        metrics_port=None if conf.get("metrics_port") is None else int(conf["metrics_port"]),
        sync=bool(conf.get("sync", True)),
    )
    for key in ("election_tick", "heartbeat_tick", "snapshot_entries", "snapshot_keep"):
        if key in conf:
            setattr(cfg, key, int(conf[key]))
    if "tick_interval" in conf:
        cfg.tick_interval = float(conf["tick_interval"])
    if "log_format" in conf:
        cfg.log_format = str(conf["log_format"])
    cfg.validate()
    return cfg


def _quiet_load_secret(file: str | None = None) -> bytes:
    """load_secret, with its warning shown once: as the logged line, not also as a Python
    warning pointing at this source file."""
    import warnings

    from distsync.net.auth import InsecureSecretWarning, load_secret

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSecretWarning)
        return load_secret(file=file)


def _client_tls(args: argparse.Namespace) -> Any:
    """The client TLS context of ``status``/``debug`` from their --tls-* flags (None: no
    TLS). The CA verifies the node; the certificate is ours, which a node requires."""
    if args.tls_cert is None and args.tls_ca is None and args.tls_key is None:
        return None
    if args.tls_ca is None:
        raise ValueError("--tls-ca is needed to verify the node's certificate")
    from distsync.net.auth import client_ssl_context

    return client_ssl_context(args.tls_ca, args.tls_cert, args.tls_key)


def _add_tls_flags(p: argparse.ArgumentParser, who: str) -> None:
    p.add_argument("--tls-cert", dest="tls_cert", metavar="PEM",
                   help=f"{who} certificate (chain), signed by the cluster's CA")  # fmt: skip
    p.add_argument("--tls-key", dest="tls_key", metavar="PEM",
                   help="its private key (if not in the --tls-cert file)")  # fmt: skip
    p.add_argument("--tls-ca", dest="tls_ca", metavar="PEM",
                   help="the CA that signs every node's and client's certificate")  # fmt: skip


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from distsync.node import Node, install_uvloop

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = _serve_config(args)
    except (ValueError, OSError, TypeError) as exc:
        print(f"distsync serve: {exc}", file=sys.stderr)
        return 2
    if cfg.secret is None:
        cfg.secret = _quiet_load_secret()  # $DISTSYNC_SECRET, else the dev default + warning
    uv = install_uvloop()

    async def run() -> int:
        node = Node(cfg)
        await node.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(node.stop()))
        print(
            f"distsync node {cfg.id} listening on {cfg.listen[0]}:{node.port}"
            + (f", metrics on port {node.metrics_port}" if node.metrics_port is not None else "")
            + (" (uvloop)" if uv else ""),
            file=sys.stderr,
            flush=True,
        )
        assert node.stopped is not None
        await node.stopped
        return 1 if node.failure is not None else 0

    return asyncio.run(run())


def _cmd_status(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from distsync.node import fetch_status, parse_address

    try:
        addrs = [a.strip() for a in args.peers.split(",") if a.strip()]
        targets = [(a, *parse_address(a)) for a in addrs]
        secret = _quiet_load_secret(args.secret_file)
        ssl = _client_tls(args)
    except (ValueError, OSError) as exc:
        print(f"distsync status: {exc}", file=sys.stderr)
        return 2

    async def one(addr: str, host: str, port: int) -> dict[str, Any]:
        try:
            st = await fetch_status(host, port, secret, timeout=args.timeout, ssl=ssl)
        except Exception as exc:  # any failure is reported per node, never fatal
            return {"address": addr, "error": f"{type(exc).__name__}: {exc}"}
        st.pop("reply_to", None)
        st["address"] = addr
        return st

    async def all_() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(*t) for t in targets)))

    rows = asyncio.run(all_())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_status_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


def _from_jsonable(value: Any) -> Any:
    """The inverse of the JSON rendering's one liberty: ``"base64:..."`` strings are bytes
    again (so ``--payload '{"data": "base64:..."}'`` sends what a rendering showed)."""
    import base64
    import binascii

    if isinstance(value, str) and value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in {value!r}: {exc}") from None
    if isinstance(value, dict):
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def _decode_frames(data: bytes, emit: Any) -> str | None:
    """Every length-prefixed frame of ``data`` (as on the wire) to ``emit(envelope)``, in
    order; the problem (with its byte offset) that stopped the decoding, or None."""
    from distsync.errors import ProtocolError
    from distsync.net.codec import unpack_body
    from distsync.net.framing import HEADER_SIZE

    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER_SIZE:
            return f"offset {pos}: {len(data) - pos} byte(s) left, not a whole length prefix"
        length = int.from_bytes(data[pos : pos + HEADER_SIZE], "big")
        end = pos + HEADER_SIZE + length
        if end > len(data):
            return f"offset {pos}: frame of {length} bytes, only {len(data) - pos - 4} left"
        try:
            env = unpack_body(data[pos + HEADER_SIZE : end])
        except ProtocolError as exc:
            # Reported and skipped: its length prefix still delimits the frames after it,
            # which an operator wants to see (a node closes the connection here instead).
            emit(None, f"offset {pos}: {exc}")
        else:
            emit(env, None)
        pos = end
    return None


def _cmd_debug(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os

    def show(env: Any) -> None:
        print(env.to_json(indent=2 if args.pretty else None), flush=True)

    if args.frames is not None:
        try:
            if args.frames == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(args.frames, "rb") as fh:
                    data = fh.read()
        except OSError as exc:
            print(f"distsync debug: {exc}", file=sys.stderr)
            return 2
        bad: list[str | None] = []

        def emit(env: Any, problem: str | None) -> None:
            if env is not None:
                show(env)
            else:
                bad.append(problem)
                print(f"distsync debug: {problem}", file=sys.stderr)

        stop = _decode_frames(data, emit)
        if stop is not None:
            print(f"distsync debug: {stop}", file=sys.stderr)
        return 1 if stop is not None or bad else 0

    from distsync.net.envelope import MSG_TYPES, Envelope
    from distsync.net.transport import connect
    from distsync.node import parse_address

    try:
        host, port = parse_address(args.peer)
        if args.send not in MSG_TYPES:
            raise ValueError(f"--send {args.send!r} is no message type; one of {MSG_TYPES}")
        payload = _from_jsonable(json.loads(args.payload)) if args.payload else {}
        if not isinstance(payload, dict):
            raise ValueError("--payload must be a JSON object")
        secret = _quiet_load_secret(args.secret_file)
        ssl = _client_tls(args)
    except (ValueError, OSError) as exc:
        print(f"distsync debug: {exc}", file=sys.stderr)
        return 2

    async def probe() -> int:
        try:
            conn = await connect(
                host, port, f"debug-{os.getpid()}", secret, timeout=args.timeout, ssl=ssl
            )
        except Exception as exc:  # what the handshake said is the answer an operator wants
            print(f"distsync debug: {args.peer}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        try:
            # send + inbox, not request(): request() turns an ``error`` reply into an
            # exception, and the envelope itself is what is to be shown.
            env = Envelope.make(conn.ids, args.send, conn.peer_id or "", payload)
            show(env)
            conn.send(env)
            try:
                reply = await asyncio.wait_for(conn.inbox.get(), args.timeout)
            except asyncio.TimeoutError:
                print(f"distsync debug: no reply within {args.timeout}s", file=sys.stderr)
                return 1
            show(reply)
            return 1 if reply.msg_type == "error" else 0
        finally:
            conn.close()

    return asyncio.run(probe())


def _status_table(rows: list[dict[str, Any]]) -> str:
    head = ["address", "node", "role", "term", "commit", "applied", "leader", "peers (match)"]
    table = [head]
    for r in rows:
        if "error" in r:
            table.append([r["address"], "-", "error", "", "", "", "", r["error"]])
            continue
        peers = r.get("peers") or {}
        match = ", ".join(
            f"{p}={v['match']}"
            for p, v in sorted(peers.items())
            if isinstance(v, dict) and "match" in v
        )
        table.append(
            [
                r["address"],
                str(r.get("node_id")),
                str(r.get("role")),
                str(r.get("term")),
                str(r.get("commit_index")),
                str(r.get("last_applied")),
                str(r.get("leader_id") or "-"),
                match or "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distsync", description=__doc__)
    parser.add_argument("--version", action="version", version=f"distsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser(
        "bench",
        help="measure distsync against its peers",
        description=(
            "kernels: each native kernel against its peer library. commit: committed "
            "proposals per second and p50/p99 commit latency on a real 3-node cluster on "
            "127.0.0.1 (fsync on; the Raft log in segment files and in LMDB), with 1 and 64 "
            "concurrent proposers, against a 3-node PySyncObj cluster in the same run "
            "(installed with pip if missing). "
            "locks: acquire+release pairs per second and p50/p99 latency on a real 3-node "
            "cluster (fsync on) with 1 client, 64 clients on 64 locks and 16 clients on one "
            "lock, against PySyncObj's ReplLockManager (pip) and a 3-member etcd (Debian's "
            "etcd-server, apt-get when missing and root) in the same run."
        ),
    )
    bench.add_argument("what", choices=["kernels", "commit", "locks"],
                       help="which benchmark to run")  # fmt: skip
    bench.add_argument("--only", help="kernels: comma-separated (ring,wal,mesi,waitgraph)")
    bench.add_argument("--quick", action="store_true", help="smaller work, for a smoke run")
    bench.add_argument("--proposers", default="1,64",
                       help="commit: comma-separated proposer counts (default 1,64)")  # fmt: skip
    bench.add_argument("--duration", type=float,
                       help="commit, locks: seconds per run (default 3; 0.5 with --quick)")  # fmt: skip
    bench.add_argument("--reps", type=int,
                       help="commit, locks: runs per configuration, median kept (3; 1 with --quick)")  # fmt: skip
    bench.add_argument("--log-formats", dest="log_formats",
                       help="commit: Raft log formats to run, comma-separated "
                       "(segments,lmdb; segments with --quick)")  # fmt: skip
    bench.add_argument("--skip-pysyncobj", dest="skip_pysyncobj", action="store_true",
                       help="commit: distsync only (no peer, nothing installed)")  # fmt: skip
    bench.add_argument("--skip-peers", dest="skip_peers", action="store_true",
                       help="locks: distsync only (no peer, nothing installed)")  # fmt: skip
    bench.add_argument("--fsync-off-bound", dest="fsync_off_bound", action="store_true",
                       help="locks: also run distsync with fsync off on every node, "
                       "what the disk costs (a bound, not a configuration)")  # fmt: skip
    bench.add_argument("--shared-client", dest="shared_client", action="store_true",
                       help="locks: also run distsync with the clients as tasks of one "
                       "shared client (one connection, a session per task)")  # fmt: skip
    bench.add_argument("--plot", metavar="FILE",
                       help="locks: write a PNG of latency against clients (matplotlib)")  # fmt: skip
    bench.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.set_defaults(func=_cmd_bench)

    demo = sub.add_parser(
        "demo",
        help="a local 3-node cluster and a short lock story, narrated (about 10 s)",
        description=(
            "Start a 3-node cluster on 127.0.0.1 with temporary data dirs, show shared and "
            "exclusive locks, a deadlock detected with its cycle and the leader killed "
            "while locks are held and awaited, then stop everything. Exit 0 when all went "
            "as described, 1 (with the reason) otherwise."
        ),
    )
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", help="run one node of a cluster")
    serve.add_argument("--config", metavar="FILE", help="TOML file; flags override its keys")
    serve.add_argument("--id", help="this node's id, e.g. node_0")
    serve.add_argument("--listen", help="host:port to listen on")
    serve.add_argument("--peers", help="the other nodes: id=host:port,id=host:port")
    serve.add_argument("--data-dir", dest="data_dir", help="directory of this node's LMDB data")
    serve.add_argument("--secret-file", dest="secret_file", help="file holding the cluster secret")
    serve.add_argument("--metrics-port", dest="metrics_port", type=int, help="Prometheus port")
    serve.add_argument("--election-tick", dest="election_tick", type=int, help="ticks (default 10)")
    serve.add_argument(
        "--heartbeat-tick", dest="heartbeat_tick", type=int, help="ticks (default 1)"
    )
    serve.add_argument("--tick-interval", dest="tick_interval", type=float, help="seconds (0.05)")
    serve.add_argument("--snapshot-entries", dest="snapshot_entries", type=int,
                       help="snapshot after this many applied entries (default 10000)")  # fmt: skip
    serve.add_argument("--snapshot-keep", dest="snapshot_keep", type=int,
                       help="entries kept behind a snapshot (default 1000)")  # fmt: skip
    serve.add_argument("--no-sync", dest="no_sync", action="store_true",
                       help="no fsync (tests only: loses data on power failure)")  # fmt: skip
    serve.add_argument("--log-format", dest="log_format", choices=["segments", "lmdb"],
                       help="how a new Raft log is stored: segment files, one fdatasync per "
                       "commit (default), or LMDB, two ordered flushes per commit")  # fmt: skip
    _add_tls_flags(serve, "this node's")
    serve.add_argument("--log-level", dest="log_level", default="warning",
                       choices=["debug", "info", "warning", "error"])  # fmt: skip
    serve.set_defaults(func=_cmd_serve)

    status = sub.add_parser("status", help="show each node's role, term and indexes")
    status.add_argument("--peers", required=True, help="host:port,host:port of the nodes")
    status.add_argument("--json", action="store_true", help="a JSON list, for scripts")
    status.add_argument("--secret-file", dest="secret_file", help="file holding the cluster secret")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per node")
    _add_tls_flags(status, "this client's")
    status.set_defaults(func=_cmd_status)

    debug = sub.add_parser(
        "debug",
        help="show messages as the wire carries them: ask a node, or decode captured frames",
        description=(
            "Ask a node (--peer): connect with the cluster secret (and TLS if given), "
            "send one message (default: status) and print it and the node's reply, each "
            'as the envelope\'s JSON rendering (one per line; bytes as "base64:..."). A '
            "refused handshake prints the reason. Exit 0 on a reply, 1 on an error reply "
            "or no reply. Decode (--frames): print every length-prefixed frame of a file "
            "(e.g. a TCP stream saved from a packet capture of a non-TLS connection; '-' "
            "reads stdin); a bad frame is reported with its byte offset, exit 1."
        ),
    )
    what = debug.add_mutually_exclusive_group(required=True)
    what.add_argument("--peer", metavar="HOST:PORT", help="the node to ask")
    what.add_argument("--frames", metavar="FILE", help="decode captured frames ('-': stdin)")
    debug.add_argument("--send", default="status", metavar="TYPE",
                       help="message type to send (default: status)")  # fmt: skip
    debug.add_argument("--payload", metavar="JSON",
                       help='its payload, a JSON object ("base64:..." strings are bytes)')  # fmt: skip
    debug.add_argument("--pretty", action="store_true", help="indent the JSON")
    debug.add_argument("--secret-file", dest="secret_file", help="file holding the cluster secret")
    debug.add_argument("--timeout", type=float, default=2.0, help="seconds to connect, and to wait for the reply")  # fmt: skip
    _add_tls_flags(debug, "this client's")
    debug.set_defaults(func=_cmd_debug)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
