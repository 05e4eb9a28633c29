"""Chaos: mTLS certificates (and the trust bundle) re-issued every two seconds under
load, on every sidecar of the mesh: no call fails.

Three echo instances and a caller, all with `tls:` from one `sidecar ca`; the load runs
through the caller over mTLS to the instances. While it runs, every sidecar's leaf is
issued anew every 2 s with a bundle of two CAs, and from the third round on by the
second CA: pooled connections go on undisturbed and every sidecar takes the new files.
(New connections on the new files: tests/integration/test_mtls.py.)
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar.tls import ca
from tests.chaos.harness import DOMAIN, Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import ECHO_UPSTREAM, run_load

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]
DAY = datetime.timedelta(days=1)


def tls_block(folder: Path) -> dict[str, Any]:
    return {
        "tls": {
            "cert_file": str(folder / "cert.pem"),
            "key_file": str(folder / "key.pem"),
            "ca_file": str(folder / "ca.pem"),
        }
    }


async def test_certificates_rotate_under_load(mesh: Mesh, tmp_path: Path) -> None:
    ca.init_ca(tmp_path / "ca1", DOMAIN, DAY)
    ca.init_ca(tmp_path / "ca2", DOMAIN, DAY)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        (tmp_path / "ca1" / "ca.pem").read_bytes() + (tmp_path / "ca2" / "ca.pem").read_bytes()
    )
    who: list[tuple[str, str, Path]] = []  # (service, site, folder)
    instances = []
    for i in range(3):
        folder = tmp_path / f"echo-{i}"
        ca.issue(tmp_path / "ca1", "echo", "a", folder, DAY)
        who.append(("echo", "a", folder))
        instances.append(mesh.add_instance("a", sidecar=tls_block(folder)))
    caller_dir = tmp_path / "caller"
    ca.issue(tmp_path / "ca1", "view", "a", caller_dir, DAY)
    who.append(("view", "a", caller_dir))
    caller = mesh.add_caller(
        "a", {"echo": ECHO_UPSTREAM}, extra={"service": "view", **tls_block(caller_dir)}
    )
    mesh.wait_endpoints(caller, "echo", len(instances))
    rounds = 0

    def reissue(ca_dir: str) -> None:
        for service, site, folder in who:
            ca.issue(tmp_path / ca_dir, service, site, folder, DAY, bundle=bundle)

    async def script(sc: Scenario) -> None:
        nonlocal rounds
        for n in range(5):
            await sc.at(1.0 + 2.0 * n)
            reissue("ca1" if n < 2 else "ca2")  # the bundle first, then the new CA
            rounds += 1
            sc.mark(f"certificates re-issued ({'ca1' if n < 2 else 'ca2'})")

    sc, folder, summary = await run_load("tls_rotation", caller, script, rate=50, duration=12)
    assert rounds == 5
    assert summary["success_ratio"] == 1.0, f"see {folder}"
    failed = [c for c in sc.loop.calls if c.status != "OK"]
    assert not failed, f"{len(failed)} calls failed across rotation (see {folder}): {failed[:3]}"
    tls = caller.get_json("/tls")
    assert tls["reloads"] >= 5 and tls["last_error"] is None, tls
