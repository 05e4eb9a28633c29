"""The DNS client at the edge: SRV and address queries over UDP, then TCP.

Does I/O (asyncio, dnspython). Queries go to the configured nameservers
(`host:port`) in order, else to the system resolver configuration. A truncated
UDP answer (TC bit) is asked again over TCP: big SRV sets (200+ records) do not
fit a datagram. Anything that is not a clean answer raises `LookupFailure`;
responses with the wrong ID or question are ignored by dnspython as unexpected,
so a spoofed or stray datagram at most costs a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from sidecar.discovery.answer import (
    LookupFailure,
    SrvAnswer,
    addresses_in,
    literal_address,
    parse_srv_response,
)
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.endpoint import parse_hostport

# RFC 9715 / DNS flag day 2020: an EDNS buffer that avoids IP fragmentation.
EDNS_PAYLOAD = 1232
MAX_PARALLEL_ADDRESS_LOOKUPS = 16


def system_nameservers() -> list[tuple[str, int]]:
    """Nameservers from /etc/resolv.conf (or the platform's equivalent)."""
    try:
        res = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return []
    return [(str(ns), int(res.port)) for ns in res.nameservers]


def parse_nameservers(texts: Sequence[str]) -> list[tuple[str, int]]:
    return [parse_hostport(t, default_port=53) for t in texts]


def _failure(exc: BaseException) -> LookupFailure:
    if isinstance(exc, LookupFailure):
        return exc
    if isinstance(exc, dns.exception.Timeout | asyncio.TimeoutError):
        return LookupFailure("timeout", str(exc))
    if isinstance(exc, ConnectionError | OSError):
        return LookupFailure("unreachable", str(exc) or type(exc).__name__)
    if isinstance(exc, dns.exception.DNSException | dns.query.BadResponse | ValueError):
        return LookupFailure("malformed", f"{type(exc).__name__}: {exc}")
    return LookupFailure("error", f"{type(exc).__name__}: {exc}")


class DnsClient:
    """Asks nameservers in order; the first clean answer wins."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        timeout_s: float = 2.0,
        metrics: DiscoveryMetrics | None = None,
    ) -> None:
        self._configured = list(nameservers or [])
        self.timeout_s = timeout_s
        self.metrics = metrics or DiscoveryMetrics()

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        # Read lazily so a changed resolv.conf is seen without a restart.
        return self._configured or system_nameservers()

    async def _exchange(self, q: dns.message.Message, host: str, port: int) -> dns.message.Message:
        async with asyncio.timeout(self.timeout_s * 2.5):
            r = await dns.asyncquery.udp(
                q, host, timeout=self.timeout_s, port=port, ignore_unexpected=True
            )
            if r.flags & dns.flags.TC:
                self.metrics.tcp_fallbacks.inc()
                r = await dns.asyncquery.tcp(q, host, timeout=self.timeout_s, port=port)
                if r.flags & dns.flags.TC:
                    raise LookupFailure("malformed", "truncated over TCP")
        return r

    async def query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """One answer with rcode NOERROR or NXDOMAIN, or LookupFailure."""
        servers = self.nameservers
        if not servers:
            raise LookupFailure("unreachable", "no nameservers configured")
        last: LookupFailure = LookupFailure("error")
        for host, port in servers:
            q = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
            try:
                r = await self._exchange(q, host, port)
            except Exception as exc:  # anything a hostile peer can provoke is a failure
                last = _failure(exc)
                continue
            if r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return r
            last = LookupFailure(
                {dns.rcode.SERVFAIL: "servfail", dns.rcode.REFUSED: "refused"}.get(
                    r.rcode(), "rcode"
                ),
                f"{dns.rcode.to_text(r.rcode())} from {host}:{port}",
            )
        raise last

    async def addresses(self, target: str) -> tuple[str, ...]:
        """A and AAAA of one target; empty when it has none; LookupFailure when unknown."""
        literal = literal_address(target)
        if literal is not None:
            return (literal,)
        results = await asyncio.gather(
            self.query(target, dns.rdatatype.A),
            self.query(target, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        found: list[str] = []
        errors: list[BaseException] = []
        for res in results:
            if isinstance(res, BaseException):
                errors.append(res)
                continue
            owner = target if target.endswith(".") else target + "."
            for t, (addrs, _ttl) in addresses_in(res, ("answer",)).items():
                if t + "." == owner or t == owner:
                    found.extend(addrs)
        if not found and errors:
            raise _failure(errors[0])
        return tuple(found)

    async def lookup_srv(self, name: str) -> SrvAnswer:
        """The SRV answer for `name` with every target's addresses filled in."""
        started = time.monotonic()
        try:
            answer = await self._lookup_srv(name)
        except Exception as exc:
            failure = _failure(exc)
            self.metrics.lookups.labels(failure.reason).inc()
            raise failure from None
        finally:
            self.metrics.lookup_seconds.observe(time.monotonic() - started)
        self.metrics.lookups.labels("ok" if answer.kind == "records" else answer.kind).inc()
        return answer

    async def _lookup_srv(self, name: str) -> SrvAnswer:
        msg = await self.query(name, dns.rdatatype.SRV)
        answer = parse_srv_response(msg, name)
        if answer.kind != "records":
            return answer
        missing = sorted({r.target for r in answer.records} - set(answer.addresses))
        if not missing:
            return answer
        gate = asyncio.Semaphore(MAX_PARALLEL_ADDRESS_LOOKUPS)

        async def one(target: str) -> tuple[str, tuple[str, ...]]:
            async with gate:
                return target, await self.addresses(target)

        filled = dict(answer.addresses)
        for target, addrs in await asyncio.gather(*(one(t) for t in missing)):
            if addrs:
                filled[target] = addrs
        return SrvAnswer(answer.kind, answer.records, filled, answer.ttl)
