"""meshtest.echo.v1.Echo: a test backend with knobs, plus grpc.health.v1.

`python -m services.echo --port N [--name X]` (port 0: pick one and print it on stdout).
Knobs come in each EchoRequest (see proto/meshtest/echo/v1/echo.proto): delay_ms,
status_code/status_message/status_details_bin, response_size, count, fail_after,
echo_metadata (request metadata copied back, key prefixed `echo-`, into the response
headers and trailers).

Test hooks: calls are counted, and calls cancelled by their caller too; a Unary call
with request metadata `x-echo-stats` answers `{"calls": n, "cancelled": n}` as JSON in
the payload instead of echoing.
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
_SKIP = {"user-agent", "x-echo-stats"}


class Echo(echo_pb2_grpc.EchoServicer):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.cancelled = 0

    def _count(self) -> None:
        self.calls += 1

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
        if any(k == "x-echo-stats" for k, _ in context.invocation_metadata()):
            stats = {"calls": self.calls, "cancelled": self.cancelled}
            return echo_pb2.EchoResponse(payload=json.dumps(stats).encode(), served_by=self.name)
        self._count()
        with _counting_cancel(self):
            await self._headers(req, context)
            await _sleep(req.delay_ms)
            if req.status_code:
                await self._fail(req, context)
            self._finish(req, context)
            return self._reply(req)

    async def ServerStream(self, req: echo_pb2.EchoRequest, context: Any) -> None:
        self._count()
        with _counting_cancel(self):
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
        self._count()
        with _counting_cancel(self):
            first = None
            last = None
            received = 0
            async for req in requests:
                first = first or req
                last = req
                received += 1
                if first.status_code and first.fail_after and received >= first.fail_after:
                    await self._fail(first, context)
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
        self._count()
        with _counting_cancel(self):
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
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(name), server)
    health = health_aio.HealthServicer()
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
