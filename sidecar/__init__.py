"""A gRPC service-mesh sidecar: DNS SRV discovery, site-aware balancing,
circuit breakers and request dropping, beside any service in any language."""

from sidecar import native

__version__ = "0.1.0"

native.check()  # compiled modules (sidecar/native.py) must match their source
