"""The embedded registry: zone answers, RFC 2136 updates, leases, journal, wire handling."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from sidecar.discovery.registry import RegistryServer
from sidecar.discovery.zone import Zone

KEY = dns.tsig.Key("k.", "c2VjcmV0c2VjcmV0c2VjcmV0", "hmac-sha256")
SRV = "_pl._grpc.lon3.example.net."


def wire(u: dns.update.UpdateMessage) -> dns.update.UpdateMessage:
    """As the server sees it: parsed from the wire (names absolute, delete classes set)."""
    msg = dns.message.from_wire(u.to_wire())
    assert isinstance(msg, dns.update.UpdateMessage)
    return msg


def add(zone: Zone, now: float, n: int = 1, ttl: int = 10) -> None:
    u = dns.update.UpdateMessage("example.net.")
    for i in range(n):
        u.add(SRV, ttl, "SRV", f"10 {i} {8000 + i} h{i}.example.net.")
        u.add(f"h{i}.example.net.", ttl, "A", f"10.0.{i // 250}.{i % 250}")
    assert zone.apply_update(wire(u), now) == dns.rcode.NOERROR


def ask(zone: Zone, name: str, rdtype: str = "SRV") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    r = dns.message.make_response(q)
    zone.answer(q, r)
    return r


def test_srv_answer_carries_target_addresses_in_additional() -> None:
    """An SRV answer lists the targets' A records in the additional section."""
    zone = Zone("example.net.")
    add(zone, 0.0, n=2)
    r = ask(zone, SRV)
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert len(r.answer[0]) == 2
    assert {rr.name.to_text() for rr in r.additional} == {"h0.example.net.", "h1.example.net."}
    assert not ask(Zone("example.net.", minimal_responses=True), SRV).additional


def test_nxdomain_nodata_and_out_of_zone() -> None:
    """Unknown names are NXDOMAIN with SOA, empty non-terminals NODATA, others REFUSED."""
    zone = Zone("example.net.")
    add(zone, 0.0)
    assert ask(zone, "_x._grpc.lon3.example.net.").rcode() == dns.rcode.NXDOMAIN
    ent = ask(zone, "_grpc.lon3.example.net.")
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    assert ent.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(zone, "example.org.").rcode() == dns.rcode.REFUSED


def test_updates_delete_records_sets_and_names() -> None:
    """Class NONE deletes one record, ANY a set or a whole name; the apex stays."""
    zone = Zone("example.net.")
    add(zone, 0.0, n=3)
    u = dns.update.UpdateMessage("example.net.")
    u.delete(SRV, "SRV", "10 0 8000 h0.example.net.")
    u.delete("h0.example.net.", "A")
    u.delete("example.net.")  # must not remove SOA/NS
    assert zone.apply_update(wire(u), 1.0) == dns.rcode.NOERROR
    assert len(ask(zone, SRV).answer[0]) == 2
    assert ask(zone, "h0.example.net.", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(zone, "example.net.", "NS").answer
    u = dns.update.UpdateMessage("example.net.")
    u.delete(SRV)
    zone.apply_update(wire(u), 2.0)
    assert not ask(zone, SRV).answer


def test_prerequisites_and_zone_checks() -> None:
    """Failed prerequisites change nothing; names outside the zone are NOTZONE."""
    zone = Zone("example.net.")
    u = dns.update.UpdateMessage("example.net.")
    u.present(SRV)
    u.add(SRV, 10, "SRV", "1 1 1 a.example.net.")
    assert zone.apply_update(wire(u), 0.0) == dns.rcode.NXDOMAIN  # "name is in use" failed
    assert ask(zone, SRV).rcode() == dns.rcode.NXDOMAIN
    u = dns.update.UpdateMessage("example.net.")
    u.absent(SRV)
    u.add("x.example.org.", 10, "A", "1.2.3.4")
    assert zone.apply_update(wire(u), 0.0) == dns.rcode.NOTZONE
    assert (
        zone.apply_update(wire(dns.update.UpdateMessage("example.org.")), 0.0) == dns.rcode.NOTAUTH
    )


def test_leases_expire_unless_renewed_and_survive_the_journal() -> None:
    """Records go lease_factor x TTL after their last add; the journal restores live ones."""
    zone = Zone("example.net.", lease_factor=2.0)
    add(zone, 0.0, ttl=10)
    assert not zone.expire(15.0)
    add(zone, 15.0, ttl=10)  # renewal
    assert not zone.expire(30.0)
    saved = zone.dump()
    assert zone.expire(35.0)
    assert ask(zone, SRV).rcode() == dns.rcode.NXDOMAIN
    again = Zone("example.net.")
    assert again.load(saved, 30.0) == 2
    assert len(ask(again, SRV).answer[0]) == 1
    assert Zone("example.net.").load(saved, 40.0) == 0


def test_big_answers_truncate_over_udp_and_go_whole_over_tcp() -> None:
    """250 records: TC and no records over UDP (EDNS 1232), all of them over TCP."""
    server = RegistryServer(Zone("example.net."))
    add(server.zone, server.clock(), n=250, ttl=60)
    wire = dns.message.make_query(SRV, "SRV", use_edns=0, payload=1232).to_wire()
    udp = dns.message.from_wire(server.handle(wire, max_size=server.udp_limit(wire)) or b"")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = dns.message.from_wire(server.handle(wire, max_size=None) or b"")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 250


def test_tsig_unsigned_and_badly_signed_updates_are_refused() -> None:
    """With a key: unsigned UPDATE -> REFUSED, wrong key -> NOTAUTH/BADSIG, right key -> OK."""
    server = RegistryServer(Zone("example.net."), keys={KEY.name: KEY})
    u = dns.update.UpdateMessage("example.net.")
    u.add("a.example.net.", 10, "A", "10.0.0.1")
    r = dns.message.from_wire(server.handle(u.to_wire(), max_size=None) or b"")
    assert r.rcode() == dns.rcode.REFUSED
    bad = dns.tsig.Key("k.", "d3Jvbmd3cm9uZ3dyb25n", "hmac-sha256")
    u = dns.update.UpdateMessage("example.net.", keyring=bad, keyname=bad.name)
    u.add("a.example.net.", 10, "A", "10.0.0.1")
    r = dns.message.from_wire(server.handle(u.to_wire(), max_size=None) or b"", keyring=False)
    assert r.rcode() == dns.rcode.NOTAUTH and r.tsig_error == dns.rcode.BADSIG
    u = dns.update.UpdateMessage("example.net.", keyring=KEY, keyname=KEY.name)
    u.add("a.example.net.", 10, "A", "10.0.0.1")
    wire = u.to_wire()
    r = dns.message.from_wire(
        server.handle(wire, max_size=None) or b"", keyring=KEY, request_mac=u.mac
    )
    assert r.rcode() == dns.rcode.NOERROR
    assert ask(server.zone, "a.example.net.", "A").answer


def test_garbage_gets_formerr_or_silence() -> None:
    """Junk with a header gets FORMERR; shorter junk and responses are dropped."""
    server = RegistryServer(Zone("example.net."))
    out = server.handle(b"\x12\x34\x01\x00" + b"\xff" * 20, max_size=512)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.FORMERR
    assert server.handle(b"\x00\x01", max_size=512) is None
