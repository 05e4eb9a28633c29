"""Config validation: a bad file is refused with the key and the reason."""

from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config, parse_config, redacted

GOOD = {
    "service": "playlist",
    "site": "lon3",
    "inbound": {"listen": "0.0.0.0:8181", "app": "127.0.0.1:9181"},
    "outbound": {"listen": "127.0.0.1:15001"},
    "upstreams": {
        "playlist": {
            "grpc_services": ["music.playlist.v1.Playlist"],
            "endpoints": ["127.0.0.1:9001", "127.0.0.1:9002"],
            "timeout_ms": 1000,
        }
    },
}


def test_good_config_has_documented_defaults() -> None:
    config = parse_config(GOOD)
    up = config.upstreams["playlist"]
    assert up.lb == "peak_ewma"
    assert up.retries is None
    assert up.breaker.fail_max == 5
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert config.sites == ["lon3"]
    assert config.access_log is None  # off unless configured
    logged = parse_config({**GOOD, "access_log": {}}).access_log
    assert logged is not None
    assert (logged.path, logged.format, logged.sample_ratio) == ("stdout", "json", 1.0)


@pytest.mark.parametrize(
    ("patch", "key", "reason"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"upstreams": {"p": {"timeout_ms": 0}}}, "upstreams.p.timeout_ms", "greater than 0"),
        ({"upstreams": {"p": {"endpoints": ["nohost"]}}}, "upstreams.p.endpoints", "missing port"),
        ({"upstreams": {"p": {"lb": "fastest"}}}, "upstreams.p.lb", "peak_ewma"),
        ({"upstreams": {"p": {"retries": {"on": ["NOPE"]}}}}, "upstreams.p.retries.on", "NOPE"),
        ({"discovery": {"srv_template": "_{svc}.x"}}, "discovery.srv_template", "placeholder"),
        ({"admin": {"listen": "[::1"}}, "admin.listen", "unclosed"),
        ({"access_log": {"sample_ratio": 2}}, "access_log.sample_ratio", "less than or equal"),
        ({"access_log": {"format": "text"}}, "access_log.format", "json"),
    ],
)
def test_bad_key_is_named_with_reason(patch: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(patch)
    assert err.value.key == key
    assert reason in err.value.reason


def test_one_grpc_service_cannot_route_to_two_upstreams() -> None:
    data = {"upstreams": {"a": {"grpc_services": ["x.S"]}, "b": {"grpc_services": ["x.S"]}}}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == "upstreams.b.grpc_services"


def test_local_site_comes_first() -> None:
    config = parse_config({"site": "sto3", "discovery": {"sites": ["lon3", "sto3"]}})
    assert config.sites == ["sto3", "lon3"]


def test_unreadable_and_non_yaml_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_secrets_are_redacted() -> None:
    data = dict(GOOD, registration={"tsig": {"name": "k", "secret": "c2VjcmV0"}})
    dump = redacted(parse_config(data))
    assert dump["registration"]["tsig"]["secret"] == "<redacted>"


def test_deprecated_keys_are_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Keys of the removed grpcio plane still load, each with a warning naming what to do."""
    with caplog.at_level("WARNING", logger="sidecar.config"):
        cfg = parse_config(
            {"dataplane": "grpcio", "method_kinds": {"/a.B/C": "unary"}, "proto_modules": ["x"]}
        )
    assert cfg.site == "local"
    lines = [r.getMessage() for r in caplog.records]
    for key in ("dataplane", "method_kinds", "proto_modules"):
        assert any(line.startswith(f"config: {key}: deprecated") for line in lines), lines
    assert all("remove the key" in line for line in lines)
