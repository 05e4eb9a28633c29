"""The bounded load of a chaos run, and a poller of the caller sidecar's /clusters.

Does I/O (gRPC over loopback, HTTP). Calls go through the caller sidecar's outbound
listener with raw bytes (no stubs needed to send: the request is made once, from JSON
through the user's stubs or given as bytes), each with the scenario's deadline, and
each recorded: start, latency, status, `x-sidecar-error`, `x-served-by`. Open loop at
a `rate` (call i starts at t0 + i/rate whatever earlier calls are doing) or closed at a
`concurrency`; bounded in count (`max_calls`) and in time (a call still running 2 s
past its deadline is cancelled and recorded as HUNG).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from sidecar.chaos.measure import Call, Sample
from sidecar.chaos.spec import Load, Scenario, ScenarioError

SIDECAR_ERROR = "x-sidecar-error"
SERVED_BY = "x-served-by"
HANG_SLACK_S = 2.0


def request_bytes(scenario: Scenario, base: Path) -> bytes:
    """The request, serialised once: JSON through the user's stubs, or raw bytes."""
    req = scenario.load.request
    if req.base64 is not None:
        return base64.b64decode(req.base64)
    if req.hex is not None:
        return bytes.fromhex(req.hex)
    if req.json_ is None:
        return b""
    return _from_json(scenario.load.method, req.json_, list(scenario.stubs), base)


def _is_folder(entry: str, base: Path) -> bool:
    return "/" in entry or (base / entry).is_dir()


def stub_folders(stubs: list[str], base: Path) -> list[Path]:
    """The `stubs` entries that are folders (the others are module names)."""
    return [(base / s).resolve() for s in stubs if _is_folder(s, base)]


def _from_json(method: str, body: dict[str, Any], stubs: list[str], base: Path) -> bytes:
    """Import the stubs (every `_pb2` module under a folder entry, or the module an entry
    names, e.g. one installed with a package): that registers their types; then find the
    method's input type and build the request from JSON."""
    from google.protobuf import descriptor_pool, json_format, message_factory

    key = "load.request.json"
    modules: list[str] = []
    for entry in stubs:
        if not _is_folder(entry, base):
            modules.append(entry)
            continue
        folder = (base / entry).resolve()
        if not folder.is_dir():
            raise ScenarioError("stubs", f"{entry}: not a folder")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        modules += [
            ".".join(p.relative_to(folder).with_suffix("").parts)
            for p in sorted(folder.rglob("*_pb2.py"))
        ]
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a missing or broken stub: say which
            raise ScenarioError("stubs", f"cannot import {module}: {exc}") from None
    service, _, name = method.strip("/").partition("/")
    pool = descriptor_pool.Default()
    try:
        desc = pool.FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        raise ScenarioError("load.method", f"{method} is in none of the stubs") from None
    if desc is None:
        raise ScenarioError("load.method", f"{service} has no method {name}")
    cls = message_factory.GetMessageClass(desc.input_type)
    try:
        message = json_format.ParseDict(body, cls())
    except json_format.ParseError as exc:
        raise ScenarioError(key, f"not a {desc.input_type.full_name}: {exc}") from None
    return bytes(message.SerializeToString())


def _trailer(err: grpc.aio.AioRpcError, key: str) -> str | None:
    for k, v in err.trailing_metadata() or ():
        if k == key and isinstance(v, str):
            return v
    return None


@dataclass
class LoadLoop:
    target: str  # host:port of the caller's outbound listener
    spec: Load
    request: bytes
    authority: str  # the upstream's name: routes the call when no grpc_services match
    calls: list[Call] = field(default_factory=list)
    t0: float = 0.0
    stopped: bool = False
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.t0 if self.t0 else 0.0

    async def started(self) -> None:
        await self._started.wait()

    async def _one(self, method: Any) -> None:
        deadline = self.spec.deadline_ms / 1000
        rec = Call(t=self.now(), deadline=deadline)
        self.calls.append(rec)
        begun = time.monotonic()
        try:
            call = method(self.request, timeout=deadline)
            await asyncio.wait_for(call, deadline + HANG_SLACK_S)
            with contextlib.suppress(Exception):
                for k, v in await call.initial_metadata() or ():
                    if k == SERVED_BY:
                        rec.served_by = str(v)
        except grpc.aio.AioRpcError as err:
            rec.status = err.code().name
            rec.error = _trailer(err, SIDECAR_ERROR)
            rec.served_by = _trailer(err, SERVED_BY)
        except TimeoutError:
            rec.status = "HUNG"
        finally:
            rec.latency = time.monotonic() - begun

    async def run(self) -> list[Call]:
        spec = self.spec
        options = [
            ("grpc.enable_retries", 0),  # retrying is the sidecar's job
            ("grpc.default_authority", self.authority),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        total = spec.max_calls
        if spec.rate is not None:
            total = min(total, int(spec.rate * spec.duration_s))
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            method = channel.unary_unary(spec.method)
            self.t0 = time.monotonic()
            self._started.set()
            tasks: list[asyncio.Task[None]] = []
            if spec.rate is not None:
                for i in range(total):
                    delay = self.t0 + i / spec.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if self.stopped:
                        break
                    tasks.append(asyncio.create_task(self._one(method)))
            else:
                budget = [total]

                async def worker() -> None:
                    while not self.stopped and self.now() < spec.duration_s and budget[0] > 0:
                        budget[0] -= 1
                        await self._one(method)

                tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency or 1)]
            await asyncio.gather(*tasks)  # every call is bounded by wait_for: this ends
        return self.calls


@dataclass
class Poller:
    """Samples `url` (JSON) every `interval_s` until stopped; t from `clock`."""

    url: str
    clock: Callable[[], float]
    interval_s: float = 0.1
    samples: list[Sample] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                t = self.clock()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(self.url) as resp:
                        self.samples.append((t, json.loads(await resp.text())))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
