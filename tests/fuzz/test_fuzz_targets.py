"""Hypothesis fuzz targets for the DNS answer parser and SRV ordering, the config loader,
the replay buffer, gRPC message framing and the authz pattern matcher (tests/fuzz/
targets.py holds the checks, each a function of raw bytes). Each target gets raw bytes
and bytes built to be nearly valid (real DNS messages, YAML with real config keys,
patterns and identities of the mesh's shape), since random bytes rarely get past the
first check.

A short run in `make test` (FUZZ_EXAMPLES, default 200 inputs a target; seconds in all);
`make fuzz` runs 20,000. An input that fails becomes a file of tests/fuzz/corpus/<target>/
(see that folder's README), replayed by test_corpus.py."""

from __future__ import annotations

import os
import typing
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sidecar.config import Config
from tests.fuzz import targets

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.binary(max_size=600))
def test_dns_answer_raw(data: bytes) -> None:
    targets.dns_answer(data)


NAMES = st.sampled_from(
    [targets.QNAME + ".", "a.example.net.", "b.example.net.", "c.example.net.", "x.other.", "."]
)


def _message(
    rcode: int,
    srv: list[tuple[str, int, int, int, str]],
    cnames: list[tuple[str, str]],
    addresses: list[tuple[str, int, str]],
    soa: bool,
) -> bytes:
    query = dns.message.make_query(targets.QNAME, "SRV")
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    for owner, priority, weight, port, target in srv:
        msg.answer.append(
            dns.rrset.from_text(owner, 60, "IN", "SRV", f"{priority} {weight} {port} {target}")
        )
    for owner, target in cnames:
        msg.answer.append(dns.rrset.from_text(owner, 30, "IN", "CNAME", target))
    for owner, kind, address in addresses:
        rdtype = "A" if kind == 4 else "AAAA"
        msg.additional.append(dns.rrset.from_text(owner, 20, "IN", rdtype, address))
    if soa:
        msg.authority.append(
            dns.rrset.from_text("example.net.", 300, "IN", "SOA", "ns. host. 1 2 3 4 5")
        )
    return bytes(msg.to_wire())


@fuzz
@given(
    st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED]),
    st.lists(
        st.tuples(
            NAMES, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), NAMES
        ),
        max_size=6,
    ),
    st.lists(st.tuples(NAMES, NAMES), max_size=4),
    st.lists(
        st.tuples(
            NAMES,
            st.sampled_from([4, 6]),
            st.sampled_from(["10.0.0.1", "127.0.0.2", "::1", "fe80::1"]),
        ).filter(lambda t: (":" in t[2]) == (t[1] == 6)),
        max_size=6,
    ),
    st.booleans(),
    st.integers(0, 40),
)
def test_dns_answer_messages(
    rcode: int,
    srv: list[tuple[str, int, int, int, str]],
    cnames: list[tuple[str, str]],
    addresses: list[tuple[str, int, str]],
    soa: bool,
    cut: int,
) -> None:
    """Real DNS responses (SRV, CNAME chains and loops, A/AAAA, SOA, every rcode), whole
    and truncated."""
    wire = _message(rcode, srv, cnames, addresses, soa)
    targets.dns_answer(wire)
    targets.dns_answer(wire[: len(wire) - cut])


@fuzz
@given(st.binary(max_size=120))
def test_srv_order(data: bytes) -> None:
    targets.srv_order(data)


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The config's keys, nested: a key -> its model's keys, or None for a value."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        sub = None
        for kind in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                sub = _keys(kind)
        out[name] = sub
    return out


KEYS = _keys(Config)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "127.0.0.1:8080", "0.0.0.0:1", "x:y", "1e9", "deny", "grpc", "*"]),
    st.text(max_size=12),
)


def _document(keys: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    """A YAML mapping of real keys (and some made-up ones) with values of any type."""
    names = sorted(keys)

    def value(sub: Any) -> st.SearchStrategy[Any]:
        if sub is None or depth > 3:
            return st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
        return st.one_of(_document(sub, depth + 1), SCALARS)

    key = st.one_of(st.sampled_from(names), st.text(max_size=8)) if names else st.text(max_size=8)
    return st.lists(key, max_size=5, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: value(keys.get(k)) for k in chosen})
    )


@fuzz
@given(_document(KEYS, 0))
def test_config_documents(document: dict[str, Any]) -> None:
    """YAML mappings of real keys with values of any type."""
    targets.config_yaml(yaml.safe_dump(document).encode())


@fuzz
@given(st.binary(max_size=200))
def test_config_raw(data: bytes) -> None:
    targets.config_yaml(data)


@fuzz
@given(st.binary(max_size=200))
def test_replay_buffer(data: bytes) -> None:
    targets.replay_buffer(data)


@fuzz
@given(st.binary(max_size=200))
def test_grpc_framing(data: bytes) -> None:
    targets.grpc_framing(data)


@fuzz
@given(
    st.lists(st.integers(0, 200), max_size=8),
    st.integers(0, 255),
)
def test_grpc_framing_messages(lengths: list[int], limit: int) -> None:
    """Well-framed message streams (the raw target rarely frames one)."""
    stream = b"".join(b"\0" + n.to_bytes(4, "big") + b"m" * n for n in lengths)
    targets.grpc_framing(bytes([limit]) + stream)


SEGMENT = st.sampled_from(["site", "service", "*", "a", "b", "echo", "", ".", "..", "x/y", "É"])
IDS = st.builds(
    lambda scheme, domain, segments: scheme + domain + "".join("/" + s for s in segments),
    st.sampled_from(["spiffe://", "spiffe:/", "http://", ""]),
    st.sampled_from(["mesh.local", "other.domain", "Mesh", "", "a..b"]),
    st.lists(SEGMENT, max_size=5),
)
METHODS = st.sampled_from(
    ["meshtest.echo.v1.Echo/Unary", "meshtest.echo.v1.Echo/*", "/a.B/C", "a.B", "a.B/", "*/*",
     "a..B/C", "1a.B/C", "a.B/C/D", ""]
)  # fmt: skip


@fuzz
@given(METHODS, st.one_of(IDS, st.sampled_from(["echo", "*", "", "-x"])), METHODS, IDS)
def test_authz_patterns(method: str, caller: str, path: str, identity: str) -> None:
    targets.authz("\n".join([method, caller, "/" + path, identity]).encode())


@fuzz
@given(st.binary(max_size=200))
def test_authz_raw(data: bytes) -> None:
    targets.authz(data)
