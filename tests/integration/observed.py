"""A small mesh that makes every metric the dashboards and alerts read, with real
processes: the embedded DNS registry; an echo app behind a registering inbound sidecar
with tight admission; a caller sidecar that discovers it by SRV. Shared by the
dashboard-metrics and access-log tests.

The caller's upstreams, all reached by `:authority` (the channel's default authority):
  echo   discovered by SRV: the registered inbound sidecar
  flaky  static [a dead port, the inbound sidecar], round robin, one retry: every other
         call's first attempt fails to connect and is retried on the live endpoint;
         its dead endpoint's breaker opens (fail_max 2, one of two may be ejected)
  dead   static [a dead port], retries without budget (refused: budget spent),
         eager throttling (some attempts rejected locally), its breaker held closed
         after two failures (one endpoint: none may be ejected)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.dns_servers import ProcessDnsServer, make_server
from tests.integration.procs import Sidecar, echo_process, free_port, sidecar_process
from tests.integration.sites import registration

SITE = "lon3"


@dataclass
class Observed:
    dns: ProcessDnsServer
    server: Sidecar  # inbound, in front of the echo app
    caller: Sidecar  # outbound
    dead_port: int

    @property
    def caller_addr(self) -> str:
        return f"127.0.0.1:{self.caller.port('outbound')}"


@contextmanager
def observed_mesh(
    tmp: Path,
    server_extra: dict[str, Any] | None = None,
    caller_extra: dict[str, Any] | None = None,
) -> Iterator[Observed]:
    with ExitStack() as stack:
        (tmp / "registry").mkdir(exist_ok=True)
        dns = make_server("registry", tmp / "registry")
        stack.callback(dns.stop)
        _, echo_port = stack.enter_context(echo_process(tmp))
        server_cfg = {
            "service": "echo",
            "site": SITE,
            "inbound": {
                "listen": f"127.0.0.1:{free_port()}",
                "app": f"127.0.0.1:{echo_port}",
                "health": {"interval_s": 0.2},
                # one call at a time, none waiting; calls with under 50 ms left are dropped
                "admission": {"max_concurrency": 1, "queue_size": 0, "min_deadline_ms": 50},
            },
            "registration": registration(dns),
            **(server_extra or {}),
        }
        server = stack.enter_context(sidecar_process(tmp, "server", server_cfg))
        dead = free_port()
        inbound = f"127.0.0.1:{server.port('inbound')}"
        caller_cfg = {
            "site": SITE,
            "outbound": {"listen": f"127.0.0.1:{free_port()}"},
            "discovery": {
                "nameservers": [dns.nameserver],
                "sites": [SITE],
                "ttl_floor_s": 0.5,
                "backoff_initial_s": 0.2,
            },
            "upstreams": {
                "echo": {"timeout_ms": 3000, "throttling": None},
                "flaky": {
                    "endpoints": [f"127.0.0.1:{dead}", inbound],
                    "lb": "round_robin",
                    "retries": {"max_attempts": 2, "backoff_base_ms": 1, "backoff_max_ms": 5},
                    "breaker": {"fail_max": 2, "reset_timeout_s": 60},
                    "throttling": None,
                },
                "dead": {
                    "endpoints": [f"127.0.0.1:{dead}"],
                    "retries": {"budget_percent": 0, "min_retries_per_s": 0},
                    "throttling": {"k": 1, "min_requests": 0},
                    "breaker": {"fail_max": 2},
                },
            },
            **(caller_extra or {}),
        }
        # /ready once discovery found the registered server (every upstream has an endpoint)
        caller = stack.enter_context(sidecar_process(tmp, "caller", caller_cfg))
        yield Observed(dns, server, caller, dead)


async def unary(
    addr: str, authority: str, deadline_s: float = 2.0, metadata: Any = (), **knobs: Any
) -> tuple[str, dict[str, str]]:
    """One Echo/Unary call routed by `authority`: (status name, trailers)."""
    async with grpc.aio.insecure_channel(
        addr, options=[("grpc.default_authority", authority)]
    ) as ch:
        call = echo_pb2_grpc.EchoStub(ch).Unary(
            echo_pb2.EchoRequest(**knobs), timeout=deadline_s, metadata=metadata
        )
        try:
            await call
            return "OK", {k: str(v) for k, v in (await call.trailing_metadata() or ())}
        except grpc.aio.AioRpcError as err:
            return err.code().name, {k: str(v) for k, v in (err.trailing_metadata() or ())}


async def traffic(mesh: Observed) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """OK calls, retried calls, failing calls, a burst the server sheds, calls dropped
    for too little deadline, one unrouted call: by kind, what each call got."""
    addr = mesh.caller_addr
    out: dict[str, list[tuple[str, dict[str, str]]]] = {}
    out["ok"] = [await unary(addr, "echo") for _ in range(10)]
    out["flaky"] = [await unary(addr, "flaky") for _ in range(10)]
    out["dead"] = [await unary(addr, "dead", 1.0) for _ in range(30)]
    # ten at once on an app taking one at a time with no queue: most are shed
    out["burst"] = list(
        await asyncio.gather(*(unary(addr, "echo", 2.0, delay_ms=300) for _ in range(10)))
    )
    out["short"] = [await unary(addr, "echo", 0.03) for _ in range(3)]
    out["unrouted"] = [await unary(addr, "nowhere")]
    await asyncio.sleep(0.3)  # the last calls' ends are reported
    return out
