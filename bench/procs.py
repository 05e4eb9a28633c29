"""Starting, watching and stopping the processes under test. Does I/O.

CPU is read from /proc/PID/stat (utime + stime, in clock ticks: 10 ms here, so a
few-second run at thousands of req/s resolves well under 1 µs per request) summed
over the process and its descendants, so a proxy that forks workers is counted
whole. RSS is VmRSS from /proc/PID/status, summed the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.ports import free_port as free_port  # re-exported

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Unavailable(Exception):
    """A case cannot run here (tool missing, feature not implemented): skip it, say why."""


class StartFailed(Exception):
    """A process that should have started did not: a real failure, not a skip."""


def _descendants(pid: int) -> list[int]:
    out = [pid]
    i = 0
    while i < len(out):
        task_dir = Path(f"/proc/{out[i]}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    out += [int(c) for c in (task / "children").read_text().split()]
        i += 1
    return out


def cpu_seconds(pid: int) -> float:
    """user + sys CPU seconds of pid and its live descendants."""
    ticks = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            # comm (field 2) may hold spaces; fields after its ')' are fixed.
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS in KiB of pid and its live descendants."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until 127.0.0.1:port accepts; raise StartFailed if proc exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartFailed(f"exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StartFailed(f"not listening on {port} after {timeout_s:.0f}s")


@dataclass
class Managed:
    """One process under test, with its log file; `stop()` is idempotent."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    idle_rss_kib: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start(
    name: str,
    cmd: list[str],
    ports: list[int],
    workdir: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 15.0,
) -> Managed:
    """Spawn cmd (stdout+stderr to workdir/name.log) and wait for every port to accept."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env
        )
    managed = Managed(name, proc, log)
    try:
        for port in ports:
            wait_port(port, proc, timeout_s)
    except StartFailed as exc:
        managed.stop()
        raise StartFailed(f"{name}: {exc}; log: {managed.log_tail()}") from None
    managed.idle_rss_kib = rss_kib(proc.pid)
    return managed
