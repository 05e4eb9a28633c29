"""Traces through real sidecar processes into a real OTLP receiver (gRPC from the caller's
sidecar, HTTP from the server's): app -> client sidecar -> server sidecar -> echo app.
Both sidecars sample at ratio 0, so only the app's sampled flag and failures export."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.procs import (
    ECHO,
    Sidecar,
    echo_process,
    free_port,
    http,
    sidecar_process,
    wait_until,
)
from tests.otlp_receiver import (
    KIND_CLIENT,
    KIND_SERVER,
    STATUS_ERROR,
    Receiver,
    Span,
    otlp_receiver,
)

pytestmark = pytest.mark.timeout(120)
APP_SPAN = "00f067aa0ba902b7"  # the calling app's own span: the client sidecar's parent


@dataclass
class Traced:
    receiver: Receiver
    client: Sidecar
    server: Sidecar
    echo_port: int
    dead_port: int
    access_log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.client.port('outbound')}"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("tracing")
    with ExitStack() as stack:
        receiver = stack.enter_context(otlp_receiver())
        _, echo_port = stack.enter_context(echo_process(tmp))
        server_cfg = {
            "service": "echo",
            "inbound": {
                "listen": f"127.0.0.1:{free_port()}",
                "app": f"127.0.0.1:{echo_port}",
                "health": {"interval_s": 0.2},
            },
            "tracing": {
                "exporter": "otlp_http",
                "endpoint": f"http://127.0.0.1:{receiver.http_port}/v1/traces",
                "sample_ratio": 0,
                "export_interval_s": 0.1,
            },
        }
        server = stack.enter_context(sidecar_process(tmp, "server", server_cfg))
        dead = free_port()
        log_path = tmp / "client-access.log"
        client_cfg = {
            "service": "caller",
            "outbound": {"listen": f"127.0.0.1:{free_port()}"},
            "upstreams": {
                "echo": {
                    "grpc_services": [ECHO],
                    # every other first attempt fails to connect and is retried on the live one
                    "endpoints": [f"127.0.0.1:{dead}", f"127.0.0.1:{server.port('inbound')}"],
                    "lb": "round_robin",
                    "retries": {"max_attempts": 2, "backoff_base_ms": 1, "backoff_max_ms": 5},
                    "breaker": {"fail_max": 1000},
                    "throttling": None,
                    "timeout_ms": 5000,
                }
            },
            "tracing": {
                "endpoint": f"http://127.0.0.1:{receiver.grpc_port}",
                "sample_ratio": 0,
                "export_interval_s": 0.1,
            },
            "access_log": {"path": str(log_path)},
        }
        client = stack.enter_context(sidecar_process(tmp, "client", client_cfg))
        yield Traced(receiver, client, server, echo_port, dead, log_path)


def new_trace() -> str:
    return os.urandom(16).hex()


def traceparent(trace_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{APP_SPAN}-{'01' if sampled else '00'}"


async def unary(addr: str, metadata: Any = (), **knobs: Any) -> tuple[str, dict[str, str]]:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = echo_pb2_grpc.EchoStub(ch).Unary(
            echo_pb2.EchoRequest(**knobs), timeout=5, metadata=metadata
        )
        try:
            await call
            return "OK", {k: str(v) for k, v in (await call.trailing_metadata() or ())}
        except grpc.aio.AioRpcError as err:
            return err.code().name, {k: str(v) for k, v in (err.trailing_metadata() or ())}


def spans_of(receiver: Receiver, trace_id: str, count: int) -> list[Span]:
    return receiver.wait(lambda s: s.trace_id == trace_id, count, f"{count} spans of {trace_id}")


def one(spans: list[Span], **match: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, spans)
    return found[0]


async def test_a_retried_call_is_one_trace_with_the_right_parents(traced: Traced) -> None:
    """The client sidecar's call span below the app's span, one span per attempt (the
    failed one naming its x-sidecar-error), the server sidecar's server span below the
    attempt that reached it, its own attempt below that, and the app's traceparent naming
    that last attempt as its parent."""
    receiver = traced.receiver
    retried: str | None = None
    for _ in range(4):  # round robin over [dead, live]: one of two calls is retried
        trace_id = new_trace()
        code, trailers = await unary(
            traced.addr, (("traceparent", traceparent(trace_id)),), echo_metadata=True
        )
        assert code == "OK"
        calls = receiver.wait(
            lambda s, t=trace_id: (
                s.trace_id == t and s.service == "caller" and s.parent_id == APP_SPAN
            ),
            1,
            "the client's call span",
        )
        if calls[0].attributes["sidecar.attempts"] == 2:
            retried, app_saw = trace_id, trailers["echo-traceparent"]
            break
    assert retried is not None, "no call was retried"
    spans = spans_of(receiver, retried, 5)  # client call + 2 attempts, server call + 1 attempt
    assert len(spans) == 5, spans
    call = one(spans, service="caller", parent_id=APP_SPAN)
    assert call.kind == KIND_CLIENT and call.name == "meshtest.echo.v1.Echo/Unary"
    assert call.attributes["rpc.system"] == "grpc"
    assert call.attributes["rpc.service"] == "meshtest.echo.v1.Echo"
    assert call.attributes["rpc.method"] == "Unary"
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert call.attributes["sidecar.upstream"] == "echo"
    assert call.status != STATUS_ERROR and call.via == "grpc"
    assert [name for name, _ in call.events] == ["retry"]
    assert call.events[0][1]["sidecar.previous_error"] == "connect_failed"
    first = one(spans, parent_id=call.span_id, service="caller", status=STATUS_ERROR)
    second = one(spans, parent_id=call.span_id, service="caller", status=0)
    assert first.kind == second.kind == KIND_CLIENT
    assert (first.attributes["sidecar.attempt"], second.attributes["sidecar.attempt"]) == (1, 2)
    assert first.attributes["server.port"] == traced.dead_port
    assert first.attributes["sidecar.error"] == "connect_failed"
    assert first.attributes["rpc.grpc.status_code"] == 14  # UNAVAILABLE
    assert second.attributes["server.port"] == traced.server.port("inbound")
    assert second.attributes["rpc.grpc.status_code"] == 0
    assert call.start_ns <= first.start_ns <= first.end_ns <= second.start_ns
    assert second.end_ns <= call.end_ns
    server = one(spans, service="echo", kind=KIND_SERVER)
    assert server.parent_id == second.span_id  # the attempt that reached it
    assert server.via == "http" and server.attributes["rpc.method"] == "Unary"
    assert server.attributes["client.address"] == "127.0.0.1"
    assert server.attributes["server.port"] == traced.server.port("inbound")
    to_app = one(spans, service="echo", kind=KIND_CLIENT)
    assert to_app.parent_id == server.span_id
    assert to_app.attributes["server.port"] == traced.echo_port
    assert app_saw == f"00-{retried}-{to_app.span_id}-01"


async def test_a_failing_call_is_exported_at_ratio_zero(traced: Traced) -> None:
    """No traceparent from the app and ratio 0: an OK call exports nothing; a failing
    one is exported by both hops, in one trace the client sidecar started."""
    receiver = traced.receiver
    ok = await unary(traced.addr, (("x-request-id", "untraced-ok"),))
    failing = await unary(traced.addr, (("x-request-id", "failing-1"),), status_code=5)
    assert (ok[0], failing[0]) == ("OK", "NOT_FOUND")
    found = receiver.wait(
        lambda s: s.attributes.get("sidecar.request_id") == "failing-1" and s.service == "caller",
        1,
        "the failing call's client span",
    )
    call = found[0]
    assert call.parent_id == ""  # the trace started at the client sidecar
    assert call.status == STATUS_ERROR and call.attributes["rpc.grpc.status_code"] == 5
    server = receiver.wait(
        lambda s: s.trace_id == call.trace_id and s.kind == KIND_SERVER, 1, "the server span"
    )[0]
    attempts = [s for s in receiver.spans if s.parent_id == call.span_id]
    assert server.parent_id in {a.span_id for a in attempts}
    assert server.status != STATUS_ERROR  # NOT_FOUND is the app's answer, not a server error
    assert server.attributes["rpc.grpc.status_code"] == 5
    # the OK call went first through the same FIFO queues: it would be here by now
    await asyncio.sleep(0.3)
    assert not [
        s for s in receiver.spans if s.attributes.get("sidecar.request_id") == "untraced-ok"
    ]
    lines = [json.loads(x) for x in traced.access_log.read_text().splitlines()]
    logged = next(x for x in lines if x["request_id"] == "failing-1")
    assert logged["trace_id"] == call.trace_id  # the access log names the trace it started


async def _requests(n: int) -> AsyncIterator[echo_pb2.EchoRequest]:
    for i in range(n):
        yield echo_pb2.EchoRequest(payload=b"%d" % i)


async def test_all_four_call_kinds_are_traced(traced: Traced) -> None:
    """Unary, server streaming, client streaming and bidi calls each give a client call
    span and, below one of its attempts, the server sidecar's span, with status OK."""
    ids = {kind: new_trace() for kind in ("Unary", "ServerStream", "ClientStream", "Bidi")}
    async with grpc.aio.insecure_channel(traced.addr) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)

        def md(kind: str) -> tuple[tuple[str, str]]:
            return (("traceparent", traceparent(ids[kind])),)

        await stub.Unary(echo_pb2.EchoRequest(payload=b"u"), metadata=md("Unary"), timeout=5)
        got = [r async for r in stub.ServerStream(
            echo_pb2.EchoRequest(count=3), metadata=md("ServerStream"), timeout=5
        )]  # fmt: skip
        assert len(got) == 3
        reply = await stub.ClientStream(_requests(3), metadata=md("ClientStream"), timeout=5)
        assert reply.received == 3
        echoed = [r async for r in stub.Bidi(_requests(3), metadata=md("Bidi"), timeout=5)]
        assert len(echoed) == 3
    for kind, trace_id in ids.items():
        spans = traced.receiver.wait(
            lambda s, t=trace_id: s.trace_id == t and s.kind == KIND_SERVER,
            1,
            f"the server span of {kind}",
        )
        server = spans[0]
        spans = spans_of(traced.receiver, trace_id, 4)
        call = one(spans, service="caller", parent_id=APP_SPAN)
        assert call.attributes["rpc.method"] == kind and call.status != STATUS_ERROR
        attempts = {s.span_id for s in spans if s.parent_id == call.span_id}
        assert server.parent_id in attempts, (kind, spans)
        assert server.attributes["rpc.method"] == kind
        assert server.attributes["rpc.grpc.status_code"] == 0


