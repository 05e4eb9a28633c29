"""DNS servers for tests: BIND 9, the embedded registry, and a rogue server.

Shared by the discovery, registration and chaos tests. `BindServer` and
`RegistryProcess` are real processes on a free loopback port with the same zone
(`example.net.`) and TSIG key, so one test body runs against both; both can be
killed and restarted on the same port with their data (BIND's .jnl journal, the
registry's --journal). `RogueDns` is an in-process UDP server that answers
correctly until told to misbehave. Helpers send TSIG-signed RFC 2136 updates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from services import ports

ROOT = Path(__file__).resolve().parent.parent
ZONE = "example.net."
KEY_NAME = "sidecar-test."
KEY_SECRET = base64.b64encode(b"a test secret of thirty-two bytes").decode()
NAMED = shutil.which("named") or "/usr/sbin/named"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now (DNS wants both on one port)."""
    return ports.free_port(host, udp=True)


def tsig_key(secret: str = KEY_SECRET, name: str = KEY_NAME) -> dns.tsig.Key:
    return dns.tsig.Key(name, secret, "hmac-sha256")


@dataclass(frozen=True)
class Srv:
    """An SRV record plus the address its target should have (None: no A record)."""

    priority: int
    weight: int
    port: int
    target: str  # absolute, or "." for not available
    address: str | None = "127.0.0.1"


class ProcessDnsServer:
    """Common part of BIND and the registry: a process, a port, signed updates."""

    kind = "?"
    host = "127.0.0.1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: named logs every updated RR and would block on a full pipe.
        self.log = workdir / f"{self.kind}.log"
        self.zone = ZONE
        self.key = tsig_key()

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        self.proc = self._spawn()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.log.read_text(errors="replace")
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: {out[-2000:]}")
            with contextlib.suppress(Exception):
                q = dns.message.make_query(self.zone, "SOA")
                r = dns.query.udp(q, self.host, port=self.port, timeout=0.2)
                if r.rcode() == dns.rcode.NOERROR and r.answer:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer on {self.nameserver}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: as a crash would). Data stays in workdir."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- RFC 2136 helpers -------------------------------------------------------

    def send(self, msg: dns.update.UpdateMessage) -> dns.rcode.Rcode:
        return dns.query.tcp(msg, self.host, port=self.port, timeout=5).rcode()

    def update(
        self, key: dns.tsig.Key | None = None, zone: str | None = None
    ) -> dns.update.UpdateMessage:
        key = key or self.key
        return dns.update.UpdateMessage(zone or self.zone, keyring=key, keyname=key.name)

    def set_srv(self, name: str, records: Sequence[Srv], ttl: int = 30) -> None:
        """Replace the SRV set at `name` and the targets' A records."""
        msg = self.update()
        msg.delete(name, "SRV")
        for rec in records:
            msg.add(name, ttl, "SRV", f"{rec.priority} {rec.weight} {rec.port} {rec.target}")
            if rec.address is not None and rec.target != ".":
                msg.replace(rec.target, ttl, "A", rec.address)
        rcode = self.send(msg)
        assert rcode == dns.rcode.NOERROR, dns.rcode.to_text(rcode)

    def delete_name(self, name: str) -> None:
        msg = self.update()
        msg.delete(name)
        assert self.send(msg) == dns.rcode.NOERROR

    def query(self, name: str, rdtype: str = "SRV") -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        r = dns.query.udp(q, self.host, port=self.port, timeout=2)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, self.host, port=self.port, timeout=2)
        return r

    def srv_set(self, name: str) -> set[tuple[int, int, int, str]]:
        r = self.query(name)
        rrset = r.get_rrset(r.answer, dns.name.from_text(name), 1, dns.rdatatype.SRV)
        if rrset is None:
            return set()
        return {(rd.priority, rd.weight, rd.port, rd.target.to_text()) for rd in rrset}


