"""The spans of a finished call, built from what it recorded (fakes of the relay's call
objects: this is pure code): kinds, parents, attributes, status and the events that name
retries and the sidecar's own refusals."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.h2relay.attempt import Failure
from sidecar.outcome import Outcome
from sidecar.tracing.context import begin, bound
from sidecar.tracing.spans import Finished, build

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
RESOURCE = Resource.create({"service.name": "caller"})


def attempt(number: int, address: str, started: float, finished: float, **kw: Any) -> Any:
    endpoint = SimpleNamespace(site="lon3")
    return SimpleNamespace(
        number=number, address=address, host=SimpleNamespace(endpoint=endpoint),
        started=started, finished=finished, span_id=b"%016x" % (number + 10), **kw,
    )  # fmt: skip


def finished(direction: str, code: str, reason: str | None, attempts: list[Any]) -> Finished:
    trace = begin(f"00-{TRACE}-{PARENT}-01".encode(), bound(0.0))
    trace.attempts.extend(attempts)
    call = SimpleNamespace(
        req=SimpleNamespace(
            method="/meshtest.echo.v1.Echo/Unary",
            route=SimpleNamespace(name="echo"),
            block=b"",
        ),
        trace=trace,
        plane=SimpleNamespace(direction=direction),
        started=100.0,
        code=code,
        local_reason=reason,
        request_id=b"req-1",
        down=SimpleNamespace(peer="127.0.0.1:5555"),
    )
    return Finished(call, 100.5)


def test_a_retried_outbound_call() -> None:
    """The call's CLIENT span below the caller's; two attempt spans below it, the failed
    one naming its reason; a retry event on the call's span."""
    lost = Failure("UNAVAILABLE", Outcome.CONNECT_FAILED, "connect_failed", "refused")
    first = attempt(1, "127.0.0.1:1", 100.1, 100.2, failure=lost)
    second = attempt(2, "127.0.0.1:2", 100.3, 100.4, failure=None)
    call, a1, a2 = build(finished("outbound", "OK", None, [first, second]), RESOURCE, "lon3", 0.0)
    assert call.name == a1.name == "meshtest.echo.v1.Echo/Unary"
    assert call.kind == a1.kind == a2.kind == SpanKind.CLIENT
    assert call.parent is not None and f"{call.parent.span_id:016x}" == PARENT
    assert f"{call.context.trace_id:032x}" == TRACE
    assert a1.parent == a2.parent == call.context
    assert a2.context.span_id == 12  # the id the attempt sent upstream
    assert call.attributes["sidecar.attempts"] == 2
    assert call.attributes["sidecar.request_id"] == "req-1"
    assert call.attributes["server.address"] == "echo"
    assert call.status.status_code == StatusCode.UNSET
    assert [e.name for e in call.events] == ["retry"]
    assert call.events[0].attributes["sidecar.previous_error"] == "connect_failed"
    assert a1.attributes["sidecar.error"] == "connect_failed"
    assert a1.attributes["rpc.grpc.status_code"] == 14
    assert a1.status.status_code == StatusCode.ERROR
    assert (a2.attributes["server.address"], a2.attributes["server.port"]) == ("127.0.0.1", 2)
    assert a2.attributes["rpc.grpc.status_code"] == 0
    assert call.start_time < a1.start_time < a1.end_time < a2.start_time < call.end_time


def test_a_shed_inbound_call_names_the_reason_on_its_server_span() -> None:
    """Shed by admission before any attempt: one SERVER span, an error, with the reason
    as attribute and event."""
    (span,) = build(finished("inbound", "UNAVAILABLE", "overloaded", []), RESOURCE, "lon3", 0.0)
    assert span.kind == SpanKind.SERVER
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["sidecar.error"] == "overloaded"
    assert span.attributes["client.address"] == "127.0.0.1"
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("sidecar.error", {"x-sidecar-error": "overloaded"})
    ]


def test_an_apps_own_error_is_not_a_server_error() -> None:
    """Inbound, NOT_FOUND is the app's answer (semantic conventions: not an error on a
    server span); outbound the same status makes the client span an error."""
    inbound = attempt(1, "127.0.0.1:9", 100.1, 100.2, failure=None)
    server, _ = build(finished("inbound", "NOT_FOUND", None, [inbound]), RESOURCE, "lon3", 0.0)
    assert server.status.status_code == StatusCode.UNSET
    assert server.attributes["rpc.grpc.status_code"] == 5
    outbound = attempt(1, "127.0.0.1:9", 100.1, 100.2, failure=None)
    client, _ = build(finished("outbound", "NOT_FOUND", None, [outbound]), RESOURCE, "lon3", 0.0)
    assert client.status.status_code == StatusCode.ERROR
