"""gRPC's interop client cases on grpcio (grpc.aio), over a plain channel or over the
in-process client (`sidecar.client.connect`): the procedures of grpc's
doc/interop-test-descriptions.md, run one after another in one process.

    python -m tests.interop.grpcio_client --stubs DIR --target HOST:PORT CASE...
    python -m tests.interop.grpcio_client --stubs DIR --inprocess CONFIG.json CASE...

Each case prints one JSON line of what it observed (tests/interop/report.py's shape);
the assertions are tests/interop/spec.py's, the same for every client. Does I/O."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from tests.interop import report
from tests.interop.stubs import use

CALL_TIMEOUT_S = 10.0  # bounds every call but the deadline case, so a hang fails fast
OPTIONS = [
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


class Cases:
    def __init__(self, channel: Any) -> None:
        from interop_testing import empty_pb2, messages_pb2, test_pb2_grpc

        self.pb = messages_pb2
        self.empty = empty_pb2
        self.stub = test_pb2_grpc.TestServiceStub(channel)
        self.unimplemented = test_pb2_grpc.UnimplementedServiceStub(channel)

    def payload(self, size: int) -> Any:
        return self.pb.Payload(body=bytes(size))

    def duplex_request(self, size: int | None, body: int) -> Any:
        params = [] if size is None else [self.pb.ResponseParameters(size=size)]
        return self.pb.StreamingOutputCallRequest(
            response_parameters=params, payload=self.payload(body)
        )

    async def empty_unary(self) -> list[dict[str, Any]]:
        call = self.stub.EmptyCall(self.empty.Empty(), timeout=CALL_TIMEOUT_S)
        return [await unary(call, empty=True)]

    async def large_unary(self) -> list[dict[str, Any]]:
        request = self.pb.SimpleRequest(response_size=314159, payload=self.payload(271828))
        return [await unary(self.stub.UnaryCall(request, timeout=CALL_TIMEOUT_S))]

    async def client_streaming(self) -> list[dict[str, Any]]:
        call = self.stub.StreamingInputCall(timeout=CALL_TIMEOUT_S)
        for size in (27182, 8, 1828, 45904):
            await call.write(self.pb.StreamingInputCallRequest(payload=self.payload(size)))
        await call.done_writing()
        return [await unary(call)]

    async def server_streaming(self) -> list[dict[str, Any]]:
        request = self.pb.StreamingOutputCallRequest(
            response_parameters=[
                self.pb.ResponseParameters(size=s) for s in (31415, 9, 2653, 58979)
            ]
        )
        call = self.stub.StreamingOutputCall(request, timeout=CALL_TIMEOUT_S)
        return [await stream(call)]

    async def ping_pong(self) -> list[dict[str, Any]]:
        call = self.stub.FullDuplexCall(timeout=CALL_TIMEOUT_S)
        got: list[Any] = []
        try:
            for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
                await call.write(self.duplex_request(size, body))
                got.append(await call.read())  # the reply before the next request
            await call.done_writing()
            rest = await call.read()
            if rest is not grpc.aio.EOF:
                got.append(rest)
        except grpc.RpcError:
            pass
        return [await finished(call, got)]

    async def empty_stream(self) -> list[dict[str, Any]]:
        call = self.stub.FullDuplexCall(timeout=CALL_TIMEOUT_S)
        await call.done_writing()
        return [await stream(call)]

    async def timeout_on_sleeping_server(self) -> list[dict[str, Any]]:
        call = self.stub.FullDuplexCall(timeout=0.001)
        # the write may already fail: the deadline can pass before it is sent
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await call.write(self.duplex_request(None, 27182))
        return [await stream(call)]

    async def cancel_after_begin(self) -> list[dict[str, Any]]:
        call = self.stub.StreamingInputCall(timeout=CALL_TIMEOUT_S)
        call.cancel()
        return [await finished(call, [])]

    async def cancel_after_first_response(self) -> list[dict[str, Any]]:
        call = self.stub.FullDuplexCall(timeout=CALL_TIMEOUT_S)
        await call.write(self.duplex_request(31415, 27182))
        first = await call.read()
        call.cancel()
        return [await finished(call, [first])]

    async def custom_metadata(self) -> list[dict[str, Any]]:
        md = (
            ("x-grpc-test-echo-initial", "test_initial_metadata_value"),
            ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"),
        )
        request = self.pb.SimpleRequest(response_size=314159, payload=self.payload(271828))
        one = await unary(self.stub.UnaryCall(request, metadata=md, timeout=CALL_TIMEOUT_S))
        call = self.stub.FullDuplexCall(metadata=md, timeout=CALL_TIMEOUT_S)
        await call.write(self.duplex_request(314159, 271828))
        await call.done_writing()
        return [one, await stream(call)]

    async def status_code_and_message(self) -> list[dict[str, Any]]:
        return await self._status("test status message", duplex=True)

    async def special_status_message(self) -> list[dict[str, Any]]:
        return await self._status(report.SPECIAL_MESSAGE, duplex=False)

    async def _status(self, message: str, duplex: bool) -> list[dict[str, Any]]:
        status = self.pb.EchoStatus(code=2, message=message)
        request = self.pb.SimpleRequest(response_status=status)
        calls = [await unary(self.stub.UnaryCall(request, timeout=CALL_TIMEOUT_S))]
        if duplex:
            call = self.stub.FullDuplexCall(timeout=CALL_TIMEOUT_S)
            await call.write(self.pb.StreamingOutputCallRequest(response_status=status))
            await call.done_writing()
            calls.append(await stream(call))
        return calls

    async def unimplemented_method(self) -> list[dict[str, Any]]:
        call = self.stub.UnimplementedCall(self.empty.Empty(), timeout=CALL_TIMEOUT_S)
        return [await unary(call)]

    async def unimplemented_service(self) -> list[dict[str, Any]]:
        call = self.unimplemented.UnimplementedCall(self.empty.Empty(), timeout=CALL_TIMEOUT_S)
        return [await unary(call)]


async def unary(call: Any, empty: bool = False) -> dict[str, Any]:
    """A call with one response: its status, metadata and the response's payload."""
    try:
        response = await call
    except grpc.RpcError:
        return await finished(call, [])
    return await finished(call, [response], empty=empty)


