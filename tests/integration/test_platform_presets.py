"""The naming presets with real sidecars: Kubernetes and Consul answer shapes from BIND.

Real processes: BIND 9 serving two clusters' zones (`lon3.local`, `sto3.local`) and
Consul's (`consul`), `services.echo` backends each behind an inbound sidecar that
registers nothing (the platform does: here the test writes what CoreDNS or Consul would
answer, tests/platform_dns.py), and a caller sidecar in lon3 with `discovery.naming`
set. The four call kinds reach lon3's endpoints; lon3's instances die and the platform
drops them; the caller fails over to sto3 and the four kinds reach sto3.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.dns_servers import BindServer
from tests.integration.procs import ECHO, Proc, free_port, http, port_open, wait_until
from tests.integration.sites import drive, ratio, share
from tests.platform_dns import (
    ConsulInstance,
    PodEndpoint,
    publish_consul_service,
    publish_headless_service,
)

pytestmark = pytest.mark.timeout(150)
SITES = ["lon3", "sto3"]


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindServer]:
    server = BindServer(tmp_path / "bind", zones=["lon3.local", "sto3.local", "consul"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Backend:
    """An echo app and its inbound sidecar (no registration: the platform registers)."""

    name: str
    host: str
    port: int
    tmp: Path
    procs: tuple[Proc, ...] = ()
    admin: int = 0

    def start(self) -> None:
        app_port = free_port()
        app = Proc(
            ["-m", "services.echo", "--port", str(app_port), "--name", self.name],
            self.tmp / f"{self.name}-echo.log",
        )
        self.admin = free_port()
        config = {
            "service": "echo",
            "inbound": {
                "listen": f"{self.host}:{self.port}",
                "app": f"127.0.0.1:{app_port}",
                "health": {"interval_s": 0.2, "timeout_s": 0.5},
            },
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "drain_grace_s": 0.5,
        }
        path = self.tmp / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = Proc(["-m", "sidecar", "run", "-c", str(path)], self.tmp / f"{self.name}.log")
        self.procs = (app, sidecar)

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert all(p.popen.poll() is None for p in self.procs), self.procs[1].logs()
            return http("GET", f"http://127.0.0.1:{self.admin}/ready")[0] == 200

        wait_until(ready, 60, f"{self.name} ready")  # slow to start on a busy machine

    def kill(self) -> None:
        for proc in self.procs:
            proc.stop()


def shared_port(hosts: list[str]) -> int:
    """One port free on every host: a headless Service's endpoints share its port."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError("no port free on every loopback address")


class Caller:
    def __init__(self, tmp: Path, bind: BindServer, discovery: dict[str, Any]) -> None:
        self.admin, self.port = free_port(), free_port()
        config = {
            "site": "lon3",
            "outbound": {"listen": f"127.0.0.1:{self.port}"},
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "discovery": {
                "nameservers": [bind.nameserver],
                "sites": SITES,
                "ttl_floor_s": 0.5,
                "ttl_cap_s": 1.0,
                "empty_grace_s": 1.0,
                "backoff_initial_s": 0.2,
                **discovery,
            },
            "upstreams": {
                "echo": {
                    "grpc_services": [ECHO],
                    "timeout_ms": 3000,
                    "retries": {"max_attempts": 3, "on": ["UNAVAILABLE"], "backoff_base_ms": 5},
                    "breaker": {"fail_max": 3, "reset_timeout_s": 2.0},
                    "health_check": {"interval_s": 0.3, "timeout_s": 0.3, "unhealthy_threshold": 2},
                }
            },
        }
        path = tmp / "caller.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = Proc(["-m", "sidecar", "run", "-c", str(path)], tmp / "caller.log")
        wait_until(lambda: port_open(self.admin) or self.proc.popen.poll() is not None)
        assert self.proc.popen.poll() is None, self.proc.logs()

    def endpoints(self) -> set[str]:
        import json

        status, body = http("GET", f"http://127.0.0.1:{self.admin}/clusters")
        assert status == 200, body
        return {e["address"] for e in json.loads(body)["echo"]["endpoints"]}

    def stop(self) -> None:
        self.proc.stop()


