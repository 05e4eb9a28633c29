"""Every input of tests/fuzz/corpus/ through its target (tests/fuzz/targets.py): the
regression cases of the fuzz targets, replayed in `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"
INPUTS = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def test_every_folder_is_a_target() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == set(TARGETS), folders ^ set(TARGETS)


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_corpus_input(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())
