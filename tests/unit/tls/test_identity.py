"""SPIFFE IDs and caller patterns: what parses, what a pattern names, what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.tls.identity import IdPattern, SpiffeId

names = st.from_regex(r"[a-z][a-z0-9\-]{0,12}", fullmatch=True)


@given(names, names, names)
def test_an_identity_round_trips(domain: str, site: str, service: str) -> None:
    ident = SpiffeId(f"{domain}.net", site, service)
    assert SpiffeId.parse(str(ident)) == ident


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://example.net/site/a/service/b", "must start with spiffe://"),
        ("spiffe://Example.net/site/a/service/b", "not a trust domain"),
        ("spiffe://example.net/site/a/svc/b", "not a mesh identity"),
        ("spiffe://example.net/site/a/service/b/extra", "not a mesh identity"),
        ("spiffe://example.net/site/../service/b", "not allowed"),
    ],
)
def test_bad_identities_say_why(uri: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SpiffeId.parse(uri)


def test_a_service_name_means_that_service_in_any_site_of_the_domain() -> None:
    pattern = IdPattern.parse("playlistview", "example.net")
    assert pattern.matches("spiffe://example.net/site/lon3/service/playlistview")
    assert pattern.matches("spiffe://example.net/site/sto3/service/playlistview")
    assert not pattern.matches("spiffe://example.net/site/lon3/service/playlist")
    assert not pattern.matches("spiffe://other.net/site/lon3/service/playlistview")


def test_a_star_stands_for_exactly_one_segment() -> None:
    pattern = IdPattern.parse("spiffe://example.net/site/*/service/accesspoint", "ignored.net")
    assert pattern.matches("spiffe://example.net/site/lon3/service/accesspoint")
    assert not pattern.matches("spiffe://example.net/site/lon3/x/service/accesspoint")
    assert not pattern.matches("spiffe://example.net/service/accesspoint")
    assert not pattern.matches("not a uri")


@pytest.mark.parametrize("text", ["play list", "spiffe://example.net", "spiffe://ex ample/x", ""])
def test_malformed_patterns_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        IdPattern.parse(text, "example.net")
