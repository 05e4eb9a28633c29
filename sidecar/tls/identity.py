"""Workload identities: SPIFFE IDs, and the patterns that name callers.

Pure (no I/O). A sidecar's identity is the URI SAN of its certificate, a SPIFFE ID
(https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md) of the form
`spiffe://<domain>/site/<site>/service/<service>`, made from the config's `domain`,
`site` and `service`. A pattern is a SPIFFE ID in which a path segment may be `*`
("any one segment", never more than one), or a bare service name, which means that
service in any site of the mesh's own domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
# A trust domain is a DNS-like name; a path segment holds no "/" and is not "." or "..".
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.\-_]*[a-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9.\-_]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]*$")  # a service or site name


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """`spiffe://<domain>/site/<site>/service/<service>`."""

    domain: str
    site: str
    service: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.domain}/site/{self.site}/service/{self.service}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """The mesh identity a URI names; ValueError says why it is not one."""
        domain, segments = _split(uri)
        if len(segments) != 4 or segments[0] != "site" or segments[2] != "service":
            raise ValueError(
                f"{uri!r} is not a mesh identity: expected "
                f"{SCHEME}<domain>/site/<site>/service/<service>"
            )
        return cls(domain, segments[1], segments[3])


def _split(uri: str) -> tuple[str, list[str]]:
    if not uri.startswith(SCHEME):
        raise ValueError(f"{uri!r} is not a SPIFFE ID: it must start with {SCHEME}")
    domain, _, path = uri[len(SCHEME) :].partition("/")
    if not _DOMAIN.match(domain):
        raise ValueError(f"{uri!r}: {domain!r} is not a trust domain (lowercase DNS name)")
    segments = path.split("/") if path else []
    for segment in segments:
        if segment in (".", "..") or not (segment == "*" or _SEGMENT.match(segment)):
            raise ValueError(f"{uri!r}: path segment {segment!r} is not allowed")
    return domain, segments


@dataclass(frozen=True, slots=True)
class IdPattern:
    """Who a rule names: a SPIFFE ID with `*` for one path segment, or a service name
    (any site, the mesh's domain)."""

    text: str
    domain: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, domain: str) -> IdPattern:
        """`domain` fills in a bare service name; ValueError says why a pattern is bad."""
        if not text.startswith(SCHEME):
            if not _NAME.match(text):
                raise ValueError(
                    f"{text!r} is neither a service name nor a SPIFFE ID pattern "
                    f"({SCHEME}<domain>/site/<site>/service/<service>, `*` for one segment)"
                )
            return cls(text, domain, ("site", "*", "service", text))
        pattern_domain, segments = _split(text)
        if not segments:
            raise ValueError(f"{text!r}: a pattern needs a path (e.g. /site/*/service/NAME)")
        return cls(text, pattern_domain, tuple(segments))

    def regex(self) -> str:
        """The pattern as an RE2 regular expression over the whole ID (xDS SAN matchers:
        gRPC's A29 security config, sidecar/xds/resources.py)."""
        parts = ["[^/]+" if s == "*" else re.escape(s) for s in self.segments]
        return f"^{re.escape(SCHEME + self.domain)}/{'/'.join(parts)}$"

    def matches(self, identity: str) -> bool:
        """Whether a peer's SPIFFE ID (as presented) is one this pattern names."""
        try:
            domain, segments = _split(identity)
        except ValueError:
            return False
        if domain != self.domain or len(segments) != len(self.segments):
            return False
        return all(p in ("*", s) for p, s in zip(self.segments, segments, strict=True))
