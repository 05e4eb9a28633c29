"""The authorization step of an inbound call: decisions counted, denied calls answered
with the status and `authz_denied`, a deny logged once per caller and method."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.authz.metrics import AuthzMetrics
from sidecar.authz.rules import Authorizer
from sidecar.authz.step import InboundAuthz

VIEW = "spiffe://example.net/site/lon3/service/playlistview"
OTHER = "spiffe://example.net/site/lon3/service/search"


@dataclass
class FakeCall:
    """What the step reads of a relayed call, and what it was answered."""

    method: str
    caller: str | None
    failed: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def req(self) -> Any:
        return self

    @property
    def down(self) -> Any:
        return self

    def fail(self, status: str, message: str, reason: str | None) -> None:
        self.failed.append((status, message, reason))


def step(mode: str = "enforce") -> tuple[InboundAuthz, CollectorRegistry]:
    registry = CollectorRegistry()
    rules = [(["music.playlist.v1.Playlist/*"], ["playlistview"])]
    authorizer = Authorizer(rules, domain="example.net", mode=mode)
    return InboundAuthz(authorizer, AuthzMetrics(registry)), registry


def count(registry: CollectorRegistry, decision: str) -> float:
    value = registry.get_sample_value("sidecar_authz_decisions_total", {"decision": decision})
    return value or 0.0


def test_allowed_and_denied_calls(caplog: pytest.LogCaptureFixture) -> None:
    authz, registry = step()
    ok = FakeCall("/music.playlist.v1.Playlist/Get", VIEW)
    assert authz.admit(ok) and not ok.failed
    with caplog.at_level(logging.WARNING, "sidecar.authz"):
        for _ in range(3):
            denied = FakeCall("/music.playlist.v1.Playlist/Get", OTHER)
            assert not authz.admit(denied)
            status, message, reason = denied.failed[0]
            assert (status, reason) == ("PERMISSION_DENIED", "authz_denied")
            assert OTHER in message and "/music.playlist.v1.Playlist/Get" in message
    assert len([r for r in caplog.records if "denied" in r.getMessage()]) == 1
    plain = FakeCall("/music.playlist.v1.Playlist/Get", None)
    assert not authz.admit(plain)
    assert plain.failed[0][0] == "UNAUTHENTICATED"
    assert (count(registry, "allow"), count(registry, "deny")) == (1, 4)
    assert count(registry, "would_deny") == 0


def test_audit_lets_the_call_through_and_counts_it() -> None:
    authz, registry = step("audit")
    call = FakeCall("/music.playlist.v1.Playlist/Get", OTHER)
    assert authz.admit(call) and not call.failed
    assert count(registry, "would_deny") == 1
    assert count(registry, "deny") == 0
