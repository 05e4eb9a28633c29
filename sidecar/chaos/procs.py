"""Processes a chaos run starts, each in a session of its own, and proof none survives.

Does I/O (processes, /proc, loopback HTTP). Every process gets `SIDECAR_CHAOS_RUN=<id>`
in its environment, so `leaked(run_id)` finds a survivor by scanning /proc whoever
started it (an app's own children included, as they inherit the environment).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

RUN_ENV = "SIDECAR_CHAOS_RUN"
# The admin token of sidecars whose admin listens off loopback (in a namespace): their
# mutating endpoints need it (sidecar/admin/server.py). Every admin request carries it.
ADMIN_TOKEN = "sidecar-chaos-run-admin-token"


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick), and not one in `taken`
    (handed out already but maybe not bound yet: the kernel may pick it again); the
    port is added to `taken`."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1")


class Proc:
    """A command run in its own session (a group of its own: signals reach only it)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        run_id: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {}), RUN_ENV: run_id},
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGCONT (a stopped group cannot die of SIGTERM) then SIGKILL; reaped."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._out.close()

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"Proc({self.name}, pid {self.pid}, {shlex.join(self.argv)[:80]})"


def leaked(run_id: str) -> list[str]:
    """Processes of this run still alive (by their marker), zombies excepted."""
    marker = f"{RUN_ENV}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


def kill_marked(run_id: str) -> None:
    """SIGKILL whatever carries this run's marker (an app's stray children)."""
    marker = f"{RUN_ENV}={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One HTTP exchange with a sidecar's admin on loopback; (0, b"") when unreachable."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())
    except (OSError, ValueError):
        return 0, b""
