"""The embedded registry: a small authoritative DNS server over UDP and TCP.

Does I/O (asyncio sockets, the journal file). Answers SRV/A/AAAA (and whatever
else an UPDATE stored) from a `zone.Zone`, with targets' addresses in the
additional section; accepts RFC 2136 UPDATEs, TSIG-signed (RFC 8945) when a key
is set: unsigned updates are REFUSED and badly signed ones get NOTAUTH with the
TSIG error, as BIND does. UDP answers larger than the client's EDNS buffer (512
bytes without EDNS) are sent empty with TC set; over TCP they go whole.
With a journal file the leased records are written after every change and read
at start, so a restart loses no registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.tsig
import dns.update

from sidecar.discovery.zone import Zone

log = logging.getLogger(__name__)

Keyring = dict[dns.name.Name, dns.tsig.Key]


def parse_tsig_key(text: str, algorithm: str = "hmac-sha256") -> dns.tsig.Key:
    """`name:base64secret` (as `--tsig-key` takes it)."""
    name, sep, secret = text.partition(":")
    if not sep or not name or not secret:
        raise ValueError("expected name:base64secret")
    return dns.tsig.Key(name, secret, algorithm)


def _tsig_error(exc: Exception) -> int:
    if isinstance(exc, dns.message.UnknownTSIGKey | dns.tsig.BadKey | dns.tsig.BadAlgorithm):
        return dns.rcode.BADKEY
    if isinstance(exc, dns.tsig.BadTime):
        return dns.rcode.BADTIME
    return dns.rcode.BADSIG


class RegistryServer:
    """Serves one zone on `host:port` (port 0 picks a free one; UDP and TCP share it)."""

    def __init__(
        self,
        zone: Zone,
        host: str = "127.0.0.1",
        port: int = 5353,
        *,
        keys: Keyring | None = None,
        journal: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zone
        self.host = host
        self.port = port
        self.keys = keys or None
        self.journal = journal
        self.clock = clock
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        if journal is not None and journal.exists():
            restored = zone.load(json.loads(journal.read_text() or "{}"), clock())
            log.info("journal %s: %d records restored", journal, restored)

    # -- protocol ----------------------------------------------------------------

    def handle(self, wire: bytes, *, max_size: int | None) -> bytes | None:
        """One request in, one response out (None: drop). `max_size` None means TCP."""
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except Exception:
            return self._formerr(wire)
        if query.flags & dns.flags.QR:
            return None
        tsig_error = 0
        if query.had_tsig:
            try:
                if self.keys is None:
                    raise dns.message.UnknownTSIGKey("no keys")  # type: ignore[no-untyped-call]
                query = dns.message.from_wire(wire, keyring=self.keys)
            except (
                dns.message.UnknownTSIGKey,
                dns.tsig.BadSignature,
                dns.tsig.BadTime,
                dns.tsig.BadKey,
                dns.tsig.BadAlgorithm,
                dns.exception.FormError,
            ) as exc:
                tsig_error = _tsig_error(exc)
        response = dns.message.make_response(query, our_payload=4096)
        if tsig_error:
            response.set_rcode(dns.rcode.NOTAUTH)
            # RFC 8945 5.3.2: the error goes in a TSIG RR; the MAC cannot be checked anyway.
            keyname = query.keyname or "unknown."
            algorithm = query.keyalgorithm or dns.tsig.default_algorithm
            response.use_tsig(dns.tsig.Key(keyname, b"", algorithm), tsig_error=tsig_error)
            return self._wire(response, max_size)
        opcode = query.opcode()
        if opcode == dns.opcode.QUERY:
            self.zone.expire(self.clock())
            self.zone.answer(query, response)
        elif opcode == dns.opcode.UPDATE:
            assert isinstance(query, dns.update.UpdateMessage)
            if self.keys is not None and not query.had_tsig:
                response.set_rcode(dns.rcode.REFUSED)
            else:
                before = self.zone.serial
                response.set_rcode(self.zone.apply_update(query, self.clock()))
                if self.zone.serial != before:
                    self._changed()
        else:
            response.set_rcode(dns.rcode.NOTIMP)
        return self._wire(response, max_size)

    def _wire(self, response: dns.message.Message, max_size: int | None) -> bytes:
        limit = 65535 if max_size is None else max_size
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    @staticmethod
    def _formerr(wire: bytes) -> bytes | None:
        if len(wire) < 12 or wire[2] & 0x80:  # too short for a header, or a response
            return None
        flags = 0x8000 | (wire[2] & 0x78) << 8 | dns.rcode.FORMERR
        return wire[:2] + flags.to_bytes(2, "big") + bytes(8)

    @staticmethod
    def udp_limit(wire: bytes) -> int:
        try:
            q = dns.message.from_wire(wire, keyring=False, question_only=False)
        except Exception:
            return 512
        return max(512, q.payload) if q.edns >= 0 else 512

    def _changed(self) -> None:
        self._wake.set()
        if self.journal is None:
            return
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        tmp.write_text(json.dumps(self.zone.dump()))
        os.replace(tmp, self.journal)

    # -- sockets -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                out = server.handle(data, max_size=server.udp_limit(data))
                if out is not None:
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        for _ in range(20):  # port 0: find one free for UDP and TCP alike
            transport, _p = await loop.create_datagram_endpoint(
                Udp, local_addr=(self.host, self.port)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                transport.close()
                if self.port:
                    raise
                continue
            self._udp, self.port = transport, port
            break
        else:
            raise OSError("no free port for UDP and TCP")
        self._expirer = asyncio.create_task(self._expire_loop())

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), 30)
                data = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), 30)
                out = self.handle(data, max_size=None)
                if out is None:
                    continue
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _expire_loop(self) -> None:
        while True:
            if self.zone.expire(self.clock()):
                self._changed()
            nxt = self.zone.next_expiry()
            delay = 60.0 if nxt is None else min(60.0, max(0.05, nxt - self.clock()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def stop(self) -> None:
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
