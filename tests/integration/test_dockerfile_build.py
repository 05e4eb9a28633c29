"""The Dockerfile's build stage, run without Docker: its COPYs over a clean copy of the
repository into a temp dir and its wheel step (the session's one wheel, conftest.py
`built`); test_installed_wheel.py installs that wheel into a fresh venv, as the stage's
last step does, and runs it. The runtime stage is checked as text: non-root user,
`ENTRYPOINT ["sidecar"]`, `STOPSIGNAL SIGTERM`, a HEALTHCHECK on the admin `/live` at
the config's default port."""

from __future__ import annotations

import json
import os
import re
import zipfile

import pytest

from sidecar.config import Admin, Inbound
from tests.integration.conftest import Built
from tests.integration.packaging import ROOT, args, build_steps, stages

PURE = bool(os.environ.get("SIDECAR_PURE_PYTHON"))  # the build compiles nothing (setup.py)
pytestmark = pytest.mark.timeout(720)  # the first test to ask for the wheel builds it


def test_build_stage_makes_a_wheel_with_stubs(built: Built) -> None:
    """The build stage's own steps give a wheel with sidecar, services, the stubs the
    build generated (music, meshtest, with .pyi) and a `sidecar` console script."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/__pycache__", "**/*.so", "sidecar/_native.json", "music"} <= set(ignored)
    # One way to make stubs: the wheel build (setup.py's build_py); no step of its own.
    steps = build_steps()
    assert not any("stubs" in s or "grpc_tools" in s for s in steps), steps
    assert not [f for f in built.context_files if f.startswith(("music/", "meshtest/"))]
    with zipfile.ZipFile(built.wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names}
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    assert {"sidecar", "services", "music", "meshtest"} <= tops, tops
    for stub in ("music/playlist/v1/playlist_pb2", "meshtest/echo/v1/echo_pb2"):
        for suffix in (".py", ".pyi", "_grpc.py", "_grpc.pyi"):
            assert stub + suffix in names, (stub + suffix, names)
    assert {"music/py.typed", "music/playlist/v1/__init__.py"} <= set(names)
    # the per-request modules compiled (this machine has a C compiler, as the build stage
    # does), with the record of the sources they came from; none with SIDECAR_PURE_PYTHON
    recorded = "sidecar/_native.json" in names
    assert recorded == any(n.startswith("sidecar/_native__mypyc.") for n in names), names
    assert recorded == (not PURE), names
    assert re.search(r"\[console_scripts\]\s*\nsidecar = sidecar\.cli:main", scripts), scripts


def test_runtime_stage() -> None:
    """The runtime stage: slim, non-root, `sidecar` as entry point, SIGTERM to stop, and a
    health check on `/live` at the admin's default address; it exposes the inbound port."""
    built = stages()
    assert len(built) >= 2, "multi-stage"
    runtime = built[-1]
    assert args(runtime, "FROM")[0].endswith("-slim")
    assert args(runtime, "COPY")[0].startswith("--from=")
    (user,) = args(runtime, "USER")
    assert user not in ("root", "0")
    assert json.loads(args(runtime, "ENTRYPOINT")[0]) == ["sidecar"]
    assert args(runtime, "STOPSIGNAL") == ["SIGTERM"]
    (health,) = args(runtime, "HEALTHCHECK")
    assert f"http://{Admin().listen}/live" in health
    assert Inbound().listen.rpartition(":")[2] in args(runtime, "EXPOSE")[0].split()
