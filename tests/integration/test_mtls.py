"""Mutual TLS between real sidecar processes on loopback, with certificates from
`sidecar ca`, and the inbound authorization by caller identity.

The app-facing hops are plaintext grpcio (the echo backend, and this test's client to
its outbound sidecar); the sidecar-to-sidecar hop is mTLS. What is checked: the four
call kinds over an mTLS pair; the app told the caller's SPIFFE ID and never a forged
one; a plaintext caller, a caller from another CA and an expired certificate refused;
an upstream presenting another service's identity refused (and accepted once listed in
`identities`); allow, deny and audit decisions; `permissive` serving plaintext and TLS
on one port; certificate and trust-bundle rotation under a long bidi stream."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from sidecar.tls import ca
from tests.integration.procs import (
    ECHO,
    Proc,
    Sidecar,
    free_port,
    http,
    sidecar_process,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
DAY = datetime.timedelta(days=1)
DOMAIN = "example.net"
CALLER_ID = f"spiffe://{DOMAIN}/site/lon3/service/accesspoint"


def tls_block(folder: Path) -> dict[str, str]:
    return {
        "cert_file": str(folder / "cert.pem"),
        "key_file": str(folder / "key.pem"),
        "ca_file": str(folder / "ca.pem"),
    }


class Pki:
    """A mesh CA (and a second one, for CA rotation and strangers) in a temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ca.init_ca(root / "ca1", DOMAIN, DAY)

    def issue(self, service: str, out: str, ca_dir: str = "ca1", **kw: Any) -> Path:
        folder = self.root / out
        ca.issue(self.root / ca_dir, service, "lon3", folder, kw.pop("ttl", DAY), **kw)
        return folder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def inbound_config(pki_dir: Path, app_port: int, **inbound: Any) -> dict[str, Any]:
    return {
        "service": "echo",
        "site": "lon3",
        "domain": DOMAIN,
        "tls": tls_block(pki_dir),
        "inbound": {
            "listen": f"127.0.0.1:{free_port()}",
            "app": f"127.0.0.1:{app_port}",
            "health": {"interval_s": 0.2},
            **inbound,
        },
    }


def outbound_config(
    pki_dir: Path | None, inbound_port: int, name: str = "echo", **upstream: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "service": "accesspoint",
        "site": "lon3",
        "domain": DOMAIN,
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "upstreams": {
            name: {
                "grpc_services": [ECHO],
                "endpoints": [f"127.0.0.1:{inbound_port}"],
                "timeout_ms": 5000,
                **upstream,
            }
        },
    }
    if pki_dir is not None:
        cfg["tls"] = tls_block(pki_dir)
    return cfg


@contextmanager
def pair(
    tmp: Path, pki: Pki, app_port: int, out_dir: str = "ap", **inbound: Any
) -> Iterator[tuple[Sidecar, Sidecar]]:
    with (
        sidecar_process(tmp, "in", inbound_config(pki.root / "echo", app_port, **inbound)) as i,
        sidecar_process(
            tmp, "out", outbound_config(pki.root / out_dir, i.port("inbound")), wait="/live"
        ) as o,
    ):
        yield i, o


@pytest.fixture(scope="module")
def certs(pki: Pki) -> Pki:
    pki.issue("echo", "echo")
    pki.issue("accesspoint", "ap")
    return pki


@pytest.fixture(scope="module")
def strict_pair(
    tmp_path_factory: pytest.TempPathFactory, certs: Pki, echo_backend: tuple[Proc, int]
) -> Iterator[tuple[Sidecar, Sidecar]]:
    with pair(tmp_path_factory.mktemp("strict"), certs, echo_backend[1]) as both:
        yield both


async def stub_for(side: Sidecar, listener: str = "outbound") -> Any:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{side.port(listener)}")
    return channel, echo_pb2_grpc.EchoStub(channel)


def metric(side: Sidecar, name: str, **labels: str) -> float:
    """The value of one sample on the sidecar's /metrics (0 when absent)."""
    status, body = http("GET", side.url("/metrics"))
    assert status == 200
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        if sample != name:
            continue
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if got == want:
            return float(value)
    return 0.0


def trailers_of(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}


# ---- the four call kinds, and the caller's identity toward the app -----------------


