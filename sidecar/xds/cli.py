"""`sidecar xds`: run the ADS server for a config's upstreams until SIGINT/SIGTERM.

Does I/O. Serves the static `endpoints` only; discovery wiring comes later.
"""

from __future__ import annotations

import asyncio
import signal

from sidecar.config import Config
from sidecar.xds.server import XdsServer
from sidecar.xds.static import static_snapshots


async def serve(config: Config, listen: str) -> int:
    server = XdsServer(listen)
    server.update(static_snapshots(config))
    port = await server.start()
    print(f"sidecar xds: serving {len(config.upstreams)} upstreams on port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0
