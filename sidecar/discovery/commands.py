"""The `sidecar resolve` and `sidecar registry` verbs.

Does I/O (one lookup, or a server until SIGINT/SIGTERM); the CLI module only
parses arguments and calls these.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
from pathlib import Path

from sidecar.discovery.answer import LookupFailure, build_endpoints, rfc2782_order
from sidecar.discovery.registry import RegistryServer, parse_tsig_key
from sidecar.discovery.resolver import DnsClient, parse_nameservers
from sidecar.discovery.zone import Zone
from sidecar.endpoint import parse_hostport


def resolve_main(args: argparse.Namespace) -> int:
    """Print a name's endpoints in the order the balancer would try them."""
    try:
        servers = parse_nameservers([args.nameserver]) if args.nameserver else None
    except ValueError as exc:
        print(f"sidecar resolve: --nameserver: {exc}", file=sys.stderr)
        return 2
    client = DnsClient(servers, timeout_s=args.timeout)
    name = args.name if args.name.endswith(".") else args.name + "."
    try:
        answer = asyncio.run(client.lookup_srv(name))
    except LookupFailure as exc:
        print(f"sidecar resolve: {name}: lookup failed: {exc}", file=sys.stderr)
        return 1
    endpoints = rfc2782_order(
        build_endpoints(answer.records, answer.addresses, ""), random.Random()
    )
    if args.json:
        print(
            json.dumps(
                {
                    "name": name,
                    "result": answer.kind,
                    "ttl": answer.ttl,
                    "endpoints": [
                        {
                            "address": ep.address,
                            "host": ep.host,
                            "port": ep.port,
                            "priority": ep.priority,
                            "weight": ep.weight,
                            "target": ep.target,
                        }
                        for ep in endpoints
                    ],
                },
                indent=2,
            )
        )
        return 0
    if answer.kind != "records":
        why = {
            "nxdomain": "no such name (NXDOMAIN)",
            "nodata": "no SRV records",
            "unavailable": "service decidedly not available (target '.')",
        }[answer.kind]
        print(f"{name}: {why}")
        return 0
    print(f"{name} (ttl {answer.ttl:g}s), in the order a client tries them:")
    print(f"  {'PRIO':>5} {'WEIGHT':>6}  {'ADDRESS':<40} TARGET")
    for ep in endpoints:
        print(f"  {ep.priority:>5} {ep.weight:>6}  {ep.address:<40} {ep.target}")
    unresolved = sorted({r.target for r in answer.records} - set(answer.addresses))
    for target in unresolved:
        print(f"  (no address for {target})")
    return 0


def registry_main(args: argparse.Namespace) -> int:
    """Run the embedded registry until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        host, port = parse_hostport(args.listen)
        keys = None
        if args.tsig_key:
            key = parse_tsig_key(args.tsig_key)
            keys = {key.name: key}
    except ValueError as exc:
        print(f"sidecar registry: {exc}", file=sys.stderr)
        return 2
    zone = Zone(args.zone, lease_factor=args.lease_factor, minimal_responses=args.minimal_responses)
    journal = Path(args.journal) if args.journal else None
    server = RegistryServer(zone, host, port, keys=keys, journal=journal)

    async def serve() -> None:
        try:
            await server.start()
        except OSError as exc:  # the port is taken, or the address is not this host's
            message = f"sidecar registry: cannot listen on {host}:{port} (udp+tcp): {exc}"
            raise SystemExit(message) from None
        print(f"sidecar registry: zone {zone.origin} on {host}:{server.port} (udp+tcp)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
