"""The `tracing` config: off by default and by `off`, documented defaults, bad values
refused with the key and the reason."""

from __future__ import annotations

import pytest
import yaml

from sidecar.config import ConfigError, parse_config


def test_off_unless_configured_and_off_means_off() -> None:
    assert parse_config({}).tracing is None
    assert parse_config(yaml.safe_load("tracing: off")).tracing is None
    assert parse_config({"tracing": "off"}).tracing is None


def test_defaults() -> None:
    tracing = parse_config({"tracing": {}}).tracing
    assert tracing is not None
    assert tracing.sample_ratio == 0.01
    assert tracing.exporter == "otlp_grpc"
    assert tracing.endpoint is None  # the exporter's default, README
    assert (tracing.queue_calls, tracing.batch_spans) == (2048, 512)


@pytest.mark.parametrize(
    ("tracing", "key", "reason"),
    [
        (True, "tracing", "tracing: {}"),
        ({"sample_ratio": 1.5}, "tracing.sample_ratio", "less than or equal"),
        ({"exporter": "zipkin"}, "tracing.exporter", "otlp_grpc"),
        ({"endpoint": "127.0.0.1:4317"}, "tracing.endpoint", "http:// or https://"),
        ({"endpoint": "http://h:99999"}, "tracing.endpoint", "out of range"),
        ({"headers": {"Api-Key": "x"}}, "tracing.headers", "lower-case"),
        ({"headers": {"api-key": "a\nb"}}, "tracing.headers", "CR, LF"),
        ({"queue_calls": 0}, "tracing.queue_calls", "greater than or equal"),
        ({"export_interval_s": 0}, "tracing.export_interval_s", "greater than 0"),
        ({"sampler": "always"}, "tracing.sampler", "unknown key"),
    ],
)
def test_bad_values_are_refused_with_key_and_reason(tracing: object, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tracing": tracing})
    assert err.value.key == key
    assert reason in err.value.reason
