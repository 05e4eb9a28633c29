"""Helpers to run echo backends and sidecars as real processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from services.ports import free_port as free_port  # re-exported

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
ECHO = "meshtest.echo.v1.Echo"  # the test echo service


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=_env(), stdout=self._out, stderr=self._out
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._out.close()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(check: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def echo_process(tmp: Path, name: str = "echo") -> Iterator[tuple[Proc, int]]:
    port = free_port()
    proc = Proc(["-m", "services.echo", "--port", str(port), "--name", name], tmp / f"{name}.log")
    try:
        wait_until(lambda: port_open(port) or proc.popen.poll() is not None, what="echo")
        assert proc.popen.poll() is None, proc.logs()
        yield proc, port
    finally:
        proc.stop()


class Sidecar:
    def __init__(self, proc: Proc, config: dict[str, Any], admin: int) -> None:
        self.proc = proc
        self.config = config
        self.admin = admin

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin}{path}"

    def get_json(self, path: str) -> Any:
        status, body = http("GET", self.url(path))
        assert status == 200, (status, body)
        return json.loads(body)

    def port(self, listener: str) -> int:
        return int(self.config[listener]["listen"].rpartition(":")[2])


@contextmanager
def sidecar_process(
    tmp: Path, name: str, config: dict[str, Any], wait: str = "/ready"
) -> Iterator[Sidecar]:
    admin = free_port()
    config = {**config, "admin": {"listen": f"127.0.0.1:{admin}"}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = Proc(["-m", "sidecar", "run", "-c", str(path)], tmp / f"{name}.log")
    sidecar = Sidecar(proc, config, admin)
    try:
        wait_until(
            lambda: proc.popen.poll() is not None or http("GET", sidecar.url(wait))[0] == 200,
            what=f"sidecar {name} ready",
        )
        assert proc.popen.poll() is None, proc.logs()
        yield sidecar
    finally:
        proc.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def echo_admin(addr: str, **knobs: Any) -> dict[str, Any]:
    """An echo backend's stats, after setting its instance knobs (services/echo.py)."""
    import grpc

    from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc

    key = "x-echo-control" if knobs else "x-echo-stats"
    async with grpc.aio.insecure_channel(addr) as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(), metadata=((key, json.dumps(knobs)),), timeout=5
        )
    return dict(json.loads(reply.payload))
