"""Which callers may call which methods of the local app (`inbound.authz`).

Pure (no I/O). Rules are read in order; the first rule whose methods name the call's
method and whose callers name the caller's identity allows the call; when none does,
`default` decides. A caller without an identity (plaintext, under `inbound.mtls:
permissive`) is matched as such: no rule names it; when it is then denied and a rule
names the method (an identity could have been allowed), the answer is UNAUTHENTICATED
rather than PERMISSION_DENIED.
`mode: audit` decides the same way but lets every call through, counting what it would
have denied (`would_deny`), for rolling rules out before enforcing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sidecar.tls.identity import IdPattern

_SERVICE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_METHOD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOG_EVERY_S = 60.0  # a deny is logged once per caller and method per minute
T = TypeVar("T")
_LOG_KEYS_MAX = 10_000  # callers x methods remembered for that (then forgotten, oldest first)


@dataclass(frozen=True, slots=True)
class MethodPattern:
    """`package.Service/Method`, or `package.Service/*` for every method of the service."""

    service: str
    method: str  # "*" for any

    @classmethod
    def parse(cls, text: str) -> MethodPattern:
        service, sep, method = text.lstrip("/").partition("/")
        if not sep or not _SERVICE.match(service):
            raise ValueError(
                f"{text!r} names no service: write package.Service/Method or package.Service/*"
            )
        if method != "*" and not _METHOD.match(method):
            raise ValueError(f"{text!r}: {method!r} is not a method name (or *)")
        return cls(service, method)

    def matches(self, service: str, method: str) -> bool:
        return self.service == service and self.method in ("*", method)


@dataclass(frozen=True, slots=True)
class Rule:
    methods: tuple[MethodPattern, ...]
    callers: tuple[IdPattern, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the inbound sidecar does with one call."""

    decision: str  # "allow" | "deny" | "would_deny" (audit: let through)
    allowed: bool  # the call goes on
    status: str  # the gRPC status when denied: PERMISSION_DENIED or UNAUTHENTICATED
    message: str  # for the caller and the log: names the caller identity and the method


class Authorizer:
    def __init__(
        self,
        rules: Iterable[tuple[Sequence[str], Sequence[str]]],
        *,
        domain: str,
        default: str = "deny",
        mode: str = "enforce",
    ) -> None:
        """`rules`: (methods, callers) pairs as written in the config; ValueError names
        the first bad one (`rules[i].methods[j]: why`)."""
        parsed = []
        for i, (methods, callers) in enumerate(rules):
            ms = tuple(_parse(f"rules[{i}].methods", MethodPattern.parse, m) for m in methods)
            cs = tuple(
                _parse(f"rules[{i}].callers", lambda c: IdPattern.parse(c, domain), c)
                for c in callers
            )
            parsed.append(Rule(ms, cs))
        if default not in ("allow", "deny"):
            raise ValueError(f"default: {default!r} is not allow or deny")
        if mode not in ("enforce", "audit"):
            raise ValueError(f"mode: {mode!r} is not enforce or audit")
        self.rules = tuple(parsed)
        self.default_allows = default == "allow"
        self.audit = mode == "audit"
        self._logged: dict[tuple[str, str], float] = {}

    def decide(self, path: str, caller: str | None) -> Decision:
        """The decision for a call to `path` (`/package.Service/Method`) from `caller` (its
        SPIFFE ID, or None when it presented no certificate)."""
        service, _, method = path.lstrip("/").partition("/")
        named = False  # some rule names this method
        for rule in self.rules:
            if not any(m.matches(service, method) for m in rule.methods):
                continue
            named = True
            if caller is not None and any(c.matches(caller) for c in rule.callers):
                return _ALLOW
        if self.default_allows:
            return _ALLOW
        who = caller or "a caller without a certificate"
        if caller is None and named:
            status = "UNAUTHENTICATED"
            message = f"{path} needs an authenticated caller; {who} presented no identity"
        else:
            status = "PERMISSION_DENIED"
            message = f"{who} may not call {path} (inbound.authz)"
        if self.audit:
            return Decision("would_deny", True, status, message)
        return Decision("deny", False, status, message)

    def should_log(self, caller: str | None, path: str, now: float) -> bool:
        """True at most once per caller and method every LOG_EVERY_S."""
        key = (caller or "", path)
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY_S:
            return False
        if last is None and len(self._logged) >= _LOG_KEYS_MAX:
            del self._logged[next(iter(self._logged))]
        self._logged.pop(key, None)
        self._logged[key] = now
        return True


_ALLOW = Decision("allow", True, "OK", "")


def _parse(where: str, parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