async def four_kinds(address: str) -> dict[str, set[str]]:
    """One call of each kind through the caller: who served each."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        req = echo_pb2.EchoRequest(payload=b"p", count=3)
        unary = await stub.Unary(req, timeout=5)
        server = [r async for r in stub.ServerStream(req, timeout=5)]

        async def requests() -> Any:
            for _ in range(3):
                yield echo_pb2.EchoRequest(payload=b"c")

        client = await stub.ClientStream(requests(), timeout=5)
        bidi = [r async for r in stub.Bidi(requests(), timeout=5)]
    assert len(server) == 3 and client.received == 3 and len(bidi) == 3
    return {
        "unary": {unary.served_by},
        "server_stream": {r.served_by for r in server},
        "client_stream": {client.served_by},
        "bidi": {r.served_by for r in bidi},
    }


Publish = Callable[[str, list[Backend]], None]


async def run_failover(
    tmp: Path,
    bind: BindServer,
    discovery: dict[str, Any],
    lon3: list[Backend],
    sto3: list[Backend],
    publish: Publish,
) -> None:
    caller = None
    try:
        for b in lon3 + sto3:
            b.start()
        for b in lon3 + sto3:
            b.wait_ready()
        publish("lon3", lon3)
        publish("sto3", sto3)
        caller = Caller(tmp, bind, discovery)
        want = {f"{b.host}:{b.port}" for b in lon3 + sto3}
        wait_until(lambda: caller.endpoints() == want, 40, "caller sees both sites")

        kinds = await four_kinds(f"127.0.0.1:{caller.port}")
        assert all(s <= {b.name for b in lon3} for s in kinds.values()), kinds

        # lon3's pods die; the platform notices and takes them out of DNS a moment later.
        load = asyncio.create_task(drive(f"127.0.0.1:{caller.port}", 6.0, 50))
        await asyncio.sleep(1.0)
        for b in lon3:
            b.kill()
        await asyncio.sleep(1.0)
        publish("lon3", [])
        moved = await load
        assert ratio(moved) >= 0.99, sorted({r.code for r in moved})
        assert share([r for r in moved if r.t >= 4.5], "sto3") == 1.0

        kinds = await four_kinds(f"127.0.0.1:{caller.port}")
        assert all(s <= {b.name for b in sto3} for s in kinds.values()), kinds
        wait_until(lambda: caller.endpoints() == {f"{b.host}:{b.port}" for b in sto3}, 10)
    finally:
        for b in lon3 + sto3:
            b.kill()
        if caller is not None:
            caller.stop()


async def test_kubernetes_preset_headless_services_in_two_clusters(
    bind: BindServer, tmp_path: Path
) -> None:
    """CoreDNS's headless-Service answer: every endpoint at the Service's one port, targets
    named by the pod IP; site = cluster = cluster_domain."""
    hosts = {"lon3": ["127.0.0.11", "127.0.0.12"], "sto3": ["127.0.0.21"]}
    port = shared_port([h for hs in hosts.values() for h in hs])
    backends = {
        site: [Backend(f"{site}-{i}", h, port, tmp_path) for i, h in enumerate(hs)]
        for site, hs in hosts.items()
    }

    def publish(site: str, alive: list[Backend]) -> None:
        publish_headless_service(
            bind,
            service="echo",
            namespace="music",
            cluster_domain=f"{site}.local",
            port=port,
            endpoints=[PodEndpoint(b.host) for b in alive],
        )

    discovery = {
        "naming": "kubernetes",
        "namespace": "music",
        "per_site": {s: {"cluster_domain": f"{s}.local"} for s in SITES},
    }
    await run_failover(tmp_path, bind, discovery, backends["lon3"], backends["sto3"], publish)


async def test_consul_preset_node_and_addr_targets_in_two_datacenters(
    bind: BindServer, tmp_path: Path
) -> None:
    """Consul's service answer: one instance with a node target, one with an addr target
    (a service address of its own); site = datacenter."""
    lon3 = [
        Backend("lon3-a", "127.0.0.1", free_port(), tmp_path),
        Backend("lon3-b", "127.0.0.13", free_port("127.0.0.13"), tmp_path),
    ]
    sto3 = [Backend("sto3-a", "127.0.0.1", free_port(), tmp_path)]

    def publish(site: str, alive: list[Backend]) -> None:
        instances = [
            ConsulInstance(
                f"{site}-node-{i}",
                "127.0.0.1",
                b.port,
                service_address=None if b.host == "127.0.0.1" else b.host,
            )
            for i, b in enumerate(alive)
        ]
        publish_consul_service(bind, service="echo", datacenter=site, instances=instances)

    await run_failover(tmp_path, bind, {"naming": "consul"}, lon3, sto3, publish)
