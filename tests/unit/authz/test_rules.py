"""Authorization decisions: first matching rule allows, else the default; plaintext callers
are UNAUTHENTICATED where a rule names the method; audit lets denials through as would_deny."""

from __future__ import annotations

import pytest

from sidecar.authz import Authorizer, MethodPattern

VIEW = "spiffe://example.net/site/lon3/service/playlistview"
AP = "spiffe://example.net/site/sto3/service/accesspoint"
OTHER = "spiffe://example.net/site/lon3/service/search"
RULES = [
    (
        ["music.playlist.v1.Playlist/*"],
        ["playlistview", "spiffe://example.net/site/*/service/accesspoint"],
    ),
    (["music.metadata.v1.Metadata/Get"], ["search"]),
]


def authorizer(**kw: str) -> Authorizer:
    return Authorizer(RULES, domain="example.net", **kw)


def test_first_matching_rule_allows() -> None:
    az = authorizer()
    assert az.decide("/music.playlist.v1.Playlist/Get", VIEW).decision == "allow"
    assert az.decide("/music.playlist.v1.Playlist/Put", AP).decision == "allow"
    assert az.decide("/music.metadata.v1.Metadata/Get", OTHER).decision == "allow"


def test_otherwise_default_decides_and_the_message_names_caller_and_method() -> None:
    deny = authorizer().decide("/music.playlist.v1.Playlist/Get", OTHER)
    assert (deny.decision, deny.allowed, deny.status) == ("deny", False, "PERMISSION_DENIED")
    assert OTHER in deny.message and "/music.playlist.v1.Playlist/Get" in deny.message
    assert authorizer().decide("/music.metadata.v1.Metadata/List", OTHER).decision == "deny"
    allow = authorizer(default="allow")
    assert allow.decide("/x.Y/Z", OTHER).allowed
    assert allow.decide("/music.playlist.v1.Playlist/Get", OTHER).allowed  # no rule matched


def test_a_plaintext_caller_is_unauthenticated_where_a_rule_needs_an_identity() -> None:
    d = authorizer().decide("/music.playlist.v1.Playlist/Get", None)
    assert (d.decision, d.status) == ("deny", "UNAUTHENTICATED")
    assert "presented no identity" in d.message
    assert authorizer().decide("/x.Y/Z", None).status == "PERMISSION_DENIED"  # no rule names it
    assert authorizer(default="allow").decide("/music.playlist.v1.Playlist/Get", None).allowed


def test_audit_decides_the_same_but_lets_the_call_through() -> None:
    d = authorizer(mode="audit").decide("/music.playlist.v1.Playlist/Get", OTHER)
    assert (d.decision, d.allowed, d.status) == ("would_deny", True, "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("rules", "kw", "where"),
    [
        ([(["Get"], ["x"])], {}, r"rules\[0\]\.methods: 'Get' names no service"),
        ([(["a.B/*"], ["spiffe://example.net"])], {}, r"rules\[0\]\.callers"),
        ([(["a.B/M-x"], ["x"])], {}, r"not a method name"),
        ([], {"mode": "enforcing"}, "mode"),
        ([], {"default": "maybe"}, "default"),
    ],
)
def test_bad_rules_are_refused_naming_the_place(rules: list, kw: dict, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        Authorizer(rules, domain="example.net", **kw)


def test_method_patterns() -> None:
    assert MethodPattern.parse("/a.B/C").matches("a.B", "C")
    assert MethodPattern.parse("a.B/*").matches("a.B", "Anything")
    assert not MethodPattern.parse("a.B/C").matches("a.B", "D")


def test_denies_are_logged_once_per_caller_and_method_per_minute() -> None:
    az = authorizer()
    assert az.should_log(OTHER, "/a.B/C", 0.0)
    assert not az.should_log(OTHER, "/a.B/C", 59.0)
    assert az.should_log(OTHER, "/a.B/D", 59.0)
    assert az.should_log(None, "/a.B/C", 59.0)
    assert az.should_log(OTHER, "/a.B/C", 60.5)
