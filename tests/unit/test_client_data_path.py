"""The in-process client's data path is the relay's: no grpcio channel is made by the
client, the relay or the active health checks (they ride the relay's connections)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SIDECAR = Path(__file__).parents[2] / "sidecar"
DATA_PATH = [
    *sorted((SIDECAR / "client").glob("*.py")),
    *sorted((SIDECAR / "h2relay").glob("*.py")),
    SIDECAR / "health" / "checker.py",
    SIDECAR / "mesh.py",
]
_CHANNEL = re.compile(r"\b(insecure_channel|secure_channel|aio\.Channel\()")


@pytest.mark.parametrize("path", DATA_PATH, ids=lambda p: str(p.relative_to(SIDECAR)))
def test_no_grpcio_channel(path: Path) -> None:
    """No module on the data path creates a grpcio channel."""
    assert not _CHANNEL.findall(path.read_text()), f"{path} makes a grpcio channel"
