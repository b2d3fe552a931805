"""Three ``distsync serve`` processes on 127.0.0.1 with TLS and client certificates, set
by the ``--tls-cert/--tls-key/--tls-ca`` flags: the cluster elects and commits; a node
whose certificate another CA signed is refused by its peers (and catches up once it has a
valid one); a client without a valid certificate, or without TLS, is refused; and
``distsync status`` and ``distsync debug`` speak TLS with the same flags.

The CA and certificates are throwaway ones made with the ``cryptography`` package (a test
extra). Every process is started by a :class:`ProcessCluster` in a ``with`` block, which
kills it however the test ends; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from distsync.cli import main
from distsync.errors import AuthError, ClusterUnavailable, DistSyncError
from distsync.net.auth import client_ssl_context
from distsync.net.envelope import Envelope
from distsync.net.transport import connect
from distsync.node import encode_command, fetch_status
from distsync.testing.cluster import HOST, ProcessCluster, _child_env

x509 = pytest.importorskip(
    "cryptography.x509", reason="cryptography (in the test extra) makes the certificates"
)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

T = TypeVar("T")
TEST_TIMEOUT = 60.0


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), TEST_TIMEOUT)

    return asyncio.run(bounded())


# ==== a throwaway PKI =========================================================================


def _name(cn: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: Any, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class CA:
    """A self-signed CA that issues certificates valid for 127.0.0.1 (as server, the
    address peers dial; as client, the same certificate authenticates the caller)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str) -> tuple[str, str]:
        """A certificate and key for ``cn``; their file paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.dir / f"{self.name}-{cn}.crt", self.dir / f"{self.name}-{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return str(cert_path), str(key_path)


def tls_flags(cert: str, key: str, ca: str | Path) -> list[str]:
    return ["--tls-cert", cert, "--tls-key", key, "--tls-ca", str(ca)]


class TlsCluster(ProcessCluster):
    """A ProcessCluster whose every node runs with its own ``--tls-*`` flags."""

    def __init__(self, n: int, tls: dict[str, list[str]], **kw: Any) -> None:
        super().__init__(n, **kw)
        self.tls = tls

    def command(self, nid: str) -> list[str]:
        return [*super().command(nid), *self.tls[nid]]


# ==== helpers over TLS =========================================================================


async def status(c: ProcessCluster, nid: str, ctx: ssl.SSLContext | None) -> dict[str, Any]:
    return await fetch_status(HOST, c.ports[nid], c.secret, timeout=1.0, ssl=ctx)


async def await_leader(
    c: ProcessCluster, ctx: ssl.SSLContext, among: Sequence[str], timeout: float = 15.0
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for nid in among:
            try:
                if (await status(c, nid, ctx))["role"] == "leader":
                    return nid
            except (DistSyncError, OSError, asyncio.TimeoutError):
                pass
        if loop.time() > deadline:
            raise TimeoutError(f"no leader among {among} within {timeout}s")
        await asyncio.sleep(0.05)


async def propose_incr(c: ProcessCluster, leader: str, ctx: ssl.SSLContext) -> int:
    """One ``incr`` proposed to ``leader`` over TLS; the index it was applied at."""
    conn = await connect(HOST, c.ports[leader], "tls-client", c.secret, ssl=ctx, timeout=2.0)
    try:
        env = Envelope.make(conn.ids, "propose", leader, {"data": encode_command("incr", "n")})
        reply = await conn.request(env, timeout=10.0)
        return int(reply.payload["index"])
    finally:
        conn.close()


async def await_applied(
    c: ProcessCluster, nid: str, ctx: ssl.SSLContext, index: int, timeout: float = 15.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        try:
            last = await status(c, nid, ctx)
            if last["last_applied"] >= index:
                return
        except (DistSyncError, OSError, asyncio.TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{nid} did not apply {index} within {timeout}s (last: {last!r})")


async def refused(c: ProcessCluster, nid: str, ctx: ssl.SSLContext | None) -> BaseException:
    """The error of a status request to ``nid`` that must fail (it fails the test if the
    node answers)."""
    try:
        st = await status(c, nid, ctx)
    except (AuthError, ClusterUnavailable, OSError, asyncio.TimeoutError) as exc:
        return exc
    raise AssertionError(f"{nid} answered a client it should refuse: {st}")


# ==== the test ===================================================================================


def test_tls_cluster_elects_commits_and_refuses_invalid_certificates(tmp_path: Path) -> None:
    good, rogue = CA(tmp_path, "cluster-ca"), CA(tmp_path, "rogue-ca")
    ids = [f"node_{i}" for i in range(3)]
    node_files = {nid: good.issue(nid) for nid in ids}
    tls = {nid: tls_flags(*node_files[nid], good.path) for nid in ids}
    # node_2 starts with a certificate of another CA (which it also trusts): its peers
    # must refuse it at the TLS handshake, and it must refuse them.
    rogue_node2 = rogue.issue("node_2")
    tls["node_2"] = tls_flags(*rogue_node2, rogue.path)
    client_cert, client_key = good.issue("operator")
    ok = client_ssl_context(good.path, client_cert, client_key)
    rogue_client = client_ssl_context(good.path, *rogue.issue("intruder"))
    no_cert = client_ssl_context(good.path)

    with TlsCluster(3, tls, base_dir=tmp_path / "cluster") as c:

        async def body() -> None:
            # Two nodes with valid certificates are a quorum: they elect and commit.
            leader = await await_leader(c, ok, ["node_0", "node_1"])
            index = await propose_incr(c, leader, ok)
            for nid in ("node_0", "node_1"):
                await await_applied(c, nid, ok, index)
            # Clients without a valid certificate are refused before any message.
            for ctx in (rogue_client, no_cert, None):
                err = await refused(c, leader, ctx)
                assert not isinstance(err, asyncio.TimeoutError), err
            # The rogue node got nothing from its peers: not one entry, not one term.
            own_ctx = client_ssl_context(rogue.path, *rogue_node2)
            st2 = await status(c, "node_2", own_ctx)
            assert st2["commit_index"] == 0 and st2["last_applied"] == 0, st2
            st_leader = await status(c, leader, ok)
            assert st_leader["peers"]["node_2"]["match"] == 0, st_leader
            # With a valid certificate the same node joins and catches up: the refusal
            # was the certificate's doing, nothing else.
            c.kill("node_2")
            c.tls["node_2"] = tls_flags(*node_files["node_2"], good.path)
            c.start("node_2")
            await await_applied(c, "node_2", ok, index)

        run(body)

        # The command line speaks TLS with the same flags ...
        def cli(*extra: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "distsync", "status", "--json", "--timeout", "2"]
            secret_file = tmp_path / "cluster" / "node_0.secret"
            addrs = ",".join(c.address(n) for n in c.ids)
            cmd += ["--peers", addrs, "--secret-file", str(secret_file), *extra]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=_child_env())

        done = cli(*tls_flags(client_cert, client_key, good.path))
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert sorted(r["node_id"] for r in rows) == ids
        assert [r["role"] for r in rows].count("leader") == 1
        # ... and without them every node refuses it.
        plain = cli()
        assert plain.returncode == 1
        assert all("error" in r for r in json.loads(plain.stdout)), plain.stdout

        # So does ``distsync debug``.
        secret = ["--secret-file", str(tmp_path / "cluster" / "node_0.secret")]
        probe = ["debug", "--peer", c.address("node_0"), *secret]
        assert main([*probe, *tls_flags(client_cert, client_key, good.path)]) == 0
        assert main(probe) == 1
