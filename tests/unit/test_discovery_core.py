"""Pure discovery code: SRV names, answer parsing, RFC 2782 order, update messages."""

from __future__ import annotations

import random
from collections import Counter

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from sidecar.config import parse_config
from sidecar.discovery.answer import (
    LookupFailure,
    build_endpoints,
    parse_srv_response,
    rfc2782_order,
)
from sidecar.discovery.names import srv_name, upstream_names
from sidecar.discovery.update import deregister_message, instance_from_config, register_message
from sidecar.endpoint import Endpoint

NAME = "_pl._grpc.lon3.example.net."


def response(rcode: int = dns.rcode.NOERROR, qtype: str = "SRV") -> dns.message.Message:
    q = dns.message.make_query(NAME, qtype)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    return r


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("_{service}._grpc.{site}.{domain}", "_playlist._grpc.lon3.example.net."),
        (
            "_grpc._tcp.{service}.{namespace}.svc.cluster.local",
            "_grpc._tcp.playlist.music.svc.cluster.local.",
        ),
        ("_{service}._tcp.service.{site}.consul.", "_playlist._tcp.service.lon3.consul."),
    ],
)
def test_templates_cover_default_kubernetes_and_consul(template: str, expected: str) -> None:
    """The three naming schemes differ only in the template string."""
    name = srv_name(
        template, service="playlist", site="lon3", domain="example.net", namespace="music"
    )
    assert name == expected


def test_upstream_names_skip_static_and_put_the_local_site_first() -> None:
    """Static upstreams are not discovered; sites come local first; srv_name overrides."""
    config = parse_config(
        {
            "site": "sto3",
            "discovery": {"sites": ["lon3", "sto3"]},
            "upstreams": {
                "playlist": {},
                "static": {"endpoints": ["127.0.0.1:1"]},
                "meta": {"srv_name": "_m._tcp.{site}.other.org", "sites": ["lon3"]},
            },
        }
    )
    assert upstream_names(config) == [
        ("playlist", "sto3", "_playlist._grpc.sto3.example.net."),
        ("playlist", "lon3", "_playlist._grpc.lon3.example.net."),
        ("meta", "lon3", "_m._tcp.lon3.other.org."),
    ]


def test_parse_keeps_every_rfc2782_field_and_drops_dot_targets() -> None:
    """Priority, weight, port and target survive; target '.' entries drop out."""
    r = response()
    r.answer.append(
        dns.rrset.from_text_list(
            NAME,
            20,
            "IN",
            "SRV",
            ["10 60 8001 a.example.net.", "10 0 8002 b.example.net.", "20 5 8003 ."],
        )
    )
    r.additional.append(dns.rrset.from_text("a.example.net.", 10, "IN", "A", "10.0.0.1"))
    r.additional.append(dns.rrset.from_text("a.example.net.", 10, "IN", "AAAA", "fd00::1"))
    ans = parse_srv_response(r, NAME)
    assert ans.kind == "records"
    assert ans.ttl == 10  # the smallest TTL of the records used
    eps = build_endpoints(ans.records, {**ans.addresses, "b.example.net": ("10.0.0.2",)}, "lon3")
    assert eps == [
        Endpoint("10.0.0.1", 8001, "lon3", 10, 60, "a.example.net"),
        Endpoint("fd00::1", 8001, "lon3", 10, 60, "a.example.net"),
        Endpoint("10.0.0.2", 8002, "lon3", 10, 0, "b.example.net"),
    ]


def test_only_dot_targets_mean_unavailable() -> None:
    """A lone '.' target is RFC 2782's 'decidedly not available'."""
    r = response()
    r.answer.append(dns.rrset.from_text(NAME, 20, "IN", "SRV", "0 0 0 ."))
    assert parse_srv_response(r, NAME).kind == "unavailable"


