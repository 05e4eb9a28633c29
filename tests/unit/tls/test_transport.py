"""Handshake failures are named by their reason, from the errors OpenSSL raises."""

from __future__ import annotations

import ssl

import pytest

from sidecar.tls.transport import describe, handshake_reason


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    return exc


def alert(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (verify_error(20, "unable to get local issuer certificate"), "unknown_ca"),
        (verify_error(19, "self-signed certificate in certificate chain"), "unknown_ca"),
        (verify_error(10, "certificate has expired"), "expired"),
        (verify_error(9, "certificate is not yet valid"), "not_yet_valid"),
        (alert("TLSV1_ALERT_UNKNOWN_CA"), "unknown_ca"),
        (alert("SSLV3_ALERT_CERTIFICATE_EXPIRED"), "expired"),
        (alert("TLSV13_ALERT_CERTIFICATE_REQUIRED"), "no_certificate"),
        (alert("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no_certificate"),
        (alert("WRONG_VERSION_NUMBER"), "plaintext"),
        (alert("SOMETHING_ELSE"), "other"),
        (TimeoutError(), "timeout"),
    ],
)
def test_reasons(exc: BaseException, reason: str) -> None:
    assert handshake_reason(exc) == reason


def test_description_names_the_reason_then_openssl() -> None:
    text = describe("expired", verify_error(10, "certificate has expired"))
    assert text == "certificate expired (certificate has expired)"
    assert describe("wrong_identity", ValueError("peer is x")) == "wrong identity (peer is x)"
