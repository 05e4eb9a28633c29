"""Fuzz targets as functions of raw bytes, so that one input is one file of the corpus
(tests/fuzz/corpus/<target>/, replayed by test_corpus.py) and the Hypothesis targets
(test_fuzz_targets.py) feed the same checks. Each check raises AssertionError (or any
unexpected exception) when the code under test misbehaves on the input, and returns
quietly when the input was handled or refused with the module's own error.

How each target reads its bytes is part of its contract with the corpus: change it and
the corpus files mean something else."""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message

from sidecar.authz.rules import Authorizer, MethodPattern
from sidecar.config import Config, ConfigError, load_config
from sidecar.discovery.answer import (
    LookupFailure,
    SrvAnswer,
    build_endpoints,
    parse_srv_response,
    rfc2782_order,
)
from sidecar.endpoint import Endpoint
from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.grpcwire import MessageLimit, encode_timeout, parse_timeout
from sidecar.h2relay.hpack_codec import Decoder, HpackError
from sidecar.h2relay.replay import ReplayBuffer
from sidecar.tls.identity import IdPattern, SpiffeId
from tests.unit.test_h2relay_conformance import Recorder

QNAME = "_grpc._tcp.echo.example.net"


def h2_frames(data: bytes) -> None:
    """The caller-side HTTP/2 connection fed `data` after the preface, in 7-byte cuts:
    handled, or a ProtocolError with a defined error code."""
    conn = H2Connection(Recorder(), client=False, settings=Settings(max_control_per_s=50))
    conn.receive(F.PREFACE + F.settings({}))
    try:
        for pos in range(0, len(data), 7):
            conn.receive(data[pos : pos + 7])
    except F.ProtocolError as exc:
        assert 0 <= exc.code <= 0xD, exc.code
    assert len(conn.closed_ids) <= 512


def hpack(data: bytes) -> None:
    """One header block: decoded within the list limit, or an HpackError."""
    decoder = Decoder()
    decoder.max_list = 1000
    try:
        block = decoder.decode(data)
    except HpackError:
        return
    assert sum(len(n) + len(v) + 32 for n, v in block.headers) <= 1000


def dns_answer(data: bytes) -> None:
    """A DNS response in wire format, as the resolver gets it: dnspython's parser refuses
    it (DNSException), or the SRV reading gives an answer or a LookupFailure; endpoints
    built from an answer are well formed."""
    try:
        msg = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return
    try:
        answer = parse_srv_response(msg, QNAME)
    except LookupFailure as exc:
        assert exc.reason
        return
    assert isinstance(answer, SrvAnswer)
    assert answer.kind in ("records", "nxdomain", "nodata", "unavailable")
    if answer.kind == "records":
        assert answer.records and answer.ttl is not None and answer.ttl >= 0
    for record in answer.records:
        assert 0 <= record.priority < 2**16 and 0 <= record.weight < 2**16
        assert 0 <= record.port < 2**16 and record.target
    for ep in build_endpoints(answer.records, answer.addresses, "a"):
        assert ep.host and 0 <= ep.port < 2**16


def srv_order(data: bytes) -> None:
    """Endpoints from `data` (4 bytes each: priority 0-3, weight 0-15, a host byte, and
    the last byte, which seeds the random choice): the RFC 2782 order is a permutation,
    lowest priority first."""
    endpoints = {
        Endpoint(
            f"10.0.0.{data[i + 2]}",
            8000 + (data[i + 3] & 0x0F),
            "a",
            data[i] & 3,
            data[i + 1] & 0x0F,
            f"t{data[i + 2]}",
        )
        for i in range(0, len(data) - 3, 4)
    }
    rng = random.Random(data[-1] if data else 0)
    ordered = rfc2782_order(endpoints, rng)
    assert sorted(ordered, key=repr) == sorted(endpoints, key=repr)
    priorities = [ep.priority for ep in ordered]
    assert priorities == sorted(priorities)