async def test_four_call_kinds_over_mtls(strict_pair: tuple[Sidecar, Sidecar]) -> None:
    inbound, outbound = strict_pair
    channel, stub = await stub_for(outbound)
    async with channel:
        reply = await stub.Unary(echo_pb2.EchoRequest(payload=b"hi"), timeout=10)
        assert reply.payload == b"hi"
        got = [r.sequence async for r in stub.ServerStream(echo_pb2.EchoRequest(count=50))]
        assert got == list(range(50))

        async def many() -> AsyncIterator[echo_pb2.EchoRequest]:
            for i in range(50):
                yield echo_pb2.EchoRequest(payload=str(i).encode())

        reply = await stub.ClientStream(many(), timeout=10)
        assert reply.received == 50
        call = stub.Bidi(timeout=10)
        for i in range(20):
            await call.write(echo_pb2.EchoRequest(payload=str(i).encode()))
            assert (await call.read()).payload == str(i).encode()
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert inbound.get_json("/tls")["identity"] == f"spiffe://{DOMAIN}/site/lon3/service/echo"
    assert 0 < metric(outbound, "sidecar_tls_cert_expiry_seconds") <= 86400


async def test_app_is_told_the_caller_and_a_forged_caller_is_dropped(
    strict_pair: tuple[Sidecar, Sidecar],
) -> None:
    _, outbound = strict_pair
    channel, stub = await stub_for(outbound)
    async with channel:
        call = stub.Unary(
            echo_pb2.EchoRequest(echo_metadata=True),
            metadata=(("x-sidecar-caller", "spiffe://example.net/site/lon3/service/admin"),),
            timeout=10,
        )
        await call
        trailers = [(k, v) for k, v in await call.trailing_metadata() if k.startswith("echo-")]
    assert ("echo-x-sidecar-caller", CALLER_ID) in trailers
    assert [v for k, v in trailers if k == "echo-x-sidecar-caller"] == [CALLER_ID]


async def test_in_process_client_calls_over_mtls(
    strict_pair: tuple[Sidecar, Sidecar], certs: Pki
) -> None:
    inbound, _ = strict_pair
    config = outbound_config(certs.root / "ap", inbound.port("inbound"))
    del config["outbound"]
    async with await sidecar.client.connect("echo", config) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = stub.Unary(echo_pb2.EchoRequest(payload=b"in", echo_metadata=True), timeout=10)
        assert (await call).payload == b"in"
        trailers = dict(await call.trailing_metadata())
        assert trailers["echo-x-sidecar-caller"] == CALLER_ID
        got = [r.sequence async for r in stub.ServerStream(echo_pb2.EchoRequest(count=5))]
        assert got == list(range(5))


# ---- refusals -----------------------------------------------------------------------


async def test_plaintext_caller_refused_by_strict_inbound(
    strict_pair: tuple[Sidecar, Sidecar],
) -> None:
    inbound, _ = strict_pair
    before = metric(inbound, "sidecar_tls_handshake_failures_total",
                    direction="inbound", reason="plaintext")  # fmt: skip
    channel, stub = await stub_for(inbound, "inbound")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    after = metric(inbound, "sidecar_tls_handshake_failures_total",
                   direction="inbound", reason="plaintext")  # fmt: skip
    assert after > before