async def stream(call: Any) -> dict[str, Any]:
    got: list[Any] = []
    with contextlib.suppress(grpc.RpcError):
        async for response in call:
            got.append(response)
    return await finished(call, got)


async def finished(call: Any, responses: list[Any], empty: bool = False) -> dict[str, Any]:
    if hasattr(call, "__await__"):  # a unary-response call ends when awaited
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await call
    code = await call.code()  # a stream's status, once it has ended
    fields = [r.DESCRIPTOR.fields_by_name for r in responses]
    payloads = [r.payload.body for r, f in zip(responses, fields, strict=True) if "payload" in f]
    aggregated = [
        r.aggregated_payload_size
        for r, f in zip(responses, fields, strict=True)
        if "aggregated_payload_size" in f
    ]
    return report.call(
        code=code.value[0],
        details=await call.details() or "",
        responses=len(responses),
        bodies=[len(b) for b in payloads],
        zeros=not any(any(b) for b in payloads),
        aggregated=aggregated[0] if aggregated else None,
        empty=all(r.ByteSize() == 0 for r in responses) if empty else None,
        initial=await _metadata(call.initial_metadata),
        trailing=await _metadata(call.trailing_metadata),
    )


async def _metadata(get: Callable[[], Awaitable[Any]]) -> list[tuple[str, str | bytes]]:
    try:
        md = await get()
    except (asyncio.CancelledError, grpc.RpcError):
        return []
    return list(md or ())


async def run(channel: Any, cases: list[str]) -> None:
    runner = Cases(channel)
    for case in cases:
        try:
            calls = await getattr(runner, case)()
            line = report.result(case, calls)
        except Exception as err:  # a broken procedure is reported, not fatal
            line = report.result(case, [], error=f"{type(err).__name__}: {err}")
        print(json.dumps(line), flush=True)


async def main(args: argparse.Namespace, config: dict[str, Any] | None) -> None:
    use(args.stubs)
    if config is None:
        async with grpc.aio.insecure_channel(args.target, options=OPTIONS) as channel:
            await run(channel, args.cases)
        return
    import sidecar.client

    async with await sidecar.client.connect("interop", config) as channel:
        await run(channel, args.cases)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="HOST:PORT of a server or an outbound sidecar")
    where.add_argument("--inprocess", help="a sidecar config (JSON) with upstream `interop`")
    parser.add_argument("cases", nargs="+")
    args = parser.parse_args()
    config = json.loads(Path(args.inprocess).read_text()) if args.inprocess else None
    asyncio.run(main(args, config))
    sys.stdout.flush()
