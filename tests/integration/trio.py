"""Three echo backends with test knobs, shared by a test module, and outbound sidecars
configured per test in front of them (the failure-handling suites of both data planes).
The `trio` and `fresh` fixtures live in conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.procs import ECHO, Sidecar, echo_admin, free_port, sidecar_process

NAMES = ("a", "b", "c")
HEALTHY: dict[str, Any] = {"fail": 0, "hang": False, "delay_ms": 0, "health": "SERVING"}


@dataclass
class Trio:
    ports: dict[str, int]
    tmp: Path

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    async def calls(self) -> dict[str, int]:
        return {n: (await echo_admin(self.addr(n)))["calls"] for n in NAMES}

    @contextmanager
    def sidecar(self, name: str, **upstream: Any) -> Iterator[Sidecar]:
        cfg: dict[str, Any] = {
            "outbound": {"listen": f"127.0.0.1:{free_port()}"},
            "upstreams": {
                "echo": {
                    "grpc_services": [ECHO],
                    "endpoints": [self.addr(n) for n in NAMES],
                    **upstream,
                }
            },
        }
        with sidecar_process(self.tmp, name, cfg) as side:
            yield side
