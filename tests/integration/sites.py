"""Two sites on one machine for discovery tests: echo instances behind registering sidecars.

An `Instance` is a `services.echo` backend plus its inbound sidecar, which registers
it in DNS (RFC 2136) once healthy. A `Caller` is an outbound-only sidecar that
discovers the `echo` upstream per site. `drive()` sends unary calls at a fixed rate
for a bounded time and records who answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.dns_servers import KEY_NAME, KEY_SECRET, ProcessDnsServer
from tests.integration.procs import Proc, free_port, http, port_open, wait_until

ECHO = "meshtest.echo.v1.Echo"
SITES = ["lon3", "sto3"]


def registration(dns: ProcessDnsServer, **extra: Any) -> dict[str, Any]:
    return {
        "nameserver": dns.nameserver,
        "zone": "example.net",
        "tsig": {"name": KEY_NAME, "secret": KEY_SECRET},
        "ttl_s": 2,
        "check_interval_s": 0.2,
        "address": "127.0.0.1",
        **extra,
    }


def discovery(dns: ProcessDnsServer, **extra: Any) -> dict[str, Any]:
    return {
        "nameservers": [dns.nameserver],
        "sites": SITES,
        "ttl_floor_s": 0.5,
        "empty_grace_s": 1.0,
        "backoff_initial_s": 0.2,
        **extra,
    }


@dataclass
class Instance:
    name: str
    site: str
    tmp: Path
    dns: ProcessDnsServer
    reg_extra: dict[str, Any] = field(default_factory=dict)
    echo: Proc | None = None
    sidecar: Proc | None = None
    admin: int = 0
    inbound: int = 0

    def start(self) -> None:
        echo_port = free_port()
        self.echo = Proc(
            ["-m", "services.echo", "--port", str(echo_port), "--name", self.name],
            self.tmp / f"{self.name}-echo.log",
        )
        self.admin, self.inbound = free_port(), free_port()
        config = {
            "service": "echo",
            "site": self.site,
            "inbound": {
                "listen": f"127.0.0.1:{self.inbound}",
                "app": f"127.0.0.1:{echo_port}",
                "health": {"interval_s": 0.2, "timeout_s": 0.5},
            },
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "drain_grace_s": 0.5,
            "registration": registration(self.dns, **self.reg_extra),
        }
        path = self.tmp / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.sidecar = Proc(
            ["-m", "sidecar", "run", "-c", str(path)], self.tmp / f"{self.name}.log"
        )

    def wait_registered(self, timeout: float = 20.0) -> None:
        def registered() -> bool:
            assert self.sidecar is not None and self.sidecar.popen.poll() is None, self.logs()
            status, body = http("GET", f"http://127.0.0.1:{self.admin}/registration")
            return status == 200 and b'"registered": true' in body

        wait_until(registered, timeout, f"{self.name} registered")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.inbound}"

    def sigterm(self) -> None:
        """Stop in order: the sidecar (deregister, linger, close), then the app."""
        assert self.sidecar is not None
        self.sidecar.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> int:
        assert self.sidecar is not None and self.echo is not None
        code = self.sidecar.popen.wait(timeout)
        self.echo.stop()
        return code

    def sigkill(self) -> None:
        for proc in (self.sidecar, self.echo):
            if proc is not None:
                proc.stop()  # SIGKILL

    def stop(self) -> None:
        self.sigkill()

    def logs(self) -> str:
        return self.sidecar.logs() if self.sidecar else ""


class Caller:
    """An outbound-only sidecar in `site` discovering `echo` in both sites."""

    def __init__(self, tmp: Path, dns: ProcessDnsServer, site: str = "lon3", **up: Any) -> None:
        self.admin, self.port = free_port(), free_port()
        upstream: dict[str, Any] = {"grpc_services": [ECHO], "timeout_ms": 3000, **up}
        config = {
            "site": site,
            "outbound": {"listen": f"127.0.0.1:{self.port}"},
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "discovery": discovery(dns),
            "upstreams": {"echo": upstream},
        }
        path = tmp / "caller.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = Proc(["-m", "sidecar", "run", "-c", str(path)], tmp / "caller.log")
        wait_until(lambda: port_open(self.admin) or self.proc.popen.poll() is not None)
        assert self.proc.popen.poll() is None, self.proc.logs()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def clusters(self) -> Any:
        import json

        status, body = http("GET", f"http://127.0.0.1:{self.admin}/clusters")
        assert status == 200, body
        return json.loads(body)

    def endpoints(self) -> set[str]:
        return {e["address"] for e in self.clusters()["echo"]["endpoints"]}

    def metrics(self) -> str:
        return http("GET", f"http://127.0.0.1:{self.admin}/metrics")[1].decode()

    def stop(self) -> None:
        self.proc.stop()


@dataclass
class Result:
    t: float
    code: str
    served_by: str


async def drive(
    address: str, seconds: float, rate: float = 80.0, *, timeout_s: float = 3.0
) -> list[Result]:
    """Unary calls at `rate`/s for `seconds` (each with a deadline): who answered, and how."""
    results: list[Result] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)

        async def one(t: float) -> None:
            try:
                reply = await stub.Unary(echo_pb2.EchoRequest(payload=b"hi"), timeout=timeout_s)
                results.append(Result(t, "OK", reply.served_by))
            except grpc.aio.AioRpcError as err:
                results.append(Result(t, err.code().name, ""))

        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        n = int(seconds * rate)
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(time.monotonic() - start)))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + 5)
    return results


def ratio(results: list[Result]) -> float:
    return sum(r.code == "OK" for r in results) / max(len(results), 1)


def share(results: list[Result], prefix: str) -> float:
    ok = [r for r in results if r.code == "OK"]
    return sum(r.served_by.startswith(prefix) for r in ok) / max(len(ok), 1)
