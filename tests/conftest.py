"""What every test tier needs before it can start: the generated gRPC stubs."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if importlib.util.find_spec("meshtest") is None or importlib.util.find_spec("music") is None:
        pytest.exit(
            "the gRPC stubs are not generated: run `make proto` (or `make test`, which does it)",
            returncode=4,
        )
