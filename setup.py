"""Generates the gRPC stubs into the build and compiles the per-request modules to C
with mypyc (sidecar/native.py lists them and explains why); all other metadata is in
pyproject.toml.

The stubs (`music`, `meshtest`: sidecar/stubs.py, the same code `make proto` runs) are
made from proto/ by `build_py`, straight into the build folder, so every wheel, and an
install from an sdist or a clean clone, carries them, and the source tree never does.

The compiled build is optional: with `SIDECAR_PURE_PYTHON=1`, without mypyc, or when
the C compiler fails, the package installs as pure Python (same source, slower relay)
and says so. `make native` builds in place and fails loudly instead (CI runs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
STRICT = os.environ.get("SIDECAR_NATIVE_STRICT") == "1"  # fail instead of falling back


def _load(name: str) -> Any:
    """sidecar/NAME.py, loaded alone: the package's dependencies may be missing in a
    build environment."""
    spec = importlib.util.spec_from_file_location(f"_sidecar_{name}", ROOT / f"sidecar/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _say(message: str) -> None:
    print(f"sidecar build: {message}", file=sys.stderr)


def ext_modules() -> list[Any]:
    if os.environ.get("SIDECAR_PURE_PYTHON"):
        _say("SIDECAR_PURE_PYTHON is set: the relay stays pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if STRICT:
            raise
        _say("mypyc is missing: the relay stays pure Python")
        return []
    native = _load("native")
    os.chdir(ROOT)  # mypyc takes paths relative to the project
    # the record first: it describes exactly the sources compiled below
    (ROOT / "sidecar" / native.RECORD).write_text(
        json.dumps(native.source_hashes(), indent=1, sort_keys=True) + "\n"
    )
    return mypycify(
        # a build environment has mypyc but not the runtime dependencies: type-check
        # with their imports as Any (mypy --strict on the whole tree is `make lint`'s)
        ["--config-file", "scripts/mypyc.ini"]
        + [str(native.source(name, Path("sidecar"))) for name in native.MODULES],
        opt_level="3",
        group_name=native.GROUP,
    )


class OptionalBuildExt(build_ext):
    """Build the extensions; if that fails, remove what was made and install as Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            native = _load("native")
            for path in [*self.get_outputs(), ROOT / "sidecar" / native.RECORD]:
                Path(path).unlink(missing_ok=True)
            for path in native.extensions(ROOT / "sidecar"):
                path.unlink(missing_ok=True)
            if STRICT:
                raise
            _say(f"compiling the relay failed ({exc}): it stays pure Python")


class BuildPyWithStubs(build_py):
    """Build the packages, then generate the stubs from proto/ into the build folder.

    Only from proto/: the stubs a `make proto` left in the source tree are not packages
    of the distribution (pyproject.toml), and a previous build's are removed first, so
    a stale stub never reaches a wheel. An editable install gets none: the source tree
    has `make proto`."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        stubs = _load("stubs")
        out = Path(self.build_lib)
        for name in stubs.packages(ROOT / "proto"):
            shutil.rmtree(out / name, ignore_errors=True)  # a previous build's leftovers
        tops = stubs.generate(ROOT / "proto", out)
        _say(f"stubs generated from proto/: {', '.join(t.name for t in tops)}")


setup(
    ext_modules=ext_modules(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithStubs},
)
