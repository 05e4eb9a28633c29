"""`sidecar init`: a commented sidecar config for one service, from its `.proto` files.

Pure apart from `init_main()` (reads the protos, writes the file). The protos are read
for their `package` and `service` declarations only (comments and strings skipped), so
no protoc is needed; the services found are what the inbound serves: the app's health
check asks for the first, and the config's comments list them all. `--calls NAME` adds
an upstream `NAME` (routed by `:authority`: the app dials `NAME` through the outbound
listener); `--calls NAME=pkg.Svc,pkg.Other` routes those gRPC services to it by
`:path` as well (sidecar/route.py). The text is validated by the same code as `sidecar
check` (sidecar/config.py `parse_config`) before it is written: a bad flag never leaves
a half-valid file behind.

The chaos runner (sidecar/chaos/topology.py) starts sidecars from `render()`'s output
when a scenario names no config of its own: one set of defaults, written once.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidecar.config import ConfigError, parse_config

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"' + r"|'(?:[^'\\\n]|\\.)*'")
_PACKAGE = re.compile(r"\bpackage\s+([A-Za-z_][\w.]*)\s*;")
_SERVICE = re.compile(r"\bservice\s+([A-Za-z_]\w*)\s*\{")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # an SRV label


def proto_services(text: str) -> list[str]:
    """The fully qualified gRPC services a `.proto` text declares, in order."""
    bare = _COMMENT.sub(" ", _STRING.sub('""', text))
    package = _PACKAGE.search(bare)
    prefix = f"{package[1]}." if package else ""
    return [prefix + m[1] for m in _SERVICE.finditer(bare)]


@dataclass
class InitSpec:
    service: str
    site: str
    domain: str
    grpc_services: list[str] = field(default_factory=list)  # what the app serves
    calls: dict[str, list[str]] = field(default_factory=dict)  # upstream -> gRPC services
    inbound: str = "0.0.0.0:8181"
    app: str = "127.0.0.1:9181"
    outbound: str = "127.0.0.1:15001"
    admin: str = "127.0.0.1:9901"
    registry: str = "127.0.0.1:5353"
    health: str = "tcp"
    sites: list[str] = field(default_factory=list)


def parse_calls(values: list[str]) -> dict[str, list[str]]:
    """`NAME` or `NAME=pkg.Svc,pkg.Other` per value; ValueError names the bad one."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, _, services = value.partition("=")
        if not _NAME.match(name):
            raise ValueError(
                f"--calls {value}: {name!r} is not a service name (lower-case letters, "
                "digits and '-'; it becomes a DNS label)"
            )
        out[name] = [s for s in services.split(",") if s]
    return out


def _q(value: Any) -> str:
    """A YAML scalar or flow list (JSON is YAML)."""
    return json.dumps(value)


