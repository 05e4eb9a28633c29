"""The platforms' DNS answers, served by a real BIND: what CoreDNS and Consul publish.

A test plays the platform: it writes into BIND (RFC 2136) the records CoreDNS's
`kubernetes` plugin answers for a headless Service, or Consul's DNS interface answers for
a service, so that BIND's answers carry the same names, fields, TTLs and additional
records. The shapes, and where they were read:

- CoreDNS 1.14.7 (`plugin/kubernetes/handler_test.go`, "SRV Service (Headless)", and
  `plugin/backend_lookup.go`): `_PORT._tcp.SVC.NS.svc.CLUSTER_DOMAIN.` answers one SRV
  record per ready endpoint, `0 W PORT TARGET` with priority 0, weight
  `floor(100 / endpoints)` (at least 1), TTL 5; TARGET is `HOSTNAME.SVC.NS.svc.CD.` for
  a pod with a hostname (StatefulSets) else its IP dashed (`172-0-0-2`, `5678-abcd--1`);
  each target's A or AAAA record in the additional section. `SVC.NS.svc.CD.` A lists every
  endpoint's address.
- Consul 1.18 (`agent/dns/router_service_test.go`, `agent/dns_test.go`, the DNS interface
  docs): `[TAG.]SVC.service.DC.consul.` answers `1 1 PORT TARGET` (priority 1, weight the
  service's `Weights.Passing`, 1 by default), TTL 0 (`dns_config.service_ttl`); TARGET is
  `NODE.node.DC.consul.` when the service has no address of its own, else
  `HEXIP.addr.DC.consul.` (`7f000001` for 127.0.0.1); A/AAAA in the additional section
  (BIND adds the address records only; Consul also adds the node's TXT
  `"consul-network-segment="`, which is here as a record of its own).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rcode

from tests.dns_servers import BindServer

COREDNS_TTL = 5
CONSUL_TTL = 0


@dataclass(frozen=True)
class PodEndpoint:
    """One ready endpoint of a headless Service: a pod's address (and hostname, if set)."""

    address: str
    hostname: str | None = None

    def label(self) -> str:
        return self.hostname or self.address.replace(".", "-").replace(":", "-")


def headless_names(service: str, namespace: str, cluster_domain: str, port_name: str) -> str:
    return f"_{port_name}._tcp.{service}.{namespace}.svc.{cluster_domain}."


def publish_headless_service(
    bind: BindServer,
    *,
    service: str,
    namespace: str,
    cluster_domain: str,
    port: int,
    endpoints: Sequence[PodEndpoint],
    port_name: str = "grpc",
) -> str:
    """Replace the Service's records with CoreDNS's answer for these ready endpoints;
    with none, the names go (CoreDNS then answers NXDOMAIN). Returns the SRV name."""
    base = f"{service}.{namespace}.svc.{cluster_domain}."
    srv = headless_names(service, namespace, cluster_domain, port_name)
    msg = bind.update(zone=cluster_domain)
    msg.delete(srv)
    msg.delete(base)
    weight = max(1, 100 // max(len(endpoints), 1))
    for ep in endpoints:  # updates apply in order (RFC 2136, 3.4.2): every delete first
        msg.delete(f"{ep.label()}.{base}")
    for ep in endpoints:
        target = f"{ep.label()}.{base}"
        rdtype = "AAAA" if ipaddress.ip_address(ep.address).version == 6 else "A"
        msg.add(srv, COREDNS_TTL, "SRV", f"0 {weight} {port} {target}")
        msg.add(target, COREDNS_TTL, rdtype, ep.address)
        msg.add(base, COREDNS_TTL, rdtype, ep.address)
    rcode = bind.send(msg)
    assert rcode == dns.rcode.NOERROR, dns.rcode.to_text(rcode)
    return srv


@dataclass(frozen=True)
class ConsulInstance:
    """One healthy instance in Consul's catalog: its node, and the service's own address
    when it has one (then the SRV target is an `.addr.` name)."""

    node: str
    node_address: str
    port: int
    service_address: str | None = None
    tags: tuple[str, ...] = ()
    weight: int = 1


def hex_ip(address: str) -> str:
    """Consul's `.addr.` label: the address's bytes in hex (7f000001 for 127.0.0.1)."""
    return ipaddress.ip_address(address).packed.hex()


def _consul_target(inst: ConsulInstance, datacenter: str) -> tuple[str, str]:
    if inst.service_address:
        return f"{hex_ip(inst.service_address)}.addr.{datacenter}.consul.", inst.service_address
    return f"{inst.node}.node.{datacenter}.consul.", inst.node_address


def publish_consul_service(
    bind: BindServer,
    *,
    service: str,
    datacenter: str,
    instances: Sequence[ConsulInstance],
    tags: Sequence[str] = (),
) -> str:
    """Replace the service's records (untagged, and per tag of `tags` and the instances')
    with Consul's answer for these healthy instances; with none, the names go (Consul
    answers NXDOMAIN then too)."""
    name = f"{service}.service.{datacenter}.consul."
    msg = bind.update(zone="consul")
    msg.delete(name)
    for tag in sorted({*tags, *(t for inst in instances for t in inst.tags)}):
        msg.delete(f"{tag}.{name}")
    for inst in instances:  # updates apply in order (RFC 2136, 3.4.2): every delete first
        msg.delete(_consul_target(inst, datacenter)[0])
        msg.delete(f"{inst.node}.node.{datacenter}.consul.")
    for inst in instances:
        target, address = _consul_target(inst, datacenter)
        rdtype = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
        msg.add(target, CONSUL_TTL, rdtype, address)
        node = f"{inst.node}.node.{datacenter}.consul."
        msg.add(node, CONSUL_TTL, "TXT", '"consul-network-segment="')
        rdata = f"1 {inst.weight} {inst.port} {target}"
        msg.add(name, CONSUL_TTL, "SRV", rdata)
        for tag in inst.tags:
            msg.add(f"{tag}.{name}", CONSUL_TTL, "SRV", rdata)
    rcode = bind.send(msg)
    assert rcode == dns.rcode.NOERROR, dns.rcode.to_text(rcode)
    return name
