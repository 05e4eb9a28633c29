"""Reload chaos: a changed config every second under load, with no failed call and no
connection reset.

A real sidecar process in front of three echo backends, two upstreams (`blue`,
`green`). Each second the config file is rewritten and `POST /reload`ed: the echo
service's route moves between the two upstreams, their endpoint sets move, their
limits, timeouts, retries, balancer and faults change. All the while one grpcio
channel carries unary calls (8 at a time) and one bidi stream that spans the whole
run. After every reload a probe call must land where the new config sends it.
Asserted: every reload applied, every probe where it should be, zero failed calls,
the stream ended OK, and the channel's one connection never left READY.

`test_reload_every_second_30s` is the scenario (slow: `make chaos`); the 5 s version
runs in `make test`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.procs import ECHO, echo_process, free_port, http, sidecar_process
from tests.integration.reload_load import Tally, long_stream, unary_load, watch_connection

NAMES = ("e0", "e1", "e2")


def step_config(step: int, outbound: int, ports: dict[str, int], admin: Any) -> dict[str, Any]:
    """The config of reload `step`: which upstream routes the echo service, who its
    endpoints are, and its policies all move with the step."""
    active, idle = ("blue", "green") if step % 2 == 0 else ("green", "blue")
    first = step % 3
    serving = [NAMES[first], NAMES[(first + 1) % 3]]  # two of three, moving
    upstream: dict[str, Any] = {
        "grpc_services": [ECHO],
        "endpoints": [f"127.0.0.1:{ports[n]}" for n in serving],
        "timeout_ms": 2000 + 100 * (step % 4),
        "limits": {"max_requests": 200 + 50 * (step % 5)},
        "lb": ("peak_ewma", "round_robin", "least_request")[step % 3],
    }
    if step % 2:
        upstream["retries"] = {"max_attempts": 2 + step % 2}
    if step % 4 == 1:
        upstream["faults"] = {"delay": {"percent": 20, "ms": 2}}
    return {
        "outbound": {"listen": f"127.0.0.1:{outbound}"},
        "admin": admin,
        "drain_grace_s": 5,
        "upstreams": {
            active: upstream,
            idle: {"endpoints": [f"127.0.0.1:{ports[NAMES[(first + 2) % 3]]}"]},
        },
    }


async def run_scenario(tmp: Path, seconds: int) -> None:
    with (
        echo_process(tmp, "e0") as (_, p0),
        echo_process(tmp, "e1") as (_, p1),
        echo_process(tmp, "e2") as (_, p2),
    ):
        ports = {"e0": p0, "e1": p1, "e2": p2}
        outbound = free_port()
        config = step_config(0, outbound, ports, None)
        config.pop("admin")
        with sidecar_process(tmp, "sc", config) as sc:
            path = tmp / "sc.yaml"
            tally, probes = Tally(), Tally()
            stop = asyncio.Event()
            changes: list[str] = []
            refused: list[Any] = []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # connected: READY
                watch = asyncio.create_task(watch_connection(channel, stop, changes))
                gap = 0.05
                stream = asyncio.create_task(long_stream(stub, int(seconds / gap), gap, tally))
                load = asyncio.create_task(
                    unary_load(stub, stop, tally, concurrency=8, max_s=seconds + 30)
                )
                start = time.monotonic()
                for step in range(1, seconds + 1):
                    new = step_config(step, outbound, ports, sc.config["admin"])
                    path.write_text(yaml.safe_dump(new))
                    status, body = await asyncio.to_thread(
                        http, "POST", sc.url("/reload"), b"", 10.0
                    )
                    answer = json.loads(body) if body else {}
                    if status != 200 or answer.get("result") != "applied":
                        refused.append((step, status, answer))
                    serving = {
                        n for n, p in ports.items()
                        if f"127.0.0.1:{p}" in next(iter(new["upstreams"].values()))["endpoints"]
                    }  # fmt: skip
                    try:
                        reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                    except grpc.aio.AioRpcError as err:
                        probes.failed.append(f"step {step}: {err.code().name} {err.details()}")
                    else:
                        if reply.served_by not in serving:
                            probes.failed.append(f"step {step}: {reply.served_by} not {serving}")
                    await asyncio.sleep(max(0.0, start + step - time.monotonic()))
                served = await stream
                stop.set()
                await load
                await watch
            assert refused == [], refused[:3]
            assert probes.failed == [], probes.failed[:5]
            assert tally.failed == [], tally.failed[:5]
            assert changes == [], changes  # the connection was never reset
            assert len(served) == int(seconds / gap)
            assert sc.get_json("/config_dump")["version"]["counter"] == seconds + 1
            assert set(tally.served_by) == set(NAMES), tally.served_by
            print(f"\nreload chaos: {seconds} reloads, {tally.ok} calls ok, 0 failed")


@pytest.mark.chaos
@pytest.mark.timeout(90)
async def test_reload_every_second_5s(tmp_path: Path) -> None:
    """Five reloads in 5 s under load: no failed call, no reset connection."""
    await run_scenario(tmp_path, 5)


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_reload_every_second_30s(tmp_path: Path) -> None:
    """Thirty reloads in 30 s under load: no failed call, no reset connection."""
    await run_scenario(tmp_path, 30)
