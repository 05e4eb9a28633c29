"""A proxyless grpcio client (its own process, `xds:///echo`) talks mTLS to a strict
inbound sidecar with the security config our xDS server sends (gRPC A29): the client's
certificate from the bootstrap's file_watcher certificate provider, the peer's SPIFFE
ID checked against the cluster's SAN matchers."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sys
from pathlib import Path

import pytest

from sidecar.endpoint import Endpoint
from sidecar.tls import ca
from sidecar.tls.identity import IdPattern
from sidecar.xds import UpstreamSnapshot, XdsServer
from tests.component.xds.test_xds_grpcio import CLIENT, ROOT, Client
from tests.integration.procs import echo_process, free_port, sidecar_process

pytestmark = pytest.mark.timeout(120)
DAY = datetime.timedelta(days=1)


async def test_proxyless_client_over_mtls(tmp_path: Path) -> None:
    ca.init_ca(tmp_path / "ca", "example.net", DAY)
    ca.issue(tmp_path / "ca", "echo", "lon3", tmp_path / "echo", DAY)
    ca.issue(tmp_path / "ca", "accesspoint", "lon3", tmp_path / "client", DAY)
    folder = tmp_path / "echo"
    with echo_process(tmp_path, "echo-app") as (_, app_port):
        config = {
            "service": "echo",
            "site": "lon3",
            "tls": {
                "cert_file": str(folder / "cert.pem"),
                "key_file": str(folder / "key.pem"),
                "ca_file": str(folder / "ca.pem"),
            },
            "inbound": {"listen": f"127.0.0.1:{free_port()}", "app": f"127.0.0.1:{app_port}"},
        }
        with sidecar_process(tmp_path, "echo-sidecar", config) as side:
            port = side.port("inbound")
            xds = XdsServer("127.0.0.1:0")
            await xds.start()
            try:
                await _calls(xds, tmp_path, port)
            finally:
                await xds.stop(None)


def _snap(port: int, accept: str) -> dict[str, UpstreamSnapshot]:
    endpoint = Endpoint("127.0.0.1", port, "lon3", 10, 10, "echo.")
    regex = IdPattern.parse(accept, "example.net").regex()
    return {"echo": UpstreamSnapshot.of([endpoint], ("lon3",), peer_id_regexes=(regex,))}


async def _calls(xds: XdsServer, tmp_path: Path, port: int) -> None:
    client_dir = tmp_path / "client"
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(
        json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": f"127.0.0.1:{xds.port}",
                        "channel_creds": [{"type": "insecure"}],
                        "server_features": ["xds_v3"],
                    }
                ],
                "node": {"id": "proxyless", "locality": {"zone": "lon3"}},
                "certificate_providers": {
                    "default": {
                        "plugin_name": "file_watcher",
                        "config": {
                            "certificate_file": str(client_dir / "cert.pem"),
                            "private_key_file": str(client_dir / "key.pem"),
                            "ca_certificate_file": str(client_dir / "ca.pem"),
                            "refresh_interval": "1s",
                        },
                    }
                },
            }
        )
    )
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(ROOT)}
    xds.update(_snap(port, "echo"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT), "xds:///echo", "--xds-creds", cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    client = Client(proc)
    try:
        result = await client.until(lambda c: set(c) == {"echo-app"}, n=5)
        assert not result["errors"], result
        # the peer must be `search`: the echo sidecar's certificate is refused
        xds.update(_snap(port, "search"))
        for _ in range(100):
            batch = await client.calls(3)
            if not batch["served_by"] and batch["errors"]:
                break
            await asyncio.sleep(0.2)
        assert not batch["served_by"], batch
        assert all(e.startswith("UNAVAILABLE") for e in batch["errors"]), batch
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
