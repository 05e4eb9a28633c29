"""The CLI skeleton: help, version, and verbs that are not built yet exit non-zero."""

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import __version__
from sidecar.cli import main


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0


def test_check_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("upstreams:\n  p:\n    timeout_ms: -5\n")
    assert main(["check", "-c", str(cfg)]) == 1
    assert "upstreams.p.timeout_ms" in capsys.readouterr().err
    cfg.write_text("upstreams:\n  p:\n    endpoints: ['127.0.0.1:1']\n")
    assert main(["check", "-c", str(cfg)]) == 0


def test_demo_hands_its_options_to_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """`sidecar demo --help` shows the demo's own options (they are passed through)."""
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    assert "--no-dashboard" in capsys.readouterr().out
