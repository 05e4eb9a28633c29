"""Snapshots from a config file's static `endpoints`, for `sidecar xds` before discovery.

Pure. Static endpoints carry no site, SRV priority or weight: each is put in the
config's own site at priority 0, weight 1, healthy. Upstreams that use SRV discovery
(no `endpoints`) get an empty snapshot until discovery is wired to `XdsServer.update`.
"""

from __future__ import annotations

from sidecar.config import Config
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.xds.resources import UpstreamSnapshot


def static_snapshots(config: Config) -> dict[str, UpstreamSnapshot]:
    out = {}
    for name, upstream in config.upstreams.items():
        endpoints = []
        for text in upstream.endpoints or ():
            host, port = parse_hostport(text)
            endpoints.append(Endpoint(host, port, site=config.site))
        out[name] = UpstreamSnapshot.of(
            endpoints,
            config.upstream_sites(name),
            lb=upstream.lb,
            hash_key=upstream.hash_key,
            grpc_services=tuple(upstream.grpc_services),
            overprovisioning_factor=upstream.overprovisioning_factor,
        )
    return out
