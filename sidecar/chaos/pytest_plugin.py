"""A pytest plugin (entry point `pytest11`: installing the package is enough) for teams
who prefer tests to scenario files: the `chaos_mesh` fixture starts a mesh of their own
services (sidecar/chaos/mesh.py: the topology of `sidecar chaos run`) and injects the
same faults from a test function, sync or async. Loading the plugin imports nothing
but pytest: the mesh's modules load when a test asks for the fixture.

Does I/O (through the mesh). Everything a test's meshes started is killed when the test
ends, pass or fail, and the test fails if a process of them survived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sidecar.chaos.mesh import ChaosMesh


@pytest.fixture
def chaos_mesh(tmp_path: Path) -> Iterator[Callable[..., ChaosMesh]]:
    """`chaos_mesh(services, *, target=None, domain=..., upstream=None, caller_site=None,
    base=None, stubs=None)` starts a mesh (services as in a scenario file's `services:`)
    and returns it once the caller knows every instance of `target`."""
    from sidecar.chaos.mesh import ChaosMesh

    meshes: list[ChaosMesh] = []

    def start(services: dict[str, Any], **kwargs: Any) -> ChaosMesh:
        mesh = ChaosMesh(services, tmp_path / f"chaos-mesh-{len(meshes)}", **kwargs)
        meshes.append(mesh)
        return mesh.start()

    yield start
    left = [p for m in meshes for p in m.close()]
    if left:
        pytest.fail(f"processes of the chaos mesh survived: {left}")
