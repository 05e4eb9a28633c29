"""Bounded open-loop load with per-call records, and a poller of sidecar admin state.

Does I/O (gRPC, HTTP). `LoadLoop` starts call i at t0 + i/rate whatever earlier
calls are doing (open loop, as users do; see services/loadgen.py), each with a
deadline, and records for every call: start time, latency, final status, the
`x-sidecar-error` trailer and which instance answered. It is bounded in count
(rate x duration) and in time: a call still running `hang_slack_s` after its deadline
is cancelled and recorded as `HUNG`, which every scenario counts as a failure of
the system under test (a call that outlives its deadline).

`Poller` samples an admin endpoint (e.g. a caller's /clusters) every `interval_s`,
so a scenario can tell when an endpoint was ejected and how many attempts each
endpoint got per second, failed ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from meshtest.echo.v1 import echo_pb2
from sidecar.chaos.measure import Call  # the engine's per-call record

SIDECAR_ERROR = "x-sidecar-error"
SERVED_BY = "x-served-by"
CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 0),  # retrying is the sidecar's job
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# One call: given a channel and the timeout, return the answering instance's name.
CallFn = Callable[[grpc.aio.Channel, float], Awaitable[str | None]]


def echo_call(payload: bytes = b"chaos") -> CallFn:
    """meshtest.echo.v1.Echo/Unary; the instance is the response's `served_by`."""
    request = echo_pb2.EchoRequest(payload=payload).SerializeToString()

    async def call(channel: grpc.aio.Channel, deadline_s: float) -> str | None:
        method = channel.unary_unary(
            "/meshtest.echo.v1.Echo/Unary",
            request_serializer=None,
            response_deserializer=echo_pb2.EchoResponse.FromString,
        )
        reply = await method(request, timeout=deadline_s)
        return str(reply.served_by) or None

    return call


def _trailer(err: grpc.aio.AioRpcError, key: str) -> str | None:
    for k, v in err.trailing_metadata() or ():
        if k == key and isinstance(v, str):
            return v
    return None


@dataclass
class LoadLoop:
    target: str
    rate: float  # calls per second
    duration: float  # seconds of sending
    deadline: float = 1.0  # seconds per call
    call: CallFn = field(default_factory=echo_call)
    hang_slack_s: float = 2.0
    calls: list[Call] = field(default_factory=list)
    t0: float = 0.0
    max_in_flight: int = 0
    _in_flight: int = 0
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        """Seconds since the loop started (0 before)."""
        return time.monotonic() - self.t0 if self.t0 else 0.0

    async def started(self) -> None:
        await self._started.wait()

    async def _one(self, channel: grpc.aio.Channel, rec: Call) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        begun = time.monotonic()
        try:
            rec.served_by = await asyncio.wait_for(
                self.call(channel, rec.deadline), rec.deadline + self.hang_slack_s
            )
        except grpc.aio.AioRpcError as err:
            rec.status = err.code().name
            rec.error = _trailer(err, SIDECAR_ERROR)
            rec.served_by = _trailer(err, SERVED_BY)
        except TimeoutError:
            rec.status = "HUNG"
        finally:
            rec.latency = time.monotonic() - begun
            self._in_flight -= 1

    async def run(self) -> list[Call]:
        total = int(self.rate * self.duration)
        tasks: list[asyncio.Task[None]] = []
        async with grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS) as channel:
            await channel.channel_ready()
            self.t0 = time.monotonic()
            self._started.set()
            for i in range(total):
                delay = self.t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                rec = Call(t=time.monotonic() - self.t0, deadline=self.deadline)
                self.calls.append(rec)
                tasks.append(asyncio.create_task(self._one(channel, rec)))
            # every call is bounded by wait_for: this gather ends
            await asyncio.gather(*tasks)
        return self.calls


@dataclass
class Poller:
    """Samples `url` (JSON, or Prometheus text with `text=True`) until stopped."""

    url: str
    interval_s: float = 0.2
    text: bool = False
    samples: list[tuple[float, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                t = self.clock()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(self.url) as resp:
                        body = await resp.text()
                        self.samples.append((t, body if self.text else json.loads(body)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)


def gauge_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


class Scenario:
    """A load loop plus pollers plus a list of marked events, run together."""

    def __init__(self, loop: LoadLoop, pollers: dict[str, Poller] | None = None) -> None:
        self.loop = loop
        self.pollers = pollers or {}
        self.events: list[tuple[float, str]] = []
        for poller in self.pollers.values():
            poller.clock = loop.now

    def mark(self, label: str) -> float:
        t = self.loop.now()
        self.events.append((t, label))
        return t

    async def at(self, t: float) -> None:
        """Sleep until `t` seconds after the load started."""
        await self.loop.started()
        delay = t - self.loop.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self, script: Callable[[Scenario], Awaitable[None]]) -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(self.loop.run())
        await self.loop.started()
        polls = [asyncio.create_task(p.run(stop)) for p in self.pollers.values()]
        try:
            await script(self)
            await load
        finally:
            stop.set()
            if not load.done():
                load.cancel()
            await asyncio.gather(load, *polls, return_exceptions=True)
