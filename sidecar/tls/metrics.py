"""What mTLS counts (sidecar/tls/runtime.py, sidecar/tls/transport.py), on the
sidecar's registry (sidecar/metrics.py).

Declarations only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class TlsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.cert_expiry = Gauge(
            "sidecar_tls_cert_expiry_seconds",
            "Seconds until this sidecar's certificate (tls.cert_file, as in use) expires; "
            "+Inf without tls",
            registry=r,
        )
        self.cert_expiry.set(float("inf"))  # no certificate, nothing to expire
        self.handshake_failures = Counter(
            "sidecar_tls_handshake_failures_total",
            "Failed TLS handshakes with peers (unknown_ca, expired, not_yet_valid, "
            "wrong_identity, no_certificate, bad_certificate, plaintext, timeout, other)",
            ["direction", "reason"],
            registry=r,
        )
        self.plaintext_connections = Counter(
            "sidecar_tls_plaintext_connections_total",
            "Plaintext callers' connections accepted by an inbound listener with mtls: permissive",
            registry=r,
        )
        self.reloads = Counter(
            "sidecar_tls_reloads_total",
            "Changed tls files read: loaded (new handshakes use them) or refused (the old "
            "ones stay)",
            ["result"],
            registry=r,
        )
