"""gRPC's interop server on grpcio (grpc.aio), the server features the cases without TLS
use: EmptyCall, UnaryCall, StreamingInputCall, StreamingOutputCall, FullDuplexCall,
Echo Status, Echo Metadata (grpc's doc/interop-test-descriptions.md, "Server").
UnimplementedCall is left to the generated base class (UNIMPLEMENTED), and
UnimplementedService is not registered at all.

    python -m tests.interop.grpcio_server --stubs DIR [--port 0]

Prints `{"port": N}` on stdout once it listens on 127.0.0.1. Does I/O."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tests.interop.stubs import use

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {c.value[0]: c for c in grpc.StatusCode}


def service(pb: Any, empty_pb: Any, pb_grpc: Any) -> Any:
    class TestService(pb_grpc.TestServiceServicer):  # type: ignore[misc]
        async def EmptyCall(self, request: Any, context: Any) -> Any:
            return empty_pb.Empty()

        async def UnaryCall(self, request: Any, context: Any) -> Any:
            trailing = await echo_metadata(context)
            await maybe_abort(request, context, trailing)
            return pb.SimpleResponse(payload=pb.Payload(body=bytes(request.response_size)))

        async def StreamingInputCall(self, requests: Any, context: Any) -> Any:
            size = 0
            async for request in requests:
                size += len(request.payload.body)
            return pb.StreamingInputCallResponse(aggregated_payload_size=size)

        async def StreamingOutputCall(self, request: Any, context: Any) -> AsyncIterator[Any]:
            trailing = await echo_metadata(context)
            for params in request.response_parameters:
                yield await respond(params)
            await maybe_abort(request, context, trailing)

        async def FullDuplexCall(self, requests: Any, context: Any) -> AsyncIterator[Any]:
            trailing = await echo_metadata(context)
            async for request in requests:
                # Echo Status: end the call, process no further messages
                await maybe_abort(request, context, trailing)
                for params in request.response_parameters:
                    yield await respond(params)

    async def respond(params: Any) -> Any:
        if params.interval_us:
            await asyncio.sleep(params.interval_us / 1e6)
        return pb.StreamingOutputCallResponse(payload=pb.Payload(body=bytes(params.size)))

    return TestService()


async def echo_metadata(context: Any) -> tuple[tuple[str, Any], ...]:
    """Echo Metadata: the initial key back in the headers; the trailing one in trailers
    (returned too, so an aborted call carries it)."""
    md = dict(context.invocation_metadata())
    if ECHO_INITIAL in md:
        await context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    trailing: tuple[tuple[str, Any], ...] = ()
    if ECHO_TRAILING in md:
        trailing = ((ECHO_TRAILING, md[ECHO_TRAILING]),)
        context.set_trailing_metadata(trailing)
    return trailing


async def maybe_abort(request: Any, context: Any, trailing: tuple[tuple[str, Any], ...]) -> None:
    status = request.response_status
    if status.code:
        await context.abort(CODES[status.code], status.message, trailing)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    use(args.stubs)
    from interop_testing import empty_pb2, messages_pb2, test_pb2_grpc

    server = grpc.aio.server()
    test_pb2_grpc.add_TestServiceServicer_to_server(
        service(messages_pb2, empty_pb2, test_pb2_grpc), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
