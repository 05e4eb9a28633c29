"""A real OTLP trace receiver for tests: `opentelemetry.proto.collector.trace.v1.TraceService`
over gRPC (grpcio), and the same export request over HTTP (`POST /v1/traces`,
protobuf), both on loopback port 0, keeping every span they are sent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.integration.procs import wait_until


@dataclass
class Span:
    """One received span, flattened for assertions (ids as hex, attributes as a dict)."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int  # trace_pb2.Status.StatusCode
    start_ns: int
    end_ns: int
    via: str  # "grpc" or "http"


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Receiver:
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    grpc_port: int = 0
    http_port: int = 0

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest, via: str) -> None:
        found: list[Span] = []
        for rs in request.resource_spans:
            service = str(_attrs(rs.resource.attributes).get("service.name"))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        Span(
                            service, s.name, s.kind, s.trace_id.hex(), s.span_id.hex(),
                            s.parent_span_id.hex(), _attrs(s.attributes),
                            [(e.name, _attrs(e.attributes)) for e in s.events],
                            s.status.code, s.start_time_unix_nano, s.end_time_unix_nano, via,
                        )
                    )  # fmt: skip
        with self.lock:
            self.spans.extend(found)

    def wait(self, pick: Callable[[Span], bool], count: int, what: str) -> list[Span]:
        """The spans `pick` selects, once there are `count` of them (bounded wait)."""

        def enough() -> list[Span] | None:
            with self.lock:
                chosen = [s for s in self.spans if pick(s)]
            return chosen if len(chosen) >= count else None

        found: list[Span] = wait_until(enough, 15, what)
        return found


KIND_SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
KIND_CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
STATUS_ERROR = trace_pb2.Status.StatusCode.STATUS_CODE_ERROR


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.receiver.take(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(receiver), server)
    receiver.grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.take(request, "http")
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.http_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        http.shutdown()
        http.server_close()
        server.stop(0)