class BindServer(ProcessDnsServer):
    """BIND 9 (`named -g`) as an authoritative primary for example.net."""

    kind = "bind"

    def __init__(
        self, workdir: Path, *, minimal_responses: bool = False, zones: Sequence[str] = ()
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)
        self.minimal_responses = minimal_responses
        # example.net first (the default zone), then any others a test serves (a platform's
        # own: cluster.local, consul), each updatable with the same key.
        self.zones = ["example.net", *(z.rstrip(".") for z in zones)]
        for zone in self.zones:
            (workdir / f"{zone}.db").write_text(
                "$TTL 30\n"
                f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 5\n"
                f"@ IN NS ns.{zone}.\n"
                "ns IN A 127.0.0.1\n"
            )

    def _conf(self) -> str:
        d = self.workdir
        return f"""
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    max-records-per-type 0;
    minimal-responses {"yes" if self.minimal_responses else "no"};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{KEY_SECRET}"; }};
""" + "".join(
            f"""zone "{zone}" {{
    type primary;
    file "{d}/{zone}.db";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"""
            for zone in self.zones
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        conf = self.workdir / "named.conf"
        conf.write_text(self._conf())
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [NAMED, "-g", "-4", "-n", "1", "-c", str(conf)], stdout=log, stderr=log
            )


class RegistryProcess(ProcessDnsServer):
    """`sidecar registry` with the same zone and key, journaling to workdir."""

    kind = "registry"

    def __init__(
        self, workdir: Path, *, minimal_responses: bool = False, lease_factor: float = 2.0
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)
        self.extra = ["--lease-factor", str(lease_factor)]
        if minimal_responses:
            self.extra.append("--minimal-responses")
        self.journal: Path | None = workdir / "registry.journal"

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "sidecar",
            "registry",
            "--listen",
            self.nameserver,
            "--zone",
            self.zone,
            "--tsig-key",
            f"{KEY_NAME}:{KEY_SECRET}",
            *self.extra,
        ]
        if self.journal is not None:
            cmd += ["--journal", str(self.journal)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


def make_server(kind: str, workdir: Path, **kwargs: object) -> ProcessDnsServer:
    cls = {"bind": BindServer, "registry": RegistryProcess}[kind]
    server = cls(workdir, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


# -- a misbehaving server -------------------------------------------------------

ROGUE_MODES = (
    "good",  # a correct answer from `records`
    "malformed",  # random bytes
    "truncated_no_tc",  # a correct answer cut in half, TC not set
    "wrong_id",  # a correct answer with another message ID
    "wrong_type",  # NOERROR with A records instead of SRV
    "oversized",  # a 60 KB datagram of header + junk claiming thousands of records
    "servfail",
    "refused",
    "silent",  # no answer at all
    "tc_no_tcp",  # TC set; nothing listens on TCP
)


class RogueDns(asyncio.DatagramProtocol):
    """A UDP-only server whose behaviour the test sets through `mode`."""

    def __init__(self, records: Iterable[Srv] = (), ttl: int = 1) -> None:
        self.mode = "good"
        self.records = list(records)
        self.ttl = ttl
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0
        self.port = 0

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _good(self, q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        qname = q.question[0].name
        if q.question[0].rdtype == dns.rdatatype.SRV:
            texts = [f"{s.priority} {s.weight} {s.port} {s.target}" for s in self.records]
            if texts:
                r.answer.append(dns.rrset.from_text_list(qname, self.ttl, "IN", "SRV", texts))
            for s in self.records:
                if s.address:
                    r.additional.append(
                        dns.rrset.from_text(s.target, self.ttl, "IN", "A", s.address)
                    )
        return r

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.queries += 1
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return
        mode = self.mode
        if mode == "silent":
            return
        out: bytes
        if mode == "good":
            out = self._good(q).to_wire()
        elif mode == "malformed":
            out = data[:2] + os.urandom(40)
        elif mode == "truncated_no_tc":
            wire = self._good(q).to_wire()
            out = wire[: max(13, len(wire) // 2)]
        elif mode == "wrong_id":
            r = self._good(q)
            r.id = (q.id + 1) % 65536
            out = r.to_wire()
        elif mode == "wrong_type":
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", "10.9.9.9"))
            out = r.to_wire()
        elif mode == "oversized":
            header = data[:2] + b"\x84\x00" + b"\x00\x01" + b"\xff\xff" * 3
            out = header + data[12:] + os.urandom(60000)
        elif mode in ("servfail", "refused"):
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL if mode == "servfail" else dns.rcode.REFUSED)
            out = r.to_wire()
        elif mode == "tc_no_tcp":
            r = dns.message.make_response(q)
            r.flags |= dns.flags.TC
            out = r.to_wire()
        else:
            raise AssertionError(mode)
        self.transport.sendto(out, addr)
