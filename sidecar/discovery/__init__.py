"""Discovery through DNS SRV and registration by RFC 2136 dynamic update.

The public surface (the composition root uses these):

- `Discovery(config, on_update)`: `await start()`, `await stop()`, `snapshot()`,
  `await wait_ready(timeout)`; `on_update(upstream, site, endpoints, stale)`.
- `Registrar(config)`: `start(healthy)` / `await stop()`, or `await run(healthy)`,
  `await register()`, `await deregister()`.
- `RegistryServer(Zone(origin), host, port, keys=, journal=)`: the embedded registry.

Pure parts: `names`, `answer`, `state`, `update`, `zone`. I/O: `resolver`,
`watcher`, `registrar`, `registry`, `commands`.
"""

from sidecar.discovery.answer import LookupFailure, SrvAnswer, build_endpoints, rfc2782_order
from sidecar.discovery.names import srv_name, upstream_names
from sidecar.discovery.registrar import Registrar, RegistrationError
from sidecar.discovery.registry import RegistryServer
from sidecar.discovery.resolver import DnsClient
from sidecar.discovery.watcher import Discovery
from sidecar.discovery.zone import Zone

__all__ = [
    "Discovery",
    "DnsClient",
    "LookupFailure",
    "Registrar",
    "RegistrationError",
    "RegistryServer",
    "SrvAnswer",
    "Zone",
    "build_endpoints",
    "rfc2782_order",
    "srv_name",
    "upstream_names",
]
