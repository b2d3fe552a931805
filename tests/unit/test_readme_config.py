"""The node config shown in the README is one that ``distsync serve`` accepts."""

from __future__ import annotations

import re
from pathlib import Path

from distsync.cli import _serve_config, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_toml_is_a_valid_serve_config(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the README shows one node config"
    secret = tmp_path / "secret"
    secret.write_text("s3cret-for-the-test\n")
    # Same file, with this test's own paths for the files it names.
    text = blocks[0].replace("/etc/distsync/secret", str(secret))
    text = text.replace("/var/lib/distsync", str(tmp_path / "data"))
    conf = tmp_path / "node.toml"
    conf.write_text(text)
    cfg = _serve_config(build_parser().parse_args(["serve", "--config", str(conf)]))
    assert cfg.id == "node_0"
    assert cfg.listen == ("10.0.0.1", 7400)
    assert cfg.peers == {"node_1": ("10.0.0.2", 7400), "node_2": ("10.0.0.3", 7400)}
    assert cfg.metrics_port == 9400
    assert cfg.secret == b"s3cret-for-the-test"
    assert cfg.tls is None
    # A flag wins over the file.
    args = build_parser().parse_args(["serve", "--config", str(conf), "--id", "node_9"])
    assert _serve_config(args).id == "node_9"
