"""The mTLS and authorization keys of the config: defaults, and refusals that name the key
and the reason (`sidecar check` adds the certificate files' own check)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar.cli import main
from sidecar.config import ConfigError, parse_config
from sidecar.tls import ca

TLS = {"cert_file": "c.pem", "key_file": "k.pem", "ca_file": "ca.pem"}
BASE: dict[str, Any] = {
    "service": "playlist",
    "site": "lon3",
    "inbound": {"listen": "127.0.0.1:0", "app": "127.0.0.1:9181"},
    "upstreams": {"playlistview": {"grpc_services": ["music.view.v1.View"]}},
}


def with_(**patch: Any) -> dict[str, Any]:
    return {**BASE, **patch}


def test_defaults_strict_with_tls_and_off_without() -> None:
    assert parse_config(BASE).inbound_mtls == "off"
    config = parse_config(with_(tls=TLS))
    assert config.inbound_mtls == "strict"
    assert config.upstreams["playlistview"].tls is True
    assert config.upstreams["playlistview"].identities is None
    assert config.inbound is not None and config.inbound.authz is None
    authz = parse_config(
        with_(tls=TLS, inbound={**BASE["inbound"], "authz": {"rules": []}})
    ).inbound
    assert authz is not None and authz.authz is not None
    assert (authz.authz.mode, authz.authz.default) == ("enforce", "deny")


def _inbound(**kw: Any) -> dict[str, Any]:
    return {**BASE["inbound"], **kw}


@pytest.mark.parametrize(
    ("patch", "key", "reason"),
    [
        ({"tls": {"cert_file": "c.pem"}}, "tls.key_file", "Field required"),
        ({"tls": TLS, "service": None}, "tls", "needs `service`"),
        ({"inbound": _inbound(mtls="strict")}, "inbound.mtls", "needs the top-level `tls`"),
        ({"tls": TLS, "inbound": _inbound(mtls="sometimes")}, "inbound.mtls", "strict"),
        ({"inbound": _inbound(authz={})}, "inbound.authz", "needs mTLS"),
        (
            {"tls": TLS, "inbound": _inbound(mtls="off", authz={})},
            "inbound.authz",
            "needs mTLS",
        ),
        (
            {"tls": TLS, "inbound": _inbound(authz={"mode": "warn"})},
            "inbound.authz.mode",
            "enforce",
        ),
        (
            {"tls": TLS, "inbound": _inbound(authz={"default": "maybe"})},
            "inbound.authz.default",
            "deny",
        ),
        (
            {
                "tls": TLS,
                "inbound": _inbound(
                    authz={"rules": [{"methods": ["Playlist"], "callers": ["playlistview"]}]}
                ),
            },
            "inbound.authz.rules[0].methods",
            "names no service",
        ),
        (
            {
                "tls": TLS,
                "inbound": _inbound(
                    authz={"rules": [{"methods": ["a.B/*"], "callers": ["spiffe://x/a/**/b"]}]}
                ),
            },
            "inbound.authz.rules[0].callers",
            "not allowed",
        ),
        (
            {
                "tls": TLS,
                "inbound": _inbound(authz={"rules": [{"methods": ["a.B/*"], "callers": []}]}),
            },
            "inbound.authz.rules.0.callers",
            "at least 1",
        ),
        (
            {"tls": TLS, "upstreams": {"v": {"identities": ["spiffe://Bad Domain/x"]}}},
            "upstreams.v.identities[0]",
            "trust domain",
        ),
        (
            {"upstreams": {"v": {"identities": ["v"]}}},
            "upstreams.v.identities",
            "only checked over mTLS",
        ),
    ],
)
def test_bad_tls_keys_are_named_with_reason(patch: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_(**patch))
    assert err.value.key == key
    assert reason in err.value.reason


def _write(tmp_path: Path, folder: Path, service: str = "playlist") -> Path:
    cfg = tmp_path / f"{service}.yaml"
    cfg.write_text(
        f"service: {service}\nsite: lon3\ninbound: {{listen: '127.0.0.1:0'}}\n"
        f"tls: {{cert_file: {folder}/cert.pem, key_file: {folder}/key.pem, "
        f"ca_file: {folder}/ca.pem}}\n"
    )
    return cfg


def test_check_refuses_certificate_files_with_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = datetime.timedelta(days=1)
    ca.init_ca(tmp_path / "ca", "example.net", day)
    ca.issue(tmp_path / "ca", "playlist", "lon3", tmp_path / "p", day)
    ca.issue(tmp_path / "ca", "search", "lon3", tmp_path / "s", day)
    assert main(["check", "-c", str(_write(tmp_path, tmp_path / "p"))]) == 0
    # another service's certificate
    assert main(["check", "-c", str(_write(tmp_path, tmp_path / "s"))]) == 1
    err = capsys.readouterr().err
    assert (
        "tls.cert_file: the certificate names spiffe://example.net/site/lon3/service/search" in err
    )
    # a key that is not the certificate's
    (tmp_path / "p" / "key.pem").write_bytes((tmp_path / "s" / "key.pem").read_bytes())
    assert main(["check", "-c", str(_write(tmp_path, tmp_path / "p"))]) == 1
    assert "tls.key_file: the key does not match" in capsys.readouterr().err
    # a certificate without a SPIFFE ID: the CA's own
    (tmp_path / "p" / "cert.pem").write_bytes((tmp_path / "ca" / "ca.pem").read_bytes())
    (tmp_path / "p" / "key.pem").write_bytes((tmp_path / "ca" / "ca.key").read_bytes())
    assert main(["check", "-c", str(_write(tmp_path, tmp_path / "p"))]) == 1
    assert "tls.cert_file: the certificate must name exactly one SPIFFE ID" in (
        capsys.readouterr().err
    )
