"""A gRPC service-mesh sidecar: DNS SRV discovery, site-aware balancing,
circuit breakers and request dropping, beside any service in any language."""

__version__ = "0.1.0"