def render(spec: InitSpec) -> str:
    """The config file's text, every key commented."""
    srv = f"_{spec.service}._grpc.{spec.site}.{spec.domain}"
    served = ", ".join(spec.grpc_services) or "(no service found in the protos)"
    sites = spec.sites or [spec.site]
    lines = [
        f"# Sidecar config for {spec.service} in site {spec.site}, written by `sidecar init`.",
        "# Check a change with `sidecar check -c FILE`; every key is in README.md's tables.",
        "",
        "# This instance's service: it registers itself as SRV " + srv,
        f"service: {_q(spec.service)}",
        "# The site (data centre) it runs in: upstreams in this site are tried first",
        f"site: {_q(spec.site)}",
        "# The DNS domain under which the SRV names live",
        f"domain: {_q(spec.domain)}",
        "",
        "inbound:",
        "  # Where other sidecars reach this instance (the address registration publishes)",
        f"  listen: {_q(spec.inbound)}",
        f"  # The app itself, on loopback; it serves {served}",
        f"  app: {_q(spec.app)}",
        "  health:",
        "    # How the sidecar tells the app is up before registering it: grpc (grpc.health.v1,",
        "    # the best when the app serves it), tcp (the port accepts) or none",
        f"    mode: {_q(spec.health)}",
        "    # grpc.health.v1 service name asked for in grpc mode",
        f"    service: {_q(spec.grpc_services[0] if spec.grpc_services else '')}",
        "",
        "# The loopback address the app dials to call its upstreams (all of them, one address)",
        "outbound:",
        f"  listen: {_q(spec.outbound)}",
        "",
        "# Metrics, /ready, /clusters, /faults; keep it on loopback (else admin.token is needed)",
        "admin:",
        f"  listen: {_q(spec.admin)}",
        "",
        "discovery:",
        "  # DNS servers asked for the upstreams' SRV records (here: `sidecar registry`)",
        f"  nameservers: [{_q(spec.registry)}]",
        "  # Sites whose instances are used, this one first, the others as failover",
        f"  sites: {_q(sites)}",
        "",
        "# Publish this instance in DNS (RFC 2136 UPDATE) while the app is healthy",
        "registration:",
        "  # The DNS server that takes the UPDATE (`sidecar registry`, or BIND with `tsig:`)",
        f"  nameserver: {_q(spec.registry)}",
        "  # Seconds the record lives; it is renewed every ttl_s / 3",
        "  ttl_s: 30",
    ]
    if spec.calls:
        lines += ["", "# The services this one calls, each found by SRV in every site above"]
        lines += ["upstreams:"]
        for name, services in spec.calls.items():
            lines.append(f"  {name}:")
            if services:
                lines += [
                    "    # Calls to these gRPC services go here (else: the app dials the",
                    f"    # authority {name!r})",
                    f"    grpc_services: {_q(services)}",
                ]
            else:
                lines += [
                    f"    # Routed by :authority: the app dials {name!r} through the outbound",
                    "    # listener (list grpc_services to route by method instead)",
                    "    grpc_services: []",
                ]
            lines += [
                "    # Deadline for a call whose caller sets none, retries included",
                "    timeout_ms: 1000",
                "    # Retry on another instance where safe (nothing answered yet)",
                '    retries: {max_attempts: 3, "on": [UNAVAILABLE]}',
                "    # Eject an instance after this many failures in a row, for reset_timeout_s",
                "    breaker: {fail_max: 5, reset_timeout_s: 5.0}",
                "    # Ask every instance grpc.health.v1 on its inbound sidecar (it answers itself)",
                "    health_check: {interval_s: 1.0, timeout_s: 0.5}",
            ]
    return "\n".join(lines) + "\n"


def checked(spec: InitSpec) -> tuple[str, dict[str, Any]]:
    """The text and its parsed data, validated as `sidecar check` does (ConfigError)."""
    text = render(spec)
    data = yaml.safe_load(text)
    parse_config(data)
    return text, data


def init_main(
    protos: list[str],
    service: str,
    site: str,
    domain: str,
    calls: list[str],
    out: str,
    force: bool = False,
    health: str = "tcp",
) -> int:
    """`sidecar init`: write the config to `out` (`-`: stdout); 0, or 1 saying why."""
    try:
        found: list[str] = []
        for path in protos:
            found += [s for s in proto_services(Path(path).read_text()) if s not in found]
        spec = InitSpec(service, site, domain, found, parse_calls(calls), health=health)
        for flag, value in (("--service", service), ("--site", site)):
            if not _NAME.match(value):
                raise ValueError(f"{flag} {value}: not a {flag[2:]} name (it becomes a DNS label)")
        text, _ = checked(spec)
    except OSError as exc:
        print(f"sidecar init: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except (ValueError, ConfigError) as exc:
        print(f"sidecar init: {exc}", file=sys.stderr)
        return 1
    if out == "-":
        sys.stdout.write(text)
        return 0
    target = Path(out)
    if target.exists() and not force:
        print(f"sidecar init: {out} exists (--force to replace it)", file=sys.stderr)
        return 1
    target.write_text(text)
    names = ", ".join(found) or "no gRPC service"
    print(f"sidecar init: {out} written ({service} in {site}; serves {names})")
    return 0
