"""Real processes for the data-plane tests: an echo backend, and an outbound + inbound
sidecar pair in front of it (one module-wide set, started once); and the package as a
user installs it (one wheel build per session)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import packaging
from tests.integration.procs import (
    ECHO,
    MIB,
    Proc,
    Sidecar,
    echo_admin,
    echo_process,
    free_port,
    sidecar_process,
)
from tests.integration.trio import HEALTHY, NAMES, Trio


@dataclass
class Mesh:
    echo: Proc
    echo_port: int
    outbound: Sidecar  # the caller's sidecar (outbound listener only)
    inbound: Sidecar  # the backend's sidecar (inbound listener only)
    dead_port: int

    @property
    def outbound_addr(self) -> str:
        return f"127.0.0.1:{self.outbound.port('outbound')}"

    @property
    def inbound_addr(self) -> str:
        return f"127.0.0.1:{self.inbound.port('inbound')}"

    @property
    def echo_addr(self) -> str:
        return f"127.0.0.1:{self.echo_port}"


@pytest.fixture(scope="session")
def echo_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int]]:
    with echo_process(tmp_path_factory.mktemp("echo")) as (echo, echo_port):
        yield echo, echo_port


def _mesh(tmp: Path, echo: Proc, echo_port: int) -> Iterator[Mesh]:
    inbound_port = free_port()
    inbound_cfg = {
        "service": "echo",
        "inbound": {
            "listen": f"127.0.0.1:{inbound_port}",
            "app": f"127.0.0.1:{echo_port}",
            "health": {"interval_s": 0.2},
        },
        "max_message_bytes": 12 * MIB,
    }
    dead_port = free_port()
    outbound_cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "max_message_bytes": 12 * MIB,
        "upstreams": {
            "echo": {
                "grpc_services": [ECHO],
                "endpoints": [f"127.0.0.1:{inbound_port}"],
                "timeout_ms": 5000,
            },
            "dead": {
                "grpc_services": ["test.dead.v1.Dead"],
                "endpoints": [f"127.0.0.1:{dead_port}"],
            },
            "empty": {"grpc_services": ["test.empty.v1.Empty"], "endpoints": []},
        },
    }
    with (
        sidecar_process(tmp, "inbound", inbound_cfg) as inbound,
        # not /ready: upstream "empty" has no endpoints, on purpose
        sidecar_process(tmp, "outbound", outbound_cfg, wait="/live") as outbound,
    ):
        yield Mesh(echo, echo_port, outbound, inbound, dead_port)


@pytest.fixture(scope="session")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, echo_backend: tuple[Proc, int]
) -> Iterator[Mesh]:
    """The sidecar pair: outbound sidecar -> inbound sidecar -> echo."""
    yield from _mesh(tmp_path_factory.mktemp("mesh"), *echo_backend)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    """Three echo backends (a, b, c) with knobs, one set per test module."""
    tmp = tmp_path_factory.mktemp("trio")
    with (
        echo_process(tmp, "a") as (_, a),
        echo_process(tmp, "b") as (_, b),
        echo_process(tmp, "c") as (_, c),
    ):
        yield Trio({"a": a, "b": b, "c": c}, tmp)


@pytest.fixture
async def fresh(trio: Trio) -> AsyncIterator[Trio]:
    """The trio with every backend healthy before and after the test."""
    for n in NAMES:
        await echo_admin(trio.addr(n), **HEALTHY)
    try:
        yield trio
    finally:
        for n in NAMES:
            await echo_admin(trio.addr(n), **HEALTHY)


@dataclass
class Built:
    wheel: Path  # built by the Dockerfile's wheel step from a clean copy
    context: Path  # the Dockerfile's build context (its COPY lines over the clean copy)
    context_files: frozenset[str]  # in the context before the build (which leaves build/)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One wheel per session, as the Dockerfile builds it from a clean clone (a compiled
    build unless SIDECAR_PURE_PYTHON is set): the build generates the stubs."""
    tmp = tmp_path_factory.mktemp("build")
    clean = packaging.clean_copy(tmp / "clone")
    context = packaging.docker_context(clean, tmp / "context")
    files = frozenset(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    (tmp / "wheels").mkdir()
    return Built(packaging.build_wheel(context, tmp / "wheels"), context, files)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, built: Built) -> Path:
    """A fresh virtualenv, outside the repository, with that wheel installed."""
    return packaging.fresh_venv(tmp_path_factory.mktemp("user") / "venv", built.wheel)
