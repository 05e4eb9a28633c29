"""The in-process client traces like a sidecar's outbound listener, in the app's process:
it joins the app's current OpenTelemetry span, passes the trace upstream with its
attempt's span as parent, and exports a failing call at ratio 0. A real OTLP receiver
and a real grpc.aio echo backend on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo
from tests.otlp_receiver import KIND_CLIENT, STATUS_ERROR, Receiver, Span, otlp_receiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as found:
        yield found


async def spans(receiver: Receiver, pick: Callable[[Span], bool], count: int) -> list[Span]:
    deadline = time.monotonic() + 15
    while True:
        with receiver.lock:
            found = [s for s in receiver.spans if pick(s)]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"only {found} of {count} spans"
        await asyncio.sleep(0.05)


def config(echo_port: int, receiver: Receiver) -> dict[str, Any]:
    return {
        "service": "app",
        "upstreams": {"echo": {"endpoints": [f"127.0.0.1:{echo_port}"]}},
        "tracing": {
            "endpoint": f"http://127.0.0.1:{receiver.grpc_port}",
            "sample_ratio": 0,
            "export_interval_s": 0.1,
        },
    }


async def test_a_call_joins_the_apps_current_span(
    echo: tuple[Echo, int], receiver: Receiver
) -> None:
    """Inside the app's span: the call's span is its child, in its trace; the backend
    sees the attempt's span as its parent."""
    app_tracer = TracerProvider().get_tracer("the-app")
    async with await sidecar.client.connect("echo", config(echo[1], receiver)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        with app_tracer.start_as_current_span("handle-request") as app_span:
            call = stub.Unary(echo_pb2.EchoRequest(echo_metadata=True), timeout=5)
            await call
            trailers = dict(await call.trailing_metadata())
        context = app_span.get_span_context()
    trace_id, app_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    found = await spans(receiver, lambda s: s.trace_id == trace_id, 2)
    call_span = next(s for s in found if s.parent_id == app_id)
    attempt = next(s for s in found if s.parent_id == call_span.span_id)
    assert call_span.kind == attempt.kind == KIND_CLIENT
    assert call_span.service == "app" and call_span.attributes["rpc.method"] == "Unary"
    assert call_span.attributes["rpc.grpc.status_code"] == 0
    assert attempt.attributes["server.port"] == echo[1]
    assert trailers["echo-traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"


async def test_a_failing_call_without_a_span_is_exported_at_ratio_zero(
    echo: tuple[Echo, int], receiver: Receiver
) -> None:
    """No current span, ratio 0: the OK call exports nothing, the failing one its
    trace, started by the client."""
    async with await sidecar.client.connect("echo", config(echo[1], receiver)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), metadata=(("x-request-id", "ok-1"),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(
                echo_pb2.EchoRequest(status_code=13), metadata=(("x-request-id", "bad-1"),)
            )
        assert err.value.code() == grpc.StatusCode.INTERNAL
    found = await spans(receiver, lambda s: s.attributes.get("sidecar.request_id") == "bad-1", 1)
    assert found[0].parent_id == "" and found[0].status == STATUS_ERROR
    assert found[0].attributes["rpc.grpc.status_code"] == 13
    # closing the channel exported what was queued, in order: the OK call is not there
    assert not [s for s in receiver.spans if s.attributes.get("sidecar.request_id") == "ok-1"]
