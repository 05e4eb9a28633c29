"""Registration: publish this instance's SRV record while its app is healthy.

Does I/O (asyncio, dnspython over TCP). `run(healthy)` registers once the app's
health check passes, renews before the record's TTL lapses (so a DNS server
that expires records, or restarted without its data, learns it again), takes the
record down while the app is unhealthy, and removes it when cancelled. Membership
calls `deregister()` (or `stop()`) on drain so callers stop picking this
instance before its listeners close.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable

import dns.asyncquery
import dns.message
import dns.rcode

from sidecar.config import Config
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.discovery.update import (
    Instance,
    deregister_message,
    instance_from_config,
    register_message,
)
from sidecar.endpoint import parse_hostport

log = logging.getLogger(__name__)

Healthy = Callable[[], bool | Awaitable[bool]]


class RegistrationError(Exception):
    """An UPDATE the server did not accept (refused, not authorised, no answer)."""


class Registrar:
    """Keeps this instance's SRV record in DNS while the app is healthy."""

    def __init__(self, config: Config, metrics: DiscoveryMetrics | None = None) -> None:
        self.metrics = metrics or DiscoveryMetrics()
        reg = config.registration
        if reg is None:
            raise ValueError("no `registration` in the config")
        self.instance: Instance = instance_from_config(config)
        self._key = reg.tsig
        self._server = parse_hostport(reg.nameserver, default_port=53)
        self._timeout_s = reg.timeout_s
        self._renew_s = reg.renew_s or reg.ttl_s / 3
        self._check_s = reg.check_interval_s
        self.registered = False
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def _send(self, op: str, msg: dns.message.Message) -> None:
        host, port = self._server
        try:
            response = await dns.asyncquery.tcp(msg, host, timeout=self._timeout_s, port=port)
        except Exception as exc:  # TSIG errors from the peer, timeouts, refused connections
            result = type(exc).__name__
            self.metrics.registration_updates.labels(op, result).inc()
            self.last_error = f"{op}: {result}: {exc}"
            raise RegistrationError(self.last_error) from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            text = dns.rcode.to_text(rcode)
            self.metrics.registration_updates.labels(op, text.lower()).inc()
            self.last_error = f"{op}: server answered {text}"
            raise RegistrationError(self.last_error)
        self.metrics.registration_updates.labels(op, "ok").inc()
        self.last_error = None

    async def register(self, *, op: str = "register") -> None:
        """Add (or renew) our SRV record and the target's address record."""
        await self._send(op, register_message(self.instance, self._key))
        if not self.registered:
            log.info(
                "registration: published %s %s", self.instance.srv_name, self.instance.srv_rdata
            )
        self.registered = True
        self.metrics.registered.set(1)

    async def deregister(self) -> None:
        """Remove our SRV record and the target's address record."""
        await self._send("deregister", deregister_message(self.instance, self._key))
        if self.registered:
            log.info("registration: removed %s %s", self.instance.srv_name, self.instance.srv_rdata)
        self.registered = False
        self.metrics.registered.set(0)

    async def run(self, healthy: Healthy) -> None:
        """Register while healthy, renew, deregister when unhealthy or cancelled."""
        loop = asyncio.get_running_loop()
        renew_at = 0.0
        try:
            while True:
                ok = healthy()
                if inspect.isawaitable(ok):
                    ok = await ok
                now = loop.time()
                try:
                    if ok and (not self.registered or now >= renew_at):
                        await self.register(op="renew" if self.registered else "register")
                        renew_at = now + self._renew_s
                    elif not ok and self.registered:
                        await self.deregister()
                except RegistrationError as exc:
                    log.warning("registration: %s", exc)
                await asyncio.sleep(self._check_s)
        finally:
            if self.registered:
                with contextlib.suppress(RegistrationError, TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(self._timeout_s * 2):
                        await self.deregister()

    def start(self, healthy: Healthy) -> None:
        """Run `run(healthy)` as a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(healthy), name="registration")

    async def stop(self) -> None:
        """Stop renewing and remove the record (drain, SIGTERM)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.registered:
            with contextlib.suppress(RegistrationError):
                await self.deregister()
