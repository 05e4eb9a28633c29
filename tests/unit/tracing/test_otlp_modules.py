"""The OTLP exporters need opentelemetry-proto's own modules; xds-protos ships older
copies in the same files. The check names the fix instead of letting an ImportError out."""

from __future__ import annotations

import sys
import types

import opentelemetry.proto.common.v1 as otlp_common
import pytest

from sidecar.config import ConfigError, TracingConfig
from sidecar.tracing.export import make_exporter, otlp_modules_problem

STALE = "opentelemetry.proto.common.v1.common_pb2"


def test_this_environment_has_opentelemetry_protos_own_modules() -> None:
    assert otlp_modules_problem() is None


def test_xds_protos_copies_are_named_with_the_line_that_fixes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = types.ModuleType(STALE)  # OTLP 0.9: InstrumentationLibrary, no InstrumentationScope
    old.InstrumentationLibrary = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, STALE, old)
    monkeypatch.setattr(otlp_common, "common_pb2", old)
    problem = otlp_modules_problem()
    assert problem is not None
    assert "pip install --force-reinstall --no-deps opentelemetry-proto==" in problem
    with pytest.raises(ConfigError) as refused:
        make_exporter(TracingConfig())
    assert refused.value.key == "tracing"
