"""The command line without a cluster: ``serve``'s TLS flags on top of a TOML ``[tls]``
table, the client-side TLS flags of ``status``, and ``debug --frames``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import msgpack
import pytest

from distsync.cli import _serve_config, build_parser, main
from distsync.net.envelope import Envelope, MsgIdGenerator
from distsync.net.framing import FrameEncoder
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


def test_log_format_from_the_flag_or_the_file(tmp_path: Path) -> None:
    assert _serve_config(serve_args(*BASE)).log_format == "segments"
    assert _serve_config(serve_args(*BASE, "--log-format", "lmdb")).log_format == "lmdb"
    conf = tmp_path / "node.toml"
    conf.write_text('log_format = "lmdb"\n')
    assert _serve_config(serve_args(*BASE, "--config", str(conf))).log_format == "lmdb"
    flag_wins = serve_args(*BASE, "--config", str(conf), "--log-format", "segments")
    assert _serve_config(flag_wins).log_format == "segments"


def test_an_unknown_log_format_in_the_file_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text('log_format = "sqlite"\n')
    with pytest.raises(ValueError, match="log_format must be one of segments, lmdb, not 'sqlite'"):
        _serve_config(serve_args(*BASE, "--config", str(conf)))


def test_no_tls_without_flags_or_table() -> None:
    assert _serve_config(serve_args(*BASE)).tls is None


@pytest.mark.parametrize("flags", [("--tls-cert", "n.crt"), ("--tls-ca", "ca.pem")])
def test_tls_needs_both_a_certificate_and_a_ca(flags: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="--tls-cert and --tls-ca"):
        _serve_config(serve_args(*BASE, *flags))


def test_serve_refuses_half_a_tls_setup_with_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", *BASE, "--tls-cert", "n.crt"]) == 2
    assert "--tls-ca" in capsys.readouterr().err


def test_status_needs_a_ca_to_verify_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--peers", "127.0.0.1:1", "--tls-cert", "c.crt"]) == 2
    assert "--tls-ca" in capsys.readouterr().err


# ==== distsync debug --frames =====================================================================


def frames_file(tmp_path: Path, *chunks: bytes) -> str:
    f = tmp_path / "capture.bin"
    f.write_bytes(b"".join(chunks))
    return str(f)


def envelopes() -> list[Envelope]:
    ids = MsgIdGenerator("node_1")
    vote = Envelope.make(ids, "request_vote", "node_0", {"term": 3, "last_log_index": 7})
    append = Envelope.make(ids, "append_entries", "node_0", {"entries": [b"\x00\xff"]})
    return [vote, append]


def test_frames_decode_to_the_json_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envs = envelopes()
    path = frames_file(tmp_path, FrameEncoder().encode_batch(envs))
    assert main(["debug", "--frames", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [e.to_json() for e in envs]
    assert json.loads(out[1])["payload"]["entries"] == ["base64:AP8="]


def test_a_bad_frame_is_reported_with_its_offset_and_the_rest_still_decode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vote, append = envelopes()
    enc = FrameEncoder()
    first = enc.encode(vote)
    body = msgpack.packb([1, 2])  # a frame whose body is no map
    bad = len(body).to_bytes(4, "big") + body
    tail = enc.encode(append)
    path = frames_file(tmp_path, first, bad, tail, tail[:7])  # and a torn last frame
    assert main(["debug", "--frames", path]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [vote.to_json(), append.to_json()]
    assert f"offset {len(first)}: message body must be a map" in err
    torn_at = len(first) + len(bad) + len(tail)
    assert f"offset {torn_at}: frame of" in err


def test_frames_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    envs = envelopes()
    stdin = io.TextIOWrapper(io.BytesIO(FrameEncoder().encode_batch(envs)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["debug", "--frames", "-", "--pretty"]) == 0
    assert capsys.readouterr().out == "".join(e.to_json(indent=2) + "\n" for e in envs)
