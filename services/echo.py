"""meshtest.echo.v1.Echo: a test backend with knobs, plus grpc.health.v1.

`python -m services.echo --port N [--name X]` (port 0: pick one and print it on stdout).
Knobs come in each EchoRequest (see proto/meshtest/echo/v1/echo.proto): delay_ms,
status_code/status_message/status_details_bin, response_size, count, fail_after,
echo_metadata (request metadata copied back, key prefixed `echo-`, into the response
headers and trailers).

Test hooks: calls are counted, and calls cancelled by their caller too; a Unary call
with request metadata `x-echo-stats` answers `{"calls": n, "cancelled": n, "expired": n,
"min_remaining_ms": x}` as JSON in the payload instead of echoing (`expired`: calls that
arrived with their deadline already spent; `min_remaining_ms`: the least time any call
had left on arrival, null before the first call with a deadline).

Instance knobs, for tests that need one backend of several to misbehave: a Unary call
with metadata `x-echo-control: JSON` sets them and answers like `x-echo-stats`:
`{"fail": CODE}` fails every later Echo call with that status code (0: off; client
and bidi streams fail after reading the whole request stream, with no response sent), `{"hang": true}` makes every later call
wait until its caller gives up, `{"delay_ms": N}` makes every later call wait N ms before
it answers (a slow instance; 0: off), `{"health": "NOT_SERVING"}` sets the health status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc

log = logging.getLogger("echo")
MAX_MESSAGE = 64 * 1024 * 1024
_SKIP = {"user-agent", "x-echo-stats", "x-echo-control"}


class Echo(echo_pb2_grpc.EchoServicer):  # type: ignore[misc]
    def __init__(self, name: str, health: Any = None) -> None:
        self.name = name
        self.health = health
        self.calls = 0
        self.cancelled = 0
        self.expired = 0
        self.min_remaining_ms: float | None = None
        self.fail = 0
        self.hang = False
        self.delay_ms = 0.0

    def _count(self, context: Any = None) -> None:
        self.calls += 1
        remaining = None if context is None else context.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                self.expired += 1
            ms = remaining * 1000
            if self.min_remaining_ms is None or ms < self.min_remaining_ms:
                self.min_remaining_ms = ms

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "min_remaining_ms": self.min_remaining_ms,
            "fail": self.fail,
            "hang": self.hang,
            "delay_ms": self.delay_ms,
        }

    async def _control(self, raw: str) -> None:
        knobs = json.loads(raw)
        self.fail = int(knobs.get("fail", self.fail))
        self.hang = bool(knobs.get("hang", self.hang))
        self.delay_ms = float(knobs.get("delay_ms", self.delay_ms))
        if "health" in knobs and self.health is not None:
            status = health_pb2.HealthCheckResponse.ServingStatus.Value(knobs["health"])
            for service in ("", "meshtest.echo.v1.Echo"):
                await self.health.set(service, status)

    async def _misbehave(self, context: Any) -> None:
        """The instance knobs: hang until cancelled, wait, or fail."""
        if self.delay_ms:
            await _sleep(self.delay_ms)
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            await context.abort(grpc.StatusCode(_code(self.fail)), f"{self.name} set to fail")

    async def _headers(self, req: echo_pb2.EchoRequest, context: Any) -> None:
        if req.echo_metadata:
            await context.send_initial_metadata(_echoed(context))

    async def _fail(self, req: echo_pb2.EchoRequest, context: Any) -> None:
        trailers = list(_echoed(context)) if req.echo_metadata else []
        if req.status_details_bin:
            trailers.append(("grpc-status-details-bin", req.status_details_bin))
        await context.abort(
            grpc.StatusCode(_code(req.status_code)), req.status_message, tuple(trailers)
        )

    def _finish(self, req: echo_pb2.EchoRequest, context: Any) -> None:
        if req.echo_metadata:
            context.set_trailing_metadata(_echoed(context))

    def _reply(self, req: echo_pb2.EchoRequest, seq: int = 0, received: int = 0) -> Any:
        payload = b"x" * req.response_size if req.response_size else req.payload
        return echo_pb2.EchoResponse(
            payload=payload, sequence=seq, served_by=self.name, received=received
        )

    async def Unary(self, req: echo_pb2.EchoRequest, context: Any) -> Any:
        metadata = dict(context.invocation_metadata())
        if "x-echo-control" in metadata:
            await self._control(str(metadata["x-echo-control"]))
        if "x-echo-stats" in metadata or "x-echo-control" in metadata:
            stats = json.dumps(self.stats()).encode()
            return echo_pb2.EchoResponse(payload=stats, served_by=self.name)
        self._count(context)
        with _counting_cancel(self):
            await self._misbehave(context)
            await self._headers(req, context)
            await _sleep(req.delay_ms)
            if req.status_code:
                await self._fail(req, context)
            self._finish(req, context)
            return self._reply(req)

    async def ServerStream(self, req: echo_pb2.EchoRequest, context: Any) -> None:
        self._count(context)
        with _counting_cancel(self):
            await self._misbehave(context)
            await self._headers(req, context)
            if req.status_code and not req.fail_after:
                await _sleep(req.delay_ms)
                await self._fail(req, context)
            for seq in range(req.count or 1):
                if req.status_code and seq == req.fail_after:
                    await self._fail(req, context)
                await _sleep(req.delay_ms)
                await context.write(self._reply(req, seq))
            self._finish(req, context)

    async def ClientStream(self, requests: AsyncIterator[Any], context: Any) -> Any:
        self._count(context)
        with _counting_cancel(self):
            if self.hang:
                await self._misbehave(context)
            first = None
            last = None
            received = 0
            async for req in requests:
                first = first or req
                last = req
                received += 1
                if first.status_code and first.fail_after and received >= first.fail_after:
                    await self._fail(first, context)
            await self._misbehave(context)  # after the whole stream: see the docstring
            knobs = first or echo_pb2.EchoRequest()
            await self._headers(knobs, context)
            await _sleep(knobs.delay_ms)
            if knobs.status_code:
                await self._fail(knobs, context)
            self._finish(knobs, context)
            reply = self._reply(last or knobs, 0, received)
            reply.payload = reply.payload if not knobs.response_size else b"x" * knobs.response_size
            return reply

    async def Bidi(self, requests: AsyncIterator[Any], context: Any) -> None:
        self._count(context)
        with _counting_cancel(self):
            if self.fail:
                async for _ in requests:
                    pass
            await self._misbehave(context)
            seq = 0
            first = None
            async for req in requests:
                if first is None:
                    first = req
                    await self._headers(req, context)
                if req.status_code and (not first.fail_after or seq >= first.fail_after):
                    await self._fail(req, context)
                await _sleep(req.delay_ms)
                await context.write(self._reply(req, seq))
                seq += 1
            if first is not None:
                self._finish(first, context)


class _counting_cancel:
    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            self.echo.cancelled += 1
            log.info("call cancelled by its caller")


def _code(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value  # type: ignore[no-any-return]
    return grpc.StatusCode.UNKNOWN.value  # type: ignore[no-any-return]


def _echoed(context: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(("echo-" + k, v) for k, v in context.invocation_metadata() if k not in _SKIP)


async def _sleep(ms: int) -> None:
    if ms:
        await asyncio.sleep(ms / 1000)


async def serve(port: int, name: str, host: str = "127.0.0.1") -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    health = health_aio.HealthServicer()
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(name, health), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    for service in ("", "meshtest.echo.v1.Echo"):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    if port == 0:
        print(bound, flush=True)
    log.info("echo %s serving on %s:%d", name, host, bound)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="echo")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.name, args.host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
