"""Generates the Python stubs of `.proto` files: `_pb2.py`, `_pb2_grpc.py` and their
mypy-protobuf `.pyi` types, in packages (an `__init__.py` in every folder, `py.typed`
at the top so type checkers read the `.pyi` files of an installed package).

Does I/O (reads the protos, writes the stubs, runs protoc and its plugins in a child
process, so protoc's messages can be read and shown). Only the standard library at
import time, because setup.py loads this file on its own, in a build environment that
has grpcio-tools and mypy-protobuf (the build requirements) and none of the package's
dependencies. The one generator of stubs: the wheel build (setup.py's `build_py`, into
the wheel; the Dockerfile builds a wheel), `make proto` (into the source tree) and
`sidecar stubs PROTO_DIR... --out DIR` (a user's own protos) all run it.

`sidecar stubs` regenerates only what changed: `OUT/.sidecar-stubs.json` records each
proto's SHA-256 (and this generator's version); a proto whose text is unchanged keeps
its stubs, a removed proto's stubs are deleted. Each proto is compiled alone (its
imports are found through the include paths), because a `_pb2.py` holds only its own
file's descriptor and imports its dependencies' modules.

    python sidecar/stubs.py [PROTO_DIR [OUT_DIR]]   # defaults: proto/ and the project root
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# protoc plugin name -> the mypy-protobuf function it runs (its console scripts)
PLUGINS = {"protoc-gen-mypy": "main", "protoc-gen-mypy_grpc": "grpc"}
STAMP = ".sidecar-stubs.json"
GENERATOR = 2  # bump when the outputs change for the same proto text
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
MISSING = (
    "sidecar stubs needs grpcio-tools and mypy-protobuf in this environment: "
    "pip install 'grpc-sidecar[stubs]'"
)


class StubsError(RuntimeError):
    """Generation failed; the message is protoc's, one `file:line: message` per line."""


def protos(proto_dir: Path) -> list[Path]:
    return sorted(proto_dir.rglob("*.proto"))


def packages(proto_dir: Path) -> list[str]:
    """The top-level packages the protos generate (`proto/music/...` -> `music`)."""
    return sorted({p.relative_to(proto_dir).parts[0] for p in protos(proto_dir)})


def _plugin(folder: Path, name: str, function: str) -> Path:
    """A protoc plugin that runs mypy-protobuf with this interpreter. Not the console
    script on PATH: that may belong to another environment, or be missing from PATH in
    an isolated build environment."""
    path = folder / name
    code = f"import sys; from mypy_protobuf.main import {function}; sys.exit({function}())"
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "{code}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


_POSITION = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.*)$")


def protoc_messages(stderr: str) -> list[str]:
    """protoc's stderr as `file:line: message` lines (the column dropped; lines without
    a position, e.g. `x.proto: File not found.`, kept as they are). Pure."""
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _POSITION.match(line)
        out.append(f"{m['file']}:{m['line']}: {m['msg']}" if m else line)
    return out


def _check_tools() -> None:
    # build requirements (and the `stubs` extra), not runtime dependencies
    if any(importlib.util.find_spec(m) is None for m in ("grpc_tools", "mypy_protobuf")):
        raise StubsError(MISSING)


def _protoc(includes: list[Path], out_dir: Path, files: list[Path]) -> None:
    """Run protoc (in a child process: its errors are read, not printed by C code)."""
    _check_tools()
    # protoc's own includes (google/protobuf/*.proto), as `python -m grpc_tools.protoc` adds
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    with tempfile.TemporaryDirectory(prefix="sidecar-stubs-") as tmp:
        plugins = [f"--plugin={n}={_plugin(Path(tmp), n, f)}" for n, f in PLUGINS.items()]
        argv = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{d}" for d in includes),
            f"-I{well_known}",
            *plugins,
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *(str(f) for f in files),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = protoc_messages(done.stderr) or [f"protoc failed with {done.returncode}"]
        raise StubsError("\n".join(lines))