async def test_a_refused_call_names_the_sidecars_reason(traced: Traced) -> None:
    """A call no route takes: the client sidecar's span says UNIMPLEMENTED and carries
    the x-sidecar-error reason as attribute and event (no attempt was made)."""
    trace_id = new_trace()
    async with grpc.aio.insecure_channel(traced.addr) as ch:
        method = ch.unary_unary("/nowhere.v1.Nothing/Call")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(b"", metadata=(("traceparent", traceparent(trace_id, False)),), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    (span,) = spans_of(traced.receiver, trace_id, 1)
    assert span.parent_id == APP_SPAN and span.status == STATUS_ERROR  # failed: exported
    assert span.attributes["rpc.grpc.status_code"] == 12
    assert span.attributes["sidecar.error"] == "no_route"
    assert span.attributes["sidecar.attempts"] == 0
    assert ("sidecar.error", {"x-sidecar-error": "no_route"}) in span.events


async def test_a_full_queue_drops_calls_and_counts_them(tmp_path: Path) -> None:
    """No collector and a queue of one call: every call is still answered; the traced
    calls beyond the queue are dropped and counted, the failed export counted too."""
    cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "tracing": {
            "endpoint": f"http://127.0.0.1:{free_port()}",  # nobody listens
            "sample_ratio": 1.0,
            "queue_calls": 1,
            "export_interval_s": 0.5,
            "timeout_s": 1,
        },
    }
    with sidecar_process(tmp_path, "lonely", cfg, wait="/live") as side:
        addr = f"127.0.0.1:{side.port('outbound')}"
        async with grpc.aio.insecure_channel(addr) as ch:
            method = ch.unary_unary("/nowhere.v1.Nothing/Call")

            async def call() -> grpc.StatusCode:
                try:
                    await method(b"", timeout=5)
                except grpc.aio.AioRpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

            codes = await asyncio.gather(*(call() for _ in range(40)))
        assert set(codes) == {grpc.StatusCode.UNIMPLEMENTED}

        def counted() -> tuple[float, float] | None:
            _, body = http("GET", side.url("/metrics"))
            text = body.decode().splitlines()

            def value(name: str) -> float:
                return sum(float(s.rpartition(" ")[2]) for s in text if s.startswith(name + " "))

            dropped = value("sidecar_tracing_dropped_calls_total")
            failed = value("sidecar_tracing_spans_failed_total")
            return (dropped, failed) if dropped > 0 and failed > 0 else None

        dropped, failed = wait_until(counted, 20, "drops and the failed export counted")
    assert dropped <= 39  # at least the one queued call was kept for export
    assert failed >= 1
