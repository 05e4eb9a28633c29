"""The compiled modules (sidecar/native.py): what counts as stale, the refusal to import
stale compiled modules, and that a build in use is the build of this source."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sidecar import native


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources, laid out as in the package."""
    for name in native.MODULES:
        target = native.source(name, tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(native.source(name), target)
    return tmp_path


def _compile(directory: Path) -> None:
    """What a build leaves: extension files and the record of the sources they came from."""
    for name in ("h2relay/connection", "retry/window", "_native__mypyc"):
        (directory / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (directory / native.RECORD).write_text(json.dumps(native.source_hashes(directory)))


def test_source_alone_is_never_stale(package: Path) -> None:
    assert native.extensions(package) == []
    assert native.stale(package) == []
    native.check(package)  # no error


def test_a_fresh_build_is_not_stale(package: Path) -> None:
    _compile(package)
    assert {str(p.relative_to(package)).split(".")[0] for p in native.extensions(package)} == {
        "_native__mypyc",
        "h2relay/connection",
        "retry/window",
    }
    assert native.stale(package) == []
    native.check(package)


def test_an_edited_source_makes_its_module_stale_and_the_source_runs(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale build runs every compiled module from source, and says so in one line;
    SIDECAR_NATIVE_STRICT=1 refuses to import instead."""
    _compile(package)
    with native.source("h2relay.call", package).open("a") as f:
        f.write("# edited after the build\n")
    assert native.stale(package) == ["h2relay.call"]
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # restored after the test
    native.check(package)
    finder = sys.meta_path[0]
    assert isinstance(finder, native._SourceFirst)
    spec = finder.find_spec("sidecar.retry.window")  # unchanged, but compiled: from source too
    assert spec is not None and spec.origin == str(native.source("retry.window", package))
    assert finder.find_spec("sidecar.config") is None  # never compiled: the usual import
    err = capsys.readouterr().err
    assert "h2relay.call changed since they were built" in err and "running the source" in err
    monkeypatch.setenv("SIDECAR_NATIVE_STRICT", "1")
    with pytest.raises(
        ImportError, match=r"h2relay.call changed since they were built.*make native"
    ):
        native.check(package)


def test_extensions_without_a_record_are_all_stale(package: Path) -> None:
    _compile(package)
    (package / native.RECORD).unlink()
    assert native.stale(package) == list(native.MODULES)
    (package / native.RECORD).write_text("{not json")
    assert native.stale(package) == list(native.MODULES)


def test_other_extension_files_are_not_ours(package: Path) -> None:
    (package / "h2relay/listeners.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert native.extensions(package) == []
    assert native.stale(package) == []


def test_the_build_in_use_is_the_build_of_this_source() -> None:
    """Compiled exactly when this package holds extension files built from the sources
    beside them (`make` builds them; a pure install has none; a stale build runs its
    source)."""
    assert native.compiled() == (bool(native.extensions()) and not native.stale())