def config_yaml(data: bytes) -> None:
    """Any bytes as a config file: a Config, or a ConfigError with its reason, naming the
    bad key whenever the document is a mapping; never another exception."""
    text = data.decode("utf-8", errors="replace")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sidecar.yaml"
        path.write_text(text)
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert exc.reason, exc
            return
    assert isinstance(config, Config)


def replay_buffer(data: bytes) -> None:
    """A program of ReplayBuffer operations, a byte each (the low 3 bits the operation,
    the rest a size), checked against a model of what it must hold."""
    limit = 64
    buf = ReplayBuffer(limit)
    kept: list[bytes] = []  # the model: what a replay must send, while replayable
    replayable = True
    credit = 0
    for i, byte in enumerate(data):
        op, size = byte & 7, byte >> 3
        chunk = bytes([i & 0xFF]) * size
        if op in (0, 1):  # keep: went upstream
            buf.keep(chunk)
            if replayable and sum(map(len, kept)) + size <= limit:
                kept.append(chunk)
            elif replayable:
                replayable, kept = False, []
        elif op in (2, 3):  # hold: no upstream stream open
            buf.hold(chunk, size + 1)
            kept.append(chunk)
            credit += size + 1
            if sum(map(len, kept)) > limit:
                replayable = False
        elif op == 4:  # replay
            assert b"".join(buf.replay()) == b"".join(kept)
            if not replayable:
                kept = []
        elif op == 5:
            assert buf.release_credit() == credit
            credit = 0
        elif op == 6:
            buf.give_up()
            replayable, kept = False, []
        else:
            assert buf.body() == b"".join(kept)
        assert buf.replayable == replayable, (i, buf)
        assert buf.size >= 0


def grpc_framing(data: bytes) -> None:
    """gRPC message framing and grpc-timeout: the first byte the limit (x4), the rest a
    stream of DATA cut at every 5th byte; a message is refused iff its announced length
    is over the limit (as a walk of whole prefixes tells). Then the bytes as a
    grpc-timeout value: parsed or None, and any duration re-encodes to one at least as
    long."""
    if not data:
        return
    limit = data[0] * 4
    stream = data[1:]
    check = MessageLimit(limit)
    ok = True
    for pos in range(0, len(stream), 5):
        ok = ok and check.feed(stream[pos : pos + 5])
    want = True
    pos = 0
    while pos + 5 <= len(stream):
        length = int.from_bytes(stream[pos + 1 : pos + 5], "big")
        if length > limit:
            want = False
            break
        pos += 5 + length
    assert ok == want, (ok, want, limit)
    parsed = parse_timeout(data[:9])
    assert parsed is None or parsed >= 0
    seconds = int.from_bytes(data[:4].ljust(4, b"\0"), "big") / 1000.0
    back = parse_timeout(encode_timeout(seconds))
    assert back is not None and (back >= seconds or back >= 99_999_999), (seconds, back)


def authz(data: bytes) -> None:
    """Text lines: a method pattern, a caller pattern, a call path and a caller identity.
    Patterns parse or raise ValueError; matching and deciding never raise; a pattern
    made from an identity matches it."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    method, caller, path, identity = [*lines, "", "", "", ""][:4]
    with contextlib.suppress(ValueError):
        MethodPattern.parse(method)
    with contextlib.suppress(ValueError):
        pattern = IdPattern.parse(caller, "mesh.local")
        assert isinstance(pattern.matches(identity), bool)
    with contextlib.suppress(ValueError):
        SpiffeId.parse(identity)
        assert IdPattern.parse(identity, "other.domain").matches(identity)
    try:
        authorizer = Authorizer([([method], [caller])], domain="mesh.local")
    except ValueError:
        authorizer = Authorizer([], domain="mesh.local")
    decision = authorizer.decide(path, identity or None)
    assert decision.decision in ("allow", "deny")
    assert decision.allowed == (decision.decision == "allow")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "h2_frames": h2_frames,
    "hpack": hpack,
    "dns_answer": dns_answer,
    "srv_order": srv_order,
    "config_yaml": config_yaml,
    "replay_buffer": replay_buffer,
    "grpc_framing": grpc_framing,
    "authz": authz,
}
