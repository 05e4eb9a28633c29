"""The Dockerfile's build stage, run without Docker: its COPYs into a temp dir, its stub
step (scripts/gen-stubs, the command `make proto` runs too), its wheel build, then the
wheel installed with `pip install --target` and `sidecar --version` run from there.
The runtime stage is checked as text: non-root user, `ENTRYPOINT ["sidecar"]`,
`STOPSIGNAL SIGTERM`, a HEALTHCHECK on the admin `/live` at the config's default port."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sidecar import __version__, native
from sidecar.config import Admin, Inbound

ROOT = Path(__file__).resolve().parents[2]
PURE = bool(os.environ.get("SIDECAR_PURE_PYTHON"))  # the build compiles nothing (setup.py)
pytestmark = pytest.mark.timeout(180)

Instruction = tuple[str, str]


def stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        if op.upper() == "FROM":
            out.append([])
        out[-1].append((op.upper(), " ".join(arg.split())))
    return out


def args(stage: list[Instruction], op: str) -> list[str]:
    return [arg for o, arg in stage if o == op]


def run(cmd: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_build_stage_makes_a_working_wheel(tmp_path: Path) -> None:
    """The build stage's own steps, in a temp dir, give a wheel with sidecar, services,
    music and meshtest and a `sidecar` console script that runs from the install target."""
    build = stages()[0]
    workdir = args(build, "WORKDIR")[0]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/__pycache__", "**/*.so", "sidecar/_native.json"} <= set(ignored)
    src = tmp_path / "src"
    src.mkdir()
    # The build context, exactly as the COPY lines take it: a file the build needs and
    # the Dockerfile forgets to copy fails here.
    for copy in args(build, "COPY"):
        *sources, dest = copy.split()
        target = src / os.path.relpath(os.path.join(workdir, dest), workdir)
        for name in sources:
            if (ROOT / name).is_dir():
                # what .dockerignore keeps out: caches, and a local build of the compiled modules
                ignore = shutil.ignore_patterns("__pycache__", *native.BUILT)
                shutil.copytree(ROOT / name, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)

    # The stub step: the same script as `make proto`, given an interpreter with the tools
    # (the image's /opt/tools venv; here the test's own, which has them as dev extras).
    steps = [s.strip() for r in args(build, "RUN") for s in r.split("&&")]
    gen = next((s for s in steps if s.startswith("scripts/gen-stubs")), None)
    assert gen is not None, "the build stage does not make stubs with scripts/gen-stubs"
    tools_python = shlex.split(gen)[1]
    make = (ROOT / "Makefile").read_text()
    assert "\tscripts/gen-stubs $(BIN)/python\n" in make, "make proto runs another command"
    run(["scripts/gen-stubs", sys.executable], src)
    assert (src / "music/playlist/v1/playlist_pb2_grpc.py").is_file()
    assert (src / "music/playlist/v1/__init__.py").is_file()

    # The image's stub tools are the dev extras' pins, so both generate the same stubs.
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = next(s for s in steps if "grpcio-tools" in s)
    for tool in ("grpcio-tools", "mypy-protobuf"):
        spec = next(d for d in dev["dev"] if d.startswith(tool))
        assert f'"{spec}"' in pins, f"Dockerfile pins {tool} unlike pyproject ({spec})"

    # The wheel step, with the image's paths swapped for the temp dir's.
    wheel_step = next(s for s in steps if " wheel " in s)
    cmd = shlex.split(wheel_step.replace("/wheels", str(tmp_path / "wheels")))
    assert cmd[0] == str(Path(tools_python).parent / "pip")
    run([sys.executable, "-m", "pip", *cmd[1:]], src)
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names}
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    assert {"sidecar", "services", "music", "meshtest"} <= tops, tops
    assert "music/playlist/v1/playlist_pb2_grpc.py" in names
    assert "meshtest/echo/v1/echo_pb2.py" in names
    # the per-request modules compiled (this machine has a C compiler, as the build stage
    # does), with the record of the sources they came from; none with SIDECAR_PURE_PYTHON
    recorded = "sidecar/_native.json" in names
    assert recorded == any(n.startswith("sidecar/_native__mypyc.") for n in names), names
    assert recorded == (not PURE), names
    assert re.search(r"\[console_scripts\]\s*\nsidecar = sidecar\.cli:main", scripts), scripts

    # Installed from the wheel alone (the runtime dependencies come from the test's venv).
    target = tmp_path / "target"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        tmp_path,
    )
    env = {"PYTHONPATH": str(target)}
    where = run(
        [
            sys.executable,
            "-c",
            "import json, sidecar, music.playlist.v1.playlist_pb2_grpc as m; "
            "from sidecar import native; "
            "print(json.dumps([sidecar.__file__, m.__file__, native.compiled()]))",
        ],
        tmp_path,
        **env,
    )
    *files, compiled = json.loads(where)
    assert all(Path(p).is_relative_to(target) for p in files), where
    assert compiled == (not PURE), "the installed modules are not the ones built"
    version = run([str(target / "bin" / "sidecar"), "--version"], tmp_path, **env)
    assert version.strip() == f"sidecar {__version__}"


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
