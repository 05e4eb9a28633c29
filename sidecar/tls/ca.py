"""A small certificate authority for a mesh: `sidecar ca init` and `sidecar ca issue`.

Does I/O (writes key and certificate files). Enough for the demo, the tests and a
small deployment, so none of them needs outside tooling: an ECDSA P-256 CA, and leaf
certificates whose URI SAN is the workload's SPIFFE ID
(spiffe://<domain>/site/<site>/service/<service>), valid for client and server auth.
The CA's folder holds `ca.pem`, `ca.key` (mode 0600) and `ca.json` (the trust domain).
A leaf's folder gets `cert.pem`, `key.pem` (0600) and `ca.pem` (the bundle to trust),
the three files of the config's `tls:` block; each is replaced atomically (written
beside, then renamed), so a sidecar watching them never reads half a file.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.tls.identity import SpiffeId

_PEM = serialization.Encoding.PEM


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def init_ca(
    directory: Path, domain: str, ttl: datetime.timedelta, *, now: datetime.datetime | None = None
) -> Path:
    """Make a CA for `domain` in `directory` (replacing one there). To rotate CAs, make
    the new one in another folder and hand `issue` a bundle holding both."""
    SpiffeId.parse(f"spiffe://{domain}/site/x/service/x")  # ValueError: a bad trust domain
    directory.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sidecar mesh CA {domain}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca.key", _key_pem(key), private=True)
    _write(directory / "ca.pem", cert.public_bytes(_PEM))
    _write(directory / "ca.json", json.dumps({"domain": domain}).encode())
    return directory / "ca.pem"


def issue(
    directory: Path,
    service: str,
    site: str,
    out: Path,
    ttl: datetime.timedelta,
    *,
    bundle: Path | None = None,
    now: datetime.datetime | None = None,
) -> SpiffeId:
    """A leaf certificate for `service` in `site`, signed by the CA in `directory`, into
    `out` (cert.pem, key.pem, ca.pem = `bundle` or the CA's own certificate)."""
    domain = json.loads((directory / "ca.json").read_text())["domain"]
    identity = SpiffeId(domain, site, service)
    SpiffeId.parse(str(identity))  # ValueError: a bad service or site name
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{site}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(min(now + ttl, ca_cert.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    # the key first: a watcher that sees the new certificate finds its key already there
    _write(out / "key.pem", _key_pem(key), private=True)
    _write(out / "cert.pem", cert.public_bytes(_PEM))
    _write(out / "ca.pem", (bundle or directory / "ca.pem").read_bytes())
    return identity


def parse_ttl(text: str) -> datetime.timedelta:
    """`90s`, `15m`, `24h`, `30d` (a number alone is seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = text[-1:] if text[-1:] in units else "s"
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 30d") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return datetime.timedelta(seconds=seconds)
