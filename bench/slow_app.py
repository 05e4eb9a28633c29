"""The overload run's app: `services.echo` with a fixed capacity. Does I/O.

`python -m bench.slow_app --port N --workers W --delay-ms D` serves meshtest Echo
(services.echo's servicer) but lets only W calls work at a time, each for D ms of
wall time, the rest waiting in an unbounded FIFO: a thread-pool app, whose capacity
is W / D calls per second whatever the machine's other load (it sleeps, it does not
spin). `services.echo` alone sleeps without any concurrency limit, so a fixed delay
gives it no capacity to exceed. A caller that leaves (deadline, cancel) leaves the
queue: grpcio cancels its handler.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from meshtest.echo.v1 import echo_pb2_grpc
from services.echo import MAX_MESSAGE, Echo


class SlowEcho(Echo):
    def __init__(self, workers: int, delay_ms: int) -> None:
        super().__init__("slow")
        self.slots = asyncio.Semaphore(workers)
        self.delay_s = delay_ms / 1000

    async def Unary(self, req: Any, context: Any) -> Any:
        async with self.slots:
            await asyncio.sleep(self.delay_s)
            return await super().Unary(req, context)


async def serve(port: int, workers: int, delay_ms: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    echo_pb2_grpc.add_EchoServicer_to_server(SlowEcho(workers, delay_ms), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.slow_app")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--delay-ms", type=int, default=20)
    a = p.parse_args()
    try:
        import uvloop

        uvloop.run(serve(a.port, a.workers, a.delay_ms))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(a.port, a.workers, a.delay_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
