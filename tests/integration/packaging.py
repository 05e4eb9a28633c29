"""The build as a user gets it: a clean copy of the repository, the Dockerfile's build
context and wheel step, a fresh virtualenv outside the repository.

Does I/O (git, copies, pip, processes). conftest.py builds one wheel per test session
from these, shared by the Dockerfile test and the installed-wheel tests: the build
compiles the per-request modules (~50 s), once.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
Instruction = tuple[str, str]


def run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """Run to completion (in `env`, else this process's environment); fail with its
    output unless it exits 0."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def outside_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no active virtualenv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def clean_copy(dest: Path) -> Path:
    """The files git tracks, as a fresh clone has them (with any uncommitted edits to
    them): nothing generated (stubs, compiled modules, build folders) or untracked."""
    listed = run(["git", "ls-files", "-z"], ROOT).split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is gone from a clone too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out: list[list[Instruction]] = []
    build_args: dict[str, str] = {}  # ARGs before the first FROM, with their defaults
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        if op.upper() == "ARG" and not out:
            name, _, default = arg.partition("=")
            build_args[name.strip()] = default.strip()
            continue
        if op.upper() == "FROM":
            out.append([])
            for name, default in build_args.items():
                arg = arg.replace("${" + name + "}", default)
        out[-1].append((op.upper(), " ".join(arg.split())))
    return out


def args(stage: list[Instruction], op: str) -> list[str]:
    return [arg for o, arg in stage if o == op]


def build_steps() -> list[str]:
    """The build stage's RUN commands, split at `&&`."""
    return [s.strip() for r in args(stages()[0], "RUN") for s in r.split("&&")]


def docker_context(clean: Path, dest: Path) -> Path:
    """The build stage's WORKDIR after its COPY lines, taken from a clean copy: a file the
    build needs and the Dockerfile forgets to copy is missing here too."""
    build = stages()[0]
    workdir = args(build, "WORKDIR")[0]
    for copy in args(build, "COPY"):
        *sources, target = copy.split()
        into = dest / os.path.relpath(os.path.join(workdir, target), workdir)
        for name in sources:
            if (clean / name).is_dir():
                shutil.copytree(clean / name, into)
            else:  # a file into a folder keeps its own name, as COPY does
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(clean / name, into / Path(name).name)
    return dest


def build_wheel(context: Path, wheels: Path) -> Path:
    """The build stage's wheel step, run in `context` with `wheels` for /wheels. Without
    --no-cache-dir: the image has no use for pip's cache, a test run does (the build
    environment's requirements come from it)."""
    step = next(s for s in build_steps() if " wheel " in s)
    cmd = shlex.split(step.replace("/wheels", str(wheels)))
    assert cmd[0] == "pip", step  # the image's own pip, as `pip install .` would run it
    cmd = [sys.executable, "-m", "pip", *(a for a in cmd[1:] if a != "--no-cache-dir")]
    run(cmd, context, timeout=540)  # ~50 s on a quiet 2-core machine; 5-8x that when busy
    (wheel,) = wheels.glob("*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A new virtualenv with the wheel and its dependencies (from pip's cache where it
    has them), as the build stage's last step and a user's `pip install` make one."""
    run([sys.executable, "-m", "venv", str(path)], path.parent, timeout=120)
    pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "-q", str(wheel)], path.parent, timeout=400, env=outside_env())
    return path
