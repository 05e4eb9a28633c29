"""The demo when a process of the mesh cannot start: it stops everything and shows the
cause at once (the process's command line and the end of its log) and where the logs
are, keeping its working folder, a temporary one too.

Two real failures a user can meet: the registry's port taken by another program
(`--registry-port`), and a database file in a kept `--workdir` that is not a database.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.services.test_demo_direct import ROOT, SMALL, survivors

pytestmark = pytest.mark.timeout(90)


def demo(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    demo_id = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "services.demo", "--demo-id", demo_id, *SMALL, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert survivors(demo_id) == []
    return done


def kept_folder(out: str) -> Path:
    match = re.search(r"^kept the working folder \(configs, databases, logs\): (.+)$", out, re.M)
    assert match, out
    return Path(match.group(1))


def test_a_taken_registry_port_keeps_the_temp_folder_and_shows_the_log(tmp_path: Path) -> None:
    """The registry cannot listen: exit 2, its command and its log's last lines printed,
    and the temporary working folder kept with that log in it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))  # another program's DNS server, say
        port = taken.getsockname()[1]
        done = demo(tmp_path, "--duration", "5", "--registry-port", str(port), TMPDIR=str(tmp_path))
    out = done.stdout
    assert done.returncode == 2, out + done.stderr
    assert "demo failed to start: registry exited with 1" in out, out
    assert f"  command: {sys.executable} -m sidecar registry --listen 127.0.0.1:{port}" in out
    assert re.search(
        r"^    sidecar registry: cannot listen on .*Address already in use$", out, re.M
    )
    folder = kept_folder(out)
    assert folder.parent == tmp_path and folder.name.startswith("sidecar-demo-"), folder
    log = folder / "logs" / "registry.log"
    assert f"  last lines of {log}:" in out
    assert "Address already in use" in log.read_text()


def test_a_service_that_fails_shows_its_command_and_log_tail(tmp_path: Path) -> None:
    """A data service cannot open its database: its command line and the end of its
    traceback are printed, and the folder given with --workdir is named."""
    workdir = tmp_path / "w"
    (workdir / "lon3").mkdir(parents=True)
    (workdir / "lon3" / "playlist.db").write_text("not a database\n")
    done = demo(tmp_path, "--duration", "5", "--workdir", str(workdir))
    out = done.stdout
    assert done.returncode == 2, out + done.stderr
    assert "demo failed to start: playlist-lon3-0 exited with 1" in out, out
    assert f"  command: {sys.executable} -m services.playlist --port " in out
    assert f"--db {workdir / 'lon3' / 'playlist.db'}" in out
    assert f"  last lines of {workdir / 'logs' / 'playlist-lon3-0.log'}:" in out
    assert re.search(r"^    sqlite3\.DatabaseError: file is not a database$", out, re.M), out
    assert kept_folder(out) == workdir