def test_negative_answers_and_failures_are_told_apart() -> None:
    """NXDOMAIN/NODATA are answers (with SOA TTL); SERVFAIL, REFUSED, wrong type are failures."""
    r = response(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text("example.net.", 60, "IN", "SOA", "ns. h. 1 2 3 4 7"))
    assert (parse_srv_response(r, NAME).kind, parse_srv_response(r, NAME).ttl) == ("nxdomain", 7)
    assert parse_srv_response(response(), NAME).kind == "nodata"
    for rcode, reason in ((dns.rcode.SERVFAIL, "servfail"), (dns.rcode.REFUSED, "refused")):
        with pytest.raises(LookupFailure) as exc:
            parse_srv_response(response(rcode), NAME)
        assert exc.value.reason == reason
    wrong = response()
    wrong.answer.append(dns.rrset.from_text(NAME, 20, "IN", "A", "10.0.0.9"))
    with pytest.raises(LookupFailure, match="malformed"):
        parse_srv_response(wrong, NAME)


def test_cname_is_followed_inside_the_answer() -> None:
    """An SRV name that is a CNAME resolves through the chain in the same answer."""
    r = response()
    r.answer.append(dns.rrset.from_text(NAME, 20, "IN", "CNAME", "real.example.net."))
    r.answer.append(
        dns.rrset.from_text("real.example.net.", 20, "IN", "SRV", "1 1 9 t.example.net.")
    )
    assert parse_srv_response(r, NAME).records[0].port == 9


def eps(*spec: tuple[int, int]) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}", 80, "s", p, w, f"t{i}") for i, (p, w) in enumerate(spec)]


def test_rfc2782_order_is_strict_by_priority_and_weighted_within() -> None:
    """Lower priority always first; within one, first picks follow weights; weight 0 last."""
    rng = random.Random(7)
    endpoints = eps((20, 1), (10, 75), (10, 25), (10, 0))
    firsts: Counter[str] = Counter()
    lasts: Counter[str] = Counter()
    for _ in range(4000):
        order = rfc2782_order(endpoints, rng)
        assert [e.priority for e in order] == [10, 10, 10, 20]
        firsts[order[0].host] += 1
        lasts[order[2].host] += 1
    assert 0.70 < firsts["10.0.0.1"] / 4000 < 0.80
    assert 0.20 < firsts["10.0.0.2"] / 4000 < 0.30
    assert firsts["10.0.0.3"] < 40  # weight 0: chosen first only when the draw is exactly 0
    # last unless drawn at 0 in either round: (1 - 1/101) * (1 - 1/26) = 95%
    assert lasts["10.0.0.3"] > 3700


def test_all_zero_weights_still_order_everything() -> None:
    """Weights all 0: every endpoint is still listed, once."""
    order = rfc2782_order(eps((0, 0), (0, 0), (0, 0)), random.Random(1))
    assert sorted(e.host for e in order) == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]


def test_update_messages_add_and_remove_only_our_records() -> None:
    """Register adds one SRV RR and replaces our A; deregister deletes exactly those."""
    config = parse_config(
        {
            "service": "playlist",
            "site": "lon3",
            "inbound": {"listen": "0.0.0.0:8181"},
            "registration": {"tsig": {"name": "k", "secret": "c2VjcmV0"}, "ttl_s": 15},
        }
    )
    inst = instance_from_config(config)
    assert inst.srv_name == "_playlist._grpc.lon3.example.net."
    assert inst.target == "playlist-lon3-8181.lon3.example.net."
    assert (inst.address, inst.port, inst.zone) == ("127.0.0.1", 8181, "example.net.")
    reg = register_message(inst, config.registration.tsig if config.registration else None)
    text = reg.to_text()
    assert "_playlist._grpc.lon3.example.net. 15 IN SRV 10 100 8181 playlist-lon3-8181" in text
    assert "playlist-lon3-8181.lon3.example.net. ANY A" in text  # replace = delete set + add
    assert "ANY TSIG hmac-sha256" in text
    dereg = deregister_message(inst, None).to_text()
    assert "_playlist._grpc.lon3.example.net. 0 NONE SRV 10 100 8181" in dereg
    assert "playlist-lon3-8181.lon3.example.net. ANY A" in dereg
