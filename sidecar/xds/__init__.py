"""xDS: serve SRV discovery to proxyless gRPC clients (`xds:///NAME`) and Envoy.

- `resources`: pure mapping of discovery snapshots to LDS/RDS/CDS/EDS resources.
- `stream`: pure per-stream state-of-the-world protocol (versions, nonces, ACK/NACK).
- `server`: the grpc.aio ADS server (`XdsServer`), plus CSDS from `csds`.
- `static`: snapshots from a config's static `endpoints` alone.
- `feed`: discovery and health checks → snapshots → the server (`sidecar xds`, `xds:`).
"""

from sidecar.xds.resources import EndpointState, Resources, UpstreamSnapshot, build_resources
from sidecar.xds.server import XdsServer

__all__ = ["EndpointState", "Resources", "UpstreamSnapshot", "XdsServer", "build_resources"]