def _packages_of(out_dir: Path, rels: list[Path]) -> list[Path]:
    """Make every folder holding stubs a package; `py.typed` at each top (PEP 561)."""
    tops = sorted({out_dir / r.parts[0] for r in rels if len(r.parts) > 1})
    for top in tops:
        (top / "py.typed").touch()
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__":
                (folder / "__init__.py").touch()
    return tops


def generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    """Stubs of every `.proto` under `proto_dir`, written under `out_dir`; returns the
    top-level package folders made. Raises StubsError (a RuntimeError) naming protoc's
    failure."""
    files = protos(proto_dir)
    if not files:
        raise StubsError(f"no .proto files under {proto_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _protoc([proto_dir], out_dir, files)
    return _packages_of(out_dir, [f.relative_to(proto_dir) for f in files])


class Result:
    """What `generate_changed` did. A plain class, not a dataclass: setup.py loads this
    file without registering it in sys.modules, which dataclasses need."""

    def __init__(self) -> None:
        self.generated: list[str] = []  # protos (paths relative to their root) compiled
        self.unchanged: list[str] = []
        self.removed: list[str] = []
        self.packages: list[Path] = []


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(rel: str) -> list[str]:
    """The stub files protoc writes for the proto at `rel` (relative to its root)."""
    stem = rel.removesuffix(".proto")
    return [stem + suffix for suffix in SUFFIXES]


def generate_changed(proto_dirs: list[Path], out_dir: Path) -> Result:
    """Stubs of every `.proto` under `proto_dirs` (each one an include root), compiling
    only the protos whose text changed since the last run into `out_dir`."""
    found: dict[str, tuple[Path, str]] = {}  # relative path -> (file, digest)
    for root in proto_dirs:
        if not root.is_dir():
            raise StubsError(f"{root}: not a folder")
        for f in protos(root):
            rel = f.relative_to(root).as_posix()
            if rel in found:
                raise StubsError(f"{f}: {rel} is also under {found[rel][0]}")
            found[rel] = (f, _digest(f))
    if not found:
        raise StubsError(f"no .proto files under {', '.join(map(str, proto_dirs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_path = out_dir / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
        old: dict[str, str] = stamp["protos"] if stamp.get("generator") == GENERATOR else {}
    except (OSError, ValueError, KeyError, TypeError):
        old = {}
    result = Result()
    for rel in sorted(set(old) - set(found)):
        for name in outputs(rel):
            (out_dir / name).unlink(missing_ok=True)
        result.removed.append(rel)
    for rel, (_, digest) in sorted(found.items()):
        fresh = old.get(rel) == digest and all((out_dir / n).exists() for n in outputs(rel))
        (result.unchanged if fresh else result.generated).append(rel)
    if result.generated:
        _protoc(list(proto_dirs), out_dir, [found[rel][0] for rel in result.generated])
    result.packages = _packages_of(out_dir, [Path(rel) for rel in found])
    record = {"generator": GENERATOR, "protos": {rel: d for rel, (_, d) in found.items()}}
    stamp_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return result


def cli(proto_dirs: list[str], out: str) -> int:
    """`sidecar stubs PROTO_DIR... --out DIR`: exit 0, or 1 with protoc's messages."""
    out_dir = Path(out).resolve()
    try:
        result = generate_changed([Path(d).resolve() for d in proto_dirs], out_dir)
    except StubsError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    names = ", ".join(os.path.relpath(t, out_dir) for t in result.packages) or "-"
    print(
        f"sidecar stubs: {len(result.generated)} generated, {len(result.unchanged)} unchanged"
        + (f", {len(result.removed)} removed" if result.removed else "")
        + f" -> {names} in {out_dir}"
    )
    return 0


def main(argv: list[str]) -> int:
    proto_dir = Path(argv[0]) if argv else PROJECT / "proto"
    out_dir = Path(argv[1]) if len(argv) > 1 else PROJECT
    try:
        tops = generate(proto_dir.resolve(), out_dir.resolve())
    except StubsError as exc:
        print(f"sidecar stubs: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(os.path.relpath(t, out_dir) for t in tops)
    print(f"sidecar stubs: {len(protos(proto_dir))} protos -> {names} in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
