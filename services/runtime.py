"""What every service shares: flags, the grpc.aio server, health, knobs, logging, SIGTERM.

Does I/O. A service module provides `build_parser()` (adding its own flags to
`common_parser()`) and `async def start(args) -> Running`; `main()` runs it until
SIGTERM/SIGINT, then drains: health goes NOT_SERVING (so a sidecar stops sending),
in-flight calls get `--grace` seconds, then the server stops. Tests call `start()`
in-process with `--port 0` and read `running.port`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from services.db import Database
from services.knobs import KnobInterceptor, Knobs, admin_handler

MiB = 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", 16 * MiB),
    ("grpc.max_receive_message_length", 16 * MiB),
    ("grpc.so_reuseport", 0),  # two instances must never silently share a port
]

Cleanup = Callable[[], Awaitable[None]]


def common_parser(service: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"services.{service}", description=description)
    parser.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--name", default=service, help="instance name (x-served-by, logs)")
    parser.add_argument("--grace", type=float, default=2.0, help="drain seconds on SIGTERM")
    parser.add_argument("--log-level", default="INFO")
    knobs = parser.add_argument_group("test knobs (also settable at runtime: services.knobs)")
    knobs.add_argument("--latency-ms", type=float, default=0.0)
    knobs.add_argument("--jitter-ms", type=float, default=0.0)
    knobs.add_argument("--fail-ratio", type=float, default=0.0)
    knobs.add_argument("--fail-status", default="UNAVAILABLE")
    knobs.add_argument("--knob-methods", nargs="*", default=[], help="method substrings")
    knobs.add_argument("--knob-seed", type=int, default=None, help="seed for fail decisions")
    return parser


def add_data_args(parser: argparse.ArgumentParser, db_default: str) -> None:
    from services import seed

    parser.add_argument("--db", default=db_default, help="SQLite file (shared per site)")
    parser.add_argument("--seed", type=int, default=seed.DEFAULT_SEED)
    parser.add_argument("--tracks", type=int, default=seed.DEFAULT_TRACKS)
    parser.add_argument("--playlists", type=int, default=seed.DEFAULT_PLAYLISTS)
    parser.add_argument("--workers", type=int, default=4, help="SQLite threads")


@dataclass
class Running:
    """A started service: its server, bound port and knobs."""

    server: grpc.aio.Server
    port: int
    name: str
    knobs: Knobs
    health: HealthServicer
    services: tuple[str, ...]
    cleanups: list[Cleanup] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 0.5) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for cleanup in reversed(self.cleanups):
            await cleanup()


async def start_server(
    args: argparse.Namespace,
    register: Callable[[grpc.aio.Server], None],
    services: Sequence[str],
) -> Running:
    """Build the server with knobs, health and the knob admin service; bind and start."""
    knobs = Knobs()
    knobs.update(
        {
            "latency_ms": args.latency_ms,
            "jitter_ms": args.jitter_ms,
            "fail_ratio": args.fail_ratio,
            "fail_status": args.fail_status,
            "methods": list(args.knob_methods),
        }
    )
    rng = random.Random(args.knob_seed)
    server = grpc.aio.server(
        interceptors=[KnobInterceptor(knobs, args.name, rng)], options=SERVER_OPTIONS
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    register(server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        raise OSError(f"cannot bind {args.host}:{args.port}")
    running = Running(server, port, args.name, knobs, health, tuple(services))

    async def on_change(k: Knobs) -> None:
        await running.set_serving(k.serving)

    server.add_generic_rpc_handlers((admin_handler(knobs, on_change),))
    await server.start()
    await running.set_serving(True)
    logging.getLogger(f"services.{args.name}").info(
        "serving %s on %s:%d", ",".join(services), args.host, port
    )
    return running


async def start_data_service(
    args: argparse.Namespace,
    schema: str,
    seed_key: str,
    seed_rows: Callable[[Any], None],
    register: Callable[[grpc.aio.Server, Database], None],
    services: Sequence[str],
) -> Running:
    """A data service: open (and seed once) its SQLite file, serve, close the file on stop."""
    db = Database(args.db, workers=args.workers)
    await db.initialise(schema, seed_key, seed_rows)
    running = await start_server(args, lambda server: register(server, db), services)

    async def close() -> None:
        await asyncio.to_thread(db.close)

    running.cleanups.append(close)
    return running


def setup_logging(name: str, level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def main(
    build_parser: Callable[[], argparse.ArgumentParser],
    start: Callable[[argparse.Namespace], Awaitable[Running]],
    argv: Sequence[str] | None = None,
) -> int:
    """Run a service until SIGTERM/SIGINT, then drain and exit 0."""
    args = build_parser().parse_args(argv)
    setup_logging(args.name, args.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        running = await start(args)
        await stop.wait()
        logging.getLogger(f"services.{args.name}").info("draining (%.1f s)", args.grace)
        await running.stop(args.grace)

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(run())
    return 0
