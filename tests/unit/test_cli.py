"""The command line's option handling: ``serve``'s TLS flags on top of a TOML ``[tls]``
table, and the client-side TLS flags of ``status``/``debug``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distsync.cli import _serve_config, build_parser
from distsync.node import TlsFiles


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


BASE = ("--id", "node_0", "--listen", "127.0.0.1:7400", "--data-dir", "d")


def test_tls_flags_map_to_the_node_config() -> None:
    cfg = _serve_config(
        serve_args(*BASE, "--tls-cert", "n.crt", "--tls-key", "n.key", "--tls-ca", "ca.pem")
    )
    assert cfg.tls == TlsFiles(cert="n.crt", key="n.key", ca="ca.pem")


def test_tls_flags_override_single_keys_of_the_toml_table(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text('[tls]\ncert = "old.crt"\nkey = "old.key"\nca = "ca.pem"\n')
    cfg = _serve_config(serve_args(*BASE, "--config", str(conf), "--tls-cert", "new.crt"))
    assert cfg.tls == TlsFiles(cert="new.crt", key="old.key", ca="ca.pem")
    # The key may live in the certificate's file.
    conf.write_text('[tls]\ncert = "both.pem"\nca = "ca.pem"\n')
    cfg = _serve_config(serve_args(*BASE, "--config", str(conf)))
    assert cfg.tls == TlsFiles(cert="both.pem", key=None, ca="ca.pem")


def test_no_tls_without_flags_or_table() -> None:
    assert _serve_config(serve_args(*BASE)).tls is None


@pytest.mark.parametrize("flags", [("--tls-cert", "n.crt"), ("--tls-ca", "ca.pem")])
def test_tls_needs_both_a_certificate_and_a_ca(flags: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="--tls-cert and --tls-ca"):
        _serve_config(serve_args(*BASE, *flags))


def test_serve_refuses_half_a_tls_setup_with_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from distsync.cli import main

    assert main(["serve", *BASE, "--tls-cert", "n.crt"]) == 2
    assert "--tls-ca" in capsys.readouterr().err


def test_status_needs_a_ca_to_verify_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    from distsync.cli import main

    assert main(["status", "--peers", "127.0.0.1:1", "--tls-cert", "c.crt"]) == 2
    assert "--tls-ca" in capsys.readouterr().err
