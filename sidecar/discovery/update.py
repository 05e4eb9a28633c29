"""RFC 2136 dynamic UPDATE messages for this instance's own records.

Pure (no I/O): builds `dns.update.UpdateMessage`s signed with TSIG (RFC 8945).
Registering adds our SRV record (one RR in an RRset that other instances of the
service share, so never a replace of the set) and replaces the target's address
record (the target name is ours alone). Deregistering deletes exactly those.
Sending the same registration again is a no-op for a server that already has
it, and a renewal for one that expires records (the embedded registry).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.tsig
import dns.update

from sidecar.config import Config, TsigKey
from sidecar.discovery.names import own_srv_name
from sidecar.endpoint import parse_hostport

UNSPECIFIED = {"0.0.0.0", "::", ""}


@dataclass(frozen=True, slots=True)
class Instance:
    """What this instance publishes. Names are absolute (trailing dot)."""

    zone: str
    srv_name: str
    target: str
    address: str
    port: int
    priority: int
    weight: int
    ttl: int

    @property
    def address_type(self) -> str:
        return "AAAA" if ipaddress.ip_address(self.address).version == 6 else "A"

    @property
    def srv_rdata(self) -> str:
        return f"{self.priority} {self.weight} {self.port} {self.target}"


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def instance_from_config(config: Config) -> Instance:
    """Fill in the registration defaults from the rest of the config."""
    reg = config.registration
    if reg is None or config.inbound is None or not config.service:
        raise ValueError("registration needs `registration`, `service` and `inbound`")
    listen_host, port = parse_hostport(config.inbound.listen)
    target = reg.target or f"{config.service}-{config.site}-{port}.{config.site}.{config.domain}"
    address = reg.address or (listen_host if listen_host not in UNSPECIFIED else "127.0.0.1")
    ipaddress.ip_address(address)  # the A/AAAA record needs a literal
    return Instance(
        zone=_absolute(reg.zone or config.domain),
        srv_name=own_srv_name(config),
        target=_absolute(target),
        address=address,
        port=port,
        priority=reg.priority,
        weight=reg.weight,
        ttl=reg.ttl_s,
    )


def keyring(key: TsigKey | None) -> dns.tsig.Key | None:
    if key is None:
        return None
    return dns.tsig.Key(key.name, key.secret, key.algorithm)


def _message(inst: Instance, key: TsigKey | None) -> dns.update.UpdateMessage:
    tsig = keyring(key)
    if tsig is None:
        return dns.update.UpdateMessage(inst.zone)
    return dns.update.UpdateMessage(inst.zone, keyring=tsig, keyname=tsig.name)


def register_message(inst: Instance, key: TsigKey | None) -> dns.update.UpdateMessage:
    msg = _message(inst, key)
    msg.replace(inst.target, inst.ttl, inst.address_type, inst.address)
    msg.add(inst.srv_name, inst.ttl, "SRV", inst.srv_rdata)
    return msg


def deregister_message(inst: Instance, key: TsigKey | None) -> dns.update.UpdateMessage:
    msg = _message(inst, key)
    msg.delete(inst.srv_name, "SRV", inst.srv_rdata)
    msg.delete(inst.target, inst.address_type)
    return msg


__all__ = ["Instance", "deregister_message", "instance_from_config", "register_message"]
