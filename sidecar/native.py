"""Which modules are compiled to C, and whether this process runs them compiled.

No I/O beyond reading the package's own files; only the standard library, because
setup.py and the Makefile load this file on its own (without the package) to learn
what to compile (`python3 sidecar/native.py` prints the sources).

The modules a relayed call runs per request (the h2relay data plane and the policies it
asks: cluster, balancers, breakers, retries and throttling) are plain, mypy-strict
Python. At install time setup.py compiles them with mypyc into C extensions that sit
beside their source files (one shared library, `sidecar/_native__mypyc`, plus one small
module per source); Python imports an extension before a source file of the same name.
The source is unchanged and is what runs when nothing was compiled: no C compiler, or
`SIDECAR_PURE_PYTHON=1` at install time. bench/README.md measures both builds.

A compiled module hides its source, so an edited source would go on running as the old
compiled code. The build records each source's hash (`_native.json`); importing the
package (`check`, from sidecar/__init__.py) refuses compiled modules whose source
changed since and runs every compiled module from its source instead, saying so in one
line (`make native` rebuilds; `SIDECAR_NATIVE_STRICT=1` refuses to import).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # the sidecar package
# Everything a relayed call runs per request; not what runs once (listeners.py, config,
# discovery). A compiled module checks builtin types at run time where typeshed and
# uvloop disagree (plane.py reads uvloop's server sockets, a list, as Any). A package's
# classes are compiled together: Python classes cannot subclass compiled ones.
MODULES = (
    "balancer.base",
    "balancer.ewma",
    "balancer.p2c",
    "balancer.ring_hash",
    "balancer.round_robin",
    "balancer.tiers",
    "balancer.weighted_random",
    "breaker.breaker",
    "cluster.cluster",
    "endpoint",
    "h2relay.attempt",
    "h2relay.call",
    "h2relay.connection",
    "h2relay.deadline",
    "h2relay.fields",
    "h2relay.frames",
    "h2relay.grpc_client",
    "h2relay.grpcwire",
    "h2relay.hedge",
    "h2relay.hpack_codec",
    "h2relay.local_reply",
    "h2relay.memory",
    "h2relay.plane",
    "h2relay.pool",
    "h2relay.replay",
    "h2relay.request",
    "h2relay.stepper",
    "h2relay.timers",
    "outcome",
    "policy_adapters",
    "retry.backoff",
    "retry.budget",
    "retry.deadline",
    "retry.hedging",
    "retry.limits",
    "retry.policy",
    "retry.throttle",
    "retry.upstream",
    "retry.window",
    "tracing.context",
)
GROUP = "sidecar._native"  # the shared library's module name
RECORD = "_native.json"  # {module: sha256 of its source when it was compiled}
BUILT = ("*.so", RECORD)  # what a build leaves beside the sources (patterns)
LABELS = {True: "compiled (mypyc)", False: "pure Python (not compiled)"}  # as logged


def source(name: str, package: Path = HERE) -> Path:
    return package.joinpath(*name.split(".")).with_suffix(".py")


def source_hashes(package: Path = HERE) -> dict[str, str]:
    return {
        name: hashlib.sha256(source(name, package).read_bytes()).hexdigest() for name in MODULES
    }


def extensions(package: Path = HERE) -> list[Path]:
    """The compiled files present in `package` (none in a pure-Python install)."""
    found: list[Path] = []
    for name in (*MODULES, GROUP.rsplit(".", 1)[1] + "__mypyc"):
        path = source(name, package)
        found += sorted(path.parent.glob(f"{path.stem}.*.so"))
    return found


def stale(package: Path = HERE) -> list[str]:
    """Modules whose compiled form no longer matches their source (all of them when
    compiled files are present without a record of what they were built from)."""
    if not extensions(package):
        return []
    try:
        built = json.loads((package / RECORD).read_text())
    except (OSError, ValueError):
        return list(MODULES)
    now = source_hashes(package)
    return [name for name in MODULES if built.get(name) != now[name]]


def compiled() -> bool:
    """Whether this process runs the compiled modules (imported from extensions; a stale
    build runs its source, see `check`)."""
    files = [getattr(importlib.import_module(f"sidecar.{n}"), "__file__", None) for n in MODULES]
    return all(f is not None and not f.endswith(".py") for f in files)


def describe() -> str:
    """Which build this process runs, in the words the sidecar logs at start."""
    return LABELS[compiled()]


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports every compiled module from its source file instead (a stale build)."""

    def __init__(self, package: Path) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Any:
        prefix, _, name = fullname.partition(".")
        if prefix != "sidecar" or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(name, self.package))


def check(package: Path = HERE) -> None:
    """Never run compiled modules built from other sources than these.

    A stale build (a source edited since `make native`) runs from source: every compiled
    module is imported from its `.py` file, all of them, because compiled modules expect
    each other's compiled classes. So an edit is tested at once, without a rebuild, and
    the process says so in one line. `SIDECAR_NATIVE_STRICT=1` refuses to import instead.
    """
    changed = stale(package)
    if not changed:
        return
    why = (
        f"sidecar: compiled modules older than their source ({', '.join(changed)} "
        f"changed since they were built)"
    )
    if os.environ.get("SIDECAR_NATIVE_STRICT") == "1":
        raise ImportError(
            f"{why}: run `make native` to compile them again, or `make pure` to remove them"
        )
    if not any(isinstance(f, _SourceFirst) and f.package == package for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst(package))
    print(f"{why}: running the source, uncompiled (`make native` compiles it)", file=sys.stderr)


if __name__ == "__main__":  # the sources, for the Makefile
    print(" ".join(str(source(name, Path("sidecar"))) for name in MODULES))
