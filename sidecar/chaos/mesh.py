"""A mesh of a team's own services for tests: `ChaosMesh`, what the pytest fixture
`chaos_mesh` (sidecar/chaos/pytest_plugin.py) returns. The same topology as `sidecar
chaos run` (sidecar/chaos/topology.py) and the same faults, as plain method calls.

    def test_cart_survives_a_crash(chaos_mesh):
        mesh = chaos_mesh({"cart": {"command": "python app.py --port {port}",
                                    "sites": {"lon3": 3},
                                    "grpc_services": ["shop.v1.Cart"]}})
        channel = grpc.insecure_channel(mesh.target)   # the caller sidecar's outbound
        ...
        mesh.kill(mesh.busiest("cart"))
        ...                                            # calls still succeed

Does I/O. The mesh runs its own event loop in a thread, so the test needs no asyncio;
everything it started is killed when the test ends, pass or fail, and the test fails
if a process of it survived.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sidecar.chaos.procs import leaked
from sidecar.chaos.spec import parse_scenario
from sidecar.chaos.topology import Instance, Topology

T = TypeVar("T")


class ChaosMesh:
    """A running mesh: the registry, every instance, one caller sidecar, fault verbs."""

    def __init__(
        self,
        services: dict[str, Any],
        workdir: Path,
        *,
        target: str | None = None,
        domain: str = "example.net",
        upstream: dict[str, Any] | None = None,
        caller_site: str | None = None,
        base: Path | None = None,
        stubs: list[str] | None = None,
    ) -> None:
        target = target or next(iter(services))
        # The topology reads its caller's target (and site) from a scenario's load section;
        # the fixture has no load of its own, so the section only names them.
        load: dict[str, Any] = {"service": target, "method": "/fixture.Mesh/Call", "rate": 1,
                                "duration_s": 1, "site": caller_site}  # fmt: skip
        self.scenario = parse_scenario(
            {
                "name": "pytest",
                "domain": domain,
                "services": services,
                "load": load,
                "upstream": upstream or {},
                "stubs": stubs or [],
                "steady_state": {"warmup_s": 0},
            }
        )
        run_id = f"{os.getpid()}-{time.time_ns()}"
        self.topology = Topology(self.scenario, base or Path.cwd(), workdir, run_id)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ChaosMesh:
        async def up() -> None:
            await self.topology.start_registry()
            await self.topology.start_instances()
            await self.topology.start_caller()

        self._run(up())
        return self

    # -- where to send calls -----------------------------------------------------------

    @property
    def target(self) -> str:
        """host:port of the caller sidecar's outbound listener: dial it for every call."""
        return f"127.0.0.1:{self.topology.caller_outbound}"

    def instances(self, service: str | None = None) -> list[Instance]:
        return [i for i in self.topology.instances if service in (None, i.service)]

    def endpoints(self) -> list[dict[str, Any]]:
        """The target's endpoints as the caller sidecar's /clusters shows them."""
        return self.topology.endpoints()

    def busiest(self, service: str | None = None) -> Instance:
        return self._run(self.topology.busiest(service or self.scenario.load.service))

    # -- faults (the same verbs as the scenario file's) --------------------------------

    def kill(self, inst: Instance) -> None:
        self.topology.kill(inst)

    def stop(self, inst: Instance) -> None:
        """SIGSTOP: a hung instance (connections open, nothing answers)."""
        self.topology.freeze(inst)

    def resume(self, inst: Instance) -> None:
        self.topology.thaw(inst)

    def partition(self, inst: Instance) -> None:
        """The instance's sidecar frozen: nothing reaches its app (see runner.py)."""
        self.topology.freeze(inst, sidecar_only=True)

    def latency(self, inst: Instance, ms: float, percent: float = 100.0) -> None:
        self._run(self.topology.set_fault(inst, {"delay": {"percent": percent, "ms": ms}}))

    def abort(self, inst: Instance, status: str = "UNAVAILABLE", percent: float = 100.0) -> None:
        self._run(self.topology.set_fault(inst, {"abort": {"percent": percent, "status": status}}))

    def clear_faults(self, inst: Instance) -> None:
        self._run(self.topology.clear_fault(inst))

    def dns_down(self) -> None:
        self.topology.stop_registry()

    def dns_up(self) -> None:
        self._run(self.topology.start_registry())

    def site_down(self, site: str) -> None:
        for inst in self.instances():
            if inst.site == site and inst.state == "up":
                self.topology.kill(inst)

    def scale_out(self, service: str, site: str, count: int = 1) -> list[Instance]:
        added = [self.topology.add_instance(service, site) for _ in range(count)]

        async def ready() -> None:
            await asyncio.gather(*(self.topology.wait_ready(a) for a in added))

        self._run(ready())
        return added

    def scale_in(self, inst: Instance) -> None:
        """Drain, then SIGTERM; returns when it is done."""
        self._run(self.topology.scale_in(inst))

    def close(self) -> list[str]:
        """Kill everything; the processes that survived (should be none)."""
        self.topology.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        end = time.monotonic() + 5
        while (left := leaked(self.topology.run_id)) and time.monotonic() < end:
            time.sleep(0.1)
        return left
