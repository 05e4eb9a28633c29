"""From a DNS response to endpoints: SRV parsing and RFC 2782 ordering.

Pure (no I/O): takes parsed `dns.message.Message`s and a `random.Random`.
Every RFC 2782 field is kept per endpoint (priority, weight, port, target) so
the balancer and the site tiers can honour them. A response that is not an
answer to what we asked (wrong type, SERVFAIL, REFUSED, garbage) raises
`LookupFailure`: the caller keeps its last good set. NXDOMAIN and NODATA are real
answers, returned as such; the state machine decides when to believe them.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.rrset

from sidecar.endpoint import Endpoint

AnswerKind = Literal["records", "nxdomain", "nodata", "unavailable"]
ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
MAX_CNAME_CHAIN = 8


class LookupFailure(Exception):
    """No usable answer. `reason` is a short metric label (timeout, servfail, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record; `target` is the host name without its trailing dot."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class SrvAnswer:
    """What one SRV lookup said. `ttl` is None for negative answers without a SOA."""

    kind: AnswerKind
    records: tuple[SrvRecord, ...] = ()
    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ttl: float | None = None


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _rcode_failure(msg: dns.message.Message) -> LookupFailure:
    rcode = msg.rcode()
    label = {dns.rcode.SERVFAIL: "servfail", dns.rcode.REFUSED: "refused"}.get(rcode, "rcode")
    return LookupFailure(label, dns.rcode.to_text(rcode))


def _find(
    msg: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    # A linear scan, not msg.get_rrset: that trusts an index only wire parsing fills.
    for rrset in msg.answer:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN:
            return rrset
    return None


def _chase(
    msg: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.name.Name:
    """Follow a CNAME chain inside the answer section (bounded, loops refused)."""
    seen = {qname}
    for _ in range(MAX_CNAME_CHAIN):
        cname = _find(msg, qname, dns.rdatatype.CNAME)
        if cname is None or rdtype == dns.rdatatype.CNAME:
            return qname
        qname = cname[0].target
        if qname in seen:
            raise LookupFailure("malformed", "CNAME loop")
        seen.add(qname)
    raise LookupFailure("malformed", "CNAME chain too long")


def _negative_ttl(msg: dns.message.Message) -> float | None:
    # RFC 2308: a negative answer lives min(SOA TTL, SOA MINIMUM).
    for rrset in msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def addresses_in(
    msg: dns.message.Message, sections: Iterable[str] = ("answer", "additional")
) -> dict[str, tuple[list[str], int]]:
    """A/AAAA records of a response: target -> (addresses, smallest TTL)."""
    out: dict[str, tuple[list[str], int]] = {}
    for section in sections:
        for rrset in getattr(msg, section):
            if rrset.rdtype not in ADDRESS_TYPES or rrset.rdclass != dns.rdataclass.IN:
                continue
            addrs, ttl = out.get(_text(rrset.name), ([], rrset.ttl))
            addrs.extend(rd.address for rd in rrset)
            out[_text(rrset.name)] = (addrs, min(ttl, rrset.ttl))
    return out


def parse_srv_response(msg: dns.message.Message, qname: str) -> SrvAnswer:
    """Turn an SRV response into an answer, or raise LookupFailure."""
    name = dns.name.from_text(qname)
    rcode = msg.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return SrvAnswer("nxdomain", ttl=_negative_ttl(msg))
    if rcode != dns.rcode.NOERROR:
        raise _rcode_failure(msg)
    owner = _chase(msg, name, dns.rdatatype.SRV)
    rrset = _find(msg, owner, dns.rdatatype.SRV)
    if rrset is None or len(rrset) == 0:
        if any(r.rdtype != dns.rdatatype.CNAME for r in msg.answer):
            # Records, but not the ones asked for: a broken server, not an empty service.
            raise LookupFailure("malformed", "answer holds no SRV records for the name")
        return SrvAnswer("nodata", ttl=_negative_ttl(msg))
    records: list[SrvRecord] = []
    for rd in rrset:
        assert isinstance(rd, dns.rdtypes.IN.SRV.SRV)
        if rd.target == dns.name.root:
            continue  # RFC 2782: "." means decidedly not available here
        records.append(SrvRecord(rd.priority, rd.weight, rd.port, _text(rd.target)))
    if not records:
        return SrvAnswer("unavailable", ttl=float(rrset.ttl))
    found = addresses_in(msg)
    addresses = {t: tuple(found[t][0]) for t in {r.target for r in records} if t in found}
    ttls = [rrset.ttl] + [found[t][1] for t in addresses]
    return SrvAnswer("records", tuple(records), addresses, float(min(ttls)))


def literal_address(target: str) -> str | None:
    """A target that is an IP literal needs no address lookup (not RFC, but seen)."""
    try:
        return str(ipaddress.ip_address(target))
    except ValueError:
        return None


def build_endpoints(
    records: Iterable[SrvRecord], addresses: Mapping[str, Sequence[str]], site: str
) -> list[Endpoint]:
    """One endpoint per (record, address); records whose target has no address drop out.

    A target with several addresses yields several endpoints with the record's
    weight each. The result is sorted so equal answers compare equal.
    """
    out: set[Endpoint] = set()
    for rec in records:
        hosts = addresses.get(rec.target, ())
        literal = literal_address(rec.target)
        if literal is not None:
            hosts = (literal,)
        for host in hosts:
            out.add(Endpoint(host, rec.port, site, rec.priority, rec.weight, rec.target))
    return sorted(out, key=_stable_key)


def _stable_key(ep: Endpoint) -> tuple[int, str, str, int]:
    return (ep.priority, ep.target, ep.host, ep.port)


def rfc2782_order(endpoints: Iterable[Endpoint], rng: random.Random) -> list[Endpoint]:
    """The order a client tries endpoints in, per RFC 2782.

    Lowest priority first; within a priority, repeated weighted random selection:
    weight-0 entries are placed first in the running-sum list, so they are picked
    only when the random number is 0, i.e. rarely when others have weight.
    """
    by_priority: dict[int, list[Endpoint]] = {}
    for ep in sorted(endpoints, key=_stable_key):
        by_priority.setdefault(ep.priority, []).append(ep)
    ordered: list[Endpoint] = []
    for priority in sorted(by_priority):
        pool = sorted(by_priority[priority], key=lambda e: e.weight != 0)
        while pool:
            total = sum(ep.weight for ep in pool)
            pick = rng.randint(0, total)
            running = 0
            for i, ep in enumerate(pool):
                running += ep.weight
                if running >= pick:
                    ordered.append(pool.pop(i))
                    break
    return ordered