def raw_handshake(port: int, folder: Path, trust: Path | None = None) -> ssl.SSLSocket:
    """A TLS connection to a sidecar with `folder`'s certificate; the first read (TLS 1.3
    brings the server's verdict on our certificate only then) raises if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(trust or folder / "ca.pem"))
    ctx.load_cert_chain(str(folder / "cert.pem"), str(folder / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(sock)
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    if not tls.recv(9):
        raise ConnectionResetError("closed by the server")
    return tls


def test_other_ca_and_expired_callers_refused(
    strict_pair: tuple[Sidecar, Sidecar], certs: Pki
) -> None:
    inbound, _ = strict_pair
    port = inbound.port("inbound")
    good = raw_handshake(port, certs.root / "ap")
    assert good.selected_alpn_protocol() == "h2"
    good.close()
    # a certificate from a CA the inbound does not trust
    ca.init_ca(certs.root / "stranger", DOMAIN, DAY)
    certs.issue("accesspoint", "ap-stranger", "stranger")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        raw_handshake(port, certs.root / "ap-stranger", trust=certs.root / "echo" / "ca.pem")
    # a certificate that expired an hour ago
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=3)
    certs.issue("accesspoint", "ap-expired", ttl=datetime.timedelta(hours=1), now=long_ago)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        raw_handshake(port, certs.root / "ap-expired")
    labels = {"direction": "inbound"}
    name = "sidecar_tls_handshake_failures_total"
    wait_until(lambda: metric(inbound, name, **labels, reason="unknown_ca") >= 1, 5, "unknown_ca")
    wait_until(lambda: metric(inbound, name, **labels, reason="expired") >= 1, 5, "expired")


async def test_outbound_refuses_an_upstream_with_another_identity(
    tmp_path: Path, certs: Pki, strict_pair: tuple[Sidecar, Sidecar]
) -> None:
    inbound, _ = strict_pair
    port = inbound.port("inbound")
    # upstream `search` routed to the echo sidecar, which presents .../service/echo
    wrong = outbound_config(certs.root / "ap", port, name="search")
    with sidecar_process(tmp_path, "wrong", wrong, wait="/live") as side:
        channel, stub = await stub_for(side)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert trailers_of(err.value)["x-sidecar-error"] == "tls_handshake"
        assert "wrong identity" in (err.value.details() or "")
        assert f"spiffe://{DOMAIN}/site/lon3/service/echo" in (err.value.details() or "")
        assert metric(side, "sidecar_tls_handshake_failures_total",
                      direction="outbound", reason="wrong_identity") >= 1  # fmt: skip
    listed = outbound_config(certs.root / "ap", port, name="search", identities=["echo"])
    with sidecar_process(tmp_path, "listed", listed, wait="/live") as side:
        channel, stub = await stub_for(side)
        async with channel:
            assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"ok"), timeout=5)).payload
    # an outbound sidecar of another CA: the echo sidecar's certificate is unknown to it
    ca.init_ca(certs.root / "other", DOMAIN, DAY)
    certs.issue("accesspoint", "ap-other", "other")
    other = outbound_config(certs.root / "ap-other", port)
    with sidecar_process(tmp_path, "other", other, wait="/live") as side:
        channel, stub = await stub_for(side)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        assert trailers_of(err.value)["x-sidecar-error"] == "tls_handshake"
        assert "unknown CA" in (err.value.details() or "")


async def test_expired_upstream_certificate_refused(
    tmp_path: Path, certs: Pki, echo_backend: tuple[Proc, int]
) -> None:
    folder = certs.issue("echo", "echo-short")
    with sidecar_process(tmp_path, "short", inbound_config(folder, echo_backend[1])) as inbound:
        # rotated to a certificate that lives two seconds, and then no newer one comes
        certs.issue("echo", "echo-short", ttl=datetime.timedelta(seconds=2))
        short = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        serial = f"{short.serial_number:x}"
        wait_until(lambda: inbound.get_json("/tls")["serial"] == serial, 10, "the short one")
        await asyncio.sleep(max(short.not_valid_after_utc.timestamp() - time.time() + 0.5, 0))
        assert metric(inbound, "sidecar_tls_cert_expiry_seconds") < 0
        out_cfg = outbound_config(certs.root / "ap", inbound.port("inbound"))
        with sidecar_process(tmp_path, "late", out_cfg, wait="/live") as side:
            channel, stub = await stub_for(side)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            assert trailers_of(err.value)["x-sidecar-error"] == "tls_handshake"
            assert "certificate expired" in (err.value.details() or "")


# ---- authorization ------------------------------------------------------------------

RULES = {
    "rules": [
        {"methods": [f"{ECHO}/Unary"], "callers": ["accesspoint"]},
        {"methods": [f"{ECHO}/Bidi"], "callers": [f"spiffe://{DOMAIN}/site/*/service/search"]},
    ]
}


async def test_authz_allow_deny_and_audit(
    tmp_path: Path, certs: Pki, echo_backend: tuple[Proc, int]
) -> None:
    with pair(tmp_path, certs, echo_backend[1], authz=RULES) as (inbound, outbound):
        channel, stub = await stub_for(outbound)
        async with channel:
            assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"a"), timeout=5)).payload
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.ServerStream(echo_pb2.EchoRequest(), timeout=5):
                        pass
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert trailers_of(err.value)["x-sidecar-error"] == "authz_denied"
                details = err.value.details() or ""
                assert CALLER_ID in details and f"/{ECHO}/ServerStream" in details
        assert metric(inbound, "sidecar_authz_decisions_total", decision="allow") >= 1
        assert metric(inbound, "sidecar_authz_decisions_total", decision="deny") == 3
        # logged once per caller and method per minute, not once per call
        denied = [ln for ln in inbound.proc.logs().splitlines() if "authz denied" in ln]
        assert len(denied) == 1, denied
    audit = {**RULES, "mode": "audit"}
    with pair(tmp_path, certs, echo_backend[1], authz=audit) as (inbound, outbound):
        channel, stub = await stub_for(outbound)
        async with channel:
            got = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(count=2), timeout=5)]
            assert len(got) == 2
        assert metric(inbound, "sidecar_authz_decisions_total", decision="would_deny") == 1
        assert metric(inbound, "sidecar_authz_decisions_total", decision="deny") == 0


async def test_permissive_serves_plaintext_and_mtls_on_one_port(
    tmp_path: Path, certs: Pki, echo_backend: tuple[Proc, int]
) -> None:
    authz = {"rules": [{"methods": [f"{ECHO}/Unary"], "callers": ["accesspoint"]}]}
    with pair(tmp_path, certs, echo_backend[1], mtls="permissive", authz=authz) as (
        inbound,
        outbound,
    ):
        plain, plain_stub = await stub_for(inbound, "inbound")
        secure, secure_stub = await stub_for(outbound)
        async with plain, secure:
            call = secure_stub.Unary(echo_pb2.EchoRequest(echo_metadata=True), timeout=5)
            await call
            assert dict(await call.trailing_metadata())["echo-x-sidecar-caller"] == CALLER_ID
            # plaintext on the same port: relayed, but without an identity; a rule names
            # Unary, so it is not authenticated; no rule names ServerStream: denied
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await plain_stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert trailers_of(err.value)["x-sidecar-error"] == "authz_denied"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in plain_stub.ServerStream(echo_pb2.EchoRequest(), timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # health is the sidecar's own, answered to any caller
            health = await plain.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
            assert health is not None
        assert metric(inbound, "sidecar_tls_plaintext_connections_total") >= 1


# ---- rotation -----------------------------------------------------------------------


def serial_served(port: int, folder: Path) -> int:
    tls = raw_handshake(port, folder)
    try:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        tls.close()


async def test_rotation_under_a_long_bidi_stream(
    tmp_path: Path, pki: Pki, echo_backend: tuple[Proc, int]
) -> None:
    pki.issue("echo", "rot-echo")
    pki.issue("accesspoint", "rot-ap")
    for name in ("rot-echo", "rot-ap"):
        shutil.copy(pki.root / name / "cert.pem", pki.root / name / "cert.orig")
    cfg_in = inbound_config(pki.root / "rot-echo", echo_backend[1])
    with sidecar_process(tmp_path, "rin", cfg_in) as inbound:
        port = inbound.port("inbound")
        out_cfg = outbound_config(pki.root / "rot-ap", port)
        with sidecar_process(tmp_path, "rout", out_cfg, wait="/live") as outbound:
            first = serial_served(port, pki.root / "rot-ap")
            channel, stub = await stub_for(outbound)
            async with channel:
                call = stub.Bidi(timeout=60)
                sent = 0

                async def exchange(n: int) -> None:
                    nonlocal sent
                    for _ in range(n):
                        await call.write(echo_pb2.EchoRequest(payload=str(sent).encode()))
                        assert (await call.read()).payload == str(sent).encode()
                        sent += 1
                        await asyncio.sleep(0.02)

                await exchange(10)
                # 1. a second CA: both sidecars trust both (the bundle rotates first)
                ca.init_ca(pki.root / "ca2", DOMAIN, DAY)
                both = pki.root / "bundle.pem"
                both.write_bytes(
                    (pki.root / "ca1" / "ca.pem").read_bytes()
                    + (pki.root / "ca2" / "ca.pem").read_bytes()
                )
                pki.issue("accesspoint", "rot-ap", bundle=both)
                pki.issue("echo", "rot-echo", bundle=both)
                wait_until(lambda: inbound.get_json("/tls")["trusted_cas"] == 2, 10, "bundle")
                wait_until(lambda: outbound.get_json("/tls")["trusted_cas"] == 2, 10, "bundle")
                step1 = wait_until(
                    lambda: (s := serial_served(port, pki.root / "rot-ap")) != first and s,
                    10,
                    "a new certificate",
                )
                await exchange(10)
                # 2. the echo sidecar's certificate from the new CA
                pki.issue("echo", "rot-echo", "ca2", bundle=both)
                new = json.dumps(inbound.get_json("/tls"))
                wait_until(
                    lambda: serial_served(port, pki.root / "rot-ap") != step1, 10, "new CA's"
                )
                await exchange(10)
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK, new
                assert sent == 30
            # new connections get the new certificate, from the new CA, and are trusted
            der = raw_handshake(port, pki.root / "rot-ap").getpeercert(binary_form=True)
            assert der is not None
            served = x509.load_der_x509_certificate(der)
            ca2 = x509.load_pem_x509_certificate((pki.root / "ca2" / "ca.pem").read_bytes())
            served.verify_directly_issued_by(ca2)  # raises unless the new CA signed it
        with sidecar_process(tmp_path, "rout2", out_cfg, wait="/live") as fresh:
            channel, stub = await stub_for(fresh)
            async with channel:
                assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"n"), timeout=5)).payload
        # a bad new file is refused, the old certificate stays in use
        (pki.root / "rot-echo" / "cert.pem").write_bytes(
            (pki.root / "rot-echo" / "cert.orig").read_bytes()  # not the key's certificate
        )
        wait_until(lambda: inbound.get_json("/tls")["last_error"], 10, "refusal")
        assert "tls.key_file: the key does not match" in inbound.get_json("/tls")["last_error"]
        assert metric(inbound, "sidecar_tls_reloads_total", result="refused") >= 1
        served_now = serial_served(port, pki.root / "rot-ap")
        assert served_now == served.serial_number
