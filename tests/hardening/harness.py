"""What every attack test shares: a real `sidecar run` process with both listeners in
front of the echo backend, well-behaved callers on other connections, and the sidecar
process's CPU seconds and RSS measured while an attack runs."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshtest.echo.v1 import echo_pb2
from tests.integration.procs import (
    ECHO,
    Sidecar,
    cpu_seconds,
    free_port,
    http,
    sidecar_process,
)

MiB = 1024 * 1024
LISTENERS = ("inbound", "outbound")


def config(echo_port: int, http2: dict[str, Any]) -> dict[str, Any]:
    """One sidecar with both listeners: outbound routes the echo service to the same
    sidecar's inbound listener, which forwards to the echo app."""
    inbound = free_port()
    return {
        "service": "echo",
        "inbound": {
            "listen": f"127.0.0.1:{inbound}",
            "app": f"127.0.0.1:{echo_port}",
            "health": {"interval_s": 0.5},
            "http2": http2,
        },
        "outbound": {"listen": f"127.0.0.1:{free_port()}", "http2": http2},
        "upstreams": {
            "echo": {
                "grpc_services": [ECHO],
                "endpoints": [f"127.0.0.1:{inbound}"],
                "timeout_ms": 5000,
            }
        },
    }


@contextmanager
def sidecar(tmp: Path, echo_port: int, http2: dict[str, Any]) -> Iterator[Sidecar]:
    with sidecar_process(tmp, "hardened", config(echo_port, http2)) as proc:
        yield proc


def abuse_count(sc: Sidecar, direction: str, kind: str) -> float:
    status, body = http("GET", sc.url("/metrics"))
    assert status == 200
    pattern = rf'^sidecar_h2_abuse_total\{{direction="{direction}",kind="{kind}"\}} (\S+)$'
    found = re.search(pattern, body.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Usage:
    """The sidecar's CPU seconds and RSS (peak, sampled) over an attack."""

    pid: int
    name: str
    cpu: float = 0.0
    wall: float = 0.0
    rss_start: int = 0
    rss_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_start)

    def report(self, units: int, unit: str) -> str:
        per = self.cpu / units * 1e6 if units else 0.0
        return (
            f"[{self.name}] {units} {unit} in {self.wall:.1f} s: sidecar CPU {self.cpu:.2f} s "
            f"({self.cores:.2f} core, {per:.0f} us per {unit.rstrip('s')}), "
            f"RSS {self.rss_start / MiB:.1f} -> peak {self.rss_peak / MiB:.1f} MiB "
            f"(+{self.rss_growth / MiB:.1f})"
        )


@contextmanager
def measured(pid: int, name: str) -> Iterator[Usage]:
    usage = Usage(pid, name, rss_start=rss_bytes(pid))
    usage.rss_peak = usage.rss_start

    def sample() -> None:
        while not usage._stop.wait(0.05):
            usage.rss_peak = max(usage.rss_peak, rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    try:
        yield usage
    finally:
        usage.cpu = cpu_seconds(pid) - cpu0
        usage.wall = time.monotonic() - t0
        usage._stop.set()
        sampler.join()
        usage.rss_peak = max(usage.rss_peak, rss_bytes(pid))


def _call_loop(port: int, stop: Any, ok: Any, failed: Any, errors: Any) -> None:
    """The good caller's process: unary echo calls on one channel until told to stop."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        f"/{ECHO}/Unary",
        request_serializer=echo_pb2.EchoRequest.SerializeToString,
        response_deserializer=echo_pb2.EchoResponse.FromString,
    )
    call(echo_pb2.EchoRequest(payload=b"warm"), timeout=10)  # connected first
    ok.value = 0
    while not stop.is_set():
        try:
            call(echo_pb2.EchoRequest(payload=b"hi"), timeout=5)
            ok.value += 1
        except grpc.RpcError as err:
            failed.value += 1
            if errors.qsize() < 5:
                errors.put(f"{err.code().name}: {err.details()}")
        stop.wait(0.005)
    channel.close()


class GoodCaller:
    """A well-behaved caller on a connection of its own, calling from a process of its
    own (the attacker's Python loop would starve a thread of the GIL) while an attack
    runs on other connections."""

    def __init__(self, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self._ok = ctx.Value("i", -1)
        self._failed = ctx.Value("i", 0)
        self._errors = ctx.Queue()
        self.proc = ctx.Process(
            target=_call_loop,
            args=(port, self.stop, self._ok, self._failed, self._errors),
            daemon=True,
        )
        self.ok = 0
        self.failed: list[str] = []

    def __enter__(self) -> GoodCaller:
        self.proc.start()
        end = time.monotonic() + 20
        while self._ok.value < 0:  # its first call answered
            assert self.proc.is_alive() and time.monotonic() < end, "good caller did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
        self.ok = self._ok.value
        self.failed = ["?"] * self._failed.value
        errors = []
        while not self._errors.empty():
            errors.append(self._errors.get())
        self.failed[: len(errors)] = errors

    def check(self, minimum: int = 20) -> str:
        total = self.ok + len(self.failed)
        assert self.ok >= minimum, f"only {self.ok} good calls: {self.failed[:3]}"
        assert self.ok / total >= 0.99, f"{len(self.failed)} of {total} failed: {self.failed[:3]}"
        return f"good caller: {self.ok}/{total} OK" + (
            f" ({self.failed[0]})" if self.failed else ""
        )
