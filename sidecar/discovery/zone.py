"""The embedded registry's zone: records with leases, queries, RFC 2136 updates.

Pure (no I/O): takes parsed messages and `now` (wall-clock seconds, so leases
survive a restart through the journal) and returns responses and rcodes.

Every record added by an UPDATE holds a lease of `lease_factor` times its TTL,
renewed by adding it again; a record not renewed in time disappears, so a
crashed instance leaves the registry by itself. The apex SOA and NS are fixed.
Updates follow RFC 2136: zone section check (3.1), prerequisites (3.2), a
prescan of the update section (3.4.1), then the changes (3.4.2), all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.rrset
import dns.update

ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
META_TYPES = (
    dns.rdatatype.ANY,
    dns.rdatatype.AXFR,
    dns.rdatatype.IXFR,
    dns.rdatatype.MAILA,
    dns.rdatatype.MAILB,
    dns.rdatatype.OPT,
    dns.rdatatype.TSIG,
)

Key = tuple[dns.name.Name, dns.rdatatype.RdataType]


@dataclass(slots=True)
class Lease:
    ttl: int
    expires: float | None  # None: never (apex records)


class Zone:
    """One authoritative zone held in memory."""

    def __init__(
        self,
        origin: str,
        *,
        lease_factor: float = 2.0,
        negative_ttl: int = 5,
        minimal_responses: bool = False,
    ) -> None:
        self.origin = dns.name.from_text(origin)
        self.lease_factor = lease_factor
        self.negative_ttl = negative_ttl
        self.minimal_responses = minimal_responses
        self.serial = 1
        self._rrs: dict[Key, dict[dns.rdata.Rdata, Lease]] = {}
        ns = dns.name.from_text("ns", self.origin)
        self._set(self.origin, dns.rdatatype.NS, 3600, f"{ns}")

    def _set(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, ttl: int, text: str
    ) -> None:
        rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=self.origin)
        self._rrs.setdefault((name, rdtype), {})[rd] = Lease(ttl, None)

    # -- reading ---------------------------------------------------------------

    def soa(self) -> dns.rrset.RRset:
        ns = dns.name.from_text("ns", self.origin)
        mbox = dns.name.from_text("hostmaster", self.origin)
        text = f"{ns} {mbox} {self.serial} 3600 600 86400 {self.negative_ttl}"
        return dns.rrset.from_text(self.origin, self.negative_ttl, "IN", "SOA", text)

    def rrset(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
        if rdtype == dns.rdatatype.SOA and name == self.origin:
            return self.soa()
        rds = self._rrs.get((name, rdtype))
        if not rds:
            return None
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for rd, lease in rds.items():
            rrset.add(rd, lease.ttl)
        rrset.ttl = min(lease.ttl for lease in rds.values())
        return rrset

    def _types_at(self, name: dns.name.Name) -> list[dns.rdatatype.RdataType]:
        types = [t for (n, t), rds in self._rrs.items() if n == name and rds]
        if name == self.origin:
            types.append(dns.rdatatype.SOA)
        return types

    def _name_exists(self, name: dns.name.Name) -> bool:
        # Empty non-terminals (e.g. `_grpc.lon3.example.net`) exist too (RFC 8020).
        return name == self.origin or any(
            n.is_subdomain(name) for (n, _), rds in self._rrs.items() if rds
        )

    def answer(self, query: dns.message.Message, response: dns.message.Message) -> None:
        """Fill `response` (made from `query`) with the answer, authoritatively."""
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        q = query.question[0]
        if q.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
            return
        if not q.name.is_subdomain(self.origin):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return
        types = self._types_at(q.name) if q.rdtype == dns.rdatatype.ANY else [q.rdtype]
        for rdtype in types:
            rrset = self.rrset(q.name, rdtype)
            if rrset is not None:
                response.answer.append(rrset)
        if response.answer:
            if not self.minimal_responses:
                self._additional(response)
            return
        if not self._name_exists(q.name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self.soa())

    def _additional(self, response: dns.message.Message) -> None:
        targets: list[dns.name.Name] = []
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SRV:
                targets.extend(rd.target for rd in rrset if rd.target not in targets)
        for target in targets:
            for rdtype in ADDRESS_TYPES:
                found = self.rrset(target, rdtype)
                if found is not None:
                    response.additional.append(found)

    # -- updating (RFC 2136) ---------------------------------------------------

    def _prerequisites(self, msg: dns.update.UpdateMessage) -> dns.rcode.Rcode:
        wanted: dict[Key, set[dns.rdata.Rdata]] = {}
        for rr in msg.prerequisite:
            if not rr.name.is_subdomain(self.origin):
                return dns.rcode.NOTZONE
            if rr.deleting == dns.rdataclass.ANY:
                if rr.rdtype == dns.rdatatype.ANY:
                    if not self._types_at(rr.name):
                        return dns.rcode.NXDOMAIN
                elif self.rrset(rr.name, rr.rdtype) is None:
                    return dns.rcode.NXRRSET
            elif rr.deleting == dns.rdataclass.NONE:
                if rr.rdtype == dns.rdatatype.ANY:
                    if self._types_at(rr.name):
                        return dns.rcode.YXDOMAIN
                elif self.rrset(rr.name, rr.rdtype) is not None:
                    return dns.rcode.YXRRSET
            else:
                wanted.setdefault((rr.name, rr.rdtype), set()).update(rr)
        for (name, rdtype), rds in wanted.items():
            have = self.rrset(name, rdtype)
            if have is None or set(have) != rds:
                return dns.rcode.NXRRSET
        return dns.rcode.NOERROR

    def _prescan(self, msg: dns.update.UpdateMessage) -> dns.rcode.Rcode:
        for rr in msg.update:
            if not rr.name.is_subdomain(self.origin):
                return dns.rcode.NOTZONE
            if rr.deleting is None and (rr.rdtype in META_TYPES or len(rr) == 0):
                return dns.rcode.FORMERR
            if rr.deleting == dns.rdataclass.ANY and len(rr):
                return dns.rcode.FORMERR
            if rr.deleting == dns.rdataclass.NONE and rr.rdtype in META_TYPES:
                return dns.rcode.FORMERR
        return dns.rcode.NOERROR

    def apply_update(self, msg: dns.update.UpdateMessage, now: float) -> dns.rcode.Rcode:
        """Apply an UPDATE parsed from the wire; returns the rcode. All or nothing.

        (A message built in memory by dnspython keeps relative names and puts the
        delete classes elsewhere; only wire-parsed messages are accepted here.)
        """
        zone = msg.zone
        if len(zone) != 1 or zone[0].rdtype != dns.rdatatype.SOA:
            return dns.rcode.FORMERR
        if zone[0].name != self.origin:
            return dns.rcode.NOTAUTH
        for check in (self._prerequisites, self._prescan):
            rcode = check(msg)
            if rcode != dns.rcode.NOERROR:
                return rcode
        changed = False
        for rr in msg.update:
            changed |= self._apply_one(rr, now)
        if changed:
            self.serial += 1
        return dns.rcode.NOERROR

    def _apply_one(self, rr: dns.rrset.RRset, now: float) -> bool:
        apex_fixed = rr.name == self.origin and rr.rdtype in (
            dns.rdatatype.SOA,
            dns.rdatatype.NS,
            dns.rdatatype.ANY,
        )
        if rr.deleting is None:
            if apex_fixed or rr.rdtype == dns.rdatatype.SOA:
                return False
            rds = self._rrs.setdefault((rr.name, rr.rdtype), {})
            changed = False
            for rd in rr:
                old = rds.get(rd)
                changed |= old is None or old.ttl != rr.ttl
                # Adding an existing record renews its lease (RFC 2136 3.4.2.2: TTL may change).
                rds[rd] = Lease(rr.ttl, now + rr.ttl * self.lease_factor)
            return changed
        if rr.deleting == dns.rdataclass.ANY:
            keys = [
                k
                for k in self._rrs
                if k[0] == rr.name and (rr.rdtype == dns.rdatatype.ANY or k[1] == rr.rdtype)
            ]
            if rr.name == self.origin:
                keys = [k for k in keys if k[1] not in (dns.rdatatype.SOA, dns.rdatatype.NS)]
            return bool([self._rrs.pop(k) for k in keys if self._rrs.get(k)])
        # class NONE: delete the given records from the RRset
        if apex_fixed:
            return False
        rds = self._rrs.get((rr.name, rr.rdtype), {})
        removed = [rds.pop(rd) for rd in rr if rd in rds]
        if not rds:
            self._rrs.pop((rr.name, rr.rdtype), None)
        return bool(removed)

    def expire(self, now: float) -> bool:
        """Drop records whose lease ran out; True when anything went."""
        changed = False
        for key in list(self._rrs):
            rds = self._rrs[key]
            for rd in [
                rd
                for rd, lease in rds.items()
                if lease.expires is not None and lease.expires <= now
            ]:
                del rds[rd]
                changed = True
            if not rds:
                del self._rrs[key]
        if changed:
            self.serial += 1
        return changed

    def next_expiry(self) -> float | None:
        times = [
            lease.expires
            for rds in self._rrs.values()
            for lease in rds.values()
            if lease.expires is not None
        ]
        return min(times, default=None)

    # -- journal ---------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        records = [
            {
                "name": name.to_text(),
                "type": dns.rdatatype.to_text(rdtype),
                "ttl": lease.ttl,
                "rdata": rd.to_text(),
                "expires": lease.expires,
            }
            for (name, rdtype), rds in self._rrs.items()
            for rd, lease in rds.items()
            if lease.expires is not None
        ]
        return {"origin": self.origin.to_text(), "serial": self.serial, "records": records}

    def load(self, data: dict[str, Any], now: float) -> int:
        """Restore leased records from `dump()`; those already expired are skipped."""
        if data.get("origin") != self.origin.to_text():
            return 0
        self.serial = max(self.serial, int(data.get("serial", 1)) + 1)
        count = 0
        for rec in data.get("records", []):
            if rec["expires"] is not None and rec["expires"] <= now:
                continue
            name = dns.name.from_text(rec["name"])
            rdtype = dns.rdatatype.from_text(rec["type"])
            rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rec["rdata"])
            self._rrs.setdefault((name, rdtype), {})[rd] = Lease(int(rec["ttl"]), rec["expires"])
            count += 1
        return count
