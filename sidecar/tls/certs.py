"""A sidecar's certificate, key and trust bundle: checked, turned into TLS contexts, and
watched for rotation.

Does I/O (reads the three files). What is refused, at start (ConfigError naming the
`tls.*` key) and at reload (a log line, the old files stay in use): a file that cannot
be read or parsed, a key that does not match the leaf certificate, a leaf that names no
SPIFFE ID or another identity than the config's, a leaf not valid now, an empty bundle.

Rotation: `CertStore.refresh()` re-reads the files when one changed on disk. The TLS
contexts the listeners and the pool hold stay the same objects, and every handshake
picks the store's current context (`server_context`'s SNI callback, and `client_context`
returned fresh per connection), so new handshakes use the new certificate and trust
bundle while connections already open go on undisturbed (TLS does not re-handshake).
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sidecar.tls.identity import SCHEME, SpiffeId

log = logging.getLogger("sidecar.tls")
ALPN = ["h2"]


class TlsError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: str  # leaf first, then intermediates
    key_file: str
    ca_file: str  # trust bundle: may hold several CAs (CA rotation)


@dataclass(frozen=True, slots=True)
class Identity:
    """What the files hold, once checked."""

    spiffe_id: str
    not_after: float  # epoch seconds
    serial: int
    ca_count: int

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "identity": self.spiffe_id,
            "serial": f"{self.serial:x}",
            "not_after": datetime.datetime.fromtimestamp(self.not_after, datetime.UTC).isoformat(),
            "expires_in_s": round(self.not_after - now, 1),
            "trusted_cas": self.ca_count,
        }


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    """The SPIFFE IDs among a certificate's URI SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(SCHEME)
    ]


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(key, f"cannot read {path}: {exc.strerror}") from None


def check(files: TlsFiles, expected: SpiffeId, now: float) -> Identity:
    """The identity the files hold; TlsError names the key and the reason."""
    try:
        chain = x509.load_pem_x509_certificates(_read("tls.cert_file", files.cert_file))
    except ValueError as exc:
        raise TlsError("tls.cert_file", f"not a PEM certificate chain ({exc})") from None
    try:
        key = serialization.load_pem_private_key(_read("tls.key_file", files.key_file), None)
    except (ValueError, TypeError) as exc:
        raise TlsError("tls.key_file", f"not an unencrypted PEM private key ({exc})") from None
    try:
        cas = x509.load_pem_x509_certificates(_read("tls.ca_file", files.ca_file))
    except ValueError as exc:
        raise TlsError("tls.ca_file", f"not a PEM bundle of CA certificates ({exc})") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != leaf.public_key().public_bytes(enc, pub):
        raise TlsError(
            "tls.key_file", f"the key does not match the certificate in {files.cert_file}"
        )
    ids = spiffe_ids(leaf)
    if len(ids) != 1:
        raise TlsError(
            "tls.cert_file",
            f"the certificate must name exactly one SPIFFE ID in a URI SAN, it names {len(ids)}",
        )
    if ids[0] != str(expected):
        raise TlsError(
            "tls.cert_file",
            f"the certificate names {ids[0]}, but this sidecar is {expected} "
            f"(from the config's domain, site and service)",
        )
    starts = leaf.not_valid_before_utc.timestamp()
    ends = leaf.not_valid_after_utc.timestamp()
    if not starts <= now <= ends:
        when = "expired" if now > ends else "not valid yet"
        raise TlsError(
            "tls.cert_file", f"the certificate is {when} (valid {starts:.0f}..{ends:.0f})"
        )
    return Identity(ids[0], ends, leaf.serial_number, len(cas))


def _stamp(files: TlsFiles) -> tuple[float, ...]:
    out = []
    for path in (files.cert_file, files.key_file, files.ca_file):
        try:
            st = os.stat(path)
            out += [st.st_mtime, float(st.st_size), float(st.st_ino)]
        except OSError:
            out += [-1.0, -1.0, -1.0]
    return tuple(out)


class CertStore:
    """The current certificate, key and bundle, as TLS contexts; re-read on change."""

    def __init__(self, files: TlsFiles, expected: SpiffeId, now: float) -> None:
        self.files = files
        self.expected = expected
        self._stamp = _stamp(files)
        self.identity = check(files, expected, now)  # TlsError: refused at start
        self._server = self._make(ssl.Purpose.CLIENT_AUTH)
        self._client = self._make(ssl.Purpose.SERVER_AUTH)
        self.reloads = 0
        self.refusals = 0
        self.last_error: str | None = None

    def _make(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        server = purpose is ssl.Purpose.CLIENT_AUTH
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # 1.3 preferred: OpenSSL offers it first
        ctx.load_cert_chain(self.files.cert_file, self.files.key_file)
        ctx.load_verify_locations(self.files.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        # Peers are told apart by their SPIFFE ID (checked after the handshake), not by a
        # host name: mesh endpoints are addresses found in DNS SRV answers.
        ctx.check_hostname = False
        ctx.set_alpn_protocols(ALPN)
        return ctx

    def refresh(self, now: float) -> bool:
        """Re-read the files if one changed; True when new handshakes now use new ones.
        A bad new set is logged and the old one stays."""
        stamp = _stamp(self.files)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            identity = check(self.files, self.expected, now)
            server = self._make(ssl.Purpose.CLIENT_AUTH)
            client = self._make(ssl.Purpose.SERVER_AUTH)
        except (TlsError, ssl.SSLError, OSError) as exc:
            self.last_error = str(exc)
            self.refusals += 1
            log.error("tls: new files refused, the old certificate stays in use: %s", exc)
            return False
        self.identity, self._server, self._client = identity, server, client
        self.reloads += 1
        self.last_error = None
        log.info("tls: now serving %s (serial %x)", identity.spiffe_id, identity.serial)
        return True

    def server_context(self) -> ssl.SSLContext:
        """A context for a listener: each handshake switches to the current certificate
        and bundle (an SNI callback runs before the server's certificate is chosen). A
        TLS caller must present a certificate the bundle trusts."""
        front = self._make(ssl.Purpose.CLIENT_AUTH)

        def current(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
            sslobj.context = self._server

        front.sni_callback = current
        return front

    def client_context(self) -> ssl.SSLContext:
        """The context for the next outgoing connection (the current files)."""
        return self._client


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The SPIFFE ID the peer's verified certificate names, or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for entry in cert.get("subjectAltName", ()):
        kind, value = entry[0], entry[1]
        if kind == "URI" and isinstance(value, str) and value.startswith(SCHEME):
            return value
    return None
