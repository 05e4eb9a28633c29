"""Generates the Python stubs of `.proto` files: `_pb2.py`, `_pb2_grpc.py` and their
mypy-protobuf `.pyi` types, in packages (an `__init__.py` in every folder, `py.typed`
at the top so type checkers read the `.pyi` files of an installed package).

Does I/O (reads the protos, writes the stubs, runs protoc's plugins). Only the standard
library at import time, because setup.py loads this file on its own, in a build
environment that has grpcio-tools and mypy-protobuf (the build requirements) and none
of the package's dependencies. The one generator of the project's stubs: the wheel
build (setup.py's `build_py`, into the wheel; the Dockerfile builds a wheel) and
`make proto` (into the source tree) both run it.

    python sidecar/stubs.py [PROTO_DIR [OUT_DIR]]   # defaults: proto/ and the project root
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# protoc plugin name -> the mypy-protobuf function it runs (its console scripts)
PLUGINS = {"protoc-gen-mypy": "main", "protoc-gen-mypy_grpc": "grpc"}


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


def generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    """Stubs of every `.proto` under `proto_dir`, written under `out_dir`; returns the
    top-level package folders made. Raises RuntimeError naming protoc's failure."""
    from grpc_tools import protoc  # a build requirement, not a runtime dependency

    files = protos(proto_dir)
    if not files:
        raise RuntimeError(f"no .proto files under {proto_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc's own includes (google/protobuf/*.proto), as `python -m grpc_tools.protoc` adds
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="sidecar-stubs-") as tmp:
        plugins = [f"--plugin={n}={_plugin(Path(tmp), n, f)}" for n, f in PLUGINS.items()]
        argv = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            *plugins,
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *(str(f) for f in files),
        ]
        code = protoc.main(argv)
    if code != 0:
        raise RuntimeError(f"protoc failed with {code}: {shlex.join(argv[1:])}")
    tops = [out_dir / name for name in packages(proto_dir)]
    for top in tops:
        (top / "py.typed").touch()  # PEP 561: the package carries its types (.pyi)
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
    return tops


def main(argv: list[str]) -> int:
    proto_dir = Path(argv[0]) if argv else PROJECT / "proto"
    out_dir = Path(argv[1]) if len(argv) > 1 else PROJECT
    try:
        tops = generate(proto_dir.resolve(), out_dir.resolve())
    except (RuntimeError, ImportError) as exc:
        print(f"sidecar stubs: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(os.path.relpath(t, out_dir) for t in tops)
    print(f"sidecar stubs: {len(protos(proto_dir))} protos -> {names} in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
