"""The tracer: a bounded queue of finished calls, and the thread that exports their spans.

Does I/O (OTLP over gRPC or HTTP, by the OpenTelemetry exporters) on a thread of its own.
A relayed call that is sampled or failed hands itself to `Tracer.record` when it ends
(`Call._finish_call`, sidecar/h2relay/call.py), which keeps it, as references, in a
bounded deque: no span object, no formatting, no lock on the event loop. A full
queue drops the call and counts it (`sidecar_tracing_dropped_calls_total`): a slow or
absent collector never blocks a call. Every `export_interval_s` the thread builds the
spans (spans.py) and exports them in batches of at most `batch_spans`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from sidecar.config import ConfigError, TracingConfig
from sidecar.tracing.context import bound
from sidecar.tracing.metrics import TracingMetrics
from sidecar.tracing.spans import Finished, build

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = {
    "otlp_grpc": "http://127.0.0.1:4317",
    "otlp_http": "http://127.0.0.1:4318/v1/traces",
}


class SpanExporter(Protocol):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult: ...
    def shutdown(self) -> None: ...


def otlp_modules_problem() -> str | None:
    """Why the OTLP exporters cannot load, or None. xds-protos 1.85 ships generated
    `opentelemetry.proto` modules of OTLP 0.9 in the same files as opentelemetry-proto's
    (grpc/grpc pull 42429 takes them out): whichever pip installed last wins, and with
    xds-protos' the exporters fail to import (`InstrumentationScope`)."""
    try:
        from opentelemetry.proto.common.v1 import common_pb2
    except ImportError as exc:
        return f"the OTLP protos do not import ({exc}): pip install opentelemetry-proto"
    if hasattr(common_pb2, "InstrumentationScope"):
        return None
    from importlib.metadata import version

    return (
        "opentelemetry-proto's modules were overwritten by the older copies xds-protos "
        "ships (OTLP 0.9); put them back with: pip install --force-reinstall --no-deps "
        f"opentelemetry-proto=={version('opentelemetry-proto')}"
    )


def make_exporter(config: TracingConfig) -> SpanExporter:
    """The OpenTelemetry OTLP exporter the config names (imported only when used)."""
    problem = otlp_modules_problem()
    if problem is not None:
        raise ConfigError("tracing", problem)
    endpoint = config.endpoint or DEFAULT_ENDPOINTS[config.exporter]
    headers = dict(config.headers)
    if config.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=endpoint,
            insecure=endpoint.startswith("http://"),
            headers=headers or None,
            timeout=config.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=endpoint, headers=headers or None, timeout=config.timeout_s)


class Tracer:
    """Finished calls to export, and the thread that exports them."""

    def __init__(
        self,
        config: TracingConfig,
        service: str,
        site: str,
        metrics: TracingMetrics | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or TracingMetrics()
        self.threshold = bound(config.sample_ratio)  # read by every call (Call.start)
        self.capacity = config.queue_calls
        self.site = site
        self.queue: deque[Finished] = deque()
        self.resource = Resource.create({"service.name": config.service_name or service})
        self._exporter = exporter
        self._wall_offset = time.time() - time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one export at a time (the thread, or flush/close)

    # ---- on the event loop ----------------------------------------------------------

    def record(self, call: Any) -> None:
        """A call that is sampled or failed ended (Call._finish_call decides): keep it,
        or count a drop (queue full)."""
        queue = self.queue
        if len(queue) >= self.capacity:
            self.metrics.dropped.inc()
            return
        queue.append(Finished(call, time.monotonic()))  # deque.append: safe beside the thread

    # ---- on the exporter's thread ---------------------------------------------------

    def start(self) -> None:
        if self._exporter is None:
            self._exporter = make_exporter(self.config)
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.export_interval_s):
            self.flush()

    def flush(self) -> int:
        """Build and export what the queue holds; the number of spans exported."""
        with self._lock:
            exporter = self._exporter
            queue = self.queue
            batch: list[ReadableSpan] = []
            sent = 0
            while queue:
                finished = queue.popleft()
                try:
                    batch.extend(build(finished, self.resource, self.site, self._wall_offset))
                except Exception:
                    log.exception("tracing: the spans of a call could not be built")
                if len(batch) >= self.config.batch_spans:
                    sent += self._export(exporter, batch)
                    batch = []
            if batch:
                sent += self._export(exporter, batch)
            return sent

    def _export(self, exporter: SpanExporter | None, batch: list[ReadableSpan]) -> int:
        if exporter is None:
            self.metrics.failed.inc(len(batch))
            return 0
        try:
            result = exporter.export(batch)
        except Exception as exc:
            result = SpanExportResult.FAILURE
            log.warning("tracing: export to %s failed: %s", self.config.exporter, exc)
        if result is SpanExportResult.SUCCESS:
            self.metrics.exported.inc(len(batch))
            return len(batch)
        self.metrics.failed.inc(len(batch))
        return 0

    def close(self) -> None:
        """Export what is left (the calls are over) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 5)
            self._thread = None
        self.flush()
        exporter = self._exporter
        if exporter is not None:
            try:
                exporter.shutdown()
            except Exception:
                log.exception("tracing: the exporter did not shut down cleanly")
