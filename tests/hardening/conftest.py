"""The hardening tier: each HTTP/2 attack against both listeners of a real sidecar."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.procs import Proc, echo_process


@pytest.fixture(scope="session")
def echo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int]]:
    with echo_process(tmp_path_factory.mktemp("echo")) as (proc, port):
        yield proc, port
