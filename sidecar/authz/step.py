"""The authorization step of an inbound relayed call (sidecar/h2relay/call.py, step 1b).

No I/O but a log line and a counter. The caller's identity is the SPIFFE ID of the
certificate its connection presented (None for a plaintext caller under
`inbound.mtls: permissive`); the rules (rules.py) decide. Every decision is counted in
`sidecar_authz_decisions_total{decision}`; a denied call ends at once with
PERMISSION_DENIED (or UNAUTHENTICATED, rules.py says when) and
`x-sidecar-error: authz_denied`, and is logged once per caller and method per minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from sidecar.authz.metrics import AuthzMetrics
from sidecar.authz.rules import Authorizer

log = logging.getLogger("sidecar.authz")
REASON = "authz_denied"


class _Call(Protocol):
    """What the step reads of a relayed call, and how it ends one."""

    @property
    def req(self) -> Any: ...  # .method: the full path

    @property
    def down(self) -> Any: ...  # .caller: the connection's SPIFFE ID, or None

    def fail(self, status: str, message: str, reason: str | None) -> None: ...


class InboundAuthz:
    def __init__(self, authorizer: Authorizer, metrics: AuthzMetrics | None = None) -> None:
        self.authorizer = authorizer
        metrics = metrics or AuthzMetrics()
        # every decision exported from the start, at 0 (a dashboard has a series at once)
        self._counters = {d: metrics.decisions.labels(d) for d in ("allow", "deny", "would_deny")}

    @classmethod
    def from_config(
        cls, authz: Any, domain: str, metrics: AuthzMetrics | None = None
    ) -> InboundAuthz:
        """From `inbound.authz` (config.py has refused bad rules already)."""
        return cls(
            Authorizer(
                [(r.methods, r.callers) for r in authz.rules],
                domain=domain,
                default=authz.default,
                mode=authz.mode,
            ),
            metrics,
        )

    def admit(self, call: _Call) -> bool:
        """True: the call goes on. False: it was refused here (already answered)."""
        method = call.req.method
        caller: str | None = call.down.caller
        decision = self.authorizer.decide(method, caller)
        self._counters[decision.decision].inc()
        if decision.decision == "allow":
            return True
        if self.authorizer.should_log(caller, method, time.monotonic()):
            verb = "would deny (audit)" if decision.allowed else "denied"
            log.warning("inbound authz %s: %s", verb, decision.message)
        if decision.allowed:
            return True
        call.fail(decision.status, decision.message, REASON)
        return False
