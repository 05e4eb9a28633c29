"""Which relay modules are compiled to C, and whether this process runs them compiled.

No I/O beyond reading this package's own files; only the standard library, because
setup.py loads this file on its own (without the package) to learn what to compile.

The modules on a call's per-request path are plain, mypy-strict Python. At install
time setup.py compiles them with mypyc into C extensions that sit beside their source
files (one shared library, `_native__mypyc`, plus one small module per source); Python
imports an extension before a source file of the same name. The source is unchanged and
is what runs when nothing was compiled: no C compiler, or `SIDECAR_PURE_PYTHON=1` at
install time. bench/README.md measures both builds.

A compiled module hides its source, so an edited source would go on running as the old
compiled code. The build records each source's hash (`_native.json`); importing the
package (`check`) refuses compiled modules whose source changed since, and says how to
rebuild (`make native`) or go back to the source (`make pure`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the modules compiled, all in this package: everything a call touches per request
# but relay.py (asyncio protocols, which stay Python) and wiring.py (runs once)
MODULES = (
    "answers",
    "attempts",
    "call",
    "connection",
    "deadlines",
    "drive",
    "forwarding",
    "frames",
    "grpcwire",
    "hpack_codec",
    "request",
    "timers",
)
GROUP = "sidecar.h2relay._native"  # the shared library's module name
RECORD = "_native.json"  # {module: sha256 of its source when it was compiled}


def source_hashes(directory: Path = HERE) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest()
        for name in MODULES
    }


def extensions(directory: Path = HERE) -> list[Path]:
    """The compiled files present in `directory` (none in a pure-Python install)."""
    names = {*MODULES, GROUP.rsplit(".", 1)[1] + "__mypyc"}
    return sorted(p for p in directory.glob("*.so") if p.name.split(".", 1)[0] in names)


def stale(directory: Path = HERE) -> list[str]:
    """Modules whose compiled form no longer matches their source (all of them when
    compiled files are present without a record of what they were built from)."""
    if not extensions(directory):
        return []
    try:
        built = json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return list(MODULES)
    now = source_hashes(directory)
    return [name for name in MODULES if built.get(name) != now[name]]


def compiled() -> bool:
    """Whether this process runs the compiled relay (its modules come from extensions)."""
    files = [
        getattr(importlib.import_module(f"{__package__}.{name}"), "__file__", None)
        for name in MODULES
    ]
    return all(f is not None and not f.endswith(".py") for f in files)


def check(directory: Path = HERE) -> None:
    """Refuse to run compiled modules built from other sources than these."""
    changed = stale(directory)
    if changed:
        raise ImportError(
            f"sidecar/h2relay: the compiled modules are older than their source "
            f"({', '.join(changed)} changed since they were built): run `make native` "
            f"to compile them again, or `make pure` to remove them and run the source"
        )
