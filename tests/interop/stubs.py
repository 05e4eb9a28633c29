"""The interop service's Python stubs, generated at test time (never committed).

The protos live in tests/interop/protos/interop_testing/, so the generated modules are
`interop_testing.test_pb2` and friends, not `grpc.testing...`: a top-level `grpc/` folder
would shadow the grpcio package. The wire names come from the files' `package grpc.testing`.
Does I/O (runs protoc into a folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent / "protos"


def generate(out: Path) -> Path:
    """Write the stubs under `out` (put `out` on sys.path / PYTHONPATH to import them)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p) for p in (PROTOS / "interop_testing").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ],
        check=True,
    )
    (out / "interop_testing" / "__init__.py").touch()
    return out


def use(stubs: str) -> None:
    """Make generated stubs importable in this process (the clients' and servers' --stubs)."""
    if stubs not in sys.path:
        sys.path.insert(0, stubs)
