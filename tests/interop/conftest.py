"""The interop tier's one Lab per session: stubs generated once into a temp folder,
servers and sidecar pairs started on first use and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.lab import Lab
from tests.interop.stubs import generate


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("interop")
    lab = Lab(tmp, generate(tmp / "stubs"))
    try:
        yield lab
    finally:
        lab.close()
