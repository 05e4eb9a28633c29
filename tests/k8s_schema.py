"""Kubernetes manifests checked against the Kubernetes OpenAPI schema, and kustomize.

`validate(doc)` checks one resource with the `kubernetes-validate` package's schema of a
pinned Kubernetes release, strict (an unknown field is an error, as `kubectl apply
--validate=strict` makes it). 1.33 is the release where native sidecars (init containers
with `restartPolicy: Always`) are stable. `kustomize(path)` runs the pinned kustomize
that `make kustomize` builds into the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"


def validate(doc: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError (or SchemaNotFoundError) if invalid."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def kustomize_binary() -> str:
    """The pinned kustomize: $KUSTOMIZE, else the venv's (make kustomize), else PATH's."""
    candidates = [os.environ.get("KUSTOMIZE"), str(Path(sys.executable).parent / "kustomize")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kustomize")
    if found is None:
        raise AssertionError("kustomize not found: `make kustomize` builds the pinned release")
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kustomize build PATH`, as parsed documents."""
    done = subprocess.run(
        [kustomize_binary(), "build", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]
