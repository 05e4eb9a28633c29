"""Fixtures shared by the component tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_servers import BindServer, make_server


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindServer]:
    """A BIND 9 `named` on a free loopback port, serving a zone the test fills."""
    server = make_server("bind", tmp_path / "bind")
    try:
        yield server  # type: ignore[misc]
    finally:
        server.stop()
