"""The chaos data service: the test echo backend with runtime knobs and a capacity.

Does I/O (a gRPC server). `python -m tests.chaos.app --port N --name X [--capacity C]`
serves meshtest.echo.v1.Echo (services/echo.py: `served_by` names the instance) and
grpc.health.v1, behind the example services' knob interceptor (services/knobs.py:
latency, failure ratio, health, settable at runtime through `services.Knobs/Set`).

`--capacity C` makes the instance behave like one with C worker threads: at most C
calls run at once, later ones wait in an unbounded FIFO inside the app, as a real
thread-pool server would. That gives it a real capacity (C / latency calls per
second), which the overload scenario needs; without it an asyncio sleep serves any
number of calls at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from meshtest.echo.v1 import echo_pb2_grpc
from services.echo import MAX_MESSAGE, Echo
from services.knobs import KnobInterceptor, Knobs, admin_handler

ECHO = "meshtest.echo.v1.Echo"


class _Capacity(grpc.aio.ServerInterceptor):
    """At most `slots` calls inside the app at once; the rest queue (FIFO) before it."""

    def __init__(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not handler.unary_unary or "/grpc.health" in details.method:
            return handler
        inner = handler.unary_unary
        slots = self.slots

        async def unary(request: Any, context: Any) -> Any:
            async with slots:
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer
        )


async def serve(args: argparse.Namespace) -> None:
    knobs = Knobs(latency_ms=args.latency_ms)
    health = health_aio.HealthServicer()

    async def on_change(k: Knobs) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        status = serving if k.serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", ECHO):
            await health.set(service, status)

    # Outermost first: the capacity gate holds a slot for the knob's latency too.
    interceptors: list[Any] = [KnobInterceptor(knobs, args.name)]
    if args.capacity:
        interceptors.insert(0, _Capacity(args.capacity))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ],
    )
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(args.name), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_generic_rpc_handlers((admin_handler(knobs, on_change),))
    server.add_insecure_port(f"{args.host}:{args.port}")
    await on_change(knobs)
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.chaos.app", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=0, help="concurrent calls (0: no limit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop

            uvloop.run(serve(args))
        except ImportError:
            asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
