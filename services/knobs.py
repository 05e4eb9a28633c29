"""Test knobs every service carries: added latency, a failure ratio and status, health.

Does I/O only in the interceptor (sleeps) and the admin handler. The knobs are set
by flags at start (`--latency-ms`, `--jitter-ms`, `--fail-ratio`, `--fail-status`,
`--knob-methods`) and at runtime through a tiny gRPC admin service with JSON bodies,
so no proto is needed and any gRPC client can poke it:

    /services.Knobs/Set   request: JSON object with any subset of the fields below
                          response: the whole knob set as JSON
    /services.Knobs/Get   request: ignored; response: as Set

Fields: latency_ms (float), jitter_ms (float, uniform 0..jitter added), fail_ratio
(0..1), fail_status (gRPC status name), methods (list of substrings of the full
method name; empty = every method), serving (bool: the grpc.health.v1 status).
`python -m services.knobs --target HOST:PORT --latency-ms 200` is the CLI.

Health checks and the admin service itself are never slowed or failed, so a test
can always turn a knob back.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import grpc

KNOBS_SERVICE = "services.Knobs"
EXEMPT_PREFIXES = ("/grpc.health.v1.", f"/{KNOBS_SERVICE}/", "/grpc.reflection.")


@dataclass
class Knobs:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_ratio: float = 0.0
    fail_status: str = "UNAVAILABLE"
    methods: list[str] = field(default_factory=list)
    serving: bool = True

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; unknown keys and bad values raise ValueError."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown knob {key!r}")
        merged = {**asdict(self), **changes}
        latency, jitter = float(merged["latency_ms"]), float(merged["jitter_ms"])
        ratio = float(merged["fail_ratio"])
        status = str(merged["fail_status"]).upper()
        if latency < 0 or jitter < 0 or not 0.0 <= ratio <= 1.0:
            raise ValueError("latency_ms, jitter_ms >= 0 and 0 <= fail_ratio <= 1")
        if status not in grpc.StatusCode.__members__ or status == "OK":
            raise ValueError(f"{status!r} is not a gRPC error status name")
        methods = merged["methods"]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ValueError("methods must be a list of strings")
        self.latency_ms, self.jitter_ms, self.fail_ratio = latency, jitter, ratio
        self.fail_status, self.methods = status, list(methods)
        self.serving = bool(merged["serving"])

    def applies_to(self, method: str) -> bool:
        if method.startswith(EXEMPT_PREFIXES):
            return False
        return not self.methods or any(m in method for m in self.methods)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


class KnobInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler: tag the answering instance, then delay and fail as knobbed."""

    def __init__(self, knobs: Knobs, name: str, rng: random.Random | None = None) -> None:
        self.knobs = knobs
        self.name = name
        self.rng = rng or random.Random()

    async def _before(self, method: str, context: grpc.aio.ServicerContext) -> None:
        tag = (("x-served-by", self.name),)
        context.set_trailing_metadata(tag)
        k = self.knobs
        if not k.applies_to(method):
            return
        delay = k.latency_ms + (self.rng.uniform(0, k.jitter_ms) if k.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if k.fail_ratio > 0 and self.rng.random() < k.fail_ratio:
            await context.abort(
                grpc.StatusCode[k.fail_status], f"injected by knob on {self.name}", tag
            )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        before = self._before
        ser, deser = handler.response_serializer, handler.request_deserializer
        if handler.unary_unary:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await before(method, context)
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, deser, ser)
        if handler.stream_unary:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                await before(method, context)
                return await su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, deser, ser)
        # a streaming handler either yields its answers or writes them (context.write) from
        # a coroutine, as services/echo.py does: the wrapper keeps the handler's form
        if handler.unary_stream:
            us = handler.unary_stream
            if not inspect.isasyncgenfunction(us):

                async def unary_stream_writes(
                    request: Any, context: grpc.aio.ServicerContext
                ) -> Any:
                    await before(method, context)
                    return await us(request, context)

                return grpc.unary_stream_rpc_method_handler(unary_stream_writes, deser, ser)

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await before(method, context)
                async for item in us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, deser, ser)
        ss = handler.stream_stream
        if not inspect.isasyncgenfunction(ss):

            async def stream_stream_writes(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                await before(method, context)
                return await ss(requests, context)

            return grpc.stream_stream_rpc_method_handler(stream_stream_writes, deser, ser)

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(method, context)
            async for item in ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, deser, ser)


def admin_handler(
    knobs: Knobs, on_change: Callable[[Knobs], Awaitable[None]]
) -> grpc.GenericRpcHandler:
    """The runtime knob service: raw JSON bytes in and out (no proto needed)."""

    async def set_(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            knobs.update(changes)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await on_change(knobs)
        return knobs.to_json()

    async def get(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return knobs.to_json()

    return grpc.method_handlers_generic_handler(
        KNOBS_SERVICE,
        {
            "Set": grpc.unary_unary_rpc_method_handler(set_),
            "Get": grpc.unary_unary_rpc_method_handler(get),
        },
    )


async def set_knobs(target: str, deadline_s: float = 5.0, **changes: Any) -> dict[str, Any]:
    """Client helper: change knobs on the service at `target`, return the new knob set."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{KNOBS_SERVICE}/Set")
        reply = await call(json.dumps(changes).encode(), timeout=deadline_s)
    result: dict[str, Any] = json.loads(reply)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m services.knobs --target HOST:PORT [--latency-ms N] ...`: print the knobs."""
    import argparse

    parser = argparse.ArgumentParser(prog="services.knobs", description=main.__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--jitter-ms", type=float)
    parser.add_argument("--fail-ratio", type=float)
    parser.add_argument("--fail-status")
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--serving", choices=["true", "false"])
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "latency_ms": args.latency_ms,
            "jitter_ms": args.jitter_ms,
            "fail_ratio": args.fail_ratio,
            "fail_status": args.fail_status,
            "methods": args.methods,
        }.items()
        if v is not None
    }
    if args.serving is not None:
        changes["serving"] = args.serving == "true"
    print(json.dumps(asyncio.run(set_knobs(args.target, **changes)), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
