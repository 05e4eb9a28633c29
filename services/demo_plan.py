"""The demo's topology and every sidecar's config: which process runs where, on which ports.

Pure (no I/O): ports come in as a list, the result is plain data that demo.py starts.
Two sites; in each, N instances of every data service, one view and one access point,
each app beside its own sidecar. The generated configs follow sidecar/config.py and
are validated by it, so a schema change that breaks the demo fails a unit test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sidecar.config import Config, parse_config

DOMAIN = "example.net"
SITES = ("lon3", "sto3")
DATA = ("playlist", "metadata", "search")
GRPC_SERVICES = {
    "playlist": "music.playlist.v1.Playlist",
    "metadata": "music.metadata.v1.Metadata",
    "search": "music.search.v1.Search",
    "playlistview": "music.playlistview.v1.PlaylistView",
    "accesspoint": "music.accesspoint.v1.AccessPoint",
}
# Who calls whom (the request walk): perimeter -> view -> data.
PEERS = {
    "accesspoint": ("playlistview", "search"),
    "playlistview": ("playlist", "metadata"),
}
REGISTRATION_TTL_S = 3
EMPTY_GRACE_S = 2.0
LINGER_S = REGISTRATION_TTL_S + EMPTY_GRACE_S + 0.5
# Apps that call their peers with the in-process client (sidecar.client) instead of their
# sidecar's outbound listener, reading the same sidecar config: both ways run side by side.
INPROCESS = frozenset({("playlistview", "sto3")})
# Per-upstream timeouts when the caller sets no deadline (the apps always do).
TIMEOUT_MS = {"playlistview": 900.0, "search": 600.0, "playlist": 400.0, "metadata": 300.0}


@dataclass
class Instance:
    service: str
    site: str
    index: int
    app_port: int
    inbound_port: int
    admin_port: int
    outbound_port: int | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.site}-{self.index}"

    @property
    def is_data(self) -> bool:
        return self.service in DATA

    @property
    def inprocess(self) -> bool:
        """Calls its peers in-process (sidecar.client), not through its outbound listener."""
        return (self.service, self.site) in INPROCESS


@dataclass
class Plan:
    registry_port: int
    instances: list[Instance]

    def by_service(self, service: str, site: str | None = None) -> list[Instance]:
        return [
            i for i in self.instances if i.service == service and (site is None or i.site == site)
        ]


def _upstream(peer: str) -> dict[str, Any]:
    return {
        "grpc_services": [GRPC_SERVICES[peer]],
        "timeout_ms": TIMEOUT_MS[peer],
        "lb": "peak_ewma",
        "retries": {"max_attempts": 2, "on": ["UNAVAILABLE"]},
        "breaker": {"fail_max": 5, "reset_timeout_s": 5.0},
    }


def sidecar_config(inst: Instance, registry_port: int) -> dict[str, Any]:
    """The YAML document (as data) for one instance's sidecar."""
    dns = f"127.0.0.1:{registry_port}"
    admission: dict[str, Any] = {"adaptive": "gradient", "queue_size": 64}
    if inst.service == "accesspoint":
        # The perimeter sheds first: a bounded queue and CoDel-style queue-delay dropping.
        admission = {"adaptive": "gradient", "queue_size": 128, "codel_target_ms": 5.0}
    config: dict[str, Any] = {
        "service": inst.service,
        "site": inst.site,
        "domain": DOMAIN,
        "inbound": {
            "listen": f"127.0.0.1:{inst.inbound_port}",
            "app": f"127.0.0.1:{inst.app_port}",
            "health": {"mode": "grpc", "interval_s": 1.0},
            "admission": admission,
        },
        "admin": {"listen": f"127.0.0.1:{inst.admin_port}"},
        "drain_grace_s": 1.0,
        # Short TTLs so the story moves at demo speed: callers notice a (de)registration
        # within REGISTRATION_TTL_S, and believe an emptied site after EMPTY_GRACE_S more.
        "discovery": {
            "nameservers": [dns],
            "sites": list(SITES),
            "ttl_floor_s": 1.0,
            "empty_grace_s": EMPTY_GRACE_S,
        },
        "registration": {
            "nameserver": dns,
            "zone": DOMAIN,
            "ttl_s": REGISTRATION_TTL_S,
            "check_interval_s": 0.5,
            "address": "127.0.0.1",
            # A stopping instance serves until every caller has let go of it.
            "linger_s": LINGER_S,
        },
    }
    if inst.outbound_port is not None:
        config["outbound"] = {"listen": f"127.0.0.1:{inst.outbound_port}"}
        config["upstreams"] = {peer: _upstream(peer) for peer in PEERS[inst.service]}
    return config


def make_plan(
    ports: Iterator[int], data_instances: int = 2, registry_port: int | None = None
) -> Plan:
    """Lay out both sites on the given free ports (3 or 4 per instance, 1 for DNS unless
    `registry_port` names the registry's)."""
    if registry_port is None:
        registry_port = next(ports)
    else:  # the caller's port: no instance gets it too
        ports = (p for p in ports if p != registry_port)
    instances: list[Instance] = []
    for site in SITES:
        for service in DATA:
            for index in range(data_instances):
                instances.append(
                    Instance(service, site, index, next(ports), next(ports), next(ports))
                )
        for service in ("playlistview", "accesspoint"):
            instances.append(
                Instance(service, site, 0, next(ports), next(ports), next(ports), next(ports))
            )
    for inst in instances:
        inst.sidecar = sidecar_config(inst, registry_port)
    return Plan(registry_port, instances)


def validate(plan: Plan) -> list[Config]:
    """Every generated sidecar config through the real schema (raises ConfigError)."""
    return [parse_config(inst.sidecar) for inst in plan.instances]


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    story: str


def story(duration_s: float) -> list[Phase]:
    """The scripted story, scaled to the run's duration."""
    steps = [
        ("steady", 0.15, "steady state: both sites serve their own users"),
        ("kill-metadata", 0.15, "one metadata instance killed: retries and breakers hide it"),
        ("slow-playlist", 0.15, "one playlist instance slowed: latency-aware balancing moves away"),
        ("lon3-playlist-down", 0.15, "every lon3 playlist stopped: traffic fails over to sto3"),
        ("restored", 0.15, "everything restored"),
        ("overload", 0.15, "an overload burst: request dropping keeps latency bounded"),
        ("cooldown", 0.10, "back to normal load"),
    ]
    phases, t = [], 0.0
    for name, share, text in steps:
        phases.append(Phase(name, round(t, 3), round(t + share * duration_s, 3), text))
        t += share * duration_s
    return phases
