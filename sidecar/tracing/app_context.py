"""The app's current OpenTelemetry span, as the W3C `traceparent` of an in-process call.

No I/O. The in-process client (sidecar/client/link.py) runs in the app's process: when
the app traces with OpenTelemetry and a span is current where it makes the call, the
call joins that span's trace (as a sidecar joins the `traceparent` an app sends). An
explicit `traceparent` in the call's metadata wins. Read only with tracing on.
"""

from __future__ import annotations

from sidecar.metadata import Pairs


def join_app_trace(metadata: Pairs) -> Pairs:
    """`metadata` plus the current span's traceparent (and tracestate), if valid."""
    for name, _ in metadata:
        if name == "traceparent":
            return metadata
    from opentelemetry import trace  # the API only: the app's SDK, if any, sets it up

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return metadata
    flags = "01" if context.trace_flags.sampled else "00"
    added: Pairs = (("traceparent", f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"),)
    if context.trace_state:
        added += (("tracestate", context.trace_state.to_header()),)
    return tuple(metadata) + added
