"""What every test tier needs before it can start: the generated gRPC stubs, and
Hypothesis without its per-example deadline (a timing assertion: on a busy shared
machine one example may take 250 ms for reasons that are not the code's)."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import settings

settings.register_profile("sidecar", deadline=None)
settings.load_profile("sidecar")


def pytest_configure(config: pytest.Config) -> None:
    if importlib.util.find_spec("meshtest") is None or importlib.util.find_spec("music") is None:
        pytest.exit(
            "the gRPC stubs are not generated: run `make proto` (or `make test`, which does it)",
            returncode=4,
        )
